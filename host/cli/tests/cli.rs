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

/// A temporary directory with a folkhub.toml over the repository's
/// registry (and `extra` TOML appended).
fn workspace(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::write(
        dir.path().join("folkhub.toml"),
        format!(
            "[store]\nurl = \"sqlite://{}\"\n[registry]\nmanifest = \"{}\"\n[runtime]\ncache_dir = \"{}\"\n{extra}",
            dir.path().join("f.db").display(),
            root.join("registry-manifest.toml").display(),
            root.join("target/test-cache").display(),
        ),
    )
    .unwrap();
    dir
}

/// Runs the binary: exit code, stdout, stderr.
fn run_in(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = folkhub(dir).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("folkhub:connector 1.x up to 1.1.0")
            && stdout.contains("deprecated since 2026-11-22, removed after 2028-06-30")
            && stdout.contains("folkhub:connector 2.x up to 2.2.0"),
        "{stdout}"
    );
}

#[test]
fn outdated_warns_before_the_deadline_and_says_unsupported_after_it() {
    let dir = workspace("");
    let install = folkhub(dir.path())
        .args([
            "connectors",
            "install",
            "krr",
            "--version",
            "1.0.1",
            "--pin",
        ])
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let at = |today: &str| {
        let out = folkhub(dir.path())
            .env("FOLKHUB_TODAY", today)
            .args(["connectors", "outdated"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let early = at("2027-01-10");
    assert!(
        early.contains("krr 1.0.1 (pinned) → newest 2.2.0"),
        "{early}"
    );
    assert!(
        early.contains("upgrade to 2.0.0 by 2027-05-31: 141 days left"),
        "{early}"
    );
    assert!(!early.contains("WARNING"), "{early}");
    assert!(
        early.contains("migration: Set [connectors.krr.config] base-url"),
        "{early}"
    );
    assert!(at("2027-03-15").contains("WARNING (90-day notice)"));
    assert!(at("2027-05-10").contains("WARNING (30-day notice)"));
    assert!(at("2027-05-28").contains("WARNING (7-day notice)"));
    let late = at("2027-07-01");
    assert!(
        late.contains("UNSUPPORTED: the upgrade deadline 2027-05-31 set by release 2.0.0 passed; KRR retired v1 on 2027-06-30; action: warn"),
        "{late}"
    );
    let list = folkhub(dir.path())
        .env("FOLKHUB_TODAY", "2027-05-01")
        .args(["connectors", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        list.contains("deprecated: upgrade to 2.0.0 by 2027-05-31 (30 days left)"),
        "{list}"
    );
    let bad = folkhub(dir.path())
        .env("FOLKHUB_TODAY", "soon")
        .args(["connectors", "outdated"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("FOLKHUB_TODAY"));
}

#[test]
fn upgrade_rollback_pin_and_history_from_the_command_line() {
    let dir =
        workspace("[connectors.krr]\ngrant_hosts = [\"https://test.kontaktregisteret.no\"]\n");
    let run = |args: &[&str]| run_in(dir.path(), args);
    let (code, _, err) = run(&["connectors", "install", "krr", "--version", "1.0.1"]);
    assert_eq!(code, Some(0), "{err}");
    // Not newer, unknown, and --set without --dry-run: refused with what to do.
    let (code, _, err) = run(&["connectors", "upgrade", "krr", "--to", "1.0.0"]);
    assert!(code == Some(1) && err.contains("rollback"), "{err}");
    let (code, _, err) = run(&["connectors", "upgrade", "krr", "--to", "7.0.0"]);
    assert!(
        code == Some(1) && err.contains("published: 1.0.0, 1.0.1, 2.0.0, 2.1.0, 2.2.0"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "connectors",
        "upgrade",
        "krr",
        "--to",
        "2.1.0",
        "--set",
        "a=b",
    ]);
    assert!(code == Some(1) && err.contains("--dry-run only"), "{err}");
    // A dry run without persons still checks and reports; it changes nothing.
    let (code, out, err) = run(&["connectors", "upgrade", "krr", "--to", "2.1.0", "--dry-run"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("contract       1.1.0 → 2.0.0")
            && out.contains("upstream       KRR v1 → KRR v2")
            && out.contains("BREAKING")
            && out.contains("No shadow run: the store has no person krr can be asked about yet"),
        "{out}"
    );
    let (_, out, _) = run(&["connectors", "history", "krr"]);
    assert_eq!(out.lines().count(), 1, "{out}");

    let (code, out, err) = run(&["connectors", "pin", "krr"]);
    assert!(
        code == Some(0) && out.contains("krr 1.0.1 is pinned"),
        "{err}"
    );
    let (code, out, err) = run(&["connectors", "upgrade", "krr", "--to", "2.1.0"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("upgraded krr 1.0.1 → 2.1.0 (contract 2.0.0") && out.contains(", pinned"),
        "{out}"
    );
    let (code, out, err) = run(&["connectors", "rollback", "krr"]);
    assert!(
        code == Some(0) && out.contains("rolled krr back from 2.1.0 to 1.0.1"),
        "{out}{err}"
    );
    let (_, out, _) = run(&["connectors", "list"]);
    let krr = out.lines().find(|l| l.starts_with("krr")).unwrap();
    assert!(krr.contains("1.0.1") && krr.contains("yes"), "{krr}");
    let (_, out, _) = run(&["connectors", "history", "krr"]);
    let actions: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap())
        .collect();
    assert_eq!(actions, ["install", "pin", "upgrade", "rollback"], "{out}");
}

#[test]
fn legal_bases_and_clients_are_checked_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("folkhub.toml");
    // The old one-basis-for-everyone key says what replaced it.
    std::fs::write(&config, "[server]\nlegal_basis = \"school\"\n").unwrap();
    let out = folkhub(dir.path())
        .args(["connectors", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.legal_basis") && stderr.contains("folkhub clients add"),
        "{stderr}"
    );
    // A basis of the operator's own: its groups and markers are checked.
    std::fs::write(
        &config,
        "[legal_bases.teacher]\ngroups = [\"name\", \"shoe\"]\nmarkers = [\"SECRET\"]\n",
    )
    .unwrap();
    let out = folkhub(dir.path())
        .args(["connectors", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("legal_bases.teacher.groups")
            && stderr.contains("\"shoe\" is not a field group")
            && stderr.contains("legal_bases.teacher.markers"),
        "{stderr}"
    );
    let dir = workspace("[legal_bases.teacher]\ngroups = [\"name\", \"birth\", \"contact\"]\n");
    let out = folkhub(dir.path())
        .args([
            "clients",
            "add",
            "school-a",
            "--basis",
            "coach",
            "--purpose",
            "pupils",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"coach\"") && stderr.contains("teacher"),
        "{stderr}"
    );
    let out = folkhub(dir.path())
        .args([
            "clients",
            "add",
            "school-a",
            "--basis",
            "teacher",
            "--purpose",
            "pupils of class 3b",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("X-API-Key: fh_"), "{stdout}");
    let out = folkhub(dir.path())
        .args([
            "clients",
            "add",
            "school-a",
            "--basis",
            "teacher",
            "--purpose",
            "again",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists already"));
    let out = folkhub(dir.path())
        .args(["clients", "list"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("school-a") && stdout.contains("active"),
        "{stdout}"
    );
    assert!(!stdout.contains("fh_"), "no secret is listed: {stdout}");
    let out = folkhub(dir.path())
        .args(["clients", "revoke", "school-a", "--reason", "term ended"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = folkhub(dir.path())
        .args(["clients", "list"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked"));
    let out = folkhub(dir.path())
        .args(["person", "get", "03851598730", "--basis", "coach"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = folkhub(dir.path())
        .args(["audit", "--since", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("YYYY-MM-DD"));
}

#[test]
fn overrides_and_conflicts_explain_bad_input() {
    let dir = workspace("");
    let run = |args: &[&str]| run_in(dir.path(), args);
    let (code, _, err) = run(&[
        "overrides",
        "add",
        "03851598730",
        "contact.mail",
        "x",
        "--reason",
        "r",
    ]);
    assert!(
        code == Some(1) && err.contains("not a field of the catalogue"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "overrides",
        "add",
        "03851598730",
        "contact.email",
        "x",
        "--reason",
        " ",
    ]);
    assert!(
        code == Some(1) && err.contains("--reason must say why"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "overrides",
        "add",
        "03851598730",
        "contact.email",
        "x",
        "--reason",
        "r",
        "--expires",
        "2020-01-01",
    ]);
    assert!(
        code == Some(1) && err.contains("is not after today"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "overrides",
        "add",
        "03851598730",
        "contact.email",
        "x",
        "--reason",
        "r",
    ]);
    assert!(
        code == Some(1) && err.contains("no person with ID 03851598730"),
        "{err}"
    );
    let (code, _, err) = run(&["overrides", "remove", "7", "--reason", "r"]);
    assert!(
        code == Some(1) && err.contains("no open override #7"),
        "{err}"
    );
    let (code, out, _) = run(&["conflicts"]);
    assert!(
        code == Some(0) && out.contains("no open conflicts"),
        "{out}"
    );
    let (code, out, _) = run(&["overrides", "list"]);
    assert!(
        code == Some(0) && out.contains("no open overrides"),
        "{out}"
    );
    let (code, out, _) = run(&["rebuild", "--check"]);
    assert!(
        code == Some(0) && out.contains("0 persons rebuilt"),
        "{out}"
    );
}

/// A child with a parent the store holds (so the answer carries
/// `related`), a protected address, and a parent: what `person get
/// --json` and the API must show alike.
async fn two_persons(url: &str) {
    use folkhub_core::observation::{Observation, SourceId};
    use folkhub_store::Persons;
    let store = folkhub_store::sql::SqlStore::open_url(
        url,
        folkhub_core::MergeRules::default(),
        folkhub_store::sql::OpenMode::Migrate,
    )
    .await
    .unwrap();
    let person = |id: &str, fields: Vec<(&str, serde_json::Value, Vec<String>)>| {
        folkhub_core::contract::FoundPerson {
            ids: vec![SourceId {
                scheme: "no-fnr".into(),
                value: id.into(),
                active: true,
            }],
            fields: fields
                .into_iter()
                .map(|(path, value, labels)| Observation {
                    path: path.into(),
                    value,
                    labels,
                    effective: None,
                })
                .collect(),
            upstream_version: "v1".into(),
            covers: None,
        }
    };
    store
        .apply(folkhub_store::Batch {
            source: "folkeregister".into(),
            release: "1.0.0".into(),
            retrieved: chrono::Utc::now(),
            persons: vec![
                person(
                    CHILD,
                    vec![
                        ("name.family", serde_json::json!("NORDMANN"), vec![]),
                        ("name.given", serde_json::json!("OLA"), vec![]),
                        ("birth.date", serde_json::json!("2012-03-15"), vec![]),
                        (
                            "address.residential",
                            serde_json::json!({"street": "Gata 1", "postal_code": "0150", "city": "OSLO"}),
                            vec!["fortrolig".into()],
                        ),
                        (
                            "relations.parental-responsibility",
                            serde_json::json!([{"id": PARENT, "role": "mother"}]),
                            vec![],
                        ),
                    ],
                ),
                person(
                    PARENT,
                    vec![
                        ("name.family", serde_json::json!("NORDMANN"), vec![]),
                        ("name.given", serde_json::json!("KARI"), vec![]),
                        ("birth.date", serde_json::json!("1980-01-01"), vec![]),
                    ],
                ),
            ],
            cursor: None,
            reason: "test".into(),
            fence: Default::default(),
        })
        .await
        .unwrap();
}

const CHILD: &str = "15031210140";
const PARENT: &str = "01018040006";

/// The API's answer to a client of `basis` for `GET path`.
async fn api_answer(url: &str, basis: &str, path: &str) -> serde_json::Value {
    use folkhub_store::Access;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let store = std::sync::Arc::new(
        folkhub_store::sql::SqlStore::open_url(
            url,
            folkhub_core::MergeRules::default(),
            folkhub_store::sql::OpenMode::Migrate,
        )
        .await
        .unwrap(),
    );
    let secret = folkhub_api::auth::new_secret();
    store
        .add_client(folkhub_store::NewClient {
            name: format!("app-{basis}-{}", path.len()),
            auth: folkhub_store::ClientAuth::ApiKey,
            secret_sha256: folkhub_api::auth::hash_secret(&secret),
            basis: basis.into(),
            purpose: "comparing answers".into(),
            admin: false,
            rate_limit: 1000,
            persons_per_minute: 1000,
            may_fetch: false,
            created_by: "test".into(),
        })
        .await
        .unwrap();
    let bases = folkhub_core::access::LegalBasis::PROFILES
        .iter()
        .filter_map(|n| folkhub_core::access::LegalBasis::profile(n).map(|b| (n.to_string(), b)))
        .collect();
    let state = folkhub_api::ApiState::new(
        store,
        bases,
        vec![],
        vec![],
        folkhub_api::access_log::Mode::BeforeAnswer,
    );
    let response = folkhub_api::app(state)
        .oneshot(
            axum::http::Request::get(path)
                .header("x-api-key", &secret)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), axum::http::StatusCode::OK, "{path}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn person_get_json_is_the_api_answer_for_the_same_basis() {
    let dir = workspace("");
    let url = format!("sqlite://{}", dir.path().join("f.db").display());
    two_persons(&url).await;
    for basis in ["full", "school", "directory"] {
        for (flag, query) in [(None, ""), (Some("--provenance"), "?provenance=true")] {
            let api = api_answer(&url, basis, &format!("/v1/persons/{CHILD}{query}")).await;
            let mut args = vec!["person", "get", CHILD, "--json", "--basis", basis];
            args.extend(flag);
            let (code, stdout, stderr) = run_in(dir.path(), &args);
            assert_eq!(code, Some(0), "{basis}: {stderr}");
            let cli: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(cli, api, "basis {basis} {query}");
            if basis != "directory" {
                assert_eq!(
                    cli["related"][PARENT].as_i64(),
                    api["related"][PARENT].as_i64(),
                    "{basis}: the relative's key"
                );
                assert!(cli["related"][PARENT].is_i64(), "{basis}: {cli}");
            }
        }
    }
    // Both reads of each pair are in the access log: the CLI's as the
    // operator, the API's as its client.
    let (code, stdout, _) = run_in(dir.path(), &["audit", "verify"]);
    assert_eq!(code, Some(0), "{stdout}");
}

#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    // `folkhub openapi | head -c 0`: the document (over 64 KiB, more than
    // a pipe holds) meets a reader that has gone.
    let dir = tempfile::tempdir().unwrap();
    let mut child = folkhub(dir.path())
        .arg("openapi")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn logs_are_json_when_asked_and_plain_text_when_not_a_terminal() {
    let dir = workspace("");
    // Opening the store logs its statements at debug level.
    let run = |format: Option<&str>| {
        let mut c = folkhub(dir.path());
        c.env("FOLKHUB_LOG", "debug")
            .args(["connectors", "install", "nosuch"]);
        if let Some(f) = format {
            c.env("FOLKHUB_LOG_FORMAT", f);
        }
        let out = c.output().unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let text = run(None);
    assert!(text.contains("DEBUG"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a pipe: {text:?}");
    let json = run(Some("json"));
    let logged: Vec<serde_json::Value> = json
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!logged.is_empty(), "no JSON log lines: {json}");
    assert!(
        logged
            .iter()
            .all(|l| l["level"].is_string() && l["fields"].is_object()),
        "{json}"
    );
}

#[test]
fn follow_sets_and_populations_from_the_command_line() {
    let dir = workspace("[follow]\nretention = \"2 weeks\"\n");
    // A retention that is not a duration is named with its key.
    let (code, _, stderr) = run_in(dir.path(), &["follows", "sweep"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("follow.retention"), "{stderr}");
    let dir = workspace("[follow]\nretention = \"14d\"\n");
    // The default scope is a national mirror: the sweep deletes nobody.
    let (code, _, stderr) = run_in(dir.path(), &["follows", "sweep"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("follow.scope = \"followed\""), "{stderr}");
    let (code, _, stderr) = run_in(
        dir.path(),
        &["follows", "add", "--client", "nobody", "01010100050"],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("no active client named \"nobody\""),
        "{stderr}"
    );
    let (code, _, _) = run_in(
        dir.path(),
        &[
            "clients",
            "add",
            "school",
            "--basis",
            "school",
            "--purpose",
            "pupils",
        ],
    );
    assert_eq!(code, Some(0));
    let (code, stdout, stderr) = run_in(
        dir.path(),
        &[
            "follows",
            "add",
            "--client",
            "school",
            "01010100050",
            "fi:131052-308T",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("2 added"), "{stdout}");
    // One bad ID: named, and nothing changes.
    let (code, _, stderr) = run_in(
        dir.path(),
        &[
            "follows",
            "add",
            "--client",
            "school",
            "02020200050",
            "0101010005",
        ],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("#2") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    let (_, stdout, _) = run_in(dir.path(), &["follows", "list", "--client", "school"]);
    assert!(stdout.contains("client:school: 2 followed"), "{stdout}");
    let (code, _, stderr) = run_in(
        dir.path(),
        &["populations", "add", "Pupils!", "--purpose", "x"],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("a population name is"), "{stderr}");
    let (code, stdout, stderr) = run_in(
        dir.path(),
        &[
            "populations",
            "add",
            "pupils",
            "--purpose",
            "pupils of Oslo",
            "--clients",
            "school",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("created for school"), "{stdout}");
    let (code, _, _) = run_in(
        dir.path(),
        &["follows", "add", "--population", "pupils", "01010100050"],
    );
    assert_eq!(code, Some(0));
    let (_, stdout, _) = run_in(dir.path(), &["populations", "list"]);
    assert!(
        stdout.contains("pupils: 1 members, clients school"),
        "{stdout}"
    );
    let (_, stdout, _) = run_in(dir.path(), &["follows", "deletions", "--id", "01010100050"]);
    assert!(stdout.contains("no deletion of this ID"), "{stdout}");
    let (_, stdout, _) = run_in(dir.path(), &["webhooks", "list"]);
    assert!(stdout.contains("no webhook subscriptions"), "{stdout}");
    let (code, _, stderr) = run_in(dir.path(), &["webhooks", "deliveries", "9"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no webhook subscription #9"), "{stderr}");
    let (code, _, stderr) = run_in(
        dir.path(),
        &["webhooks", "disable", "9", "--reason", "receiver retired"],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("no active webhook subscription #9"),
        "{stderr}"
    );
}

/// `connectors check` against the simulators: every release in the
/// registry passes, except the published releases whose defects later
/// releases fixed, which fail exactly where the fix notes say.
#[test]
fn connectors_check_holds_every_release_to_the_contract() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "connectors",
            "check",
            "--registry",
            &root.join("registry-manifest.toml").display().to_string(),
            "--json",
        ],
    );
    let reports: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let mut failing = std::collections::BTreeMap::new();
    for r in reports.as_array().expect("reports") {
        let failed: Vec<&str> = r["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .filter(|c| c["passed"] == false)
            .map(|c| c["check"].as_str().unwrap_or("?"))
            .collect();
        assert!(r["checks"].as_array().unwrap().len() >= 4, "{r}");
        if !failed.is_empty() {
            failing.insert(
                format!(
                    "{} {}",
                    r["connector"].as_str().unwrap(),
                    r["version"].as_str().unwrap()
                ),
                failed,
            );
        }
    }
    // krr before 2.2.0 stored an empty person for IKKE_REGISTRERT; spar
    // before 1.1.0/2.1.0 read no element of PersonSök's namespaced answers.
    let krr_fixed_in_220 = vec!["lookup: not found"];
    let spar_fixed_in_110 = vec!["lookup: found", "change feed: paging and resume"];
    let expected: std::collections::BTreeMap<String, Vec<&str>> = [
        ("krr 1.0.0", &krr_fixed_in_220),
        ("krr 1.0.1", &krr_fixed_in_220),
        ("krr 2.0.0", &krr_fixed_in_220),
        ("krr 2.1.0", &krr_fixed_in_220),
        ("spar 1.0.0", &spar_fixed_in_110),
        ("spar 1.0.1", &spar_fixed_in_110),
        ("spar 2.0.0", &spar_fixed_in_110),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect();
    assert_eq!(failing, expected);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("connectors check failed for krr 1.0.0"),
        "{err}"
    );

    // One component, with its entry or without: the newest SPAR passes,
    // search included.
    let manifest = std::fs::read_to_string(root.join("registry-manifest.toml")).unwrap();
    let entry = |connector: &str, version: &str| {
        manifest
            .split("[[release]]")
            .find(|b| {
                b.contains(&format!("connector = \"{connector}\""))
                    && b.contains(&format!("version = \"{version}\""))
            })
            .unwrap()
            .to_string()
    };
    std::fs::write(dir.path().join("spar.toml"), entry("spar", "2.2.0")).unwrap();
    let spar = root
        .join("registry/artifacts/spar-2.2.0.wasm")
        .display()
        .to_string();
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "connectors",
            "check",
            &spar,
            "--manifest-entry",
            "spar.toml",
        ],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("PASS  search: a known person"), "{out}");
    let (code, out, err) = run_in(dir.path(), &["connectors", "check", &spar]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("spar 0.0.0 (contract 2.2.0"), "{out}");
    // krr's component under kartverket's entry: refused, and why.
    std::fs::write(
        dir.path().join("k.toml"),
        entry("kartverket", "1.1.1")
            .replace(
                "sha256 = \"d7bce314662e3d1e207c3d6078be2886a1908b59ed8f0919351c2d1accb9e839\"",
                "sha256 = \"d8705bcc19084fbf99cb3bc0d994299481c256e4bce98148c9de91882d7d2bbd\"",
            )
            .replace("contract = \"2.0.0\"", "contract = \"2.1.0\""),
    )
    .unwrap();
    let krr = root
        .join("registry/artifacts/krr-2.2.0.wasm")
        .display()
        .to_string();
    let (code, out, _) = run_in(
        dir.path(),
        &["connectors", "check", &krr, "--manifest-entry", "k.toml"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL  install and negotiate") && out.contains("is the connector \"krr\""),
        "{out}"
    );
    // Not a component at all.
    std::fs::write(dir.path().join("x.wasm"), b"not wasm").unwrap();
    let (code, _, err) = run_in(dir.path(), &["connectors", "check", "x.wasm"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not a WebAssembly component"), "{err}");
}

/// The Python example (examples/connectors/python-krr, built by `cargo
/// xtask build-examples` with componentize-py against the contract
/// package) passes the same conformance suite as the project's releases,
/// against the KRR simulator.
#[test]
fn the_python_example_passes_connectors_check() {
    example_passes_connectors_check("python-krr");
}

/// The JavaScript example (examples/connectors/js-krr, componentize-js),
/// likewise.
#[test]
fn the_javascript_example_passes_connectors_check() {
    example_passes_connectors_check("js-krr");
}

fn example_passes_connectors_check(id: &str) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let wasm = root.join(format!("target/examples/{}.wasm", id.replace('-', "_")));
    assert!(
        wasm.exists(),
        "{} is missing: run `cargo xtask build-examples` (or `cargo xtask test`)",
        wasm.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "connectors",
            "check",
            &wasm.display().to_string(),
            "--register",
            "krr",
            "--json",
        ],
    );
    let report: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    let report = if report.is_array() {
        report[0].clone()
    } else {
        report
    };
    assert_eq!(report["connector"], id, "{report}");
    let checks = report["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["check"].as_str()).collect();
    for expected in [
        "lookup: found",
        "lookup: not found",
        "lookup: malformed ID",
        "lookup: a full batch",
        "change feed: paging and resume",
    ] {
        assert!(names.contains(&expected), "{expected} not run: {names:?}");
    }
    let failed: Vec<&serde_json::Value> = checks.iter().filter(|c| c["passed"] != true).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(code, Some(0), "{err}");
    // The interpreter's memory is measured, not left at zero.
    let memory = checks
        .iter()
        .find(|c| c["check"] == "memory per call")
        .and_then(|c| c["detail"].as_str())
        .expect("memory per call");
    let mib: f64 = memory
        .split("any call above: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{memory}"));
    assert!(mib > 1.0 && mib < 64.0, "{memory}");
}

/// A register without a simulator is stood in for by answers its vendor
/// recorded: the krr release runs against a recording of KRR's REST v2
/// (tests/fixtures/recorded-krr, written from Digdir's documentation) and
/// passes; with a feed page left out of the recording, the check names the
/// request that had no answer.
#[test]
fn connectors_check_runs_against_recorded_answers_and_names_what_they_lack() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let wasm = root.join("registry/artifacts/krr-2.2.0.wasm");
    let fixtures = root.join("host/cli/tests/fixtures/recorded-krr");
    let dir = tempfile::tempdir().unwrap();
    let check = |recording: &std::path::Path| {
        let (code, out, err) = run_in(
            dir.path(),
            &[
                "connectors",
                "check",
                &wasm.display().to_string(),
                "--recorded",
                &recording.display().to_string(),
                "--json",
            ],
        );
        let report: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
        (
            code,
            report[0]["checks"].as_array().expect("checks").clone(),
            err,
        )
    };
    let outcome = |checks: &[serde_json::Value], name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("{name} not run: {checks:?}"))
            .clone()
    };

    let (code, checks, err) = check(&fixtures.join("recording.toml"));
    for name in [
        "lookup: malformed ID",
        "lookup: found",
        "lookup: not found",
        "lookup: a full batch",
        "change feed: paging and resume",
        "recorded answers cover every request",
    ] {
        assert_eq!(outcome(&checks, name)["passed"], true, "{name}: {checks:?}");
    }
    assert_eq!(code, Some(0), "{err}");

    // The feed's second page left out of the recording.
    let text = std::fs::read_to_string(fixtures.join("recording.toml")).unwrap();
    let cut = text
        .split("[[exchange]]")
        .filter(|e| !e.contains("fraEndringsNummer=3"))
        .collect::<Vec<_>>()
        .join("[[exchange]]");
    for file in [
        "personer-found.json",
        "endringer-1.json",
        "endringer-3.json",
    ] {
        std::fs::copy(fixtures.join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("recording.toml"), cut).unwrap();
    let (code, checks, _) = check(&dir.path().join("recording.toml"));
    assert_eq!(code, Some(1));
    let lacking = outcome(&checks, "recorded answers cover every request");
    assert_eq!(lacking["passed"], false);
    assert!(
        lacking["detail"]
            .as_str()
            .unwrap()
            .contains("GET /rest/v2/endringer?fraEndringsNummer=3"),
        "{lacking}"
    );
    assert_eq!(
        outcome(&checks, "change feed: paging and resume")["passed"],
        false
    );

    // A recording that is not one is refused before anything runs.
    std::fs::write(dir.path().join("bad.toml"), "known = []\n").unwrap();
    let (code, _, err) = run_in(
        dir.path(),
        &[
            "connectors",
            "check",
            &wasm.display().to_string(),
            "--recorded",
            "bad.toml",
        ],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("`known` is empty"), "{err}");
}
