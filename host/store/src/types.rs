use chrono::{DateTime, Utc};
use folkhub_core::MergedRecord;
use folkhub_core::contract::FoundPerson;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the store at {path} cannot be opened: {message}")]
    Open { path: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is stored (e.g. a name already taken).
    #[error("{0}")]
    Refused(String),
    #[error("stored data is corrupt ({what}): {message}")]
    Corrupt { what: String, message: String },
    /// A row with a column the store cannot decode (a type or value it
    /// never writes): the database was changed outside folkhub.
    #[error(
        "stored data is corrupt: column {column} cannot be read ({message}); the database was changed outside folkhub; restore from a backup or run `folkhub rebuild --check`"
    )]
    CorruptRow { column: String, message: String },
    /// A batch was not applied because another host got there first (the
    /// feed moved on from the page's cursor, or a work item's lease passed
    /// to another host). Nothing was written.
    #[error("{0}")]
    Fenced(String),
}

/// What one source said about a batch of persons.
#[derive(Debug, Clone)]
pub struct Batch {
    pub source: String,
    pub release: String,
    pub retrieved: DateTime<Utc>,
    pub persons: Vec<FoundPerson>,
    /// Move this connector's cursor to this value in the same transaction.
    pub cursor: Option<String>,
    /// Why, for the history (e.g. `sync folkeregister --changes`).
    pub reason: String,
    /// When several hosts share the database: the condition under which
    /// this batch may be committed.
    pub fence: Fence,
}

/// The condition a batch is committed under when several hosts share the
/// database, checked in the batch's own transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Fence {
    /// None (a lookup, or a single host's own run).
    #[default]
    None,
    /// A change-feed page read at cursor `from` (`None`: the feed's start):
    /// applied only while the stored cursor is still `from`, and written to
    /// the feed-page log book.
    Feed {
        from: Option<String>,
        host: String,
        run: i64,
    },
    /// A queued refresh batch: applied only while `host` holds its lease,
    /// and marked done with `counts` (the batch's register outcomes; the
    /// store adds what applying changed).
    Work {
        item: i64,
        host: String,
        counts: RunCounts,
    },
}

/// A batch of a full refresh queued for any host to claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    pub id: i64,
    pub run: i64,
    pub connector: String,
    pub ids: Vec<String>,
    /// How many times it was claimed (more than once: a host died or gave it up).
    pub attempts: i64,
}

/// Where a run's queued batches stand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkState {
    pub pending: u64,
    pub leased: u64,
    pub done: u64,
    /// The done batches' counts, summed.
    pub counts: RunCounts,
}

/// One change-feed page applied (the feed-page log book).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPage {
    pub connector: String,
    pub from: String,
    pub to: String,
    pub host: String,
    pub run: Option<i64>,
    pub persons: i64,
    pub at: DateTime<Utc>,
}

/// What applying a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub persons_created: u64,
    pub persons_changed: u64,
    pub persons_unchanged: u64,
    pub observations_added: u64,
    /// IDs that a record linked to a different person than its other IDs: not merged, listed for review.
    pub identity_conflicts: Vec<String>,
    /// Field conflicts this batch opened (sources of equal rank disagreeing).
    pub conflicts_opened: u64,
}

