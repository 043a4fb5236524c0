//! SPAR PersonSök 2023.1 → catalogue fields, and avisering files → changes.
//!
//! Elements are read by namespace URI, never by prefix: SPAR's answers bind
//! the same namespaces to `ns2`…`ns15` or redeclare default namespaces.
//! Protected persons (sekretessmarkering, skyddad folkbokföring) come back
//! with only their ID and the markers: the connector maps what is there and
//! invents nothing. Partial dates (`1980-00-00`, `19800000`) are not dates:
//! they are left out with a warning.

use folkhub_connector_sdk::ids;
use folkhub_connector_sdk::soap::{self, child, child_text, children, esc, path, path_text};
use folkhub_connector_sdk::{Change, ChangePage, ConnectorError, MappedPerson};
use roxmltree::Node;
use serde_json::{Value, json};

/// 2.0.0 speaks PersonSök 2023.1 (1.x spoke 2021.1).
pub const UPSTREAM_VERSION: &str = "2023.1";
pub const SOAP_ACTION: &str =
    "http://skatteverket.se/spar/personsok/2023.1/PersonsokService/Personsok";
pub const PATH: &str = "/2023.1/personsok";
pub const NS_QUESTION: &str =
    "http://statenspersonadressregister.se/schema/personsok/2023.1/personsokningfraga";
pub const NS_ANSWER: &str =
    "http://statenspersonadressregister.se/schema/personsok/2023.1/personsokningsvar";
pub const NS_IDENTIFICATION: &str = "http://statenspersonadressregister.se/schema/komponent/metadata/identifieringsinformationWs-1.0";
pub const NS_SEARCH: &str =
    "http://statenspersonadressregister.se/schema/komponent/sok/personsokningsokparametrar-1.1";
pub const NS_PERSON: &str =
    "http://statenspersonadressregister.se/schema/komponent/person/person-1.2";
pub const NS_NOTIFICATION: &str =
    "http://statenspersonadressregister.se/schema/avisering/2021.1/aviseringsposter";
/// PersonSök takes one question per call; a batch is this many calls.
pub const MAX_BATCH: usize = 100;

pub const FIELDS: &[&str] = &[
    "name.given",
    "name.middle",
    "name.family",
    "birth.date",
    "gender",
    "status",
    "death.date",
    "citizenship",
    "address.residential",
    "address.municipality",
    "protection.se-secrecy",
    "protection.se-protected-registration",
    "relations.family",
    "relations.parental-responsibility",
];

/// The question for one 12-digit ID. Customer numbers and the assignment
/// are host placeholders; `extended` lists extended permissions asked for
/// (e.g. `Relationer`).
pub fn request(id: &str, end_user: &str, extended: &[&str]) -> String {
    let extended: String = extended
        .iter()
        .map(|e| {
            format!(
                "<id:SlutAnvandarUtokadBehorighet>{}</id:SlutAnvandarUtokadBehorighet>",
                esc(e)
            )
        })
        .collect();
    soap::envelope(&format!(
        "<spar:SPARPersonsokningFraga xmlns:spar=\"{NS_QUESTION}\" xmlns:id=\"{NS_IDENTIFICATION}\" xmlns:sok=\"{NS_SEARCH}\">\
         <id:Identifieringsinformation>\
         <id:KundNrLeveransMottagare>{}</id:KundNrLeveransMottagare>\
         <id:KundNrSlutkund>{}</id:KundNrSlutkund>\
         <id:UppdragId>{}</id:UppdragId>\
         <id:SlutAnvandarId>{}</id:SlutAnvandarId>{extended}\
         </id:Identifieringsinformation>\
         <sok:PersonsokningFraga><sok:IdNummer>{}</sok:IdNummer></sok:PersonsokningFraga>\
         </spar:SPARPersonsokningFraga>",
        soap::secret("KundNrLeveransMottagare"),
        soap::secret("KundNrSlutkund"),
        soap::secret("UppdragId"),
        esc(end_user),
        esc(id),
    ))
}

/// What one answer says about the requested ID.
pub use folkhub_connector_sdk::MappedOutcome as Outcome;

