//! Sync jobs: bring what connectors report into the store.
//!
//! - [`changes`] reads a connector's change feed from its stored cursor, looks
//!   up the persons each page names, and stores them **with the next cursor
//!   in the same transaction**: a crash loses and repeats nothing.
//! - [`full`] runs the feed to its head (when the release has the
//!   `change-feed` capability), then refreshes every other person the store
//!   knows under the connector's ID schemes.
//!
//! Every run is written to the run log with its counts and errors.
//! Retries: transient connector errors (rate limits, 5xx, malformed bodies)
//! are retried with exponential backoff and jitter, honouring Retry-After;
//! authorisation, bad input and retired upstream versions are not.

use std::collections::BTreeSet;
use std::time::Duration;

pub mod shadow;

use chrono::Utc;
use folkhub_core::contract::{
    ConnectorError, EnrichOutcome, FoundPerson, Location, LookupOutcome, LookupResult,
};
use folkhub_core::observation::SourceId;
use folkhub_runtime::{CallError, Connector};
use folkhub_store::{ApplyReport, Batch, PersonStore, RunCounts, RunStatus};

/// Progress of a running job, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    /// Known total, when there is one.
    pub total: Option<u64>,
}

/// Options for a run.
pub struct Options<'a> {
    /// IDs per lookup call (capped by the connector's max batch).
    pub batch: usize,
    /// Attempts per call for transient errors.
    pub attempts: u32,
    /// First backoff; doubles each attempt.
    pub backoff: Duration,
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    /// Price of one register call, for the cost ledger (operator config,
    /// else the release's `cost_per_call`).
    pub cost_per_call: f64,
    /// Persons the register answered for within this long are not looked
    /// up again by refreshes and lookups (a feed event still refreshes
    /// them). `None`: no cache.
    pub cache_ttl: Option<chrono::Duration>,
    /// The clock the TTL is judged by (tests move it); `None`: now.
    pub now: Option<chrono::DateTime<Utc>>,
    /// The job's name in the run log and the cost ledger (a scheduled
    /// job's name); `None`: the kind (`full`, `changes`, `lookup`).
    pub job: Option<&'a str>,
    /// A full run refreshes only the persons whose home municipality is
    /// this (after following the whole feed).
    pub area: Option<&'a str>,
    /// Several hosts share the database: this host's name. Feed pages are
    /// then applied only from the cursor they were read at, and a full
    /// run queues its refresh batches for any host to claim (leased for
    /// `lease`).
    pub cluster: Option<&'a str>,
    /// How long a claimed refresh batch stays this host's without being
    /// committed before another host may take it over.
    pub lease: Duration,
    /// Keep only followed persons (`follow.scope = "followed"`): feed
    /// events about anyone else are skipped without a lookup, and a full
    /// run refreshes the followed persons (and looks up followed IDs not
    /// stored yet) instead of everyone stored.
    pub followed_only: bool,
    /// With `followed_only`: a full run also follows the guardians of
    /// followed minors and looks up those not stored yet.
    pub guardians: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            batch: 500,
            attempts: 5,
            backoff: Duration::from_millis(200),
            progress: None,
            cost_per_call: 0.0,
            cache_ttl: None,
            now: None,
            job: None,
            area: None,
            cluster: None,
            lease: Duration::from_secs(60),
            followed_only: false,
            guardians: false,
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub run: i64,
    pub status: RunStatus,
    pub counts: RunCounts,
    pub errors: Vec<String>,
    pub identity_conflicts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] folkhub_store::StoreError),
}

fn retry_delay(
    error: &CallError,
    attempt: u32,
    base: Duration,
    cost_per_call: f64,
) -> Option<Duration> {
    let error = error.connector_error()?;
    if !error.worth_retrying(cost_per_call) {
        return None;
    }
    let exponential = base * 2u32.saturating_pow(attempt.min(10));
    let jitter = Duration::from_millis(rand_jitter(exponential.as_millis() as u64 / 4 + 1));
    Some(match error {
        ConnectorError::RateLimited(ms) => {
            Duration::from_millis(u64::from(*ms)).max(exponential) + jitter
        }
        _ => exponential + jitter,
    })
}

fn rand_jitter(max: u64) -> u64 {
    // Jitter needs no cryptographic randomness: the clock's nanoseconds do.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) % max
}

