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
