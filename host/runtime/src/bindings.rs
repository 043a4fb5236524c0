//! One bindings module per supported contract major, each converting its
//! generated types into `folkhub_core::contract` types, so the rest of the
//! host never sees generated types. [`Exports`] picks the module by the
//! major the component was built against.

pub mod v1;
pub mod v2;

use chrono::{DateTime, Utc};
use folkhub_core::contract as core;
use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};

use crate::state::HostState;

/// A connector's answer: its own error, or the value.
pub type Answer<T> = Result<T, core::ConnectorError>;

/// The exports of a component, by contract major.
pub enum Exports {
    V1(v1::Exports),
    V2(v2::Exports),
}

impl Exports {
    /// Finds the exports of a component built against `major`.
    pub fn new(major: u64, pre: &InstancePre<HostState>) -> wasmtime::Result<Exports> {
        match major {
            1 => Ok(Exports::V1(v1::Exports::new(pre)?)),
            2 => Ok(Exports::V2(v2::Exports::new(pre)?)),
            other => Err(wasmtime::Error::msg(format!(
                "no bindings for folkhub:connector major {other}"
            ))),
        }
    }

    pub fn has_enrich(&self) -> bool {
        match self {
            Exports::V1(e) => e.has_enrich(),
            Exports::V2(e) => e.has_enrich(),
        }
    }

    pub fn has_watch(&self) -> bool {
        match self {
            Exports::V1(e) => e.has_watch(),
            Exports::V2(e) => e.has_watch(),
        }
    }

    /// Does the component export `search` (contract 2.2)?
    pub fn has_search(&self) -> bool {
        match self {
            Exports::V1(_) => false,
            Exports::V2(e) => e.has_search(),
        }
    }

    pub async fn search(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        query: &core::SearchQuery,
    ) -> wasmtime::Result<Answer<core::SearchOutcome>> {
        match self {
            Exports::V1(_) => Err(wasmtime::Error::msg(
                "contract 1 has no search; the host checks `searches()` first",
            )),
            Exports::V2(e) => e.search(store, instance, query).await,
        }
    }

    pub async fn describe(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<core::Description> {
        match self {
            Exports::V1(e) => e.describe(store, instance).await,
            Exports::V2(e) => e.describe(store, instance).await,
        }
    }

    pub async fn lookup(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        ids: &[String],
    ) -> wasmtime::Result<Answer<Vec<core::LookupResult>>> {
        match self {
            Exports::V1(e) => e.lookup(store, instance, ids).await,
            Exports::V2(e) => e.lookup(store, instance, ids).await,
        }
    }

    pub async fn changes(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        cursor: Option<&str>,
    ) -> wasmtime::Result<Answer<core::ChangePage>> {
        match self {
            Exports::V1(e) => e.changes(store, instance, cursor).await,
            Exports::V2(e) => e.changes(store, instance, cursor).await,
        }
    }

    pub async fn enrich(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        locations: &[core::Location],
    ) -> wasmtime::Result<Answer<Vec<core::EnrichResult>>> {
        match self {
            Exports::V1(e) => e.enrich(store, instance, locations).await,
            Exports::V2(e) => e.enrich(store, instance, locations).await,
        }
    }

    pub async fn changes_for(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
        cursor: Option<&str>,
        ids: &[String],
    ) -> wasmtime::Result<Answer<core::ChangePage>> {
        match self {
            Exports::V1(e) => e.changes_for(store, instance, cursor, ids).await,
            Exports::V2(e) => e.changes_for(store, instance, cursor, ids).await,
        }
    }
}

/// An RFC 3339 date-time or a plain date (midnight UTC).
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
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
