//! Guest-side helpers for folkhub connectors written in Rust.
//!
//! - [`bindings`]: the `folkhub:connector@1.1.0` bindings (world
//!   `full-connector`). Implement
//!   `bindings::exports::folkhub::connector::source::Guest`, and `enrich` /
//!   `watch` when the connector has those capabilities (otherwise
//!   [`no_enrich!`] / [`no_watch!`]), then call [`export_connector!`].
//! - [`http`]: blocking HTTP over `wasi:http/outgoing-handler`, with
//!   register answers turned into `connector-error`s.
//! - [`log`]: the host's structured log.
//! - `v2` (feature `contract-2`): the contract 2.0 bindings and helpers, for
//!   connectors built on major 2 (one crate serves both majors during major
//!   1's deprecation window; a connector exports one of them).
//!
//! Connectors reach registers only through the host, which decides where a
//! request may go and adds credentials; a connector never sees a token.

#[allow(unsafe_code, clippy::all, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/connector-v1",
        world: "full-connector",
        pub_export_macro: true,
        export_macro_name: "export_connector",
        default_bindings_module: "folkhub_connector_sdk::bindings",
    });
}

pub use bindings::export_connector;
pub use bindings::exports::folkhub::connector::enrich::{EnrichOutcome, EnrichResult, Location};
pub use bindings::exports::folkhub::connector::source::{
    Change, ChangePage, ConnectorError, Description, Field, LookupOutcome, LookupResult, PersonId,
    PersonRecord,
};
pub use bindings::folkhub::connector::host::Level;

/// Implements `enrich` for a connector that does not enrich locations (it
/// does not declare the `enrich` capability, so the host never calls it).
#[macro_export]
macro_rules! no_enrich {
    ($connector:ty) => {
        impl $crate::bindings::exports::folkhub::connector::enrich::Guest for $connector {
            fn enrich_locations(
                _locations: ::std::vec::Vec<$crate::Location>,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::EnrichResult>, $crate::ConnectorError>
            {
                ::std::result::Result::Err($crate::ConnectorError::Other(
                    "this connector does not enrich locations".into(),
                ))
            }
        }
    };
}

/// Implements `watch` for a connector without a per-person change feed.
#[macro_export]
macro_rules! no_watch {
    ($connector:ty) => {
        impl $crate::bindings::exports::folkhub::connector::watch::Guest for $connector {
            fn changes_for(
                _cursor: ::std::option::Option<::std::string::String>,
                _ids: ::std::vec::Vec<::std::string::String>,
            ) -> ::std::result::Result<$crate::ChangePage, $crate::ConnectorError> {
                ::std::result::Result::Err($crate::ConnectorError::Other(
                    "this connector has no per-person change feed".into(),
                ))
            }
        }
    };
}

pub mod http;
pub mod soap;
#[cfg(feature = "contract-2")]
pub mod v2;

/// Nordic ID numbers (the same code the host uses).
pub use folkhub_ids as ids;

/// The host's structured log.
pub mod log {
    use super::bindings::folkhub::connector::host;

    pub fn debug(message: &str, fields: &[(&str, &str)]) {
        write(host::Level::Debug, message, fields)
    }
    pub fn info(message: &str, fields: &[(&str, &str)]) {
        write(host::Level::Info, message, fields)
    }
    pub fn warn(message: &str, fields: &[(&str, &str)]) {
        write(host::Level::Warn, message, fields)
    }

    fn write(level: host::Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        host::log(level, message, &fields);
    }
}

/// An operator-set configuration value, or a `bad-input` error naming the key.
pub fn config(key: &str) -> Result<String, ConnectorError> {
    bindings::folkhub::connector::host::config(key).ok_or_else(|| {
        ConnectorError::Other(format!(
            "the operator has not set `{key}` in [connectors.<id>.config]"
        ))
    })
}

/// The operator's `base-url` for this connector (or `default`), without a trailing slash.
pub fn base_url(default: &str) -> String {
    config_or("base-url", default)
        .trim_end_matches('/')
        .to_string()
}

/// An optional configuration value.
pub fn config_or(key: &str, default: &str) -> String {
    bindings::folkhub::connector::host::config(key).unwrap_or_else(|| default.to_string())
}

/// Builds a field from a path and a JSON value.
pub fn field(
    path: &str,
    value: serde_json::Value,
    labels: &[String],
    effective: Option<String>,
) -> Field {
    Field {
        path: path.to_string(),
        value: value.to_string(),
        labels: labels.to_vec(),
        effective,
    }
}

/// A person as mapping code builds it, before it crosses the WIT boundary
/// (so mapping code stays testable natively).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MappedPerson {
    /// (scheme, value, active)
    pub ids: Vec<(String, String, bool)>,
    pub fields: Vec<MappedField>,
    /// The catalogue paths this answer speaks for, when the mapping knows
    /// it covers less than everything the connector provides (a narrower
    /// scope, a withheld address); `None`: everything.
    pub covers: Option<Vec<&'static str>>,
}

/// One mapped field.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedField {
    pub path: &'static str,
    pub value: serde_json::Value,
    pub labels: Vec<String>,
    pub effective: Option<String>,
}

impl MappedPerson {
    /// Adds a field.
    pub fn push(&mut self, path: &'static str, value: serde_json::Value, labels: &[String]) {
        self.fields.push(MappedField {
            path,
            value,
            labels: labels.to_vec(),
            effective: None,
        });
    }

    /// Does the answer speak for `path` (see [`MappedPerson::covers`])?
    pub fn speaks_for(&self, path: &str) -> bool {
        self.covers.as_ref().is_none_or(|list| list.contains(&path))
    }

    /// The value of a field, if mapped.
    pub fn field(&self, path: &str) -> Option<&serde_json::Value> {
        self.fields
            .iter()
            .find(|f| f.path == path)
            .map(|f| &f.value)
    }

    /// The record the contract carries.
    pub fn into_record(self, upstream_version: &str) -> PersonRecord {
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
                    effective: f.effective,
                })
                .collect(),
            upstream_version: upstream_version.to_string(),
        }
    }
}

/// What one answer of a one-question-per-call register says (SPAR, VTJ).
#[derive(Debug, Clone)]
pub enum MappedOutcome {
    Found(MappedPerson),
    NotFound,
    Failed(ConnectorError),
}

/// Looks up IDs one call each, for registers that answer one question per
/// call. `ask` maps one ID to its outcome (and logs its own warnings); a
/// whole-call error from it ends the batch. An `unauthorized` outcome ends
/// it too: every later call would be refused the same way.
pub fn one_by_one(
    ids: Vec<String>,
    upstream_version: &str,
    mut ask: impl FnMut(&str) -> Result<MappedOutcome, ConnectorError>,
) -> Result<Vec<LookupResult>, ConnectorError> {
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let outcome = match ask(&id)? {
            MappedOutcome::Found(p) => LookupOutcome::Found(p.into_record(upstream_version)),
            MappedOutcome::NotFound => LookupOutcome::NotFound,
            MappedOutcome::Failed(e @ ConnectorError::Unauthorized(_)) => return Err(e),
            MappedOutcome::Failed(e) => LookupOutcome::Failed(e),
        };
        results.push(LookupResult {
            requested: id,
            outcome,
        });
    }
    Ok(results)
}

/// Logs a mapping's warnings at `warn`.
pub fn warn_all(warnings: Vec<String>) {
    for w in warnings {
        log::warn(&w, &[]);
    }
}
