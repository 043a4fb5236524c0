//! Contract 2: the `folkhub:connector@2.x` bindings (world
//! `full-connector`) and the helpers that differ from major 1.
//!
//! Feature `contract-2-2` builds against 2.2.0, which adds `search`
//! (persons by names, birth date and place; a connector without such a
//! service uses [`no_search_v2!`](crate::no_search_v2) and does not declare
//! the capability `search`). Feature `contract-2-1` builds against the
//! frozen 2.1.0 text, which adds `answers`: each answer says which fields it
//! covers, so the host never removes a field an answer does not speak for.
//! Feature `contract-2` alone builds against the frozen 2.0.0 text
//! (`wit/released/connector@2.0.0.wit`). Frozen texts keep a connector
//! released on an older minor building byte for byte as published.
//!
//! A connector on contract 2 implements
//! `v2::bindings::exports::folkhub::connector::source::Guest` (and
//! `enrich` / `watch`, or [`no_enrich_v2!`](crate::no_enrich_v2) /
//! [`no_watch_v2!`](crate::no_watch_v2); on 2.1 also `answers`, with
//! [`lookup_from_answers`] and [`changes_from_answers`] to derive `source`
//! from it), then calls [`export_connector_v2!`](export_connector_v2). It
//! reads its configuration and logs through this module (the 2.x `host`
//! import); [`http`](crate::http) and [`soap`](crate::soap) are shared with
//! major 1 and their errors convert with [`error`].

#[cfg(feature = "contract-2-2")]
#[allow(unsafe_code, clippy::all, missing_docs)]
pub mod bindings {
    // A local world that is 2.2's `full-connector` under another name: the
    // generated export glue is named after the world, and major 1's is
    // `full-connector` too.
    wit_bindgen::generate!({
        inline: "package folkhub:sdk; world connector-v2 { include folkhub:connector/full-connector@2.2.0; }",
        path: "../../wit/connector-v2",
        world: "folkhub:sdk/connector-v2",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_connector_v2",
        default_bindings_module: "folkhub_connector_sdk::v2::bindings",
    });
}

#[cfg(all(feature = "contract-2-1", not(feature = "contract-2-2")))]
#[allow(unsafe_code, clippy::all, missing_docs)]
pub mod bindings {
    // The frozen 2.1.0 text: connectors released on 2.1 rebuild unchanged.
    wit_bindgen::generate!({
        inline: "package folkhub:sdk; world connector-v2 { include folkhub:connector/full-connector@2.1.0; }",
        path: "../../wit/released/connector@2.1.0.wit",
        world: "folkhub:sdk/connector-v2",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_connector_v2",
        default_bindings_module: "folkhub_connector_sdk::v2::bindings",
    });
}

#[cfg(not(feature = "contract-2-1"))]
#[allow(unsafe_code, clippy::all, missing_docs)]
pub mod bindings {
    // The frozen 2.0.0 text: connectors released on 2.0 rebuild unchanged.
    wit_bindgen::generate!({
        inline: "package folkhub:sdk; world connector-v2 { include folkhub:connector/full-connector@2.0.0; }",
        path: "../../wit/released/connector@2.0.0.wit",
        world: "folkhub:sdk/connector-v2",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_connector_v2",
        default_bindings_module: "folkhub_connector_sdk::v2::bindings",
    });
}

pub use bindings::export_connector_v2;
pub use bindings::exports::folkhub::connector::enrich::{EnrichOutcome, EnrichResult, Location};
pub use bindings::exports::folkhub::connector::source::{
    Change, ChangeKind, ChangePage, ConnectorError, Description, Field, LookupOutcome,
    LookupResult, Period, PersonId, PersonRecord, Retirement,
};

#[cfg(feature = "contract-2-1")]
pub use bindings::exports::folkhub::connector::answers::{
    Answer, AnswerChange, AnswerOutcome, AnswerPage, AnswerResult,
};