/// `YYYY-MM-DD` or `YYYYMMDD` as an ISO date; `None` for partial dates.
pub fn date(text: &str) -> Option<String> {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 8 || !(text.len() == 8 || text.len() == 10) {
        return None;
    }
    let (y, m, d) = (&digits[..4], &digits[4..6], &digits[6..]);
    if m == "00" || d == "00" {
        return None;
    }
    Some(format!("{y}-{m}-{d}"))
}

/// Maps the answer to the question for `requested`.
pub fn map_answer(
    xml: &str,
    requested: &str,
    warnings: &mut Vec<String>,
) -> Result<Outcome, String> {
    let doc = soap::parse(xml, "SPAR answer")?;
    let answer = soap::body(&doc)?;
    if answer.tag_name().name() != "SPARPersonsokningSvar"
        || answer.tag_name().namespace() != Some(NS_ANSWER)
    {
        return Err(format!(
            "expected SPARPersonsokningSvar in {NS_ANSWER}, got {}{}",
            answer
                .tag_name()
                .namespace()
                .map(|n| format!("{{{n}}}"))
                .unwrap_or_default(),
            answer.tag_name().name()
        ));
    }
    if let Some(exception) = child(answer, NS_ANSWER, "Undantag") {
        let code = child_text(exception, NS_ANSWER, "Kod").unwrap_or("?");
        let text = child_text(exception, NS_ANSWER, "Beskrivning").unwrap_or("");
        let message = format!("SPAR Undantag {code}: {text}");
        return Ok(Outcome::Failed(match code {
            "1" => ConnectorError::Unauthorized(format!(
                "{message}; check the secrets KundNrLeveransMottagare, KundNrSlutkund and UppdragId"
            )),
            "2" => ConnectorError::Unauthorized(format!(
                "{message}; remove the permission from config `extended` or ask SPAR for it"
            )),
            "3" | "4" => ConnectorError::BadInput(message),
            _ => ConnectorError::Other(message),
        }));
    }
    if let Some(too_many) = child(answer, NS_ANSWER, "OverstigerMaxAntalSvarsposter") {
        return Ok(Outcome::Failed(ConnectorError::BadInput(format!(
            "SPAR found {} persons, more than it returns ({}); narrow the search",
            child_text(too_many, NS_ANSWER, "AntalPoster").unwrap_or("?"),
            child_text(too_many, NS_ANSWER, "MaxAntalSvarsposter").unwrap_or("?"),
        ))));
    }
    let posts: Vec<Node> = children(answer, NS_ANSWER, "PersonsokningSvarspost").collect();
    match posts.as_slice() {
        [] => Ok(Outcome::NotFound),
        [one] => Ok(Outcome::Found(map_post(*one, Some(requested), warnings)?)),
        more => Err(format!(
            "an ID search gave {} persons; SPAR gives at most one",
            more.len()
        )),
    }
}

fn yes(node: Node, name: &str) -> bool {
    child_text(node, NS_PERSON, name) == Some("JA")
}

/// Is this `Namn`/`Adress` period the current one (open-ended)?
fn current(node: Node) -> bool {
    child_text(node, NS_PERSON, "DatumTill").is_none_or(|t| t.starts_with("9999"))
}

