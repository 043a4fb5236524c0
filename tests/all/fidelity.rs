//! The fidelity corpus: answers written by hand from the registers'
//! published schemas (`tests/fixtures/<register>/<version>/`), not produced
//! by the simulators, each beside the record it must yield. Every release in
//! `registry-manifest.toml` that claims an upstream version runs against the
//! corpus for that version, as the real component (wasm) behind a small
//! server that answers with the corpus files; the questions it sends are
//! held to the same published schemas.
//!
//! What a release must yield, per case: the outcome (found, not found, an
//! error of a kind); the IDs; the values of every field the release claims
//! in the manifest (no more, no less); and what the answer covers, among
//! the fields it claims (a release on a contract before 2.1 covers every
//! field it claims, so a narrower answer removes values it did not speak
//! for: that is the bug the corpus exists to catch).
//!
//! Releases published before the corpus existed and known to fail it are
//! listed in [`KNOWN_TO_FAIL`] with the reason; the test checks that they
//! still fail (the corpus has teeth) and that every other release passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use folkhub_core::contract::{ConnectorError, FoundPerson, LookupOutcome};
use folkhub_manifest::Release;
use folkhub_runtime::{ConnectorSettings, Limits, Runtime};
use folkhub_tests::root;
use serde_json::{Value, json};

/// Releases published before the corpus, with what the corpus found; each
/// is superseded by a release that passes (see its notes in the manifest).
const KNOWN_TO_FAIL: &[(&str, &str, &str)] = &[
    (
        "spar",
        "1.0.0",
        "reads every component in person-1.2: no names, dates, address, relations or markers",
    ),
    (
        "spar",
        "1.0.1",
        "reads every component in person-1.2: no names, dates, address, relations or markers",
    ),
    (
        "spar",
        "2.0.0",
        "reads every component in person-1.2: no names, dates, address, relations or markers",
    ),
    (
        "dvv",
        "1.0.0",
        "drops the split address (KatuS, Katunumero, ...) and the e-mail",
    ),
    (
        "dvv",
        "1.1.0",
        "drops the split address (KatuS, Katunumero, ...) and the e-mail",
    ),
    (
        "krr",
        "1.0.0",
        "reads a narrower scope as removals; IKKE_REGISTRERT in v1 as found",
    ),
    (
        "krr",
        "1.0.1",
        "reads a narrower scope as removals; IKKE_REGISTRERT in v1 as found",
    ),
    ("krr", "2.0.0", "reads a narrower scope as removals"),
    ("krr", "2.1.0", "reads a narrower scope as removals"),
];

/// One corpus case: the body the register sends and what it must yield.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    body: String,
    expected: Value,
}

fn corpus_dir(release: &Release) -> Option<PathBuf> {
    let system = release.upstream.system.as_str();
    let register = if system.starts_with("SPAR") {
        "spar"
    } else if system.starts_with("DVV") {
        "vtj"
    } else if system == "KRR" {
        "krr"
    } else {
        return None;
    };
    let dir = root()
        .join("tests/fixtures")
        .join(register)
        .join(&release.upstream.version);
    dir.exists().then_some(dir)
}

fn wire_table(release: &Release) -> String {
    let system = release.upstream.system.as_str();
    if system.starts_with("SPAR") {
        format!("spar-{}", release.upstream.version)
    } else if system.starts_with("DVV") {
        "vtj-kysely".into()
    } else {
        format!("krr-{}", release.upstream.version)
    }
}

fn cases(dir: &Path) -> Vec<Case> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        // A case is an answer (`.xml`, or `.json` that is not an expectation).
        let answer =
            ext == "xml" || ext == "json" && !path.to_string_lossy().ends_with(".expected.json");
        if !answer {
            continue;
        }
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        let expected_path = if ext == "xml" {
            path.with_extension("json")
        } else {
            path.with_extension("expected.json")
        };
        if !expected_path.exists() {
            continue;
        }
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(&expected_path).expect("expected"))
                .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        out.push(Case {
            name: stem,
            body: std::fs::read_to_string(&path).expect("body"),
            expected,
        });
    }
    assert!(!out.is_empty(), "no cases in {}", dir.display());
    out
}

/// The corpus server: answers each question with the case for the ID it
/// asks about, and records questions that break the published schema.
#[derive(Clone)]
struct Served {
    cases: Arc<Vec<Case>>,
    table: Arc<folkhub_sim::wire::Table>,
    problems: Arc<Mutex<Vec<String>>>,
}