#[cfg(feature = "contract-2-2")]
pub use bindings::exports::folkhub::connector::search::{Query, SearchOutcome};

use bindings::folkhub::connector::host;

/// `source.lookup-batch` from `answers.lookup-answers`: the same records
/// without what they cover (the host calls `answers` when it can).
#[cfg(feature = "contract-2-1")]
pub fn lookup_from_answers(
    answers: Result<Vec<AnswerResult>, ConnectorError>,
) -> Result<Vec<LookupResult>, ConnectorError> {
    Ok(answers?
        .into_iter()
        .map(|r| LookupResult {
            requested: r.requested,
            outcome: match r.outcome {
                AnswerOutcome::Found(a) => LookupOutcome::Found(a.person),
                AnswerOutcome::NotFound => LookupOutcome::NotFound,
                AnswerOutcome::Failed(e) => LookupOutcome::Failed(e),
            },
        })
        .collect())
}

/// `source.changes` from `answers.change-answers`.
#[cfg(feature = "contract-2-1")]
pub fn changes_from_answers(
    page: Result<AnswerPage, ConnectorError>,
) -> Result<ChangePage, ConnectorError> {
    let page = page?;
    Ok(ChangePage {
        changes: page
            .changes
            .into_iter()
            .map(|c| Change {
                id: c.id,
                kind: c.kind,
                event: c.event,
                position: c.position,
                recorded: c.recorded,
                person: c.person.map(|a| a.person),
            })
            .collect(),
        next_cursor: page.next_cursor,
        caught_up: page.caught_up,
    })
}

/// Converts an error of the shared helpers ([`http`](crate::http),
/// [`soap`](crate::soap)) into contract 2's. A 410 becomes
/// `upstream-retired` naming `upstream_version`, the version this build speaks.
pub fn error(e: crate::ConnectorError, upstream_version: &str) -> ConnectorError {
    use crate::ConnectorError as V1;
    match e {
        V1::Unauthorized(m) => ConnectorError::Unauthorized(m),
        V1::RateLimited(ms) => ConnectorError::RateLimited(ms),
        V1::UpstreamUnavailable(m) => ConnectorError::UpstreamUnavailable(m),
        V1::UpstreamVersionGone(m) => ConnectorError::UpstreamRetired(Retirement {
            upstream_version: upstream_version.to_string(),
            sunset: None,
            message: m,
        }),
        V1::BadInput(m) => ConnectorError::BadInput(m),
        V1::MalformedResponse(m) => ConnectorError::MalformedResponse(m),
        V1::Denied(m) => ConnectorError::Denied(m),
        V1::Other(m) => ConnectorError::Other(m),
    }
}

/// A field valid from `start` (when known) with no end.
pub fn field(
    path: &str,
    value: &serde_json::Value,
    labels: &[String],
    start: Option<String>,
) -> Field {
    Field {
        path: path.to_string(),
        value: value.to_string(),
        labels: labels.to_vec(),
        valid: Period { start, end: None },
    }
}

impl crate::MappedPerson {
    /// The answer contract 2.1 carries: the record and what it covers
    /// (every field `all` lists when the mapping did not narrow it).
    #[cfg(feature = "contract-2-1")]
    pub fn into_answer(self, upstream_version: &str, all: &[&str]) -> Answer {
        let covers = match &self.covers {
            Some(list) => list.iter().map(|p| p.to_string()).collect(),
            None => all.iter().map(|p| p.to_string()).collect(),
        };
        Answer {
            person: self.into_record_v2(upstream_version),
            covers,
        }
    }

    /// The record contract 2 carries; a field's `effective` becomes the
    /// start of its period.
    pub fn into_record_v2(self, upstream_version: &str) -> PersonRecord {
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
                .map(|f| field(f.path, &f.value, &f.labels, f.effective))
                .collect(),
            upstream_version: upstream_version.to_string(),
        }
    }
}

