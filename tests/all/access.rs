//! No protected value reaches a reader without the legal basis for it,
//! through any output the host produces for readers: the person document
//! (with provenance), the history and the FHIR Patient. Checked for every
//! stored person and every built-in legal-basis profile.

use std::collections::{BTreeMap, BTreeSet};

use folkhub_core::access::{LegalBasis, Withholding};
use folkhub_store::PersonStore;
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
        Value::Object(o) => o.values().for_each(|v| leaves(v, out)),
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

/// Walks every stored person and checks every profile. Returns how many
/// (person, profile) pairs had protected values withheld, by label.
pub async fn assert_nothing_leaks(store: &dyn PersonStore) -> BTreeMap<String, u64> {
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
                let outputs = [
                    ("person", folkhub_api::person_json(person, basis, true)),
                    ("fhir", folkhub_api::patient_json(person, basis)),
                    ("history", folkhub_api::history_json(&history, basis)),
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
                let doc = folkhub_api::person_json(person, basis, true);
                for (path, field) in &person.record.fields {
                    if basis.refuses(path, &field.labels).is_some() {
                        assert!(doc["fields"].get(path).is_none(), "{path}");
                        assert!(doc["provenance"].get(path).is_none(), "{path}");
                        assert!(doc["withheld"].get(path).is_some(), "{path}");
                    }
                }
                let fhir = folkhub_api::patient_json(person, basis);
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
    withheld_by_label
}
