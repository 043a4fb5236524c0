//! Folkeregisteret person documents and feed pages → catalogue fields.
//!
//! Every property of a person document is an array of versions, each with
//! `erGjeldende` (current), `gyldighetstidspunkt` (valid from) and
//! `opphoerstidspunkt` (ended). We take the current version; relation
//! arrays (familierelasjon, foreldreansvar, statsborgerskap) list several
//! current facts at once. Enum values we do not know are kept as sent and
//! reported as warnings, never as failures: the register adds values without
//! a new API version.
//!
//! **Coverage.** For a person graded strengt fortrolig the register sends no
//! address data at all (Skatteetaten's documentation of
//! `adressebeskyttelse`): such an answer does not cover the location fields,
//! so what the host holds stays, protected by the grading, instead of
//! being read as a move. Relations come only with the part
//! `relasjon-utvidet`: without it they are not covered.

use folkhub_connector_sdk::v2::{
    Answer, AnswerChange, AnswerPage, ChangeKind, Field, Period, PersonId, PersonRecord,
};
use serde_json::{Map, Value, json};

pub const UPSTREAM_VERSION: &str = "v1";
/// Persons per bulkoppslag call (the register does not publish a limit; 1000
/// is what the feed pages use and what the simulator enforces).
pub const MAX_BATCH: usize = 1000;
/// Events per feed page, fixed by the register.
pub const FEED_PAGE: usize = 1000;

pub const FIELDS: &[&str] = &[
    "name.given",
    "name.middle",
    "name.family",
    "birth.date",
    "birth.country",
    "gender",
    "status",
    "death.date",
    "civil-status",
    "citizenship",
    "address.residential",
    "address.temporary",
    "address.shared-residence",
    "address.postal",
    "address.municipality",
    "address.statistical-unit",
    "protection.level",
    "relations.family",
    "relations.parental-responsibility",
    "relations.guardianship",
    "language.sami",
];

/// Location fields: the register sends none of them for strengt fortrolig.
const LOCATION: &[&str] = &[
    "address.residential",
    "address.temporary",
    "address.shared-residence",
    "address.postal",
    "address.municipality",
    "address.statistical-unit",
];
/// Fields only the part `relasjon-utvidet` brings.
const RELATIONS: &[&str] = &[
    "relations.family",
    "relations.parental-responsibility",
    "relations.guardianship",
];

/// A mapped field before it crosses the WIT boundary.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub path: &'static str,
    pub value: Value,
    pub labels: Vec<String>,
    pub effective: Option<String>,
    /// When the value ends (e.g. a shared-residence agreement), if known.
    pub end: Option<String>,
}

/// A mapped person.
#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    /// (scheme, value, active)
    pub ids: Vec<(String, String, bool)>,
    pub fields: Vec<Mapped>,
    /// The fields this answer speaks for.
    pub covers: Vec<&'static str>,
}

impl Person {
    pub fn field(&self, path: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|f| f.path == path)
            .map(|f| &f.value)
    }

    /// The record and what it covers (contract 2.1).
    pub fn into_answer(self) -> Answer {
        let covers = self.covers.iter().map(|f| f.to_string()).collect();
        Answer {
            person: self.into_record(),
            covers,
        }
    }

    pub fn into_record(self) -> PersonRecord {
        PersonRecord {
            ids: self
                .ids
                .into_iter()
                .map(|(scheme, value, active)| PersonId {
                    scheme,
                    value,
                    active,
                })
                .collect(),
            fields: self
                .fields
                .into_iter()
                .map(|f| Field {
                    path: f.path.to_string(),
                    value: f.value.to_string(),
                    labels: f.labels,
                    valid: Period {
                        start: f.effective,
                        end: f.end,
                    },
                })
                .collect(),
            upstream_version: UPSTREAM_VERSION.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Found(Person),
    NotFound,
    Invalid(String),
}

/// Is this version current? Documents from older schema versions may lack
/// the flag; then a version without an end time is current.
fn is_current(v: &Value) -> bool {
    match v.get("erGjeldende").and_then(Value::as_bool) {
        Some(flag) => flag,
        None => v.get("opphoerstidspunkt").is_none_or(Value::is_null),
    }
}

/// The current version of a versioned property: the current one with the
/// latest `gyldighetstidspunkt`.
fn current<'a>(doc: &'a Value, property: &str) -> Option<&'a Value> {
    match doc.get(property)? {
        Value::Array(versions) => versions.iter().filter(|v| is_current(v)).max_by(|a, b| {
            text(a, "gyldighetstidspunkt")
                .unwrap_or("")
                .cmp(text(b, "gyldighetstidspunkt").unwrap_or(""))
        }),
        // doedsfall and falskIdentitet are single objects in v1.5.
        single @ Value::Object(_) => is_current(single).then_some(single),
        _ => None,
    }
}

