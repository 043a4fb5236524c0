//! The SQL implementation of [`PersonStore`], one code path for both
//! backends: SQLite, the embedded default (WAL, one writer at a time), and
//! PostgreSQL, for several hosts on one database. Statements are the same
//! text on both (`$N` parameters, which SQLite reads too); the few places
//! where the dialects differ ask [`Backend`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use folkhub_core::MergedRecord;
use folkhub_core::contract::FoundPerson;
use folkhub_core::merge::{self, Candidate, MergeRules};
use serde_json::{Value, json};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use tokio::sync::Mutex;

use crate::*;

/// A schema change: its version, name and SQL.
type Migration = (i64, &'static str, &'static str);

const SQLITE_MIGRATIONS: &[Migration] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "overrides and conflicts",
        include_str!("../migrations/sqlite/0002_overrides_conflicts.sql"),
    ),
    (
        3,
        "clients",
        include_str!("../migrations/sqlite/0003_clients.sql"),
    ),
    (
        4,
        "leases and work queue",
        include_str!("../migrations/sqlite/0004_leases.sql"),
    ),
    (
        5,
        "server secrets",
        include_str!("../migrations/sqlite/0005_server_secrets.sql"),
    ),
];

/// Migrations of SQLite's access-log database.
const SQLITE_ACCESS_MIGRATIONS: &[Migration] = &[
    (
        1,
        "access log",
        include_str!("../migrations/sqlite-access/0001_access_log.sql"),
    ),
    (
        2,
        "tamper-evident access log",
        include_str!("../migrations/sqlite-access/0002_tamper_evident.sql"),
    ),
];

/// PostgreSQL: the same versions as SQLite; the access log lives in the
/// same database (version 3, with the clients).
const POSTGRES_MIGRATIONS: &[Migration] = &[
    (
        1,
        "initial",
        include_str!("../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "overrides and conflicts",
        include_str!("../migrations/postgres/0002_overrides_conflicts.sql"),
    ),
    (
        3,
        "clients and access log",
        include_str!("../migrations/postgres/0003_clients_access_log.sql"),
    ),
    (
        4,
        "leases and work queue",
        include_str!("../migrations/postgres/0004_leases.sql"),
    ),
    (
        5,
        "server secrets and tamper-evident access log",
        include_str!("../migrations/postgres/0005_tamper_evident.sql"),
    ),
];

/// The key of PostgreSQL's transaction-level advisory lock that store
/// writes take: writes from every host are serialised as SQLite's are, so
/// resolving and merging persons never races between hosts.
const PG_WRITE_LOCK: i64 = 0x0066_6f6c_6b68_7562;

/// The advisory lock the access log's chain is extended under (its own:
/// access-log commits do not wait for a sync's transaction).
const PG_ACCESS_LOCK: i64 = 0x0066_6f6c_6b61_6364;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names.
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Open {
                path: redact(url),
                message: "a store URL starts with sqlite:// (a file) or postgres:// (a server)"
                    .into(),
            })
        }
    }

    fn migrations(self) -> &'static [Migration] {
        match self {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        }
    }

    /// The columns of a merged record with its IDs as a JSON array (`ids`),
    /// for queries that read whole persons.
    fn person_columns(self) -> &'static str {
        match self {
            Backend::Sqlite => {
                "m.person_id, m.record, m.version, m.updated_at,
                 (SELECT json_group_array(json_array(scheme, value, CASE WHEN active THEN json('true') ELSE json('false') END)) FROM
                    (SELECT scheme, value, active FROM identifiers
                     WHERE person_id = m.person_id ORDER BY active DESC, first_seen)) AS ids"
            }
            Backend::Postgres => {
                "m.person_id, m.record, m.version, m.updated_at,
                 (SELECT COALESCE(json_agg(json_build_array(scheme, value, active) ORDER BY active DESC, first_seen), '[]')::text
                  FROM identifiers WHERE person_id = m.person_id) AS ids"
            }
        }
    }

    /// The elements of a JSON array parameter as rows with a text
    /// column `value`.
    fn json_values(self, param: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_each({param})"),
            Backend::Postgres => format!("json_array_elements_text({param}::json)"),
        }
    }

    /// The value of a field of a merged record (`record` the column).
    fn field(self, record: &str, path: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_extract({record}, '$.fields.\"{path}\".value')"),
            Backend::Postgres => format!("({record}::jsonb #>> '{{fields,{path},value}}')"),
        }
    }

    /// The position of a text in another (1 = at the start, 0 = not in it).
    fn position(self) -> &'static str {
        match self {
            Backend::Sqlite => "instr",
            Backend::Postgres => "strpos",
        }
    }
}

/// A URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// `($1, $2, $3), ($4, $5, $6)`: placeholders for a multi-row VALUES.
fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A yes/no column: SQLite keeps it as an integer, PostgreSQL as a boolean.
fn flag(row: &AnyRow, column: &str) -> bool {
    row.try_get::<bool, _>(column)
        .or_else(|_| row.try_get::<i64, _>(column).map(|v| v != 0))
        .unwrap_or(false)
}

pub struct SqlStore {
    backend: Backend,
    pool: AnyPool,
    /// The access log's database: SQLite's own file beside the store (see
    /// [`SqlStore::access_path`]), PostgreSQL's the same database.
    access: AnyPool,
    /// Its writer.
    access_writer: Mutex<()>,
    rules: MergeRules,
    /// One writer per host (SQLite has one writer; queueing here avoids
    /// busy errors; on PostgreSQL the advisory lock orders the hosts).
    writer: Mutex<()>,
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt {
            what: format!("timestamp {text:?}"),
            message: e.to_string(),
        })
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// What opening a store does about its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Apply pending migrations first.
    Migrate,
    /// Refuse a database that is not at this build's version, saying what
    /// to run.
    RequireCurrent,
    /// Neither (`folkhub migrate` looks first).
    AsIs,
}

/// What `folkhub migrate` did, or would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    /// The database's schema version before (0: empty).
    pub before: i64,
    /// The version this build of folkhub writes.
    pub current: i64,
    /// The migrations applied (version, name).
    pub applied: Vec<(i64, String)>,
    /// The migrations this build has that the database has not had.
    pub pending: Vec<(i64, String)>,
}

impl SqlStore {
    /// Opens (creating if needed) a SQLite database file and migrates it.
    pub async fn open(path: &Path, rules: MergeRules) -> Result<SqlStore, StoreError> {
        Self::open_url(
            &format!("sqlite://{}", path.display()),
            rules,
            OpenMode::Migrate,
        )
        .await
    }

    /// Opens the store a URL names (`sqlite://PATH` or
    /// `postgres://USER@HOST:PORT/DB`), migrating or checking its schema
    /// as `mode` says.
    pub async fn open_url(
        url: &str,
        rules: MergeRules,
        mode: OpenMode,
    ) -> Result<SqlStore, StoreError> {
        let backend = Backend::of_url(url)?;
        let (pool, access) = match backend {
            Backend::Sqlite => {
                let path = sqlite_path(url);
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?;
                }
                // Person data and the access log: readable by the service's
                // own user only (SQLite gives its -wal and -shm files the
                // database file's mode).
                for file in [path.clone(), Self::access_path(&path)] {
                    private_file(&file).map_err(|e| StoreError::Open {
                        path: file.display().to_string(),
                        message: format!("cannot make it readable by its owner only: {e}"),
                    })?;
                }
                (
                    connect(backend, url).await?,
                    connect(
                        backend,
                        &format!("sqlite://{}", Self::access_path(&path).display()),
                    )
                    .await?,
                )
            }
            Backend::Postgres => {
                let pool = connect(backend, url).await?;
                (pool.clone(), pool)
            }
        };
        let store = SqlStore {
            backend,
            pool,
            access,
            access_writer: Mutex::new(()),
            rules,
            writer: Mutex::new(()),
        };
        if mode == OpenMode::Migrate {
            store.migrate().await?;
        } else if mode == OpenMode::RequireCurrent {
            let state = store.schema().await?;
            if state.before != state.current {
                return Err(StoreError::Open {
                    path: redact(url),
                    message: format!(
                        "the database is at schema version {}, this folkhub uses version {}: run `folkhub migrate` (or set store.migrate = \"on-start\")",
                        state.before, state.current
                    ),
                });
            }
        }
        Ok(store)
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the migrations the database has not had yet.
    pub async fn migrate(&self) -> Result<SchemaState, StoreError> {
        let before = self.schema().await?.before;
        let mut applied = {
            let _w = self.writer.lock().await;
            migrate(&self.pool, self.backend, self.backend.migrations()).await?
        };
        if self.backend == Backend::Sqlite {
            let _w = self.access_writer.lock().await;
            applied.extend(migrate(&self.access, self.backend, SQLITE_ACCESS_MIGRATIONS).await?);
        }
        Ok(SchemaState {
            before,
            current: self.backend.migrations().len() as i64,
            applied,
            pending: vec![],
        })
    }

    /// The database's schema version and this build's.
    pub async fn schema(&self) -> Result<SchemaState, StoreError> {
        let current = self.backend.migrations().len() as i64;
        let before = schema_version(&self.pool).await?;
        if before > current {
            return Err(StoreError::Open {
                path: format!("{:?} store", self.backend),
                message: format!(
                    "the database is at schema version {before}, written by a newer folkhub than this one (version {current}); run that version or newer"
                ),
            });
        }
        Ok(SchemaState {
            before,
            current,
            applied: vec![],
            pending: self
                .backend
                .migrations()
                .iter()
                .filter(|(v, _, _)| *v > before)
                .map(|(v, name, _)| (*v, name.to_string()))
                .collect(),
        })
    }

    /// Where the access log of the SQLite store at `path` lives: beside it,
    /// `folkhub.db` → `folkhub-access.db`. Back both files up together.
    pub fn access_path(path: &Path) -> std::path::PathBuf {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "folkhub".into());
        path.with_file_name(format!("{stem}-access.db"))
    }

    /// A write transaction. On SQLite, `BEGIN IMMEDIATE` takes the write
    /// lock at the start, so the busy timeout applies when another process
    /// writes (a deferred transaction that read first and then writes fails
    /// at once when someone else committed in between: `folkhub sync`
    /// beside a busy `folkhub serve` writing its access log did). On
    /// PostgreSQL the write lock is an advisory lock held to the commit.
    async fn write_tx(&self) -> Result<Transaction<'static, Any>, StoreError> {
        begin_write(&self.pool, self.backend).await
    }

    /// Persons by their (surviving) keys, in one query. Many records are
    /// parsed on two threads (a batch of 1,000 spends most of its time in
    /// JSON parsing).
    async fn load_persons(&self, keys: &[i64]) -> Result<BTreeMap<i64, StoredPerson>, StoreError> {
        if keys.is_empty() {
            return Ok(BTreeMap::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {} FROM {} j JOIN merged m ON m.person_id = CAST(j.value AS BIGINT)",
            self.backend.person_columns(),
            self.backend.json_values("$1"),
        ))
        .bind(json!(keys).to_string())
        .fetch_all(&self.pool)
        .await?;
        let parse = |rows: Vec<AnyRow>| -> Result<Vec<StoredPerson>, StoreError> {
            rows.iter().map(stored_person).collect()
        };
        let persons = if rows.len() < 200 {
            parse(rows)?
        } else {
            let mut rows = rows;
            let second = rows.split_off(rows.len() / 2);
            let other = tokio::task::spawn_blocking(move || parse(second));
            let mut first = tokio::task::spawn_blocking(move || parse(rows))
                .await
                .map_err(|e| corrupt("merged records", e))??;
            first.extend(other.await.map_err(|e| corrupt("merged records", e))??);
            first
        };
        Ok(persons.into_iter().map(|p| (p.key, p)).collect())
    }
}

/// The file a `sqlite://PATH` URL names.
pub fn sqlite_path(url: &str) -> std::path::PathBuf {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    std::path::PathBuf::from(rest.split('?').next().unwrap_or(rest))
}

fn client_from(row: &AnyRow) -> Result<Client, StoreError> {
    let auth: String = row.get("auth");
    let opt_ts = |name: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        row.get::<Option<&str>, _>(name).map(parse_ts).transpose()
    };
    Ok(Client {
        id: row.get("id"),
        name: row.get("name"),
        auth: ClientAuth::parse(&auth).ok_or_else(|| corrupt("client auth", &auth))?,
        basis: row.get("basis"),
        purpose: row.get("purpose"),
        admin: flag(row, "admin"),
        rate_limit: row
            .try_get::<i64, _>("rate_limit")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        persons_per_minute: row
            .try_get::<i64, _>("persons_per_minute")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        created_at: parse_ts(row.get::<&str, _>("created_at"))?,
        created_by: row.get("created_by"),
        revoked_at: opt_ts("revoked_at")?,
        revoked_by: row.get("revoked_by"),
        revoked_reason: row.get("revoked_reason"),
    })
}

/// A person from a row of [`Backend::person_columns`].
fn stored_person(row: &AnyRow) -> Result<StoredPerson, StoreError> {
    let ids: Vec<(String, String, bool)> =
        serde_json::from_str(row.get::<&str, _>("ids")).map_err(|e| corrupt("identifiers", e))?;
    Ok(StoredPerson {
        key: row.get("person_id"),
        ids: ids
            .into_iter()
            .map(|(scheme, value, active)| StoredId {
                scheme,
                value,
                active,
            })
            .collect(),
        record: serde_json::from_str(row.get::<&str, _>("record"))
            .map_err(|e| corrupt("merged record", e))?,
        version: row.get("version"),
        updated_at: parse_ts(row.get::<&str, _>("updated_at"))?,
    })
}

/// Opens a pool on one database. SQLite: the file is created if missing,
/// WAL, normal sync, foreign keys, a busy timeout for other processes'
/// writers. PostgreSQL: a server.
async fn connect(backend: Backend, url: &str) -> Result<AnyPool, StoreError> {
    sqlx::any::install_default_drivers();
    let open_error = |e: &dyn std::fmt::Display| StoreError::Open {
        path: redact(url),
        message: e.to_string(),
    };
    match backend {
        Backend::Sqlite => {
            // Readers run side by side (WAL); writers queue on the store's
            // mutexes. No ping before each use: the file is local, and the
            // ping is a round trip to the connection's worker thread per
            // statement (a third of the API's time per read in a profile).
            let url = format!("sqlite://{}?mode=rwc", sqlite_path(url).display());
            AnyPoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                        )
                        .await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await
                .map_err(|e| open_error(&e))
        }
        Backend::Postgres => AnyPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(|e| open_error(&e)),
    }
}

/// Creates `path` empty with mode 0600 when missing, and takes group and
/// other permissions off when it exists (a store made by an older folkhub
/// was world-readable).
fn private_file(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let mode = std::fs::metadata(path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// A write transaction on a pool (see [`SqlStore::write_tx`]).
async fn begin_write(
    pool: &AnyPool,
    backend: Backend,
) -> Result<Transaction<'static, Any>, StoreError> {
    begin_locked(pool, backend, PG_WRITE_LOCK).await
}

/// A write transaction holding the write lock `key` on PostgreSQL.
async fn begin_locked(
    pool: &AnyPool,
    backend: Backend,
    key: i64,
) -> Result<Transaction<'static, Any>, StoreError> {
    match backend {
        Backend::Sqlite => Ok(pool.begin_with("BEGIN IMMEDIATE").await?),
        Backend::Postgres => {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(key)
                .execute(&mut *tx)
                .await?;
            Ok(tx)
        }
    }
}