impl ApplyReport {
    pub fn add(&mut self, other: ApplyReport) {
        self.persons_created += other.persons_created;
        self.persons_changed += other.persons_changed;
        self.persons_unchanged += other.persons_unchanged;
        self.observations_added += other.observations_added;
        self.identity_conflicts.extend(other.identity_conflicts);
        self.conflicts_opened += other.conflicts_opened;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredId {
    pub scheme: String,
    pub value: String,
    pub active: bool,
}

/// A person as stored: identifiers and merged record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredPerson {
    pub key: i64,
    pub ids: Vec<StoredId>,
    pub record: MergedRecord,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// One change of a merged record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PersonChange {
    pub seq: i64,
    pub person: i64,
    pub changed_at: DateTime<Utc>,
    pub version: i64,
    /// path → {"from": old, "to": new}
    pub diff: serde_json::Value,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installation {
    pub connector: String,
    pub version: String,
    pub digest: String,
    pub contract: String,
    pub pinned: bool,
    pub installed_at: DateTime<Utc>,
    pub installed_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub connector: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub version_before: Option<String>,
    pub digest_before: Option<String>,
    pub version_after: Option<String>,
    pub digest_after: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Partial,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
    pub fn parse(text: &str) -> RunStatus {
        match text {
            "succeeded" => RunStatus::Succeeded,
            "partial" => RunStatus::Partial,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => RunStatus::Running,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RunCounts {
    pub fetched: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub created: u64,
    pub not_found: u64,
    pub errors: u64,
    pub feed_events: u64,
    /// Requests sent to the register (what the cost ledger counts).
    pub upstream_calls: u64,
    /// Persons not looked up because the register answered for them within
    /// the connector's cache TTL.
    pub cached: u64,
    /// Calls retried after a transient error (rate limit, 5xx, malformed).
    pub retries: u64,
    /// Field conflicts the run opened.
    pub conflicts_opened: u64,
    /// Persons the run will ask for, when known (progress of a running run).
    pub total: u64,
    /// Feed events about persons nobody follows (`follow.scope =
    /// "followed"`), skipped without a lookup.
    pub unfollowed: u64,
    /// Persons the retention sweep deleted (nobody followed them).
    pub deleted: u64,
}

impl RunCounts {
    /// Adds another part's counts (a refresh batch another host ran).
    pub fn add(&mut self, o: &RunCounts) {
        self.fetched += o.fetched;
        self.changed += o.changed;
        self.unchanged += o.unchanged;
        self.created += o.created;
        self.not_found += o.not_found;
        self.errors += o.errors;
        self.feed_events += o.feed_events;
        self.upstream_calls += o.upstream_calls;
        self.cached += o.cached;
        self.retries += o.retries;
        self.conflicts_opened += o.conflicts_opened;
        self.unfollowed += o.unfollowed;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobRun {
    pub id: i64,
    pub job: String,
    pub connector: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: RunStatus,
    pub counts: RunCounts,
    pub errors: Vec<String>,
    /// The host that ran it, when several share the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The connector's release the run used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// What a rebuild found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildReport {
    pub persons: u64,
    /// Persons whose stored record differed from the rebuilt one, with the
    /// paths that differed (`(provenance)` when only provenance did).
    pub differing: Vec<(i64, Vec<String>)>,
}

/// A manual override to add.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOverride {
    /// Any of the person's IDs (normalised).
    pub person_id: String,
    pub path: String,
    pub value: serde_json::Value,
    pub reason: String,
    pub actor: String,
    pub expires: Option<DateTime<Utc>>,
}

/// A manual override and its audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Override {
    pub id: i64,
    pub person: i64,
    pub path: String,
    pub value: serde_json::Value,
    pub reason: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_by: Option<String>,
    pub ended_reason: Option<String>,
}

/// An open conflict: sources of equal rank disagree about a field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Conflict {
    pub person: i64,
    pub path: String,
    /// `[{"source", "value"}]`, the chosen one first.
    pub candidates: serde_json::Value,
    pub opened_at: DateTime<Utc>,
}

/// Two persons merged because the register that issues their IDs said they
/// are one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityLink {
    pub id: i64,
    pub survivor: i64,
    pub merged: i64,
    pub source: String,
    pub reason: String,
    pub at: DateTime<Utc>,
    pub undone_at: Option<DateTime<Utc>>,
    pub undone_by: Option<String>,
    pub undone_reason: Option<String>,
}

/// A person reported without an ID who fits several stored persons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityReview {
    pub id: i64,
    /// The person created for the report.
    pub person: i64,
    /// The stored persons it might be.
    pub candidates: Vec<i64>,
    pub source: String,
    pub at: DateTime<Utc>,
}

/// Register calls of one run, priced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostEntry {
    pub at: DateTime<Utc>,
    pub connector: String,
    pub release: String,
    pub job: String,
    pub run: Option<i64>,
    pub calls: u64,
    pub cost_per_call: f64,
}

/// Calls and cost by month, connector and job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CostRow {
    /// `YYYY-MM`.
    pub month: String,
    pub connector: String,
    pub job: String,
    pub calls: u64,
    pub cost: f64,
}

