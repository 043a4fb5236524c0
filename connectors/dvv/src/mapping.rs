//! VTJ query (`TeeHenkilonTunnusKysely`) → catalogue fields.
//!
//! The request carries the message product (`SoSoNimi`) from the
//! customer's permit, the end user (`Loppukayttaja`, kept 5 years by DVV
//! for audit) and one HETU; user and password are host placeholders. The
//! answer `VTJHenkiloVastaussanoma` (namespace
//! `http://xml.vrk.fi/schema/vtjkysely`) has a `Paluukoodi` and, when found,
//! `Henkilo`. Which elements `Henkilo` holds depends on the product.
//!
//! **Both address forms.** Some products send the street line joined
//! (`VakinainenKotimainenLahiosoite/LahiosoiteS`), others in parts
//! (`VakinainenKotimainenOsoite`: `KatuS`, `Katunumero`, `Porraskirjain`,
//! `Huoneistonumero` zero-padded to three digits, `Jakokirjain`; OPHREK.xsd
//! in Opetushallitus/vtj). The connector reads both and writes the line
//! `Katu 12 B 7a`.
//!
//! **Coverage.** What a product does not carry is not covered: a field is
//! covered when the answer has the element that holds it (OPHREK-style
//! products send every element, empty when there is no value, so an empty
//! element is a removal). Under turvakielto a product without the permit
//! leaves the address out, or sends it empty: the address is then not
//! covered, and what the host holds stays, protected by the marker.

use folkhub_connector_sdk::ids;
use folkhub_connector_sdk::soap::{self, child, child_text, children, esc, path_text};
use folkhub_connector_sdk::{ConnectorError, MappedField, MappedPerson};
use serde_json::{Value, json};

pub const UPSTREAM_VERSION: &str = "vtjkysely-1";
/// Most HETUs one `muutokset` call follows (the simulator's limit; DVV's
/// clients send a few thousand).
pub const MAX_FOLLOWED: usize = 1000;
pub const NS_QUERY: &str = "http://tempuri.org/";
pub const NS: &str = "http://xml.vrk.fi/schema/vtjkysely";
pub const SOAP_ACTION: &str = "http://tempuri.org/TeeHenkilonTunnusKysely";
/// VTJ answers one HETU per query; a batch is this many queries in a row.
pub const MAX_BATCH: usize = 50;
/// The label that travels with fields of a person under turvakielto.
pub const LABEL: &str = "TURVAKIELTO";

pub const FIELDS: &[&str] = &[
    "name.given",
    "name.call",
    "name.family",
    "birth.date",
    "gender",
    "status",
    "death.date",
    "citizenship",
    "civil-status",
    "address.residential",
    "address.temporary",
    "address.postal",
    "address.municipality",
    "protection.fi-non-disclosure",
    "language.preferred",
    "contact.email",
    "relations.parental-responsibility",
    "relations.guardianship",
];

/// ISO 3166 numeric → alpha-3 for the citizenship codes VTJ sends. Codes
/// not listed are reported as warnings and left out.
const COUNTRIES: &[(&str, &str)] = &[
    ("246", "FIN"),
    ("752", "SWE"),
    ("578", "NOR"),
    ("208", "DNK"),
    ("352", "ISL"),
    ("233", "EST"),
    ("643", "RUS"),
    ("428", "LVA"),
    ("440", "LTU"),
    ("616", "POL"),
    ("276", "DEU"),
    ("826", "GBR"),
    ("840", "USA"),
    ("804", "UKR"),
    ("368", "IRQ"),
    ("706", "SOM"),
    ("760", "SYR"),
    ("792", "TUR"),
    ("156", "CHN"),
    ("356", "IND"),
    ("704", "VNM"),
    ("608", "PHL"),
    ("764", "THA"),
    ("724", "ESP"),
    ("380", "ITA"),
    ("250", "FRA"),
    ("528", "NLD"),
];

