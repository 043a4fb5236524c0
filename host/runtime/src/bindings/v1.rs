//! Bindings for `folkhub:connector@1.x`, generated for the newest minor this
//! host knows (1.1.0, world `full-connector`), and conversions into core
//! types.
//!
//! Exports are looked up per interface: `source` (1.0) is required, `enrich`
//! and `watch` (1.1) are optional, so a connector built on 1.0 runs here
//! unchanged and one built on 1.1 may export only what it does.

use chrono::{DateTime, Utc};
use folkhub_core::contract as core;
use folkhub_core::observation::{Observation, SourceId};
use wasmtime::component::{Instance, InstancePre};

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit/connector-v1",
        world: "full-connector",
        imports: { default: trappable },
        exports: { default: async },
    });
}

pub use generated::FullConnector as World;
pub use generated::exports::folkhub::connector::{enrich, source, watch};
pub use generated::folkhub::connector::host;

/// Where each exported interface lives in a component.
pub struct Exports {
    source: source::GuestIndices,
    enrich: Option<enrich::GuestIndices>,
    watch: Option<watch::GuestIndices>,
}

impl Exports {
    /// Finds the exports: `source` must be there; later-minor ones may not.
    pub fn new<T: 'static>(pre: &InstancePre<T>) -> wasmtime::Result<Exports> {
        Ok(Exports {
            source: source::GuestIndices::new(pre)?,
            enrich: enrich::GuestIndices::new(pre).ok(),
            watch: watch::GuestIndices::new(pre).ok(),
        })
    }

    pub fn has_enrich(&self) -> bool {
        self.enrich.is_some()
    }

    pub fn has_watch(&self) -> bool {
        self.watch.is_some()
    }

    pub fn source(
        &self,
        store: impl wasmtime::AsContextMut,
        instance: &Instance,
    ) -> wasmtime::Result<source::Guest> {
        self.source.load(store, instance)
    }

    pub fn enrich(
        &self,
        store: impl wasmtime::AsContextMut,
        instance: &Instance,
    ) -> wasmtime::Result<Option<enrich::Guest>> {
        self.enrich
            .as_ref()
            .map(|i| i.load(store, instance))
            .transpose()
    }

    pub fn watch(
        &self,
        store: impl wasmtime::AsContextMut,
        instance: &Instance,
    ) -> wasmtime::Result<Option<watch::Guest>> {
        self.watch
            .as_ref()
            .map(|i| i.load(store, instance))
            .transpose()
    }
}

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
    let fields = observations(record.fields)?;
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

/// Converts fields; a value that is not JSON is a malformed answer.
fn observations(list: Vec<source::Field>) -> Result<Vec<Observation>, core::ConnectorError> {
    let mut fields = Vec::with_capacity(list.len());
    for f in list {
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
    Ok(fields)
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

/// The WIT form of a location.
pub fn location(l: &core::Location) -> enrich::Location {
    enrich::Location {
        key: l.key.clone(),
        address: l.address.to_string(),
        context: l
            .context
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
    }
}

/// Converts enrichment results; a malformed field fails that location only.
pub fn enrich_results(list: Vec<enrich::EnrichResult>) -> Vec<core::EnrichResult> {
    list.into_iter()
        .map(|r| core::EnrichResult {
            key: r.key,
            outcome: match r.outcome {
                enrich::EnrichOutcome::Found(fields) => match observations(fields) {
                    Ok(fields) => core::EnrichOutcome::Found(fields),
                    Err(e) => core::EnrichOutcome::Failed(e),
                },
                enrich::EnrichOutcome::NotFound => core::EnrichOutcome::NotFound,
                enrich::EnrichOutcome::Failed(e) => core::EnrichOutcome::Failed(e.into()),
            },
        })
        .collect()
}