/// A connector's circuit breaker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    pub connector: String,
    /// Failed runs in a row.
    pub failures: u32,
    pub opened_at: Option<DateTime<Utc>>,
    /// Runs are refused until then.
    pub open_until: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// How an API client presents its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// `X-API-Key: <secret>`.
    ApiKey,
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: Bearer <JWT>` from an OAuth2 issuer the operator
    /// configured (`[[server.oauth2]]`); the stored hash is of the issuer
    /// and the token's client id ([`ClientAuth::oauth2_subject`]).
    OAuth2,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::ApiKey => "api-key",
            ClientAuth::Bearer => "bearer",
            ClientAuth::OAuth2 => "oauth2",
        }
    }

    /// What an OAuth2 client's row keeps in place of a secret's hash: the
    /// SHA-256 of `oauth2`, the issuer's name and the token's client id.
    pub fn oauth2_subject(issuer: &str, client_id: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("oauth2\n{issuer}\n{client_id}").as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn parse(text: &str) -> Option<ClientAuth> {
        match text {
            "api-key" => Some(ClientAuth::ApiKey),
            "bearer" => Some(ClientAuth::Bearer),
            "oauth2" => Some(ClientAuth::OAuth2),
            _ => None,
        }
    }
}

/// A new API client; `secret_sha256` is the hash of the secret handed to
/// the client once (the store never sees the secret).
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub auth: ClientAuth,
    pub secret_sha256: String,
    pub basis: String,
    pub purpose: String,
    pub admin: bool,
    pub rate_limit: u32,
    /// Persons it may be sent per minute (every host counts its own).
    pub persons_per_minute: u32,
    /// It may have the registers asked about a person the store does not
    /// hold, or about a stored one now (each lookup is in the cost ledger
    /// under its name).
    pub may_fetch: bool,
    pub created_by: String,
}

/// An API client as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Client {
    pub id: i64,
    pub name: String,
    pub auth: ClientAuth,
    /// The name of its legal basis (a built-in profile or one of
    /// `[legal_bases]` in folkhub.toml).
    pub basis: String,
    pub purpose: String,
    /// May read the admin endpoints (connectors, jobs, costs, conflicts,
    /// overrides, the access log).
    pub admin: bool,
    /// Requests per second.
    pub rate_limit: u32,
    /// Persons it may be sent per minute.
    pub persons_per_minute: u32,
    /// May have the registers asked about a person now (fetch on miss,
    /// `POST /v1/persons/{id}/refresh`).
    #[serde(default)]
    pub may_fetch: bool,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
}

/// One read of one person's data, or one search, for the access log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessEntry {
    pub at: DateTime<Utc>,
    pub client: String,
    pub basis: String,
    pub purpose: String,
    /// The person read; 0 for a search's own entry (see `criteria`).
    pub person: i64,
    /// The route that answered, e.g. `GET /v1/persons/{id}`.
    pub endpoint: String,
    /// The field paths returned.
    pub fields: Vec<String>,
    /// A search's criteria (JSON text), on the search's own entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criteria: Option<String>,
}

impl AccessEntry {
    /// The person 0 a search's own entry names (keys start at 1).
    pub const SEARCH: i64 = 0;
}

/// An access log entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessRecord {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: AccessEntry,
    /// The entry's link in the hash chain (see `folkhub audit verify`);
    /// none for entries written before the chain existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// Which access log entries to read (all filters optional), oldest first
/// after `after`.
#[derive(Debug, Clone, Default)]
pub struct AccessQuery {
    pub client: Option<String>,
    pub person: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Entries with a sequence number above this.
    pub after: i64,
    pub limit: u32,
}

/// A person search: by the start of an identifier (at least the birth
/// date part) or by family name (prefix, any case) and birth date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search {
    IdPrefix(String),
    Name {
        family: String,
        given: Option<String>,
        birth_date: String,
    },
}

/// Whose list of followed persons a follow set is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FollowSet {
    /// A client's own persons (its pupils, its patients).
    Client(String),
    /// A named population several clients share.
    Population(String),
    /// The guardians of followed minors, kept by the sync
    /// (`follow.guardians`).
    Guardians,
}

impl FollowSet {
    /// The name the store keeps the set under.
    pub fn key(&self) -> String {
        match self {
            FollowSet::Client(name) => format!("client:{name}"),
            FollowSet::Population(name) => format!("population:{name}"),
            FollowSet::Guardians => "folkhub:guardians".into(),
        }
    }

    /// The set a stored name is.
    pub fn from_key(key: &str) -> Option<FollowSet> {
        if key == "folkhub:guardians" {
            return Some(FollowSet::Guardians);
        }
        let (kind, name) = key.split_once(':')?;
        match kind {
            "client" => Some(FollowSet::Client(name.into())),
            "population" => Some(FollowSet::Population(name.into())),
            _ => None,
        }
    }
}

impl std::fmt::Display for FollowSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key())
    }
}

/// A person ID to follow: its scheme and normalised value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FollowId {
    pub scheme: String,
    pub value: String,
}

/// One member of a follow set: the ID as it was given (normalised).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FollowMember {
    pub id: String,
    pub scheme: String,
    pub added_at: DateTime<Utc>,
    pub added_by: String,
}

/// What a change of a follow set did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FollowChange {
    /// IDs that were not members and are now.
    pub added: u64,
    /// IDs that were members already.
    pub already: u64,
    /// IDs that were members and are not any more.
    pub removed: u64,
    /// IDs asked to be removed that were not members.
    pub not_followed: u64,
}

/// A population several clients share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Population {
    pub name: String,
    pub purpose: String,
    /// The clients that may read and change its members.
    pub clients: Vec<String>,
    pub members: u64,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// What a retention sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetentionReport {
    /// Stored persons nobody followed that the sweep noted for the first time.
    pub noted: u64,
    /// Noted persons someone follows again (the note is gone).
    pub followed_again: u64,
    /// Noted persons still within the retention period.
    pub waiting: u64,
    /// Persons deleted (past the retention period).
    pub deleted: Vec<PersonDeletion>,
}

/// The audit record of one person deleted because nobody followed them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PersonDeletion {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
    /// The store's key the person had.
    pub person_key: i64,
    /// Since when nobody followed them.
    pub unfollowed_since: DateTime<Utc>,
    /// Keyed digests of their IDs (`folkhub follows deleted --id ID`
    /// checks one); the IDs themselves are gone.
    pub id_digests: Vec<String>,
    /// Observations and history entries deleted with them.
    pub observations: u64,
    pub changes: u64,
}

/// A webhook subscription to create.
#[derive(Debug, Clone)]
pub struct NewSubscription {
    pub client: String,
    pub url: String,
    /// `whsec_` and the base64 of the signing key.
    pub secret: String,
    pub events: Vec<String>,
}

/// A client's webhook subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    pub id: i64,
    pub client: String,
    pub url: String,
    /// Never shown after creation.
    #[serde(skip)]
    pub secret: String,
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    /// The last person change (`/v1/changes` seq) turned into messages.
    pub change_cursor: i64,
    /// The last operational event turned into messages.
    pub event_cursor: i64,
}

/// A message to put in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The idempotency id (`webhook-id`), derived from what it is about,
    /// so making it twice makes one message.
    pub id: String,
    pub event_type: String,
    pub payload: String,
}

/// A message in the outbox, with where its delivery stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookMessage {
    pub id: String,
    pub subscription: i64,
    pub event_type: String,
    /// The JSON body sent.
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Given up on (after `webhooks.give_up_after`).
    pub failed_at: Option<DateTime<Utc>>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
}

/// One delivery attempt of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryAttempt {
    pub message: String,
    pub at: DateTime<Utc>,
    /// The host that sent it (several hosts share the outbox).
    pub host: Option<String>,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// What became of a delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// It failed; try again at this time.
    Retry(DateTime<Utc>),
    /// It failed and the message is given up.
    GaveUp,
}

/// An operational event admins can subscribe to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationalEvent {
    pub seq: i64,
    pub key: String,
    pub event_type: String,
    pub at: DateTime<Utc>,
    pub payload: serde_json::Value,
}