/// An operator-set configuration value, or an `other` error naming the key.
pub fn config(key: &str) -> Result<String, ConnectorError> {
    host::config(key).ok_or_else(|| {
        ConnectorError::Other(format!(
            "the operator has not set `{key}` in [connectors.<id>.config]"
        ))
    })
}

/// An optional configuration value.
pub fn config_or(key: &str, default: &str) -> String {
    host::config(key).unwrap_or_else(|| default.to_string())
}

/// The operator's `base-url` (or `default`), without a trailing slash.
pub fn base_url(default: &str) -> String {
    config_or("base-url", default)
        .trim_end_matches('/')
        .to_string()
}

/// The host's structured log (the 2.0 `host` import).
pub mod log {
    use super::host;

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

/// Implements contract 2's `enrich` for a connector that does not enrich.
#[macro_export]
macro_rules! no_enrich_v2 {
    ($connector:ty) => {
        impl $crate::v2::bindings::exports::folkhub::connector::enrich::Guest for $connector {
            fn enrich_locations(
                _locations: ::std::vec::Vec<$crate::v2::Location>,
            ) -> ::std::result::Result<
                ::std::vec::Vec<$crate::v2::EnrichResult>,
                $crate::v2::ConnectorError,
            > {
                ::std::result::Result::Err($crate::v2::ConnectorError::Other(
                    "this connector does not enrich locations".into(),
                ))
            }
        }
    };
}

/// Implements contract 2's `watch` for a connector without a per-person feed.
#[macro_export]
macro_rules! no_watch_v2 {
    ($connector:ty) => {
        impl $crate::v2::bindings::exports::folkhub::connector::watch::Guest for $connector {
            fn changes_for(
                _cursor: ::std::option::Option<::std::string::String>,
                _ids: ::std::vec::Vec<::std::string::String>,
            ) -> ::std::result::Result<$crate::v2::ChangePage, $crate::v2::ConnectorError> {
                ::std::result::Result::Err($crate::v2::ConnectorError::Other(
                    "this connector has no per-person change feed".into(),
                ))
            }
        }
    };
}

/// Implements `search` (contract 2.2) for a connector whose register has no
/// search: it answers `other`, and the connector does not declare the
/// capability `search`, so the host never asks.
#[cfg(feature = "contract-2-2")]
#[macro_export]
macro_rules! no_search_v2 {
    ($connector:ty) => {
        impl $crate::v2::bindings::exports::folkhub::connector::search::Guest for $connector {
            fn search_persons(
                _query: $crate::v2::Query,
            ) -> ::std::result::Result<$crate::v2::SearchOutcome, $crate::v2::ConnectorError> {
                ::std::result::Result::Err($crate::v2::ConnectorError::Other(
                    "this connector does not search its register".into(),
                ))
            }
        }
    };
}

/// Looks up IDs one call each (SPAR, VTJ) and answers with what each answer
/// covers (`all`: the connector's fields, for answers that do not narrow
/// it). `ask` maps one ID to its outcome with the shared helpers' errors; a
/// whole-call error ends the batch, and so does an `unauthorized` outcome
/// (every later call would be refused the same way).
#[cfg(feature = "contract-2-1")]
pub fn one_by_one_answers(
    ids: Vec<String>,
    upstream_version: &str,
    all: &[&str],
    mut ask: impl FnMut(&str) -> Result<crate::MappedOutcome, crate::ConnectorError>,
) -> Result<Vec<AnswerResult>, ConnectorError> {
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let outcome = match ask(&id).map_err(|e| error(e, upstream_version))? {
            crate::MappedOutcome::Found(p) => {
                AnswerOutcome::Found(p.into_answer(upstream_version, all))
            }
            crate::MappedOutcome::NotFound => AnswerOutcome::NotFound,
            crate::MappedOutcome::Failed(e) => match error(e, upstream_version) {
                e @ ConnectorError::Unauthorized(_) => return Err(e),
                e => AnswerOutcome::Failed(e),
            },
        };
        results.push(AnswerResult {
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
