//! Jobs and the scheduler of `folkhub serve`: each `[jobs.NAME]` of
//! folkhub.toml runs on its interval or cron schedule, one run at a time,
//! and the last start of each job is read from the run log so a restart
//! keeps the rhythm (an overdue interval job runs at once). On shutdown no
//! new run starts and the running one finishes: a feed page and its cursor
//! are stored together, so stopping between pages loses nothing.

use std::collections::BTreeMap;

use anyhow::bail;
use chrono::{DateTime, Utc};
use folkhub_store::{Jobs, Persons};
use tokio::sync::watch;

use crate::host::Host;
use crate::sync::{Guardians, Mode, run_as};

/// What a configured job does (`[jobs.NAME]`'s `kind` and its settings),
/// checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Follow a connector's change feed from its cursor.
    Changes { connector: String },
    /// Follow the feed, then refresh every known person (or those of one
    /// municipality).
    Full {
        connector: String,
        area: Option<String>,
    },
    /// Look up the guardians of persons of these ages the store lacks.
    Guardians { connector: String, ages: String },
    /// End overrides whose expiry passed.
    ExpireOverrides,
    /// Delete persons nobody has followed for `follow.retention`.
    Retention,
}

impl JobKind {
    /// The kind of `[jobs.NAME]`, or what is wrong with it.
    pub fn of(name: &str, job: &folkhub_manifest::config::JobConfig) -> anyhow::Result<JobKind> {
        let connector = || {
            job.connector
                .clone()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!("jobs.{name}: kind {:?} needs a connector", job.kind)
                })
        };
        Ok(match job.kind.as_str() {
            "changes" => JobKind::Changes {
                connector: connector()?,
            },
            "full" => JobKind::Full {
                connector: connector()?,
                area: job.area.clone(),
            },
            "guardians" => JobKind::Guardians {
                connector: connector()?,
                ages: job.ages.clone().unwrap_or_else(|| "6-19".into()),
            },
            "expire-overrides" => JobKind::ExpireOverrides,
            "retention" => JobKind::Retention,
            other => bail!(
                "jobs.{name}: unknown kind {other:?}; use changes, full, guardians, expire-overrides or retention"
            ),
        })
    }
}

/// The one-line outcome of a sync run.
fn outcome(summary: &folkhub_sync::Summary) -> String {
    format!(
        "run {} {}: fetched {}, changed {}, feed events {}, errors {}",
        summary.run,
        summary.status.as_str(),
        summary.counts.fetched,
        summary.counts.changed,
        summary.counts.feed_events,
        summary.counts.errors
    )
}

