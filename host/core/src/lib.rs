//! Pure types of folkhub: person identifiers with every Nordic check digit,
//! the field catalogue, observations, protection labels and the merge
//! (survivorship) rules that turn observations into one record per person.
//!
//! Nothing here does IO: no database, no wasmtime, no network. This is where
//! most unit tests live; the store, sync, runtime and API crates build on it.

pub mod access;
pub mod contract;
pub mod fhir;
pub mod fields;
pub use folkhub_ids as ids;
pub mod labels;
pub mod merge;
pub mod observation;

pub use ids::{IdError, IdScheme, PersonId};
pub use labels::Protection;
pub use merge::{MergeRules, MergedField, MergedRecord, Provenance};
pub use observation::{Observation, SourceRecord};

/// Helpers for this crate's unit tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod testing {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use crate::merge::{self, Candidate, MergeRules, MergedRecord};

    /// The merged record of Folkeregisteret saying these values.
    pub fn record(pairs: &[(&str, Value)]) -> MergedRecord {
        let mut c = BTreeMap::new();
        for (path, value) in pairs {
            c.insert(
                path.to_string(),
                vec![Candidate {
                    source: "folkeregister".into(),
                    release: "1".into(),
                    upstream_version: "v1".into(),
                    value: value.clone(),
                    labels: vec![],
                    effective: None,
                    retrieved: "2026-01-01T00:00:00Z".parse().unwrap(),
                }],
            );
        }
        merge::merge(&MergeRules::default(), &c)
    }
}
