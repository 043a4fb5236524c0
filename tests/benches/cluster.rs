//! Sync throughput on PostgreSQL with one and with three hosts, beside
//! SQLite (issue 8): a first sync through Folkeregisteret's feed, the
//! nightly full refresh of everyone, and a feed of changes. One run of
//! each, wall-clock, in one process (the hosts share this machine's cores
//! with the simulator and PostgreSQL, as they would not in production).
//!
//! `cargo bench -p folkhub-tests --bench cluster` (`FOLKHUB_BENCH_PERSONS`
//! sets the population, default 20,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use folkhub_store::local_postgres;
use folkhub_tests::cluster::{copy, host_on, run_until_done, seed};
use folkhub_tests::{Setup, TestEnv};

fn line(what: &str, persons: u64, took: Duration) {
    println!(
        "| {what} | {persons} | {:.1} s | {:.0} |",
        took.as_secs_f64(),
        persons as f64 / took.as_secs_f64()
    );
}

#[allow(clippy::expect_used)]
fn main() {
    // `cargo bench` passes `--bench`; nothing else is read.
    let count: usize = std::env::var("FOLKHUB_BENCH_PERSONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let env = TestEnv::start(Setup {
            seed: 5,
            count,
            ..Setup::default()
        })
        .await;
        let cluster = local_postgres::shared().expect("PostgreSQL");
        println!("| what | persons | time | persons/s |");
        println!("|---|---|---|---|");

        // A first sync through the feed, SQLite and PostgreSQL.
        let file = format!("sqlite://{}", env.dir.path().join("bench.db").display());
        let t = Instant::now();
        let n = seed(&env, &file).await;
        line(
            "first sync through the feed, SQLite, 1 host",
            n,
            t.elapsed(),
        );
        let seed_url = cluster.create_database("bench_seed").expect("db");
        let t = Instant::now();
        let n = seed(&env, &seed_url).await;
        line(
            "first sync through the feed, PostgreSQL, 1 host",
            n,
            t.elapsed(),
        );

        // The nightly full refresh of everyone.
        let sqlite = host_on(&env, &file, "alone", "60s").await;
        let t = Instant::now();
        folkhub_app::jobs::run_job(&sqlite, "nightly-refresh")
            .await
            .expect("refresh");
        line("full refresh, SQLite, 1 host", n, t.elapsed());
        let one = copy(cluster, "bench_seed", "bench_one").await;
        let three = copy(cluster, "bench_seed", "bench_three").await;
        let feed_one = copy(cluster, "bench_seed", "bench_feed_one").await;
        let feed_three = copy(cluster, "bench_seed", "bench_feed_three").await;
        let single = host_on(&env, &one, "alone", "60s").await;
        let t = Instant::now();
        folkhub_app::jobs::run_job(&single, "nightly-refresh")
            .await
            .expect("refresh");
        line("full refresh, PostgreSQL, 1 host", n, t.elapsed());
        let mut hosts = Vec::new();
        for name in ["host-a", "host-b", "host-c"] {
            hosts.push(Arc::new(host_on(&env, &three, name, "60s").await));
        }
        let t = Instant::now();
        run_until_done(&hosts, "nightly-refresh", Duration::from_secs(3600), None).await;
        line("full refresh, PostgreSQL, 3 hosts", n, t.elapsed());

        // A feed of changes (the registers move on; each host follows).
        env.sim.advance(5_000).await;
        let single = host_on(&env, &feed_one, "alone", "60s").await;
        let t = Instant::now();
        let outcome = folkhub_app::jobs::run_job(&single, "feed")
            .await
            .expect("feed");
        let events: u64 = outcome
            .split("feed events ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        line(
            "feed of 5,000 changes (events), PostgreSQL, 1 host",
            events,
            t.elapsed(),
        );
        let mut hosts = Vec::new();
        for name in ["host-a", "host-b", "host-c"] {
            let mut host = host_on(&env, &feed_three, name, "60s").await;
            // One run to the feed's head (the others find it done), not
            // one every second.
            host.config
                .jobs
                .insert("feed".into(), folkhub_tests::cluster::job("changes", "1h"));
            host.config.jobs.remove("nightly-refresh");
            hosts.push(Arc::new(host));
        }
        let t = Instant::now();
        run_until_done(&hosts, "feed", Duration::from_secs(3600), None).await;
        line(
            "feed of 5,000 changes (events), PostgreSQL, 3 hosts",
            events,
            t.elapsed(),
        );
    });
}