async fn with_retries<T, F, Fut>(
    options: &Options<'_>,
    retries: &std::sync::atomic::AtomicU64,
    mut call: F,
) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, CallError>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                attempt += 1;
                match retry_delay(&error, attempt - 1, options.backoff, options.cost_per_call) {
                    Some(delay) if attempt < options.attempts => {
                        tracing::warn!(
                            attempt,
                            delay_ms = delay.as_millis() as u64,
                            "retrying after: {error}"
                        );
                        retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                    }
                    _ => return Err(error),
                }
            }
        }
    }
}

struct Runner<'a> {
    store: &'a dyn PersonStore,
    connector: &'a Connector,
    options: &'a Options<'a>,
    counts: RunCounts,
    errors: Vec<String>,
    conflicts: Vec<String>,
    reason: String,
    job: String,
    /// The connector's register-call count when the run started.
    calls_before: u64,
    /// Calls retried after a transient error (the log book shows them).
    retries: std::sync::atomic::AtomicU64,
    /// The run's id in the log book (0 until started), for progress.
    run: i64,
    /// The fence of the next feed page stored (cluster mode).
    fence: folkhub_store::Fence,
    /// A feed page was fenced: another host follows the feed now.
    fenced_out: bool,
}

impl<'a> Runner<'a> {
    fn new(
        store: &'a dyn PersonStore,
        connector: &'a Connector,
        options: &'a Options<'a>,
        job: &str,
    ) -> Runner<'a> {
        Runner {
            store,
            connector,
            options,
            counts: RunCounts::default(),
            errors: vec![],
            conflicts: vec![],
            reason: format!("{job} ({} {})", connector.id, connector.version),
            job: job.to_string(),
            calls_before: connector.upstream_calls(),
            retries: std::sync::atomic::AtomicU64::new(0),
            run: 0,
            fence: folkhub_store::Fence::None,
            fenced_out: false,
        }
    }

    /// Looks up `ids` in batches and stores them; the last batch carries `cursor`.
    async fn refresh(&mut self, ids: &[String], cursor: Option<String>) -> Result<(), CallError> {
        let size = self.options.batch.max(1);
        let chunks: Vec<&[String]> = ids.chunks(size).collect();
        if chunks.is_empty() {
            if let Some(cursor) = cursor {
                self.store_batch(vec![], Some(cursor)).await;
            }
            return Ok(());
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let results =
                with_retries(self.options, &self.retries, || self.connector.lookup(chunk)).await?;
            let persons = self.collect(results);
            if !self
                .store_batch(persons, if i == last { cursor.clone() } else { None })
                .await
            {
                return Err(self.refused());
            }
            if let Some(report) = self.options.progress {
                report(Progress {
                    done: self.counts.fetched,
                    total: None,
                });
            }
            self.progress().await;
        }
        Ok(())
    }

    /// Looks up `ids` in batches without storing them.
    async fn look_up(
        &mut self,
        ids: &[String],
    ) -> Result<Vec<folkhub_core::contract::FoundPerson>, CallError> {
        let mut persons = Vec::new();
        for chunk in ids.chunks(self.options.batch.max(1)) {
            let results =
                with_retries(self.options, &self.retries, || self.connector.lookup(chunk)).await?;
            persons.extend(self.collect(results));
        }
        Ok(persons)
    }

    fn collect(&mut self, results: Vec<LookupResult>) -> Vec<folkhub_core::contract::FoundPerson> {
        let mut persons = Vec::with_capacity(results.len());
        for r in results {
            match r.outcome {
                LookupOutcome::Found(p) => {
                    self.counts.fetched += 1;
                    persons.push(p);
                }
                LookupOutcome::NotFound => self.counts.not_found += 1,
                LookupOutcome::Failed(e) => {
                    self.counts.errors += 1;
                    self.errors.push(format!(
                        "{}: {e}",
                        folkhub_runtime::state::person_hash(&r.requested)
                    ));
                }
            }
        }
        persons
    }

    /// Stores a batch; false when the store refused it (the error is recorded).
    async fn store_batch(
        &mut self,
        persons: Vec<folkhub_core::contract::FoundPerson>,
        cursor: Option<String>,
    ) -> bool {
        self.store_fenced(persons, cursor, folkhub_store::Fence::None)
            .await
    }

    async fn store_fenced(
        &mut self,
        persons: Vec<folkhub_core::contract::FoundPerson>,
        cursor: Option<String>,
        fence: folkhub_store::Fence,
    ) -> bool {
        let batch = Batch {
            source: self.connector.id.clone(),
            release: self.connector.version.clone(),
            retrieved: Utc::now(),
            persons,
            cursor,
            reason: self.reason.clone(),
            fence,
        };
        match self.store.apply(batch).await {
            Ok(report) => {
                self.count(report);
                true
            }
            Err(folkhub_store::StoreError::Fenced(why)) => {
                // Another host follows this feed and applied the page: it
                // carries on from there; this run stops following it.
                tracing::info!("{why}");
                self.fenced_out = true;
                true
            }
            Err(e) => {
                self.counts.errors += 1;
                self.errors.push(format!("store: {e}"));
                false
            }
        }
    }

    /// Stores the records a feed carried (contract 2.0) with the cursor
    /// that covers them, in one transaction; a refused batch stops the run
    /// without moving the cursor.
    async fn store_records(
        &mut self,
        records: Vec<(String, folkhub_core::contract::FoundPerson)>,
        cursor: Option<String>,
    ) -> Result<(), CallError> {
        if records.is_empty() && cursor.is_none() {
            return Ok(());
        }
        self.counts.fetched += records.len() as u64;
        let persons = records.into_iter().map(|(_, p)| p).collect();
        let fence = std::mem::take(&mut self.fence);
        if self.store_fenced(persons, cursor, fence).await {
            self.progress().await;
            Ok(())
        } else {
            Err(self.refused())
        }
    }

    /// The store refused a batch (its error is recorded): the cursor did
    /// not move, so the page is read again next run, and re-applying what
    /// was stored changes nothing.
    fn refused(&self) -> CallError {
        CallError::Host {
            connector: self.connector.id.clone(),
            version: self.connector.version.clone(),
            message: "the store refused a batch; stopped without moving the cursor".into(),
        }
    }

    /// Writes the counts so far to the log book (progress of a running run).
    async fn progress(&mut self) {
        if self.run == 0 {
            return;
        }
        self.counts.retries = self.retries.load(std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = self.store.update_run(self.run, &self.counts).await {
            tracing::debug!("progress not stored: {e}");
        }
    }

    fn count(&mut self, report: ApplyReport) {
        self.counts.conflicts_opened += report.conflicts_opened;
        self.counts.changed += report.persons_changed;
        self.counts.created += report.persons_created;
        self.counts.unchanged += report.persons_unchanged;
        self.conflicts.extend(report.identity_conflicts);
    }

    /// Follows the feed from the stored cursor to its head. Returns the IDs refreshed.
    async fn follow_feed(&mut self) -> Result<BTreeSet<String>, CallError> {
        let mut cursor =
            self.store
                .cursor(&self.connector.id)
                .await
                .map_err(|e| CallError::Host {
                    connector: self.connector.id.clone(),
                    version: self.connector.version.clone(),
                    message: e.to_string(),
                })?;
        let mut refreshed = BTreeSet::new();
        let has = |c: &str| self.connector.capabilities.iter().any(|x| x == c);
        if !has("change-feed") {
            if has("watch") {
                return self.follow_watch(cursor).await;
            }
            // No feed (e.g. DVV 1.0): a full run refreshes the known persons only.
            return Ok(refreshed);
        }
        loop {
            let page = with_retries(self.options, &self.retries, || {
                self.connector.changes(cursor.as_deref())
            })
            .await?;
            self.counts.feed_events += page.changes.len() as u64;
            let (records, ids) = split_changes(page.changes);
            let (records, ids) = self.only_followed(records, ids).await?;
            refreshed.extend(ids.iter().cloned());
            refreshed.extend(records.iter().map(|(id, _)| id.clone()));
            let mut records = records;
            match self.options.cluster {
                // Several hosts: the page's lookups, its records and its
                // cursor are one batch, committed only from the cursor the
                // page was read at, so a page is applied by one host once.
                Some(host) => {
                    let found = self.look_up(&ids).await?;
                    // Counted as fetched once, when stored with the page.
                    self.counts.fetched -= found.len() as u64;
                    records.extend(found.into_iter().map(|p| (String::new(), p)));
                    self.fence = folkhub_store::Fence::Feed {
                        from: cursor.clone(),
                        host: host.to_string(),
                        run: self.run,
                    };
                }
                None => self.refresh(&ids, None).await?,
            }
            self.store_records(records, Some(page.next_cursor.clone()))
                .await?;
            if self.fenced_out {
                break;
            }
            let moved = cursor.as_deref() != Some(page.next_cursor.as_str());
            cursor = Some(page.next_cursor);
            if page.caught_up || !moved {
                break;
            }
        }
        Ok(refreshed)
    }
}

