//! Several hosts on one PostgreSQL database (DESIGN §10): a scheduled job
//! runs on the one host holding its lease, a run whose host died is taken
//! over by the next host that takes the lease, and idle hosts work through
//! the refresh batches a full run queued.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use folkhub_manifest::schedule::Schedule;
use folkhub_runtime::Connector;
use folkhub_store::{JobRun, RunStatus};

use crate::host::Host;

/// What a host may do about a due job.
pub enum Lead<'a> {
    /// Run it, holding the lease.
    Run(Lease<'a>),
    /// Another host holds the lease, until then.
    HeldBy(String, DateTime<Utc>),
    /// Another host ran it meanwhile: not due any more.
    NotDue,
}

/// A job's lease, renewed while the job runs and given up after.
pub struct Lease<'a> {
    host: &'a Host,
    name: String,
    me: String,
}

impl Lease<'_> {
    /// Runs `work` holding the lease (renewed every third of its length).
    pub async fn hold<F: std::future::Future>(&self, work: F) -> F::Output {
        let ttl = self.host.lease();
        let renew = async {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let until = Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default();
                if let Err(e) = self
                    .host
                    .store()
                    .acquire_lease(&self.name, &self.me, until)
                    .await
                {
                    tracing::warn!(lease = %self.name, "not renewed: {e}");
                }
            }
        };
        tokio::select! {
            out = work => out,
            () = renew => unreachable!("the renewal never ends"),
        }
    }

    /// Gives the lease up.
    pub async fn release(self) {
        if let Err(e) = self.host.store().release_lease(&self.name, &self.me).await {
            tracing::warn!(lease = %self.name, "not released (it expires): {e}");
        }
    }
}

/// Takes the lease of a due job, or says who holds it. With the lease,
/// runs of the job a dead host left open are finished first, and the run
/// log decides whether the job is still due (another host may have run it).
pub async fn lead<'a>(
    host: &'a Host,
    me: &str,
    name: &str,
    schedule: &Schedule,
    last: &mut BTreeMap<String, DateTime<Utc>>,
) -> anyhow::Result<Lead<'a>> {
    let store = host.store();
    let key = format!("job:{name}");
    let until = Utc::now() + chrono::Duration::from_std(host.lease()).unwrap_or_default();
    if !store.acquire_lease(&key, me, until).await? {
        let (holder, until) = store
            .lease(&key)
            .await?
            .unwrap_or_else(|| ("another host".into(), Utc::now()));
        return Ok(Lead::HeldBy(holder, until));
    }
    let lease = Lease {
        host,
        name: key,
        me: me.to_string(),
    };
    // Finishing a dead host's run can outlast the lease: renewed meanwhile,
    // so no other host takes the job (and the same run) over too.
    let taken_over = lease
        .hold(async {
            for run in store.open_runs(name).await? {
                take_over(host, me, &run).await?;
            }
            anyhow::Ok(())
        })
        .await;
    if let Err(e) = taken_over {
        lease.release().await;
        return Err(e);
    }
    if let Some(latest) = store.last_started(name).await? {
        let entry = last.entry(name.to_string()).or_insert(latest);
        *entry = (*entry).max(latest);
    }
    if schedule.next(last.get(name).copied(), Utc::now()) > Utc::now() {
        lease.release().await;
        return Ok(Lead::NotDue);
    }
    last.insert(name.to_string(), Utc::now());
    Ok(Lead::Run(lease))
}

/// Finishes a run whose host died: its queued refresh batches are worked
/// through (theirs committed stay; those it held are taken over once their
/// lease expired) and the run is closed with every batch's counts. A run
/// that died before queueing anything is closed as failed; the next run
/// resumes the feed from the stored cursor.
async fn take_over(host: &Host, me: &str, run: &JobRun) -> anyhow::Result<()> {
    let store = host.store();
    let mut state = store.work_state(run.id).await?;
    let mut errors = run.errors.clone();
    let status = if state.pending + state.leased + state.done == 0 {
        errors.push(format!(
            "its host stopped before the run finished; {me} closed it, and the next run resumes from the stored cursor"
        ));
        RunStatus::Failed
    } else {
        if state.pending + state.leased > 0 {
            let connector_id = run.connector.clone().unwrap_or_default();
            let connector = host.load(&connector_id).await?;
            let options = worker_options(host, me, &connector);
            state = folkhub_sync::drain_queue(store, &connector, &options, run.id, me).await?;
        }
        errors.push(format!(
            "its host stopped during the run; {me} took the run over and finished its refresh batches"
        ));
        RunStatus::Succeeded
    };
    let mut counts = run.counts.clone();
    counts.add(&state.counts);
    store.finish_run(run.id, status, &counts, &errors).await?;
    tracing::info!(run = run.id, "took over the run of a host that stopped");
    Ok(())
}

fn worker_options<'a>(
    host: &Host,
    me: &'a str,
    connector: &Connector,
) -> folkhub_sync::Options<'a> {
    folkhub_sync::Options {
        cluster: Some(me),
        lease: host.lease(),
        cost_per_call: host.cost_per_call(connector),
        ..folkhub_sync::Options::default()
    }
}

/// The connectors an idle host works queued refresh batches with, each
/// the release installed now: one upgraded or rolled back (by any host)
/// is loaded again before its next batch.
#[derive(Default)]
pub struct Workers {
    loaded: BTreeMap<String, Connector>,
}

impl Workers {
    /// Claims and does at most one queued refresh batch of each installed
    /// connector (the scheduler calls this between jobs, so its own jobs
    /// stay on time). True when it did one.
    pub async fn work(&mut self, host: &Host, me: &str) -> anyhow::Result<bool> {
        let mut did = false;
        for installation in host.store().installations().await? {
            let id = installation.connector;
            let current = self
                .loaded
                .get(&id)
                .is_some_and(|c| c.digest == installation.digest);
            if !current {
                self.loaded.remove(&id);
                match host.load(&id).await {
                    Ok(c) => {
                        self.loaded.insert(id.clone(), c);
                    }
                    Err(e) => {
                        tracing::debug!(connector = %id, "not loaded: {e:#}");
                        continue;
                    }
                }
            }
            let Some(connector) = self.loaded.get(&id) else {
                continue;
            };
            let options = worker_options(host, me, connector);
            did |= folkhub_sync::work_one(host.store(), connector, &options, me)
                .await?
                .is_some();
        }
        Ok(did)
    }
}
