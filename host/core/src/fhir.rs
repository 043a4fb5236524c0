//! FHIR R4 `Patient` from a reader's view of a merged record.
//!
//! Identifiers use the Nordic systems (NO fødselsnummer and D-number, SE
//! personnummer and samordningsnummer, FI HETU); replaced IDs are kept with
//! `use: old`. Protection travels as `meta.security`: the HL7
//! confidentiality code (FORTROLIG → R, STRENGT_FORTROLIG(_UTLAND) → V)
//! plus the register's own marker, and `REDACTED` when the reader's basis
//! withheld fields. Relations go where R4 has a place for them: parents,
//! children, spouses, siblings and guardians as `contact` with an HL7 role
//! code and the relative's identifier in an extension (R4's
//! `Patient.contact` has no identifier element).
//!
//! Only what the view holds is exported: build the view for the reader
//! first ([`crate::access::view`]).

use serde_json::{Map, Value, json};

use crate::access::View;
use crate::labels::Protection;

/// The identifier system of an ID scheme.
pub fn system(scheme: &str) -> String {
    match scheme {
        "no-fnr" => "urn:oid:2.16.578.1.12.4.1.4.1".into(),
        "no-dnr" => "urn:oid:2.16.578.1.12.4.1.4.2".into(),
        "se-pnr" => "urn:oid:1.2.752.129.2.1.3.1".into(),
        "se-snr" => "urn:oid:1.2.752.129.2.1.3.3".into(),
        "fi-hetu" => "urn:oid:1.2.246.21".into(),
        other => format!("urn:folkhub:id-scheme:{other}"),
    }
}

/// The ID scheme of an identifier system, for `identifier=system|value` searches.
pub fn scheme_of(system: &str) -> Option<&'static str> {
    ["no-fnr", "no-dnr", "se-pnr", "se-snr", "fi-hetu"]
        .into_iter()
        .find(|s| self::system(s) == system)
}

/// Extension URL for a relative's identifier on `Patient.contact`.
pub const RELATIVE_IDENTIFIER: &str = "urn:folkhub:fhir:relative-identifier";
/// System of the registers' own protection markers in `meta.security`.
pub const PROTECTION_SYSTEM: &str = "urn:folkhub:protection";

fn text(view: &View, path: &str) -> Option<String> {
    view.fields
        .get(path)
        .and_then(|f| f.value.as_str())
        .map(String::from)
}

fn address(value: &Value, usage: &str, kind: &str) -> Value {
    let get = |k: &str| value.get(k).and_then(Value::as_str);
    let mut lines: Vec<String> = Vec::new();
    if let Some(care_of) = get("care_of") {
        lines.push(format!("c/o {care_of}"));
    }
    if let Some(street) = get("street") {
        let number = [get("house_number"), get("house_letter")]
            .into_iter()
            .flatten()
            .collect::<String>();
        lines.push(format!("{street} {number}").trim().to_string());
    }
    if let Some(more) = value.get("lines").and_then(Value::as_array) {
        lines.extend(more.iter().filter_map(|l| l.as_str().map(String::from)));
    }
    if let Some(unit) = get("unit") {
        lines.push(unit.to_string());
    }
    let mut out = Map::new();
    out.insert("use".into(), json!(usage));
    out.insert("type".into(), json!(kind));
    if !lines.is_empty() {
        out.insert("line".into(), json!(lines));
    }
    for (key, fhir) in [
        ("postal_code", "postalCode"),
        ("city", "city"),
        ("country", "country"),
    ] {
        if let Some(v) = get(key) {
            out.insert(fhir.into(), json!(v));
        }
    }
    if let Some(m) = get("municipality") {
        out.insert("district".into(), json!(m));
    }
    Value::Object(out)
}

fn role_code(role: &str, path: &str) -> (&'static str, &'static str) {
    match (path, role) {
        ("relations.family", "mother") => ("MTH", "mother"),
        ("relations.family", "father") => ("FTH", "father"),
        ("relations.family", "co-mother") => ("PRN", "parent"),
        ("relations.family", "child") => ("CHILD", "child"),
        ("relations.family", "spouse") => ("SPS", "spouse"),
        ("relations.family", "sibling") => ("SIB", "sibling"),
        ("relations.family", _) => ("FAMMEMB", "family member"),
        _ => ("GUARD", "guardian"),
    }
}

