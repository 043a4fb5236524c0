//! KRR answers → catalogue fields.
//!
//! A person registered as `AKTIV` gives reservation, notification status,
//! e-mail, mobile, digital mailbox and language: those the token's scopes
//! let KRR send. `SLETTET` (the person left KRR) gives no contact fields
//! and covers them all, so the host withdraws what KRR said before.
//! `IKKE_REGISTRERT` (never in KRR) is not found: no person is created for
//! it. Unknown codes are kept.
//!
//! **Scopes decide coverage** (Digdir's REST documentation, felleslosninger/docs
//! `_docs/Kontaktregisteret/oppslagstjenesten_rest.md`): the reservation
//! always comes; e-mail, mobile, varslingsstatus and language only under
//! `krr:global/kontaktinformasjon.read`; the digital mailbox and its
//! certificate only under `krr:global/digitalpost.read`. A field missing
//! under a narrower scope is not covered, never removed. The connector
//! reads the scopes from config `scopes` (as granted to the operator's
//! Maskinporten client); without it, from the answer: any registered person
//! with a `varslingsstatus` shows the contact scope, any with `digital_post`
//! or `sertifikat` the mailbox scope.

use folkhub_connector_sdk::v2::{
    Answer, AnswerChange, AnswerPage, ChangeKind, Field, Period, PersonId, PersonRecord,
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
    "contact.digital-mailbox-provider",
    "language.preferred",
];

/// Fields only `krr:global/kontaktinformasjon.read` brings.
const CONTACT_SCOPE: &[&str] = &[
    "contact.email",
    "contact.mobile",
    "contact.notification-status",
    "language.preferred",
];
/// Fields only `krr:global/digitalpost.read` brings.
const MAILBOX_SCOPE: &[&str] = &[
    "contact.digital-mailbox",
    "contact.digital-mailbox-provider",
];

/// Which scopes an answer was given under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes {
    pub contact: bool,
    pub mailbox: bool,
}

impl Scopes {
    /// From config `scopes` (space or comma separated scope names).
    pub fn from_config(text: &str) -> Scopes {
        let has = |s: &str| text.split([' ', ',']).any(|t| t.trim() == s);
        Scopes {
            contact: has("krr:global/kontaktinformasjon.read"),
            mailbox: has("krr:global/digitalpost.read"),
        }
    }

    /// From what a `personer` list holds, when the scopes are not configured.
    pub fn inferred(list: &[Value]) -> Scopes {
        let registered = || list.iter().filter(|p| text(p, "status") == Some("AKTIV"));
        Scopes {
            contact: registered().any(|p| p.get("varslingsstatus").is_some()),
            mailbox: registered()
                .any(|p| p.get("digital_post").is_some() || p.get("sertifikat").is_some()),
        }
    }