impl Runner<'_> {
    /// A feed that reports only the persons named (contract 1.1 `watch`,
    /// DVV's VTJ change interface): every known person of the release's ID
    /// schemes is asked for, in chunks, from the stored cursor; the changed
    /// persons are looked up; the cursor moves with the last batch. A crash
    /// before that repeats the refreshes, which change nothing the second time.
    async fn follow_watch(&mut self, start: Option<String>) -> Result<BTreeSet<String>, CallError> {
        let schemes: Vec<&str> = self
            .connector
            .id_schemes
            .iter()
            .map(String::as_str)
            .collect();
        let followed = if self.options.followed_only {
            self.store.followed_ids(&schemes).await
        } else {
            self.store.active_ids(&schemes).await
        };
        let followed = followed.map_err(|e| CallError::Host {
            connector: self.connector.id.clone(),
            version: self.connector.version.clone(),
            message: e.to_string(),
        })?;
        let mut changed = BTreeSet::new();
        let mut carried = Vec::new();
        let mut furthest: Option<String> = start.clone();
        for chunk in followed.chunks(self.options.batch.clamp(1, 1000)) {
            let mut cursor = start.clone();
            loop {
                let page = with_retries(self.options, &self.retries, || {
                    self.connector.changes_for(cursor.as_deref(), chunk)
                })
                .await?;
                self.counts.feed_events += page.changes.len() as u64;
                let moved = cursor.as_deref() != Some(page.next_cursor.as_str());
                carried.extend(page.changes);
                cursor = Some(page.next_cursor);
                if page.caught_up || !moved {
                    break;
                }
            }
            // Keys grow; keep the furthest any chunk reached.
            furthest = match (furthest, cursor) {
                (Some(a), Some(b)) => Some(max_position(a, b)),
                (a, b) => b.or(a),
            };
        }
        let (records, ids) = split_changes(carried);
        let (records, ids) = self.only_followed(records, ids).await?;
        changed.extend(ids.iter().cloned());
        changed.extend(records.iter().map(|(id, _)| id.clone()));
        self.refresh(&ids, None).await?;
        self.store_records(records, furthest).await?;
        Ok(changed)
    }
}

