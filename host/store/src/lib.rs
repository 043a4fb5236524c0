//! The person store: the append-only observation log, persons and their
//! identifiers, merged records with per-field provenance and history,
//! connector installations, change-feed cursors and job runs.
//!
//! Six traits are the seam, one per aggregate: [`Persons`],
//! [`Installations`], [`Jobs`], [`Access`], [`Follows`] and [`Webhooks`];
//! callers never see SQL and take the one they need ([`PersonStore`] is
//! all six, for the wiring).
//! [`sql::SqlStore`] implements them on SQLite (the embedded default) and
//! PostgreSQL (several hosts), one file per aggregate under `sql/`.

pub mod audit;
pub mod local_postgres;
pub mod sql;
mod types;

pub use types::*;

use async_trait::async_trait;

/// How a history entry's `reason` starts when the person's IDs changed (an
/// ID new to them, or one the issuing register moved in or out of use),
/// whether or not a value changed with them.
pub const IDS_CHANGED: &str = "IDs changed: ";

/// Persons: what the sources said (the observation log), the merged
/// records with their history and identifiers, identity links, manual
/// overrides and conflicts.
#[async_trait]
pub trait Persons: Send + Sync {
    /// Applies what one source said about a batch of persons, and moves the
    /// source's change-feed cursor, in one transaction.
    async fn apply(&self, batch: Batch) -> Result<ApplyReport, StoreError>;

    /// A person by any of their identifiers (normalised value).
    async fn person(&self, id: &str) -> Result<Option<StoredPerson>, StoreError>;

    /// Persons by identifiers (normalised values), looked up together:
    /// each ID with its person, `None` when no stored person has it.
    async fn persons(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, Option<StoredPerson>)>, StoreError>;

