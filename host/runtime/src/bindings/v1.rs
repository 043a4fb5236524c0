//! Bindings for `folkhub:connector@1.x`, generated for the newest minor this
//! host knows (1.1.0, world `full-connector`), and conversions into core
//! types.
//!
//! Exports are looked up per interface: `source` (1.0) is required, `enrich`
//! and `watch` (1.1) are optional, so a connector built on 1.0 runs here
//! unchanged and one built on 1.1 may export only what it does.

use folkhub_core::contract as core;
use folkhub_core::observation::{Observation, SourceId};
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use super::{Answer, parse_time};
use crate::state::HostState;

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

    pub async fn describe(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<core::Description> {
        let guest = self.source.load(&mut *store, instance)?;
        Ok(description(guest.call_describe(store).await?))
    }

    pub async fn lookup(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        ids: &[String],
    ) -> wasmtime::Result<Answer<Vec<core::LookupResult>>> {
        let guest = self.source.load(&mut *store, instance)?;
        Ok(guest
            .call_lookup_batch(store, ids)
            .await?
            .map(lookup_results)
            .map_err(Into::into))
    }

    pub async fn changes(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        cursor: Option<&str>,
    ) -> wasmtime::Result<Answer<core::ChangePage>> {
        let guest = self.source.load(&mut *store, instance)?;
        Ok(guest
            .call_changes(store, cursor)
            .await?
            .map(change_page)
            .map_err(Into::into))
    }

    pub async fn enrich(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        locations: &[core::Location],
    ) -> wasmtime::Result<Answer<Vec<core::EnrichResult>>> {
        let Some(indices) = &self.enrich else {
            return Err(wasmtime::Error::msg("the component does not export enrich"));
        };
        let guest = indices.load(&mut *store, instance)?;
        let locations: Vec<_> = locations.iter().map(location).collect();
        Ok(guest
            .call_enrich_locations(store, &locations)
            .await?
            .map(enrich_results)
            .map_err(Into::into))
    }

    pub async fn changes_for(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        cursor: Option<&str>,
        ids: &[String],
    ) -> wasmtime::Result<Answer<core::ChangePage>> {
        let Some(indices) = &self.watch else {
            return Err(wasmtime::Error::msg("the component does not export watch"));
        };
        let guest = indices.load(&mut *store, instance)?;
        Ok(guest
            .call_changes_for(store, cursor, ids)
            .await?
            .map(change_page)
            .map_err(Into::into))
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

/// Converts a record; a field whose value is not JSON makes the record
/// malformed (a connector bug the operator must hear about).
fn person(record: source::PersonRecord) -> Result<core::FoundPerson, core::ConnectorError> {
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
        covers: None,
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

fn lookup_results(list: Vec<source::LookupResult>) -> Vec<core::LookupResult> {
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

fn change_page(page: source::ChangePage) -> core::ChangePage {
    core::ChangePage {
        changes: page
            .changes
            .into_iter()
            .map(|c| core::Change {
                id: c.id,
                kind: core::ChangeKind::Unclassified,
                event: c.event,
                position: c.position,
                recorded: c.recorded,
                record: None,
            })
            .collect(),
        next_cursor: page.next_cursor,
        caught_up: page.caught_up,
    }
}

fn description(d: source::Description) -> core::Description {
    core::Description {
        source: d.source,
        upstream_versions: d.upstream_versions,
        fields: d.fields,
        capabilities: d.capabilities,
        max_batch: d.max_batch,
    }
}

/// The WIT form of a location.
fn location(l: &core::Location) -> enrich::Location {
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
fn enrich_results(list: Vec<enrich::EnrichResult>) -> Vec<core::EnrichResult> {
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