impl Runner<'_> {
    /// Drops the IDs the cache TTL covers (counted as `cached`).
    async fn uncached(&mut self, ids: Vec<String>) -> Vec<String> {
        let Some(ttl) = self.options.cache_ttl else {
            return ids;
        };
        let since = self.options.now.unwrap_or_else(Utc::now) - ttl;
        match self.store.refreshed_since(&self.connector.id, since).await {
            Ok(fresh) => {
                let before = ids.len();
                let rest: Vec<String> = ids.into_iter().filter(|id| !fresh.contains(id)).collect();
                self.counts.cached += (before - rest.len()) as u64;
                rest
            }
            Err(e) => {
                self.errors.push(format!("cache: {e}; looking everyone up"));
                ids
            }
        }
    }

    /// For a `watch` feed without a stored cursor: the register's position
    /// now, to store with the first lookups.
    async fn watch_start(&self) -> Result<Option<String>, CallError> {
        if !self.connector.capabilities.iter().any(|c| c == "watch") {
            return Ok(None);
        }
        let stored = self
            .store
            .cursor(&self.connector.id)
            .await
            .map_err(|e| CallError::Host {
                connector: self.connector.id.clone(),
                version: self.connector.version.clone(),
                message: e.to_string(),
            })?;
        if stored.is_some() {
            return Ok(None);
        }
        let page = with_retries(self.options, &self.retries, || {
            self.connector.changes_for(None, &[])
        })
        .await?;
        Ok(Some(page.next_cursor))
    }
}

