#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Shared fixtures for the integration tests: a simulator with a trusted
//! Maskinporten client, a temporary store, a host wired like `folkhub serve`,
//! and paths of built test components.

pub mod cluster;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use folkhub_app::Host;
use folkhub_manifest::Config;
use folkhub_sim::{Client, Simulator};
use rsa::RsaPrivateKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A built test component (`cargo xtask build-connectors` builds them).
pub fn component(name: &str) -> PathBuf {
    let path = root()
        .join("target/wasm32-wasip2/connector")
        .join(format!("component_{}.wasm", name.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask build-connectors` (or `cargo xtask test`)",
        path.display()
    );
    path
}

/// A release entry for a component outside the registry (test components).
pub fn test_release(name: &str, path: &Path, contract: &str) -> folkhub_manifest::Release {
    let bytes = std::fs::read(path).expect("component");
    folkhub_manifest::Release {
        connector: name.into(),
        version: "0.1.0".into(),
        contract: contract.into(),
        artifact: path.display().to_string(),
        sha256: folkhub_runtime::engine::sha256_hex(&bytes),
        upstream: folkhub_manifest::registry::Upstream {
            system: "test".into(),
            version: "0".into(),
        },
        outbound_hosts: vec!["https://registry.example".into()],
        fields: vec![],
        capabilities: vec!["lookup".into()],
        id_schemes: vec![],
        credentials: "none".into(),
        cost_per_call: 0.0,
        published: chrono::NaiveDate::from_ymd_opt(2026, 11, 22).expect("date"),
        notes: String::new(),
        breaking: None,
        publisher: None,
        signature: None,
        upgrades_from: None,
        host: None,
    }
}

/// One RSA key for every test: generating one takes a moment.
pub fn client_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("generating a test RSA key")
    })
}

pub const CLIENT_ID: &str = "folkhub-test";

/// A running simulator, a temporary directory and a host configured for both.
pub struct TestEnv {
    pub sim: Simulator,
    pub dir: tempfile::TempDir,
    pub host: Host,
}

/// Settings for [`TestEnv::start`].
pub struct Setup {
    pub seed: u64,
    pub count: usize,
    pub call_timeout_ms: u64,
    pub memory_limit_mib: u64,
    pub max_response_bytes: u64,
    pub max_hostcalls: u64,
    /// Register the test client with the simulator's token endpoint.
    pub trust_client: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            seed: 7,
            count: 200,
            call_timeout_ms: 20_000,
            memory_limit_mib: 64,
            max_response_bytes: 32 << 20,
            max_hostcalls: 100_000,
            trust_client: true,
        }
    }
}

impl TestEnv {
    pub async fn start(setup: Setup) -> TestEnv {
        let key = client_key();
        let clients = if setup.trust_client {
            vec![Client {
                client_id: CLIENT_ID.into(),
                public_key: key.to_public_key(),
                scopes: folkhub_sim::all_scopes(),
            }]
        } else {
            vec![]
        };
        let sim = Simulator::start(folkhub_sim::Config {
            seed: setup.seed,
            count: setup.count,
            clients,
            ..Default::default()
        })
        .await
        .expect("starting the simulator");
        let dir = tempfile::tempdir().expect("temp dir");
        let key_file = dir.path().join("key.pem");
        std::fs::write(
            &key_file,
            key.to_pkcs8_pem(LineEnding::LF).expect("pem").as_bytes(),
        )
        .expect("writing key");
        let text = format!(
            r#"
[store]
url = "sqlite://{db}"
[registry]
manifest = "{manifest}"
[runtime]
cache_dir = "{cache}"
call_timeout_ms = {timeout}
memory_limit_mib = {memory}
max_response_bytes = {max_response}
max_hostcalls = {max_hostcalls}

{connectors}"#,
            connectors = sim.host_config(CLIENT_ID, &key_file),
            db = dir.path().join("folkhub.db").display(),
            manifest = root().join("registry-manifest.toml").display(),
            cache = root().join("target/test-cache").display(),
            timeout = setup.call_timeout_ms,
            memory = setup.memory_limit_mib,
            max_response = setup.max_response_bytes,
            max_hostcalls = setup.max_hostcalls,
        );
        let config = Config::parse(&text, "test folkhub.toml").expect("test config");
        let host = Host::open(config).await.expect("opening the host");
        TestEnv { sim, dir, host }
    }
}

/// Everything a host app could observe, per person, ignoring when things
/// were retrieved: identifiers, values with their labels, and the history
/// as the sequence of what changed.
pub async fn snapshot(
    store: &dyn folkhub_store::PersonStore,
) -> Vec<(Vec<String>, String, Vec<String>)> {
    let mut out = Vec::new();
    for p in all_persons(store).await {
        let mut ids: Vec<String> = p
            .ids
            .iter()
            .map(|i| format!("{}:{}:{}", i.scheme, i.value, i.active))
            .collect();
        ids.sort();
        let values: Vec<(String, serde_json::Value, Vec<String>)> = p
            .record
            .fields
            .iter()
            .map(|(k, f)| (k.clone(), f.value.clone(), f.labels.clone()))
            .collect();
        let history = store
            .history(p.key)
            .await
            .expect("history")
            .into_iter()
            .map(|c| format!("v{} {}", c.version, c.diff))
            .collect();
        out.push((ids, serde_json::json!(values).to_string(), history));
    }
    out.sort();
    out
}

/// Every stored person, in key order.
pub async fn all_persons(
    store: &dyn folkhub_store::PersonStore,
) -> Vec<folkhub_store::StoredPerson> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.persons_after(after, 1000).await.expect("persons");
        let Some(last) = page.last() else { break };
        after = last.key;
        out.extend(page);
    }
    out
}

/// A person as the read model shows them to `basis`, as JSON (with
/// provenance when asked): what the API and `person get --json` send.
pub fn person_json(
    person: &folkhub_store::StoredPerson,
    basis: &folkhub_core::access::LegalBasis,
    provenance: bool,
) -> serde_json::Value {
    serde_json::to_value(folkhub_read::person_view(person, basis, provenance, None).0)
        .unwrap_or_default()
}

/// The FHIR Patient the read model shows `basis`.
pub fn patient_json(
    person: &folkhub_store::StoredPerson,
    basis: &folkhub_core::access::LegalBasis,
) -> serde_json::Value {
    folkhub_read::patient(person, basis).0
}

/// A person's history as the read model shows it to `basis`, protected
/// by the person's markers today (`now`).
pub fn history_json(
    changes: &[folkhub_store::PersonChange],
    basis: &folkhub_core::access::LegalBasis,
    now: &[String],
) -> serde_json::Value {
    let (history, _) = folkhub_read::history_entries(changes, basis, &|_| now.to_vec());
    serde_json::json!({ "history": history })
}

/// The current ID of every Norwegian the simulated Folkeregisteret knows,
/// in the simulator's order.
pub async fn norwegians(env: &TestEnv) -> Vec<String> {
    env.sim
        .truth_for(&["folkeregister"])
        .await
        .iter()
        .filter_map(|t| t.ids.last().cloned())
        .filter(|id| id.len() == 11)
        .collect()
}