/// Every current element of a list property.
fn all_current<'a>(doc: &'a Value, property: &str) -> Vec<&'a Value> {
    match doc.get(property) {
        Some(Value::Array(items)) => items.iter().filter(|v| is_current(v)).collect(),
        _ => vec![],
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Numbers sometimes come as JSON numbers (grunnkrets, gaardsnummer), sometimes as strings.
fn number_text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn effective(v: &Value) -> Option<String> {
    text(v, "gyldighetstidspunkt")
        .or_else(|| text(v, "ajourholdstidspunkt"))
        .map(String::from)
}

fn code(raw: &str, table: &[(&str, &str)], what: &str, warnings: &mut Vec<String>) -> String {
    match table.iter().find(|(from, _)| *from == raw) {
        Some((_, to)) => to.to_string(),
        None => {
            warnings.push(format!("unknown {what} code {raw:?} kept as sent"));
            raw.to_string()
        }
    }
}

const STATUS: &[(&str, &str)] = &[
    ("bosatt", "resident"),
    ("utflyttet", "emigrated"),
    ("doed", "deceased"),
    ("forsvunnet", "missing"),
    ("opphoert", "ceased"),
    ("foedselsregistrert", "birth-registered"),
    ("midlertidig", "temporary"),
    ("inaktiv", "inactive"),
    ("ikkeBosatt", "not-resident"),
    ("aktiv", "active"),
];
const CIVIL: &[(&str, &str)] = &[
    ("uoppgitt", "unknown"),
    ("ugift", "unmarried"),
    ("gift", "married"),
    ("enkeEllerEnkemann", "widowed"),
    ("skilt", "divorced"),
    ("separert", "separated"),
    ("registrertPartner", "registered-partner"),
    ("separertPartner", "separated-partner"),
    ("skiltPartner", "divorced-partner"),
    ("gjenlevendePartner", "surviving-partner"),
];
const GENDER: &[(&str, &str)] = &[("kvinne", "female"), ("mann", "male")];
const ROLE: &[(&str, &str)] = &[
    ("mor", "mother"),
    ("far", "father"),
    ("medmor", "co-mother"),
    ("barn", "child"),
    ("ektefelleEllerPartner", "spouse"),
    ("soesken", "sibling"),
    ("doedfoedtBarn", "stillborn-child"),
];
const CUSTODY: &[(&str, &str)] = &[
    ("felles", "joint"),
    ("mor", "mother"),
    ("far", "father"),
    ("medmor", "co-mother"),
    ("andre", "other"),
    ("ukjent", "unknown"),
];
const GRADING: &[(&str, &str)] = &[
    ("ugradert", "UGRADERT"),
    ("klientadresse", "KLIENTADRESSE"),
    ("fortrolig", "FORTROLIG"),
    ("strengtFortrolig", "STRENGT_FORTROLIG"),
    ("strengtFortroligUtland", "STRENGT_FORTROLIG_UTLAND"),
];

/// An address version → (canonical object, municipality, statistical unit).
fn address(v: &Value) -> Option<(Value, Option<String>, Option<String>)> {
    let mut out = Map::new();
    let municipality;
    let poststed;
    let unit;
    if let Some(road) = v.get("vegadresse").filter(|r| r.is_object()) {
        out.insert("kind".into(), json!("street"));
        if let Some(name) = text(road, "adressenavn") {
            out.insert("street".into(), json!(name));
        }
        if let Some(number) = road.get("adressenummer") {
            if let Some(n) = number_text(number, "husnummer") {
                out.insert("house_number".into(), json!(n));
            }
            if let Some(l) = text(number, "husbokstav") {
                out.insert("house_letter".into(), json!(l));
            }
        }
        municipality = text(road, "kommunenummer").map(String::from);
        poststed = road.get("poststed");
        unit = text(road, "bruksenhetsnummer");
    } else if let Some(cadastral) = v.get("matrikkeladresse").filter(|r| r.is_object()) {
        out.insert("kind".into(), json!("cadastral"));
        let number = cadastral
            .get("matrikkelnummer")
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(farm) = number_text(&number, "gaardsnummer") {
            out.insert("farm".into(), json!(farm));
        }
        if let Some(holding) = number_text(&number, "bruksnummer") {
            out.insert("holding".into(), json!(holding));
        }
        if let Some(lease) = number_text(&number, "festenummer").filter(|f| f != "0") {
            out.insert("lease".into(), json!(lease));
        }
        municipality = text(&number, "kommunenummer").map(String::from);
        poststed = cadastral.get("poststed");
        unit = text(cadastral, "bruksenhetsnummer");
    } else if let Some(unknown) = v.get("ukjentBosted").filter(|r| r.is_object()) {
        out.insert("kind".into(), json!("unknown"));
        let municipality = text(unknown, "bostedskommune").map(String::from);
        if let Some(m) = &municipality {
            out.insert("municipality".into(), json!(m));
        }
        out.insert("country".into(), json!("NOR"));
        return Some((Value::Object(out), municipality, None));
    } else {
        return None;
    }
    if let Some(u) = unit {
        out.insert("unit".into(), json!(u));
    }
    if let Some(p) = poststed {
        if let Some(code) = text(p, "postnummer") {
            out.insert("postal_code".into(), json!(code));
        }
        if let Some(city) = text(p, "poststedsnavn") {
            out.insert("city".into(), json!(city));
        }
    }
    if let Some(m) = &municipality {
        out.insert("municipality".into(), json!(m));
    }
    out.insert("country".into(), json!("NOR"));
    let statistical_unit = match (&municipality, number_text(v, "grunnkrets")) {
        (Some(m), Some(g)) => g.parse::<u32>().ok().map(|g| format!("{m}{g:04}")),
        _ => None,
    };
    Some((Value::Object(out), municipality, statistical_unit))
}

/// A postal address version (`postadresse`: `vegadresse`,
/// `postboksadresse` or `postadresseIFrittFormat`; `postadresseIUtlandet`:
/// `utenlandskAdresseIFrittFormat` or `utenlandskAdresse`).
fn postal(v: &Value) -> Option<Value> {
    let mut out = Map::new();
    let poststed;
    if let Some(road) = v.get("vegadresse").filter(|r| r.is_object()) {
        out.insert("kind".into(), json!("street"));
        if let Some(co) = text(road, "coAdressenavn") {
            out.insert("care_of".into(), json!(co));
        }
        out.insert("street".into(), json!(text(road, "adressenavn")?));
        if let Some(number) = road.get("adressenummer") {
            if let Some(n) = number_text(number, "husnummer") {
                out.insert("house_number".into(), json!(n));
            }
            if let Some(l) = text(number, "husbokstav") {
                out.insert("house_letter".into(), json!(l));
            }
        }
        poststed = road.get("poststed");
    } else if let Some(post_box) = v.get("postboksadresse").filter(|r| r.is_object()) {
        out.insert("kind".into(), json!("postal"));
        if let Some(owner) = text(post_box, "postbokseier") {
            out.insert("care_of".into(), json!(owner));
        }
        out.insert("lines".into(), json!([text(post_box, "postboks")?]));
        poststed = post_box.get("poststed");
    } else if let Some(free) = v.get("postadresseIFrittFormat").filter(|r| r.is_object()) {
        out.insert("kind".into(), json!("postal"));
        let lines: Vec<&str> = free
            .get("adresselinje")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.insert("lines".into(), json!(lines));
        poststed = free.get("poststed");
    } else if let Some(abroad) = v
        .get("utenlandskAdresseIFrittFormat")
        .or_else(|| v.get("utenlandskAdresse"))
        .filter(|r| r.is_object())
    {
        out.insert("kind".into(), json!("foreign"));
        let mut lines: Vec<String> = abroad
            .get("adresselinje")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        for key in [
            "adressenavnNummer",
            "bygning",
            "postboks",
            "postkode",
            "byEllerStedsnavn",
            "distriktsnavn",
            "region",
        ] {
            if let Some(t) = text(abroad, key) {
                lines.push(t.to_string());
            }
        }
        out.insert("lines".into(), json!(lines));
        if let Some(country) = text(abroad, "landkode") {
            out.insert("country".into(), json!(country));
        }
        return Some(Value::Object(out));
    } else {
        return None;
    }
    if let Some(p) = poststed {
        if let Some(code) = text(p, "postnummer") {
            out.insert("postal_code".into(), json!(code));
        }
        if let Some(city) = text(p, "poststedsnavn") {
            out.insert("city".into(), json!(city));
        }
    }
    out.insert("country".into(), json!("NOR"));
    Some(Value::Object(out))
}

/// Maps one person document, read with the parts named (relations need
/// `relasjon-utvidet`, or `familierelasjon`/`foreldreansvar`).
pub fn map_person(
    doc: &Value,
    relations_part: bool,
    warnings: &mut Vec<String>,
) -> Result<Person, String> {
    if !doc.is_object() {
        return Err("folkeregisterperson is not an object".into());
    }
    let mut ids = Vec::new();
    if let Some(Value::Array(list)) = doc.get("identifikasjonsnummer") {
        for item in list {
            let Some(value) = text(item, "foedselsEllerDNummer") else {
                continue;
            };
            let scheme = match text(item, "identifikatortype") {
                Some("dNummer") => "no-dnr",
                Some("foedselsnummer") | None => "no-fnr",
                Some(other) => {
                    warnings.push(format!(
                        "unknown identifikatortype {other:?}; kept as no-fnr"
                    ));
                    "no-fnr"
                }
            };
            let active = match text(item, "status") {
                Some("iBruk") => true,
                Some("opphoert") => false,
                _ => is_current(item),
            };
            ids.push((scheme.to_string(), value.to_string(), active));
        }
    }
    if ids.is_empty() {
        return Err("the person document has no identifikasjonsnummer".into());
    }
    // IDs other Nordic countries gave the person (moved across a border):
    // they link the person to SPAR and DVV records. Other countries' IDs
    // have no scheme here and are skipped.
    for item in all_current(doc, "utenlandskPersonidentifikasjon") {
        let (Some(value), Some(country)) = (
            text(item, "identifikasjonsnummer"),
            text(item, "utstederland"),
        ) else {
            continue;
        };
        let parsed = match country {
            "SWE" => folkhub_connector_sdk::ids::parse_swedish(value),
            "FIN" => folkhub_connector_sdk::ids::parse_finnish(value),
            _ => continue,
        };
        match parsed {
            Ok(id) => ids.push((id.scheme.as_str().to_string(), id.value, true)),
            Err(e) => warnings.push(format!(
                "utenlandskPersonidentifikasjon from {country}: {e}"
            )),
        }
    }
    let own_ids: Vec<String> = ids.iter().map(|(_, v, _)| v.clone()).collect();

    let mut fields = Vec::new();
    let mut ends: Vec<(&'static str, String)> = Vec::new();
    let mut push =
        |path: &'static str, value: Value, labels: Vec<String>, effective: Option<String>| {
            fields.push(Mapped {
                path,
                value,
                labels,
                effective,
                end: None,
            });
        };

    if let Some(name) = current(doc, "navn") {
        let eff = effective(name);
        for (key, path) in [
            ("fornavn", "name.given"),
            ("mellomnavn", "name.middle"),
            ("etternavn", "name.family"),
        ] {
            if let Some(v) = text(name, key) {
                push(path, json!(v), vec![], eff.clone());
            }
        }
    }
    if let Some(birth) = current(doc, "foedsel") {
        if let Some(date) = text(birth, "foedselsdato") {
            push("birth.date", json!(date), vec![], None);
        }
        if let Some(country) = text(birth, "foedeland") {
            push("birth.country", json!(country), vec![], None);
        }
    }
    if let Some(gender) = current(doc, "kjoenn").and_then(|g| text(g, "kjoenn")) {
        push(
            "gender",
            json!(code(gender, GENDER, "kjoenn", warnings)),
            vec![],
            None,
        );
    }
    if let Some(status) = current(doc, "status")
        && let Some(s) = text(status, "status")
    {
        push(
            "status",
            json!(code(s, STATUS, "status", warnings)),
            vec![],
            effective(status),
        );
    }
    if let Some(date) = current(doc, "doedsfall").and_then(|d| text(d, "doedsdato")) {
        push("death.date", json!(date), vec![], None);
    }
    if let Some(civil) = current(doc, "sivilstand")
        && let Some(s) = text(civil, "sivilstand")
    {
        push(
            "civil-status",
            json!(code(s, CIVIL, "sivilstand", warnings)),
            vec![],
            effective(civil),
        );
    }
    let mut citizenship: Vec<String> = all_current(doc, "statsborgerskap")
        .into_iter()
        .filter_map(|c| text(c, "statsborgerskap").map(String::from))
        .collect();
    if !citizenship.is_empty() {
        citizenship.sort();
        citizenship.dedup();
        push("citizenship", json!(citizenship), vec![], None);
    }

    // Protection: the person-level grading, and each address's own grading;
    // the stricter applies to every location field.
    let person_grading = current(doc, "adressebeskyttelse")
        .and_then(|g| text(g, "graderingsnivaa"))
        .map(|g| code(g, GRADING, "graderingsnivaa", warnings));
    if let Some(g) = &person_grading
        && g != "UGRADERT"
    {
        push("protection.level", json!(g), vec![], None);
    }
    let labels_for = |v: &Value, warnings: &mut Vec<String>| -> Vec<String> {
        let mut labels = Vec::new();
        let own =
            text(v, "adressegradering").map(|g| code(g, GRADING, "adressegradering", warnings));
        for g in [own, person_grading.clone()].into_iter().flatten() {
            if g != "UGRADERT" && !labels.contains(&g) {
                labels.push(g);
            }
        }
        labels
    };
    if let Some(home) = current(doc, "bostedsadresse") {
        let labels = labels_for(home, warnings);
        match address(home) {
            Some((value, municipality, statistical_unit)) => {
                let eff = effective(home);
                push("address.residential", value, labels.clone(), eff.clone());
                if let Some(m) = municipality {
                    push("address.municipality", json!(m), labels.clone(), eff.clone());
                }
                if let Some(s) = statistical_unit {
                    push("address.statistical-unit", json!(s), labels, eff);
                }
            }
            None => warnings.push("bostedsadresse has no address form we know (vegadresse, matrikkeladresse, ukjentBosted)".into()),
        }
    }
    if let Some(stay) = current(doc, "oppholdsadresse") {
        let labels = labels_for(stay, warnings);
        if let Some((value, _, _)) = address(stay) {
            push("address.temporary", value, labels, effective(stay));
        }
    }
    if let Some(shared) = current(doc, "deltBosted") {
        let labels = labels_for(shared, warnings);
        if let Some((value, _, _)) = address(shared) {
            // The agreement's own dates bound it; the host keeps what is in
            // force by its clock.
            let start = text(shared, "startdatoForKontrakt")
                .map(String::from)
                .or_else(|| effective(shared));
            if let Some(end) = text(shared, "sluttdatoForKontrakt") {
                ends.push(("address.shared-residence", end.to_string()));
            }
            push("address.shared-residence", value, labels, start);
        }
    }
    if let Some(post) = current(doc, "postadresse").or_else(|| current(doc, "postadresseIUtlandet"))
    {
        let labels = labels_for(post, warnings);
        match postal(post) {
            Some(value) => push("address.postal", value, labels, effective(post)),
            None => warnings.push("postadresse has no address form we know (vegadresse, postboksadresse, postadresseIFrittFormat)".into()),
        }
    }

    let mut family: Vec<(String, String)> = all_current(doc, "familierelasjon")
        .into_iter()
        .filter_map(|r| {
            let id = text(r, "relatertPerson")?;
            let role = text(r, "relatertPersonsRolle")?;
            Some((
                code(role, ROLE, "relatertPersonsRolle", warnings),
                id.to_string(),
            ))
        })
        .collect();
    if !family.is_empty() {
        family.sort();
        family.dedup();
        push("relations.family", relations(&family), vec![], None);
    }
    let mut custody: Vec<(String, String)> = all_current(doc, "foreldreansvar")
        .into_iter()
        .filter(|r| text(r, "ansvarssubjekt").is_none_or(|s| own_ids.iter().any(|id| id == s)))
        .filter_map(|r| {
            let responsible = text(r, "ansvarlig")?;
            let kind = text(r, "ansvar").unwrap_or("ukjent");
            Some((
                code(kind, CUSTODY, "ansvar", warnings),
                responsible.to_string(),
            ))
        })
        .collect();
    if !custody.is_empty() {
        custody.sort();
        custody.dedup();
        push(
            "relations.parental-responsibility",
            relations(&custody),
            vec![],
            None,
        );
    }
    let mut guardians: Vec<(String, String)> = all_current(doc, "vergemaalEllerFremtidsfullmakt")
        .into_iter()
        .filter_map(|r| {
            let verge = r.get("verge")?;
            let id = text(verge, "foedselsEllerDNummer")?;
            let scope = text(r, "vergemaaltype").unwrap_or("ukjent");
            Some((scope.to_string(), id.to_string()))
        })
        .collect();
    if !guardians.is_empty() {
        guardians.sort();
        push(
            "relations.guardianship",
            relations(&guardians),
            vec![],
            None,
        );
    }
    let mut sami: Vec<String> = all_current(doc, "brukAvSamiskSpraak")
        .into_iter()
        .filter_map(|s| text(s, "spraak").map(String::from))
        .collect();
    if !sami.is_empty() {
        sami.sort();
        push("language.sami", json!(sami), vec![], None);
    }
    for (path, end) in ends {
        if let Some(f) = fields.iter_mut().find(|f| f.path == path) {
            f.end = Some(end);
        }
    }
    let withheld = matches!(
        person_grading.as_deref(),
        Some("STRENGT_FORTROLIG" | "STRENGT_FORTROLIG_UTLAND")
    );
    let covers = FIELDS
        .iter()
        .copied()
        .filter(|f| !(withheld && LOCATION.contains(f)))
        .filter(|f| relations_part || !RELATIONS.contains(f))
        .collect();
    Ok(Person {
        ids,
        fields,
        covers,
    })
}

fn relations(list: &[(String, String)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(role, id)| json!({"role": role, "id": id}))
            .collect(),
    )
}

