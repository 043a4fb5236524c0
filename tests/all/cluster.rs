//! Several hosts on one PostgreSQL database (issue 8): the same jobs on
//! three hosts, one of them killed mid-run, end where one host ends, and
//! no feed page or refresh batch is applied twice.

use std::time::Duration;

use folkhub_store::local_postgres;
use folkhub_tests::cluster::{contents, copy, host_on, run_until_done, seed};
use folkhub_tests::{Setup, TestEnv, snapshot};

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
    assert!(seed(&env, &seed_url).await >= 20_000);
    let single_url = copy(cluster, "cluster_seed", "cluster_single").await;
    let shared_url = copy(cluster, "cluster_seed", "cluster_shared").await;
    // The registers change before the scheduled refresh: the feed has new
    // pages and lookups give new values.
    env.sim.advance(300).await;

    // One host runs the nightly refresh.
    let single = host_on(&env, &single_url, "alone", "2s").await;
    let outcome = folkhub_app::jobs::run_job(&single, "nightly-refresh")
        .await
        .expect("single-host run");
    assert!(outcome.contains("succeeded"), "{outcome}");
    let expected = contents(single.store()).await;
    let expected_snapshot = snapshot(single.store()).await;

    // Three hosts run the same schedule on the other copy; the one leading
    // the refresh is killed once a few of its batches are done.
    let mut hosts = Vec::new();
    for name in ["host-a", "host-b", "host-c"] {
        hosts.push(std::sync::Arc::new(
            host_on(&env, &shared_url, name, "2s").await,
        ));
    }
    let victim = run_until_done(&hosts, "nightly-refresh", Duration::from_secs(600), Some(3)).await;
    let victim = victim.expect("the leader was killed mid-run");
    let store = hosts[0].store();

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

    // Identifiers, labels and every person's history too.
    assert!(
        snapshot(store).await == expected_snapshot,
        "identifiers, labels or history differ"
    );

    // Any host answers any read: the same person from each of them.
    for id in expected.keys().take(50) {
        let from_a = hosts[0]
            .store()
            .person(id)
            .await
            .expect("read")
            .map(|p| p.record);
        for h in &hosts[1..] {
            assert_eq!(
                h.store().person(id).await.expect("read").map(|p| p.record),
                from_a
            );
        }
    }

    // The log book: the killed host's run was taken over, every feed page
    // was applied once, and every refresh batch committed once.
    let runs = store.runs(100).await.expect("runs");
    let refresh: Vec<_> = runs.iter().filter(|r| r.job == "nightly-refresh").collect();
    assert_eq!(refresh.len(), 1, "one refresh run: {refresh:?}");
    assert_eq!(
        refresh[0].host.as_deref(),
        Some(victim.as_str()),
        "started by the killed host"
    );
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
    froms.sort_unstable();
    froms.dedup();
    assert_eq!(froms.len(), all, "a feed page applied twice: {pages:?}");
    // What an operator reads (`folkhub jobs`, `jobs pages`): every run
    // names the host that ran it, every page its host and run.
    let runs = hosts[1].store().runs(10).await.expect("runs");
    assert!(
        runs.iter().all(|r| r.host.is_some()),
        "a run without its host: {runs:?}"
    );
    assert!(
        pages.iter().all(|p| !p.host.is_empty() && p.run.is_some()),
        "a page without its host or run: {pages:?}"
    );
    let work = store.work_state(refresh[0].id).await.expect("work");
    assert_eq!((work.pending, work.leased), (0, 0));
    // Each batch's persons counted once: as many as the one host did.
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
    eprintln!(
        "killed {victim}; {} refresh batches; feed pages by {:?}",
        work.done,
        pages.iter().map(|p| p.host.as_str()).collect::<Vec<_>>()
    );
}
