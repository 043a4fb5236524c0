//! [`Jobs`] on SQL: the run log book, cursors and feed pages, leases, the
//! work queue, circuit breakers and the cost ledger.

use super::*;

/// A run of the log book from its row.
pub(super) fn run_from(r: &AnyRow) -> Result<JobRun, StoreError> {
    let finished: Option<String> = r.col("finished_at")?;
    Ok(JobRun {
        id: r.col("id")?,
        job: r.col("job")?,
        connector: r.col("connector")?,
        started_at: parse_ts(r.col::<&str>("started_at")?)?,
        finished_at: finished.as_deref().map(parse_ts).transpose()?,
        status: RunStatus::parse(r.col::<&str>("status")?),
        counts: serde_json::from_str(r.col::<&str>("counts")?).unwrap_or_default(),
        errors: serde_json::from_str(r.col::<&str>("errors")?).unwrap_or_default(),
        host: r.try_get("host").ok().flatten(),
        release: r.col("connector_release")?,
    })
}

#[async_trait]
impl Jobs for SqlStore {
    async fn cursor(&self, connector: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT cursor FROM cursors WHERE connector = $1")
                .bind(connector)
                .fetch_optional(&self.pool)
                .await?,
        )
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
            .map(|r| {
                Ok(CostRow {
                    month: r.col("month")?,
                    connector: r.col("connector")?,
                    job: r.col("job")?,
                    calls: r.col::<i64>("calls")? as u64,
                    cost: r.col("cost")?,
                })
            })
            .collect::<Result<_, StoreError>>()?)
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
            r.col::<Option<String>>(name)?
                .as_deref()
                .map(parse_ts)
                .transpose()
        };
        Ok(Breaker {
            connector: connector.to_string(),
            failures: r.col::<i64>("failures")? as u32,
            opened_at: opt("opened_at")?,
            open_until: opt("open_until")?,
            last_error: r.col("last_error")?,
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

    async fn start_run(
        &self,
        job: &str,
        connector: Option<&str>,
        release: Option<&str>,
    ) -> Result<i64, StoreError> {
        let _w = self.writer.lock().await;
        Ok(sqlx::query_scalar("INSERT INTO job_runs (job, connector, started_at, status, counts, errors, connector_release) VALUES ($1, $2, $3, 'running', '{}', '[]', $4) RETURNING id")
            .bind(job)
            .bind(connector)
            .bind(ts(now()))
            .bind(release)
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
        row.map(|r| Ok((r.col("holder")?, parse_ts(r.col::<&str>("expires_at")?)?)))
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
                id: r.col("id")?,
                run: r.col("run_id")?,
                connector: r.col("connector")?,
                ids: serde_json::from_str(r.col::<&str>("ids")?)
                    .map_err(|e| corrupt("work item ids", e))?,
                attempts: r.col("attempts")?,
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
            match r.col::<&str>("state")? {
                "pending" => state.pending += 1,
                "leased" => state.leased += 1,
                _ => {
                    state.done += 1;
                    let counts: RunCounts = r
                        .col::<Option<&str>>("counts")?
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
                    connector: r.col("connector")?,
                    from: r.col("cursor_from")?,
                    to: r.col("cursor_to")?,
                    host: r.col("host")?,
                    run: r.col("run_id")?,
                    persons: r.col("persons")?,
                    at: parse_ts(r.col::<&str>("at")?)?,
                })
            })
            .collect()
    }
}