/// Maps a `PersonBulkoppslagResponse`.
pub fn map_bulk(
    body: &Value,
    relations_part: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, Outcome)>, String> {
    let list = body
        .get("oppslag")
        .and_then(Value::as_array)
        .ok_or("bulkoppslag answer has no `oppslag` array")?;
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let requested = text(item, "foedselsEllerDNummer")
            .ok_or("an oppslag has no foedselsEllerDNummer")?
            .to_string();
        let outcome = if let Some(doc) = item.get("folkeregisterperson").filter(|d| d.is_object()) {
            Outcome::Found(
                map_person(doc, relations_part, warnings)
                    .map_err(|e| format!("{requested}: {e}"))?,
            )
        } else {
            let message = item
                .get("feilmelding")
                .and_then(|f| {
                    f.get("feilmelding")
                        .and_then(Value::as_str)
                        .or_else(|| f.as_str())
                })
                .unwrap_or("")
                .to_string();
            if message.to_lowercase().contains("ugyldig") {
                Outcome::Invalid(format!("Folkeregisteret refused the ID: {message}"))
            } else {
                Outcome::NotFound
            }
        };
        out.push((requested, outcome));
    }
    Ok(out)
}

/// A mapped feed page.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    /// (id, event type, sequence number, recorded)
    pub changes: Vec<(String, String, u64, Option<String>)>,
    pub next: u64,
    pub caught_up: bool,
}

