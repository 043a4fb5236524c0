#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The native floor of `cargo xtask bench-bulk`: the rows a folkhub sync
//! wrote, written again by a plain program with sqlx, with no wasm, no
//! merge and no reads of what is stored. It reads the synced store one
//! batch of persons at a time and times only its own writes, into a fresh
//! file with the same schema and the same pragmas as folkhub's SQLite
//! store (WAL, synchronous NORMAL), one transaction and one multi-row
//! INSERT per table per batch.
//!
//! ```text
//! bulk-floor first   SRC.db DST.db [BATCH]          the first sync's rows
//! bulk-floor refresh DST.db [BATCH]                 an unchanged refresh: each person's refresh time
//! bulk-floor mark    SRC.db                         the log's high-water marks, before a feed
//! bulk-floor feed    SRC.db DST.db OBS SEQ [BATCH]  the rows a feed wrote after those marks
//! ```
//! Each prints one line: `seconds=S rows=R persons=P`.

use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, TypeInfo, ValueRef};

/// The tables a sync writes, with the column that says whose row it is.
const TABLES: &[(&str, &str)] = &[
    ("persons", "id"),
    ("identifiers", "person_id"),
    ("observations", "person_id"),
    ("current_observations", "person_id"),
    ("source_refresh", "person_id"),
    ("merged", "person_id"),
    ("person_changes", "person_id"),
];

#[derive(Debug, Clone)]
enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

fn values(row: &SqliteRow) -> Vec<Value> {
    (0..row.columns().len())
        .map(|i| {
            let raw = row.try_get_raw(i).expect("column");
            if raw.is_null() {
                return Value::Null;
            }
            match raw.type_info().name() {
                "INTEGER" | "BOOLEAN" => Value::Int(row.get(i)),
                "REAL" => Value::Real(row.get(i)),
                "BLOB" => Value::Blob(row.get(i)),
                _ => Value::Text(row.get(i)),
            }
        })
        .collect()
}

async fn open(path: &str, create: bool) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("opening {path}: {e}"))
}

/// The source's tables and indexes, created in the destination.
async fn copy_schema(src: &SqlitePool, dst: &SqlitePool) {
    let names: Vec<&str> = TABLES.iter().map(|(t, _)| *t).collect();
    let rows = sqlx::query(
        "SELECT type, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type DESC",
    )
    .fetch_all(src)
    .await
    .expect("schema");
    for row in rows {
        let table: String = row.get(1);
        let sql: String = row.get(2);
        if names.contains(&table.as_str()) {
            sqlx::query(&sql).execute(dst).await.expect("create");
        }
    }
}

async fn rows_of(src: &SqlitePool, table: &str, filter: &str) -> Vec<Vec<Value>> {
    sqlx::query(&format!("SELECT * FROM {table} WHERE {filter}"))
        .fetch_all(src)
        .await
        .unwrap_or_else(|e| panic!("{table}: {e}"))
        .iter()
        .map(values)
        .collect()
}

/// One multi-row statement per table (in chunks under SQLite's limit of
/// 32,766 bound values).
async fn write(
    tx: &mut sqlx::SqliteConnection,
    table: &str,
    rows: &[Vec<Value>],
    verb: &str,
) -> usize {
    let Some(first) = rows.first() else { return 0 };
    let per_statement = (32_000 / first.len()).max(1);
    for chunk in rows.chunks(per_statement) {
        let mut q = sqlx::QueryBuilder::new(format!("{verb} INTO {table} "));
        q.push_values(chunk, |mut b, row| {
            for v in row {
                match v {
                    Value::Null => b.push_bind(None::<String>),
                    Value::Int(i) => b.push_bind(*i),
                    Value::Real(r) => b.push_bind(*r),
                    Value::Text(t) => b.push_bind(t.clone()),
                    Value::Blob(x) => b.push_bind(x.clone()),
                };
            }
        });
        q.build().execute(&mut *tx).await.expect("insert");
    }
    rows.len()
}

async fn person_ids(pool: &SqlitePool) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM persons ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("persons")
}

