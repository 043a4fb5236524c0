//! Hostile components: the sandbox stops them and keeps serving.

use std::time::{Duration, Instant};

use folkhub_core::contract::ConnectorError;
use folkhub_runtime::{CallError, Connector, ConnectorSettings, InstallError, Limits, Runtime};
use folkhub_tests::{component, test_release};

fn runtime(timeout: Duration, memory_mib: usize) -> Runtime {
    let limits = Limits {
        call_timeout: timeout,
        memory_limit_bytes: memory_mib << 20,
        ..Limits::default()
    };
    Runtime::new(None, limits).expect("runtime")
}

/// Test component `file` prepared as release `name` (contract 1.1.0, no
/// operator settings) on a runtime with these limits. The runtime is
/// dropped here: the connector must keep its epoch ticker (and so its
/// deadline) on its own.
fn prepared(file: &str, name: &str, timeout: Duration, memory_mib: usize) -> Connector {
    let path = component(file);
    runtime(timeout, memory_mib)
        .prepare(
            &test_release(name, &path, "1.1.0"),
            &path,
            ConnectorSettings::default(),
        )
        .expect("prepare")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_at_the_deadline_and_the_next_call_is_served() {
    let connector = prepared("loop", "loop", Duration::from_millis(500), 64);
    let start = Instant::now();
    let error = connector
        .lookup(&["spin".into()])
        .await
        .expect_err("must be stopped");
    assert!(matches!(error, CallError::Timeout { .. }), "{error}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "stopped after {:?}",
        start.elapsed()
    );
    assert!(error.to_string().contains("deadline"), "{error}");
    // A fresh instance for the next call: it answers.
    assert_eq!(
        connector
            .lookup(&["quick".into()])
            .await
            .expect("next call")
            .len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapped_connectors_stderr_is_in_the_error_and_the_next_call_is_served() {
    let connector = prepared("loop", "loop", Duration::from_secs(10), 64);
    let error = connector
        .lookup(&["panic".into()])
        .await
        .expect_err("it panics");
    assert!(matches!(error, CallError::Trap { .. }), "{error}");
    let text = error.to_string();
    // Rust prints a panic to stderr before it aborts; a Python connector
    // prints its traceback there. Either way the operator sees it.
    assert!(
        text.contains("the connector's stderr ended with:")
            && text.contains("hostile panic: the register said something unreadable"),
        "{text}"
    );
    assert!(
        !text.contains("about to fail on purpose"),
        "stdout goes to the log, not into the error: {text}"
    );
    assert_eq!(
        connector
            .lookup(&["quick".into()])
            .await
            .expect("next call")
            .len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_is_stopped_at_its_cap() {
    let connector = prepared("memory-bomb", "bomb", Duration::from_secs(10), 16);
    let error = connector
        .lookup(&["x".into()])
        .await
        .expect_err("must be stopped");
    assert!(
        matches!(error, CallError::MemoryLimit { limit_mib: 16, .. }),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_was_not_granted_is_denied() {
    let rt = runtime(Duration::from_secs(10), 64);
    let path = component("denied-http");
    // The release requests https://registry.example; the operator granted
    // nothing, so neither it nor anything else is reachable.
    let connector = rt
        .prepare(
            &test_release("nosy", &path, "1.1.0"),
            &path,
            ConnectorSettings::default(),
        )
        .expect("prepare");
    for url in [
        "https://registry.example/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:1/",
    ] {
        let error = connector
            .lookup(&[url.into()])
            .await
            .expect_err("must be denied");
        assert!(
            matches!(error.connector_error(), Some(ConnectorError::Denied(_))),
            "{url}: {error}"
        );
    }
    // Granted but resolving to loopback without allow_private_networks: refused too.
    let settings = ConnectorSettings {
        granted_hosts: vec!["http://localhost:9".into()],
        ..Default::default()
    };
    let mut r = test_release("nosy", &path, "1.1.0");
    r.outbound_hosts = vec!["http://localhost:9".into()];
    let connector = rt.prepare(&r, &path, settings).expect("prepare");
    let error = connector
        .lookup(&["http://localhost:9/".into()])
        .await
        .expect_err("must be denied");
    assert!(
        matches!(error.connector_error(), Some(ConnectorError::Denied(m)) if m.contains("private")),
        "{error}"
    );
}

#[tokio::test]
async fn a_component_built_on_a_newer_minor_is_refused_naming_both_versions() {
    let rt = runtime(Duration::from_secs(10), 64);
    let path = component("newer-minor");
    let error = rt
        .prepare(
            &test_release("newer", &path, "1.2.0"),
            &path,
            ConnectorSettings::default(),
        )
        .expect_err("must be refused");
    let text = error.to_string();
    assert!(matches!(error, InstallError::Contract { .. }), "{text}");
    assert!(
        text.contains("needs host API 1.2") && text.contains("this host has 1.1"),
        "{text}"
    );
    // A manifest that lies about the contract version is refused too.
    let error = rt
        .prepare(
            &test_release("newer", &path, "1.1.0"),
            &path,
            ConnectorSettings::default(),
        )
        .expect_err("must be refused");
    assert!(error.to_string().contains("manifest must agree"), "{error}");
}

#[tokio::test]
async fn components_on_a_retired_or_a_newer_major_are_refused_naming_both_versions() {
    let rt = runtime(Duration::from_secs(10), 64);
    for (name, version, expected) in [
        (
            "retired-major",
            "0.9.0",
            "whose major is no longer supported by this host",
        ),
        (
            "newer-major",
            "3.0.0",
            "a newer major than this host supports",
        ),
    ] {
        let path = component(name);
        let error = rt
            .prepare(
                &test_release(name, &path, version),
                &path,
                ConnectorSettings::default(),
            )
            .expect_err("must be refused");
        let text = error.to_string();
        assert!(matches!(error, InstallError::Contract { .. }), "{text}");
        assert!(
            text.contains(expected)
                && text.contains(&format!("folkhub:connector {version}"))
                && text.contains("host API 1.1.0, 2.2.0"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_tampered_artifact_is_refused_and_nothing_changes() {
    let env = folkhub_tests::TestEnv::start(folkhub_tests::Setup {
        count: 10,
        ..Default::default()
    })
    .await;
    env.host
        .install("folkeregister", None, true, "test", "first")
        .await
        .expect("install");
    // Copy the manifest and artifact, then flip one byte of the artifact.
    let dir = env.dir.path();
    let published = env
        .host
        .manifest()
        .find("folkeregister", None)
        .expect("release")
        .clone();
    let mut bytes = std::fs::read(env.host.manifest().artifact_path(&published)).expect("artifact");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    let tampered = dir.join("tampered.wasm");
    std::fs::write(&tampered, &bytes).expect("write");
    let error = env
        .host
        .runtime
        .prepare(&published, &tampered, ConnectorSettings::default())
        .expect_err("must be refused");
    assert!(matches!(error, InstallError::Digest { .. }), "{error}");
    assert!(error.to_string().contains("tampered"), "{error}");
    let installed = folkhub_store::Installations::installation(env.host.store(), "folkeregister")
        .await
        .expect("read")
        .expect("installed");
    assert_eq!(installed.digest, published.sha256);
    assert!(installed.pinned);
    assert_eq!(
        folkhub_store::Installations::audit(env.host.store(), "folkeregister")
            .await
            .expect("audit")
            .len(),
        1
    );
}

#[tokio::test]
async fn precompiled_components_are_cached_by_digest_and_engine() {
    let dir = tempfile::tempdir().expect("dir");
    let rt = Runtime::new(Some(dir.path().to_path_buf()), Limits::default()).expect("runtime");
    let path = component("loop");
    let r = test_release("loop", &path, "1.1.0");
    rt.prepare(&r, &path, ConnectorSettings::default())
        .expect("first prepare compiles");
    let cached: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        cached
            .iter()
            .any(|n| n.starts_with(&r.sha256) && n.ends_with(".cwasm")),
        "{cached:?}"
    );
    // A corrupted cache entry is detected and recompiled, not loaded.
    for name in &cached {
        if name.ends_with(".cwasm") {
            std::fs::write(dir.path().join(name), b"garbage").expect("corrupt");
        }
    }
    let connector = rt
        .prepare(&r, &path, ConnectorSettings::default())
        .expect("recompiles");
    assert_eq!(
        connector
            .lookup(&["quick".into()])
            .await
            .expect("works")
            .len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_over_the_size_cap_and_too_many_host_calls_are_stopped() {
    use folkhub_tests::{Setup, TestEnv};
    // A bulk answer for 200 persons is far more than 2 KB.
    let env = TestEnv::start(Setup {
        count: 200,
        max_response_bytes: 2048,
        ..Setup::default()
    })
    .await;
    env.host
        .install("folkeregister", None, false, "test", "caps")
        .await
        .expect("install");
    let connector = env.host.load("folkeregister").await.expect("load");
    let ids: Vec<String> = env
        .sim
        .truth_for(&["folkeregister"])
        .await
        .iter()
        .map(|t| t.ids.last().expect("id").clone())
        .collect();
    let error = connector.lookup(&ids).await.expect_err("over the cap");
    assert!(
        matches!(error.connector_error(), Some(ConnectorError::Denied(m)) if m.contains("larger than the host allows")),
        "{error}"
    );
    // The connector asks for two config values before any request: a cap of one stops it.
    let env = TestEnv::start(Setup {
        count: 5,
        max_hostcalls: 1,
        ..Setup::default()
    })
    .await;
    env.host
        .install("folkeregister", None, false, "test", "caps")
        .await
        .expect("install");
    let connector = env.host.load("folkeregister").await.expect("load");
    let error = connector.lookup(&ids[..1]).await.expect_err("over the cap");
    assert!(
        matches!(error, CallError::HostcallLimit { limit: 1, .. }),
        "{error}"
    );
}
