//! A connector from outside the repository, in another component language,
//! taken the way docs/vendors.md takes it: built by componentize-py or
//! componentize-js against the contract package (`cargo xtask build-examples`, run by `cargo xtask
//! test`), signed by its vendor, published in a vendor registry beside the
//! built-in one, installed, and asked the same questions as the Rust krr
//! connector. Its answers must be the same, field for field.

use folkhub_core::contract::LookupOutcome;
use folkhub_manifest::signing;
use folkhub_tests::{Setup, TestEnv, root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_connector_is_signed_installed_from_a_vendor_registry_and_answers_as_rust_krr() {
    answers_as_rust_krr("python-krr", "KRR in Python (componentize-py)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_connector_is_signed_installed_from_a_vendor_registry_and_answers_as_rust_krr()
{
    answers_as_rust_krr("js-krr", "KRR in JavaScript (componentize-js)").await;
}

/// `id` is the example's directory under examples/connectors/ and its
/// connector id; `cargo xtask build-examples` built it into
/// target/examples/ with `-` as `_`.
async fn answers_as_rust_krr(id: &str, notes: &str) {
    let wasm = root().join(format!("target/examples/{}.wasm", id.replace('-', "_")));
    assert!(
        wasm.exists(),
        "{} is missing: run `cargo xtask build-examples` (or `cargo xtask test`)",
        wasm.display()
    );
    let env = TestEnv::start(Setup {
        seed: 91,
        count: 60,
        ..Setup::default()
    })
    .await;
    let real =
        folkhub_manifest::Manifest::load(&root().join("registry-manifest.toml")).expect("manifest");
    let krr = real.find("krr", Some("2.2.0")).expect("krr 2.2.0").clone();

    // The vendor's registry: its manifest, its artifact, its key.
    let vendor = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(vendor.path().join("artifacts")).expect("dir");
    std::fs::copy(
        &wasm,
        vendor.path().join(format!("artifacts/{id}-0.1.0.wasm")),
    )
    .expect("copy");
    let bytes = std::fs::read(&wasm).expect("wasm");
    let (private, public) = signing::generate().expect("key");
    let mut release = krr.clone();
    release.connector = id.into();
    release.version = "0.1.0".into();
    release.contract = "2.2.0".into();
    release.artifact = format!("artifacts/{id}-0.1.0.wasm");
    release.sha256 = folkhub_runtime::engine::sha256_hex(&bytes);
    release.capabilities = vec!["lookup".into(), "batch-lookup".into(), "change-feed".into()];
    release.notes = format!("{notes}, examples/connectors/{id}.");
    release.breaking = None;
    release.publisher = None;
    release.signature = None;
    let manifest = vendor.path().join("registry-manifest.toml");
    let write = |release: &folkhub_manifest::Release| {
        std::fs::write(
            &manifest,
            folkhub_manifest::Manifest::text(std::slice::from_ref(release)).expect("toml"),
        )
        .expect("write");
    };

    // The operator's host: the vendor's registry beside the built-in one,
    // the vendor's key trusted, the example configured as krr is.
    let mut config = env.host.config.clone();
    config.registry.vendors = vec![manifest.clone()];
    config.registry.trusted_keys.insert("acme".into(), public);
    let krr_config = config.connector("krr");
    config.connectors.insert(id.into(), krr_config);

    // Unsigned, it is refused, and nothing is installed.
    write(&release);
    let host = folkhub_app::Host::open(config.clone()).await.expect("host");
    let e = format!(
        "{:#}",
        host.install(id, None, false, "ops", "vendor")
            .await
            .expect_err("unsigned")
    );
    assert!(e.contains("not signed"), "{e}");

    // Signed by the vendor, it installs: contract negotiated, describe()
    // agrees with the id.
    signing::sign(&mut release, "acme", &private).expect("sign");
    write(&release);
    let host = folkhub_app::Host::open(config).await.expect("host");
    let installed = host
        .install(id, None, false, "ops", "vendor")
        .await
        .expect("install the signed vendor release");
    assert_eq!(installed.version, "0.1.0");
    host.install("krr", Some("2.2.0"), false, "ops", "rust")
        .await
        .expect("install krr");
    let vendor = host.load(id).await.expect("load the vendor's connector");
    let rust = host.load("krr").await.expect("load krr");

    // The same questions to both: every Norwegian the simulator has (in
    // KRR, left KRR, never in KRR), a D-number and one nobody has.
    let mut ids: Vec<String> = env
        .sim
        .shared
        .population
        .read()
        .await
        .persons
        .iter()
        .filter_map(|p| p.ids.last().cloned())
        .collect();
    ids.push("15039100018".into());
    let (theirs, rs) = (
        vendor.lookup(&ids).await.expect("vendor lookup"),
        rust.lookup(&ids).await.expect("rust lookup"),
    );
    assert_eq!(theirs.len(), ids.len());
    let found = rs
        .iter()
        .filter(|r| matches!(r.outcome, LookupOutcome::Found(_)))
        .count();
    assert!(found >= 30, "the comparison means something: {found} found");
    for (t, r) in theirs.iter().zip(&rs) {
        assert_eq!(t, r, "{id} and krr differ for {}", r.requested);
    }
    // The feed, after the register changed: the same pages, the same
    // records in them, the same cursors.
    env.sim.advance(80).await;
    let (mut theirs_at, mut rust_at) = (None::<String>, None::<String>);
    let mut changes = 0;
    for _ in 0..100 {
        let t = vendor
            .changes(theirs_at.as_deref())
            .await
            .expect("vendor feed");
        let r = rust.changes(rust_at.as_deref()).await.expect("rust feed");
        assert_eq!(
            t, r,
            "{id} and krr differ on the feed page after {rust_at:?}"
        );
        changes += r.changes.len();
        if r.caught_up {
            break;
        }
        (theirs_at, rust_at) = (Some(t.next_cursor), Some(r.next_cursor));
    }
    assert!(changes > 0, "the feed comparison means something");

    // A malformed ID is the register's bad input for both.
    let (p, r) = (
        vendor.lookup(&["12345".into()]).await.expect_err("bad"),
        rust.lookup(&["12345".into()]).await.expect_err("bad"),
    );
    assert_eq!(
        p.connector_error().map(std::mem::discriminant),
        r.connector_error().map(std::mem::discriminant),
        "{p} / {r}"
    );
}

/// A vendor's registry over HTTP: what it serves, by path, and what was
/// asked for.
#[derive(Clone, Default)]
struct Served {
    files: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>>,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Served {
    fn put(&self, path: &str, bytes: Vec<u8>) {
        self.files.lock().expect("files").insert(path.into(), bytes);
    }

    fn asked_for(&self, path: &str) -> usize {
        self.asked
            .lock()
            .expect("asked")
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    /// Serves the files on a free loopback port until the returned sender
    /// is dropped or sent to.
    async fn start(&self) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let served = self.clone();
        let router = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let served = served.clone();
            async move {
                let path = uri.path().to_string();
                served.asked.lock().expect("asked").push(path.clone());
                match served.files.lock().expect("files").get(&path) {
                    Some(bytes) => (axum::http::StatusCode::OK, bytes.clone()),
                    None => (axum::http::StatusCode::NOT_FOUND, Vec::new()),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(folkhub_api::serve_router(listener, router, async move {
            let _ = stopped.await;
        }));
        (addr, stop)
    }
}

/// An operator grants a vendor's registry by URL. `connectors fetch` copies
/// it (each artifact checked against its digest, fetched once); the host
/// installs from the copy, with the signature checked as for a local
/// registry. A registry that serves another artifact than it lists, a
/// manifest that does not validate, or a server that is down leaves the
/// last good copy as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_registry_granted_by_url_is_fetched_checked_and_kept_when_it_goes_wrong() {
    use folkhub_app::registries;
    let wasm = root().join("target/examples/js_krr.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run `cargo xtask build-examples` (or `cargo xtask test`)",
        wasm.display()
    );
    let env = TestEnv::start(Setup {
        seed: 92,
        count: 20,
        ..Setup::default()
    })
    .await;
    let real =
        folkhub_manifest::Manifest::load(&root().join("registry-manifest.toml")).expect("manifest");
    let bytes = std::fs::read(&wasm).expect("wasm");
    let (private, public) = signing::generate().expect("key");
    let release = |version: &str, sha256: &str| {
        let mut r = real.find("krr", Some("2.2.0")).expect("krr 2.2.0").clone();
        r.connector = "js-krr".into();
        r.version = version.into();
        r.contract = "2.2.0".into();
        r.artifact = format!("artifacts/js-krr-{version}.wasm");
        r.sha256 = sha256.into();
        r.capabilities = vec!["lookup".into(), "batch-lookup".into(), "change-feed".into()];
        r.notes = "KRR in JavaScript, examples/connectors/js-krr.".into();
        r.breaking = None;
        signing::sign(&mut r, "acme", &private).expect("sign");
        r
    };
    let text = |releases: &[folkhub_manifest::Release]| {
        folkhub_manifest::Manifest::text(releases)
            .expect("toml")
            .into_bytes()
    };
    let first = release("0.1.0", &folkhub_runtime::engine::sha256_hex(&bytes));
    let served = Served::default();
    served.put(
        "/folkhub/registry-manifest.toml",
        text(std::slice::from_ref(&first)),
    );
    served.put("/folkhub/artifacts/js-krr-0.1.0.wasm", bytes.clone());
    let (addr, stop) = served.start().await;
    let url = format!("http://{addr}/folkhub/registry-manifest.toml");

    let mirror = tempfile::tempdir().expect("dir");
    let mut config = env.host.config.clone();
    config.registry.vendor_urls = vec![url.clone()];
    config.registry.mirror = mirror.path().to_path_buf();
    config.registry.trusted_keys.insert("acme".into(), public);
    let krr_config = config.connector("krr");
    config.connectors.insert("js-krr".into(), krr_config);

    // Granted but not fetched yet: the host runs, and the release is not listed.
    let host = folkhub_app::Host::open(config.clone()).await.expect("host");
    assert!(host.manifest().find("js-krr", None).is_none());

    // Fetched: the manifest and the artifact, the artifact once.
    let f = registries::fetch(&url, mirror.path()).await.expect("fetch");
    assert_eq!((f.releases, f.downloaded, f.kept), (1, 1, 0));
    assert_eq!(f.bytes, bytes.len() as u64);
    let f = registries::fetch(&url, mirror.path())
        .await
        .expect("fetch again");
    assert_eq!((f.downloaded, f.kept), (0, 1));
    assert_eq!(served.asked_for("/folkhub/artifacts/js-krr-0.1.0.wasm"), 1);
    let copy = std::fs::read(&f.manifest).expect("the copy's manifest");

    // The host installs from the copy, signature checked, and it answers.
    let host = folkhub_app::Host::open(config.clone()).await.expect("host");
    host.install("js-krr", None, false, "ops", "from acme's registry")
        .await
        .expect("install from the fetched registry");
    let connector = host.load("js-krr").await.expect("load");
    let known = env.sim.shared.population.read().await.persons[0]
        .ids
        .last()
        .cloned()
        .expect("an id");
    connector.lookup(&[known]).await.expect("a lookup");

    // The registry lists a new release but serves another file under its
    // name: nothing of it is taken.
    let mut other = bytes.clone();
    other.extend_from_slice(b"tampered");
    let second = release("0.2.0", &folkhub_runtime::engine::sha256_hex(&bytes));
    served.put(
        "/folkhub/registry-manifest.toml",
        text(&[first.clone(), second]),
    );
    served.put("/folkhub/artifacts/js-krr-0.2.0.wasm", other);
    let e = format!(
        "{:#}",
        registries::fetch(&url, mirror.path())
            .await
            .expect_err("tampered")
    );
    assert!(
        e.contains("js-krr 0.2.0") && e.contains("serves another file"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&f.manifest).expect("copy"),
        copy,
        "the copy is as it was"
    );
    assert!(!mirror_holds(mirror.path(), "js-krr-0.2.0.wasm"));

    // A manifest that does not validate: named, and the copy is kept.
    served.put(
        "/folkhub/registry-manifest.toml",
        b"schema = 1\nmirror_me = true\n".to_vec(),
    );
    let e = format!(
        "{:#}",
        registries::fetch(&url, mirror.path())
            .await
            .expect_err("invalid")
    );
    assert!(
        e.contains("mirror_me") && e.contains("last good copy"),
        "{e}"
    );
    assert_eq!(std::fs::read(&f.manifest).expect("copy"), copy);

    // The registry is down: the host still lists and installs from the copy.
    stop.send(()).expect("stop");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    registries::fetch(&url, mirror.path())
        .await
        .expect_err("down");
    let host = folkhub_app::Host::open(config).await.expect("host");
    assert_eq!(
        host.manifest()
            .find("js-krr", None)
            .map(|r| r.version.clone()),
        Some("0.1.0".into())
    );

    // Plain http to another machine is not granted.
    let e = format!(
        "{}",
        folkhub_manifest::Config::parse(
            "[registry]\nvendor_urls = [\"http://registry.acme.example/registry-manifest.toml\"]\n",
            "folkhub.toml"
        )
        .expect_err("plain http")
    );
    assert!(
        e.contains("registry.vendor_urls[0]") && e.contains("use https"),
        "{e}"
    );
}

fn mirror_holds(dir: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|entry| {
            let path = entry.path();
            path.file_name().is_some_and(|n| n == name)
                || (path.is_dir() && mirror_holds(&path, name))
        })
}