/// What a Folkeregisteret event type says happened.
pub fn kind_of(event: &str) -> ChangeKind {
    match event {
        "personErOpprettet" | "foedsel" | "personErBosatt" => ChangeKind::Created,
        "personErDoed" | "doedsfall" => ChangeKind::Deceased,
        "endringIIdentifikasjonsnummer" | "identifikasjonsnummer" => ChangeKind::IdsChanged,
        "personErOpphoert" | "opphoerAvIdentifikasjonsnummer" => ChangeKind::Removed,
        _ => ChangeKind::Updated,
    }
}

impl FeedPage {
    /// The page as contract 2.1 carries it; events name persons, whom the
    /// host then looks up.
    pub fn into_page(self) -> AnswerPage {
        AnswerPage {
            changes: self
                .changes
                .into_iter()
                .map(|(id, event, seq, recorded)| AnswerChange {
                    id,
                    kind: kind_of(&event),
                    event,
                    position: seq.to_string(),
                    recorded,
                    person: None,
                })
                .collect(),
            next_cursor: self.next.to_string(),
            caught_up: self.caught_up,
        }
    }
}

/// Maps a `hendelser/feed` page read from sequence number `from`.
pub fn map_feed(body: &Value, from: u64) -> Result<FeedPage, String> {
    let list = body
        .as_array()
        .ok_or("the feed answer is not a JSON array")?;
    let mut changes = Vec::with_capacity(list.len());
    let mut next = from;
    for item in list {
        let seq = item
            .get("sekvensnummer")
            .and_then(Value::as_u64)
            .ok_or("a feed entry has no sekvensnummer")?;
        let event = item.get("hendelse").ok_or("a feed entry has no hendelse")?;
        let id = text(event, "folkeregisteridentifikator")
            .ok_or("a hendelse has no folkeregisteridentifikator")?;
        let kind = text(event, "hendelsetype").unwrap_or("ukjent");
        changes.push((
            id.to_string(),
            kind.to_string(),
            seq,
            text(event, "ajourholdstidspunkt").map(String::from),
        ));
        next = next.max(seq + 1);
    }
    Ok(FeedPage {
        caught_up: list.len() < FEED_PAGE,
        changes,
        next,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    #[test]
    fn current_versions_and_every_address_form() {
        let mut w = vec![];
        let p = map_person(&fixture("person-moved.json"), true, &mut w).unwrap();
        assert_eq!(p.field("name.family"), Some(&json!("BLOMST")));
        assert_eq!(p.field("name.given"), Some(&json!("VAKKER")));
        let home = p.field("address.residential").unwrap();
        assert_eq!(home["street"], "Fjordgata");
        assert_eq!(home["house_letter"], "B");
        assert_eq!(p.field("address.municipality"), Some(&json!("4601")));
        assert_eq!(
            p.field("address.statistical-unit"),
            Some(&json!("46010305"))
        );
        assert_eq!(p.field("status"), Some(&json!("resident")));
        assert_eq!(p.field("gender"), Some(&json!("female")));
        assert_eq!(
            p.ids,
            vec![
                ("no-dnr".into(), "43851500119".into(), false),
                ("no-fnr".into(), "03851598730".into(), true)
            ]
        );
        assert!(w.is_empty(), "{w:?}");
        let rel = p.field("relations.parental-responsibility").unwrap();
        assert_eq!(rel, &json!([{"role": "joint", "id": "20036914700"}]));
    }

    #[test]
    fn cadastral_unknown_and_protection() {
        let mut w = vec![];
        let p = map_person(&fixture("person-cadastral-fortrolig.json"), true, &mut w).unwrap();
        let home = p.field("address.residential").unwrap();
        assert_eq!(home["kind"], "cadastral");
        assert_eq!(home["farm"], "12");
        assert_eq!(p.field("protection.level"), Some(&json!("FORTROLIG")));
        let labels = &p
            .fields
            .iter()
            .find(|f| f.path == "address.residential")
            .unwrap()
            .labels;
        assert_eq!(labels, &vec!["FORTROLIG".to_string()]);

        let p = map_person(&fixture("person-strengt-fortrolig.json"), true, &mut w).unwrap();
        assert_eq!(
            p.field("protection.level"),
            Some(&json!("STRENGT_FORTROLIG"))
        );
        assert!(p.field("address.residential").is_none());
        assert!(p.field("address.municipality").is_none());
        assert_eq!(p.field("death.date"), Some(&json!("2024-02-03")));
        // The register withholds every location: not covered, not removed.
        assert!(!p.covers.contains(&"address.residential"));
        assert!(!p.covers.contains(&"address.municipality"));
        assert!(p.covers.contains(&"protection.level"));
    }

    #[test]
    fn shared_residence_and_postal_addresses() {
        let mut w = vec![];
        let doc = json!({
            "identifikasjonsnummer": [{"foedselsEllerDNummer": "20036914700", "identifikatortype": "foedselsnummer", "status": "iBruk"}],
            "deltBosted": [{"vegadresse": {"adressenavn": "Storgata", "adressenummer": {"husnummer": "3"}, "kommunenummer": "0301", "poststed": {"postnummer": "0155", "poststedsnavn": "OSLO"}},
                "adressegradering": "ugradert", "startdatoForKontrakt": "2024-08-01", "sluttdatoForKontrakt": "2030-07-31", "erGjeldende": true}],
            "postadresse": [{"postboksadresse": {"postboks": "Postboks 77", "poststed": {"postnummer": "0101", "poststedsnavn": "OSLO"}}, "adressegradering": "ugradert", "erGjeldende": true}],
        });
        let p = map_person(&doc, false, &mut w).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            p.field("address.shared-residence"),
            Some(
                &json!({"kind": "street", "street": "Storgata", "house_number": "3", "postal_code": "0155", "city": "OSLO", "municipality": "0301", "country": "NOR"})
            )
        );
        let shared = p
            .fields
            .iter()
            .find(|f| f.path == "address.shared-residence")
            .unwrap();
        assert_eq!(
            (shared.effective.as_deref(), shared.end.as_deref()),
            (Some("2024-08-01"), Some("2030-07-31"))
        );
        assert_eq!(
            p.field("address.postal"),
            Some(
                &json!({"kind": "postal", "lines": ["Postboks 77"], "postal_code": "0101", "city": "OSLO", "country": "NOR"})
            )
        );
        // Without relasjon-utvidet the relations are not covered.
        assert!(!p.covers.contains(&"relations.family"));
        assert!(p.covers.contains(&"address.residential"));
    }

    #[test]
    fn unknown_codes_are_kept_and_reported() {
        let mut w = vec![];
        let doc = json!({
            "identifikasjonsnummer": [{"foedselsEllerDNummer": "20036914700", "identifikatortype": "foedselsnummer", "status": "iBruk"}],
            "status": [{"status": "nyStatusFra2027", "erGjeldende": true}],
            "bostedsadresse": [{"ukjentBosted": {"bostedskommune": "0301"}, "erGjeldende": true}],
        });
        let p = map_person(&doc, true, &mut w).unwrap();
        assert_eq!(p.field("status"), Some(&json!("nyStatusFra2027")));
        assert_eq!(p.field("address.residential").unwrap()["kind"], "unknown");
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn bulk_and_feed() {
        let mut w = vec![];
        let body = json!({"oppslag": [
            {"foedselsEllerDNummer": "20036914700", "folkeregisterperson": fixture("person-moved.json")},
            {"foedselsEllerDNummer": "20036914701", "feilmelding": {"feilmelding": "Ugyldig fødsels- eller d-nummer"}},
            {"foedselsEllerDNummer": "01010112345", "feilmelding": {"feilmelding": "Fant ikke person"}},
        ]});
        let out = map_bulk(&body, true, &mut w).unwrap();
        assert!(matches!(out[0].1, Outcome::Found(_)));
        assert!(matches!(out[1].1, Outcome::Invalid(_)));
        assert_eq!(out[2].1, Outcome::NotFound);
        assert!(map_bulk(&json!({"x": 1}), true, &mut w).is_err());

        let feed = json!([
            {"sekvensnummer": 5, "hendelse": {"folkeregisteridentifikator": "20036914700", "hendelsetype": "endringINavn", "ajourholdstidspunkt": "2026-01-01T00:00:00Z"}},
            {"sekvensnummer": 6, "hendelse": {"folkeregisteridentifikator": "03851598730", "hendelsetype": "enTypeViIkkeKjenner"}}
        ]);
        let page = map_feed(&feed, 5).unwrap();
        assert_eq!(page.next, 7);
        assert!(page.caught_up);
        assert_eq!(page.changes[1].1, "enTypeViIkkeKjenner");
        assert_eq!(map_feed(&json!([]), 9).unwrap().next, 9);
        assert!(map_feed(&json!({"feil": 1}), 1).is_err());
    }
}
