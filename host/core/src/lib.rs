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
/// The host's ID readers: `folkhub-ids`, with input that is not ASCII
/// refused (naming the character) before it reaches them.
///
/// schemathesis found through the API that a multi-byte character made
/// the readers slice inside it and panic. The readers are also compiled
/// into published connector releases, which never change, so the guard
/// sits here on the host side; connectors get it with the SDK's next
/// release (a trap inside a connector is already contained by the
/// sandbox).
pub mod ids {
    pub use folkhub_ids::*;

    fn ascii_only(input: &str) -> Result<(), IdError> {
        match input
            .trim()
            .chars()
            .enumerate()
            .find(|(_, c)| !c.is_ascii())
        {
            Some((position, character)) => Err(IdError::Character {
                input: input.trim().to_string(),
                character,
                position: position + 1,
                expected: "IDs contain digits, and for SE/FI a separator",
            }),
            None => Ok(()),
        }
    }

    /// [`folkhub_ids::parse`], never panicking.
    pub fn parse(input: &str) -> Result<PersonId, IdError> {
        ascii_only(input)?;
        folkhub_ids::parse(input)
    }

    /// [`folkhub_ids::parse_norwegian`], never panicking.
    pub fn parse_norwegian(input: &str) -> Result<PersonId, IdError> {
        ascii_only(input)?;
        folkhub_ids::parse_norwegian(input)
    }

    /// [`folkhub_ids::parse_swedish`], never panicking.
    pub fn parse_swedish(input: &str) -> Result<PersonId, IdError> {
        ascii_only(input)?;
        folkhub_ids::parse_swedish(input)
    }

    /// [`folkhub_ids::parse_finnish`], never panicking.
    pub fn parse_finnish(input: &str) -> Result<PersonId, IdError> {
        ascii_only(input)?;
        folkhub_ids::parse_finnish(input)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Any character at any position of an ID-long input is an
        /// error, never a panic.
        #[test]
        fn no_input_panics() {
            let base = "010190123-4A56";
            for len in 1..=base.len() {
                for position in 0..len {
                    for odd in ['\u{80}', 'Å', '\u{10000}', '€', '\u{0}', ' '] {
                        for prefix in ["", "no:", "se:", "fi:"] {
                            let mut text: Vec<char> = base[..len].chars().collect();
                            text[position] = odd;
                            let input: String = prefix.chars().chain(text).collect();
                            for read in [parse, parse_norwegian, parse_swedish, parse_finnish] {
                                let _ = read(&input);
                            }
                        }
                    }
                }
            }
            assert!(matches!(
                parse("01019\u{10000}12345"),
                Err(IdError::Character { position: 6, .. })
            ));
        }
    }
}
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