/// Maps one person post (`PersonsokningSvarspost` or `AviseringPost`).
pub fn map_post(
    post: Node,
    requested: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<MappedPerson, String> {
    let mut p = MappedPerson::default();
    let person_id = child(post, NS_PERSON, "PersonId").ok_or("a person post without PersonId")?;
    let id_text =
        child_text(person_id, NS_PERSON, "IdNummer").ok_or("PersonId without IdNummer")?;
    let id = ids::parse_swedish(id_text).map_err(|e| format!("PersonId/IdNummer: {e}"))?;
    let kind = child_text(person_id, NS_PERSON, "Typ").unwrap_or("PERSONNUMMER");
    let scheme = match kind {
        "PERSONNUMMER" => "se-pnr",
        "SAMORDNINGSNUMMER" => "se-snr",
        other => {
            warnings.push(format!(
                "PersonId/Typ {other:?} has no ID scheme; kept as {}",
                id.scheme.as_str()
            ));
            id.scheme.as_str()
        }
    };
    p.ids.push((scheme.to_string(), id.value.clone(), true));
    for earlier in children(post, NS_PERSON, "HanvisningsPersonNr") {
        match earlier.text().map(str::trim).map(ids::parse_swedish) {
            Some(Ok(old)) => p
                .ids
                .push((old.scheme.as_str().to_string(), old.value, false)),
            Some(Err(e)) => warnings.push(format!("HanvisningsPersonNr: {e}")),
            None => {}
        }
    }
    if let Some(asked) = requested.and_then(|r| ids::parse_swedish(r).ok())
        && !p.ids.iter().any(|(_, v, _)| *v == asked.value)
    {
        p.ids
            .push((asked.scheme.as_str().to_string(), asked.value, false));
    }
    let secrecy = yes(post, "Sekretessmarkering");
    let protected = yes(post, "SkyddadFolkbokforing");
    if secrecy {
        p.push("protection.se-secrecy", json!(true), &[]);
    }
    if protected {
        p.push("protection.se-protected-registration", json!(true), &[]);
    }
    if let Some(name) = children(post, NS_PERSON, "Namn").find(|n| current(*n)) {
        if let Some(v) = child_text(name, NS_PERSON, "Fornamn") {
            p.push("name.given", json!(v), &[]);
        }
        if let Some(v) = child_text(name, NS_PERSON, "Mellannamn") {
            p.push("name.middle", json!(v), &[]);
        }
        if let Some(v) = child_text(name, NS_PERSON, "Efternamn") {
            p.push("name.family", json!(v), &[]);
        }
    }
    let details = children(post, NS_PERSON, "Persondetaljer").find(|n| current(*n));
    if let Some(d) = details {
        if let Some(b) = child_text(d, NS_PERSON, "Fodelsedatum") {
            match date(b) {
                Some(b) => p.push("birth.date", json!(b), &[]),
                None => warnings.push(format!(
                    "Fodelsedatum {b:?} is partial; birth.date left out"
                )),
            }
        }
        match child_text(d, NS_PERSON, "Kon") {
            Some("KVINNA") => p.push("gender", json!("female"), &[]),
            Some("MAN") => p.push("gender", json!("male"), &[]),
            Some(other) => warnings.push(format!("unknown Kon {other:?}; gender left out")),
            None => {}
        }
        if yes(d, "SvenskMedborgare") {
            p.push("citizenship", json!(["SWE"]), &[]);
        }
        let status = match child_text(d, NS_PERSON, "AvregistreringsorsakKod") {
            Some("AV") => "deceased",
            Some("UV") => "emigrated",
            Some("GN" | "GS" | "AN" | "TA" | "OB" | "FI") => "ceased",
            Some(other) => {
                warnings.push(format!(
                    "unknown AvregistreringsorsakKod {other:?}; status ceased"
                ));
                "ceased"
            }
            None if scheme == "se-snr" => "not-resident",
            None => "resident",
        };
        p.push("status", json!(status), &[]);
        if let Some(dd) = child_text(d, NS_PERSON, "Avlidendatum") {
            match date(dd) {
                Some(dd) => p.push("death.date", json!(dd), &[]),
                None => warnings.push(format!(
                    "Avlidendatum {dd:?} is partial; death.date left out"
                )),
            }
        }
    }
    let registration = children(post, NS_PERSON, "Folkbokforing").find(|n| current(*n));
    let municipality = registration.and_then(|r| {
        Some(format!(
            "{}{}",
            child_text(r, NS_PERSON, "FolkbokfordLanKod")?,
            child_text(r, NS_PERSON, "FolkbokfordKommunKod")?
        ))
    });
    if let Some(address) =
        path(post, NS_PERSON, &["Folkbokforingsadress", "SvenskAdress"]).filter(|a| current(*a))
    {
        let mut a = serde_json::Map::new();
        a.insert("kind".into(), json!("postal"));
        if let Some(c) = child_text(address, NS_PERSON, "CareOf") {
            a.insert("care_of".into(), json!(c));
        }
        let lines: Vec<&str> = ["Utdelningsadress1", "Utdelningsadress2"]
            .iter()
            .filter_map(|n| child_text(address, NS_PERSON, n))
            .collect();
        a.insert("lines".into(), json!(lines));
        if let Some(v) = child_text(address, NS_PERSON, "PostNr") {
            a.insert("postal_code".into(), json!(v.replace(' ', "")));
        }
        if let Some(v) = child_text(address, NS_PERSON, "Postort") {
            a.insert("city".into(), json!(v));
        }
        if let Some(m) = &municipality {
            a.insert("municipality".into(), json!(m));
        }
        a.insert("country".into(), json!("SWE"));
        let effective = child_text(address, NS_PERSON, "DatumFrom")
            .and_then(date)
            .map(|d| format!("{d}T00:00:00Z"));
        p.fields.push(folkhub_connector_sdk::MappedField {
            path: "address.residential",
            value: Value::Object(a),
            labels: vec![],
            effective,
        });
    }
    if let Some(m) = municipality {
        p.push("address.municipality", json!(m), &[]);
    }
    let mut custody: Vec<(String, String)> = Vec::new();
    let mut family: Vec<(String, String)> = Vec::new();
    for r in children(post, NS_PERSON, "Relation").filter(|r| current(*r)) {
        let Some(kind) = child_text(r, NS_PERSON, "Relationstyp") else {
            continue;
        };
        let Some(other) = child_text(r, NS_PERSON, "IdNummer") else {
            warnings.push(format!("a {kind} relation without IdNummer left out"));
            continue;
        };
        let other = match ids::parse_swedish(other) {
            Ok(o) => o.value,
            Err(e) => {
                warnings.push(format!("Relation/IdNummer: {e}"));
                continue;
            }
        };
        match kind {
            "VÅRDNADSHAVARE" => custody.push(("other".into(), other)),
            "MAKE/MAKA" | "MAKE" | "MAKA" | "REGISTRERAD PARTNER" => {
                family.push(("spouse".into(), other))
            }
            other_kind => warnings.push(format!("unknown Relationstyp {other_kind:?} left out")),
        }
    }
    if !custody.is_empty() {
        custody.sort();
        p.push(
            "relations.parental-responsibility",
            relations(&custody),
            &[],
        );
    }
    if !family.is_empty() {
        family.sort();
        p.push("relations.family", relations(&family), &[]);
    }
    Ok(p)
}

fn relations(list: &[(String, String)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(role, id)| json!({"role": role, "id": id}))
            .collect(),
    )
}

