//! Exactly-once change feeds: a sync of a 20,000-event feed is killed with
//! SIGKILL at twenty points spread through it and restarted each time; the
//! store it ends with equals the store of a run that was never killed
//! (merged records, identifiers, history and cursor).

use std::time::{Duration, Instant};

use folkhub_tests::{Setup, TestEnv, root, snapshot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_feed_killed_twenty_times_ends_as_a_run_never_killed() {
    let bin = root().join("target/debug/folkhub");
    assert!(
        bin.exists(),
        "{} is missing: `cargo xtask test` builds it (or `cargo build -p folkhub`)",
        bin.display()
    );
    let env = TestEnv::start(Setup {
        seed: 47,
        count: 20_000,
        ..Setup::default()
    })
    .await;
    let config_for = |db: &str| {
        let mut config = env.host.config.clone();
        config.store.url = format!("sqlite://{}", env.dir.path().join(db).display());
        config
    };

    // The run nobody kills.
    let reference = folkhub_app::Host::open(config_for("reference.db"))
        .await
        .expect("host");
    reference
        .install("folkeregister", None, false, "test", "reference")
        .await
        .expect("install");
    let freg = reference.load("folkeregister").await.expect("load");
    let started = Instant::now();
    let summary =
        folkhub_sync::changes(reference.store(), &freg, &folkhub_sync::Options::default())
            .await
            .expect("reference run");
    let took = started.elapsed();
    assert!(summary.counts.feed_events >= 20_000, "{:?}", summary.counts);

    // The run killed twenty times: the `folkhub` binary, SIGKILL, restart.
    let killed_config = config_for("killed.db");
    let file = env.dir.path().join("killed.toml");
    std::fs::write(&file, toml::to_string(&killed_config).expect("toml")).expect("write");
    {
        let host = folkhub_app::Host::open(killed_config.clone())
            .await
            .expect("host");
        host.install("folkeregister", None, false, "test", "killed")
            .await
            .expect("install");
    }
    let sync = || {
        let mut c = std::process::Command::new(&bin);
        c.args(["--config"])
            .arg(&file)
            .args(["sync", "folkeregister", "--changes"])
            .env("FOLKHUB_LOG", "error")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    // Spread over about 60 % of the reference run's length, at varying
    // points of each restart.
    let step = took.mul_f64(0.6) / 20;
    for i in 0..20u32 {
        let mut child = sync().spawn().expect("spawn folkhub");
        let wait = step
            .mul_f64(0.6 + f64::from(i % 5) * 0.2)
            .max(Duration::from_millis(700));
        tokio::time::sleep(wait).await;
        child.kill().expect("SIGKILL"); // SIGKILL on Unix
        child.wait().expect("reap");
    }
    let status = sync().status().expect("final run");
    assert!(status.success(), "the run after the kills completes");

    let killed = folkhub_app::Host::open(killed_config).await.expect("host");
    let runs = killed.store().runs(100).await.expect("runs");
    let interrupted = runs
        .iter()
        .filter(|r| r.status == folkhub_store::RunStatus::Running)
        .count();
    assert!(
        interrupted >= 15,
        "most kills landed inside a run: {interrupted} of 20"
    );
    assert!(
        runs.iter()
            .any(|r| r.status == folkhub_store::RunStatus::Running && r.counts.fetched > 0),
        "a killed run's progress is in the log book"
    );
    assert_eq!(
        killed
            .store()
            .cursor("folkeregister")
            .await
            .expect("cursor"),
        reference
            .store()
            .cursor("folkeregister")
            .await
            .expect("cursor")
    );
    let a = snapshot(reference.store()).await;
    let b = snapshot(killed.store()).await;
    assert_eq!(a.len(), b.len(), "persons");
    let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert_eq!(
        differ,
        0,
        "first difference: {:?}",
        a.iter().zip(&b).find(|(x, y)| x != y)
    );
}
