//! The `folkhub` binary itself: exit codes and messages a user sees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn folkhub(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_folkhub"));
    c.current_dir(dir)
        .env_remove("FOLKHUB_CONFIG")
        .env("FOLKHUB_LOG", "error");
    c
}

#[test]
fn a_malformed_id_is_explained_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    for (id, expected) in [
        ("03851598731", "wrong check digit"),
        ("0385159873", "read as a Swedish personnummer"),
        ("0385159873X", "'0385159873X'"),
    ] {
        let out = folkhub(dir.path())
            .args(["person", "get", id])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{id}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(expected) && stderr.contains("Give a Norwegian"),
            "{id}: {stderr}"
        );
    }
    // Nothing was created for a refused ID.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn a_config_error_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("folkhub.toml"),
        "[server]\nlisten = \"everywhere\"\n",
    )
    .unwrap();
    let out = folkhub(dir.path())
        .args(["connectors", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.listen") && stderr.contains("everywhere"),
        "{stderr}"
    );
}

#[test]
fn version_lists_the_contract_versions() {
    let dir = tempfile::tempdir().unwrap();
    let out = folkhub(dir.path()).arg("version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("folkhub:connector 1.x up to 1.1.0"));
}