    /// What an answer for a person of this status covers.
    pub fn covers(self, status: &str) -> Vec<&'static str> {
        if status != "AKTIV" {
            // Left KRR: nothing of it stands, whatever the scopes.
            return FIELDS.to_vec();
        }
        FIELDS
            .iter()
            .copied()
            .filter(|f| {
                (self.contact || !CONTACT_SCOPE.contains(f))
                    && (self.mailbox || !MAILBOX_SCOPE.contains(f))
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub id: String,
    pub status: String,
    /// (path, value, effective)
    pub fields: Vec<(&'static str, Value, Option<String>)>,
    /// The fields this answer speaks for.
    pub covers: Vec<&'static str>,
}

impl Person {
    pub fn field(&self, path: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(p, _, _)| *p == path)
            .map(|(_, v, _)| v)
    }

    /// Is the person in KRR at all (`IKKE_REGISTRERT` is not)?
    pub fn registered(&self) -> bool {
        self.status != "IKKE_REGISTRERT"
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

/// KRR's timestamps as RFC 3339: an offset written `+02` (as some of
/// Digdir's examples do) gets its minutes; anything else unreadable is
/// left out, so one odd timestamp cannot make the whole record unreadable.
fn timestamp(t: Option<&str>) -> Option<String> {
    let t = t?;
    let fixed = match t.len().checked_sub(3).map(|i| t.split_at(i)) {
        Some((head, tail))
            if (tail.starts_with('+') || tail.starts_with('-'))
                && tail[1..].chars().all(|c| c.is_ascii_digit())
                && head.contains('T') =>
        {
            format!("{head}{tail}:00")
        }
        _ => t.to_string(),
    };
    is_rfc3339(&fixed).then_some(fixed)
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`.
fn is_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if !(digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && b.get(10) == Some(&b'T')
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19))
    {
        return false;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.chars().take_while(char::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z"
        || rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.as_bytes()[3] == b':'
            && rest[1..3]
                .chars()
                .chain(rest[4..].chars())
                .all(|c| c.is_ascii_digit())
}

/// Maps one `personer[]` entry given under `scopes`.
pub fn map_person(v: &Value, scopes: Scopes) -> Result<Person, String> {
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
            timestamp(text(v, "reservasjonstidspunkt")),
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
                    timestamp(text(info, "epostadresse_oppdatert")),
                ));
            }
            if let Some(mobile) = text(info, "mobiltelefonnummer") {
                fields.push((
                    "contact.mobile",
                    json!(mobile),
                    timestamp(text(info, "mobiltelefonnummer_oppdatert")),
                ));
            }
        }
        if let Some(post) = v.get("digital_post") {
            if let Some(mailbox) = text(post, "postkasseadresse") {
                fields.push(("contact.digital-mailbox", json!(mailbox), None));
            }
            if let Some(provider) = text(post, "postkasseleverandoeradresse") {
                fields.push(("contact.digital-mailbox-provider", json!(provider), None));
            }
        }
        if let Some(language) = text(v, "spraak") {
            fields.push((
                "language.preferred",
                json!(language),
                timestamp(text(v, "spraak_oppdatert")),
            ));
        }
    }
    let covers = scopes.covers(&status);
    Ok(Person {
        id,
        status,
        fields,
        covers,
    })
}

/// Maps a `personer` answer; `scopes` as configured, or `None` to infer
/// them from the answer.
pub fn map_persons(body: &Value, scopes: Option<Scopes>) -> Result<Vec<Person>, String> {
    let list = body
        .get("personer")
        .and_then(Value::as_array)
        .ok_or("the answer has no `personer` array")?;
    let scopes = scopes.unwrap_or_else(|| Scopes::inferred(list));
    list.iter().map(|p| map_person(p, scopes)).collect()
}

/// Maps a change-log page read from change number `from`. KRR's change
/// log lists each changed person as the `personer` answer would (contract
/// 2.0 lets the change carry that record, so the host does not ask again);
/// an entry without a `status` is not a whole record and is looked up.
pub fn map_changes(body: &Value, from: u64, scopes: Option<Scopes>) -> Result<AnswerPage, String> {
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
    let scopes = scopes.unwrap_or_else(|| Scopes::inferred(list));
    let mut changes = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let id =
            text(p, "personidentifikator").ok_or("a changed person has no personidentifikator")?;
        let person = match p.get("status") {
            Some(_) => {
                let person = map_person(p, scopes)?;
                // Not registered: nothing to store (the host looks up
                // persons it follows and finds them not found).
                person.registered().then(|| person.into_answer())
            }
            None => None,
        };
        changes.push(AnswerChange {
            id: id.into(),
            kind: ChangeKind::Updated,
            event: "endring".into(),
            position: (from + i as u64).to_string(),
            recorded: None,
            person,
        });
    }
    let next = if list.is_empty() { from } else { to + 1 };
    Ok(AnswerPage {
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
        let persons = map_persons(&fixture("personer.json"), None).unwrap();
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
        assert!(!persons[3].registered(), "IKKE_REGISTRERT is not found");
        let record = persons[4].clone().into_record();
        assert_eq!(record.ids[0].scheme, "no-dnr");
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert!(map_persons(&json!({"feil": true}), None).is_err());
        assert!(map_persons(&json!({"personer": [{"status": "AKTIV"}]}), None).is_err());
        assert!(map_persons(&json!({"personer": [{"personidentifikator": "1", "status": "AKTIV", "reservasjon": "KANSKJE"}]}), None).is_err());
    }

    #[test]
    fn change_pages() {
        let page = map_changes(&json!({"fraEndringsNummer": 5, "tilEndringsNummer": 6, "senesteEndringsNummer": 9,
            "personer": [{"personidentifikator": "03851598730"}, {"personidentifikator": "20036914700"}]}), 5, None).unwrap();
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
                "kontaktinformasjon": {"epostadresse": "a@example.invalid"}}]}), 1, None).unwrap();
        let record = &page.changes[0]
            .person
            .as_ref()
            .expect("carried record")
            .person;
        assert!(
            record
                .fields
                .iter()
                .any(|f| f.path == "contact.email" && f.value == "\"a@example.invalid\"")
        );
        let page = map_changes(&json!({"fraEndringsNummer": 10, "tilEndringsNummer": 9, "senesteEndringsNummer": 9, "personer": []}), 10, None).unwrap();
        assert_eq!((page.next_cursor.as_str(), page.caught_up), ("10", true));
        assert!(map_changes(&json!([]), 1, None).is_err());
    }

    #[test]
    fn scopes_decide_what_an_answer_covers() {
        let contact_only = Scopes::from_config("krr:global/kontaktinformasjon.read");
        assert!(
            !contact_only
                .covers("AKTIV")
                .contains(&"contact.digital-mailbox")
        );
        assert!(contact_only.covers("AKTIV").contains(&"contact.email"));
        let mailbox_only = Scopes::from_config("krr:global/digitalpost.read");
        assert!(!mailbox_only.covers("AKTIV").contains(&"contact.email"));
        assert_eq!(mailbox_only.covers("SLETTET"), FIELDS.to_vec());
        let inferred = Scopes::inferred(&[json!({"status": "AKTIV", "digital_post": {}})]);
        assert_eq!(
            inferred,
            Scopes {
                contact: false,
                mailbox: true
            }
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            timestamp(Some("2023-06-29T10:14:52+02")).as_deref(),
            Some("2023-06-29T10:14:52+02:00")
        );
        assert_eq!(
            timestamp(Some("2023-06-29T10:14:52.123Z")).as_deref(),
            Some("2023-06-29T10:14:52.123Z")
        );
        assert_eq!(timestamp(Some("29.06.2023")), None);
    }
}