impl Runner<'_> {
    /// With `followed_only`: the feed's records and lookups about persons
    /// someone follows; the rest are counted as `unfollowed` and dropped
    /// without a call to the register.
    async fn only_followed(
        &mut self,
        records: Vec<(String, FoundPerson)>,
        ids: Vec<String>,
    ) -> Result<(Vec<(String, FoundPerson)>, Vec<String>), CallError> {
        if !self.options.followed_only {
            return Ok((records, ids));
        }
        let mut asked: Vec<String> = ids.clone();
        for (id, person) in &records {
            asked.push(id.clone());
            asked.extend(person.ids.iter().map(|i| i.value.clone()));
        }
        let followed = self
            .store
            .followed_among(&asked)
            .await
            .map_err(|e| self.host_error(e.to_string()))?;
        let before = records.len() + ids.len();
        let records: Vec<(String, FoundPerson)> = records
            .into_iter()
            .filter(|(id, p)| {
                followed.contains(id) || p.ids.iter().any(|i| followed.contains(&i.value))
            })
            .collect();
        let ids: Vec<String> = ids.into_iter().filter(|id| followed.contains(id)).collect();
        self.counts.unfollowed += (before - records.len() - ids.len()) as u64;
        Ok((records, ids))
    }

    fn host_error(&self, message: String) -> CallError {
        CallError::Host {
            connector: self.connector.id.clone(),
            version: self.connector.version.clone(),
            message,
        }
    }

    /// Follows the guardians of followed minors (the store's guardians
    /// set, made exactly those), then looks up the ones of this
    /// connector's schemes that are not stored yet.
    async fn follow_guardians(&mut self) -> Result<(), CallError> {
        let today = self.options.now.unwrap_or_else(Utc::now).date_naive();
        let mut wanted = std::collections::BTreeMap::new();
        let mut after = 0;
        loop {
            let page = self
                .store
                .followed_persons_after(after, 1000)
                .await
                .map_err(|e| self.host_error(e.to_string()))?;
            let Some(last) = page.last() else { break };
            after = last.key;
            for person in &page {
                let minor = person
                    .record
                    .fields
                    .get("birth.date")
                    .and_then(|f| f.value.as_str())
                    .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                    .and_then(|born| today.years_since(born))
                    .is_some_and(|age| age < 18);
                if !minor {
                    continue;
                }
                for path in [
                    "relations.parental-responsibility",
                    "relations.guardianship",
                ] {
                    let Some(list) = person
                        .record
                        .fields
                        .get(path)
                        .and_then(|f| f.value.as_array())
                    else {
                        continue;
                    };
                    for id in list.iter().filter_map(|r| r.get("id")?.as_str()) {
                        if let Ok(id) = folkhub_core::ids::parse(id) {
                            wanted.insert(
                                id.value.clone(),
                                folkhub_store::FollowId {
                                    scheme: id.scheme.as_str().into(),
                                    value: id.value,
                                },
                            );
                        }
                    }
                }
            }
        }
        let guardians: Vec<folkhub_store::FollowId> = wanted.into_values().collect();
        self.store
            .replace_follows(&folkhub_store::FollowSet::Guardians, &guardians, "sync")
            .await
            .map_err(|e| self.host_error(e.to_string()))?;
        let ours: Vec<String> = guardians
            .iter()
            .filter(|g| self.connector.id_schemes.contains(&g.scheme))
            .map(|g| g.value.clone())
            .collect();
        let known = self
            .store
            .keys(&ours)
            .await
            .map_err(|e| self.host_error(e.to_string()))?;
        let missing: Vec<String> = ours
            .into_iter()
            .filter(|id| !known.contains_key(id))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        tracing::info!(
            guardians = missing.len(),
            "looking up guardians of followed minors"
        );
        self.refresh(&missing, None).await
    }
}

/// Splits feed changes into the records the feed carried (the last one per
/// ID) and the IDs to look up. An ID that also has a change without a
/// record is looked up: the register's answer now is newer than any record
/// the feed carried.
fn split_changes(
    changes: Vec<folkhub_core::contract::Change>,
) -> (
    Vec<(String, folkhub_core::contract::FoundPerson)>,
    Vec<String>,
) {
    let mut lookups = BTreeSet::new();
    let mut records: Vec<(String, folkhub_core::contract::FoundPerson)> = Vec::new();
    for change in changes {
        match change.record {
            Some(record) => {
                records.retain(|(id, _)| *id != change.id);
                records.push((change.id, record));
            }
            None => {
                lookups.insert(change.id);
            }
        }
    }
    records.retain(|(id, _)| !lookups.contains(id));
    (records, lookups.into_iter().collect())
}

/// The later of two feed positions: numerically when both are numbers.
fn max_position(a: String, b: String) -> String {
    match (a.parse::<u128>(), b.parse::<u128>()) {
        (Ok(x), Ok(y)) => {
            if x >= y {
                a
            } else {
                b
            }
        }
        _ => a.max(b),
    }
}

/// What an enriching source adds for one person, if it should be asked.
fn location_of(
    person: &folkhub_store::StoredPerson,
    source: &str,
    only_changed: bool,
) -> Option<Option<Location>> {
    let fields = &person.record.fields;
    let ours = |f: &folkhub_core::merge::MergedField| f.provenance.source == source;
    let had = fields.values().any(ours);
    let Some(address) = fields.get("address.residential") else {
        // No address (any more): withdraw what the source added before.
        return had.then_some(None);
    };
    if only_changed
        && let Some(mine) = fields
            .values()
            .filter(|f| ours(f))
            .map(|f| f.provenance.retrieved)
            .max()
        && address.provenance.retrieved <= mine
        && fields
            .get("address.statistical-unit")
            .is_none_or(|u| u.provenance.retrieved <= mine)
    {
        return None;
    }
    let mut context = Vec::new();
    for path in ["address.statistical-unit", "address.municipality"] {
        if let Some(f) = fields.get(path) {
            context.push((path.to_string(), f.value.clone()));
        }
    }
    Some(Some(Location {
        key: person.key.to_string(),
        address: address.value.clone(),
        context,
    }))
}

