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

const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "initial",
    include_str!("../migrations/sqlite/0001_initial.sql"),
)];

pub struct SqliteStore {
    pool: SqlitePool,
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
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                message: e.to_string(),
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        let store = SqliteStore {
            pool,
            rules,
            writer: Mutex::new(()),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        sqlx::query("CREATE TABLE IF NOT EXISTS folkhub_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            .execute(&self.pool)
            .await?;
        for (version, name, sql) in MIGRATIONS {
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM folkhub_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&self.pool)
                    .await?;
            if done.is_some() {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO folkhub_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            )
            .bind(version)
            .bind(name)
            .bind(ts(now()))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    async fn person_key(&self, id: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT person_id FROM identifiers WHERE value = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

/// Finds or creates the person a record belongs to, and links its IDs.
async fn resolve(
    tx: &mut Transaction<'_, Sqlite>,
    source: &str,
    person: &FoundPerson,
    at: &str,
    report: &mut ApplyReport,
) -> Result<(i64, bool), StoreError> {
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
    let chosen = active
        .and_then(|a| owners.get(&a.value).copied())
        .or_else(|| owners.values().next().copied());
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
    for id in &person.ids {
        match owners.get(&id.value) {
            Some(owner) if *owner != key => {
                // Two persons we hold claim to be one: never merge on our own.
                report.identity_conflicts.push(id.value.clone());
            }
            Some(_) => {
                // Only the register that announced an ID says whether it is
                // still in use; another source naming it changes nothing.
                sqlx::query("UPDATE identifiers SET active = ?, updated_at = ? WHERE value = ? AND active <> ? AND source = ?")
                    .bind(id.active)
                    .bind(at)
                    .bind(&id.value)
                    .bind(id.active)
                    .bind(source)
                    .execute(&mut **tx)
                    .await?;
            }
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
    Ok((key, created))
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
        "SELECT source, path, value, labels, release, upstream_version, effective_at, retrieved_at FROM current_observations WHERE person_id = ?",
    )
    .bind(key)
    .fetch_all(&mut **tx)
    .await?;
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
        let (key, created) = resolve(tx, &batch.source, person, &at, report).await?;
        if created {
            report.persons_created += 1;
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
        let mut changed = false;
        let mut seen = BTreeSet::new();
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
            changed = true;
            report.observations_added += 1;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO observations (person_id, path, value, labels, source, release, upstream_version, effective_at, retrieved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(key)
            .bind(&field.path)
            .bind(&value)
            .bind(&labels)
            .bind(&batch.source)
            .bind(&batch.release)
            .bind(&person.upstream_version)
            .bind(&effective)
            .bind(&at)
            .fetch_one(&mut **tx)
            .await?;
            sqlx::query(
                "INSERT INTO current_observations (person_id, source, path, observation_id, value, labels, release, upstream_version, effective_at, retrieved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (person_id, source, path) DO UPDATE SET observation_id = excluded.observation_id, value = excluded.value, labels = excluded.labels,
                 release = excluded.release, upstream_version = excluded.upstream_version, effective_at = excluded.effective_at, retrieved_at = excluded.retrieved_at",
            )
            .bind(key)
            .bind(&batch.source)
            .bind(&field.path)
            .bind(id)
            .bind(&value)
            .bind(&labels)
            .bind(&batch.release)
            .bind(&person.upstream_version)
            .bind(&effective)
            .bind(&at)
            .execute(&mut **tx)
            .await?;
        }
        // Whatever the source said before and no longer says is retracted.
        for path in current.keys() {
            changed = true;
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
        if !changed && !created {
            report.persons_unchanged += 1;
            return Ok(());
        }
        let candidates = load_candidates(tx, key).await?;
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
        let changes = diff(&before, &merged);
        if changes.is_empty() && !created {
            // New observations (e.g. a newer effective time) that do not change the record.
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
            .bind(&at)
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO person_changes (person_id, changed_at, version, diff, reason) VALUES (?, ?, ?, ?, ?)")
            .bind(key)
            .bind(&at)
            .bind(version + 1)
            .bind(Value::Object(changes).to_string())
            .bind(&batch.reason)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await?;
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
        let Some(key) = self.person_key(id).await? else {
            return Ok(None);
        };
        self.person_by_key(key).await
    }

    async fn persons_after(&self, after: i64, limit: u32) -> Result<Vec<StoredPerson>, StoreError> {
        let keys: Vec<i64> = sqlx::query_scalar(
            "SELECT person_id FROM merged WHERE person_id > ? ORDER BY person_id LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(p) = self.person_by_key(key).await? {
                out.push(p);
            }
        }
        Ok(out)
    }

    async fn person_by_key(&self, key: i64) -> Result<Option<StoredPerson>, StoreError> {
        let ids = sqlx::query("SELECT scheme, value, active FROM identifiers WHERE person_id = ? ORDER BY active DESC, first_seen")
            .bind(key)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|r| StoredId { scheme: r.get("scheme"), value: r.get("value"), active: r.get("active") })
            .collect();
        let Some(row) =
            sqlx::query("SELECT record, version, updated_at FROM merged WHERE person_id = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let record: String = row.get("record");
        Ok(Some(StoredPerson {
            key,
            ids,
            record: serde_json::from_str(&record).map_err(|e| corrupt("merged record", e))?,
            version: row.get("version"),
            updated_at: parse_ts(row.get::<&str, _>("updated_at"))?,
        }))
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
        rows.iter()
            .map(|r| {
                Ok(PersonChange {
                    seq: r.get("seq"),
                    person: r.get("person_id"),
                    changed_at: parse_ts(r.get::<&str, _>("changed_at"))?,
                    version: r.get("version"),
                    diff: serde_json::from_str(r.get::<&str, _>("diff"))
                        .map_err(|e| corrupt("history diff", e))?,
                    reason: r.get("reason"),
                })
            })
            .collect()
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
        let mut tx = self.pool.begin().await?;
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

    async fn candidates(
        &self,
        person: i64,
    ) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let out = load_candidates(&mut tx, person).await?;
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

    async fn start_run(&self, job: &str, connector: Option<&str>) -> Result<i64, StoreError> {
        let _w = self.writer.lock().await;
        Ok(sqlx::query_scalar("INSERT INTO job_runs (job, connector, started_at, status, counts, errors) VALUES (?, ?, ?, 'running', '{}', '[]') RETURNING id")
            .bind(job)
            .bind(connector)
            .bind(ts(now()))
            .fetch_one(&self.pool)
            .await?)
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
}
