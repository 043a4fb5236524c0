//! No protected value reaches a reader without the legal basis for it,
//! through any output the host produces for readers: the person document
//! (with provenance), the history and the FHIR Patient. Checked for every
//! stored person and every built-in legal-basis profile.

use std::collections::{BTreeMap, BTreeSet};

use folkhub_core::access::{LegalBasis, Withholding};
use folkhub_store::prelude::*;
use serde_json::Value;

/// String leaves of a JSON value (the values a leak would show).
fn leaves(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::String(s) => {
            out.insert(s.clone());
        }
        Value::Number(n) => {
            out.insert(n.to_string());
        }
        Value::Array(a) => a.iter().for_each(|v| leaves(v, out)),
        // An address's `kind` (street, postal, foreign, ...) names its form,
        // not the person, and `postal` is also part of a field's name that
        // answers list as withheld; every other part is checked.
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| k.as_str() != "kind")
            .for_each(|(_, v)| leaves(v, out)),
        _ => {}
    }
}

fn labels(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Does `text` show `leaf`? Numbers and codes must appear as a whole JSON
/// string; words also inside a longer string (FHIR joins street and number).
fn shows(text: &str, leaf: &str) -> bool {
    if leaf.chars().any(|c| c.is_alphabetic()) && leaf.chars().count() >= 4 {
        text.contains(leaf)
    } else {
        text.contains(&format!("\"{leaf}\""))
    }
}

/// What each profile must not see of each person: the protected values
/// (as JSON leaves) not also visible elsewhere in the record, by person key
/// and profile (in `LegalBasis::PROFILES` order), and an ID of each person
/// (`no:`, `se:` or `fi:` and the value).
#[derive(Default)]
pub struct Secrets {
    pub by_person: BTreeMap<i64, Vec<Vec<String>>>,
    pub id_of: BTreeMap<i64, String>,
}

impl Secrets {
    fn check(&self, key: i64, profile: usize, what: &str, output: &Value) {
        let text = output.to_string();
        let Some(secrets) = self.by_person.get(&key) else {
            panic!("{what}: person {key} is not a stored person");
        };
        for leaf in &secrets[profile] {
            assert!(
                !shows(&text, leaf),
                "person {key} basis {}: {what} shows the protected value {leaf:?}",
                LegalBasis::PROFILES[profile]
            );
        }
    }
}

/// Walks every stored person and checks every profile. Returns how many
/// (person, profile) pairs had protected values withheld, by label, and
/// what each profile must not see.
pub async fn assert_nothing_leaks(store: &dyn PersonStore) -> (BTreeMap<String, u64>, Secrets) {
    let mut secrets = Secrets::default();
    let profiles: Vec<LegalBasis> = LegalBasis::PROFILES
        .iter()
        .map(|p| LegalBasis::profile(p).expect("profile"))
        .collect();
    let mut withheld_by_label: BTreeMap<String, u64> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.persons_after(after, 500).await.expect("persons");
        let Some(last) = page.last() else { break };
        after = last.key;
        for person in &page {
            let history = store.history(person.key).await.expect("history");
            let active = person
                .ids
                .iter()
                .find(|i| i.active)
                .unwrap_or(&person.ids[0]);
            // Prefixed by country: a HETU can also read as a personnummer.
            secrets.id_of.insert(
                person.key,
                format!("{}:{}", &active.scheme[..2], active.value),
            );
            for basis in &profiles {
                // What this reader must not see: values of protected fields
                // now, and of protected sides of history entries.
                let mut secret = BTreeSet::new();
                let mut visible = BTreeSet::new();
                for id in &person.ids {
                    visible.insert(id.value.clone());
                }
                for (path, field) in &person.record.fields {
                    match basis.refuses(path, &field.labels) {
                        Some(Withholding::Protected) => {
                            leaves(&field.value, &mut secret);
                            for label in &field.labels {
                                *withheld_by_label.entry(label.clone()).or_default() += 1;
                            }
                        }
                        Some(Withholding::OutsideBasis) => {}
                        None => leaves(&field.value, &mut visible),
                    }
                }
                for change in &history {
                    for (path, entry) in change.diff.as_object().into_iter().flatten() {
                        for (side, key) in [("from", "from_labels"), ("to", "to_labels")] {
                            let l = labels(entry.get(key));
                            if let Some(value) = entry.get(side) {
                                if basis.refuses(path, &l) == Some(Withholding::Protected) {
                                    leaves(value, &mut secret);
                                } else if basis.refuses(path, &l).is_none() {
                                    leaves(value, &mut visible);
                                }
                            }
                        }
                    }
                }
                let secret: Vec<&String> = secret.difference(&visible).collect();
                secrets
                    .by_person
                    .entry(person.key)
                    .or_default()
                    .push(secret.iter().map(|s| s.to_string()).collect());
                let outputs = [
                    ("person", folkhub_tests::person_json(person, basis, true)),
                    ("fhir", folkhub_tests::patient_json(person, basis)),
                    (
                        "history",
                        folkhub_tests::history_json(
                            &history,
                            basis,
                            &person.record.person_labels(),
                        ),
                    ),
                ];
                for (what, output) in outputs {
                    let text = output.to_string();
                    for leaf in &secret {
                        assert!(
                            !shows(&text, leaf),
                            "person {} basis {}: {what} shows the protected value {leaf:?}",
                            person.key,
                            basis.name
                        );
                    }
                }
                // Structurally: a protected path is absent and listed as withheld.
                let doc = folkhub_tests::person_json(person, basis, true);
                for (path, field) in &person.record.fields {
                    if basis.refuses(path, &field.labels).is_some() {
                        assert!(doc["fields"].get(path).is_none(), "{path}");
                        assert!(doc["provenance"].get(path).is_none(), "{path}");
                        assert!(doc["withheld"].get(path).is_some(), "{path}");
                    }
                }
                let fhir = folkhub_tests::patient_json(person, basis);
                if basis
                    .refuses(
                        "address.residential",
                        &person
                            .record
                            .fields
                            .get("address.residential")
                            .map(|f| f.labels.clone())
                            .unwrap_or_default(),
                    )
                    .is_some()
                {
                    assert!(fhir.get("address").is_none(), "{fhir}");
                }
            }
        }
    }
    (withheld_by_label, secrets)
}

