//! A running server sees what changes after it started: a circuit breaker
//! that opens, a release published to the registry and installed,
//! upgraded or rolled back by another process. No restart.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use folkhub_app::Host;
use folkhub_app::sync::{Mode, run};
use folkhub_store::prelude::*;
use folkhub_store::{ClientAuth, RunStatus};
use folkhub_tests::{Setup, TestEnv};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_a_breaker_that_opened_after_the_server_started() {
    let env = TestEnv::start(Setup {
        seed: 45,
        count: 20,
        ..Setup::default()
    })
    .await;
    env.host
        .install("folkeregister", None, false, "test", "breaker")
        .await
        .expect("install");
    // The API's state is built first, as `serve` builds it at start.
    let admin = crate::api::Api::new(&env.host, "full", true).await;
    let (_, before) = crate::api::get(admin.clone(), "/v1/health").await;
    assert_eq!(before["status"], "ok", "{before}");
    assert!(before["connectors"][0].get("breaker").is_none(), "{before}");

    env.sim.shared.inject(std::iter::repeat_n(
        folkhub_sim::Fault::Status { status: 503 },
        15,
    ));
    for _ in 0..folkhub_app::host::BREAKER_FAILURES {
        run(&env.host, "folkeregister", Mode::Changes)
            .await
            .expect_err("the register answers 503");
    }
    let (_, after) = crate::api::get(admin.clone(), "/v1/health").await;
    assert_eq!(after["status"], "degraded", "{after}");
    let breaker = after["connectors"][0]["breaker"].as_str().unwrap_or("");
    assert!(breaker.starts_with("open until"), "{after}");
    // Everyone sees the status turn; only admins see why.
    let app = admin.as_client(String::new(), "no key".into(), admin.auth);
    let (_, anonymous) = crate::api::get(app, "/v1/health").await;
    assert_eq!(anonymous, serde_json::json!({"status": "degraded"}));
    let (_, metrics) = crate::api::send_text(admin, "/metrics").await;
    assert!(
        metrics.contains("folkhub_connector_breaker_open{connector=\"folkeregister\"} 1"),
        "{metrics}"
    );
}

/// `registry-manifest.toml` with only the releases `keep` lets through,
/// beside a link to the repository's artifacts (an artifact path may not
/// leave the manifest's directory): a registry as it stood earlier.
fn manifest_with(path: &Path, keep: &dyn Fn(&str, &str) -> bool) {
    let root = folkhub_tests::root();
    let artifacts = path.parent().expect("dir").join("registry");
    if !artifacts.exists() {
        std::os::unix::fs::symlink(root.join("registry"), &artifacts).expect("link artifacts");
    }
    let text = std::fs::read_to_string(root.join("registry-manifest.toml")).expect("manifest");
    let mut blocks = text.split("[[release]]");
    let mut out = blocks.next().unwrap_or_default().to_string();
    for block in blocks {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_default()
                .to_string()
        };
        if keep(&field("connector"), &field("version")) {
            out.push_str("[[release]]");
            out.push_str(block);
        }
    }
    // Written beside and renamed: the server never reads half a file.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, out).expect("write manifest");
    std::fs::rename(&partial, path).expect("rename manifest");
}

