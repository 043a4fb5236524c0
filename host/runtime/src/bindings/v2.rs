//! Bindings for `folkhub:connector@2.x` (world `full-connector`, 2.2.0) and
//! conversions into core types.
//!
//! What 2.0 changed, as the host sees it: a field carries its period of
//! validity and the host keeps only what is in force by its own clock; a
//! change says what happened and may carry the record, which the sync
//! stores without another lookup; a retired upstream names its version and
//! sunset date. 2.1 added `answers`: each answer says which fields it
//! covers, and the host removes only covered fields an answer lacks; when a
//! component exports it, lookups and feed pages go through it. 2.2 added
//! `search`: finding persons by names, birth date and place. `source` is
//! required, `enrich`, `watch`, `answers` and `search` optional (a 2.0
//! component has no `answers`, a 2.1 one no `search`).

use chrono::{DateTime, Utc};
use folkhub_core::contract as core;
use folkhub_core::observation::{Observation, SourceId};
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use super::{Answer, parse_time};
use crate::state::HostState;

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit/connector-v2",
        world: "full-connector",
        imports: { default: trappable },
        exports: { default: async },
    });
}

pub use generated::FullConnector as World;
pub use generated::exports::folkhub::connector::{answers, enrich, search, source, watch};
pub use generated::folkhub::connector::host;

/// Where each exported interface lives in a component.
pub struct Exports {
    source: source::GuestIndices,
    enrich: Option<enrich::GuestIndices>,
    watch: Option<watch::GuestIndices>,
    answers: Option<answers::GuestIndices>,
    search: Option<search::GuestIndices>,
}

