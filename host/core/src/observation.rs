//! Observations: what one source said about one field of one person, when.
//! The append-only log of observations is the source of truth; merged
//! records are derived from it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One field value from one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub path: String,
    /// `Value::Null` records that the source no longer has a value (a retraction).
    pub value: Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<DateTime<Utc>>,
}

/// An identifier as a source reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceId {
    pub scheme: String,
    pub value: String,
    pub active: bool,
}

/// Everything one source said about one person in one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Connector id, e.g. `folkeregister`.
    pub source: String,
    /// Connector release version, e.g. `1.0.0`.
    pub release: String,
    pub upstream_version: String,
    pub ids: Vec<SourceId>,
    pub fields: Vec<Observation>,
    pub retrieved: DateTime<Utc>,
}
