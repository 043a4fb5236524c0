//! The SQLite implementation of [`PersonStore`]: WAL, one writer at a time,
//! batched transactions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use folkhub_core::MergedRecord;
use folkhub_core::contract::FoundPerson;
use folkhub_core::merge::{self, Candidate, MergeRules};
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use tokio::sync::Mutex;

use crate::*;

const MIGRATIONS: &[(i64, &str, &str)] = &[
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
];

/// Migrations of the access-log database.
const ACCESS_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "access log",
    include_str!("../migrations/sqlite-access/0001_access_log.sql"),
)];

pub struct SqliteStore {
    pool: SqlitePool,
    /// The access log's own database (see [`SqliteStore::access_path`]).
    access: SqlitePool,
    /// Its writer.
    access_writer: Mutex<()>,
    rules: MergeRules,
    /// SQLite has one writer; queueing here avoids busy errors.
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

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub async fn open(path: &Path, rules: MergeRules) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let store = SqliteStore {
            pool: connect(path).await?,
            access: connect(&Self::access_path(path)).await?,
            access_writer: Mutex::new(()),
            rules,
            writer: Mutex::new(()),
        };
        {
            let _w = store.writer.lock().await;
            migrate(&store.pool, MIGRATIONS).await?;
        }
        {
            let _w = store.access_writer.lock().await;
            migrate(&store.access, ACCESS_MIGRATIONS).await?;
        }
        Ok(store)
    }

    /// Where the access log of the store at `path` lives: beside it,
    /// `folkhub.db` → `folkhub-access.db`. Back both files up together.
    pub fn access_path(path: &Path) -> std::path::PathBuf {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "folkhub".into());
        path.with_file_name(format!("{stem}-access.db"))
    }

    /// A write transaction. `BEGIN IMMEDIATE` takes the write lock at the
    /// start, so the busy timeout applies when another process writes (a
    /// deferred transaction that read first and then writes fails at once
    /// when someone else committed in between: `folkhub sync` beside a busy
    /// `folkhub serve` writing its access log did).
    async fn write_tx(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Persons by their (surviving) keys, in one query. Many records are
    /// parsed on two threads (a batch of 1,000 spends most of its time in
    /// JSON parsing).
    async fn load_persons(&self, keys: &[i64]) -> Result<BTreeMap<i64, StoredPerson>, StoreError> {
        if keys.is_empty() {
            return Ok(BTreeMap::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {PERSON_COLUMNS} FROM json_each(?) j JOIN merged m ON m.person_id = j.value"
        ))
        .bind(json!(keys).to_string())
        .fetch_all(&self.pool)
        .await?;
        let parse = |rows: Vec<sqlx::sqlite::SqliteRow>| -> Result<Vec<StoredPerson>, StoreError> {
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

fn client_from(row: &sqlx::sqlite::SqliteRow) -> Result<Client, StoreError> {
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
        admin: row.get("admin"),
        rate_limit: row
            .get::<i64, _>("rate_limit")
            .clamp(0, i64::from(u32::MAX)) as u32,
        created_at: parse_ts(row.get::<&str, _>("created_at"))?,
        created_by: row.get("created_by"),
        revoked_at: opt_ts("revoked_at")?,
        revoked_by: row.get("revoked_by"),
        revoked_reason: row.get("revoked_reason"),
    })
}

/// The columns of a merged record with its IDs as a JSON array (`ids`),
/// for queries that read whole persons.
const PERSON_COLUMNS: &str = "m.person_id, m.record, m.version, m.updated_at,
    (SELECT json_group_array(json_array(scheme, value, CASE WHEN active THEN json('true') ELSE json('false') END)) FROM
       (SELECT scheme, value, active FROM identifiers
        WHERE person_id = m.person_id ORDER BY active DESC, first_seen)) AS ids";

/// A person from a row of [`PERSON_COLUMNS`].
fn stored_person(row: &sqlx::sqlite::SqliteRow) -> Result<StoredPerson, StoreError> {
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

/// Opens (creating if needed) one SQLite database file: WAL, normal sync,
/// foreign keys, a busy timeout for other processes' writers.
async fn connect(path: &Path) -> Result<SqlitePool, StoreError> {
    let open_error = |e: &dyn std::fmt::Display| StoreError::Open {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .map_err(|e| open_error(&e))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    // Readers run side by side (WAL); writers queue on the store's mutexes.
    // No ping before each use: the file is local, and the ping is a round
    // trip to the connection's worker thread per statement (a third of the
    // API's time per read in a profile).
    SqlitePoolOptions::new()
        .max_connections(8)
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|e| open_error(&e))
}

/// Applies the migrations a database has not had yet, each in its own
/// transaction with its record in `folkhub_migrations`.
async fn migrate(pool: &SqlitePool, migrations: &[(i64, &str, &str)]) -> Result<(), StoreError> {
    sqlx::query("CREATE TABLE IF NOT EXISTS folkhub_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
        .execute(pool)
        .await?;
    for (version, name, sql) in migrations {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM folkhub_migrations WHERE version = ?")
                .bind(version)
                .fetch_optional(pool)
                .await?;
        if done.is_some() {
            continue;
        }
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO folkhub_migrations (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(version)
            .bind(name)
            .bind(ts(now()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Finds or creates the person a record belongs to, and links its IDs.
/// Finds (or creates) the person a record is about. IDs the record names
/// that we hold for another person are returned as `(id, owner)`; the
/// caller decides whether the register may link them.
async fn resolve(
    tx: &mut Transaction<'_, Sqlite>,
    rules: &MergeRules,
    source: &str,
    person: &FoundPerson,
    at: &str,
) -> Result<(i64, bool, Vec<(String, String, i64)>), StoreError> {
    let mut owners: BTreeMap<String, i64> = BTreeMap::new();
    for id in &person.ids {
        if let Some(owner) =
            sqlx::query_scalar::<_, i64>("SELECT person_id FROM identifiers WHERE value = ?")
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
            let fits: Vec<i64> = sqlx::query_scalar(
                "SELECT person_id FROM merged
                 WHERE json_extract(record, '$.fields.\"birth.date\".value') = ?
                   AND upper(json_extract(record, '$.fields.\"name.family\".value')) = ?
                   AND upper(json_extract(record, '$.fields.\"name.given\".value')) = ?
                 ORDER BY person_id",
            )
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
                sqlx::query_scalar("INSERT INTO persons (created_at) VALUES (?) RETURNING id")
                    .bind(at)
                    .fetch_one(&mut **tx)
                    .await?;
            (key, true)
        }
    };
    if !review.is_empty() {
        sqlx::query(
            "INSERT INTO identity_reviews (person_id, candidates, source, at) VALUES (?, ?, ?, ?)",
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
                sqlx::query("INSERT INTO identifiers (value, scheme, person_id, active, source, first_seen, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
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
    tx: &mut Transaction<'_, Sqlite>,
    rules: &MergeRules,
    source: &str,
    id: &folkhub_core::observation::SourceId,
    at: &str,
) -> Result<(), StoreError> {
    if rules.issues(source, &id.scheme) {
        sqlx::query("UPDATE identifiers SET active = ?, source = ?, updated_at = ? WHERE value = ? AND (active <> ? OR source <> ?)")
            .bind(id.active)
            .bind(source)
            .bind(at)
            .bind(&id.value)
            .bind(id.active)
            .bind(source)
            .execute(&mut **tx)
            .await?;
    } else {
        sqlx::query("UPDATE identifiers SET active = ?, updated_at = ? WHERE value = ? AND active <> ? AND source = ?")
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
async fn rederive_current(tx: &mut Transaction<'_, Sqlite>, key: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM current_observations WHERE person_id = ?")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO current_observations (person_id, source, path, observation_id, value, labels, release, upstream_version, effective_at, retrieved_at)
         SELECT person_id, source, path, id, value, labels, release, upstream_version, effective_at, retrieved_at FROM (
           SELECT o.*, ROW_NUMBER() OVER (PARTITION BY source, path ORDER BY retrieved_at DESC, id DESC) AS rn
           FROM observations o WHERE person_id = ?)
         WHERE rn = 1 AND value IS NOT NULL",
    )
    .bind(key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `source_refresh` of a person from the log (the latest statement time
/// per source), after observations moved between persons.
async fn rederive_refresh(tx: &mut Transaction<'_, Sqlite>, key: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM source_refresh WHERE person_id = ?")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO source_refresh (person_id, source, retrieved_at)
         SELECT person_id, source, MAX(retrieved_at) FROM observations WHERE person_id = ? GROUP BY source",
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
    tx: &mut Transaction<'_, Sqlite>,
    key: i64,
) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
    let rows = sqlx::query(
        "SELECT co.source, co.path, co.value, co.labels, co.release, co.upstream_version, co.effective_at,
                COALESCE(sr.retrieved_at, co.retrieved_at) AS retrieved_at
         FROM current_observations co
         LEFT JOIN source_refresh sr ON sr.person_id = co.person_id AND sr.source = co.source
         WHERE co.person_id = ?",
    )
    .bind(key)
    .fetch_all(&mut **tx)
    .await?;
    candidates_from_rows(rows)
}

/// Statements read from the log or its index, by path.
fn candidates_from_rows(
    rows: Vec<sqlx::sqlite::SqliteRow>,
) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
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
fn change_from(r: &sqlx::sqlite::SqliteRow) -> Result<PersonChange, StoreError> {
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
    tx: &mut Transaction<'_, Sqlite>,
    key: i64,
) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
    let mut out = load_candidates(tx, key).await?;
    override_candidates(tx, key, &mut out).await?;
    Ok(out)
}

/// Open overrides of a person as candidates (source `override`).
async fn override_candidates(
    tx: &mut Transaction<'_, Sqlite>,
    key: i64,
    out: &mut BTreeMap<String, Vec<Candidate>>,
) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT id, path, value, created_at FROM overrides WHERE person_id = ? AND ended_at IS NULL ORDER BY id",
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
    tx: &mut Transaction<'_, Sqlite>,
    key: i64,
) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
    let rows = sqlx::query(
        "SELECT o.source, o.path, o.value, o.labels, o.release, o.upstream_version, o.effective_at,
                COALESCE(sr.retrieved_at, o.retrieved_at) AS retrieved_at
         FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY source, path ORDER BY retrieved_at DESC, id DESC) AS rn
               FROM observations WHERE person_id = ?) o
         LEFT JOIN source_refresh sr ON sr.person_id = ? AND sr.source = o.source
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

impl SqliteStore {
    async fn apply_person(
        &self,
        tx: &mut Transaction<'_, Sqlite>,
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
            "SELECT retrieved_at FROM source_refresh WHERE person_id = ? AND source = ?",
        )
        .bind(key)
        .bind(&batch.source)
        .fetch_optional(&mut **tx)
        .await?;
        if last.is_some_and(|last| last > at) {
            report.persons_unchanged += 1;
            return Ok(());
        }
        let rows = sqlx::query("SELECT path, value, labels, effective_at FROM current_observations WHERE person_id = ? AND source = ?")
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
            // One multi-row insert into the log and one into its index: the
            // rows get consecutive ids in VALUES order (one writer, one
            // transaction), the last of which SQLite reports.
            report.observations_added += fresh.len() as u64;
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; fresh.len()].join(", ");
            let sql = format!(
                "INSERT INTO observations (person_id, path, value, labels, source, release, upstream_version, effective_at, retrieved_at) VALUES {rows}"
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
            let last = q.execute(&mut **tx).await?.last_insert_rowid();
            let first = last - fresh.len() as i64 + 1;
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; fresh.len()].join(", ");
            let sql = format!(
                "INSERT INTO current_observations (person_id, source, path, observation_id, value, labels, release, upstream_version, effective_at, retrieved_at) VALUES {rows}
                 ON CONFLICT (person_id, source, path) DO UPDATE SET observation_id = excluded.observation_id, value = excluded.value, labels = excluded.labels,
                 release = excluded.release, upstream_version = excluded.upstream_version, effective_at = excluded.effective_at, retrieved_at = excluded.retrieved_at"
            );
            let mut q = sqlx::query(&sql);
            for (i, (path, value, labels, effective)) in fresh.iter().enumerate() {
                q = q
                    .bind(key)
                    .bind(&batch.source)
                    .bind(*path)
                    .bind(first + i as i64)
                    .bind(value)
                    .bind(labels)
                    .bind(&batch.release)
                    .bind(&person.upstream_version)
                    .bind(effective)
                    .bind(&at);
            }
            q.execute(&mut **tx).await?;
        }
        // Whatever the source said before and no longer says is retracted.
        for path in current.keys() {
            report.observations_added += 1;
            sqlx::query(
                "INSERT INTO observations (person_id, path, value, labels, source, release, upstream_version, effective_at, retrieved_at) VALUES (?, ?, NULL, '[]', ?, ?, ?, NULL, ?)",
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
                "DELETE FROM current_observations WHERE person_id = ? AND source = ? AND path = ?",
            )
            .bind(key)
            .bind(&batch.source)
            .bind(path)
            .execute(&mut **tx)
            .await?;
        }
        sqlx::query("INSERT INTO source_refresh (person_id, source, retrieved_at) VALUES (?, ?, ?) ON CONFLICT (person_id, source) DO UPDATE SET retrieved_at = excluded.retrieved_at")
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
        tx: &mut Transaction<'_, Sqlite>,
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
                "SELECT id FROM identity_merges WHERE undone_at IS NOT NULL AND ((survivor = ? AND merged = ?) OR (survivor = ? AND merged = ?))",
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
        tx: &mut Transaction<'_, Sqlite>,
        survivor: i64,
        merged: i64,
        source: &str,
        ids: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        let moved_ids: Vec<String> =
            sqlx::query_scalar("SELECT value FROM identifiers WHERE person_id = ?")
                .bind(merged)
                .fetch_all(&mut **tx)
                .await?;
        let moved_obs: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM observations WHERE person_id = ?")
                .bind(merged)
                .fetch_all(&mut **tx)
                .await?;
        let moved_changes: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM person_changes WHERE person_id = ?")
                .bind(merged)
                .fetch_all(&mut **tx)
                .await?;
        for table in ["identifiers", "observations", "person_changes", "overrides"] {
            sqlx::query(&format!(
                "UPDATE {table} SET person_id = ? WHERE person_id = ?"
            ))
            .bind(survivor)
            .bind(merged)
            .execute(&mut **tx)
            .await?;
        }
        for table in ["current_observations", "conflicts", "merged"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE person_id = ?"))
                .bind(merged)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query("UPDATE persons SET merged_into = ? WHERE id = ?")
            .bind(survivor)
            .bind(merged)
            .execute(&mut **tx)
            .await?;
        rederive_current(tx, survivor).await?;
        rederive_refresh(tx, survivor).await?;
        sqlx::query("DELETE FROM source_refresh WHERE person_id = ?")
            .bind(merged)
            .execute(&mut **tx)
            .await?;
        let reason = format!("{source} says {ids} are one person");
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO identity_merges (survivor, merged, source, reason, at, moved_ids, moved_observations, moved_changes) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
        tx: &mut Transaction<'_, Sqlite>,
        key: i64,
        created: bool,
        at: &str,
        reason: &str,
        report: &mut ApplyReport,
    ) -> Result<(), StoreError> {
        let candidates = current_candidates(tx, key).await?;
        let merged = merge::merge(&self.rules, &candidates);
        let previous = sqlx::query("SELECT record, version FROM merged WHERE person_id = ?")
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
                sqlx::query("UPDATE merged SET record = ? WHERE person_id = ?")
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
        sqlx::query("INSERT INTO merged (person_id, record, version, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (person_id) DO UPDATE SET record = excluded.record, version = excluded.version, updated_at = excluded.updated_at")
            .bind(key)
            .bind(&record)
            .bind(version + 1)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO person_changes (person_id, changed_at, version, diff, reason) VALUES (?, ?, ?, ?, ?)")
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
    tx: &mut Transaction<'_, Sqlite>,
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
        sqlx::query("DELETE FROM conflicts WHERE person_id = ? AND path = ?")
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
            "INSERT INTO conflicts (person_id, path, candidates, opened_at) VALUES (?, ?, ?, ?)
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

impl SqliteStore {
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
            sqlx::query("SELECT version, digest FROM installations WHERE connector = ?")
                .bind(connector)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(false);
        };
        let (version, digest): (String, String) = (row.get("version"), row.get("digest"));
        if let Some(pinned) = pinned {
            sqlx::query("UPDATE installations SET pinned = ? WHERE connector = ?")
                .bind(pinned)
                .bind(connector)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO installation_audit (connector, at, actor, action, version_before, digest_before, version_after, digest_after, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

fn installation_from(row: &sqlx::sqlite::SqliteRow) -> Result<Installation, StoreError> {
    Ok(Installation {
        connector: row.get("connector"),
        version: row.get("version"),
        digest: row.get("digest"),
        contract: row.get("contract"),
        pinned: row.get("pinned"),
        installed_at: parse_ts(row.get::<&str, _>("installed_at"))?,
        installed_by: row.get("installed_by"),
    })
}

#[async_trait]
impl PersonStore for SqliteStore {
    async fn apply(&self, batch: Batch) -> Result<ApplyReport, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let mut report = ApplyReport::default();
        for person in &batch.persons {
            self.apply_person(&mut tx, &batch, person, &mut report)
                .await?;
        }
        if let Some(cursor) = &batch.cursor {
            sqlx::query("INSERT INTO cursors (connector, cursor, updated_at) VALUES (?, ?, ?) ON CONFLICT (connector) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at")
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
            "SELECT {PERSON_COLUMNS}
             FROM identifiers i JOIN persons p ON p.id = i.person_id
             JOIN merged m ON m.person_id = COALESCE(p.merged_into, p.id)
             WHERE i.value = ?"
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
        let rows = sqlx::query(
            "SELECT i.value, COALESCE(p.merged_into, p.id) AS key
             FROM json_each(?) j JOIN identifiers i ON i.value = j.value
             JOIN persons p ON p.id = i.person_id",
        )
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
                sqlx::query_scalar(
                    "SELECT DISTINCT p.id FROM identifiers i JOIN persons p ON p.id = i.person_id
                     WHERE i.value >= ?1 AND i.value < ?1 || char(65535)
                       AND p.merged_into IS NULL AND p.id > ?2
                     ORDER BY p.id LIMIT ?3",
                )
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
                sqlx::query_scalar(
                    "SELECT m.person_id FROM merged m JOIN persons p ON p.id = m.person_id
                     WHERE json_extract(m.record, '$.fields.\"birth.date\".value') = ?1
                       AND p.merged_into IS NULL AND m.person_id > ?2
                       AND instr(lower(json_extract(m.record, '$.fields.\"name.family\".value')), lower(?3)) = 1
                       AND (?4 IS NULL OR instr(lower(json_extract(m.record, '$.fields.\"name.given\".value')), lower(?4)) = 1)
                     ORDER BY m.person_id LIMIT ?5",
                )
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
        let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM clients WHERE name = ?")
            .bind(&client.name)
            .fetch_optional(&self.pool)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Refused(format!(
                "a client named {:?} exists already (names stay taken after a revoke, so the access log stays clear); choose another name",
                client.name
            )));
        }
        let row = sqlx::query("INSERT INTO clients (name, auth, secret_sha256, basis, purpose, admin, rate_limit, created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *")
            .bind(&client.name)
            .bind(client.auth.as_str())
            .bind(&client.secret_sha256)
            .bind(&client.basis)
            .bind(&client.purpose)
            .bind(client.admin)
            .bind(i64::from(client.rate_limit))
            .bind(ts(now()))
            .bind(&client.created_by)
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
        sqlx::query("SELECT * FROM clients WHERE secret_sha256 = ? AND revoked_at IS NULL")
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
        let done = sqlx::query("UPDATE clients SET revoked_at = ?, revoked_by = ?, revoked_reason = ? WHERE name = ? AND revoked_at IS NULL")
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
        // One fixed statement whatever the group's size: the entries travel
        // as one JSON array and SQLite unpacks them (prepared once, one
        // round trip to the connection's thread, its own transaction).
        let rows: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!([
                    ts(e.at),
                    e.client,
                    e.basis,
                    e.purpose,
                    e.person,
                    e.endpoint,
                    e.fields
                ])
            })
            .collect();
        let _w = self.access_writer.lock().await;
        sqlx::query(
            "INSERT INTO access_log_in (at, client, basis, purpose, person_id, endpoint, fields)
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                    json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                    json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                    json_extract(value, '$[6]')
             FROM json_each(?) ORDER BY key",
        )
        .bind(Value::Array(rows).to_string())
        .execute(&self.access)
        .await?;
        Ok(())
    }

    async fn access_log(&self, q: &AccessQuery) -> Result<Vec<AccessRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.*, f.fields FROM access_log a JOIN access_field_sets f ON f.id = a.field_set
             WHERE seq > ?1
               AND (?2 IS NULL OR client = ?2) AND (?3 IS NULL OR person_id = ?3)
               AND (?4 IS NULL OR at >= ?4) AND (?5 IS NULL OR at < ?5)
             ORDER BY seq LIMIT ?6",
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
                let fields: String = row.get("fields");
                Ok(AccessRecord {
                    seq: row.get("seq"),
                    entry: AccessEntry {
                        at: parse_ts(row.get::<&str, _>("at"))?,
                        client: row.get("client"),
                        basis: row.get("basis"),
                        purpose: row.get("purpose"),
                        person: row.get("person_id"),
                        endpoint: row.get("endpoint"),
                        fields: serde_json::from_str(&fields)
                            .map_err(|e| corrupt("access log fields", e))?,
                    },
                })
            })
            .collect()
    }

    async fn persons_after(&self, after: i64, limit: u32) -> Result<Vec<StoredPerson>, StoreError> {
        let keys: Vec<i64> = sqlx::query_scalar(
            "SELECT person_id FROM merged WHERE person_id > ? ORDER BY person_id LIMIT ?",
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
            "SELECT {PERSON_COLUMNS}
             FROM persons p JOIN merged m ON m.person_id = COALESCE(p.merged_into, p.id)
             WHERE p.id = ?"
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
                "SELECT value FROM identifiers WHERE scheme = ? AND active = 1 ORDER BY value",
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
            let mut list: Vec<String> = sqlx::query_scalar(
                "SELECT i.value FROM identifiers i JOIN merged m ON m.person_id = i.person_id
                 WHERE i.scheme = ? AND i.active = 1
                   AND json_extract(m.record, '$.fields.\"address.municipality\".value') = ?
                 ORDER BY i.value",
            )
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
            "SELECT i.value FROM identifiers i JOIN source_refresh sr ON sr.person_id = i.person_id AND sr.source = ? WHERE sr.retrieved_at >= ?",
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
        let rows = sqlx::query("SELECT seq, person_id, changed_at, version, diff, reason FROM person_changes WHERE person_id = ? ORDER BY seq")
            .bind(person)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(change_from).collect()
    }

    async fn changes_since(&self, seq: i64, limit: u32) -> Result<Vec<PersonChange>, StoreError> {
        let rows = sqlx::query("SELECT seq, person_id, changed_at, version, diff, reason FROM person_changes WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(change_from).collect()
    }

    async fn cursor(&self, connector: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT cursor FROM cursors WHERE connector = ?")
                .bind(connector)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn installation(&self, connector: &str) -> Result<Option<Installation>, StoreError> {
        let row = sqlx::query("SELECT * FROM installations WHERE connector = ?")
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
        let before = sqlx::query("SELECT version, digest FROM installations WHERE connector = ?")
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
            "INSERT INTO installations (connector, version, digest, contract, pinned, installed_at, installed_by) VALUES (?, ?, ?, ?, ?, ?, ?)
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
            "INSERT INTO installation_audit (connector, at, actor, action, version_before, digest_before, version_after, digest_after, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            sqlx::query("SELECT * FROM identity_merges WHERE id = ? AND undone_at IS NULL")
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
            sqlx::query("UPDATE identifiers SET person_id = ? WHERE value = ?")
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
                let marks = vec!["?"; chunk.len()].join(", ");
                let sql = format!("UPDATE {table} SET person_id = ? WHERE {column} IN ({marks})");
                let mut q = sqlx::query(&sql).bind(merged);
                for v in chunk {
                    q = q.bind(v);
                }
                q.execute(&mut *tx).await?;
            }
        }
        sqlx::query("UPDATE persons SET merged_into = NULL WHERE id = ?")
            .bind(merged)
            .execute(&mut *tx)
            .await?;
        let at = ts(now());
        sqlx::query("UPDATE identity_merges SET undone_at = ?, undone_by = ?, undone_reason = ? WHERE id = ?")
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
        let key: i64 = sqlx::query_scalar("SELECT person_id FROM identifiers WHERE value = ?")
            .bind(&new.person_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no person with ID {}", new.person_id)))?;
        let at = ts(now());
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO overrides (person_id, path, value, reason, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
        let key: Option<i64> =
            sqlx::query_scalar("SELECT person_id FROM overrides WHERE id = ? AND ended_at IS NULL")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(key) = key else { return Ok(false) };
        let at = ts(now());
        sqlx::query(
            "UPDATE overrides SET ended_at = ?, ended_by = ?, ended_reason = ? WHERE id = ?",
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
            "SELECT id, person_id, expires_at FROM overrides WHERE ended_at IS NULL AND expires_at IS NOT NULL AND expires_at <= ? ORDER BY id",
        )
        .bind(ts(at))
        .fetch_all(&mut *tx)
        .await?;
        let mut ended = Vec::new();
        for row in rows {
            let (id, key, expires): (i64, i64, String) =
                (row.get("id"), row.get("person_id"), row.get("expires_at"));
            sqlx::query("UPDATE overrides SET ended_at = ?, ended_by = 'folkhub (expiry)', ended_reason = 'expired' WHERE id = ?")
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
                let row = sqlx::query("SELECT record, version FROM merged WHERE person_id = ?")
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
                sqlx::query("INSERT INTO merged (person_id, record, version, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (person_id) DO UPDATE SET record = excluded.record, version = excluded.version, updated_at = excluded.updated_at")
                    .bind(key)
                    .bind(&record)
                    .bind(version + 1)
                    .bind(&at)
                    .execute(&mut *tx)
                    .await?;
                if !changes.is_empty() {
                    sqlx::query("INSERT INTO person_changes (person_id, changed_at, version, diff, reason) VALUES (?, ?, ?, ?, ?)")
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
        let rows = sqlx::query("SELECT * FROM installation_audit WHERE connector = ? ORDER BY id")
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
            "INSERT INTO cost_ledger (at, month, connector, release, job, run_id, calls, cost_per_call, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "SELECT month, connector, job, SUM(calls) AS calls, SUM(cost) AS cost FROM cost_ledger
             WHERE ? IS NULL OR month = ? GROUP BY month, connector, job ORDER BY month, connector, job",
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
        let Some(r) = sqlx::query("SELECT * FROM breakers WHERE connector = ?")
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
            "INSERT INTO breakers (connector, failures, opened_at, open_until, last_error) VALUES (?, ?, ?, ?, ?)
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
        Ok(sqlx::query_scalar("INSERT INTO job_runs (job, connector, started_at, status, counts, errors) VALUES (?, ?, ?, 'running', '{}', '[]') RETURNING id")
            .bind(job)
            .bind(connector)
            .bind(ts(now()))
            .fetch_one(&self.pool)
            .await?)
    }

    async fn update_run(&self, id: i64, counts: &RunCounts) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        sqlx::query("UPDATE job_runs SET counts = ? WHERE id = ? AND status = 'running'")
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
            "UPDATE job_runs SET finished_at = ?, status = ?, counts = ?, errors = ? WHERE id = ?",
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
        let rows = sqlx::query("SELECT * FROM job_runs ORDER BY id DESC LIMIT ?")
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
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
            }],
            cursor: None,
            reason: format!("{source} at {at}"),
        }
    }

    #[tokio::test]
    async fn the_merged_record_does_not_depend_on_the_order_statements_arrive_in() {
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
                let store = SqliteStore::open(
                    &dir.path().join(format!("c{case}-{order}.db")),
                    MergeRules::default(),
                )
                .await
                .unwrap();
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

    #[tokio::test]
    async fn conflicts_are_listed_and_overrides_win_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("o.db"), MergeRules::default())
            .await
            .unwrap();
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

    #[tokio::test]
    async fn a_register_links_two_persons_and_an_undone_link_restores_both() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("i.db"), MergeRules::default())
            .await
            .unwrap();
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

    #[tokio::test]
    async fn a_person_without_an_id_is_matched_only_when_exactly_one_fits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("n.db"), MergeRules::default())
            .await
            .unwrap();
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

    #[tokio::test]
    async fn rebuild_reports_and_repairs_a_record_that_drifted_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("r.db"), MergeRules::default())
            .await
            .unwrap();
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
        sqlx::query("UPDATE merged SET record = ?")
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

    #[tokio::test]
    async fn apply_merge_retract_history_and_id_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), MergeRules::default())
            .await
            .unwrap();
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

    #[tokio::test]
    async fn installations_are_audited_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let store = SqliteStore::open(&path, MergeRules::default())
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
        let store = SqliteStore::open(&path, MergeRules::default())
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

    #[tokio::test]
    async fn the_access_log_is_append_only_and_clients_keep_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db"), MergeRules::default())
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