/// Runs one configured job now. Returns a one-line outcome.
pub async fn run_job(host: &Host, name: &str) -> anyhow::Result<String> {
    let Some(job) = host.config.jobs.get(name) else {
        let names: Vec<&str> = host.config.jobs.keys().map(String::as_str).collect();
        bail!(
            "no job {name:?} in [jobs] of folkhub.toml; configured: {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    match JobKind::of(name, job)? {
        JobKind::Changes { connector } => {
            let summary = run_as(host, &connector, Mode::Changes, None, Some(name)).await?;
            Ok(outcome(&summary))
        }
        JobKind::Full { connector, area } => {
            let mode = area.map_or(Mode::Full, Mode::Area);
            let summary = run_as(host, &connector, mode, None, Some(name)).await?;
            Ok(outcome(&summary))
        }
        JobKind::Guardians { connector, ages } => {
            match crate::sync::guardians(host, &connector, &ages, None, Some(name)).await? {
                Guardians::AllStored => {
                    Ok(format!("every guardian of persons aged {ages} is stored"))
                }
                Guardians::Ran(summary) => Ok(format!(
                    "run {} {}: {} guardians looked up, {} new persons",
                    summary.run,
                    summary.status.as_str(),
                    summary.counts.fetched,
                    summary.counts.created
                )),
            }
        }
        JobKind::ExpireOverrides => {
            let ended = host.store.expire_overrides(host.now()).await?;
            Ok(format!("{} overrides expired", ended.len()))
        }
        JobKind::Retention => {
            let (run, report) = crate::follow::retention(host, name).await?;
            Ok(format!(
                "run {run}: {} persons deleted, {} waiting out the retention period",
                report.deleted.len(),
                report.waiting
            ))
        }
    }
}

/// Runs the schedule until `shutdown` turns true. `requests` brings manual
/// runs (the API's `POST /v1/jobs/{name}/run`); they run between scheduled
/// ones, one run at a time.
pub async fn run(
    host: &Host,
    mut shutdown: watch::Receiver<bool>,
    mut requests: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
) -> anyhow::Result<()> {
    let mut schedules = BTreeMap::new();
    for (name, job) in &host.config.jobs {
        let schedule = job
            .schedule()
            .map_err(|e| anyhow::anyhow!("jobs.{name}: {e}"))?;
        schedules.insert(name.clone(), schedule);
    }
    if schedules.is_empty() && requests.is_none() {
        return Ok(());
    }
    // The last start of each job, from the run log.
    let mut last: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for run in host.store.runs(10_000).await? {
        if schedules.contains_key(&run.job) {
            let entry = last.entry(run.job.clone()).or_insert(run.started_at);
            *entry = (*entry).max(run.started_at);
        }
    }
    tracing::info!(jobs = schedules.len(), "scheduler started");
    let cluster = host.cluster_name();
    // Jobs another host holds the lease of: not before this.
    let mut blocked: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    let mut workers = crate::cluster::Workers::default();
    loop {
        let now = Utc::now();
        let next = schedules
            .iter()
            .map(|(name, s)| {
                let due = s.next(last.get(name).copied(), now);
                (name.clone(), blocked.get(name).map_or(due, |b| due.max(*b)))
            })
            .min_by_key(|(_, due)| *due);
        let mut wait = next
            .as_ref()
            .map_or(std::time::Duration::from_secs(3600), |(_, due)| {
                (*due - now).to_std().unwrap_or_default()
            });
        if let Some(me) = &cluster {
            // Several hosts: between jobs, one queued refresh batch at a
            // time (any host's), and a look for more every second.
            let busy = match workers.work(host, me).await {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!("refresh batches: {e:#}");
                    false
                }
            };
            wait = if busy {
                std::time::Duration::ZERO
            } else {
                wait.min(std::time::Duration::from_secs(1))
            };
        }
        let manual = async {
            match requests.as_mut() {
                Some(r) => r.recv().await,
                None => std::future::pending().await,
            }
        };
        let job = tokio::select! {
            _ = tokio::time::sleep(wait) => next
                .filter(|(_, due)| *due <= Utc::now())
                .map(|(name, _)| name),
            request = manual => request,
            _ = shutdown.changed() => None,
        };
        if *shutdown.borrow() {
            tracing::info!("scheduler stopped");
            return Ok(());
        }
        let Some(name) = job else { continue };
        if let Some(me) = &cluster {
            match crate::cluster::lead(host, me, &name, &schedules[&name], &mut last).await {
                Ok(crate::cluster::Lead::Run(lease)) => {
                    let outcome = lease.hold(run_job(host, &name)).await;
                    lease.release().await;
                    match outcome {
                        Ok(outcome) => tracing::info!(job = %name, "{outcome}"),
                        Err(e) => tracing::warn!(job = %name, "the job failed: {e:#}"),
                    }
                }
                Ok(crate::cluster::Lead::HeldBy(holder, until)) => {
                    tracing::debug!(job = %name, "{holder} runs it (lease until {until})");
                    blocked.insert(name.clone(), until);
                }
                Ok(crate::cluster::Lead::NotDue) => {}
                Err(e) => {
                    tracing::warn!(job = %name, "lease: {e:#}");
                    blocked.insert(name.clone(), Utc::now() + chrono::Duration::seconds(5));
                }
            }
            continue;
        }
        last.insert(name.clone(), Utc::now());
        match run_job(host, &name).await {
            Ok(outcome) => tracing::info!(job = %name, "{outcome}"),
            Err(e) => tracing::warn!(job = %name, "the job failed: {e:#}"),
        }
    }
}