impl Runner<'_> {
    /// Walks every person with an ID of the release's schemes and asks the
    /// enriching source (contract 1.1 `enrich`) about their address; with
    /// `only_changed`, only persons whose address changed since the source
    /// last answered.
    async fn enrich_all(&mut self, only_changed: bool) -> Result<(), CallError> {
        let host_error = |message: String| CallError::Host {
            connector: self.connector.id.clone(),
            version: self.connector.version.clone(),
            message,
        };
        let schemes = self.connector.id_schemes.clone();
        let mut after = 0;
        loop {
            let page = self
                .store
                .persons_after(after, self.options.batch.clamp(1, 1000) as u32)
                .await
                .map_err(|e| host_error(e.to_string()))?;
            let Some(last) = page.last() else { break };
            after = last.key;
            // Followed scope: persons nobody follows (waiting out their
            // retention) are not enriched.
            let followed = if self.options.followed_only {
                let ids: Vec<String> = page
                    .iter()
                    .flat_map(|p| p.ids.iter().map(|i| i.value.clone()))
                    .collect();
                Some(
                    self.store
                        .followed_among(&ids)
                        .await
                        .map_err(|e| host_error(e.to_string()))?,
                )
            } else {
                None
            };
            let mut asks = Vec::new();
            let mut withdraw = Vec::new();
            for person in &page {
                if !person.ids.iter().any(|i| schemes.contains(&i.scheme)) {
                    continue;
                }
                if let Some(followed) = &followed
                    && !person.ids.iter().any(|i| followed.contains(&i.value))
                {
                    continue;
                }
                match location_of(person, &self.connector.id, only_changed) {
                    Some(Some(location)) => asks.push((person, location)),
                    Some(None) => withdraw.push(person),
                    None => {}
                }
            }
            let locations: Vec<Location> = asks.iter().map(|(_, l)| l.clone()).collect();
            let results = if locations.is_empty() {
                vec![]
            } else {
                with_retries(self.options, &self.retries, || {
                    self.connector.enrich(&locations)
                })
                .await?
            };
            let mut found = Vec::new();
            let as_found = |p: &folkhub_store::StoredPerson, fields| FoundPerson {
                ids: p
                    .ids
                    .iter()
                    .map(|i| SourceId {
                        scheme: i.scheme.clone(),
                        value: i.value.clone(),
                        active: i.active,
                    })
                    .collect(),
                fields,
                upstream_version: self.connector.upstream_version.clone(),
                covers: None,
            };
            for result in results {
                let Some((person, _)) = asks.iter().find(|(_, l)| l.key == result.key) else {
                    self.errors.push(format!(
                        "the connector answered for unknown key {}",
                        result.key
                    ));
                    continue;
                };
                match result.outcome {
                    EnrichOutcome::Found(fields) => {
                        self.counts.fetched += 1;
                        found.push(as_found(person, fields));
                    }
                    EnrichOutcome::NotFound => {
                        self.counts.not_found += 1;
                        found.push(as_found(person, vec![]));
                    }
                    EnrichOutcome::Failed(e) => {
                        self.counts.errors += 1;
                        self.errors.push(format!("person {}: {e}", person.key));
                    }
                }
            }
            for person in withdraw {
                found.push(as_found(person, vec![]));
            }
            if !found.is_empty() && !self.store_batch(found, None).await {
                return Err(host_error("the store refused a batch".into()));
            }
            if let Some(report) = self.options.progress {
                report(Progress {
                    done: self.counts.fetched,
                    total: None,
                });
            }
        }
        Ok(())
    }
}