    /// The key of the person holding each ID (those held by nobody are
    /// left out); a person merged into another answers with that one's key.
    async fn keys(
        &self,
        ids: &[String],
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError>;

    /// Persons a search matches, in key order, with a key above `after`
    /// (at most `limit`). Persons merged into another are not listed.
    async fn search(
        &self,
        search: &Search,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredPerson>, StoreError>;

    /// A person by the store's key.
    async fn person_by_key(&self, key: i64) -> Result<Option<StoredPerson>, StoreError>;

    /// Up to `limit` persons with a key above `after`, in key order (for
    /// jobs that walk everyone).
    async fn persons_after(&self, after: i64, limit: u32) -> Result<Vec<StoredPerson>, StoreError>;

    /// Active identifiers of the given schemes, for refreshing known persons.
    async fn active_ids(&self, schemes: &[&str]) -> Result<Vec<String>, StoreError>;

    /// Active identifiers of the given schemes of persons whose merged home
    /// municipality is `municipality` (a refresh of one area).
    async fn active_ids_in(
        &self,
        schemes: &[&str],
        municipality: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// Every ID of the persons `source` answered for at or after `since`
    /// (the lookups a TTL cache may skip).
    async fn refreshed_since(
        &self,
        source: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<std::collections::BTreeSet<String>, StoreError>;

    /// Number of persons.
    async fn count_persons(&self) -> Result<u64, StoreError>;

    /// The change history of a person, oldest first.
    async fn history(&self, person: i64) -> Result<Vec<PersonChange>, StoreError>;

    /// Changes of every merged record after sequence number `seq`, in order
    /// (at most `limit`): what host apps that keep a copy follow.
    async fn changes_since(&self, seq: i64, limit: u32) -> Result<Vec<PersonChange>, StoreError>;

    /// Persons reported without an ID that fit more than one stored person
    /// on name and birth date: created separately, listed for review.
    async fn identity_reviews(&self) -> Result<Vec<IdentityReview>, StoreError>;

    /// Identity links the store made (persons merged because the register
    /// that issues their IDs said they are one), with undo state.
    async fn identity_links(&self) -> Result<Vec<IdentityLink>, StoreError>;

    /// Undoes an identity link: both persons come back as they were before
    /// it (with what was said about each since), and the pair is not merged
    /// again on its own. False when there is no such link not yet undone.
    async fn undo_link(&self, id: i64, actor: &str, reason: &str) -> Result<bool, StoreError>;

    /// Adds a manual override (it wins over every source until it ends) and
    /// recomputes the person's record, in one transaction.
    async fn add_override(&self, new: NewOverride) -> Result<Override, StoreError>;

    /// Ends an open override (audited); false when there is no open one
    /// with this id.
    async fn end_override(&self, id: i64, actor: &str, reason: &str) -> Result<bool, StoreError>;

    /// Ends every open override whose expiry is at or before `at` (the
    /// caller's clock) and recomputes those persons. Returns their ids.
    async fn expire_overrides(
        &self,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<i64>, StoreError>;

    /// Overrides, oldest first; with `open_only`, those not ended.
    async fn overrides(&self, open_only: bool) -> Result<Vec<Override>, StoreError>;

    /// Open conflicts: fields where sources of equal rank disagree.
    async fn conflicts(&self) -> Result<Vec<Conflict>, StoreError>;

    /// Recomputes every merged record from the observation log and reports
    /// the persons whose stored record differs; with `apply`, stores the
    /// recomputed records (and history entries saying why).
    async fn rebuild(&self, apply: bool) -> Result<RebuildReport, StoreError>;

    /// Every source's current statement per field of a person: what the
    /// merged record is computed from (for previews that merge without
    /// writing).
    async fn candidates(
        &self,
        person: i64,
    ) -> Result<std::collections::BTreeMap<String, Vec<folkhub_core::merge::Candidate>>, StoreError>;
}

/// Connector installations and their audit trail.
#[async_trait]
pub trait Installations: Send + Sync {
    async fn installation(&self, connector: &str) -> Result<Option<Installation>, StoreError>;

    async fn installations(&self) -> Result<Vec<Installation>, StoreError>;

    /// Records an installation change and its audit entry in one
    /// transaction; the action (`install`, `reinstall`, `change-version`)
    /// is derived from what was installed before.
    async fn install(&self, installation: Installation, reason: &str) -> Result<(), StoreError> {
        self.change_installation(installation, None, reason).await
    }

    /// Records an installation change with an explicit audit action
    /// (`upgrade`, `rollback`, `auto-upgrade`, ...) in one transaction.
    async fn change_installation(
        &self,
        installation: Installation,
        action: Option<&str>,
        reason: &str,
    ) -> Result<(), StoreError>;

    /// Pins or unpins the installed release, audited. False when the
    /// connector is not installed.
    async fn set_pinned(
        &self,
        connector: &str,
        pinned: bool,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError>;

    /// Records an event about the installed release in its audit trail
    /// (e.g. a deadline action that did not change the installation), with
    /// the installed version and digest before and after. False when the
    /// connector is not installed.
    async fn audit_event(
        &self,
        connector: &str,
        actor: &str,
        action: &str,
        reason: &str,
    ) -> Result<bool, StoreError>;

    async fn audit(&self, connector: &str) -> Result<Vec<AuditEntry>, StoreError>;
}

/// Jobs: the run log book, change-feed cursors and feed pages, leases and
/// the work queue of several hosts, circuit breakers and the cost ledger.
#[async_trait]
pub trait Jobs: Send + Sync {
    async fn cursor(&self, connector: &str) -> Result<Option<String>, StoreError>;

    /// Records the register calls of a run in the cost ledger.
    async fn record_cost(&self, entry: CostEntry) -> Result<(), StoreError>;

    /// The ledger by month (`YYYY-MM`, or every month), connector and job.
    async fn costs(&self, month: Option<&str>) -> Result<Vec<CostRow>, StoreError>;

    /// A connector's circuit breaker (all zero when it never failed).
    async fn breaker(&self, connector: &str) -> Result<Breaker, StoreError>;

    /// Stores a connector's circuit breaker.
    async fn set_breaker(&self, breaker: &Breaker) -> Result<(), StoreError>;

    /// Starts a run in the log book: the job, the connector and the
    /// release of it that runs.
    async fn start_run(
        &self,
        job: &str,
        connector: Option<&str>,
        release: Option<&str>,
    ) -> Result<i64, StoreError>;

    /// The counts of a running run so far (its progress).
    async fn update_run(&self, id: i64, counts: &RunCounts) -> Result<(), StoreError>;

    async fn finish_run(
        &self,
        id: i64,
        status: RunStatus,
        counts: &RunCounts,
        errors: &[String],
    ) -> Result<(), StoreError>;

    async fn runs(&self, limit: u32) -> Result<Vec<JobRun>, StoreError>;

    /// Takes or renews the lease `name` for `holder` until `until`: true
    /// when `holder` holds it now (it was free, expired, or its own).
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError>;

    /// Gives a lease up (only its holder can).
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Who holds a lease, and until when (`None`: nobody, or expired).
    async fn lease(
        &self,
        name: &str,
    ) -> Result<Option<(String, chrono::DateTime<chrono::Utc>)>, StoreError>;

    /// Queues a run's refresh batches for any host to claim.
    async fn queue_work(
        &self,
        run: i64,
        connector: &str,
        batches: &[Vec<String>],
    ) -> Result<(), StoreError>;

    /// Claims the oldest batch of these connectors that is pending or whose
    /// lease expired, for `holder` until `until`.
    async fn claim_work(
        &self,
        holder: &str,
        until: chrono::DateTime<chrono::Utc>,
        connectors: &[String],
    ) -> Result<Option<WorkItem>, StoreError>;

    /// Where a run's queued batches stand.
    async fn work_state(&self, run: i64) -> Result<WorkState, StoreError>;

    /// When a job's latest run started (`None`: never).
    async fn last_started(
        &self,
        job: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError>;

    /// Runs still marked running for a job (a host that died leaves one).
    async fn open_runs(&self, job: &str) -> Result<Vec<JobRun>, StoreError>;

    /// Records which host runs a run.
    async fn set_run_host(&self, run: i64, host: &str) -> Result<(), StoreError>;

    /// The feed-page log book of a connector, oldest first.
    async fn feed_pages(&self, connector: &str) -> Result<Vec<FeedPage>, StoreError>;
}

/// Who reads: API clients, the tamper-evident access log, and the
/// secrets the servers of a store share.
#[async_trait]
pub trait Access: Send + Sync {
    /// Registers an API client. Refused when the name is taken.
    async fn add_client(&self, client: NewClient) -> Result<Client, StoreError>;

    /// Every client, revoked ones included, by name.
    async fn clients(&self) -> Result<Vec<Client>, StoreError>;

    /// The client (not revoked) whose secret has this SHA-256.
    async fn client_by_secret(&self, secret_sha256: &str) -> Result<Option<Client>, StoreError>;

    /// Revokes a client (its row stays for the access log). False when no
    /// client of this name is active.
    async fn revoke_client(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError>;

    /// Appends entries to the access log, in one transaction.
    async fn log_access(&self, entries: &[AccessEntry]) -> Result<(), StoreError>;

    /// Reads the access log.
    async fn access_log(&self, query: &AccessQuery) -> Result<Vec<AccessRecord>, StoreError>;

    /// Recomputes the access log's hash chain ([`audit`]) from the first
    /// entry and names the first entry that does not match.
    async fn verify_access_log(&self) -> Result<audit::ChainReport, StoreError>;

    /// A secret the servers of this store share (created at random on
    /// first use): `cursor` keys the API's paging cursors.
    async fn server_secret(&self, name: &str) -> Result<String, StoreError>;
}

/// Follow sets: the persons each client, or a population several clients
/// share, follows; and the retention of persons nobody follows.
#[async_trait]
pub trait Follows: Send + Sync {
    /// Adds IDs to a set (an ID need not be stored yet).
    async fn follow(
        &self,
        set: &FollowSet,
        ids: &[FollowId],
        by: &str,
    ) -> Result<FollowChange, StoreError>;

    /// Removes IDs (normalised values) from a set.
    async fn unfollow(&self, set: &FollowSet, ids: &[String]) -> Result<FollowChange, StoreError>;

    /// Makes a set exactly these IDs (the sync's guardians set).
    async fn replace_follows(
        &self,
        set: &FollowSet,
        ids: &[FollowId],
        by: &str,
    ) -> Result<FollowChange, StoreError>;

    /// Up to `limit` members of a set after the ID `after`, in ID order.
    async fn follow_members(
        &self,
        set: &FollowSet,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FollowMember>, StoreError>;

    /// The number of members of a set.
    async fn follow_count(&self, set: &FollowSet) -> Result<u64, StoreError>;

    /// Which of these IDs someone follows: a member of any set, or an ID of
    /// a stored person who has an ID in a set.
    async fn followed_among(
        &self,
        ids: &[String],
    ) -> Result<std::collections::BTreeSet<String>, StoreError>;

    /// What a refresh of followed persons asks about: the active IDs of
    /// these schemes of stored persons someone follows, and the followed
    /// IDs of these schemes no stored person has yet.
    async fn followed_ids(&self, schemes: &[&str]) -> Result<Vec<String>, StoreError>;

    /// Up to `limit` stored persons with a key above `after` that a client
    /// or population follows (the guardians set not counted), in key order.
    async fn followed_persons_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredPerson>, StoreError>;

    /// For each of these persons (keys) that one of `sets` follows: the
    /// ID it follows them by.
    async fn followed_by(
        &self,
        sets: &[FollowSet],
        keys: &[i64],
    ) -> Result<std::collections::BTreeMap<i64, String>, StoreError>;

    /// Creates a population the named clients share.
    async fn add_population(
        &self,
        name: &str,
        purpose: &str,
        clients: &[String],
        by: &str,
    ) -> Result<Population, StoreError>;

    /// Every population with its clients and member count.
    async fn populations(&self) -> Result<Vec<Population>, StoreError>;

    /// Lets a client use a population (`allow`) or stops it.
    async fn population_client(
        &self,
        name: &str,
        client: &str,
        allow: bool,
    ) -> Result<(), StoreError>;

    /// Deletes a population and its member list (the persons stay until
    /// the retention sweep finds nobody follows them). False when none.
    async fn drop_population(&self, name: &str) -> Result<bool, StoreError>;

    /// The retention sweep: notes stored persons nobody follows (since
    /// `now`), forgets the note of those followed again, and deletes those
    /// noted at or before `now - retention` with everything stored about
    /// them but the access log, each deletion audited.
    async fn sweep_unfollowed(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        retention: chrono::Duration,
        actor: &str,
    ) -> Result<RetentionReport, StoreError>;

    /// Deletion audit records, newest first (at most `limit`).
    async fn deletions(&self, limit: u32) -> Result<Vec<PersonDeletion>, StoreError>;

    /// The keyed digest a deletion record keeps of an ID.
    async fn deletion_digest(&self, id: &str) -> Result<String, StoreError>;

    /// The newest deletion of the person who had this ID (normalised),
    /// found by its keyed digest.
    async fn deletion_of(&self, id: &str) -> Result<Option<PersonDeletion>, StoreError>;
}

/// Pushed changes: webhook subscriptions, the outbox and its delivery
/// attempts, and the operational events admins subscribe to.
#[async_trait]
pub trait Webhooks: Send + Sync {
    /// Creates a subscription that starts with the changes and events
    /// after the latest ones stored now.
    async fn add_subscription(&self, new: NewSubscription) -> Result<Subscription, StoreError>;

    /// Every subscription, disabled ones included, oldest first.
    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError>;

    /// Disables a subscription (its undelivered messages are not sent).
    /// False when there is no active one with this id.
    async fn disable_subscription(&self, id: i64, reason: &str) -> Result<bool, StoreError>;

    /// Puts messages in the outbox and moves the subscription's cursors
    /// from `from` to `to` (change, event), in one transaction; a message
    /// whose id is there already is not added again. False (nothing
    /// written) when the cursors are not at `from` any more: another host
    /// filled the outbox meanwhile.
    async fn fill_outbox(
        &self,
        subscription: i64,
        from: (i64, i64),
        to: (i64, i64),
        messages: &[NewMessage],
    ) -> Result<bool, StoreError>;

    /// Messages due for an attempt at `now` (not delivered, not given up,
    /// subscription active), oldest first.
    async fn due_messages(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> Result<Vec<WebhookMessage>, StoreError>;

    /// Claims a due message for one attempt until `until` (its next
    /// attempt time moves there); false when another host claimed it.
    async fn claim_message(
        &self,
        message: &WebhookMessage,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError>;

    /// Records an attempt and its outcome, in one transaction.
    async fn record_delivery(
        &self,
        attempt: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
    ) -> Result<(), StoreError>;

    /// A subscription's messages, newest first.
    async fn messages(
        &self,
        subscription: i64,
        limit: u32,
    ) -> Result<Vec<WebhookMessage>, StoreError>;

    /// A message's attempts, oldest first.
    async fn attempts(&self, message: &str) -> Result<Vec<DeliveryAttempt>, StoreError>;

    /// Records an operational event once per `key`; false when it was
    /// recorded before.
    async fn record_event(
        &self,
        key: &str,
        event_type: &str,
        payload: &serde_json::Value,
    ) -> Result<bool, StoreError>;

    /// Operational events after `seq`, oldest first.
    async fn events_after(&self, seq: i64, limit: u32)
    -> Result<Vec<OperationalEvent>, StoreError>;
}

/// The whole store: every aggregate behind one object, for the wiring that
/// needs them all. Callers take the narrowest trait they use.
pub trait PersonStore: Persons + Installations + Jobs + Access + Follows + Webhooks {}

impl<T: Persons + Installations + Jobs + Access + Follows + Webhooks + ?Sized> PersonStore for T {}

/// All six traits, for code that holds a concrete store and uses several
/// aggregates (tests, benchmarks, tools): `use folkhub_store::prelude::*;`.
pub mod prelude {
    pub use crate::{Access, Follows, Installations, Jobs, PersonStore, Persons, Webhooks};
}
