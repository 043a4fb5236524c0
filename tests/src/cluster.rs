//! Several hosts on one PostgreSQL, for the cluster test and benchmark:
//! hosts of one [`TestEnv`] on other databases, copies of a seeded database,
//! and a store's contents to compare.

use std::collections::BTreeMap;
use std::time::Duration;

use folkhub_app::Host;
use folkhub_manifest::config::JobConfig;
use folkhub_store::local_postgres::Cluster;
use folkhub_store::prelude::*;
use serde_json::Value;

use crate::TestEnv;

/// A Folkeregisteret job of `kind` every `every`.
pub fn job(kind: &str, every: &str) -> JobConfig {
    JobConfig {
        kind: kind.into(),
        connector: Some("folkeregister".into()),
        every: Some(every.into()),
        cron: None,
        area: None,
        ages: None,
    }
}

/// A host of `env`'s connectors on the database `url`, named `name`, with
/// a nightly full refresh (`nightly-refresh`, hourly) and the feed every
/// second (`feed`) scheduled.
pub async fn host_on(env: &TestEnv, url: &str, name: &str, lease: &str) -> Host {
    let mut config = env.host.config.clone();
    config.store.url = url.to_string();
    config.store.host_name = Some(name.into());
    config.store.lease = lease.into();
    config
        .jobs
        .insert("nightly-refresh".into(), job("full", "1h"));
    config.jobs.insert("feed".into(), job("changes", "1s"));
    Host::open(config).await.expect("host on PostgreSQL")
}

/// Seeds database `url` with a first Folkeregisteret sync (through the
/// feed) and returns how many persons it fetched.
pub async fn seed(env: &TestEnv, url: &str) -> u64 {
    let seed = host_on(env, url, "seeder", "60s").await;
    seed.install("folkeregister", None, false, "test", "cluster")
        .await
        .expect("install");
    let connector = seed.load("folkeregister").await.expect("load");
    let summary = folkhub_sync::full(
        seed.store(),
        &connector,
        &["no-fnr", "no-dnr"],
        &folkhub_sync::Options::default(),
    )
    .await
    .expect("first sync");
    summary.counts.fetched
}

/// A copy of database `template` (retried while the seeding host's
/// connections close).
pub async fn copy(cluster: &Cluster, template: &str, name: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        match cluster.copy_database(template, name) {
            Ok(url) => return url,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("could not copy database {template}: {last}");
}

/// Every person's field values and their sources, by first ID.
pub async fn contents(
    store: &dyn PersonStore,
) -> BTreeMap<String, BTreeMap<String, (Value, String)>> {
    let mut out = BTreeMap::new();
    for p in crate::all_persons(store).await {
        let id = p.ids.first().map(|i| i.value.clone()).unwrap_or_default();
        let fields = p
            .record
            .fields
            .iter()
            .map(|(path, f)| (path.clone(), (f.value.clone(), f.provenance.source.clone())))
            .collect();
        out.insert(id, fields);
    }
    out
}

/// Runs the schedulers of `hosts` until every run of `job` finished (and
/// at least one did), then stops them. With `kill_leader_after`, the host
/// leading the job's run is killed (its task aborted mid-work, as a crash
/// leaves it) once that many of the run's refresh batches are done; the
/// killed host's name is returned.
pub async fn run_until_done(
    hosts: &[std::sync::Arc<Host>],
    job: &str,
    timeout: Duration,
    kill_leader_after: Option<u64>,
) -> Option<String> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = BTreeMap::new();
    for h in hosts {
        let (h, stopped) = (h.clone(), stopped.clone());
        let name = h.config.store.host_name.clone().unwrap_or_default();
        tasks.insert(
            name,
            tokio::spawn(async move { folkhub_app::jobs::run(&h, stopped, None).await }),
        );
    }
    let store = hosts[0].store();
    let started = std::time::Instant::now();
    let mut victim = None;
    loop {
        assert!(started.elapsed() < timeout, "{job} never finished");
        if let Some(after) = kill_leader_after
            && victim.is_none()
            && let Some(run) = store.open_runs(job).await.expect("runs").first()
            && store.work_state(run.id).await.expect("work").done >= after
            && let Some((holder, _)) = store.lease(&format!("job:{job}")).await.expect("lease")
            && let Some(task) = tasks.remove(&holder)
        {
            task.abort();
            victim = Some(holder);
        }
        let runs = store.runs(100).await.expect("runs");
        let of_job: Vec<_> = runs.iter().filter(|r| r.job == job).collect();
        if !of_job.is_empty()
            && of_job
                .iter()
                .all(|r| r.status != folkhub_store::RunStatus::Running)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(true);
    for (_, task) in tasks {
        task.await.expect("task").expect("scheduler");
    }
    victim
}