async fn run(
    store: &dyn PersonStore,
    connector: &Connector,
    options: &Options<'_>,
    job: &str,
    full: bool,
    schemes: &[&str],
) -> Result<Summary, SyncError> {
    let job = options.job.unwrap_or(job);
    let run = store
        .start_run(job, Some(&connector.id), Some(&connector.version))
        .await?;
    if let Some(host) = options.cluster {
        store.set_run_host(run, host).await?;
    }
    let mut runner = Runner::new(store, connector, options, job);
    runner.run = run;
    if connector.capabilities.iter().any(|c| c == "enrich") {
        // An enriching source: no persons of its own, a walk over everyone.
        let outcome = runner.enrich_all(!full).await;
        return finish(store, run, runner, outcome.map(|_| BTreeSet::new())).await;
    }
    let mut outcome = runner.follow_feed().await;
    if full && let Ok(done) = &outcome {
        let known = match (options.area, options.followed_only) {
            (Some(area), false) => store.active_ids_in(schemes, area).await,
            (None, false) => store.active_ids(schemes).await,
            (None, true) => store.followed_ids(schemes).await,
            (Some(area), true) => match store.active_ids_in(schemes, area).await {
                Ok(there) => store.followed_ids(schemes).await.map(|followed| {
                    let there: BTreeSet<String> = there.into_iter().collect();
                    followed
                        .into_iter()
                        .filter(|id| there.contains(id))
                        .collect()
                }),
                Err(e) => Err(e),
            },
        };
        match known {
            Ok(known) => {
                let rest: Vec<String> = known.into_iter().filter(|id| !done.contains(id)).collect();
                let rest = runner.uncached(rest).await;
                runner.counts.total = runner.counts.fetched + rest.len() as u64;
                if let Some(report) = options.progress {
                    report(Progress {
                        done: runner.counts.fetched,
                        total: Some(runner.counts.fetched + rest.len() as u64),
                    });
                }
                let done = match options.cluster {
                    Some(host) => runner.refresh_shared(&rest, host).await,
                    None => runner.refresh(&rest, None).await,
                };
                if let Err(e) = done {
                    outcome = Err(e);
                } else if options.followed_only
                    && options.guardians
                    && let Err(e) = runner.follow_guardians().await
                {
                    outcome = Err(e);
                }
            }
            Err(e) => runner.errors.push(format!("store: {e}")),
        }
    }
    finish(store, run, runner, outcome).await
}

impl Runner<'_> {
    /// Several hosts: the refresh's batches go into the shared work queue,
    /// this host works through them with the others, and the run's counts
    /// take in the batches every host did once none is left.
    async fn refresh_shared(&mut self, ids: &[String], host: &str) -> Result<(), CallError> {
        let host_error = |message: String| CallError::Host {
            connector: self.connector.id.clone(),
            version: self.connector.version.clone(),
            message,
        };
        let batches: Vec<Vec<String>> = ids
            .chunks(self.options.batch.max(1))
            .map(<[String]>::to_vec)
            .collect();
        self.store
            .queue_work(self.run, &self.connector.id, &batches)
            .await
            .map_err(|e| host_error(e.to_string()))?;
        let calls = self.connector.upstream_calls();
        let state = drain_queue(self.store, self.connector, self.options, self.run, host)
            .await
            .map_err(|e| host_error(e.to_string()))?;
        // Each batch's calls went to the cost ledger with the batch.
        self.calls_before += self.connector.upstream_calls().saturating_sub(calls);
        self.counts.add(&state.counts);
        Ok(())
    }
}