/// One request over HTTP/1.1 to a running server: status and JSON body.
async fn http(addr: SocketAddr, method: &str, path: &str, key: &str) -> (u16, Value) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {key}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Waits for a run of `job` after `after` to finish; returns it.
async fn finished_run(host: &Host, job: &str, after: i64) -> folkhub_store::JobRun {
    for _ in 0..600 {
        let runs = host.store.runs(20).await.expect("runs");
        if let Some(run) = runs
            .into_iter()
            .find(|r| r.job == job && r.id > after && r.finished_at.is_some())
        {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no run of {job} after run {after} finished within a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_reaches_a_running_server_without_a_restart() {
    let env = TestEnv::start(Setup {
        seed: 46,
        count: 20,
        ..Setup::default()
    })
    .await;
    // The registry as it stood when the server started: 1.0.0 only.
    let manifest = env.dir.path().join("registry-manifest.toml");
    manifest_with(&manifest, &|c, v| c == "folkeregister" && v == "1.0.0");
    let mut config = env.host.config.clone();
    config.registry.manifest = manifest.clone();
    config.jobs.insert(
        "feed".into(),
        folkhub_manifest::config::JobConfig {
            kind: "changes".into(),
            connector: Some("folkeregister".into()),
            every: Some("1d".into()),
            cron: None,
            area: None,
            ages: None,
        },
    );
    let server = Host::open(config.clone()).await.expect("host");
    server
        .install("folkeregister", Some("1.0.0"), false, "test", "start")
        .await
        .expect("install 1.0.0");
    let (_, key) = crate::api::client(server.store(), "full", true, ClientAuth::ApiKey, 1000).await;
    let (ready, listening) = tokio::sync::oneshot::channel();
    let serving = server.clone();
    let task = tokio::spawn(async move {
        folkhub_app::serve::run(&serving, "127.0.0.1:0", move |at| {
            let _ = ready.send(at.api);
        })
        .await
    });
    let addr = listening.await.expect("the server listens");
    // The job is due at start (never run): it runs on 1.0.0.
    let first = finished_run(&server, "feed", 0).await;
    assert_eq!(first.release.as_deref(), Some("1.0.0"), "{first:?}");

    // A vendor publishes 1.0.1; the admin upgrades from another process
    // (its own host on the same store).
    manifest_with(&manifest, &|c, v| {
        c == "folkeregister" && (v == "1.0.0" || v == "1.0.1")
    });
    let admin = Host::open(config.clone()).await.expect("admin host");
    // The upgrade lands while a run is going (the register is slow): that
    // run finishes on the release it started with.
    env.sim.shared.inject(std::iter::repeat_n(
        folkhub_sim::Fault::Slow { ms: 1500 },
        2,
    ));
    let (status, body) = http(addr, "POST", "/v1/jobs/feed/run", &key).await;
    assert_eq!(status, 202, "{body}");
    let mut waited = 0;
    while server
        .store
        .open_runs("feed")
        .await
        .expect("open")
        .is_empty()
    {
        waited += 1;
        assert!(waited < 300, "the run did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin
        .upgrade("folkeregister", "1.0.1", "admin", "a fix")
        .await
        .expect("upgrade");
    assert!(
        !server
            .store
            .open_runs("feed")
            .await
            .expect("open")
            .is_empty(),
        "the run was still going when the upgrade landed"
    );
    let in_flight = finished_run(&server, "feed", first.id).await;
    assert_eq!(
        (in_flight.release.as_deref(), in_flight.status),
        (Some("1.0.0"), RunStatus::Succeeded),
        "{in_flight:?}"
    );
    let first = in_flight;
    // The running server: health shows it, and the next run uses it.
    let (status, health) = http(addr, "GET", "/v1/health", &key).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["connectors"][0]["version"], "1.0.1", "{health}");
    assert!(health["connectors"][0].get("error").is_none(), "{health}");
    let (status, body) = http(addr, "POST", "/v1/jobs/feed/run", &key).await;
    assert_eq!(status, 202, "{body}");
    let second = finished_run(&server, "feed", first.id).await;
    assert_eq!(
        (second.release.as_deref(), second.status),
        (Some("1.0.1"), RunStatus::Succeeded),
        "{second:?}"
    );

    // A rollback by the other process reaches it the same way.
    admin
        .rollback("folkeregister", "admin", "back")
        .await
        .expect("rollback");
    let (status, body) = http(addr, "POST", "/v1/jobs/feed/run", &key).await;
    assert_eq!(status, 202, "{body}");
    let third = finished_run(&server, "feed", second.id).await;
    assert_eq!(third.release.as_deref(), Some("1.0.0"), "{third:?}");
    let (_, health) = http(addr, "GET", "/v1/health", &key).await;
    assert_eq!(health["connectors"][0]["version"], "1.0.0", "{health}");

    // A manifest that no longer parses keeps the last good one in use.
    std::fs::write(&manifest, "[[release]]\nconnector = ").expect("break manifest");
    let (status, body) = http(addr, "POST", "/v1/jobs/feed/run", &key).await;
    assert_eq!(status, 202, "{body}");
    let fourth = finished_run(&server, "feed", third.id).await;
    assert_eq!(
        (fourth.release.as_deref(), fourth.status),
        (Some("1.0.0"), RunStatus::Succeeded),
        "{fourth:?}"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_midway_is_recorded_as_cancelled() {
    let env = TestEnv::start(Setup {
        seed: 47,
        count: 40,
        ..Setup::default()
    })
    .await;
    env.host
        .install("folkeregister", None, false, "test", "cancel")
        .await
        .expect("install");
    // The register is slow: the run is still going when it is stopped
    // (Ctrl-C, SIGTERM, or `folkhub sync … | head` losing its reader).
    env.sim.shared.inject(std::iter::repeat_n(
        folkhub_sim::Fault::Slow { ms: 3000 },
        4,
    ));
    let error =
        folkhub_app::sync::run_until(&env.host, "folkeregister", Mode::Full, None, None, async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            "interrupted (Ctrl-C)".to_string()
        })
        .await
        .expect_err("stopped");
    assert!(
        error.to_string().contains("recorded as cancelled"),
        "{error}"
    );
    let runs = env.host.store().runs(5).await.expect("runs");
    assert_eq!(runs[0].status, RunStatus::Cancelled, "{runs:?}");
    assert!(runs[0].finished_at.is_some());
    assert!(
        runs[0]
            .errors
            .iter()
            .any(|e| e == "cancelled: interrupted (Ctrl-C)"),
        "{:?}",
        runs[0].errors
    );
    assert!(
        env.host
            .store()
            .open_runs("full")
            .await
            .expect("open")
            .is_empty(),
        "a run left running"
    );
    // The next run starts afresh and finishes.
    let summary = run(&env.host, "folkeregister", Mode::Full)
        .await
        .expect("the next run");
    assert_eq!(summary.status, RunStatus::Succeeded);
}