/// The SOAP request for one HETU.
pub fn request(product: &str, end_user: &str, hetu: &str) -> String {
    soap::envelope(&format!(
        "<TeeHenkilonTunnusKysely xmlns=\"{NS_QUERY}\">\
         <SoSoNimi>{}</SoSoNimi>\
         <Kayttajatunnus>{}</Kayttajatunnus>\
         <Salasana>{}</Salasana>\
         <Loppukayttaja>{}</Loppukayttaja>\
         <Laskutustiedot/>\
         <Henkilotunnus>{}</Henkilotunnus>\
         <SahkoinenAsiointitunnus/><VarmenteenMyontaja/><X509Certificate/>\
         <VarmenteenVoimassaolotarkistus/><VarmenteenSulkulistatarkistus/>\
         <Tunnistusportaali/><Vara1/>\
         </TeeHenkilonTunnusKysely>",
        esc(product),
        soap::secret("vtj-user"),
        soap::secret("vtj-password"),
        esc(end_user),
        esc(hetu),
    ))
}

/// What one answer says about the requested ID.
pub use folkhub_connector_sdk::MappedOutcome as Outcome;

fn date(text: &str) -> Option<String> {
    // VTJ dates are YYYYMMDD; 00 for an unknown month or day is not a date.
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (y, m, d) = (&text[..4], &text[4..6], &text[6..]);
    if m == "00" || d == "00" {
        return None;
    }
    Some(format!("{y}-{m}-{d}"))
}

/// Today, for ending addresses whose `AsuminenLoppupvm` has passed (the
/// connector reports current values only; dates compare as YYYYMMDD text).
fn ended(end: Option<&str>, today: &str) -> bool {
    end.is_some_and(|e| e.len() == 8 && e <= today)
}

/// Maps one answer to the query for `requested`.
pub fn map_answer(
    xml: &str,
    requested: &str,
    today: &str,
    warnings: &mut Vec<String>,
) -> Result<Outcome, String> {
    let doc = soap::parse(xml, "VTJ answer")?;
    let body = soap::body(&doc)?;
    let answer = body
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "VTJHenkiloVastaussanoma")
        .ok_or("the SOAP body has no VTJHenkiloVastaussanoma")?;
    if answer.tag_name().namespace() != Some(NS) {
        return Err(format!(
            "VTJHenkiloVastaussanoma is in namespace {:?}, expected {NS}",
            answer.tag_name().namespace().unwrap_or("")
        ));
    }
    let code_node = child(answer, NS, "Paluukoodi").ok_or("the answer has no Paluukoodi")?;
    let code = code_node.attribute("koodi").unwrap_or_default();
    let text = code_node.text().unwrap_or_default().trim();
    match code {
        "0000" => {}
        "0001" => return Ok(Outcome::NotFound),
        "0002" => {
            return Ok(Outcome::Failed(ConnectorError::BadInput(format!(
                "VTJ refused the HETU ({code}: {text})"
            ))));
        }
        "0003" => {
            return Ok(Outcome::Failed(ConnectorError::Unauthorized(format!(
                "VTJ refused the user or password ({code}: {text}); check secrets vtj-user and vtj-password"
            ))));
        }
        "0004" => {
            return Ok(Outcome::Failed(ConnectorError::Unauthorized(format!(
                "the message product is not in the permit ({code}: {text}); check config `product`"
            ))));
        }
        "0005" => {
            return Ok(Outcome::Failed(ConnectorError::BadInput(format!(
                "VTJ wants an end user ({code}: {text}); set config `end-user`"
            ))));
        }
        other => {
            return Ok(Outcome::Failed(ConnectorError::Other(format!(
                "VTJ return code {other}: {text}"
            ))));
        }
    }
    let henkilo = child(answer, NS, "Henkilo").ok_or("Paluukoodi 0000 but no Henkilo")?;
    Ok(Outcome::Found(map_henkilo(
        henkilo, requested, today, warnings,
    )?))
}