/// The highest migration a database has had (0 when none).
async fn schema_version(pool: &AnyPool) -> Result<i64, StoreError> {
    match sqlx::query_scalar::<_, i64>(
        "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM folkhub_migrations",
    )
    .fetch_one(pool)
    .await
    {
        Ok(v) => Ok(v),
        // No migrations table: an empty database.
        Err(sqlx::Error::Database(e)) if e.message().contains("folkhub_migrations") => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Applies the migrations a database has not had yet, each in its own
/// write transaction (hosts starting together apply each once) with its
/// record in `folkhub_migrations`. Returns those applied.
async fn migrate(
    pool: &AnyPool,
    backend: Backend,
    migrations: &[Migration],
) -> Result<Vec<(i64, String)>, StoreError> {
    let mut applied = Vec::new();
    for (version, name, sql) in migrations {
        let mut tx = begin_write(pool, backend).await?;
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS folkhub_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM folkhub_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_some() {
            continue;
        }
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO folkhub_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(name)
        .bind(ts(now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        applied.push((*version, name.to_string()));
    }
    Ok(applied)
}

/// Finds or creates the person a record belongs to, and links its IDs.
/// Finds (or creates) the person a record is about. IDs the record names
/// that we hold for another person are returned as `(id, owner)`; the
/// caller decides whether the register may link them.
async fn resolve(
    tx: &mut Transaction<'_, Any>,
    rules: &MergeRules,
    source: &str,
    person: &FoundPerson,
    at: &str,
) -> Result<(i64, bool, Vec<(String, String, i64)>), StoreError> {
    let mut owners: BTreeMap<String, i64> = BTreeMap::new();
    for id in &person.ids {
        if let Some(owner) =
            sqlx::query_scalar::<_, i64>("SELECT person_id FROM identifiers WHERE value = $1")
                .bind(&id.value)
                .fetch_optional(&mut **tx)
                .await?
        {
            owners.insert(id.value.clone(), owner);
        }
    }
    // Prefer the person that holds the active ID; else any holder.
    let active = person.ids.iter().find(|i| i.active).or(person.ids.first());
    let mut chosen = active
        .and_then(|a| owners.get(&a.value).copied())
        .or_else(|| owners.values().next().copied());
    // No ID at all (a relative known by name): the one stored person with
    // the same given name, family name and birth date, if exactly one.
    let mut review = Vec::new();
    if person.ids.is_empty() {
        let text = |path: &str| {
            person
                .fields
                .iter()
                .find(|f| f.path == path)
                .and_then(|f| f.value.as_str())
                .map(str::to_uppercase)
        };
        if let (Some(given), Some(family), Some(born)) =
            (text("name.given"), text("name.family"), text("birth.date"))
        {
            let b = dialect(tx);
            let fits: Vec<i64> = sqlx::query_scalar(&format!(
                "SELECT person_id FROM merged
                 WHERE {} = $1 AND upper({}) = $2 AND upper({}) = $3
                 ORDER BY person_id",
                b.field("record", "birth.date"),
                b.field("record", "name.family"),
                b.field("record", "name.given"),
            ))
            .bind(&born)
            .bind(&family)
            .bind(&given)
            .fetch_all(&mut **tx)
            .await?;
            match fits.as_slice() {
                [one] => chosen = Some(*one),
                [] => {}
                many => review = many.to_vec(),
            }
        }
    }
    let (key, created) = match chosen {
        Some(key) => (key, false),
        None => {
            let key: i64 =
                sqlx::query_scalar("INSERT INTO persons (created_at) VALUES ($1) RETURNING id")
                    .bind(at)
                    .fetch_one(&mut **tx)
                    .await?;
            (key, true)
        }
    };
    if !review.is_empty() {
        sqlx::query(
            "INSERT INTO identity_reviews (person_id, candidates, source, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key)
        .bind(id_list(&review))
        .bind(source)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    let mut conflicting = Vec::new();
    for id in &person.ids {
        match owners.get(&id.value) {
            Some(owner) if *owner != key => {
                conflicting.push((id.scheme.clone(), id.value.clone(), *owner));
            }
            Some(_) => set_active(tx, rules, source, id, at).await?,
            None => {
                sqlx::query("INSERT INTO identifiers (value, scheme, person_id, active, source, first_seen, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                    .bind(&id.value)
                    .bind(&id.scheme)
                    .bind(key)
                    .bind(id.active)
                    .bind(source)
                    .bind(at)
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok((key, created, conflicting))
}

/// Only the register that issues an ID (or, for IDs no authority is known
/// for, the source that announced it) says whether it is still in use.
async fn set_active(
    tx: &mut Transaction<'_, Any>,
    rules: &MergeRules,
    source: &str,
    id: &folkhub_core::observation::SourceId,
    at: &str,
) -> Result<(), StoreError> {
    if rules.issues(source, &id.scheme) {
        sqlx::query("UPDATE identifiers SET active = $1, source = $2, updated_at = $3 WHERE value = $4 AND (active <> $5 OR source <> $6)")
            .bind(id.active)
            .bind(source)
            .bind(at)
            .bind(&id.value)
            .bind(id.active)
            .bind(source)
            .execute(&mut **tx)
            .await?;
    } else {
        sqlx::query("UPDATE identifiers SET active = $1, updated_at = $2 WHERE value = $3 AND active <> $4 AND source = $5")
            .bind(id.active)
            .bind(at)
            .bind(&id.value)
            .bind(id.active)
            .bind(source)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Makes `current_observations` of a person agree with the log: each
/// source's latest statement per field (by retrieval time, then order).
async fn rederive_current(tx: &mut Transaction<'_, Any>, key: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM current_observations WHERE person_id = $1")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO current_observations (person_id, source, path, observation_id, value, labels, release, upstream_version, effective_at, retrieved_at)
         SELECT person_id, source, path, id, value, labels, release, upstream_version, effective_at, retrieved_at FROM (
           SELECT o.*, ROW_NUMBER() OVER (PARTITION BY source, path ORDER BY retrieved_at DESC, id DESC) AS rn
           FROM observations o WHERE person_id = $1) AS latest
         WHERE rn = 1 AND value IS NOT NULL",
    )
    .bind(key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `source_refresh` of a person from the log (the latest statement time
/// per source), after observations moved between persons.
async fn rederive_refresh(tx: &mut Transaction<'_, Any>, key: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM source_refresh WHERE person_id = $1")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO source_refresh (person_id, source, retrieved_at)
         SELECT person_id, source, MAX(retrieved_at) FROM observations WHERE person_id = $1 GROUP BY person_id, source",
    )
    .bind(key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn id_list(values: &[i64]) -> String {
    json!(values).to_string()
}

struct Current {
    value: String,
    labels: String,
    effective: Option<String>,
}

async fn load_candidates(
    tx: &mut Transaction<'_, Any>,
    key: i64,
) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
    let rows = sqlx::query(
        "SELECT co.source, co.path, co.value, co.labels, co.release, co.upstream_version, co.effective_at,
                COALESCE(sr.retrieved_at, co.retrieved_at) AS retrieved_at
         FROM current_observations co
         LEFT JOIN source_refresh sr ON sr.person_id = co.person_id AND sr.source = co.source
         WHERE co.person_id = $1",
    )
    .bind(key)
    .fetch_all(&mut **tx)
    .await?;
    candidates_from_rows(rows)
}

/// Statements read from the log or its index, by path.
/// Checks a batch's fence inside its transaction (after the write lock, so
/// no other host commits in between): refused batches write nothing.
async fn fence_check(tx: &mut Transaction<'_, Any>, batch: &Batch) -> Result<(), StoreError> {
    match &batch.fence {
        Fence::None => Ok(()),
        Fence::Feed { from, .. } => {
            let stored: Option<String> =
                sqlx::query_scalar("SELECT cursor FROM cursors WHERE connector = $1")
                    .bind(&batch.source)
                    .fetch_optional(&mut **tx)
                    .await?;
            if stored != *from {
                return Err(StoreError::Fenced(format!(
                    "the {} feed moved on from {} to {} (another host applied that page); this page is not applied again",
                    batch.source,
                    from.as_deref().unwrap_or("its start"),
                    stored.as_deref().unwrap_or("its start"),
                )));
            }
            Ok(())
        }
        Fence::Work { item, host, .. } => {
            let holder: Option<(String, Option<String>)> =
                sqlx::query("SELECT state, holder FROM work_items WHERE id = $1")
                    .bind(item)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| (r.get("state"), r.get("holder")));
            match holder {
                Some((state, Some(h))) if state == "leased" && h == *host => Ok(()),
                Some((state, h)) => Err(StoreError::Fenced(format!(
                    "refresh batch #{item} is {state} by {} now (this host's lease passed); not applied again",
                    h.as_deref().unwrap_or("nobody")
                ))),
                None => Err(StoreError::NotFound(format!("no refresh batch #{item}"))),
            }
        }
    }
}

/// Writes what a fenced batch did, in its transaction: the feed page into
/// the log book, or the work item done with its counts.
async fn fence_record(
    tx: &mut Transaction<'_, Any>,
    batch: &Batch,
    report: &ApplyReport,
) -> Result<(), StoreError> {
    match &batch.fence {
        Fence::None => {}
        // A look at a feed with nothing new is not a page.
        Fence::Feed { from, .. }
            if batch.persons.is_empty() && from.as_deref() == batch.cursor.as_deref() => {}
        Fence::Feed { from, host, run } => {
            sqlx::query("INSERT INTO feed_pages (connector, cursor_from, cursor_to, host, run_id, persons, at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(&batch.source)
                .bind(from.as_deref().unwrap_or(""))
                .bind(batch.cursor.as_deref().unwrap_or(""))
                .bind(host)
                .bind(run)
                .bind(batch.persons.len() as i64)
                .bind(ts(now()))
                .execute(&mut **tx)
                .await?;
        }
        Fence::Work { item, counts, .. } => {
            let mut counts = counts.clone();
            counts.changed += report.persons_changed;
            counts.created += report.persons_created;
            counts.unchanged += report.persons_unchanged;
            counts.conflicts_opened += report.conflicts_opened;
            sqlx::query(
                "UPDATE work_items SET state = 'done', done_at = $1, counts = $2 WHERE id = $3",
            )
            .bind(ts(now()))
            .bind(serde_json::to_string(&counts).map_err(|e| corrupt("counts", e))?)
            .bind(item)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// The backend a transaction runs on.
fn dialect(conn: &sqlx::AnyConnection) -> Backend {
    if conn.backend_name() == "PostgreSQL" {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// Statements read from the log or its index, by path.
fn candidates_from_rows(rows: Vec<AnyRow>) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
    let mut out: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for row in rows {
        let path: String = row.get("path");
        let value: String = row.get("value");
        let labels: String = row.get("labels");
        let effective: Option<String> = row.get("effective_at");
        out.entry(path).or_default().push(Candidate {
            source: row.get("source"),
            release: row.get("release"),
            upstream_version: row.get("upstream_version"),
            value: serde_json::from_str(&value).map_err(|e| corrupt("observation value", e))?,
            labels: serde_json::from_str(&labels).map_err(|e| corrupt("observation labels", e))?,
            effective: effective.as_deref().map(parse_ts).transpose()?,
            retrieved: parse_ts(row.get::<&str, _>("retrieved_at"))?,
        });
    }
    Ok(out)
}

/// A history row.
fn change_from(r: &AnyRow) -> Result<PersonChange, StoreError> {
    Ok(PersonChange {
        seq: r.get("seq"),
        person: r.get("person_id"),
        changed_at: parse_ts(r.get::<&str, _>("changed_at"))?,
        version: r.get("version"),
        diff: serde_json::from_str(r.get::<&str, _>("diff"))
            .map_err(|e| corrupt("history diff", e))?,
        reason: r.get("reason"),
    })
}

/// What a person's merged record is computed from: each source's current
/// statement per field, and the open overrides.
async fn current_candidates(
    tx: &mut Transaction<'_, Any>,
    key: i64,
) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
    let mut out = load_candidates(tx, key).await?;
    override_candidates(tx, key, &mut out).await?;
    Ok(out)
}

/// Open overrides of a person as candidates (source `override`).
async fn override_candidates(
    tx: &mut Transaction<'_, Any>,
    key: i64,
    out: &mut BTreeMap<String, Vec<Candidate>>,
) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT id, path, value, created_at FROM overrides WHERE person_id = $1 AND ended_at IS NULL ORDER BY id",
    )
    .bind(key)
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let path: String = row.get("path");
        let list = out.entry(path).or_default();
        // The newest open override of a path wins: keep one.
        list.retain(|c| c.source != merge::OVERRIDE);
        list.push(Candidate {
            source: merge::OVERRIDE.into(),
            release: format!("#{}", row.get::<i64, _>("id")),
            upstream_version: String::new(),
            value: serde_json::from_str(row.get::<&str, _>("value"))
                .map_err(|e| corrupt("override value", e))?,
            labels: vec![],
            effective: None,
            retrieved: parse_ts(row.get::<&str, _>("created_at"))?,
        });
    }
    Ok(())
}

/// Each source's latest statement per field, read from the observation log
/// itself (not from `current_observations`): the log is the source of truth.
async fn candidates_from_log(
    tx: &mut Transaction<'_, Any>,
    key: i64,
) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
    let rows = sqlx::query(
        "SELECT o.source, o.path, o.value, o.labels, o.release, o.upstream_version, o.effective_at,
                COALESCE(sr.retrieved_at, o.retrieved_at) AS retrieved_at
         FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY source, path ORDER BY retrieved_at DESC, id DESC) AS rn
               FROM observations WHERE person_id = $1) o
         LEFT JOIN source_refresh sr ON sr.person_id = $2 AND sr.source = o.source
         WHERE o.rn = 1 AND o.value IS NOT NULL",
    )
    .bind(key)
    .bind(key)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = candidates_from_rows(rows)?;
    for list in out.values_mut() {
        list.sort_by(|a, b| a.source.cmp(&b.source));
    }
    Ok(out)
}

/// The field-level difference between two merged records.
fn diff(before: &MergedRecord, after: &MergedRecord) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let paths: BTreeSet<&String> = before.fields.keys().chain(after.fields.keys()).collect();
    for path in paths {
        let from = before.fields.get(path).map(|f| (&f.value, &f.labels));
        let to = after.fields.get(path).map(|f| (&f.value, &f.labels));
        if from != to {
            // The labels of both sides travel with the entry, so a reader
            // without the basis never sees a value that was protected then.
            let mut entry = json!({
                "from": from.map(|f| f.0.clone()),
                "to": to.map(|f| f.0.clone()),
                "source": after.fields.get(path).map(|f| f.provenance.source.clone()),
            });
            for (key, side) in [("from_labels", from), ("to_labels", to)] {
                if let Some((_, labels)) = side
                    && !labels.is_empty()
                {
                    entry[key] = json!(labels);
                }
            }
            out.insert(path.clone(), entry);
        }
    }
    out
}

impl SqlStore {
    async fn apply_person(
        &self,
        tx: &mut Transaction<'_, Any>,
        batch: &Batch,
        person: &FoundPerson,
        report: &mut ApplyReport,
    ) -> Result<(), StoreError> {
        let at = ts(batch.retrieved);
        let (mut key, created, conflicting) =
            resolve(tx, &self.rules, &batch.source, person, &at).await?;
        if created {
            report.persons_created += 1;
        }
        if !conflicting.is_empty() {
            key = self
                .link_or_report(tx, key, &batch.source, person, conflicting, &at, report)
                .await?;
        }
        // A statement older than the one this source already gave for the
        // person is stale (e.g. a slow batch finishing after a newer one):
        // it does not replace the newer one, so the record does not depend
        // on the order statements arrive in.
        let last: Option<String> = sqlx::query_scalar(
            "SELECT retrieved_at FROM source_refresh WHERE person_id = $1 AND source = $2",
        )
        .bind(key)
        .bind(&batch.source)
        .fetch_optional(&mut **tx)
        .await?;
        if last.is_some_and(|last| last > at) {
            report.persons_unchanged += 1;
            return Ok(());
        }
        let rows = sqlx::query("SELECT path, value, labels, effective_at FROM current_observations WHERE person_id = $1 AND source = $2")
            .bind(key)
            .bind(&batch.source)
            .fetch_all(&mut **tx)
            .await?;
        let mut current: BTreeMap<String, Current> = rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<String, _>("path"),
                    Current {
                        value: r.get("value"),
                        labels: r.get("labels"),
                        effective: r.get("effective_at"),
                    },
                )
            })
            .collect();
        let mut seen = BTreeSet::new();
        // (path, value, labels, effective) of the statements that are new.
        let mut fresh: Vec<(&str, String, String, Option<String>)> = Vec::new();
        for field in &person.fields {
            if !seen.insert(field.path.clone()) {
                continue; // a connector sent a path twice: the first wins
            }
            if field.value.is_null() {
                continue; // no value: retracted below if the source had one
            }
            let value = field.value.to_string();
            let labels = serde_json::to_string(&field.labels).map_err(|e| corrupt("labels", e))?;
            let effective = field.effective.map(ts);
            if let Some(c) = current.remove(&field.path)
                && c.value == value
                && c.labels == labels
                && c.effective == effective
            {
                continue;
            }
            fresh.push((field.path.as_str(), value, labels, effective));
        }
        if !fresh.is_empty() {
            // One multi-row insert into the log and one into its index,
            // which points at the log rows by the ids the first returns.
            report.observations_added += fresh.len() as u64;
            let rows = placeholders(fresh.len(), 9);
            let sql = format!(
                "INSERT INTO observations (person_id, path, value, labels, source, release, upstream_version, effective_at, retrieved_at) VALUES {rows} RETURNING id, path"
            );
            let mut q = sqlx::query(&sql);
            for (path, value, labels, effective) in &fresh {
                q = q
                    .bind(key)
                    .bind(*path)
                    .bind(value)
                    .bind(labels)
                    .bind(&batch.source)
                    .bind(&batch.release)
                    .bind(&person.upstream_version)
                    .bind(effective)
                    .bind(&at);
            }
            let ids: BTreeMap<String, i64> = q
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(|r| (r.get("path"), r.get("id")))
                .collect();
            let rows = placeholders(fresh.len(), 10);
            let sql = format!(
                "INSERT INTO current_observations (person_id, source, path, observation_id, value, labels, release, upstream_version, effective_at, retrieved_at) VALUES {rows}
                 ON CONFLICT (person_id, source, path) DO UPDATE SET observation_id = excluded.observation_id, value = excluded.value, labels = excluded.labels,
                 release = excluded.release, upstream_version = excluded.upstream_version, effective_at = excluded.effective_at, retrieved_at = excluded.retrieved_at"
            );
            let mut q = sqlx::query(&sql);
            for (path, value, labels, effective) in &fresh {
                let id = *ids
                    .get(*path)
                    .ok_or_else(|| corrupt("observation ids", path))?;
                q = q
                    .bind(key)
                    .bind(&batch.source)
                    .bind(*path)
                    .bind(id)
                    .bind(value)
                    .bind(labels)
                    .bind(&batch.release)
                    .bind(&person.upstream_version)
                    .bind(effective)
                    .bind(&at);
            }
            q.execute(&mut **tx).await?;
        }
        // Whatever the source said before and no longer says is retracted,
        // where the answer speaks for it: a field the answer does not cover
        // (a narrower scope, a censored field, a product without it) keeps
        // its stored value. A register that starts protecting a person and
        // stops sending the address has not moved them; the stored address
        // stays and takes the person's protection label in the merge.
        for path in current.keys().filter(|path| person.speaks_for(path)) {
            report.observations_added += 1;
            sqlx::query(
                "INSERT INTO observations (person_id, path, value, labels, source, release, upstream_version, effective_at, retrieved_at) VALUES ($1, $2, NULL, '[]', $3, $4, $5, NULL, $6)",
            )
            .bind(key)
            .bind(path)
            .bind(&batch.source)
            .bind(&batch.release)
            .bind(&person.upstream_version)
            .bind(&at)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "DELETE FROM current_observations WHERE person_id = $1 AND source = $2 AND path = $3",
            )
            .bind(key)
            .bind(&batch.source)
            .bind(path)
            .execute(&mut **tx)
            .await?;
        }
        sqlx::query("INSERT INTO source_refresh (person_id, source, retrieved_at) VALUES ($1, $2, $3) ON CONFLICT (person_id, source) DO UPDATE SET retrieved_at = excluded.retrieved_at")
            .bind(key)
            .bind(&batch.source)
            .bind(&at)
            .execute(&mut **tx)
            .await?;
        self.store_merged(tx, key, created, &at, &batch.reason, report)
            .await
    }

    /// A record names IDs we hold for other persons. When its source issues
    /// all of those IDs (Folkeregisteret for NO numbers, SPAR for SE, DVV
    /// for FI) the register says they are one person: the persons are
    /// merged into the oldest, unless an admin undid that link before.
    /// Otherwise nothing is merged and the IDs are reported for review.
    /// Returns the key the record is stored under.
    #[allow(clippy::too_many_arguments)]
    async fn link_or_report(
        &self,
        tx: &mut Transaction<'_, Any>,
        key: i64,
        source: &str,
        person: &FoundPerson,
        conflicting: Vec<(String, String, i64)>,
        at: &str,
        report: &mut ApplyReport,
    ) -> Result<i64, StoreError> {
        let authoritative = conflicting
            .iter()
            .all(|(scheme, _, _)| self.rules.issues(source, scheme));
        let mut keys: BTreeSet<i64> = conflicting.iter().map(|(_, _, o)| *o).collect();
        keys.insert(key);
        let survivor = *keys.iter().next().unwrap_or(&key);
        let mut refused = false;
        for other in keys.iter().filter(|k| **k != survivor) {
            let undone: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM identity_merges WHERE undone_at IS NOT NULL AND ((survivor = $1 AND merged = $2) OR (survivor = $3 AND merged = $4))",
            )
            .bind(survivor)
            .bind(other)
            .bind(other)
            .bind(survivor)
            .fetch_optional(&mut **tx)
            .await?;
            refused |= undone.is_some();
        }
        if !authoritative || refused {
            // Two persons we hold claim to be one: never merged on a guess.
            report
                .identity_conflicts
                .extend(conflicting.into_iter().map(|(_, value, _)| value));
            return Ok(key);
        }
        let ids: Vec<&str> = person.ids.iter().map(|i| i.value.as_str()).collect();
        for other in keys.iter().filter(|k| **k != survivor) {
            self.merge_persons(tx, survivor, *other, source, &ids.join(", "), at)
                .await?;
        }
        for id in &person.ids {
            set_active(tx, &self.rules, source, id, at).await?;
        }
        Ok(survivor)
    }

    /// Moves everything of `merged` to `survivor` and records what moved.
    async fn merge_persons(
        &self,
        tx: &mut Transaction<'_, Any>,
        survivor: i64,
        merged: i64,
        source: &str,
        ids: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        let moved_ids: Vec<String> =
            sqlx::query_scalar("SELECT value FROM identifiers WHERE person_id = $1")
                .bind(merged)
                .fetch_all(&mut **tx)
                .await?;
        let moved_obs: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM observations WHERE person_id = $1")
                .bind(merged)
                .fetch_all(&mut **tx)
                .await?;
        let moved_changes: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM person_changes WHERE person_id = $1")
                .bind(merged)
                .fetch_all(&mut **tx)
                .await?;
        for table in ["identifiers", "observations", "person_changes", "overrides"] {
            sqlx::query(&format!(
                "UPDATE {table} SET person_id = $1 WHERE person_id = $2"
            ))
            .bind(survivor)
            .bind(merged)
            .execute(&mut **tx)
            .await?;
        }
        for table in ["current_observations", "conflicts", "merged"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE person_id = $1"))
                .bind(merged)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query("UPDATE persons SET merged_into = $1 WHERE id = $2")
            .bind(survivor)
            .bind(merged)
            .execute(&mut **tx)
            .await?;
        rederive_current(tx, survivor).await?;
        rederive_refresh(tx, survivor).await?;
        sqlx::query("DELETE FROM source_refresh WHERE person_id = $1")
            .bind(merged)
            .execute(&mut **tx)
            .await?;
        let reason = format!("{source} says {ids} are one person");
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO identity_merges (survivor, merged, source, reason, at, moved_ids, moved_observations, moved_changes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(survivor)
        .bind(merged)
        .bind(source)
        .bind(&reason)
        .bind(at)
        .bind(json!(moved_ids).to_string())
        .bind(id_list(&moved_obs))
        .bind(id_list(&moved_changes))
        .fetch_one(&mut **tx)
        .await?;
        self.store_merged(
            tx,
            survivor,
            false,
            at,
            &format!("identity link #{id}: person {merged} merged into {survivor}; {reason}"),
            &mut ApplyReport::default(),
        )
        .await
    }

    /// Recomputes a person's merged record from the current statements and
    /// open overrides, and stores it with a history entry when a value
    /// changed (provenance alone is updated in place), keeping the open
    /// conflicts in step.
    async fn store_merged(
        &self,
        tx: &mut Transaction<'_, Any>,
        key: i64,
        created: bool,
        at: &str,
        reason: &str,
        report: &mut ApplyReport,
    ) -> Result<(), StoreError> {
        let candidates = current_candidates(tx, key).await?;
        let merged = merge::merge(&self.rules, &candidates);
        let previous = sqlx::query("SELECT record, version FROM merged WHERE person_id = $1")
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
        let (before, version) = match previous {
            Some(row) => {
                let text: String = row.get("record");
                (
                    serde_json::from_str::<MergedRecord>(&text)
                        .map_err(|e| corrupt("merged record", e))?,
                    row.get::<i64, _>("version"),
                )
            }
            None => (MergedRecord::default(), 0),
        };
        report.conflicts_opened += sync_conflicts(tx, key, &before, &merged, at).await?;
        let changes = diff(&before, &merged);
        if changes.is_empty() && !created {
            // A statement that changes no value (the same again, or a newer
            // effective time): the provenance is kept current (retrieved =
            // the source's latest statement), without a new version.
            if merged != before {
                let record =
                    serde_json::to_string(&merged).map_err(|e| corrupt("merged record", e))?;
                sqlx::query("UPDATE merged SET record = $1 WHERE person_id = $2")
                    .bind(&record)
                    .bind(key)
                    .execute(&mut **tx)
                    .await?;
            }
            report.persons_unchanged += 1;
            return Ok(());
        }
        if !created {
            report.persons_changed += 1;
        }
        let record = serde_json::to_string(&merged).map_err(|e| corrupt("merged record", e))?;
        sqlx::query("INSERT INTO merged (person_id, record, version, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (person_id) DO UPDATE SET record = excluded.record, version = excluded.version, updated_at = excluded.updated_at")
            .bind(key)
            .bind(&record)
            .bind(version + 1)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO person_changes (person_id, changed_at, version, diff, reason) VALUES ($1, $2, $3, $4, $5)")
            .bind(key)
            .bind(at)
            .bind(version + 1)
            .bind(Value::Object(changes).to_string())
            .bind(reason)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// Keeps the `conflicts` table in step with a person's merged record: a
/// conflict opens when a field becomes conflicting and closes when it no
/// longer is (a source changed, or an override decided it).
async fn sync_conflicts(
    tx: &mut Transaction<'_, Any>,
    key: i64,
    before: &MergedRecord,
    after: &MergedRecord,
    at: &str,
) -> Result<u64, StoreError> {
    let was: BTreeSet<&String> = before
        .fields
        .iter()
        .filter(|(_, f)| f.conflict)
        .map(|(p, _)| p)
        .collect();
    let now: BTreeSet<&String> = after
        .fields
        .iter()
        .filter(|(_, f)| f.conflict)
        .map(|(p, _)| p)
        .collect();
    if was.is_empty() && now.is_empty() {
        return Ok(0);
    }
    let opened = now.difference(&was).count() as u64;
    for path in was.difference(&now) {
        sqlx::query("DELETE FROM conflicts WHERE person_id = $1 AND path = $2")
            .bind(key)
            .bind(path.as_str())
            .execute(&mut **tx)
            .await?;
    }
    for path in &now {
        let field = &after.fields[*path];
        let mut candidates = vec![json!({"source": field.provenance.source, "value": field.value})];
        candidates.extend(
            field
                .provenance
                .alternatives
                .iter()
                .map(|a| json!({"source": a.source, "value": a.value})),
        );
        sqlx::query(
            "INSERT INTO conflicts (person_id, path, candidates, opened_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (person_id, path) DO UPDATE SET candidates = excluded.candidates",
        )
        .bind(key)
        .bind(path.as_str())
        .bind(Value::Array(candidates).to_string())
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(opened)
}

impl SqlStore {
    /// An audit entry about the installed release, optionally setting the
    /// pin in the same transaction.
    async fn audited(
        &self,
        connector: &str,
        actor: &str,
        action: &str,
        reason: &str,
        pinned: Option<bool>,
    ) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let Some(row) =
            sqlx::query("SELECT version, digest FROM installations WHERE connector = $1")
                .bind(connector)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(false);
        };
        let (version, digest): (String, String) = (row.get("version"), row.get("digest"));
        if let Some(pinned) = pinned {
            sqlx::query("UPDATE installations SET pinned = $1 WHERE connector = $2")
                .bind(pinned)
                .bind(connector)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO installation_audit (connector, at, actor, action, version_before, digest_before, version_after, digest_after, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(connector)
        .bind(ts(now()))
        .bind(actor)
        .bind(action)
        .bind(&version)
        .bind(&digest)
        .bind(&version)
        .bind(&digest)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// A run of the log book from its row.
fn run_from(r: &AnyRow) -> Result<JobRun, StoreError> {
    let finished: Option<String> = r.get("finished_at");
    Ok(JobRun {
        id: r.get("id"),
        job: r.get("job"),
        connector: r.get("connector"),
        started_at: parse_ts(r.get::<&str, _>("started_at"))?,
        finished_at: finished.as_deref().map(parse_ts).transpose()?,
        status: RunStatus::parse(r.get::<&str, _>("status")),
        counts: serde_json::from_str(r.get::<&str, _>("counts")).unwrap_or_default(),
        errors: serde_json::from_str(r.get::<&str, _>("errors")).unwrap_or_default(),
        host: r.try_get("host").ok().flatten(),
    })
}

fn installation_from(row: &AnyRow) -> Result<Installation, StoreError> {
    Ok(Installation {
        connector: row.get("connector"),
        version: row.get("version"),
        digest: row.get("digest"),
        contract: row.get("contract"),
        pinned: flag(row, "pinned"),
        installed_at: parse_ts(row.get::<&str, _>("installed_at"))?,
        installed_by: row.get("installed_by"),
    })
}

#[async_trait]
impl PersonStore for SqlStore {
    async fn apply(&self, batch: Batch) -> Result<ApplyReport, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let mut report = ApplyReport::default();
        fence_check(&mut tx, &batch).await?;
        for person in &batch.persons {
            self.apply_person(&mut tx, &batch, person, &mut report)
                .await?;
        }
        fence_record(&mut tx, &batch, &report).await?;
        if let Some(cursor) = &batch.cursor {
            sqlx::query("INSERT INTO cursors (connector, cursor, updated_at) VALUES ($1, $2, $3) ON CONFLICT (connector) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at")
                .bind(&batch.source)
                .bind(cursor)
                .bind(ts(now()))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(report)
    }

    async fn person(&self, id: &str) -> Result<Option<StoredPerson>, StoreError> {
        // One query (the hot path of the API): the record of whoever holds
        // the ID now (a person merged into another answers as that one)
        // with all its IDs.
        sqlx::query(&format!(
            "SELECT {}
             FROM identifiers i JOIN persons p ON p.id = i.person_id
             JOIN merged m ON m.person_id = COALESCE(p.merged_into, p.id)
             WHERE i.value = $1",
            self.backend.person_columns()
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(stored_person)
        .transpose()
    }

    async fn keys(&self, ids: &[String]) -> Result<BTreeMap<String, i64>, StoreError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT i.value, COALESCE(p.merged_into, p.id) AS key
             FROM {} j JOIN identifiers i ON i.value = j.value
             JOIN persons p ON p.id = i.person_id",
            self.backend.json_values("$1")
        ))
        .bind(json!(ids).to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get("value"), row.get("key")))
            .collect())
    }

    async fn persons(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, Option<StoredPerson>)>, StoreError> {
        let owner = self.keys(ids).await?;
        let keys: BTreeSet<i64> = owner.values().copied().collect();
        let mut persons = self
            .load_persons(&keys.into_iter().collect::<Vec<_>>())
            .await?;
        // Each person is moved to the last ID that names it and cloned
        // only for the others.
        let mut last_mention: BTreeMap<i64, usize> = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            if let Some(key) = owner.get(id) {
                last_mention.insert(*key, i);
            }
        }
        Ok(ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let person = owner.get(id).and_then(|key| {
                    if last_mention.get(key) == Some(&i) {
                        persons.remove(key)
                    } else {
                        persons.get(key).cloned()
                    }
                });
                (id.clone(), person)
            })
            .collect())
    }

    async fn search(
        &self,
        search: &Search,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredPerson>, StoreError> {
        let keys: Vec<i64> = match search {
            Search::IdPrefix(prefix) => {
                // A range over the identifier index: every value that
                // starts with the prefix sorts between it and prefix + U+FFFF.
                let top = match self.backend {
                    Backend::Sqlite => "char(65535)",
                    Backend::Postgres => "chr(65535)",
                };
                sqlx::query_scalar(&format!(
                    "SELECT DISTINCT p.id FROM identifiers i JOIN persons p ON p.id = i.person_id
                     WHERE i.value >= $1 AND i.value < $1 || {top}
                       AND p.merged_into IS NULL AND p.id > $2
                     ORDER BY p.id LIMIT $3",
                ))
                .bind(prefix)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            Search::Name {
                family,
                given,
                birth_date,
            } => {
                // The birth date uses the expression index; names compare
                // case-insensitively by prefix.
                let b = self.backend;
                let pos = b.position();
                sqlx::query_scalar(&format!(
                    "SELECT m.person_id FROM merged m JOIN persons p ON p.id = m.person_id
                     WHERE {} = $1
                       AND p.merged_into IS NULL AND m.person_id > $2
                       AND {pos}(lower({}), lower($3)) = 1
                       AND ($4 IS NULL OR {pos}(lower({}), lower($4)) = 1)
                     ORDER BY m.person_id LIMIT $5",
                    b.field("m.record", "birth.date"),
                    b.field("m.record", "name.family"),
                    b.field("m.record", "name.given"),
                ))
                .bind(birth_date)
                .bind(after)
                .bind(family)
                .bind(given.as_deref())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut persons = self.load_persons(&keys).await?;
        Ok(keys.iter().filter_map(|k| persons.remove(k)).collect())
    }

    async fn add_client(&self, client: NewClient) -> Result<Client, StoreError> {
        let _w = self.writer.lock().await;
        let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM clients WHERE name = $1")
            .bind(&client.name)
            .fetch_optional(&self.pool)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Refused(format!(
                "a client named {:?} exists already (names stay taken after a revoke, so the access log stays clear); choose another name",
                client.name
            )));
        }
        let row = sqlx::query("INSERT INTO clients (name, auth, secret_sha256, basis, purpose, admin, rate_limit, created_at, created_by, persons_per_minute) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *")
            .bind(&client.name)
            .bind(client.auth.as_str())
            .bind(&client.secret_sha256)
            .bind(&client.basis)
            .bind(&client.purpose)
            .bind(client.admin)
            .bind(i64::from(client.rate_limit))
            .bind(ts(now()))
            .bind(&client.created_by)
            .bind(i64::from(client.persons_per_minute))
            .fetch_one(&self.pool)
            .await?;
        client_from(&row)
    }

    async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        sqlx::query("SELECT * FROM clients ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(client_from)
            .collect()
    }

    async fn client_by_secret(&self, secret_sha256: &str) -> Result<Option<Client>, StoreError> {
        sqlx::query("SELECT * FROM clients WHERE secret_sha256 = $1 AND revoked_at IS NULL")
            .bind(secret_sha256)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(client_from)
            .transpose()
    }

    async fn revoke_client(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let done = sqlx::query("UPDATE clients SET revoked_at = $1, revoked_by = $2, revoked_reason = $3 WHERE name = $4 AND revoked_at IS NULL")
            .bind(ts(now()))
            .bind(actor)
            .bind(reason)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn log_access(&self, entries: &[AccessEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _w = self.access_writer.lock().await;
        // The chain is extended under the access log's write lock (SQLite's
        // BEGIN IMMEDIATE on its own file; an advisory lock of its own on
        // PostgreSQL, so these commits do not queue behind a sync's).
        let mut tx = begin_locked(&self.access, self.backend, PG_ACCESS_LOCK).await?;
        let last = sqlx::query("SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (mut seq, mut previous) = match &last {
            Some(row) => (
                row.try_get::<i64, _>("seq")?,
                row.try_get::<Option<String>, _>("hash")?
                    .unwrap_or_else(|| crate::audit::GENESIS.to_string()),
            ),
            None => (0, crate::audit::GENESIS.to_string()),
        };
        // One fixed statement whatever the group's size: the entries travel
        // as one JSON array and the database unpacks them.
        let mut rows: Vec<Value> = Vec::with_capacity(entries.len());
        for e in entries {
            seq += 1;
            let at = ts(e.at);
            let fields = serde_json::to_string(&e.fields).map_err(|e| corrupt("fields", e))?;
            let hash = crate::audit::link_hash(
                &previous,
                &crate::audit::Link {
                    seq,
                    at: &at,
                    client: &e.client,
                    basis: &e.basis,
                    purpose: &e.purpose,
                    person: e.person,
                    endpoint: &e.endpoint,
                    fields: &fields,
                    criteria: e.criteria.as_deref(),
                },
            );
            rows.push(json!([
                seq, at, e.client, e.basis, e.purpose, e.person, e.endpoint, fields, e.criteria,
                hash
            ]));
            previous = hash;
        }
        let sql = match self.backend {
            Backend::Sqlite => {
                "INSERT INTO access_log_in (seq, at, client, basis, purpose, person_id, endpoint,
                                            fields, criteria, hash)
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                        json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                        json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                        json_extract(value, '$[6]'), json_extract(value, '$[7]'),
                        json_extract(value, '$[8]'), json_extract(value, '$[9]')
                 FROM json_each($1) ORDER BY key"
            }
            Backend::Postgres => {
                "INSERT INTO access_log_in (seq, at, client, basis, purpose, person_id, endpoint,
                                            fields, criteria, hash)
                 SELECT CAST(e->>0 AS BIGINT), e->>1, e->>2, e->>3, e->>4, CAST(e->>5 AS BIGINT),
                        e->>6, e->>7, e->>8, e->>9
                 FROM json_array_elements($1::json) WITH ORDINALITY AS t(e, n) ORDER BY n"
            }
        };
        sqlx::query(sql)
            .bind(Value::Array(rows).to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn access_log(&self, q: &AccessQuery) -> Result<Vec<AccessRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.*, f.fields FROM access_log a JOIN access_field_sets f ON f.id = a.field_set
             WHERE seq > $1
               AND ($2 IS NULL OR client = $2) AND ($3 IS NULL OR person_id = $3)
               AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at < $5)
             ORDER BY seq LIMIT $6",
        )
        .bind(q.after)
        .bind(q.client.as_deref())
        .bind(q.person)
        .bind(q.since.map(ts))
        .bind(q.until.map(ts))
        .bind(i64::from(q.limit))
        .fetch_all(&self.access)
        .await?;
        rows.iter()
            .map(|row| {
                let fields: String = row.try_get("fields")?;
                Ok(AccessRecord {
                    seq: row.try_get("seq")?,
                    entry: AccessEntry {
                        at: parse_ts(row.try_get::<&str, _>("at")?)?,
                        client: row.try_get("client")?,
                        basis: row.try_get("basis")?,
                        purpose: row.try_get("purpose")?,
                        person: row.try_get("person_id")?,
                        endpoint: row.try_get("endpoint")?,
                        fields: serde_json::from_str(&fields)
                            .map_err(|e| corrupt("access log fields", e))?,
                        criteria: row.try_get("criteria")?,
                    },
                    hash: row.try_get("hash")?,
                })
            })
            .collect()
    }

    async fn verify_access_log(&self) -> Result<crate::audit::ChainReport, StoreError> {
        // Read in pages so a long log is not held in memory at once; the
        // field list is the text the chain covers (a changed shared list
        // breaks every entry that uses it).
        let mut verifier = crate::audit::Verifier::default();
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(
                "SELECT a.seq, a.at, a.client, a.basis, a.purpose, a.person_id, a.endpoint,
                        f.fields, a.criteria, a.hash
                 FROM access_log a LEFT JOIN access_field_sets f ON f.id = a.field_set
                 WHERE a.seq > $1 ORDER BY a.seq LIMIT 10000",
            )
            .bind(after)
            .fetch_all(&self.access)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let seq: i64 = row.try_get("seq")?;
                let fields: Option<String> = row.try_get("fields")?;
                let criteria: Option<String> = row.try_get("criteria")?;
                let hash: Option<String> = row.try_get("hash")?;
                let (at, client, basis, purpose, endpoint): (
                    String,
                    String,
                    String,
                    String,
                    String,
                ) = (
                    row.try_get("at")?,
                    row.try_get("client")?,
                    row.try_get("basis")?,
                    row.try_get("purpose")?,
                    row.try_get("endpoint")?,
                );
                let link = crate::audit::Link {
                    seq,
                    at: &at,
                    client: &client,
                    basis: &basis,
                    purpose: &purpose,
                    person: row.try_get("person_id")?,
                    endpoint: &endpoint,
                    fields: fields.as_deref().unwrap_or("(missing field set)"),
                    criteria: criteria.as_deref(),
                };
                if !verifier.next(&link, hash.as_deref()) {
                    return Ok(verifier.finish());
                }
                after = seq;
            }
        }
        Ok(verifier.finish())
    }

    async fn server_secret(&self, name: &str) -> Result<String, StoreError> {
        let read = || {
            sqlx::query_scalar::<_, String>("SELECT value FROM server_secrets WHERE name = $1")
                .bind(name)
        };
        if let Some(value) = read().fetch_optional(&self.pool).await? {
            return Ok(value);
        }
        // 256 bits from the operating system; the first host to get here
        // writes it, the others read that one.
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&value)
        .bind(ts(now()))
        .execute(&self.pool)
        .await?;
        Ok(read().fetch_one(&self.pool).await?)
    }

    async fn persons_after(&self, after: i64, limit: u32) -> Result<Vec<StoredPerson>, StoreError> {
        let keys: Vec<i64> = sqlx::query_scalar(
            "SELECT person_id FROM merged WHERE person_id > $1 ORDER BY person_id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut persons = self.load_persons(&keys).await?;
        Ok(keys.iter().filter_map(|k| persons.remove(k)).collect())
    }

    async fn person_by_key(&self, key: i64) -> Result<Option<StoredPerson>, StoreError> {
        // A person merged into another answers as that one.
        sqlx::query(&format!(
            "SELECT {}
             FROM persons p JOIN merged m ON m.person_id = COALESCE(p.merged_into, p.id)
             WHERE p.id = $1",
            self.backend.person_columns()
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(stored_person)
        .transpose()
    }

    async fn active_ids(&self, schemes: &[&str]) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for scheme in schemes {
            let mut list: Vec<String> = sqlx::query_scalar(
                "SELECT value FROM identifiers WHERE scheme = $1 AND active ORDER BY value",
            )
            .bind(scheme)
            .fetch_all(&self.pool)
            .await?;
            out.append(&mut list);
        }
        Ok(out)
    }

    async fn active_ids_in(
        &self,
        schemes: &[&str],
        municipality: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for scheme in schemes {
            let mut list: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT i.value FROM identifiers i JOIN merged m ON m.person_id = i.person_id
                 WHERE i.scheme = $1 AND i.active
                   AND {} = $2
                 ORDER BY i.value",
                self.backend.field("m.record", "address.municipality")
            ))
            .bind(scheme)
            .bind(municipality)
            .fetch_all(&self.pool)
            .await?;
            out.append(&mut list);
        }
        Ok(out)
    }

    async fn refreshed_since(
        &self,
        source: &str,
        since: DateTime<Utc>,
    ) -> Result<BTreeSet<String>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT i.value FROM identifiers i JOIN source_refresh sr ON sr.person_id = i.person_id AND sr.source = $1 WHERE sr.retrieved_at >= $2",
        )
        .bind(source)
        .bind(ts(since))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().collect())
    }

    async fn count_persons(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM merged")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn history(&self, person: i64) -> Result<Vec<PersonChange>, StoreError> {
        let rows = sqlx::query("SELECT seq, person_id, changed_at, version, diff, reason FROM person_changes WHERE person_id = $1 ORDER BY seq")
            .bind(person)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(change_from).collect()
    }

    async fn changes_since(&self, seq: i64, limit: u32) -> Result<Vec<PersonChange>, StoreError> {
        let rows = sqlx::query("SELECT seq, person_id, changed_at, version, diff, reason FROM person_changes WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(change_from).collect()
    }

    async fn cursor(&self, connector: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT cursor FROM cursors WHERE connector = $1")
                .bind(connector)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn installation(&self, connector: &str) -> Result<Option<Installation>, StoreError> {
        let row = sqlx::query("SELECT * FROM installations WHERE connector = $1")
            .bind(connector)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(installation_from).transpose()
    }

    async fn installations(&self) -> Result<Vec<Installation>, StoreError> {
        let rows = sqlx::query("SELECT * FROM installations ORDER BY connector")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(installation_from).collect()
    }

    async fn change_installation(
        &self,
        installation: Installation,
        action: Option<&str>,
        reason: &str,
    ) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let before = sqlx::query("SELECT version, digest FROM installations WHERE connector = $1")
            .bind(&installation.connector)
            .fetch_optional(&mut *tx)
            .await?;
        let (version_before, digest_before): (Option<String>, Option<String>) = match &before {
            Some(r) => (Some(r.get("version")), Some(r.get("digest"))),
            None => (None, None),
        };
        let action = action.unwrap_or(match &version_before {
            None => "install",
            Some(v) if *v == installation.version => "reinstall",
            Some(_) => "change-version",
        });
        sqlx::query(
            "INSERT INTO installations (connector, version, digest, contract, pinned, installed_at, installed_by) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (connector) DO UPDATE SET version = excluded.version, digest = excluded.digest, contract = excluded.contract,
             pinned = excluded.pinned, installed_at = excluded.installed_at, installed_by = excluded.installed_by",
        )
        .bind(&installation.connector)
        .bind(&installation.version)
        .bind(&installation.digest)
        .bind(&installation.contract)
        .bind(installation.pinned)
        .bind(ts(installation.installed_at))
        .bind(&installation.installed_by)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO installation_audit (connector, at, actor, action, version_before, digest_before, version_after, digest_after, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&installation.connector)
        .bind(ts(installation.installed_at))
        .bind(&installation.installed_by)
        .bind(action)
        .bind(version_before)
        .bind(digest_before)
        .bind(&installation.version)
        .bind(&installation.digest)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_pinned(
        &self,
        connector: &str,
        pinned: bool,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let action = if pinned { "pin" } else { "unpin" };
        self.audited(connector, actor, action, reason, Some(pinned))
            .await
    }

    async fn audit_event(
        &self,
        connector: &str,
        actor: &str,
        action: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.audited(connector, actor, action, reason, None).await
    }

    async fn identity_reviews(&self) -> Result<Vec<IdentityReview>, StoreError> {
        let rows = sqlx::query("SELECT * FROM identity_reviews ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(IdentityReview {
                    id: r.get("id"),
                    person: r.get("person_id"),
                    candidates: serde_json::from_str(r.get::<&str, _>("candidates"))
                        .map_err(|e| corrupt("review candidates", e))?,
                    source: r.get("source"),
                    at: parse_ts(r.get::<&str, _>("at"))?,
                })
            })
            .collect()
    }

    async fn identity_links(&self) -> Result<Vec<IdentityLink>, StoreError> {
        let rows = sqlx::query("SELECT * FROM identity_merges ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(IdentityLink {
                    id: r.get("id"),
                    survivor: r.get("survivor"),
                    merged: r.get("merged"),
                    source: r.get("source"),
                    reason: r.get("reason"),
                    at: parse_ts(r.get::<&str, _>("at"))?,
                    undone_at: r
                        .get::<Option<String>, _>("undone_at")
                        .as_deref()
                        .map(parse_ts)
                        .transpose()?,
                    undone_by: r.get("undone_by"),
                    undone_reason: r.get("undone_reason"),
                })
            })
            .collect()
    }

    async fn undo_link(&self, id: i64, actor: &str, reason: &str) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let Some(row) =
            sqlx::query("SELECT * FROM identity_merges WHERE id = $1 AND undone_at IS NULL")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(false);
        };
        let (survivor, merged): (i64, i64) = (row.get("survivor"), row.get("merged"));
        let ids: Vec<String> = serde_json::from_str(row.get::<&str, _>("moved_ids"))
            .map_err(|e| corrupt("moved ids", e))?;
        let obs: Vec<i64> = serde_json::from_str(row.get::<&str, _>("moved_observations"))
            .map_err(|e| corrupt("moved observations", e))?;
        let changes: Vec<i64> = serde_json::from_str(row.get::<&str, _>("moved_changes"))
            .map_err(|e| corrupt("moved changes", e))?;
        for value in &ids {
            sqlx::query("UPDATE identifiers SET person_id = $1 WHERE value = $2")
                .bind(merged)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        for (table, column, list) in [
            ("observations", "id", &obs),
            ("person_changes", "seq", &changes),
        ] {
            for chunk in list.chunks(500) {
                let marks: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
                let marks = marks.join(", ");
                let sql = format!("UPDATE {table} SET person_id = $1 WHERE {column} IN ({marks})");
                let mut q = sqlx::query(&sql).bind(merged);
                for v in chunk {
                    q = q.bind(v);
                }
                q.execute(&mut *tx).await?;
            }
        }
        sqlx::query("UPDATE persons SET merged_into = NULL WHERE id = $1")
            .bind(merged)
            .execute(&mut *tx)
            .await?;
        let at = ts(now());
        sqlx::query("UPDATE identity_merges SET undone_at = $1, undone_by = $2, undone_reason = $3 WHERE id = $4")
            .bind(&at)
            .bind(actor)
            .bind(reason)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let why = format!("identity link #{id} undone by {actor}: {reason}");
        for key in [survivor, merged] {
            rederive_current(&mut tx, key).await?;
            rederive_refresh(&mut tx, key).await?;
            self.store_merged(
                &mut tx,
                key,
                key == merged,
                &at,
                &why,
                &mut ApplyReport::default(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn add_override(&self, new: NewOverride) -> Result<Override, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let key: i64 = sqlx::query_scalar("SELECT person_id FROM identifiers WHERE value = $1")
            .bind(&new.person_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no person with ID {}", new.person_id)))?;
        let at = ts(now());
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO overrides (person_id, path, value, reason, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(key)
        .bind(&new.path)
        .bind(new.value.to_string())
        .bind(&new.reason)
        .bind(&new.actor)
        .bind(&at)
        .bind(new.expires.map(ts))
        .fetch_one(&mut *tx)
        .await?;
        let reason = format!("override #{id} by {}: {}", new.actor, new.reason);
        self.store_merged(
            &mut tx,
            key,
            false,
            &at,
            &reason,
            &mut ApplyReport::default(),
        )
        .await?;
        tx.commit().await?;
        Ok(Override {
            id,
            person: key,
            path: new.path,
            value: new.value,
            reason: new.reason,
            created_by: new.actor,
            created_at: parse_ts(&at)?,
            expires_at: new.expires,
            ended_at: None,
            ended_by: None,
            ended_reason: None,
        })
    }

    async fn end_override(&self, id: i64, actor: &str, reason: &str) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let key: Option<i64> = sqlx::query_scalar(
            "SELECT person_id FROM overrides WHERE id = $1 AND ended_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(key) = key else { return Ok(false) };
        let at = ts(now());
        sqlx::query(
            "UPDATE overrides SET ended_at = $1, ended_by = $2, ended_reason = $3 WHERE id = $4",
        )
        .bind(&at)
        .bind(actor)
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let why = format!("override #{id} removed by {actor}: {reason}");
        self.store_merged(&mut tx, key, false, &at, &why, &mut ApplyReport::default())
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn expire_overrides(&self, at: DateTime<Utc>) -> Result<Vec<i64>, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(
            "SELECT id, person_id, expires_at FROM overrides WHERE ended_at IS NULL AND expires_at IS NOT NULL AND expires_at <= $1 ORDER BY id",
        )
        .bind(ts(at))
        .fetch_all(&mut *tx)
        .await?;
        let mut ended = Vec::new();
        for row in rows {
            let (id, key, expires): (i64, i64, String) =
                (row.get("id"), row.get("person_id"), row.get("expires_at"));
            sqlx::query("UPDATE overrides SET ended_at = $1, ended_by = 'folkhub (expiry)', ended_reason = 'expired' WHERE id = $2")
                .bind(&expires)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let why = format!("override #{id} expired on {expires}");
            self.store_merged(
                &mut tx,
                key,
                false,
                &expires,
                &why,
                &mut ApplyReport::default(),
            )
            .await?;
            ended.push(id);
        }
        tx.commit().await?;
        Ok(ended)
    }

    async fn overrides(&self, open_only: bool) -> Result<Vec<Override>, StoreError> {
        let rows = sqlx::query(if open_only {
            "SELECT * FROM overrides WHERE ended_at IS NULL ORDER BY id"
        } else {
            "SELECT * FROM overrides ORDER BY id"
        })
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let opt_ts = |name: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
                    r.get::<Option<String>, _>(name)
                        .as_deref()
                        .map(parse_ts)
                        .transpose()
                };
                Ok(Override {
                    id: r.get("id"),
                    person: r.get("person_id"),
                    path: r.get("path"),
                    value: serde_json::from_str(r.get::<&str, _>("value"))
                        .map_err(|e| corrupt("override value", e))?,
                    reason: r.get("reason"),
                    created_by: r.get("created_by"),
                    created_at: parse_ts(r.get::<&str, _>("created_at"))?,
                    expires_at: opt_ts("expires_at")?,
                    ended_at: opt_ts("ended_at")?,
                    ended_by: r.get("ended_by"),
                    ended_reason: r.get("ended_reason"),
                })
            })
            .collect()
    }

    async fn conflicts(&self) -> Result<Vec<Conflict>, StoreError> {
        let rows = sqlx::query("SELECT * FROM conflicts ORDER BY person_id, path")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Conflict {
                    person: r.get("person_id"),
                    path: r.get("path"),
                    candidates: serde_json::from_str(r.get::<&str, _>("candidates"))
                        .map_err(|e| corrupt("conflict candidates", e))?,
                    opened_at: parse_ts(r.get::<&str, _>("opened_at"))?,
                })
            })
            .collect()
    }

    async fn rebuild(&self, apply: bool) -> Result<RebuildReport, StoreError> {
        let _w = if apply {
            Some(self.writer.lock().await)
        } else {
            None
        };
        let keys: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM persons WHERE merged_into IS NULL ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        let mut report = RebuildReport::default();
        for chunk in keys.chunks(500) {
            let mut tx = self.write_tx().await?;
            for &key in chunk {
                report.persons += 1;
                let mut candidates = candidates_from_log(&mut tx, key).await?;
                override_candidates(&mut tx, key, &mut candidates).await?;
                let rebuilt = merge::merge(&self.rules, &candidates);
                let row = sqlx::query("SELECT record, version FROM merged WHERE person_id = $1")
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
                let (stored, version) = match row {
                    Some(r) => {
                        let text: String = r.get("record");
                        // A record that no longer parses differs entirely.
                        (
                            serde_json::from_str::<MergedRecord>(&text).unwrap_or_default(),
                            r.get::<i64, _>("version"),
                        )
                    }
                    None => (MergedRecord::default(), 0),
                };
                let changes = diff(&stored, &rebuilt);
                let provenance_differs = changes.is_empty() && stored != rebuilt;
                if changes.is_empty() && !provenance_differs {
                    continue;
                }
                let mut paths: Vec<String> = changes.keys().cloned().collect();
                if provenance_differs {
                    paths.push("(provenance)".into());
                }
                report.differing.push((key, paths));
                if !apply {
                    continue;
                }
                // current_observations is an index over the log: make it
                // agree again, then store the rebuilt record with history.
                rederive_current(&mut tx, key).await?;
                let at = ts(now());
                sync_conflicts(&mut tx, key, &stored, &rebuilt, &at).await?;
                let record =
                    serde_json::to_string(&rebuilt).map_err(|e| corrupt("merged record", e))?;
                sqlx::query("INSERT INTO merged (person_id, record, version, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (person_id) DO UPDATE SET record = excluded.record, version = excluded.version, updated_at = excluded.updated_at")
                    .bind(key)
                    .bind(&record)
                    .bind(version + 1)
                    .bind(&at)
                    .execute(&mut *tx)
                    .await?;
                if !changes.is_empty() {
                    sqlx::query("INSERT INTO person_changes (person_id, changed_at, version, diff, reason) VALUES ($1, $2, $3, $4, $5)")
                        .bind(key)
                        .bind(&at)
                        .bind(version + 1)
                        .bind(Value::Object(changes).to_string())
                        .bind("rebuild from the observation log")
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
        }
        Ok(report)
    }

    async fn candidates(
        &self,
        person: i64,
    ) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
        let mut tx = self.write_tx().await?;
        let out = current_candidates(&mut tx, person).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn audit(&self, connector: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM installation_audit WHERE connector = $1 ORDER BY id")
            .bind(connector)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    connector: r.get("connector"),
                    at: parse_ts(r.get::<&str, _>("at"))?,
                    actor: r.get("actor"),
                    action: r.get("action"),
                    version_before: r.get("version_before"),
                    digest_before: r.get("digest_before"),
                    version_after: r.get("version_after"),
                    digest_after: r.get("digest_after"),
                    reason: r.get("reason"),
                })
            })
            .collect()
    }

    async fn record_cost(&self, entry: CostEntry) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO cost_ledger (at, month, connector, release, job, run_id, calls, cost_per_call, cost) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(ts(entry.at))
        .bind(entry.at.format("%Y-%m").to_string())
        .bind(&entry.connector)
        .bind(&entry.release)
        .bind(&entry.job)
        .bind(entry.run)
        .bind(entry.calls as i64)
        .bind(entry.cost_per_call)
        .bind(entry.calls as f64 * entry.cost_per_call)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn costs(&self, month: Option<&str>) -> Result<Vec<CostRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT month, connector, job, CAST(SUM(calls) AS BIGINT) AS calls, SUM(cost) AS cost FROM cost_ledger
             WHERE $1 IS NULL OR month = $2 GROUP BY month, connector, job ORDER BY month, connector, job",
        )
        .bind(month)
        .bind(month)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| CostRow {
                month: r.get("month"),
                connector: r.get("connector"),
                job: r.get("job"),
                calls: r.get::<i64, _>("calls") as u64,
                cost: r.get("cost"),
            })
            .collect())
    }

    async fn breaker(&self, connector: &str) -> Result<Breaker, StoreError> {
        let Some(r) = sqlx::query("SELECT * FROM breakers WHERE connector = $1")
            .bind(connector)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(Breaker {
                connector: connector.to_string(),
                ..Breaker::default()
            });
        };
        let opt = |name: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
            r.get::<Option<String>, _>(name)
                .as_deref()
                .map(parse_ts)
                .transpose()
        };
        Ok(Breaker {
            connector: connector.to_string(),
            failures: r.get::<i64, _>("failures") as u32,
            opened_at: opt("opened_at")?,
            open_until: opt("open_until")?,
            last_error: r.get("last_error"),
        })
    }

    async fn set_breaker(&self, b: &Breaker) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO breakers (connector, failures, opened_at, open_until, last_error) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (connector) DO UPDATE SET failures = excluded.failures, opened_at = excluded.opened_at,
             open_until = excluded.open_until, last_error = excluded.last_error",
        )
        .bind(&b.connector)
        .bind(i64::from(b.failures))
        .bind(b.opened_at.map(ts))
        .bind(b.open_until.map(ts))
        .bind(&b.last_error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn start_run(&self, job: &str, connector: Option<&str>) -> Result<i64, StoreError> {
        let _w = self.writer.lock().await;
        Ok(sqlx::query_scalar("INSERT INTO job_runs (job, connector, started_at, status, counts, errors) VALUES ($1, $2, $3, 'running', '{}', '[]') RETURNING id")
            .bind(job)
            .bind(connector)
            .bind(ts(now()))
            .fetch_one(&self.pool)
            .await?)
    }

    async fn update_run(&self, id: i64, counts: &RunCounts) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        sqlx::query("UPDATE job_runs SET counts = $1 WHERE id = $2 AND status = 'running'")
            .bind(serde_json::to_string(counts).map_err(|e| corrupt("run counts", e))?)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn finish_run(
        &self,
        id: i64,
        status: RunStatus,
        counts: &RunCounts,
        errors: &[String],
    ) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        sqlx::query(
            "UPDATE job_runs SET finished_at = $1, status = $2, counts = $3, errors = $4 WHERE id = $5",
        )
        .bind(ts(now()))
        .bind(status.as_str())
        .bind(serde_json::to_string(counts).map_err(|e| corrupt("run counts", e))?)
        .bind(serde_json::to_string(errors).map_err(|e| corrupt("run errors", e))?)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn runs(&self, limit: u32) -> Result<Vec<JobRun>, StoreError> {
        let rows = sqlx::query("SELECT * FROM job_runs ORDER BY id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_from).collect()
    }

    async fn last_started(&self, job: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<String> =
            sqlx::query_scalar("SELECT MAX(started_at) FROM job_runs WHERE job = $1")
                .bind(job)
                .fetch_one(&self.pool)
                .await?;
        at.as_deref().map(parse_ts).transpose()
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let at = ts(now());
        let got: Option<String> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, acquired_at, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
                 acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END
             WHERE leases.holder = excluded.holder OR leases.expires_at < $3
             RETURNING holder",
        )
        .bind(name)
        .bind(holder)
        .bind(&at)
        .bind(ts(until))
        .fetch_optional(&self.pool)
        .await?;
        Ok(got.as_deref() == Some(holder))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn lease(&self, name: &str) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
        let row = sqlx::query(
            "SELECT holder, expires_at FROM leases WHERE name = $1 AND expires_at >= $2",
        )
        .bind(name)
        .bind(ts(now()))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.get("holder"), parse_ts(r.get::<&str, _>("expires_at"))?)))
            .transpose()
    }

    async fn queue_work(
        &self,
        run: i64,
        connector: &str,
        batches: &[Vec<String>],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for chunk in batches.chunks(500) {
            let sql = format!(
                "INSERT INTO work_items (run_id, connector, ids, state) VALUES {}",
                placeholders(chunk.len(), 4)
            );
            let mut q = sqlx::query(&sql);
            for ids in chunk {
                q = q
                    .bind(run)
                    .bind(connector)
                    .bind(json!(ids).to_string())
                    .bind("pending");
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn claim_work(
        &self,
        holder: &str,
        until: DateTime<Utc>,
        connectors: &[String],
    ) -> Result<Option<WorkItem>, StoreError> {
        // PostgreSQL: hosts claiming together skip each other's rows;
        // SQLite: the write lock orders them.
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE work_items SET state = 'leased', holder = $1, lease_until = $2, attempts = attempts + 1
             WHERE id = (SELECT id FROM work_items
                         WHERE (state = 'pending' OR (state = 'leased' AND lease_until < $3))
                           AND connector IN (SELECT value FROM {})
                         ORDER BY id LIMIT 1 {lock})
             RETURNING id, run_id, connector, ids, attempts",
            self.backend.json_values("$4")
        );
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        let row = sqlx::query(&sql)
            .bind(holder)
            .bind(ts(until))
            .bind(ts(now()))
            .bind(json!(connectors).to_string())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.map(|r| {
            Ok(WorkItem {
                id: r.get("id"),
                run: r.get("run_id"),
                connector: r.get("connector"),
                ids: serde_json::from_str(r.get::<&str, _>("ids"))
                    .map_err(|e| corrupt("work item ids", e))?,
                attempts: r.get("attempts"),
            })
        })
        .transpose()
    }

    async fn work_state(&self, run: i64) -> Result<WorkState, StoreError> {
        let rows = sqlx::query("SELECT state, counts FROM work_items WHERE run_id = $1")
            .bind(run)
            .fetch_all(&self.pool)
            .await?;
        let mut state = WorkState::default();
        for r in rows {
            match r.get::<&str, _>("state") {
                "pending" => state.pending += 1,
                "leased" => state.leased += 1,
                _ => {
                    state.done += 1;
                    let counts: RunCounts = r
                        .get::<Option<&str>, _>("counts")
                        .map(serde_json::from_str)
                        .transpose()
                        .map_err(|e| corrupt("work item counts", e))?
                        .unwrap_or_default();
                    state.counts.add(&counts);
                }
            }
        }
        Ok(state)
    }

    async fn open_runs(&self, job: &str) -> Result<Vec<JobRun>, StoreError> {
        sqlx::query("SELECT * FROM job_runs WHERE job = $1 AND status = 'running' ORDER BY id")
            .bind(job)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(run_from)
            .collect()
    }

    async fn set_run_host(&self, run: i64, host: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE job_runs SET host = $1 WHERE id = $2")
            .bind(host)
            .bind(run)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn feed_pages(&self, connector: &str) -> Result<Vec<FeedPage>, StoreError> {
        let rows = sqlx::query("SELECT * FROM feed_pages WHERE connector = $1 ORDER BY id")
            .bind(connector)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FeedPage {
                    connector: r.get("connector"),
                    from: r.get("cursor_from"),
                    to: r.get("cursor_to"),
                    host: r.get("host"),
                    run: r.get("run_id"),
                    persons: r.get("persons"),
                    at: parse_ts(r.get::<&str, _>("at"))?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use folkhub_core::observation::{Observation, SourceId};

    /// Where a test's store lives: a file in its directory (SQLite) or a
    /// new database in this process's own cluster (PostgreSQL).
    fn test_url(b: Backend, path: &Path) -> String {
        match b {
            Backend::Sqlite => format!("sqlite://{}", path.display()),
            Backend::Postgres => crate::local_postgres::fresh_database()
                .unwrap_or_else(|e| panic!("a PostgreSQL database for the test: {e}")),
        }
    }

    async fn open(b: Backend, path: &Path) -> SqlStore {
        SqlStore::open_url(&test_url(b, path), MergeRules::default(), OpenMode::Migrate)
            .await
            .unwrap()
    }

    /// A store at schema version 3 (the version before leases) holding a
    /// person, written as that version would; then this build's checks
    /// and migration.
    async fn an_older_schema_is_refused_until_migrated_and_keeps_its_data(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let url = test_url(b, &dir.path().join("old.db"));
        {
            let pool = connect(b, &url).await.unwrap();
            let access = match b {
                Backend::Sqlite => {
                    let path = SqlStore::access_path(&sqlite_path(&url));
                    connect(b, &format!("sqlite://{}", path.display()))
                        .await
                        .unwrap()
                }
                Backend::Postgres => pool.clone(),
            };
            migrate(&pool, b, &b.migrations()[..3]).await.unwrap();
            if b == Backend::Sqlite {
                migrate(&access, b, &SQLITE_ACCESS_MIGRATIONS[..1])
                    .await
                    .unwrap();
            }
            // A read logged before the log had its hash chain.
            sqlx::query(
                "INSERT INTO access_log_in (at, client, basis, purpose, person_id, endpoint, fields)
                 VALUES ('2026-01-01T00:00:00.000000Z', 'old', 'full', 'p', 1, 'GET /v1/persons/{id}', '[]')",
            )
            .execute(&access)
            .await
            .unwrap();
            let old = SqlStore {
                backend: b,
                pool,
                access,
                access_writer: Mutex::new(()),
                rules: MergeRules::default(),
                writer: Mutex::new(()),
            };
            assert_eq!(old.schema().await.unwrap().before, 3);
            old.apply(batch(
                vec![person(
                    &[("03851598730", true)],
                    &[("name.family", json!("Nordmann"))],
                )],
                Some("7"),
            ))
            .await
            .unwrap();
        }
        // A build that does not migrate on start says what to run.
        let e = SqlStore::open_url(&url, MergeRules::default(), OpenMode::RequireCurrent)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("schema version 3") && e.contains("folkhub migrate"),
            "{e}"
        );
        let store = SqlStore::open_url(&url, MergeRules::default(), OpenMode::AsIs)
            .await
            .unwrap();
        let state = store.schema().await.unwrap();
        assert_eq!(
            state.pending.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            vec![4, 5]
        );
        let done = store.migrate().await.unwrap();
        assert_eq!((done.before, done.current), (3, 5));
        assert_eq!(done.applied[0].0, 4);
        assert!(store.migrate().await.unwrap().applied.is_empty(), "once");
        // The old entry stays, outside the chain; new ones are chained.
        store
            .log_access(&[AccessEntry {
                at: Utc::now(),
                client: "new".into(),
                basis: "full".into(),
                purpose: "p".into(),
                person: 1,
                endpoint: "GET /v1/persons/{id}".into(),
                fields: vec![],
                criteria: None,
            }])
            .await
            .unwrap();
        let report = store.verify_access_log().await.unwrap();
        assert_eq!((report.entries, report.before_chain), (2, 1));
        assert_eq!(report.broken, None);
        assert_eq!(report.head.map(|h| h.seq), Some(2));
        // The data is there and the new tables work.
        let p = store.person("03851598730").await.unwrap().unwrap();
        assert_eq!(p.record.fields["name.family"].value, json!("Nordmann"));
        assert_eq!(
            store.cursor("folkeregister").await.unwrap().as_deref(),
            Some("7")
        );
        let until = Utc::now() + chrono::Duration::seconds(30);
        assert!(store.acquire_lease("job:x", "a", until).await.unwrap());
        assert!(!store.acquire_lease("job:x", "b", until).await.unwrap());
        // A schema newer than this build is refused.
        sqlx::query("INSERT INTO folkhub_migrations (version, name, applied_at) VALUES (99, 'future', 'now')")
            .execute(&store.pool)
            .await
            .unwrap();
        let e = SqlStore::open_url(&url, MergeRules::default(), OpenMode::Migrate)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("newer folkhub"), "{e}");
    }

    /// Leases, the work queue and fenced batches: a batch commits only
    /// while its host holds it, a feed page only from its cursor.
    async fn leases_and_fences_let_one_host_commit_a_piece_of_work(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(b, &dir.path().join("f.db")).await;
        let soon = Utc::now() + chrono::Duration::seconds(30);
        let past = Utc::now() - chrono::Duration::seconds(1);
        // A lease: its holder renews it, nobody else takes it until it expires.
        assert!(store.acquire_lease("job:n", "a", past).await.unwrap());
        assert!(store.lease("job:n").await.unwrap().is_none(), "expired");
        assert!(
            store.acquire_lease("job:n", "b", soon).await.unwrap(),
            "taken over"
        );
        assert!(!store.acquire_lease("job:n", "a", soon).await.unwrap());
        assert!(
            store.acquire_lease("job:n", "b", soon).await.unwrap(),
            "renewed"
        );
        store.release_lease("job:n", "a").await.unwrap();
        assert_eq!(store.lease("job:n").await.unwrap().unwrap().0, "b");
        store.release_lease("job:n", "b").await.unwrap();
        assert!(store.lease("job:n").await.unwrap().is_none());

        // The work queue: a batch is claimed once; an expired claim passes on.
        let run = store
            .start_run("nightly", Some("folkeregister"))
            .await
            .unwrap();
        assert!(store.last_started("nightly").await.unwrap().is_some());
        assert!(store.last_started("weekly").await.unwrap().is_none());
        let open = store.open_runs("nightly").await.unwrap();
        assert_eq!(open.iter().map(|r| r.id).collect::<Vec<_>>(), vec![run]);
        store
            .queue_work(
                run,
                "folkeregister",
                &[vec!["03851598730".into()], vec!["x".into()]],
            )
            .await
            .unwrap();
        let conn = vec!["folkeregister".to_string()];
        let brief = Utc::now() + chrono::Duration::milliseconds(300);
        let first = store.claim_work("a", brief, &conn).await.unwrap().unwrap();
        let second = store.claim_work("b", soon, &conn).await.unwrap().unwrap();
        assert_ne!(first.id, second.id);
        assert!(
            store.claim_work("c", soon, &conn).await.unwrap().is_none(),
            "both held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert!(
            store
                .claim_work("c", soon, &["krr".to_string()])
                .await
                .unwrap()
                .is_none()
        );
        // `a`'s claim expired: `c` takes it; `a` can no longer commit it.
        let again = store.claim_work("c", soon, &conn).await.unwrap().unwrap();
        assert_eq!((again.id, again.attempts), (first.id, 2));
        let work = |host: &str, item: i64| {
            let mut batch = batch(
                vec![person(
                    &[("03851598730", true)],
                    &[("name.family", json!("Hansen"))],
                )],
                None,
            );
            batch.fence = Fence::Work {
                item,
                host: host.into(),
                counts: RunCounts {
                    fetched: 1,
                    ..RunCounts::default()
                },
            };
            batch
        };
        let e = store.apply(work("a", first.id)).await.unwrap_err();
        assert!(matches!(e, StoreError::Fenced(_)), "{e}");
        assert!(
            store.person("03851598730").await.unwrap().is_none(),
            "nothing written"
        );
        store.apply(work("c", first.id)).await.unwrap();
        let e = store.apply(work("c", first.id)).await.unwrap_err();
        assert!(matches!(e, StoreError::Fenced(_)), "done once: {e}");
        let state = store.work_state(run).await.unwrap();
        assert_eq!((state.pending, state.leased, state.done), (0, 1, 1));
        assert_eq!((state.counts.fetched, state.counts.created), (1, 1));

        // Feed pages: applied only from the cursor they were read at.
        let page = |from: Option<&str>, to: &str, host: &str| {
            let mut batch = batch(
                vec![person(
                    &[("03851598730", true)],
                    &[("name.family", json!(to))],
                )],
                Some(to),
            );
            batch.fence = Fence::Feed {
                from: from.map(String::from),
                host: host.into(),
                run,
            };
            batch
        };
        store.apply(page(None, "1", "a")).await.unwrap();
        let e = store.apply(page(None, "1", "b")).await.unwrap_err();
        assert!(
            e.to_string().contains("another host applied that page"),
            "{e}"
        );
        store.apply(page(Some("1"), "2", "b")).await.unwrap();
        let pages = store.feed_pages("folkeregister").await.unwrap();
        let seen: Vec<(&str, &str, &str)> = pages
            .iter()
            .map(|p| (p.from.as_str(), p.to.as_str(), p.host.as_str()))
            .collect();
        assert_eq!(seen, vec![("", "1", "a"), ("1", "2", "b")]);
        assert_eq!(
            store.cursor("folkeregister").await.unwrap().as_deref(),
            Some("2")
        );
    }

    /// PostgreSQL with the schema owned by one role and `serve` running as
    /// another that may only read and append (the operator guide's
    /// advice): the serving role logs and verifies, and cannot change,
    /// replace, truncate or un-trigger the access log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_serving_role_without_ownership_cannot_rewrite_the_access_log() {
        let owner_url = crate::local_postgres::fresh_database().unwrap();
        let owner = SqlStore::open_url(&owner_url, MergeRules::default(), OpenMode::Migrate)
            .await
            .unwrap();
        let database = owner_url.rsplit('/').next().unwrap().to_string();
        let role = format!("serve_{database}");
        for sql in [
            format!("CREATE ROLE {role} LOGIN"),
            format!("GRANT CONNECT ON DATABASE {database} TO {role}"),
            format!("GRANT USAGE ON SCHEMA public TO {role}"),
            format!("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {role}"),
            format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"),
        ] {
            sqlx::query(&sql).execute(&owner.pool).await.unwrap();
        }
        let serve_url =
            owner_url.replacen("postgres://folkhub@", &format!("postgres://{role}@"), 1);
        let serve = SqlStore::open_url(&serve_url, MergeRules::default(), OpenMode::RequireCurrent)
            .await
            .unwrap();
        let entry = |person: i64| AccessEntry {
            at: Utc::now(),
            client: "school".into(),
            basis: "school".into(),
            purpose: "pupils".into(),
            person,
            endpoint: "GET /v1/persons/{id}".into(),
            fields: vec!["name.given".into()],
            criteria: None,
        };
        serve.log_access(&[entry(1), entry(2)]).await.unwrap();
        serve.log_access(&[entry(3)]).await.unwrap();
        for sql in [
            "UPDATE access_log SET client = 'nobody' WHERE seq = 1",
            "DELETE FROM access_log WHERE seq = 1",
            "TRUNCATE access_log",
            "INSERT INTO access_log (seq, at, client, basis, purpose, person_id, endpoint, field_set, criteria, hash)
             SELECT seq, at, 'nobody', basis, purpose, person_id, endpoint, field_set, criteria, hash FROM access_log WHERE seq = 1
             ON CONFLICT (seq) DO UPDATE SET client = 'nobody'",
            "ALTER TABLE access_log DISABLE TRIGGER USER",
            "DROP TRIGGER access_log_no_change ON access_log",
            "DROP TABLE access_log CASCADE",
        ] {
            let e = sqlx::query(sql).execute(&serve.access).await;
            assert!(e.is_err(), "the serving role could: {sql}");
        }
        let report = serve.verify_access_log().await.unwrap();
        assert_eq!((report.entries, report.broken), (3, None));
    }

    /// The behaviour suite: every test runs on both backends.
    macro_rules! on_both_backends {
        ($($name:ident),* $(,)?) => {
            mod sqlite {
                $(#[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                })*
            }
            mod postgres {
                $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                })*
            }
        };
    }
    on_both_backends!(
        an_older_schema_is_refused_until_migrated_and_keeps_its_data,
        leases_and_fences_let_one_host_commit_a_piece_of_work,
        the_merged_record_does_not_depend_on_the_order_statements_arrive_in,
        conflicts_are_listed_and_overrides_win_until_they_expire,
        a_register_links_two_persons_and_an_undone_link_restores_both,
        a_person_without_an_id_is_matched_only_when_exactly_one_fits,
        rebuild_reports_and_repairs_a_record_that_drifted_from_the_log,
        apply_merge_retract_history_and_id_change,
        a_narrower_answer_removes_only_what_it_covers,
        installations_are_audited_and_survive_reopen,
        the_access_log_is_append_only_and_clients_keep_their_names
    );

    fn person(ids: &[(&str, bool)], fields: &[(&str, Value)]) -> FoundPerson {
        FoundPerson {
            ids: ids
                .iter()
                .map(|(v, a)| SourceId {
                    scheme: "no-fnr".into(),
                    value: v.to_string(),
                    active: *a,
                })
                .collect(),
            fields: fields
                .iter()
                .map(|(p, v)| Observation {
                    path: p.to_string(),
                    value: v.clone(),
                    labels: vec![],
                    effective: None,
                })
                .collect(),
            upstream_version: "v1".into(),
            covers: None,
        }
    }

    fn batch(persons: Vec<FoundPerson>, cursor: Option<&str>) -> Batch {
        Batch {
            source: "folkeregister".into(),
            release: "1.0.0".into(),
            retrieved: Utc::now(),
            persons,
            cursor: cursor.map(String::from),
            reason: "test".into(),
            fence: Default::default(),
        }
    }

    /// One register's statement about one person at one time.
    fn statement(rng: &mut impl rand::Rng, source: &str, at: DateTime<Utc>) -> Batch {
        let pool: &[(&str, &[Value])] = &[
            (
                "name.given",
                &[json!("KARI"), json!("KARIN"), json!("KAJA")],
            ),
            ("name.family", &[json!("NORDMANN"), json!("HANSEN")]),
            (
                "contact.email",
                &[json!("a@example.invalid"), json!("b@example.invalid")],
            ),
            ("address.municipality", &[json!("0301"), json!("4601")]),
            ("protection.level", &[json!("FORTROLIG"), json!("UGRADERT")]),
            ("citizenship", &[json!(["NOR"]), json!(["NOR", "SWE"])]),
        ];
        let mut fields = Vec::new();
        for (path, values) in pool {
            if rng.gen_bool(0.6) {
                fields.push(Observation {
                    path: path.to_string(),
                    value: values[rng.gen_range(0..values.len())].clone(),
                    labels: if rng.gen_bool(0.2) {
                        vec!["FORTROLIG".into()]
                    } else {
                        vec![]
                    },
                    effective: if rng.gen_bool(0.5) {
                        Some(
                            format!("2026-0{}-01T00:00:00Z", rng.gen_range(1..10))
                                .parse()
                                .unwrap(),
                        )
                    } else {
                        None
                    },
                });
            }
        }
        Batch {
            source: source.into(),
            release: "1.0.0".into(),
            retrieved: at,
            persons: vec![FoundPerson {
                ids: vec![SourceId {
                    scheme: "no-fnr".into(),
                    value: "03851598730".into(),
                    active: true,
                }],
                fields,
                upstream_version: "v1".into(),
                covers: None,
            }],
            cursor: None,
            reason: format!("{source} at {at}"),
            fence: Default::default(),
        }
    }

    async fn the_merged_record_does_not_depend_on_the_order_statements_arrive_in(b: Backend) {
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        // Equal ranks on purpose: `x` and `y` are not in the rules, so they
        // tie and their disagreements become conflicts.
        let sources = ["folkeregister", "spar", "krr", "x", "y"];
        for case in 0..40u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(case);
            let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
            let statements: Vec<Batch> = (0..8)
                .map(|i| {
                    let source = sources[rng.gen_range(0..sources.len())];
                    statement(&mut rng, source, start + chrono::Duration::minutes(i))
                })
                .collect();
            let mut expected: Option<MergedRecord> = None;
            for order in 0..4 {
                let mut shuffled = statements.clone();
                if order > 0 {
                    shuffled.shuffle(&mut rng);
                }
                let store = open(b, &dir.path().join(format!("c{case}-{order}.db"))).await;
                for s in shuffled {
                    store.apply(s).await.unwrap();
                }
                let record = store
                    .person("03851598730")
                    .await
                    .unwrap()
                    .map(|p| p.record)
                    .unwrap_or_default();
                // The index points at the log rows it copies.
                let wrong: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM current_observations co JOIN observations o ON o.id = co.observation_id
                     WHERE o.path <> co.path OR o.value <> co.value OR o.source <> co.source OR o.person_id <> co.person_id",
                )
                .fetch_one(&store.pool)
                .await
                .unwrap();
                assert_eq!(wrong, 0, "case {case}");
                // Rebuilding from the log gives what was applied incrementally.
                let rebuilt = store.rebuild(false).await.unwrap();
                assert!(rebuilt.differing.is_empty(), "case {case}: {rebuilt:?}");
                match &expected {
                    None => expected = Some(record),
                    Some(e) => assert_eq!(&record, e, "case {case}, order {order}"),
                }
            }
        }
    }

    async fn conflicts_are_listed_and_overrides_win_until_they_expire(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(b, &dir.path().join("o.db")).await;
        // Two sources the rules do not rank disagree: an open conflict.
        for (source, email) in [("x", "a@example.invalid"), ("y", "b@example.invalid")] {
            let mut b = batch(
                vec![person(
                    &[("03851598730", true)],
                    &[("contact.email", json!(email))],
                )],
                None,
            );
            b.source = source.into();
            store.apply(b).await.unwrap();
        }
        let conflicts = store.conflicts().await.unwrap();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].path, "contact.email");
        assert_eq!(conflicts[0].candidates.as_array().unwrap().len(), 2);

        // An override decides it, with a reason and an expiry.
        let expires: DateTime<Utc> = "2027-01-01T00:00:00Z".parse().unwrap();
        let o = store
            .add_override(NewOverride {
                person_id: "03851598730".into(),
                path: "contact.email".into(),
                value: json!("c@example.invalid"),
                reason: "the person called the school office".into(),
                actor: "admin".into(),
                expires: Some(expires),
            })
            .await
            .unwrap();
        let p = store.person("03851598730").await.unwrap().unwrap();
        let f = &p.record.fields["contact.email"];
        assert_eq!(f.value, json!("c@example.invalid"));
        assert_eq!(f.provenance.source, "override");
        assert!(f.provenance.rule.contains(&format!("#{}", o.id)));
        assert!(!f.conflict);
        assert!(store.conflicts().await.unwrap().is_empty());
        // A source changing its value does not beat the override.
        let mut b = batch(
            vec![person(
                &[("03851598730", true)],
                &[("contact.email", json!("d@example.invalid"))],
            )],
            None,
        );
        b.source = "x".into();
        store.apply(b).await.unwrap();
        let p = store.person("03851598730").await.unwrap().unwrap();
        assert_eq!(
            p.record.fields["contact.email"].value,
            json!("c@example.invalid")
        );

        // Not yet expired the day before; expired on the day.
        assert!(
            store
                .expire_overrides("2026-12-31T23:59:59Z".parse().unwrap())
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.expire_overrides(expires).await.unwrap(), vec![o.id]);
        let p = store.person("03851598730").await.unwrap().unwrap();
        assert_ne!(
            p.record.fields["contact.email"].provenance.source,
            "override"
        );
        assert!(
            p.record.fields["contact.email"].conflict,
            "the disagreement is back"
        );
        assert_eq!(store.conflicts().await.unwrap().len(), 1);
        let all = store.overrides(false).await.unwrap();
        assert_eq!(all[0].ended_by.as_deref(), Some("folkhub (expiry)"));
        assert!(store.overrides(true).await.unwrap().is_empty());
        let reasons: Vec<String> = store
            .history(p.key)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.reason)
            .collect();
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with(&format!("override #{} by admin", o.id)))
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with(&format!("override #{} expired", o.id)))
        );
        // Removing an override that already ended says so.
        assert!(!store.end_override(o.id, "admin", "again").await.unwrap());
        assert!(store.rebuild(false).await.unwrap().differing.is_empty());
        // An override for an unknown person is refused.
        let e = store
            .add_override(NewOverride {
                person_id: "01010112345".into(),
                path: "contact.email".into(),
                value: json!("x"),
                reason: "r".into(),
                actor: "a".into(),
                expires: None,
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no person"), "{e}");
    }

    async fn a_register_links_two_persons_and_an_undone_link_restores_both(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(b, &dir.path().join("i.db")).await;
        let (dnr, fnr) = ("43851500119", "03851598730");
        let id = |value: &str, scheme: &str, active: bool| SourceId {
            scheme: scheme.into(),
            value: value.into(),
            active,
        };
        let statement = |source: &str, ids: Vec<SourceId>, fields: &[(&str, Value)]| {
            let mut b = batch(vec![person(&[], fields)], None);
            b.source = source.into();
            b.persons[0].ids = ids;
            b
        };
        // Folkeregisteret knows the person by a D-number; KRR already
        // reports them under the new fødselsnummer: two persons for now.
        store
            .apply(statement(
                "folkeregister",
                vec![id(dnr, "no-dnr", true)],
                &[("name.given", json!("KARI"))],
            ))
            .await
            .unwrap();
        store
            .apply(statement(
                "krr",
                vec![id(fnr, "no-fnr", true)],
                &[("contact.email", json!("k@example.invalid"))],
            ))
            .await
            .unwrap();
        let a = store.person(dnr).await.unwrap().unwrap().key;
        let b = store.person(fnr).await.unwrap().unwrap().key;
        assert_ne!(a, b);
        // Another source naming both IDs links nothing: a conflict for review.
        let r = store
            .apply(statement(
                "krr",
                vec![id(dnr, "no-dnr", false), id(fnr, "no-fnr", true)],
                &[("contact.email", json!("k@example.invalid"))],
            ))
            .await
            .unwrap();
        assert_eq!(r.identity_conflicts.len(), 1);
        assert!(store.identity_links().await.unwrap().is_empty());
        // Folkeregisteret announces the change: one person, both IDs resolve.
        let r = store
            .apply(statement(
                "folkeregister",
                vec![id(dnr, "no-dnr", false), id(fnr, "no-fnr", true)],
                &[("name.given", json!("KARI"))],
            ))
            .await
            .unwrap();
        assert!(r.identity_conflicts.is_empty(), "{r:?}");
        let one = store.person(fnr).await.unwrap().unwrap();
        assert_eq!(one.key, a, "merged into the older person");
        assert_eq!(store.person(dnr).await.unwrap().unwrap().key, a);
        assert_eq!(
            one.record.fields["contact.email"].value,
            json!("k@example.invalid")
        );
        assert_eq!(one.record.fields["name.given"].value, json!("KARI"));
        assert_eq!(
            store.person_by_key(b).await.unwrap().unwrap().key,
            a,
            "the old key redirects"
        );
        assert_eq!(store.count_persons().await.unwrap(), 1);
        let active: Vec<bool> = one.ids.iter().map(|i| i.active).collect();
        assert_eq!(active, vec![true, false], "{:?}", one.ids);
        let links = store.identity_links().await.unwrap();
        assert_eq!((links.len(), links[0].survivor, links[0].merged), (1, a, b));
        assert!(store.rebuild(false).await.unwrap().differing.is_empty());

        // The admin undoes the link: both persons are back as they were.
        assert!(
            store
                .undo_link(links[0].id, "admin", "two different persons")
                .await
                .unwrap()
        );
        let pa = store.person(dnr).await.unwrap().unwrap();
        let pb = store.person(fnr).await.unwrap().unwrap();
        assert_eq!((pa.key, pb.key), (a, b));
        assert!(pa.record.fields.contains_key("name.given"));
        assert!(!pa.record.fields.contains_key("contact.email"));
        assert_eq!(
            pb.record.fields["contact.email"].value,
            json!("k@example.invalid")
        );
        assert_eq!(store.count_persons().await.unwrap(), 2);
        assert!(
            !store
                .undo_link(links[0].id, "admin", "again")
                .await
                .unwrap()
        );
        // The register says it again: not merged again on its own.
        let r = store
            .apply(statement(
                "folkeregister",
                vec![id(dnr, "no-dnr", false), id(fnr, "no-fnr", true)],
                &[("name.given", json!("KARI"))],
            ))
            .await
            .unwrap();
        assert_eq!(r.identity_conflicts.len(), 1);
        assert_eq!(store.count_persons().await.unwrap(), 2);
        assert!(store.rebuild(false).await.unwrap().differing.is_empty());
    }

    async fn a_person_without_an_id_is_matched_only_when_exactly_one_fits(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(b, &dir.path().join("n.db")).await;
        let named = |ids: &[(&str, bool)], given: &str, born: &str| {
            person(
                ids,
                &[
                    ("name.given", json!(given)),
                    ("name.family", json!("NORDMANN")),
                    ("birth.date", json!(born)),
                ],
            )
        };
        store
            .apply(batch(
                vec![named(&[("03851598730", true)], "KARI", "1985-03-03")],
                None,
            ))
            .await
            .unwrap();
        // Known by name only: exactly one fits, so it is that person
        // (names compared without regard to case).
        let mut b = batch(vec![named(&[], "Kari", "1985-03-03")], None);
        b.source = "x".into();
        let r = store.apply(b).await.unwrap();
        assert_eq!(r.persons_created, 0);
        assert_eq!(store.count_persons().await.unwrap(), 1);
        // A different birth date fits nobody: a new person, nothing to review.
        let mut b = batch(vec![named(&[], "KARI", "1990-01-01")], None);
        b.source = "x".into();
        assert_eq!(store.apply(b).await.unwrap().persons_created, 1);
        assert!(store.identity_reviews().await.unwrap().is_empty());
        // Two fit: never a guess — a new person, listed for review.
        store
            .apply(batch(
                vec![named(&[("01010112345", true)], "KARI", "1985-03-03")],
                None,
            ))
            .await
            .unwrap();
        let mut b = batch(vec![named(&[], "KARI", "1985-03-03")], None);
        b.source = "x".into();
        assert_eq!(store.apply(b).await.unwrap().persons_created, 1);
        let reviews = store.identity_reviews().await.unwrap();
        assert_eq!(reviews.len(), 1);
        assert_eq!(reviews[0].candidates.len(), 2);
        assert_eq!(store.count_persons().await.unwrap(), 4);
    }

    async fn rebuild_reports_and_repairs_a_record_that_drifted_from_the_log(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(b, &dir.path().join("r.db")).await;
        store
            .apply(batch(
                vec![person(
                    &[("03851598730", true)],
                    &[
                        ("name.given", json!("KARI")),
                        ("name.family", json!("NORDMANN")),
                    ],
                )],
                None,
            ))
            .await
            .unwrap();
        let clean = store.rebuild(false).await.unwrap();
        assert_eq!((clean.persons, clean.differing.len()), (1, 0));
        // Someone edits the derived table by hand.
        let mut tampered = store.person("03851598730").await.unwrap().unwrap().record;
        tampered.fields.get_mut("name.given").unwrap().value = json!("OLA");
        sqlx::query("UPDATE merged SET record = $1")
            .bind(serde_json::to_string(&tampered).unwrap())
            .execute(&store.pool)
            .await
            .unwrap();
        let found = store.rebuild(false).await.unwrap();
        assert_eq!(found.differing, vec![(1, vec!["name.given".to_string()])]);
        assert_eq!(
            store
                .person("03851598730")
                .await
                .unwrap()
                .unwrap()
                .record
                .fields["name.given"]
                .value,
            json!("OLA"),
            "a check changes nothing"
        );
        let fixed = store.rebuild(true).await.unwrap();
        assert_eq!(fixed.differing.len(), 1);
        let person = store.person("03851598730").await.unwrap().unwrap();
        assert_eq!(person.record.fields["name.given"].value, json!("KARI"));
        let history = store.history(person.key).await.unwrap();
        assert_eq!(
            history.last().unwrap().reason,
            "rebuild from the observation log"
        );
        assert!(store.rebuild(false).await.unwrap().differing.is_empty());
    }

    /// Contract 2.1: a field the answer does not cover keeps its stored
    /// value (a narrower scope, a withheld address); one it covers and
    /// lacks is removed. A register that starts protecting a person and
    /// stops sending the address has not moved them: the stored address
    /// stays and carries the protection at once.
    async fn a_narrower_answer_removes_only_what_it_covers(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(b, &dir.path().join("s.db")).await;
        let id = "03851598730";
        let everything = person(
            &[(id, true)],
            &[
                ("name.given", json!("KARI")),
                ("contact.email", json!("kari@example.invalid")),
                ("contact.mobile", json!("+4799999999")),
                (
                    "address.residential",
                    json!({"kind": "street", "street": "Testveien", "country": "NOR"}),
                ),
                ("address.municipality", json!("0301")),
            ],
        );
        store.apply(batch(vec![everything], None)).await.unwrap();
        // A narrower answer: no contact details, and it does not cover them.
        let mut narrower = person(&[(id, true)], &[("name.given", json!("KARI"))]);
        narrower.covers = Some(vec![
            "name.given".into(),
            "address.residential".into(),
            "address.municipality".into(),
        ]);
        let mut b2 = batch(vec![narrower], None);
        b2.retrieved = Utc::now() + chrono::Duration::seconds(1);
        store.apply(b2).await.unwrap();
        let p = store.person(id).await.unwrap().unwrap();
        assert_eq!(
            p.record.fields["contact.email"].value,
            json!("kari@example.invalid")
        );
        assert_eq!(
            p.record.fields["contact.mobile"].value,
            json!("+4799999999")
        );
        // The answer covered the address and lacked it: removed.
        assert!(
            !p.record.fields.contains_key("address.residential"),
            "{:?}",
            p.record.fields.keys()
        );
        assert!(!p.record.fields.contains_key("address.municipality"));
        // Now the register covers the e-mail and has none: removed; the
        // mobile, not covered, stays.
        let mut covering = person(&[(id, true)], &[("name.given", json!("KARI"))]);
        covering.covers = Some(vec!["name.given".into(), "contact.email".into()]);
        let mut b3 = batch(vec![covering], None);
        b3.retrieved = Utc::now() + chrono::Duration::seconds(2);
        store.apply(b3).await.unwrap();
        let p = store.person(id).await.unwrap().unwrap();
        assert!(!p.record.fields.contains_key("contact.email"));
        assert_eq!(
            p.record.fields["contact.mobile"].value,
            json!("+4799999999")
        );

        // Protection arrives without the address: no move, and the stored
        // address is protected at once.
        let other = "20036914700";
        let home = json!({"kind": "street", "street": "Gata", "country": "NOR"});
        store
            .apply(batch(
                vec![person(
                    &[(other, true)],
                    &[
                        ("address.residential", home.clone()),
                        ("address.municipality", json!("0301")),
                    ],
                )],
                None,
            ))
            .await
            .unwrap();
        let mut graded = person(
            &[(other, true)],
            &[("protection.level", json!("STRENGT_FORTROLIG"))],
        );
        graded.covers = Some(vec!["protection.level".into(), "name.given".into()]);
        let mut b4 = batch(vec![graded], None);
        b4.retrieved = Utc::now() + chrono::Duration::seconds(3);
        store.apply(b4).await.unwrap();
        let p = store.person(other).await.unwrap().unwrap();
        let address = &p.record.fields["address.residential"];
        assert_eq!(address.value, home);
        assert!(
            address.labels.iter().any(|l| l == "STRENGT_FORTROLIG"),
            "{:?}",
            address.labels
        );
        assert!(
            p.record.fields["address.municipality"]
                .labels
                .iter()
                .any(|l| l == "STRENGT_FORTROLIG")
        );
    }

    async fn apply_merge_retract_history_and_id_change(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(b, &dir.path().join("s.db")).await;
        let r = store
            .apply(batch(
                vec![person(
                    &[("43851500119", true)],
                    &[
                        ("name.given", json!("KARI")),
                        ("death.date", json!("2020-01-01")),
                    ],
                )],
                Some("5"),
            ))
            .await
            .unwrap();
        assert_eq!(r.persons_created, 1);
        assert_eq!(
            store.cursor("folkeregister").await.unwrap().as_deref(),
            Some("5")
        );
        // Same data again: unchanged, no new observations.
        let r = store
            .apply(batch(
                vec![person(
                    &[("43851500119", true)],
                    &[
                        ("name.given", json!("KARI")),
                        ("death.date", json!("2020-01-01")),
                    ],
                )],
                None,
            ))
            .await
            .unwrap();
        assert_eq!((r.persons_unchanged, r.observations_added), (1, 0));
        // The D-number gets a fødselsnummer; death retracted; name changed.
        let r = store
            .apply(batch(
                vec![person(
                    &[("43851500119", false), ("03851598730", true)],
                    &[("name.given", json!("KARIANNE"))],
                )],
                Some("9"),
            ))
            .await
            .unwrap();
        assert_eq!(r.persons_changed, 1);
        let by_old = store.person("43851500119").await.unwrap().unwrap();
        let by_new = store.person("03851598730").await.unwrap().unwrap();
        assert_eq!(by_old.key, by_new.key);
        assert_eq!(by_new.record.fields["name.given"].value, json!("KARIANNE"));
        assert!(!by_new.record.fields.contains_key("death.date"));
        assert_eq!(by_new.ids[0].value, "03851598730");
        let history = store.history(by_new.key).await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].diff["name.given"]["from"], json!("KARI"));
        assert_eq!(
            store.active_ids(&["no-fnr"]).await.unwrap(),
            vec!["03851598730".to_string()]
        );
    }

    async fn installations_are_audited_and_survive_reopen(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let url = test_url(b, &dir.path().join("s.db"));
        {
            let store = SqlStore::open_url(&url, MergeRules::default(), OpenMode::Migrate)
                .await
                .unwrap();
            let inst = Installation {
                connector: "folkeregister".into(),
                version: "1.0.0".into(),
                digest: "ab".into(),
                contract: "1.0.0".into(),
                pinned: true,
                installed_at: Utc::now(),
                installed_by: "admin".into(),
            };
            store.install(inst, "first install").await.unwrap();
            let run = store
                .start_run("sync", Some("folkeregister"))
                .await
                .unwrap();
            store
                .finish_run(
                    run,
                    RunStatus::Succeeded,
                    &RunCounts {
                        fetched: 3,
                        ..Default::default()
                    },
                    &[],
                )
                .await
                .unwrap();
        }
        let store = SqlStore::open_url(&url, MergeRules::default(), OpenMode::Migrate)
            .await
            .unwrap();
        let inst = store.installation("folkeregister").await.unwrap().unwrap();
        assert!(inst.pinned);
        assert_eq!(
            store.audit("folkeregister").await.unwrap()[0].action,
            "install"
        );
        assert_eq!(store.runs(10).await.unwrap()[0].counts.fetched, 3);
    }

    async fn the_access_log_is_append_only_and_clients_keep_their_names(b: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(b, &dir.path().join("s.db")).await;
        let entry = |person: i64| AccessEntry {
            at: Utc::now(),
            client: "school".into(),
            basis: "school".into(),
            purpose: "pupils".into(),
            person,
            endpoint: "GET /v1/persons/{id}".into(),
            fields: vec!["name.given".into()],
            criteria: None,
        };
        store
            .log_access(&(1..=250).map(entry).collect::<Vec<_>>())
            .await
            .unwrap();
        let all = store
            .access_log(&AccessQuery {
                limit: 1000,
                ..AccessQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 250);
        let mut want = entry(250);
        want.at = all[249].entry.at;
        assert_eq!(all[249].entry, want);
        // 250 reads of the same fields: the list is stored once.
        let sets: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM access_field_sets")
            .fetch_one(&store.access)
            .await
            .unwrap();
        assert_eq!(sets, 1);
        for sql in [
            "UPDATE access_log SET client = 'nobody'",
            "DELETE FROM access_log WHERE seq = 1",
            "UPDATE access_field_sets SET fields = '[]'",
            "DELETE FROM access_field_sets",
        ] {
            let e = sqlx::query(sql).execute(&store.access).await.unwrap_err();
            assert!(e.to_string().contains("append-only"), "{e}");
        }
        // An insert may not replace a row (issue 16: SQLite fires no delete
        // trigger on REPLACE; PostgreSQL's upsert is an update).
        let replaces: &[&str] = match b {
            Backend::Sqlite => &[
                "INSERT OR REPLACE INTO access_log (seq, at, client, basis, purpose, person_id, endpoint, field_set, criteria, hash)
                 SELECT seq, at, 'nobody', basis, purpose, person_id, endpoint, field_set, criteria, hash FROM access_log WHERE seq = 1",
                "REPLACE INTO access_field_sets (id, fields) VALUES (1, '[]')",
                "INSERT OR REPLACE INTO access_field_sets (fields) VALUES ('[\"name.given\"]')",
            ],
            Backend::Postgres => &[
                "INSERT INTO access_log (seq, at, client, basis, purpose, person_id, endpoint, field_set, criteria, hash)
                 SELECT seq, at, 'nobody', basis, purpose, person_id, endpoint, field_set, criteria, hash FROM access_log WHERE seq = 1
                 ON CONFLICT (seq) DO UPDATE SET client = 'nobody'",
                "INSERT INTO access_field_sets (id, fields) VALUES (1, '[]') ON CONFLICT (id) DO UPDATE SET fields = '[]'",
            ],
        };
        for sql in replaces {
            let e = sqlx::query(sql).execute(&store.access).await.unwrap_err();
            assert!(e.to_string().contains("append-only"), "{sql}: {e}");
        }
        // The chain holds; an edit made past the triggers (as whoever owns
        // the file or the tables can) is found at its entry.
        let report = store.verify_access_log().await.unwrap();
        assert_eq!((report.entries, report.before_chain), (250, 0));
        assert_eq!(report.broken, None);
        assert_eq!(report.head.as_ref().map(|h| h.seq), Some(250));
        let bypass: &[&str] = match b {
            Backend::Sqlite => &["DROP TRIGGER access_log_no_update"],
            Backend::Postgres => &["ALTER TABLE access_log DISABLE TRIGGER USER"],
        };
        for sql in bypass {
            sqlx::query(sql).execute(&store.access).await.unwrap();
        }
        sqlx::query("UPDATE access_log SET client = 'nobody' WHERE seq = 100")
            .execute(&store.access)
            .await
            .unwrap();
        let report = store.verify_access_log().await.unwrap();
        assert_eq!(report.broken.map(|b| b.seq), Some(100));
        assert_eq!(report.head, None);
        let page = store
            .access_log(&AccessQuery {
                person: Some(7),
                after: 0,
                limit: 10,
                ..AccessQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);

        let new = |name: &str, hash: &str| NewClient {
            name: name.into(),
            auth: ClientAuth::ApiKey,
            secret_sha256: hash.into(),
            basis: "school".into(),
            purpose: "pupils".into(),
            admin: false,
            rate_limit: 10,
            persons_per_minute: 60_000,
            created_by: "test".into(),
        };
        store.add_client(new("school", "aa")).await.unwrap();
        assert!(store.client_by_secret("aa").await.unwrap().is_some());
        assert!(store.revoke_client("school", "ops", "done").await.unwrap());
        assert!(store.client_by_secret("aa").await.unwrap().is_none());
        assert!(!store.revoke_client("school", "ops", "again").await.unwrap());
        let e = store.add_client(new("school", "bb")).await.unwrap_err();
        assert!(e.to_string().contains("exists already"), "{e}");
    }
}
