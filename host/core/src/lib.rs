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