/// A domestic address, joined (`LahiosoiteS`) or split (`KatuS`, ...), with
/// the municipality; `None` when the element holds no street.
fn domestic(a: roxmltree::Node, municipality: Option<&str>) -> Option<Value> {
    let text = |name: &str| child_text(a, NS, name);
    let line = match text("LahiosoiteS").or_else(|| text("LahiosoiteR")) {
        Some(line) => line.to_string(),
        None => {
            let street = text("KatuS").or_else(|| text("KatuR"))?;
            let mut line = street.to_string();
            if let Some(n) = text("Katunumero") {
                line.push(' ');
                line.push_str(n);
            }
            if let Some(stair) = text("Porraskirjain") {
                line.push(' ');
                line.push_str(stair);
            }
            // Huoneistonumero comes zero-padded (`007`): the address says 7.
            let flat = text("Huoneistonumero")
                .map(|f| f.trim_start_matches('0'))
                .filter(|f| !f.is_empty());
            if let Some(flat) = flat {
                line.push(' ');
                line.push_str(flat);
            }
            if let Some(division) = text("Jakokirjain") {
                if flat.is_none() {
                    line.push(' ');
                }
                line.push_str(division);
            }
            line
        }
    };
    let mut address = serde_json::Map::new();
    address.insert("kind".into(), json!("postal"));
    address.insert("lines".into(), json!([line]));
    if let Some(pc) = text("Postinumero") {
        address.insert("postal_code".into(), json!(pc));
    }
    if let Some(city) = text("PostitoimipaikkaS").or_else(|| text("PostitoimipaikkaR")) {
        address.insert("city".into(), json!(city));
    }
    if let Some(m) = municipality {
        address.insert("municipality".into(), json!(m));
    }
    address.insert("country".into(), json!("FIN"));
    Some(Value::Object(address))
}

/// A foreign address (`…UlkomainenOsoite`, `UlkomainenPostiosoite`).
fn foreign(a: roxmltree::Node) -> Option<Value> {
    let line = child_text(a, NS, "UlkomainenLahiosoite")?;
    let mut lines = vec![line];
    if let Some(place) = child_text(a, NS, "UlkomainenPaikkakunta") {
        lines.push(place);
    }
    let mut address = serde_json::Map::new();
    address.insert("kind".into(), json!("foreign"));
    address.insert("lines".into(), json!(lines));
    // Valtiokoodi3 is numeric (ISO 3166); alpha-3 where known.
    if let Some(code) = child_text(a, NS, "Valtiokoodi3") {
        let alpha = COUNTRIES
            .iter()
            .find(|(n, _)| *n == code)
            .map_or(code, |(_, a)| a);
        address.insert("country".into(), json!(alpha));
    }
    Some(Value::Object(address))
}

/// Civil status codes (Siviilisaatykoodi, inferred: see docs/simulators.md)
/// in the catalogue's words.
fn civil_status(code: &str) -> Option<&'static str> {
    Some(match code {
        "1" => "unmarried",
        "2" => "married",
        "3" => "divorced",
        "4" => "widowed",
        "5" => "registered-partner",
        "6" => "divorced-partner",
        "7" => "surviving-partner",
        "0" | "9" => "unknown",
        _ => return None,
    })
}

