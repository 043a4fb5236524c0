//! The read model: what a reader sees of a person, and the access-log
//! entry every read writes before the answer leaves.
//!
//! The API's handlers and the CLI's `person get`/`person history` both
//! call [`read_person`], [`read_history`] and [`read_patient`], so the
//! JSON `folkhub person get --json --basis B` prints is the API's answer
//! to a client of basis `B`, and the OpenAPI document is generated from
//! the same [`views`] types the handlers return.

pub mod views;

use std::collections::{BTreeMap, BTreeSet};

use folkhub_core::access::LegalBasis;
use folkhub_store::{Access, AccessEntry, Persons, StoreError, StoredPerson};
use serde_json::Value;

pub use views::{
    BatchAnswer, BundleEntry, BundleSearch, Changes, History, HistoryEntry, PatientBundle,
    PersonView, RegisterSearch, SearchHit, SearchOutcomeKind, SearchPage, Selection, Withheld,
    history_entries, patient, person_view, search_hit,
};

/// Who reads, as the access log records it.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// The client's name (`cli:$USER` for an operator at the host).
    pub client: &'a str,
    /// The legal basis, which decides what is shown.
    pub basis: &'a LegalBasis,
    /// Why they read (the client's registered purpose).
    pub purpose: &'a str,
}

impl Reader<'_> {
    /// The access-log entry of one read.
    pub fn entry(
        &self,
        endpoint: &str,
        person: i64,
        fields: Vec<String>,
        criteria: Option<String>,
    ) -> AccessEntry {
        AccessEntry {
            at: chrono::Utc::now(),
            client: self.client.to_string(),
            basis: self.basis.name.clone(),
            purpose: self.purpose.to_string(),
            person,
            endpoint: endpoint.to_string(),
            fields,
            criteria,
        }
    }
}

/// Where reads are logged. The API's writer groups commits and charges
/// the client's quota; the CLI writes to the store ([`StoreLog`]).
#[async_trait::async_trait]
pub trait AccessSink: Send + Sync {
    /// Writes the entries of one answer; an error means no answer.
    async fn write(&self, entries: Vec<AccessEntry>) -> Result<(), ReadError>;
}

/// Logs straight to the store's access log.
pub struct StoreLog<'a>(pub &'a dyn Access);

#[async_trait::async_trait]
impl AccessSink for StoreLog<'_> {
    async fn write(&self, entries: Vec<AccessEntry>) -> Result<(), ReadError> {
        self.0
            .log_access(&entries)
            .await
            .map_err(|e| ReadError::Log(e.to_string()))
    }
}

/// Why a read gave no answer.
#[derive(Debug)]
pub enum ReadError {
    /// The store could not be read.
    Store(StoreError),
    /// The access log could not be written, so nothing is shown.
    Log(String),
    /// The sink refused for its own reason (the API: a quota), said as
    /// the caller should hear it.
    Refused(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Store(e) => write!(f, "{e}"),
            ReadError::Log(e) => write!(
                f,
                "the access log cannot be written ({e}); person data is not shown without it"
            ),
            ReadError::Refused(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> ReadError {
        ReadError::Store(e)
    }
}

/// What a single person's read returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct PersonRequest<'a> {
    /// Per-field provenance.
    pub provenance: bool,
    /// Only these fields or groups.
    pub selection: Option<&'a Selection>,
}

/// Reads a person by one of their IDs (normalised value) as `reader` may
/// see them, with the keys of the relatives the store holds, and logs the
/// read under `endpoint`. `None`: no stored person has the ID (nothing is
/// logged).
pub async fn read_person(
    persons: &dyn Persons,
    log: &dyn AccessSink,
    reader: &Reader<'_>,
    endpoint: &str,
    id: &str,
    request: PersonRequest<'_>,
) -> Result<Option<PersonView>, ReadError> {
    let Some(person) = persons.person(id).await? else {
        return Ok(None);
    };
    let (mut view, returned) =
        person_view(&person, reader.basis, request.provenance, request.selection);
    // Relations link persons: the store's key of each related person it
    // holds (any of their IDs resolves), for the relations the reader sees.
    let relative_ids: BTreeSet<String> = view
        .fields
        .iter()
        .filter(|(path, _)| path.starts_with("relations."))
        .flat_map(|(_, value)| value.as_array().cloned().unwrap_or_default())
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    if !relative_ids.is_empty() {
        let ids: Vec<String> = relative_ids.into_iter().collect();
        for (rid, found) in persons.persons(&ids).await? {
            if let Some(p) = found {
                view.related.insert(rid, p.key);
            }
        }
    }
    log.write(vec![reader.entry(endpoint, person.key, returned, None)])
        .await?;
    Ok(Some(view))
}

/// A person's history by one of their IDs, as `reader` may see it; logs
/// the fields whose values it shows.
pub async fn read_history(
    persons: &dyn Persons,
    log: &dyn AccessSink,
    reader: &Reader<'_>,
    endpoint: &str,
    id: &str,
) -> Result<Option<History>, ReadError> {
    let Some(person) = persons.person(id).await? else {
        return Ok(None);
    };
    let changes = persons.history(person.key).await?;
    let labels = person.record.person_labels();
    let (history, shown) = history_entries(&changes, reader.basis, &|_| labels.clone());
    log.write(vec![reader.entry(
        endpoint,
        person.key,
        shown.into_iter().collect(),
        None,
    )])
    .await?;
    Ok(Some(History {
        key: person.key,
        history,
    }))
}

/// The FHIR Patient of a stored person as `reader` may see it; logs it.
pub async fn read_patient(
    log: &dyn AccessSink,
    reader: &Reader<'_>,
    endpoint: &str,
    person: &StoredPerson,
) -> Result<Value, ReadError> {
    let (resource, returned) = patient(person, reader.basis);
    log.write(vec![reader.entry(endpoint, person.key, returned, None)])
        .await?;
    Ok(resource)
}

/// The changes of every record after `since` (at most `limit`), as
/// `reader` may see them; logs, per person, the fields whose values the
/// page shows.
pub async fn read_changes(
    persons: &dyn Persons,
    log: &dyn AccessSink,
    reader: &Reader<'_>,
    endpoint: &str,
    since: i64,
    limit: u32,
) -> Result<Changes, ReadError> {
    let list = persons.changes_since(since, limit).await?;
    let next = list.last().map_or(since, |c| c.seq);
    // Each person's protection today applies to the locations their
    // changes show, however long ago those changes were made.
    let mut now: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for change in &list {
        if let std::collections::btree_map::Entry::Vacant(slot) = now.entry(change.person) {
            let labels = persons
                .person_by_key(change.person)
                .await?
                .map(|p| p.record.person_labels())
                .unwrap_or_default();
            slot.insert(labels);
        }
    }
    let (mut entries, _) = history_entries(&list, reader.basis, &|person| {
        now.get(&person).cloned().unwrap_or_default()
    });
    let mut reads: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for (entry, change) in entries.iter_mut().zip(&list) {
        entry.person = Some(change.person);
        reads
            .entry(change.person)
            .or_default()
            .extend(entry.changes.keys().cloned());
    }
    log.write(
        reads
            .into_iter()
            .map(|(k, f)| reader.entry(endpoint, k, f.into_iter().collect(), None))
            .collect(),
    )
    .await?;
    Ok(Changes {
        changes: entries,
        next,
        caught_up: (list.len() as u32) < limit,
    })
}