/// The same promise through the real router, for a client of every
/// profile and every endpoint that returns person data: batch (every
/// person), the change sequence (every change), and person by ID (with
/// provenance), history, FHIR and searches by ID prefix and by name + birth
/// date for every person the profile has protected values of. Searches never return a person
/// whose protection the client may not see past, and the access log holds
/// exactly one entry per person each client got back.
pub async fn assert_nothing_leaks_over_the_api(host: &folkhub_app::Host, secrets: &Secrets) {
    use crate::api::{Api, get, post_json};
    let keys: Vec<i64> = secrets.id_of.keys().copied().collect();
    let store = host.store();
    let mut survivor: BTreeMap<i64, i64> = keys.iter().map(|k| (*k, *k)).collect();
    for (profile, name) in LegalBasis::PROFILES.iter().enumerate() {
        let api = Api::new(host, name, false).await;
        let mut returned = 0usize;
        // Batch: every person, 1,000 at a time.
        for chunk in keys.chunks(1000) {
            let ids: Vec<&String> = chunk.iter().map(|k| &secrets.id_of[k]).collect();
            let (status, body) = post_json(
                api.clone(),
                "/v1/persons/batch",
                &serde_json::json!({"ids": ids, "provenance": true}),
            )
            .await;
            assert_eq!(status, axum::http::StatusCode::OK, "{body}");
            let persons = body["persons"].as_array().expect("persons");
            assert_eq!(persons.len(), chunk.len());
            for p in persons {
                secrets.check(p["key"].as_i64().expect("key"), profile, "batch", p);
            }
            returned += persons.len();
        }
        // Person, history and FHIR of every person with something this
        // profile must not see (for the others there is nothing a leak
        // could show), 32 persons at a time.
        let guarded: Vec<i64> = keys
            .iter()
            .copied()
            .filter(|k| !secrets.by_person[k][profile].is_empty())
            .collect();
        // (`full` sees everything; `directory` reads no group that carries
        // protected values.)
        if ["school", "benefits"].contains(name) {
            assert!(
                !guarded.is_empty(),
                "basis {name} has protected persons to test"
            );
        }
        for chunk in guarded.chunks(32) {
            let mut set = tokio::task::JoinSet::new();
            for key in chunk {
                let (api, id, key) = (api.clone(), secrets.id_of[key].clone(), *key);
                set.spawn(async move {
                    let person =
                        get(api.clone(), &format!("/v1/persons/{id}?provenance=true")).await;
                    let history = get(api.clone(), &format!("/v1/persons/{id}/history")).await;
                    let fhir = get(api, &format!("/fhir/Patient/{key}")).await;
                    (
                        key,
                        [("person", person), ("history", history), ("fhir", fhir)],
                    )
                });
            }
            while let Some(done) = set.join_next().await {
                let (key, answers) = done.expect("join");
                for (what, (status, body)) in answers {
                    assert_eq!(status, axum::http::StatusCode::OK, "{what} {key}: {body}");
                    secrets.check(key, profile, what, &body);
                    returned += 1;
                }
            }
        }
        // Persons this profile may not find by search: their markers (any
        // register's) are beyond its basis, whether or not a location of
        // theirs is stored (a strengt fortrolig person has none).
        let basis = LegalBasis::profile(name).expect("profile");
        let mut hidden = std::collections::BTreeSet::new();
        for key in &keys {
            let person = store.person_by_key(*key).await.expect("read");
            if let Some(person) = person
                && !basis.covers(&person.record.person_labels())
            {
                hidden.insert(*key);
            }
        }
        if ["school", "directory"].contains(name) {
            assert!(
                !hidden.is_empty(),
                "basis {name} has hidden persons to search for"
            );
        }
        // An attacker's walk: every birth-date part of every ID in the
        // population (DDMMYY for NO and FI, YYYYMM for SE) in pages of 100,
        // following every cursor; the prefixes of hidden persons again in
        // pages of 1, where a cursor could name the person passed over; and
        // by family name + birth date from every guarded and hidden person
        // and every 25th other.
        let mut walks: Vec<(String, u32)> = keys
            .iter()
            .map(|k| (secrets.id_of[k][3..9].to_string(), 100))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|(p, l)| (format!("id={p}"), l))
            .collect();
        walks.extend(
            hidden
                .iter()
                .map(|k| secrets.id_of[k][3..9].to_string())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|p| (format!("id={p}"), 1)),
        );
        let mut by_name: Vec<i64> = keys.iter().step_by(25).copied().collect();
        by_name.extend(&guarded);
        by_name.extend(&hidden);
        by_name.sort_unstable();
        by_name.dedup();
        for key in &by_name {
            let person = store
                .person_by_key(*key)
                .await
                .expect("read")
                .expect("person");
            if let (Some(family), Some(birth)) = (
                person
                    .record
                    .fields
                    .get("name.family")
                    .and_then(|f| f.value.as_str()),
                person
                    .record
                    .fields
                    .get("birth.date")
                    .and_then(|f| f.value.as_str()),
            ) {
                let start: String = family.chars().take(2).collect();
                let start: String = start
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                walks.push((format!("family={start}&birth_date={birth}"), 100));
            }
        }
        let hidden = std::sync::Arc::new(hidden);
        let mut searches = 0usize;
        for chunk in walks.chunks(32) {
            let mut set = tokio::task::JoinSet::new();
            for (criteria, limit) in chunk {
                let (api, hidden) = (api.clone(), hidden.clone());
                let (criteria, limit) = (criteria.clone(), *limit);
                set.spawn(async move {
                    let mut pages = Vec::new();
                    let mut after = String::new();
                    loop {
                        let uri = format!("/v1/persons?{criteria}&limit={limit}{after}");
                        let (status, body) = get(api.clone(), &uri).await;
                        if status == axum::http::StatusCode::FORBIDDEN {
                            // A basis without names and birth dates may not
                            // search by them.
                            assert_eq!(body["error"]["code"], "outside-basis", "{uri}");
                            break;
                        }
                        assert_eq!(status, axum::http::StatusCode::OK, "{uri}: {body}");
                        let last = body["persons"]
                            .as_array()
                            .and_then(|p| p.last())
                            .and_then(|p| p["key"].as_i64());
                        let next = body["next"].as_str().map(str::to_string);
                        if let Some(next) = &next {
                            // Opaque, and it names the last person shown:
                            // never one the search passed over.
                            use base64::Engine;
                            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                                .decode(next)
                                .expect("a cursor is base64url");
                            let named =
                                i64::from_be_bytes(bytes[..8].try_into().expect("eight bytes"));
                            assert!(
                                !hidden.contains(&named) && Some(named) == last,
                                "{uri} gives a cursor naming {named}, not the last shown {last:?}"
                            );
                        }
                        pages.push((uri, body));
                        match next {
                            Some(next) => after = format!("&after={next}"),
                            None => break,
                        }
                    }
                    pages
                });
            }
            while let Some(done) = set.join_next().await {
                for (uri, body) in done.expect("join") {
                    searches += 1;
                    for p in body["persons"].as_array().expect("persons") {
                        let key = p["key"].as_i64().expect("key");
                        assert!(
                            !hidden.contains(&key),
                            "basis {name}: {uri} finds a person whose protection it may not see past: {p}"
                        );
                        let withheld = p["withheld"].as_object().cloned().unwrap_or_default();
                        assert!(
                            withheld.values().all(|w| w != "protected"),
                            "basis {name}: a search returned a protected person: {p}"
                        );
                        secrets.check(key, profile, "search", p);
                        returned += 1;
                    }
                }
            }
        }
        // The change sequence, from the start.
        let mut since = 0;
        loop {
            let (status, body) = get(
                api.clone(),
                &format!("/v1/changes?since={since}&limit=10000"),
            )
            .await;
            assert_eq!(status, axum::http::StatusCode::OK, "{body}");
            let mut persons = std::collections::BTreeSet::new();
            for change in body["changes"].as_array().expect("changes") {
                let key = change["person"].as_i64().expect("person");
                // A change may name a person merged into another since.
                let key = match survivor.get(&key) {
                    Some(k) => *k,
                    None => {
                        let k = store
                            .person_by_key(key)
                            .await
                            .expect("read")
                            .map_or(key, |p| p.key);
                        survivor.insert(key, k);
                        k
                    }
                };
                if secrets.by_person.contains_key(&key) {
                    secrets.check(key, profile, "changes", change);
                }
                persons.insert(change["person"].as_i64().expect("person"));
            }
            returned += persons.len();
            if body["caught_up"] == true {
                break;
            }
            since = body["next"].as_i64().expect("next");
        }
        let logged = store
            .access_log(&folkhub_store::AccessQuery {
                client: Some(api.client.clone()),
                limit: 10_000_000,
                ..Default::default()
            })
            .await
            .expect("access log")
            .len();
        assert_eq!(
            logged,
            returned + searches,
            "basis {name}: one access-log entry per person returned and one per search"
        );
    }
}
