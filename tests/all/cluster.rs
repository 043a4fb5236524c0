//! Several hosts on one PostgreSQL database (issue 8): the same jobs on
//! three hosts, one of them killed mid-run, end where one host ends, and
//! no feed page or refresh batch is applied twice.

use std::collections::BTreeMap;
use std::time::Duration;

use folkhub_cli::host::Host;
use folkhub_manifest::config::JobConfig;
use folkhub_store::local_postgres;
use folkhub_store::{PersonStore, RunStatus};
use folkhub_tests::{Setup, TestEnv};
use serde_json::Value;

/// Every person's field values and their sources, by active ID.
async fn contents(store: &dyn PersonStore) -> BTreeMap<String, BTreeMap<String, (Value, String)>> {
    let mut out = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.persons_after(after, 1000).await.expect("persons");
        let Some(last) = page.last() else { break };
        after = last.key;
        for p in page {
            let id = p.ids.first().map(|i| i.value.clone()).unwrap_or_default();
            let fields = p
                .record
                .fields
                .iter()
                .map(|(path, f)| (path.clone(), (f.value.clone(), f.provenance.source.clone())))
                .collect();
            out.insert(id, fields);
        }
    }
    out
}

fn job(kind: &str, every: &str) -> JobConfig {
    JobConfig {
        kind: kind.into(),
        connector: Some("folkeregister".into()),
        every: Some(every.into()),
        cron: None,
        area: None,
        ages: None,
    }
}

async fn host_on(env: &TestEnv, url: &str, name: &str) -> Host {
    let mut config = env.host.config.clone();
    config.store.url = url.to_string();
    config.store.host_name = Some(name.into());
    config.store.lease = "2s".into();
    config
        .jobs
        .insert("nightly-refresh".into(), job("full", "1h"));
    config.jobs.insert("feed".into(), job("changes", "1s"));
    Host::open(config).await.expect("host on PostgreSQL")
}

/// A copy of `template` (retried while the seeding host's connections close).
async fn copy(cluster: &local_postgres::Cluster, template: &str, name: &str) -> String {
    for _ in 0..50 {
        if let Ok(url) = cluster.copy_database(template, name) {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("could not copy database {template}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hosts_share_the_jobs_and_a_killed_one_changes_nothing() {
    let env = TestEnv::start(Setup {
        seed: 88,
        count: 20_000,
        ..Setup::default()
    })
    .await;
    let cluster = local_postgres::shared().expect("PostgreSQL for the test");
    // Seed once: a first sync through the feed brings everyone in.
    let seed_url = cluster.create_database("cluster_seed").expect("seed db");
    {
        let seed = host_on(&env, &seed_url, "seeder").await;
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
        assert!(summary.counts.fetched >= 20_000, "{:?}", summary.counts);
    }
    let single_url = copy(cluster, "cluster_seed", "cluster_single").await;
    let shared_url = copy(cluster, "cluster_seed", "cluster_shared").await;
    // The registers change before the scheduled refresh: the feed has new
    // pages and lookups give new values.
    env.sim.advance(300).await;

    // One host runs the nightly refresh.
    let single = host_on(&env, &single_url, "alone").await;
    let outcome = folkhub_cli::scheduler::run_job(&single, "nightly-refresh", true)
        .await
        .expect("single-host run");
    assert!(outcome.contains("succeeded"), "{outcome}");
    let expected = contents(single.store()).await;

    // Three hosts run the same schedule on the other copy.
    let mut hosts = Vec::new();
    for name in ["host-a", "host-b", "host-c"] {
        hosts.push(std::sync::Arc::new(host_on(&env, &shared_url, name).await));
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = BTreeMap::new();
    for h in &hosts {
        let (h, stopped) = (h.clone(), stopped.clone());
        let name = h.config.store.host_name.clone().unwrap_or_default();
        tasks.insert(
            name,
            tokio::spawn(async move { folkhub_cli::scheduler::run(&h, stopped, None).await }),
        );
    }
    let store = hosts[0].store();
    // Kill the host that leads the refresh once a few batches are done.
    let started = std::time::Instant::now();
    let victim = loop {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no refresh batches done"
        );
        let runs = store.open_runs("nightly-refresh").await.expect("runs");
        if let Some(run) = runs.first()
            && store.work_state(run.id).await.expect("work").done >= 3
            && let Some((holder, _)) = store.lease("job:nightly-refresh").await.expect("lease")
        {
            break holder;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tasks.remove(&victim).expect("victim's task").abort();
    // The others finish: the killed host's run is taken over.
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the refresh never finished"
        );
        let runs = store.runs(100).await.expect("runs");
        let refresh: Vec<_> = runs.iter().filter(|r| r.job == "nightly-refresh").collect();
        if !refresh.is_empty() && refresh.iter().all(|r| r.status != RunStatus::Running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop.send(true);
    for (_, task) in tasks {
        task.await.expect("task").expect("scheduler");
    }

    // The same store as one host's run.
    let actual = contents(store).await;
    assert_eq!(actual.len(), expected.len());
    let differing: Vec<&String> = expected
        .iter()
        .filter(|(id, fields)| actual.get(*id) != Some(fields))
        .map(|(id, _)| id)
        .collect();
    assert!(
        differing.is_empty(),
        "{} persons differ: {:?}",
        differing.len(),
        &differing[..differing.len().min(5)]
    );

    // The log book: the killed host's run was taken over, every feed page
    // was applied once, and every refresh batch committed once.
    let runs = store.runs(100).await.expect("runs");
    let refresh: Vec<_> = runs.iter().filter(|r| r.job == "nightly-refresh").collect();
    assert_eq!(refresh.len(), 1, "one refresh run: {refresh:?}");
    assert!(
        refresh[0]
            .errors
            .iter()
            .any(|e| e.contains("took the run over")),
        "{:?}",
        refresh[0].errors
    );
    let pages = store.feed_pages("folkeregister").await.expect("pages");
    assert!(!pages.is_empty());
    let mut froms: Vec<&str> = pages.iter().map(|p| p.from.as_str()).collect();
    let all = froms.len();
    froms.sort();
    froms.dedup();
    assert_eq!(froms.len(), all, "a feed page applied twice: {pages:?}");
    let work = store.work_state(refresh[0].id).await.expect("work");
    assert_eq!((work.pending, work.leased), (0, 0));
    // Each batch's persons counted once: as many as the run queued.
    let single_runs = single.store().runs(10).await.expect("runs");
    let single_work = single
        .store()
        .work_state(single_runs[0].id)
        .await
        .expect("work");
    assert_eq!(work.done, single_work.done);
    assert_eq!(
        work.counts.fetched + work.counts.not_found + work.counts.errors,
        single_work.counts.fetched + single_work.counts.not_found + single_work.counts.errors
    );
    assert!(work.counts.fetched > 1000, "{:?}", work.counts);
    let hosts_that_worked: std::collections::BTreeSet<String> =
        pages.iter().map(|p| p.host.clone()).collect();
    eprintln!(
        "feed pages by {hosts_that_worked:?}; refresh batches {}; killed {victim}",
        work.done
    );
}
