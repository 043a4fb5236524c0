//! Bindings for `folkhub:connector@1.x` (generated for the newest minor this
//! host knows, 1.0.0) and conversions into core types.

use chrono::{DateTime, Utc};
use folkhub_core::contract as core;
use folkhub_core::observation::{Observation, SourceId};

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit/connector-v1",
        world: "connector",
        imports: { default: trappable },
        exports: { default: async },
    });
}

pub use generated::Connector;
pub use generated::ConnectorPre;
pub use generated::exports::folkhub::connector::source;
pub use generated::folkhub::connector::host;

impl From<source::ConnectorError> for core::ConnectorError {
    fn from(e: source::ConnectorError) -> Self {
        use source::ConnectorError as E;
        match e {
            E::Unauthorized(m) => core::ConnectorError::Unauthorized(m),
            E::RateLimited(ms) => core::ConnectorError::RateLimited(ms),
            E::UpstreamUnavailable(m) => core::ConnectorError::UpstreamUnavailable(m),
            E::UpstreamVersionGone(m) => core::ConnectorError::UpstreamVersionGone(m),
            E::BadInput(m) => core::ConnectorError::BadInput(m),
            E::MalformedResponse(m) => core::ConnectorError::MalformedResponse(m),
            E::Denied(m) => core::ConnectorError::Denied(m),
            E::Other(m) => core::ConnectorError::Other(m),
        }
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
}

/// Converts a record; a field whose value is not JSON makes the record
/// malformed (a connector bug the operator must hear about).
pub fn person(record: source::PersonRecord) -> Result<core::FoundPerson, core::ConnectorError> {
    let mut fields = Vec::with_capacity(record.fields.len());
    for f in record.fields {
        let value = serde_json::from_str(&f.value).map_err(|e| {
            core::ConnectorError::MalformedResponse(format!(
                "field {} is not JSON ({e}): {:?}",
                f.path, f.value
            ))
        })?;
        fields.push(Observation {
            path: f.path,
            value,
            labels: f.labels,
            effective: f.effective.as_deref().and_then(parse_time),
        });
    }
    Ok(core::FoundPerson {
        ids: record
            .ids
            .into_iter()
            .map(|i| SourceId {
                scheme: i.scheme,
                value: i.value,
                active: i.active,
            })
            .collect(),
        fields,
        upstream_version: record.upstream_version,
    })
}

pub fn lookup_results(list: Vec<source::LookupResult>) -> Vec<core::LookupResult> {
    list.into_iter()
        .map(|r| core::LookupResult {
            requested: r.requested,
            outcome: match r.outcome {
                source::LookupOutcome::Found(p) => match person(p) {
                    Ok(p) => core::LookupOutcome::Found(p),
                    Err(e) => core::LookupOutcome::Failed(e),
                },
                source::LookupOutcome::NotFound => core::LookupOutcome::NotFound,
                source::LookupOutcome::Failed(e) => core::LookupOutcome::Failed(e.into()),
            },
        })
        .collect()
}

pub fn change_page(page: source::ChangePage) -> core::ChangePage {
    core::ChangePage {
        changes: page
            .changes
            .into_iter()
            .map(|c| core::Change {
                id: c.id,
                event: c.event,
                position: c.position,
                recorded: c.recorded,
            })
            .collect(),
        next_cursor: page.next_cursor,
        caught_up: page.caught_up,
    }
}

pub fn description(d: source::Description) -> core::Description {
    core::Description {
        source: d.source,
        upstream_versions: d.upstream_versions,
        fields: d.fields,
        capabilities: d.capabilities,
        max_batch: d.max_batch,
    }
}
