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
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "overrides and conflicts",
        include_str!("../../migrations/sqlite/0002_overrides_conflicts.sql"),
    ),
    (
        3,
        "clients",
        include_str!("../../migrations/sqlite/0003_clients.sql"),
    ),
    (
        4,
        "leases and work queue",
        include_str!("../../migrations/sqlite/0004_leases.sql"),
    ),
    (
        5,
        "server secrets",
        include_str!("../../migrations/sqlite/0005_server_secrets.sql"),
    ),
    (
        6,
        "the release of each run",
        include_str!("../../migrations/sqlite/0006_run_release.sql"),
    ),
    (
        7,
        "clients that may fetch",
        include_str!("../../migrations/sqlite/0007_client_fetch.sql"),
    ),
    (
        8,
        "follow sets and retention",
        include_str!("../../migrations/sqlite/0008_follows.sql"),
    ),
    (
        9,
        "webhooks",
        include_str!("../../migrations/sqlite/0009_webhooks.sql"),
    ),
];

/// Migrations of SQLite's access-log database.
const SQLITE_ACCESS_MIGRATIONS: &[Migration] = &[
    (
        1,
        "access log",
        include_str!("../../migrations/sqlite-access/0001_access_log.sql"),
    ),
    (
        2,
        "tamper-evident access log",
        include_str!("../../migrations/sqlite-access/0002_tamper_evident.sql"),
    ),
];

/// PostgreSQL: the same versions as SQLite; the access log lives in the
/// same database (version 3, with the clients).
const POSTGRES_MIGRATIONS: &[Migration] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "overrides and conflicts",
        include_str!("../../migrations/postgres/0002_overrides_conflicts.sql"),
    ),
    (
        3,
        "clients and access log",
        include_str!("../../migrations/postgres/0003_clients_access_log.sql"),
    ),
    (
        4,
        "leases and work queue",
        include_str!("../../migrations/postgres/0004_leases.sql"),
    ),
    (
        5,
        "server secrets and tamper-evident access log",
        include_str!("../../migrations/postgres/0005_tamper_evident.sql"),
    ),
    (
        6,
        "the release of each run",
        include_str!("../../migrations/postgres/0006_run_release.sql"),
    ),
    (
        7,
        "clients that may fetch",
        include_str!("../../migrations/postgres/0007_client_fetch.sql"),
    ),
    (
        8,
        "follow sets and retention",
        include_str!("../../migrations/postgres/0008_follows.sql"),
    ),
    (
        9,
        "webhooks",
        include_str!("../../migrations/postgres/0009_webhooks.sql"),
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
    let auth: String = row.col("auth")?;
    let opt_ts = |name: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        row.col::<Option<&str>>(name)?.map(parse_ts).transpose()
    };
    Ok(Client {
        id: row.col("id")?,
        name: row.col("name")?,
        auth: ClientAuth::parse(&auth).ok_or_else(|| corrupt("client auth", &auth))?,
        basis: row.col("basis")?,
        purpose: row.col("purpose")?,
        admin: flag(row, "admin"),
        may_fetch: flag(row, "may_fetch"),
        rate_limit: row
            .try_get::<i64, _>("rate_limit")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        persons_per_minute: row
            .try_get::<i64, _>("persons_per_minute")?
            .clamp(0, i64::from(u32::MAX)) as u32,
        created_at: parse_ts(row.col::<&str>("created_at")?)?,
        created_by: row.col("created_by")?,
        revoked_at: opt_ts("revoked_at")?,
        revoked_by: row.col("revoked_by")?,
        revoked_reason: row.col("revoked_reason")?,
    })
}

/// A person from a row of [`Backend::person_columns`].
fn stored_person(row: &AnyRow) -> Result<StoredPerson, StoreError> {
    let ids: Vec<(String, String, bool)> =
        serde_json::from_str(row.col::<&str>("ids")?).map_err(|e| corrupt("identifiers", e))?;
    Ok(StoredPerson {
        key: row.col("person_id")?,
        ids: ids
            .into_iter()
            .map(|(scheme, value, active)| StoredId {
                scheme,
                value,
                active,
            })
            .collect(),
        record: serde_json::from_str(row.col::<&str>("record")?)
            .map_err(|e| corrupt("merged record", e))?,
        version: row.col("version")?,
        updated_at: parse_ts(row.col::<&str>("updated_at")?)?,
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

mod access;
mod apply;
mod follows;
mod installations;
mod jobs;
mod persons;
#[cfg(test)]
mod tests;
mod webhooks;

use apply::*;

/// Reads a column of a row, or says which column could not be decoded: a
/// value the store cannot read is a [`StoreError::CorruptRow`], never a
/// panic (`Row::get` panics).
trait Col {
    fn col<'r, T>(&'r self, column: &str) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, Any> + sqlx::Type<Any>;
}

impl Col for AnyRow {
    fn col<'r, T>(&'r self, column: &str) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
    {
        self.try_get(column).map_err(|e| StoreError::CorruptRow {
            column: column.to_string(),
            message: e.to_string(),
        })
    }
}
