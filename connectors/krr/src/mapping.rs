//! KRR answers → catalogue fields.
//!
//! A person registered as `AKTIV` gives reservation, notification status,
//! e-mail, mobile, digital mailbox and language (those the token's scopes
//! let KRR send). `SLETTET` and `IKKE_REGISTRERT` give no contact fields:
//! the host then retracts what KRR said before. Unknown codes are kept.

use folkhub_connector_sdk::v2::{
    Change, ChangeKind, ChangePage, Field, Period, PersonId, PersonRecord,
};
use serde_json::{Value, json};

/// Since 2.0.0 the connector speaks `/rest/v2` (2.1.0: on contract 2.0).
pub const UPSTREAM_VERSION: &str = "v2";
/// KRR takes 1 to 1,000 identifiers per request.
pub const MAX_BATCH: usize = 1000;

pub const FIELDS: &[&str] = &[
    "contact.email",
    "contact.mobile",
    "contact.reservation",
    "contact.notification-status",
    "contact.digital-mailbox",
    "language.preferred",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub id: String,
    pub status: String,
    /// (path, value, effective)
    pub fields: Vec<(&'static str, Value, Option<String>)>,
}

impl Person {
    pub fn field(&self, path: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(p, _, _)| *p == path)
            .map(|(_, v, _)| v)
    }

    pub fn into_record(self) -> PersonRecord {
        // KRR does not say whether an ID is a D-number; the digits do.
        let scheme = if self.id.starts_with(['4', '5', '6', '7']) {
            "no-dnr"
        } else {
            "no-fnr"
        };
        PersonRecord {
            ids: vec![PersonId {
                scheme: scheme.into(),
                value: self.id,
                active: true,
            }],
            fields: self
                .fields
                .into_iter()
                .map(|(path, value, effective)| Field {
                    path: path.into(),
                    value: value.to_string(),
                    labels: vec![],
                    valid: Period {
                        start: effective,
                        end: None,
                    },
                })
                .collect(),
            upstream_version: UPSTREAM_VERSION.into(),
        }
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Maps one `personer[]` entry.
pub fn map_person(v: &Value) -> Result<Person, String> {
    let id = text(v, "personidentifikator")
        .ok_or("a person has no personidentifikator")?
        .to_string();
    let status = text(v, "status").unwrap_or("IKKE_REGISTRERT").to_string();
    let mut fields = Vec::new();
    if status == "AKTIV" {
        let reservation = match text(v, "reservasjon") {
            Some("JA") => true,
            Some("NEI") | None => false,
            Some(other) => {
                return Err(format!("{id}: reservasjon {other:?} is neither JA nor NEI"));
            }
        };
        fields.push((
            "contact.reservation",
            json!(reservation),
            text(v, "reservasjonstidspunkt").map(String::from),
        ));
        if let Some(status) = text(v, "varslingsstatus") {
            let value = match status {
                "KAN_VARSLES" => "can-notify",
                "KAN_IKKE_VARSLES" => "cannot-notify",
                other => other,
            };
            fields.push(("contact.notification-status", json!(value), None));
        }
        if let Some(info) = v.get("kontaktinformasjon") {
            if let Some(email) = text(info, "epostadresse") {
                fields.push((
                    "contact.email",
                    json!(email),
                    text(info, "epostadresse_oppdatert").map(String::from),
                ));
            }
            if let Some(mobile) = text(info, "mobiltelefonnummer") {
                fields.push((
                    "contact.mobile",
                    json!(mobile),
                    text(info, "mobiltelefonnummer_oppdatert").map(String::from),
                ));
            }
        }
        if let Some(mailbox) = v
            .get("digital_post")
            .and_then(|d| text(d, "postkasseadresse"))
        {
            fields.push(("contact.digital-mailbox", json!(mailbox), None));
        }
        if let Some(language) = text(v, "spraak") {
            fields.push((
                "language.preferred",
                json!(language),
                text(v, "spraak_oppdatert").map(String::from),
            ));
        }
    }
    Ok(Person { id, status, fields })
}

/// Maps a `personer` answer.
pub fn map_persons(body: &Value) -> Result<Vec<Person>, String> {
    let list = body
        .get("personer")
        .and_then(Value::as_array)
        .ok_or("the answer has no `personer` array")?;
    list.iter().map(map_person).collect()
}

/// Maps a change-log page read from change number `from`. KRR's change
/// log lists each changed person as the `personer` answer would (contract
/// 2.0 lets the change carry that record, so the host does not ask again);
/// an entry without a `status` is not a whole record and is looked up.
pub fn map_changes(body: &Value, from: u64) -> Result<ChangePage, String> {
    let to = body
        .get("tilEndringsNummer")
        .and_then(Value::as_u64)
        .ok_or("the change page has no tilEndringsNummer")?;
    let latest = body
        .get("senesteEndringsNummer")
        .and_then(Value::as_u64)
        .ok_or("the change page has no senesteEndringsNummer")?;
    let list = body
        .get("personer")
        .and_then(Value::as_array)
        .ok_or("the change page has no `personer` array")?;
    let mut changes = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let id =
            text(p, "personidentifikator").ok_or("a changed person has no personidentifikator")?;
        let person = if p.get("status").is_some() {
            Some(map_person(p)?.into_record())
        } else {
            None
        };
        changes.push(Change {
            id: id.into(),
            kind: ChangeKind::Updated,
            event: "endring".into(),
            position: (from + i as u64).to_string(),
            recorded: None,
            person,
        });
    }
    let next = if list.is_empty() { from } else { to + 1 };
    Ok(ChangePage {
        changes,
        next_cursor: next.to_string(),
        caught_up: to >= latest,
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
    fn active_reserved_deleted_and_unregistered() {
        let persons = map_persons(&fixture("personer.json")).unwrap();
        let active = &persons[0];
        assert_eq!(
            active.field("contact.email"),
            Some(&json!("vakker.blomst@example.invalid"))
        );
        assert_eq!(active.field("contact.reservation"), Some(&json!(false)));
        assert_eq!(
            active.field("contact.notification-status"),
            Some(&json!("can-notify"))
        );
        assert_eq!(
            active.field("contact.digital-mailbox"),
            Some(&json!("vakker#1234"))
        );
        assert_eq!(active.field("language.preferred"), Some(&json!("nb")));
        let reserved = &persons[1];
        assert_eq!(reserved.field("contact.reservation"), Some(&json!(true)));
        assert!(
            reserved.field("contact.email").is_none(),
            "no kontaktinformasjon sent"
        );
        assert!(
            persons[2].fields.is_empty(),
            "SLETTET has no contact fields"
        );
        assert!(
            persons[3].fields.is_empty(),
            "IKKE_REGISTRERT has no contact fields"
        );
        let record = persons[4].clone().into_record();
        assert_eq!(record.ids[0].scheme, "no-dnr");
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert!(map_persons(&json!({"feil": true})).is_err());
        assert!(map_persons(&json!({"personer": [{"status": "AKTIV"}]})).is_err());
        assert!(map_persons(&json!({"personer": [{"personidentifikator": "1", "status": "AKTIV", "reservasjon": "KANSKJE"}]})).is_err());
    }

    #[test]
    fn change_pages() {
        let page = map_changes(&json!({"fraEndringsNummer": 5, "tilEndringsNummer": 6, "senesteEndringsNummer": 9,
            "personer": [{"personidentifikator": "03851598730"}, {"personidentifikator": "20036914700"}]}), 5).unwrap();
        assert_eq!(
            (
                page.next_cursor.as_str(),
                page.caught_up,
                page.changes.len()
            ),
            ("7", false, 2)
        );
        assert!(
            page.changes.iter().all(|c| c.person.is_none()),
            "entries without a status are looked up"
        );
        let page = map_changes(&json!({"fraEndringsNummer": 1, "tilEndringsNummer": 1, "senesteEndringsNummer": 1,
            "personer": [{"personidentifikator": "03851598730", "status": "AKTIV", "reservasjon": "NEI",
                "kontaktinformasjon": {"epostadresse": "a@example.invalid"}}]}), 1).unwrap();
        let record = page.changes[0].person.as_ref().expect("carried record");
        assert!(
            record
                .fields
                .iter()
                .any(|f| f.path == "contact.email" && f.value == "\"a@example.invalid\"")
        );
        let page = map_changes(&json!({"fraEndringsNummer": 10, "tilEndringsNummer": 9, "senesteEndringsNummer": 9, "personer": []}), 10).unwrap();
        assert_eq!((page.next_cursor.as_str(), page.caught_up), ("10", true));
        assert!(map_changes(&json!([]), 1).is_err());
    }
}
