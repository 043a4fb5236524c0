//! A connector from outside the repository, in another component language,
//! taken the way docs/vendors.md takes it: built by componentize-py against
//! the contract package (`cargo xtask build-examples`, run by `cargo xtask
//! test`), signed by its vendor, published in a vendor registry beside the
//! built-in one, installed, and asked the same questions as the Rust krr
//! connector. Its answers must be the same, field for field.

use folkhub_core::contract::LookupOutcome;
use folkhub_manifest::signing;
use folkhub_tests::{Setup, TestEnv, root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_connector_is_signed_installed_from_a_vendor_registry_and_answers_as_rust_krr() {
    let wasm = root().join("target/examples/python_krr.wasm");
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
    std::fs::copy(&wasm, vendor.path().join("artifacts/python-krr-0.1.0.wasm")).expect("copy");
    let bytes = std::fs::read(&wasm).expect("wasm");
    let (private, public) = signing::generate().expect("key");
    let mut release = krr.clone();
    release.connector = "python-krr".into();
    release.version = "0.1.0".into();
    release.contract = "2.2.0".into();
    release.artifact = "artifacts/python-krr-0.1.0.wasm".into();
    release.sha256 = folkhub_runtime::engine::sha256_hex(&bytes);
    release.capabilities = vec!["lookup".into(), "batch-lookup".into(), "change-feed".into()];
    release.notes = "KRR in Python (componentize-py), examples/connectors/python-krr.".into();
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
    // the vendor's key trusted, python-krr configured as krr is.
    let mut config = env.host.config.clone();
    config.registry.vendors = vec![manifest.clone()];
    config.registry.trusted_keys.insert("acme".into(), public);
    let krr_config = config.connector("krr");
    config.connectors.insert("python-krr".into(), krr_config);

    // Unsigned, it is refused, and nothing is installed.
    write(&release);
    let host = folkhub_app::Host::open(config.clone()).await.expect("host");
    let e = format!(
        "{:#}",
        host.install("python-krr", None, false, "ops", "vendor")
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
        .install("python-krr", None, false, "ops", "vendor")
        .await
        .expect("install the signed Python release");
    assert_eq!(installed.version, "0.1.0");
    host.install("krr", Some("2.2.0"), false, "ops", "rust")
        .await
        .expect("install krr");
    let python = host.load("python-krr").await.expect("load python-krr");
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
    let (py, rs) = (
        python.lookup(&ids).await.expect("python lookup"),
        rust.lookup(&ids).await.expect("rust lookup"),
    );
    assert_eq!(py.len(), ids.len());
    let found = rs
        .iter()
        .filter(|r| matches!(r.outcome, LookupOutcome::Found(_)))
        .count();
    assert!(found >= 30, "the comparison means something: {found} found");
    for (p, r) in py.iter().zip(&rs) {
        assert_eq!(p, r, "python-krr and krr differ for {}", r.requested);
    }
    // A malformed ID is the register's bad input for both.
    let (p, r) = (
        python.lookup(&["12345".into()]).await.expect_err("bad"),
        rust.lookup(&["12345".into()]).await.expect_err("bad"),
    );
    assert_eq!(
        p.connector_error().map(std::mem::discriminant),
        r.connector_error().map(std::mem::discriminant),
        "{p} / {r}"
    );
}