impl Exports {
    pub fn new<T: 'static>(pre: &InstancePre<T>) -> wasmtime::Result<Exports> {
        Ok(Exports {
            source: source::GuestIndices::new(pre)?,
            enrich: enrich::GuestIndices::new(pre).ok(),
            watch: watch::GuestIndices::new(pre).ok(),
            answers: answers::GuestIndices::new(pre).ok(),
            search: search::GuestIndices::new(pre).ok(),
        })
    }

    pub fn has_enrich(&self) -> bool {
        self.enrich.is_some()
    }

    pub fn has_watch(&self) -> bool {
        self.watch.is_some()
    }

    pub fn has_search(&self) -> bool {
        self.search.is_some()
    }

    /// `search.search-persons` (2.2): hits keep only what is in force at
    /// `now`, as lookups do; a hit the host cannot read fails the search.
    pub async fn search(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        query: &core::SearchQuery,
    ) -> wasmtime::Result<Answer<core::SearchOutcome>> {
        let Some(indices) = &self.search else {
            return Err(wasmtime::Error::msg("the component does not export search"));
        };
        let guest = indices.load(&mut *store, instance)?;
        let query = search::Query {
            family: query.family.clone(),
            given: query.given.clone(),
            birth_date: query.birth_date.clone(),
            postal_code: query.postal_code.clone(),
            municipality: query.municipality.clone(),
            max_hits: query.max_hits,
        };
        let now = Utc::now();
        Ok(guest
            .call_search_persons(store, &query)
            .await?
            .map_err(Into::into)
            .and_then(|outcome| match outcome {
                search::SearchOutcome::Hits(list) => list
                    .into_iter()
                    .map(|a| answer(a, now))
                    .collect::<Result<Vec<_>, _>>()
                    .map(core::SearchOutcome::Hits),
                search::SearchOutcome::TooMany(n) => Ok(core::SearchOutcome::TooMany(n)),
            }))
    }

    pub async fn describe(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<core::Description> {
        let guest = self.source.load(&mut *store, instance)?;
        let d = guest.call_describe(store).await?;
        Ok(core::Description {
            source: d.source,
            upstream_versions: d.upstream_versions,
            fields: d.fields,
            capabilities: d.capabilities,
            max_batch: d.max_batch,
        })
    }

    pub async fn lookup(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        ids: &[String],
    ) -> wasmtime::Result<Answer<Vec<core::LookupResult>>> {
        let now = Utc::now();
        if let Some(indices) = &self.answers {
            let guest = indices.load(&mut *store, instance)?;
            return Ok(guest
                .call_lookup_answers(store, ids)
                .await?
                .map(|list| answer_results(list, now))
                .map_err(Into::into));
        }
        let guest = self.source.load(&mut *store, instance)?;
        Ok(guest
            .call_lookup_batch(store, ids)
            .await?
            .map(|list| lookup_results(list, now))
            .map_err(Into::into))
    }

    pub async fn changes(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        cursor: Option<&str>,
    ) -> wasmtime::Result<Answer<core::ChangePage>> {
        let now = Utc::now();
        if let Some(indices) = &self.answers {
            let guest = indices.load(&mut *store, instance)?;
            return Ok(guest
                .call_change_answers(store, cursor)
                .await?
                .map_err(Into::into)
                .and_then(|page| answer_page(page, now)));
        }
        let guest = self.source.load(&mut *store, instance)?;
        Ok(guest
            .call_changes(store, cursor)
            .await?
            .map_err(Into::into)
            .and_then(|page| change_page(page, now)))
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
        let locations: Vec<enrich::Location> = locations
            .iter()
            .map(|l| enrich::Location {
                key: l.key.clone(),
                address: l.address.to_string(),
                context: l
                    .context
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
            })
            .collect();
        let now = Utc::now();
        Ok(guest
            .call_enrich_locations(store, &locations)
            .await?
            .map(|list| {
                list.into_iter()
                    .map(|r| core::EnrichResult {
                        key: r.key,
                        outcome: match r.outcome {
                            enrich::EnrichOutcome::Found(fields) => {
                                match observations(fields, now) {
                                    Ok(fields) => core::EnrichOutcome::Found(fields),
                                    Err(e) => core::EnrichOutcome::Failed(e),
                                }
                            }
                            enrich::EnrichOutcome::NotFound => core::EnrichOutcome::NotFound,
                            enrich::EnrichOutcome::Failed(e) => {
                                core::EnrichOutcome::Failed(e.into())
                            }
                        },
                    })
                    .collect()
            })
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
        let now = Utc::now();
        Ok(guest
            .call_changes_for(store, cursor, ids)
            .await?
            .map_err(Into::into)
            .and_then(|page| change_page(page, now)))
    }
}

impl From<source::ConnectorError> for core::ConnectorError {
    fn from(e: source::ConnectorError) -> Self {
        use source::ConnectorError as E;
        match e {
            E::Unauthorized(m) => core::ConnectorError::Unauthorized(m),
            E::RateLimited(ms) => core::ConnectorError::RateLimited(ms),
            E::UpstreamUnavailable(m) => core::ConnectorError::UpstreamUnavailable(m),
            E::UpstreamRetired(r) => core::ConnectorError::UpstreamVersionGone(match r.sunset {
                Some(sunset) => format!(
                    "{} was retired on {sunset}: {}",
                    r.upstream_version, r.message
                ),
                None => format!("{} was retired: {}", r.upstream_version, r.message),
            }),
            E::BadInput(m) => core::ConnectorError::BadInput(m),
            E::MalformedResponse(m) => core::ConnectorError::MalformedResponse(m),
            E::Denied(m) => core::ConnectorError::Denied(m),
            E::Other(m) => core::ConnectorError::Other(m),
        }
    }
}

/// Is a value with this period in force at `now`? A period the host cannot
/// read makes the answer malformed.
fn in_force(
    path: &str,
    valid: &source::Period,
    now: DateTime<Utc>,
) -> Result<(bool, Option<DateTime<Utc>>), core::ConnectorError> {
    let read = |what: &str, text: &Option<String>| match text {
        None => Ok(None),
        Some(t) => parse_time(t).map(Some).ok_or_else(|| {
            core::ConnectorError::MalformedResponse(format!(
                "field {path}: valid.{what} {t:?} is not an RFC 3339 date or date-time"
            ))
        }),
    };
    let start = read("start", &valid.start)?;
    let end = read("end", &valid.end)?;
    let started = start.is_none_or(|s| s <= now);
    let ended = end.is_some_and(|e| e <= now);
    Ok((started && !ended, start))
}

/// Converts fields, keeping those in force at `now`; a value that is not
/// JSON, or a period that cannot be read, is a malformed answer.
fn observations(
    list: Vec<source::Field>,
    now: DateTime<Utc>,
) -> Result<Vec<Observation>, core::ConnectorError> {
    let mut fields = Vec::with_capacity(list.len());
    for f in list {
        let (current, start) = in_force(&f.path, &f.valid, now)?;
        let value = serde_json::from_str(&f.value).map_err(|e| {
            core::ConnectorError::MalformedResponse(format!(
                "field {} is not JSON ({e}): {:?}",
                f.path, f.value
            ))
        })?;
        if current {
            fields.push(Observation {
                path: f.path,
                value,
                labels: f.labels,
                effective: start,
            });
        }
    }
    Ok(fields)
}

fn person(
    record: source::PersonRecord,
    now: DateTime<Utc>,
) -> Result<core::FoundPerson, core::ConnectorError> {
    Ok(core::FoundPerson {
        fields: observations(record.fields, now)?,
        ids: record
            .ids
            .into_iter()
            .map(|i| SourceId {
                scheme: i.scheme,
                value: i.value,
                active: i.active,
            })
            .collect(),
        upstream_version: record.upstream_version,
        covers: None,
    })
}

/// A record with what it covers (2.1 `answers`).
fn answer(
    a: answers::Answer,
    now: DateTime<Utc>,
) -> Result<core::FoundPerson, core::ConnectorError> {
    let mut found = person(a.person, now)?;
    found.covers = Some(a.covers);
    Ok(found)
}

fn answer_results(list: Vec<answers::AnswerResult>, now: DateTime<Utc>) -> Vec<core::LookupResult> {
    list.into_iter()
        .map(|r| core::LookupResult {
            requested: r.requested,
            outcome: match r.outcome {
                answers::AnswerOutcome::Found(a) => match answer(a, now) {
                    Ok(p) => core::LookupOutcome::Found(p),
                    Err(e) => core::LookupOutcome::Failed(e),
                },
                answers::AnswerOutcome::NotFound => core::LookupOutcome::NotFound,
                answers::AnswerOutcome::Failed(e) => core::LookupOutcome::Failed(e.into()),
            },
        })
        .collect()
}

fn change_kind(kind: source::ChangeKind) -> core::ChangeKind {
    use source::ChangeKind as K;
    match kind {
        K::Created => core::ChangeKind::Created,
        K::Updated => core::ChangeKind::Updated,
        K::IdsChanged => core::ChangeKind::IdsChanged,
        K::Deceased => core::ChangeKind::Deceased,
        K::Removed => core::ChangeKind::Removed,
        K::Other => core::ChangeKind::Other,
    }
}

/// As [`change_page`], for a 2.1 page whose records say what they cover.
fn answer_page(
    page: answers::AnswerPage,
    now: DateTime<Utc>,
) -> Result<core::ChangePage, core::ConnectorError> {
    let mut changes = Vec::with_capacity(page.changes.len());
    for c in page.changes {
        changes.push(core::Change {
            id: c.id,
            kind: change_kind(c.kind),
            event: c.event,
            position: c.position,
            recorded: c.recorded,
            record: c.person.map(|a| answer(a, now)).transpose()?,
        });
    }
    Ok(core::ChangePage {
        changes,
        next_cursor: page.next_cursor,
        caught_up: page.caught_up,
    })
}

fn lookup_results(list: Vec<source::LookupResult>, now: DateTime<Utc>) -> Vec<core::LookupResult> {
    list.into_iter()
        .map(|r| core::LookupResult {
            requested: r.requested,
            outcome: match r.outcome {
                source::LookupOutcome::Found(p) => match person(p, now) {
                    Ok(p) => core::LookupOutcome::Found(p),
                    Err(e) => core::LookupOutcome::Failed(e),
                },
                source::LookupOutcome::NotFound => core::LookupOutcome::NotFound,
                source::LookupOutcome::Failed(e) => core::LookupOutcome::Failed(e.into()),
            },
        })
        .collect()
}

/// Converts a page; a malformed record in it makes the page malformed, so
/// the cursor does not move past a change the host could not store.
fn change_page(
    page: source::ChangePage,
    now: DateTime<Utc>,
) -> Result<core::ChangePage, core::ConnectorError> {
    let mut changes = Vec::with_capacity(page.changes.len());
    for c in page.changes {
        changes.push(core::Change {
            id: c.id,
            kind: change_kind(c.kind),
            event: c.event,
            position: c.position,
            recorded: c.recorded,
            record: c.person.map(|r| person(r, now)).transpose()?,
        });
    }
    Ok(core::ChangePage {
        changes,
        next_cursor: page.next_cursor,
        caught_up: page.caught_up,
    })
}

/// The 2.x `host` import is the 1.x one: the same log and config.
impl host::Host for HostState {
    fn log(
        &mut self,
        level: host::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        use super::v1::host::Level;
        let level = match level {
            host::Level::Trace => Level::Trace,
            host::Level::Debug => Level::Debug,
            host::Level::Info => Level::Info,
            host::Level::Warn => Level::Warn,
            host::Level::Error => Level::Error,
        };
        super::v1::host::Host::log(self, level, message, fields)
    }

    fn config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        super::v1::host::Host::config(self, key)
    }
}