fn xml_of(root_tag: &str, body: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(body).ok()?;
    doc.descendants()
        .find(|n| n.is_element() && n.tag_name().name() == root_tag)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
}

fn case_for(served: &Served, asked: &str) -> Option<Case> {
    served
        .cases
        .iter()
        .find(|c| {
            c.expected["requested"].as_str() == Some(asked)
                || c.expected["requested"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(asked)))
        })
        .cloned()
}

async fn soap_question(State(served): State<Served>, body: String) -> Response {
    // The question must hold to the published schema too; secrets are
    // host placeholders, filled here as the host would.
    let filled = body
        .replace("{{secret:KundNrLeveransMottagare}}", "500243")
        .replace("{{secret:KundNrSlutkund}}", "500243")
        .replace("{{secret:UppdragId}}", "637")
        .replace("{{secret:vtj-user}}", "user")
        .replace("{{secret:vtj-password}}", "password");
    if served.table.register.starts_with("SPAR")
        && let Err(p) = served.table.check_xml(&filled)
    {
        served
            .problems
            .lock()
            .unwrap()
            .push(format!("the question breaks the schema: {p:?}"));
    }
    let asked = xml_of("IdNummer", &filled).or_else(|| xml_of("Henkilotunnus", &filled));
    match asked.and_then(|a| case_for(&served, &a)) {
        Some(case) => (
            StatusCode::OK,
            [("content-type", "text/xml; charset=utf-8")],
            case.body,
        )
            .into_response(),
        None => (StatusCode::BAD_REQUEST, "no corpus case for this question").into_response(),
    }
}

async fn feed_file(State(served): State<Served>, UrlPath(n): UrlPath<u64>) -> Response {
    match served
        .cases
        .iter()
        .find(|c| c.expected["feed"].as_u64() == Some(n))
    {
        Some(case) => (
            StatusCode::OK,
            [("content-type", "application/xml")],
            case.body.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file yet").into_response(),
    }
}

async fn krr_persons(State(served): State<Served>, body: String) -> Response {
    // KRR answers batches: the case is the one asked for exactly these IDs.
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let asked = &request["personidentifikatorer"];
    let case = served
        .cases
        .iter()
        .find(|c| &c.expected["requested"] == asked)
        .cloned();
    match case {
        Some(case) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            case.body,
        )
            .into_response(),
        None => (StatusCode::BAD_REQUEST, "no corpus case").into_response(),
    }
}