fn report(spent: Duration, rows: usize, persons: usize) {
    println!(
        "seconds={:.3} rows={rows} persons={persons}",
        spent.as_secs_f64()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i).map(String::as_str).unwrap_or_else(|| {
            eprintln!("usage: see the top of tests/src/bin/bulk-floor.rs");
            std::process::exit(2)
        })
    };
    let batch = |i: usize| args.get(i).and_then(|b| b.parse().ok()).unwrap_or(500usize);
    match arg(0) {
        "first" => {
            let (src, dst) = (open(arg(1), false).await, open(arg(2), true).await);
            copy_schema(&src, &dst).await;
            let ids = person_ids(&src).await;
            let (mut spent, mut rows) = (Duration::ZERO, 0);
            for chunk in ids.chunks(batch(3)) {
                let (lo, hi) = (chunk[0], chunk[chunk.len() - 1]);
                let mut read = Vec::new();
                for (table, key) in TABLES {
                    read.push((
                        table,
                        rows_of(&src, table, &format!("{key} BETWEEN {lo} AND {hi}")).await,
                    ));
                }
                let started = Instant::now();
                let mut tx = dst.begin().await.expect("begin");
                for (table, r) in &read {
                    rows += write(&mut tx, table, r, "INSERT").await;
                }
                tx.commit().await.expect("commit");
                spent += started.elapsed();
            }
            report(spent, rows, ids.len());
        }
        "refresh" => {
            let dst = open(arg(1), false).await;
            let ids = person_ids(&dst).await;
            let now = chrono::Utc::now().to_rfc3339();
            let started = Instant::now();
            let mut rows = 0;
            for chunk in ids.chunks(batch(2)) {
                let (lo, hi) = (chunk[0], chunk[chunk.len() - 1]);
                let mut tx = dst.begin().await.expect("begin");
                rows += sqlx::query(
                    "UPDATE source_refresh SET retrieved_at = ? WHERE person_id BETWEEN ? AND ?",
                )
                .bind(&now)
                .bind(lo)
                .bind(hi)
                .execute(&mut *tx)
                .await
                .expect("update")
                .rows_affected() as usize;
                tx.commit().await.expect("commit");
            }
            report(started.elapsed(), rows, ids.len());
        }
        "mark" => {
            let src = open(arg(1), false).await;
            let obs: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM observations")
                .fetch_one(&src)
                .await
                .expect("observations");
            let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM person_changes")
                .fetch_one(&src)
                .await
                .expect("person_changes");
            println!("{} {}", obs.unwrap_or(0), seq.unwrap_or(0));
        }
        "feed" => {
            let (src, dst) = (open(arg(1), false).await, open(arg(2), false).await);
            let obs: i64 = arg(3).parse().expect("OBS");
            let seq: i64 = arg(4).parse().expect("SEQ");
            let changed: Vec<i64> = sqlx::query_scalar(
                "SELECT DISTINCT person_id FROM observations WHERE id > ? ORDER BY person_id",
            )
            .bind(obs)
            .fetch_all(&src)
            .await
            .expect("changed persons");
            let (mut spent, mut rows) = (Duration::ZERO, 0);
            for chunk in changed.chunks(batch(5)) {
                let list = chunk
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                let read = [
                    (
                        "persons",
                        rows_of(&src, "persons", &format!("id IN ({list})")).await,
                        "INSERT OR IGNORE",
                    ),
                    (
                        "identifiers",
                        rows_of(&src, "identifiers", &format!("person_id IN ({list})")).await,
                        "INSERT OR REPLACE",
                    ),
                    (
                        "observations",
                        rows_of(
                            &src,
                            "observations",
                            &format!("id > {obs} AND person_id IN ({list})"),
                        )
                        .await,
                        "INSERT OR REPLACE",
                    ),
                    (
                        "current_observations",
                        rows_of(
                            &src,
                            "current_observations",
                            &format!("observation_id > {obs} AND person_id IN ({list})"),
                        )
                        .await,
                        "INSERT OR REPLACE",
                    ),
                    (
                        "merged",
                        rows_of(&src, "merged", &format!("person_id IN ({list})")).await,
                        "INSERT OR REPLACE",
                    ),
                    (
                        "person_changes",
                        rows_of(
                            &src,
                            "person_changes",
                            &format!("seq > {seq} AND person_id IN ({list})"),
                        )
                        .await,
                        "INSERT OR REPLACE",
                    ),
                    (
                        "source_refresh",
                        rows_of(&src, "source_refresh", &format!("person_id IN ({list})")).await,
                        "INSERT OR REPLACE",
                    ),
                ];
                let started = Instant::now();
                let mut tx = dst.begin().await.expect("begin");
                for (table, r, verb) in &read {
                    rows += write(&mut tx, table, r, verb).await;
                }
                tx.commit().await.expect("commit");
                spent += started.elapsed();
            }
            report(spent, rows, changed.len());
        }
        other => {
            eprintln!(
                "bulk-floor: unknown step {other:?}; see the top of tests/src/bin/bulk-floor.rs"
            );
            std::process::exit(2);
        }
    }
}