/// One avisering file → a change page: every person in it changed.
pub fn map_avisering(xml: &str, number: u64) -> Result<ChangePage, String> {
    let doc = soap::parse(xml, "avisering file")?;
    let root = doc.root_element();
    if root.tag_name().name() != "AviseringPoster"
        || root.tag_name().namespace() != Some(NS_NOTIFICATION)
    {
        return Err(format!(
            "expected AviseringPoster in {NS_NOTIFICATION}, got {}",
            root.tag_name().name()
        ));
    }
    let sequence = child_text(root, NS_NOTIFICATION, "Sekvensnummer")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or("the file has no Sekvensnummer")?;
    if sequence != number {
        return Err(format!(
            "asked for avisering file {number}, got Sekvensnummer {sequence}"
        ));
    }
    let kind = child_text(root, NS_NOTIFICATION, "Aviseringstyp").unwrap_or("AVISERING");
    let created = child_text(root, NS_NOTIFICATION, "Skapad").map(|c| {
        if c.ends_with('Z') || c.contains('+') {
            c.to_string()
        } else {
            format!("{c}Z")
        }
    });
    let mut changes = Vec::new();
    for post in children(root, NS_NOTIFICATION, "AviseringPost") {
        let id = path_text(post, NS_PERSON, &["PersonId", "IdNummer"])
            .ok_or("an AviseringPost without PersonId/IdNummer")?;
        changes.push(Change {
            id: id.to_string(),
            event: kind.to_string(),
            position: number.to_string(),
            recorded: created.clone(),
        });
    }
    Ok(ChangePage {
        changes,
        next_cursor: number.to_string(),
        caught_up: false,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn found(name: &str, requested: &str) -> (MappedPerson, Vec<String>) {
        let mut w = vec![];
        match map_answer(&fixture(name), requested, &mut w).unwrap() {
            Outcome::Found(p) => (p, w),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn person_with_address_and_guardians() {
        let (p, w) = found("found.xml", "201012152383");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            p.ids,
            vec![("se-pnr".to_string(), "201012152383".to_string(), true)]
        );
        assert_eq!(p.field("name.given"), Some(&json!("Ebba")));
        assert_eq!(p.field("name.family"), Some(&json!("Lindqvist")));
        assert_eq!(p.field("birth.date"), Some(&json!("2010-12-15")));
        assert_eq!(p.field("gender"), Some(&json!("female")));
        assert_eq!(p.field("citizenship"), Some(&json!(["SWE"])));
        assert_eq!(p.field("status"), Some(&json!("resident")));
        assert_eq!(p.field("address.municipality"), Some(&json!("0180")));
        assert_eq!(
            p.field("address.residential"),
            Some(
                &json!({"kind": "postal", "care_of": "ANNA LINDQVIST", "lines": ["STORGATAN 12 LGH 1101"], "postal_code": "11120", "city": "STOCKHOLM", "municipality": "0180", "country": "SWE"})
            )
        );
        assert_eq!(
            p.field("relations.parental-responsibility"),
            Some(&json!([{"role": "other", "id": "197910112387"}]))
        );
        assert_eq!(p.field("protection.se-secrecy"), None);
    }

    #[test]
    fn protected_person_gives_only_markers() {
        // Default namespace redeclarations instead of prefixes.
        let (p, w) = found("protected.xml", "197910112387");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(p.field("protection.se-secrecy"), Some(&json!(true)));
        assert_eq!(
            p.field("protection.se-protected-registration"),
            Some(&json!(true))
        );
        assert_eq!(p.fields.len(), 2, "{:?}", p.fields);
    }

    #[test]
    fn odd_parts_partial_dates_unknown_codes_and_an_old_coordination_number() {
        let (p, w) = found("odd.xml", "198001612384");
        assert_eq!(
            p.ids,
            vec![
                ("se-pnr".to_string(), "198001012387".to_string(), true),
                ("se-snr".to_string(), "198001612384".to_string(), false)
            ]
        );
        assert_eq!(p.field("birth.date"), None);
        assert_eq!(p.field("death.date"), None);
        assert_eq!(p.field("status"), Some(&json!("deceased")));
        assert_eq!(p.field("gender"), None);
        assert_eq!(p.field("address.residential"), None);
        assert_eq!(w.len(), 4, "{w:?}");
    }

    #[test]
    fn exceptions_and_too_many_hits() {
        let mut w = vec![];
        assert!(matches!(
            map_answer(&fixture("undantag.xml"), "x", &mut w).unwrap(),
            Outcome::Failed(ConnectorError::Unauthorized(_))
        ));
        assert!(matches!(
            map_answer(&fixture("too-many.xml"), "x", &mut w).unwrap(),
            Outcome::Failed(ConnectorError::BadInput(_))
        ));
        assert!(matches!(
            map_answer(&fixture("empty.xml"), "x", &mut w).unwrap(),
            Outcome::NotFound
        ));
    }

    #[test]
    fn malformed_answers() {
        let mut w = vec![];
        let full = fixture("found.xml");
        assert!(
            map_answer(&full[..full.len() - 40], "x", &mut w)
                .unwrap_err()
                .contains("not well-formed")
        );
        let wrong = full.replace(NS_ANSWER, "http://example.com/other");
        assert!(
            map_answer(&wrong, "x", &mut w)
                .unwrap_err()
                .contains("expected SPARPersonsokningSvar")
        );
    }

    #[test]
    fn dates() {
        assert_eq!(date("2024-03-01").as_deref(), Some("2024-03-01"));
        assert_eq!(date("20240301").as_deref(), Some("2024-03-01"));
        assert_eq!(date("2024-03-00"), None);
        assert_eq!(date("19800000"), None);
        assert_eq!(date("2024-3-1"), None);
    }

    #[test]
    fn avisering_file() {
        let page = map_avisering(&fixture("avisering.xml"), 3).unwrap();
        assert_eq!(page.changes.len(), 2);
        assert_eq!(page.changes[0].id, "201012152383");
        assert_eq!(page.changes[0].event, "ANDRINGSAVISERING");
        assert_eq!(page.next_cursor, "3");
        assert!(
            map_avisering(&fixture("avisering.xml"), 4)
                .unwrap_err()
                .contains("Sekvensnummer")
        );
    }

    #[test]
    fn request_uses_placeholders() {
        let r = request("201012152383", "handläggare <1>", &["Relationer"]);
        assert!(r.contains("{{secret:KundNrSlutkund}}"));
        assert!(r.contains(
            "<id:SlutAnvandarUtokadBehorighet>Relationer</id:SlutAnvandarUtokadBehorighet>"
        ));
        assert!(r.contains("handläggare &lt;1&gt;"));
    }
}