/// Works through queued refresh batches of `connector` until run `run`
/// has none left (claiming batches of other runs of it too); waits for
/// batches other hosts hold, and takes over those whose lease expires.
/// Returns where the run's batches stand at the end.
pub async fn drain_queue(
    store: &dyn PersonStore,
    connector: &Connector,
    options: &Options<'_>,
    run: i64,
    host: &str,
) -> Result<folkhub_store::WorkState, folkhub_store::StoreError> {
    loop {
        if work_one(store, connector, options, host).await?.is_none() {
            let state = store.work_state(run).await?;
            if state.pending == 0 && state.leased == 0 {
                return Ok(state);
            }
            // Other hosts hold the rest: wait for them (or their leases).
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Claims one queued refresh batch of `connector` and does it: its
/// persons looked up and committed with its `done` mark, only while this
/// host still holds it. `None` when there was nothing to claim.
pub async fn work_one(
    store: &dyn PersonStore,
    connector: &Connector,
    options: &Options<'_>,
    host: &str,
) -> Result<Option<i64>, folkhub_store::StoreError> {
    let until = Utc::now()
        + chrono::Duration::from_std(options.lease).unwrap_or(chrono::Duration::seconds(60));
    let Some(item) = store
        .claim_work(host, until, std::slice::from_ref(&connector.id))
        .await?
    else {
        return Ok(None);
    };
    let job = options.job.unwrap_or("full");
    let mut runner = Runner::new(store, connector, options, job);
    let retries = &runner.retries;
    let calls_before = connector.upstream_calls();
    let persons = match with_retries(options, retries, || connector.lookup(&item.ids)).await {
        Ok(results) => runner.collect(results),
        Err(e) => {
            // Given back for another try (by any host) after its lease.
            tracing::warn!(item = item.id, "refresh batch failed: {e}");
            return Ok(Some(item.id));
        }
    };
    runner.counts.upstream_calls = connector.upstream_calls().saturating_sub(calls_before);
    if runner.counts.upstream_calls > 0
        && let Err(e) = store
            .record_cost(folkhub_store::CostEntry {
                at: Utc::now(),
                connector: connector.id.clone(),
                release: connector.version.clone(),
                job: job.to_string(),
                run: Some(item.run),
                calls: runner.counts.upstream_calls,
                cost_per_call: options.cost_per_call,
            })
            .await
    {
        tracing::warn!("cost ledger: {e}");
    }
    runner.counts.retries = runner.retries.load(std::sync::atomic::Ordering::Relaxed);
    let fence = folkhub_store::Fence::Work {
        item: item.id,
        host: host.to_string(),
        counts: runner.counts.clone(),
    };
    match store
        .apply(Batch {
            source: connector.id.clone(),
            release: connector.version.clone(),
            retrieved: Utc::now(),
            persons,
            cursor: None,
            reason: runner.reason.clone(),
            fence,
        })
        .await
    {
        Ok(_) => {}
        Err(folkhub_store::StoreError::Fenced(why)) => tracing::info!("{why}"),
        Err(e) => return Err(e),
    }
    Ok(Some(item.id))
}

/// Writes the run's outcome to the run log.
async fn finish(
    store: &dyn PersonStore,
    run: i64,
    mut runner: Runner<'_>,
    outcome: Result<BTreeSet<String>, CallError>,
) -> Result<Summary, SyncError> {
    // Every register call of the run goes into the cost ledger, failed
    // runs included: the register counts them too.
    let calls = runner
        .connector
        .upstream_calls()
        .saturating_sub(runner.calls_before);
    runner.counts.upstream_calls += calls;
    runner.counts.retries = runner.retries.load(std::sync::atomic::Ordering::Relaxed);
    if calls > 0
        && let Err(e) = store
            .record_cost(folkhub_store::CostEntry {
                at: Utc::now(),
                connector: runner.connector.id.clone(),
                release: runner.connector.version.clone(),
                job: runner.job.clone(),
                run: Some(run),
                calls,
                cost_per_call: runner.options.cost_per_call,
            })
            .await
    {
        runner.errors.push(format!("store: cost ledger: {e}"));
    }
    let status = match &outcome {
        Err(e) => {
            runner.errors.push(e.to_string());
            RunStatus::Failed
        }
        Ok(_) if runner.errors.iter().any(|e| e.starts_with("store:")) => RunStatus::Failed,
        Ok(_) if runner.counts.errors > 0 => RunStatus::Partial,
        Ok(_) => RunStatus::Succeeded,
    };
    store
        .finish_run(run, status, &runner.counts, &runner.errors)
        .await?;
    Ok(Summary {
        run,
        status,
        counts: runner.counts,
        errors: runner.errors,
        identity_conflicts: runner.conflicts,
    })
}

/// Follows the change feed from the stored cursor to its head.
pub async fn changes(
    store: &dyn PersonStore,
    connector: &Connector,
    options: &Options<'_>,
) -> Result<Summary, SyncError> {
    run(store, connector, options, "changes", false, &[]).await
}

/// Follows the feed, then refreshes every other known person of `schemes`.
pub async fn full(
    store: &dyn PersonStore,
    connector: &Connector,
    schemes: &[&str],
    options: &Options<'_>,
) -> Result<Summary, SyncError> {
    run(store, connector, options, "full", true, schemes).await
}

/// Looks up specific IDs now (e.g. a person an operator adds).
pub async fn lookup(
    store: &dyn PersonStore,
    connector: &Connector,
    ids: &[String],
    options: &Options<'_>,
) -> Result<Summary, SyncError> {
    let job = options.job.unwrap_or("lookup");
    let run_id = store
        .start_run(job, Some(&connector.id), Some(&connector.version))
        .await?;
    let mut runner = Runner::new(store, connector, options, job);
    runner.run = run_id;
    runner.counts.total = ids.len() as u64;
    // A watched feed (DVV) starts where the first lookups are: later
    // changes runs then miss nothing that happened after them.
    let ids = runner.uncached(ids.to_vec()).await;
    let outcome = match runner.watch_start().await {
        Ok(cursor) => runner.refresh(&ids, cursor).await,
        Err(e) => Err(e),
    };
    finish(store, run_id, runner, outcome.map(|_| BTreeSet::new())).await
}