async fn serve(cases: Vec<Case>, table: folkhub_sim::wire::Table) -> (String, Served) {
    use axum::routing::{get, post};
    let served = Served {
        cases: Arc::new(cases),
        table: Arc::new(table),
        problems: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/{version}/personsok", post(soap_question))
        .route("/vtj", post(soap_question))
        .route("/avisering/{n}", get(feed_file))
        .route("/rest/{version}/personer", post(krr_persons))
        .with_state(served.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, served)
}

fn settings(url: &str, release: &Release, case: Option<&Case>) -> ConnectorSettings {
    let mut config = BTreeMap::new();
    let asked: Vec<String> = case
        .and_then(|c| c.expected["asked"].as_array())
        .map(|l| {
            l.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let system = release.upstream.system.as_str();
    if system.starts_with("SPAR") {
        config.insert("base-url".into(), url.to_string());
        config.insert("avisering-url".into(), format!("{url}/avisering"));
        config.insert("extended".into(), asked.join(","));
    } else if system.starts_with("DVV") {
        config.insert("base-url".into(), format!("{url}/vtj"));
        let product = case
            .and_then(|c| c.expected["product"].as_str())
            .unwrap_or("PERUSSANOMA 1");
        config.insert("product".into(), product.into());
    } else {
        config.insert(
            "base-url".into(),
            format!("{url}/rest/{}", release.upstream.version),
        );
        if let Some(scopes) = case.and_then(|c| c.expected["scopes"].as_str()) {
            config.insert("scopes".into(), scopes.into());
        }
    }
    let mut secrets = BTreeMap::new();
    for s in [
        "KundNrLeveransMottagare",
        "KundNrSlutkund",
        "UppdragId",
        "vtj-user",
        "vtj-password",
    ] {
        secrets.insert(s.to_string(), "x".to_string());
    }
    ConnectorSettings {
        granted_hosts: vec![url.to_string()],
        allow_private_networks: true,
        config,
        secrets,
        ..ConnectorSettings::default()
    }
}

/// What an answer covers among the fields a release claims.
fn covered(expected: &Value, claimed: &[String]) -> Vec<String> {
    let all = || claimed.to_vec();
    match expected {
        Value::String(s) if s == "all" => all(),
        Value::String(s) if s.starts_with("all-but:") => {
            let but: Vec<&str> = s["all-but:".len()..].split(',').collect();
            all()
                .into_iter()
                .filter(|f| !but.contains(&f.as_str()))
                .collect()
        }
        Value::Array(list) => list
            .iter()
            .filter_map(|v| v.as_str())
            .filter(|f| claimed.iter().any(|c| c == f))
            .map(String::from)
            .collect(),
        _ => all(),
    }
}

fn compare_person(
    what: &str,
    person: &FoundPerson,
    expected: &Value,
    claimed: &[String],
    problems: &mut Vec<String>,
) {
    if let Some(ids) = expected.get("ids") {
        let got: Vec<Value> = person
            .ids
            .iter()
            .map(|i| json!([i.scheme, i.value, i.active]))
            .collect();
        if &Value::Array(got.clone()) != ids {
            problems.push(format!("{what}: ids {got:?}, expected {ids}"));
        }
    }
    let empty = serde_json::Map::new();
    let fields = expected["fields"].as_object().unwrap_or(&empty);
    for path in claimed {
        let got = person
            .fields
            .iter()
            .find(|f| &f.path == path)
            .map(|f| &f.value);
        let want = fields.get(path);
        if got != want {
            problems.push(format!(
                "{what}: {path} is {}, expected {}",
                got.map_or("missing".into(), |v| v.to_string()),
                want.map_or("missing".into(), |v| v.to_string())
            ));
        }
    }
    for f in &person.fields {
        if !claimed.contains(&f.path) {
            problems.push(format!(
                "{what}: {} is not a field the release claims in the manifest",
                f.path
            ));
        }
    }
    let mut want = covered(&expected["covers"], claimed);
    let mut got: Vec<String> = claimed
        .iter()
        .filter(|f| person.speaks_for(f))
        .cloned()
        .collect();
    want.sort();
    got.sort();
    if want != got {
        let removed: Vec<&String> = got.iter().filter(|f| !want.contains(f)).collect();
        let ignored: Vec<&String> = want.iter().filter(|f| !got.contains(f)).collect();
        problems.push(format!(
            "{what}: covers differ: would remove values it does not speak for {removed:?}; does not speak for {ignored:?}"
        ));
    }
}

fn error_kind(e: &ConnectorError) -> &'static str {
    match e {
        ConnectorError::Unauthorized(_) => "unauthorized",
        ConnectorError::RateLimited(_) => "rate-limited",
        ConnectorError::UpstreamUnavailable(_) => "upstream-unavailable",
        ConnectorError::UpstreamVersionGone(_) => "upstream-retired",
        ConnectorError::BadInput(_) => "bad-input",
        ConnectorError::MalformedResponse(_) => "malformed-response",
        ConnectorError::Denied(_) => "denied",
        ConnectorError::Other(_) => "other",
    }
}

/// Runs one release against its corpus; every problem is returned.
async fn run_release(
    rt: &Runtime,
    manifest: &folkhub_manifest::Manifest,
    release: &Release,
    dir: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let cases = cases(dir);
    let table = folkhub_sim::wire::table(&wire_table(release)).expect("table");
    // The corpus itself holds to the published schema (unless a case is
    // there to show what happens when an answer does not).
    for case in &cases {
        if case.expected["schema_valid"] == json!(false) {
            continue;
        }
        let result = if case.body.trim_start().starts_with('<') {
            table.check_xml(&case.body)
        } else {
            table.check_json(&serde_json::from_str(&case.body).expect("json case"))
        };
        assert!(
            result.is_ok(),
            "corpus case {}/{} breaks the published schema: {:?}",
            dir.display(),
            case.name,
            result.err()
        );
    }
    let (url, served) = serve(cases.clone(), table).await;
    let artifact = manifest.artifact_path(release);
    let what_release = format!("{} {}", release.connector, release.version);
    for case in &cases {
        let what = format!("{what_release} × {}", case.name);
        let connector = match rt.prepare(release, &artifact, settings(&url, release, Some(case))) {
            Ok(c) => c,
            Err(e) => panic!("{what_release}: {e}"),
        };
        let expected = &case.expected;
        if let Some(n) = expected["feed"].as_u64() {
            let cursor = (n - 1).to_string();
            let page = match connector.changes(Some(&cursor)).await {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("{what}: the feed failed: {e}"));
                    continue;
                }
            };
            let want = expected["changes"].as_array().expect("changes");
            if page.changes.len() != want.len() {
                problems.push(format!(
                    "{what}: {} changes, expected {}",
                    page.changes.len(),
                    want.len()
                ));
                continue;
            }
            for (got, want) in page.changes.iter().zip(want) {
                if Some(got.id.as_str()) != want["id"].as_str() {
                    problems.push(format!(
                        "{what}: change for {}, expected {}",
                        got.id, want["id"]
                    ));
                }
                // A release whose feed carries no records makes the host
                // look the person up: nothing to compare here.
                if let Some(record) = &got.record {
                    compare_person(
                        &format!("{what} change {}", got.id),
                        record,
                        want,
                        &release.fields,
                        &mut problems,
                    );
                }
            }
            continue;
        }
        let requested: Vec<String> = match &expected["requested"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(l) => l
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => panic!("{what}: no requested"),
        };
        let results = connector.lookup(&requested).await;
        let outcomes: Vec<(String, Result<LookupOutcome, ConnectorError>)> = match results {
            Ok(list) => list
                .into_iter()
                .map(|r| (r.requested, Ok(r.outcome)))
                .collect(),
            Err(e) => match e.connector_error() {
                Some(ce) => requested
                    .iter()
                    .map(|r| (r.clone(), Err(ce.clone())))
                    .collect(),
                None => {
                    problems.push(format!("{what}: the call failed: {e}"));
                    continue;
                }
            },
        };
        let per_id = expected.get("results").and_then(|r| r.as_object());
        for (id, outcome) in outcomes {
            let want = per_id.and_then(|m| m.get(&id)).unwrap_or(expected);
            let want_outcome = want["outcome"].as_str().unwrap_or("found");
            match (want_outcome, outcome) {
                ("found", Ok(LookupOutcome::Found(p))) => compare_person(
                    &format!("{what} {id}"),
                    &p,
                    want,
                    &release.fields,
                    &mut problems,
                ),
                ("not-found", Ok(LookupOutcome::NotFound)) => {}
                ("failed", Ok(LookupOutcome::Failed(e)) | Err(e))
                    if want["error"].as_str() == Some(error_kind(&e)) => {}
                (want_outcome, got) => problems.push(format!(
                    "{what} {id}: expected {want_outcome} {}, got {got:?}",
                    want["error"].as_str().unwrap_or("")
                )),
            }
        }
    }
    problems.extend(served.problems.lock().unwrap().drain(..));
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_release_passes_the_corpus_of_its_upstream_version() {
    let manifest =
        folkhub_manifest::Manifest::load(&root().join("registry-manifest.toml")).expect("manifest");
    // One compile per release; each case loads it from this cache.
    let cache = tempfile::tempdir().expect("cache dir");
    let rt = Runtime::new(Some(cache.path().to_path_buf()), Limits::default()).expect("runtime");
    let mut ran = 0;
    let mut report = Vec::new();
    for release in &manifest.releases {
        let Some(dir) = corpus_dir(release) else {
            continue;
        };
        ran += 1;
        let problems = run_release(&rt, &manifest, release, &dir).await;
        let known = KNOWN_TO_FAIL
            .iter()
            .find(|(c, v, _)| *c == release.connector && *v == release.version);
        match (known, problems.is_empty()) {
            (None, true) => {}
            (None, false) => report.push(format!(
                "{} {} fails the {} {} corpus:\n  {}",
                release.connector,
                release.version,
                release.upstream.system,
                release.upstream.version,
                problems.join("\n  ")
            )),
            (Some(_), false) => {}
            (Some((_, _, why)), true) => report.push(format!(
                "{} {} is listed as failing the corpus ({why}) but passes it: the corpus lost its teeth, or the list is stale",
                release.connector, release.version
            )),
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n\n"));
    assert!(ran >= 10, "only {ran} releases have a corpus");
}