fn map_henkilo(
    h: roxmltree::Node,
    requested: &str,
    today: &str,
    warnings: &mut Vec<String>,
) -> Result<MappedPerson, String> {
    let mut p = MappedPerson::default();
    // The active HETU (voimassaolokoodi 1, or no code) and passive ones (0).
    let mut current = None;
    for node in children(h, NS, "Henkilotunnus") {
        let Some(text) = node.text().map(str::trim) else {
            continue;
        };
        let hetu = ids::parse_finnish(text).map_err(|e| format!("Henkilotunnus: {e}"))?;
        let active = node.attribute("voimassaolokoodi") != Some("0");
        if active && current.is_none() {
            current = Some(hetu.clone());
        }
        p.ids.push(("fi-hetu".into(), hetu.value, active));
    }
    let current = current.ok_or("Henkilo has no active Henkilotunnus")?;
    if let Ok(asked) = ids::parse_finnish(requested)
        && !p.ids.iter().any(|(_, v, _)| *v == asked.value)
    {
        // Asked by a corrected (passive) HETU: VTJ answers with the active one.
        p.ids.push(("fi-hetu".into(), asked.value, false));
    }
    let has = |name: &str| child(h, NS, name).is_some();
    let protected = path_text(h, NS, &["Turvakielto", "TurvakieltoTieto"]) == Some("1");
    let location: Vec<String> = if protected {
        vec![LABEL.into()]
    } else {
        vec![]
    };
    // What the answer speaks for: the fields whose elements it holds.
    let mut covers: Vec<&'static str> = vec!["birth.date", "status"];
    let mut cover = |field: &'static str, held: bool| {
        if held {
            covers.push(field);
        }
    };
    cover("name.given", has("NykyisetEtunimet"));
    cover("name.family", has("NykyinenSukunimi"));
    cover("name.call", has("NykyinenKutsumanimi"));
    cover("gender", has("Sukupuoli"));
    cover("death.date", has("Kuolintiedot"));
    cover("citizenship", has("Kansalaisuus"));
    cover("civil-status", has("Siviilisaaty"));
    cover("protection.fi-non-disclosure", has("Turvakielto"));
    cover("language.preferred", has("Aidinkieli"));
    cover("contact.email", has("Sahkopostiosoite"));
    cover(
        "relations.parental-responsibility",
        has("HuoltajaLkm") || has("Huoltaja"),
    );
    cover("relations.guardianship", has("Edunvalvonta"));
    let municipality = path_text(h, NS, &["Kotikunta", "Kuntanumero"]);
    let residential = [
        "VakinainenKotimainenLahiosoite",
        "VakinainenKotimainenOsoite",
    ]
    .iter()
    .filter_map(|name| child(h, NS, name))
    .filter(|a| !ended(child_text(*a, NS, "AsuminenLoppupvm"), today))
    .find_map(|a| domestic(a, municipality).map(|v| (v, child_text(a, NS, "AsuminenAlkupvm"))))
    .or_else(|| {
        child(h, NS, "VakinainenUlkomainenOsoite")
            .and_then(|a| foreign(a).map(|v| (v, child_text(a, NS, "AsuminenAlkupvm"))))
    });
    let residential_held = has("VakinainenKotimainenLahiosoite")
        || has("VakinainenKotimainenOsoite")
        || has("VakinainenUlkomainenOsoite");
    // Under turvakielto an empty or missing address is withheld, not gone.
    let location_held = |held: bool, value: bool| held && (!protected || value);
    cover(
        "address.residential",
        location_held(residential_held, residential.is_some()),
    );
    cover(
        "address.municipality",
        location_held(has("Kotikunta"), municipality.is_some()),
    );
    let temporary = [
        "TilapainenKotimainenLahiosoite",
        "TilapainenKotimainenOsoite",
    ]
    .iter()
    .flat_map(|name| children(h, NS, name))
    .filter(|a| !ended(child_text(*a, NS, "AsuminenLoppupvm"), today))
    .find_map(|a| domestic(a, None).map(|v| (v, child_text(a, NS, "AsuminenAlkupvm"))));
    let temporary_held = has("TilapainenKotimainenLahiosoite")
        || has("TilapainenKotimainenOsoite")
        || has("TilapainenUlkomainenOsoite");
    cover(
        "address.temporary",
        location_held(temporary_held, temporary.is_some()),
    );
    let postal = children(h, NS, "KotimainenPostiosoite")
        .filter(|a| !ended(child_text(*a, NS, "PostiosoiteLoppupvm"), today))
        .find_map(|a| {
            let line =
                child_text(a, NS, "PostiosoiteS").or_else(|| child_text(a, NS, "PostiosoiteR"))?;
            let mut address = serde_json::Map::new();
            address.insert("kind".into(), json!("postal"));
            address.insert("lines".into(), json!([line]));
            if let Some(pc) = child_text(a, NS, "Postinumero") {
                address.insert("postal_code".into(), json!(pc));
            }
            if let Some(city) = child_text(a, NS, "PostitoimipaikkaS")
                .or_else(|| child_text(a, NS, "PostitoimipaikkaR"))
            {
                address.insert("city".into(), json!(city));
            }
            address.insert("country".into(), json!("FIN"));
            Some((
                Value::Object(address),
                child_text(a, NS, "PostiosoiteAlkupvm"),
            ))
        })
        .or_else(|| {
            children(h, NS, "UlkomainenPostiosoite")
                .filter(|a| !ended(child_text(*a, NS, "PostiosoiteLoppupvm"), today))
                .find_map(|a| foreign(a).map(|v| (v, child_text(a, NS, "PostiosoiteAlkupvm"))))
        });
    let postal_held = has("KotimainenPostiosoite") || has("UlkomainenPostiosoite");
    cover(
        "address.postal",
        location_held(postal_held, postal.is_some()),
    );
    covers.sort_unstable();
    p.covers = Some(covers);

    if let Some(given) = path_text(h, NS, &["NykyisetEtunimet", "Etunimet"]) {
        p.push("name.given", json!(given), &[]);
    }
    if let Some(call) = path_text(h, NS, &["NykyinenKutsumanimi", "Kutsumanimi"]) {
        p.push("name.call", json!(call), &[]);
    }
    if let Some(family) = path_text(h, NS, &["NykyinenSukunimi", "Sukunimi"]) {
        p.push("name.family", json!(family), &[]);
    }
    if let Some(birth) = current.birth_date {
        p.push("birth.date", json!(birth.to_string()), &[]);
    }
    match path_text(h, NS, &["Sukupuoli", "Sukupuolikoodi"]) {
        Some("1") => p.push("gender", json!("male"), &[]),
        Some("2") => p.push("gender", json!("female"), &[]),
        Some(other) => warnings.push(format!("unknown Sukupuolikoodi {other:?}; gender left out")),
        None => {}
    }
    let death = path_text(h, NS, &["Kuolintiedot", "Kuolinpvm"]);
    let dead = death.is_some() || path_text(h, NS, &["Kuolintiedot", "Kuollut"]) == Some("1");
    p.push(
        "status",
        json!(if dead { "deceased" } else { "resident" }),
        &[],
    );
    if let Some(d) = death {
        match date(d) {
            Some(d) => p.push("death.date", json!(d), &[]),
            None => warnings.push(format!(
                "Kuolinpvm {d:?} is not a whole date; death.date left out"
            )),
        }
    }
    if let Some(code) = path_text(h, NS, &["Siviilisaaty", "Siviilisaatykoodi"]) {
        match civil_status(code) {
            Some(status) => p.push("civil-status", json!(status), &[]),
            None => {
                warnings.push(format!("unknown Siviilisaatykoodi {code:?}; kept as sent"));
                p.push("civil-status", json!(code), &[]);
            }
        }
    }
    if protected {
        p.push("protection.fi-non-disclosure", json!(true), &[]);
    }
    let dated = |start: Option<&str>| start.and_then(date).map(|d| format!("{d}T00:00:00Z"));
    for (path, found) in [
        ("address.residential", residential),
        ("address.temporary", temporary),
        ("address.postal", postal),
    ] {
        if let Some((value, start)) = found {
            p.fields.push(MappedField {
                path,
                value,
                labels: location.clone(),
                effective: dated(start),
            });
        }
    }
    if let Some(m) = municipality {
        p.push("address.municipality", json!(m), &location);
    }
    if let Some(lang) = path_text(h, NS, &["Aidinkieli", "Kielikoodi"]) {
        p.push("language.preferred", json!(lang.to_ascii_lowercase()), &[]);
    }
    if let Some(email) = child_text(h, NS, "Sahkopostiosoite") {
        p.push("contact.email", json!(email), &[]);
    }
    let mut citizenship: Vec<&str> = Vec::new();
    for c in children(h, NS, "Kansalaisuus") {
        let Some(code) = child_text(c, NS, "Kansalaisuuskoodi3") else {
            continue;
        };
        match COUNTRIES.iter().find(|(n, _)| *n == code) {
            Some((_, alpha)) => citizenship.push(alpha),
            None => warnings.push(format!("unknown Kansalaisuuskoodi3 {code:?}; left out")),
        }
    }
    if !citizenship.is_empty() {
        citizenship.sort_unstable();
        citizenship.dedup();
        p.push("citizenship", json!(citizenship), &[]);
    }
    let mut custody: Vec<(String, String)> = Vec::new();
    for g in children(h, NS, "Huoltaja") {
        match child_text(g, NS, "Henkilotunnus").map(ids::parse_finnish) {
            Some(Ok(id)) => custody.push(("other".into(), id.value)),
            Some(Err(e)) => warnings.push(format!("Huoltaja/Henkilotunnus: {e}")),
            None => warnings
                .push("a Huoltaja without Henkilotunnus (a foreign custodian?) left out".into()),
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
    let mut trustees: Vec<(String, String)> = Vec::new();
    for e in children(h, NS, "Edunvalvonta") {
        for t in children(e, NS, "HenkiloEdunvalvoja") {
            match child_text(t, NS, "Henkilotunnus").map(ids::parse_finnish) {
                Some(Ok(id)) => trustees.push(("guardian".into(), id.value)),
                Some(Err(err)) => warnings.push(format!("HenkiloEdunvalvoja/Henkilotunnus: {err}")),
                None => {}
            }
        }
    }
    if !trustees.is_empty() {
        trustees.sort();
        p.push("relations.guardianship", relations(&trustees), &[]);
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

/// Reads `{"viimeisinKirjausavain": N}`, the change log's key for a date.
pub fn map_key(json: &Value) -> Result<String, String> {
    json.get("viimeisinKirjausavain")
        .and_then(|k| {
            k.as_u64()
                .map(|n| n.to_string())
                .or_else(|| k.as_str().map(String::from))
        })
        .ok_or_else(|| format!("the answer has no viimeisinKirjausavain: {json}"))
}

/// One entry of a `muutokset` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Muutos {
    /// The HETU the caller follows (for a corrected HETU, the old one).
    pub id: String,
    /// The data groups that changed, joined with commas (`MUUTOS` if none).
    pub event: String,
    pub recorded: Option<String>,
}

/// One `muutokset` answer: the changes, the key to continue from, and
/// whether the log is caught up.
#[derive(Debug, Clone, PartialEq)]
pub struct Muutokset {
    pub changes: Vec<Muutos>,
    pub next_key: String,
    pub caught_up: bool,
}

/// One `muutokset` answer → its changes. A change names the HETU and the
/// data groups that changed; the host then queries the person.
pub fn map_changes(json: &Value) -> Result<Muutokset, String> {
    let key = map_key(json)?;
    let caught_up = json
        .get("ajanTasalla")
        .and_then(Value::as_bool)
        .ok_or("the answer has no ajanTasalla")?;
    let list = match json.get("muutokset") {
        Some(Value::Array(list)) => list.as_slice(),
        None | Some(Value::Null) => &[],
        Some(other) => return Err(format!("muutokset is not a list: {other}")),
    };
    let mut changes = Vec::with_capacity(list.len());
    for m in list {
        let hetu = m
            .get("henkilotunnus")
            .and_then(Value::as_str)
            .ok_or("a change without henkilotunnus")?;
        let groups: Vec<&str> = m
            .get("tietoryhmat")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(|g| g.get("tietoryhma").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        changes.push(Muutos {
            id: hetu.to_string(),
            event: if groups.is_empty() {
                "MUUTOS".to_string()
            } else {
                groups.join(",")
            },
            recorded: m.get("muutospv").and_then(Value::as_str).map(String::from),
        });
    }
    Ok(Muutokset {
        changes,
        next_key: key,
        caught_up,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const TODAY: &str = "20261203";

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn found(name: &str, requested: &str) -> (MappedPerson, Vec<String>) {
        let mut warnings = vec![];
        match map_answer(&fixture(name), requested, TODAY, &mut warnings).unwrap() {
            Outcome::Found(p) => (p, warnings),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_person() {
        let (p, warnings) = found("found.xml", "010280-952L");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            p.ids,
            vec![("fi-hetu".to_string(), "010280-952L".to_string(), true)]
        );
        assert_eq!(p.field("name.given"), Some(&json!("Aino Helmi")));
        assert_eq!(p.field("birth.date"), Some(&json!("1980-02-01")));
        assert_eq!(p.field("gender"), Some(&json!("female")));
        assert_eq!(p.field("status"), Some(&json!("resident")));
        assert_eq!(p.field("citizenship"), Some(&json!(["FIN", "SWE"])));
        assert_eq!(p.field("address.municipality"), Some(&json!("091")));
        assert_eq!(
            p.field("address.residential"),
            Some(
                &json!({"kind": "postal", "lines": ["Mannerheimintie 12 B 7"], "postal_code": "00100", "city": "HELSINKI", "municipality": "091", "country": "FIN"})
            )
        );
        assert_eq!(
            p.field("relations.guardianship"),
            Some(&json!([{"role": "guardian", "id": "010469-999W"}]))
        );
        assert_eq!(p.field("protection.fi-non-disclosure"), None);
    }

    #[test]
    fn protected_child_with_new_century_sign_and_odd_parts() {
        // Prefixes differ from the other fixture, dates are partial, a
        // citizenship code is unknown and a custodian has no HETU.
        let (p, warnings) = found("protected.xml", "020516C902J");
        assert_eq!(
            p.ids,
            vec![
                ("fi-hetu".to_string(), "020516C902J".to_string(), true),
                ("fi-hetu".to_string(), "010280-953M".to_string(), false)
            ]
        );
        assert_eq!(p.field("birth.date"), Some(&json!("2016-05-02")));
        assert_eq!(p.field("protection.fi-non-disclosure"), Some(&json!(true)));
        assert_eq!(
            p.field("address.residential"),
            None,
            "the product withholds it"
        );
        assert_eq!(p.field("death.date"), None);
        assert_eq!(p.field("status"), Some(&json!("deceased")));
        assert_eq!(p.field("citizenship"), Some(&json!(["FIN"])));
        assert_eq!(
            p.field("relations.parental-responsibility"),
            Some(&json!([{"role": "other", "id": "010594Y9032"}]))
        );
        assert_eq!(warnings.len(), 3, "{warnings:?}");
    }

    #[test]
    fn corrected_hetu_keeps_the_old_one_inactive() {
        let (p, _) = found("found.xml", "010280-953M");
        assert_eq!(
            p.ids,
            vec![
                ("fi-hetu".to_string(), "010280-952L".to_string(), true),
                ("fi-hetu".to_string(), "010280-953M".to_string(), false)
            ]
        );
    }

    #[test]
    fn return_codes() {
        let answer = |code: &str| {
            fixture("found.xml").replace("koodi=\"0000\"", &format!("koodi=\"{code}\""))
        };
        let mut w = vec![];
        assert!(matches!(
            map_answer(&answer("0001"), "x", TODAY, &mut w).unwrap(),
            Outcome::NotFound
        ));
        assert!(matches!(
            map_answer(&answer("0003"), "x", TODAY, &mut w).unwrap(),
            Outcome::Failed(ConnectorError::Unauthorized(_))
        ));
        assert!(matches!(
            map_answer(&answer("0004"), "x", TODAY, &mut w).unwrap(),
            Outcome::Failed(ConnectorError::Unauthorized(_))
        ));
        assert!(matches!(
            map_answer(&answer("0002"), "x", TODAY, &mut w).unwrap(),
            Outcome::Failed(ConnectorError::BadInput(_))
        ));
        assert!(matches!(
            map_answer(&answer("0999"), "x", TODAY, &mut w).unwrap(),
            Outcome::Failed(ConnectorError::Other(_))
        ));
    }

    #[test]
    fn malformed_answers_say_what_is_wrong() {
        let mut w = vec![];
        let full = fixture("found.xml");
        let e = map_answer(&full[..full.len() / 2], "x", TODAY, &mut w).unwrap_err();
        assert!(e.contains("not well-formed"), "{e}");
        let e = map_answer(
            &full.replace("http://xml.vrk.fi/schema/vtjkysely", "urn:other"),
            "x",
            TODAY,
            &mut w,
        )
        .unwrap_err();
        assert!(e.contains("namespace"), "{e}");
        let e = map_answer("<html><body>502</body></html>", "x", TODAY, &mut w).unwrap_err();
        assert!(e.contains("SOAP 1.1 Envelope"), "{e}");
    }

    #[test]
    fn change_pages() {
        let page = map_changes(&json!({
            "viimeisinKirjausavain": 1000123,
            "ajanTasalla": false,
            "muutokset": [
                {"henkilotunnus": "010280-952L", "muutospv": "2026-02-01T10:00:00Z",
                 "tietoryhmat": [{"tietoryhma": "VAKINAINEN_KOTIMAINEN_OSOITE", "turvakiellonAlaisetKentat": ["katunimi"]},
                                 {"tietoryhma": "KOTIKUNTA"}]}
            ]
        }))
        .unwrap();
        assert_eq!(page.next_key, "1000123");
        assert!(!page.caught_up);
        assert_eq!(
            page.changes[0].event,
            "VAKINAINEN_KOTIMAINEN_OSOITE,KOTIKUNTA"
        );
        let empty =
            map_changes(&json!({"viimeisinKirjausavain": 5, "ajanTasalla": true, "muutokset": []}))
                .unwrap();
        assert!(empty.caught_up && empty.changes.is_empty());
        assert!(
            map_changes(&json!({"ajanTasalla": true}))
                .unwrap_err()
                .contains("viimeisinKirjausavain")
        );
        assert!(
            map_changes(&json!({"viimeisinKirjausavain": 5}))
                .unwrap_err()
                .contains("ajanTasalla")
        );
    }

    #[test]
    fn request_escapes_and_uses_placeholders() {
        let r = request("PERUSSANOMA 1", "Rektor <Skole>", "010280-952L");
        assert!(r.contains("{{secret:vtj-password}}"));
        assert!(r.contains("Rektor &lt;Skole&gt;"));
        assert!(r.contains("<Henkilotunnus>010280-952L</Henkilotunnus>"));
    }
}