fn id_system_for(id: &str) -> Option<String> {
    crate::ids::parse(id)
        .ok()
        .map(|p| system(p.scheme.as_str()))
}

/// The `Patient` resource. `ids` are (scheme, value, active); `key` is the
/// store's person key, used as the resource id.
pub fn patient(key: i64, ids: &[(String, String, bool)], view: &View) -> Value {
    let mut p = Map::new();
    p.insert("resourceType".into(), json!("Patient"));
    p.insert("id".into(), json!(key.to_string()));
    // Security labels.
    let mut security = Vec::new();
    let mut strictest = Protection::Ugradert;
    let mut markers: Vec<String> = Vec::new();
    for field in view.fields.values() {
        for label in &field.labels {
            match Protection::from_label(label) {
                Some(p) => strictest = strictest.max(p),
                None if !markers.contains(label) => markers.push(label.clone()),
                None => {}
            }
        }
    }
    if let Some(level) = text(view, "protection.level").and_then(|l| Protection::from_label(&l)) {
        strictest = strictest.max(level);
    }
    let confidentiality = match strictest {
        Protection::StrengtFortrolig | Protection::StrengtFortroligUtland => "V",
        Protection::Fortrolig => "R",
        _ => "N",
    };
    security.push(json!({
        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
        "code": confidentiality,
    }));
    if strictest != Protection::Ugradert {
        security.push(json!({"system": PROTECTION_SYSTEM, "code": strictest.as_str()}));
    }
    markers.sort();
    for marker in markers {
        security.push(json!({"system": PROTECTION_SYSTEM, "code": marker}));
    }
    if !view.withheld.is_empty() {
        security.push(json!({
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "REDACTED",
        }));
    }
    p.insert("meta".into(), json!({"security": security}));
    p.insert(
        "identifier".into(),
        json!(
            ids.iter()
                .map(|(scheme, value, active)| json!({
                    "use": if *active { "official" } else { "old" },
                    "system": system(scheme),
                    "value": value,
                }))
                .collect::<Vec<_>>()
        ),
    );
    let family = text(view, "name.family");
    let given: Vec<String> = ["name.given", "name.middle"]
        .iter()
        .filter_map(|path| text(view, path))
        .flat_map(|g| g.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect();
    if family.is_some() || !given.is_empty() {
        let mut name = Map::new();
        name.insert("use".into(), json!("official"));
        if let Some(f) = family {
            name.insert("family".into(), json!(f));
        }
        if !given.is_empty() {
            name.insert("given".into(), json!(given));
        }
        p.insert("name".into(), json!([name]));
    }
    let mut telecom = Vec::new();
    if let Some(email) = text(view, "contact.email") {
        telecom.push(json!({"system": "email", "value": email}));
    }
    if let Some(mobile) = text(view, "contact.mobile") {
        telecom.push(json!({"system": "phone", "use": "mobile", "value": mobile}));
    }
    if !telecom.is_empty() {
        p.insert("telecom".into(), json!(telecom));
    }
    if let Some(g) = text(view, "gender") {
        let g = match g.as_str() {
            "female" | "male" => g,
            _ => "unknown".into(),
        };
        p.insert("gender".into(), json!(g));
    }
    if let Some(b) = text(view, "birth.date") {
        p.insert("birthDate".into(), json!(b));
    }
    if let Some(d) = text(view, "death.date") {
        p.insert("deceasedDateTime".into(), json!(d));
    } else if text(view, "status").as_deref() == Some("deceased") {
        p.insert("deceasedBoolean".into(), json!(true));
    }
    let mut addresses = Vec::new();
    for (path, usage, kind) in [
        ("address.residential", "home", "physical"),
        ("address.temporary", "temp", "physical"),
        ("address.postal", "home", "postal"),
    ] {
        if let Some(f) = view.fields.get(path) {
            addresses.push(address(&f.value, usage, kind));
        }
    }
    if !addresses.is_empty() {
        p.insert("address".into(), json!(addresses));
    }
    if let Some(status) = text(view, "civil-status") {
        let code = match status.as_str() {
            "married" => "M",
            "unmarried" => "S",
            "widowed" | "surviving-partner" => "W",
            "divorced" | "divorced-partner" => "D",
            "separated" | "separated-partner" => "L",
            "registered-partner" => "T",
            _ => "UNK",
        };
        let system = if code == "UNK" {
            "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
        } else {
            "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
        };
        p.insert(
            "maritalStatus".into(),
            json!({"coding": [{"system": system, "code": code}], "text": status}),
        );
    }
    if let Some(language) = text(view, "language.preferred") {
        p.insert(
            "communication".into(),
            json!([{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": language}]},
                    "preferred": true}]),
        );
    }
    let mut contacts = Vec::new();
    for path in [
        "relations.family",
        "relations.parental-responsibility",
        "relations.guardianship",
    ] {
        let Some(list) = view.fields.get(path).and_then(|f| f.value.as_array()) else {
            continue;
        };
        for relation in list {
            let role = relation.get("role").and_then(Value::as_str).unwrap_or("");
            let (code, display) = role_code(role, path);
            let what = match path {
                "relations.parental-responsibility" => format!("parental responsibility ({role})"),
                "relations.guardianship" => format!("guardianship ({role})"),
                _ => role.to_string(),
            };
            let mut contact = json!({
                "relationship": [{
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                "code": code, "display": display}],
                    "text": what,
                }],
            });
            if let Some(id) = relation.get("id").and_then(Value::as_str) {
                let mut identifier = json!({"value": id});
                if let Some(system) = id_system_for(id) {
                    identifier["system"] = json!(system);
                }
                contact["extension"] =
                    json!([{"url": RELATIVE_IDENTIFIER, "valueIdentifier": identifier}]);
            }
            contacts.push(contact);
        }
    }
    if !contacts.is_empty() {
        p.insert("contact".into(), json!(contacts));
    }
    Value::Object(p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::access::{LegalBasis, view};
    use crate::testing::record;

    #[test]
    fn a_patient_with_nordic_identifiers_relations_and_security() {
        let r = record(&[
            ("name.given", json!("KARI ANNE")),
            ("name.family", json!("NORDMANN")),
            ("gender", json!("female")),
            ("birth.date", json!("1985-03-03")),
            ("protection.level", json!("FORTROLIG")),
            (
                "address.residential",
                json!({"kind": "street", "street": "Testveien", "house_number": "12",
                "postal_code": "0561", "city": "OSLO", "municipality": "0301", "country": "NOR"}),
            ),
            (
                "relations.family",
                json!([{"role": "mother", "id": "03851598730"}]),
            ),
            (
                "relations.parental-responsibility",
                json!([{"role": "joint", "id": "03851598730"}]),
            ),
            ("civil-status", json!("married")),
        ]);
        let ids = vec![
            ("no-fnr".to_string(), "03851598730".to_string(), true),
            ("no-dnr".to_string(), "43851598734".to_string(), false),
        ];
        let full = patient(7, &ids, &view(&r, &LegalBasis::full("health")));
        assert_eq!(
            full["identifier"][0]["system"],
            "urn:oid:2.16.578.1.12.4.1.4.1"
        );
        assert_eq!(full["identifier"][1]["use"], "old");
        assert_eq!(full["name"][0]["given"], json!(["KARI", "ANNE"]));
        assert_eq!(full["address"][0]["line"], json!(["Testveien 12"]));
        assert_eq!(full["meta"]["security"][0]["code"], "R");
        assert_eq!(full["meta"]["security"][1]["code"], "FORTROLIG");
        assert_eq!(
            full["contact"][0]["relationship"][0]["coding"][0]["code"],
            "MTH"
        );
        assert_eq!(
            full["contact"][1]["relationship"][0]["coding"][0]["code"],
            "GUARD"
        );
        assert_eq!(full["maritalStatus"]["coding"][0]["code"], "M");
        let school = patient(7, &ids, &view(&r, &LegalBasis::profile("school").unwrap()));
        assert!(school.get("address").is_none());
        assert!(
            school["meta"]["security"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["code"] == "REDACTED")
        );
        assert_eq!(scheme_of("urn:oid:1.2.246.21"), Some("fi-hetu"));
    }
}
