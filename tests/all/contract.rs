//! The released contract stays frozen, and the published connector passes
//! the basic checks every release must pass.

use folkhub_tests::root;

#[test]
fn released_wit_is_frozen() {
    // wit/released/ holds a copy of every released contract version. The
    // source of each major's newest released minor must not drift from its
    // snapshot: change the contract only by releasing a new version.
    let mut majors = 0;
    for entry in std::fs::read_dir(root().join("wit")).expect("wit/") {
        let dir = entry.expect("entry").path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("connector-v") {
            continue;
        }
        majors += 1;
        let source = std::fs::read_to_string(dir.join("connector.wit")).expect("source");
        let version = source
            .lines()
            .find_map(|l| {
                l.strip_prefix("package folkhub:connector@")
                    .and_then(|v| v.strip_suffix(';'))
            })
            .expect("package line");
        assert!(
            name == format!("connector-v{}", version.split('.').next().unwrap()),
            "wit/{name} holds {version}: each major has its own folder"
        );
        let snapshot = root().join(format!("wit/released/connector@{version}.wit"));
        let frozen = std::fs::read_to_string(&snapshot).unwrap_or_else(|_| {
            panic!(
                "{} is missing: every released version is snapshotted",
                snapshot.display()
            )
        });
        assert_eq!(
            source, frozen,
            "wit/{name} differs from the released {version}: released WIT never changes; add a new version instead"
        );
    }
    assert_eq!(majors, 2, "connector-v1 and connector-v2");
    // And the snapshots themselves never change: their sums are recorded
    // when they are released.
    let sums = std::fs::read_to_string(root().join("wit/released/SHA256SUMS")).expect("sums");
    let mut snapshots = 0;
    for entry in std::fs::read_dir(root().join("wit/released")).expect("released") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".wit") {
            continue;
        }
        snapshots += 1;
        let sum = folkhub_runtime::engine::sha256_hex(&std::fs::read(&path).expect("read"));
        assert!(
            sums.lines().any(|l| l == format!("{sum}  {name}")),
            "wit/released/{name} was edited or its sum is not in wit/released/SHA256SUMS; released WIT never changes"
        );
    }
    assert!(snapshots >= 3, "1.0.0, 1.1.0, 2.0.0");
}

#[test]
fn registry_manifest_is_valid_and_artifacts_match_their_digests() {
    let manifest = folkhub_manifest::Manifest::load(&root().join("registry-manifest.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!manifest.releases.is_empty());
    // Every release of the project is signed by the project's key, whose
    // public half is registry/publisher-keys/folkhub.pub.
    let project = folkhub_manifest::config::RegistryConfig::default().trusted_keys;
    for release in &manifest.releases {
        if let Err(e) = folkhub_manifest::signing::verify(release, &project) {
            panic!("{} {}: {e}", release.connector, release.version);
        }
    }
    for release in &manifest.releases {
        let bytes = std::fs::read(manifest.artifact_path(release)).expect("artifact");
        assert_eq!(
            folkhub_runtime::engine::sha256_hex(&bytes),
            release.sha256,
            "{} {}",
            release.connector,
            release.version
        );
    }
}

#[tokio::test]
async fn every_published_release_describes_itself_as_its_manifest_says() {
    let manifest =
        folkhub_manifest::Manifest::load(&root().join("registry-manifest.toml")).expect("manifest");
    let runtime =
        folkhub_runtime::Runtime::new(None, folkhub_runtime::Limits::default()).expect("runtime");
    for release in &manifest.releases {
        let connector = runtime
            .prepare(
                release,
                &manifest.artifact_path(release),
                folkhub_runtime::ConnectorSettings::default(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let d = connector.describe().await.expect("describe");
        assert_eq!(d.source, release.connector);
        assert!(
            d.upstream_versions.contains(&release.upstream.version),
            "{:?}",
            d.upstream_versions
        );
        let mut described = d.fields.clone();
        described.sort();
        let mut declared = release.fields.clone();
        declared.sort();
        assert_eq!(
            described, declared,
            "{} {}: describe() and the manifest disagree on fields",
            release.connector, release.version
        );
        for field in &d.fields {
            assert!(
                folkhub_core::fields::lookup(field).is_some(),
                "{field} is not in the catalogue"
            );
        }
        let mut capabilities = d.capabilities.clone();
        capabilities.sort();
        let mut declared = release.capabilities.clone();
        declared.sort();
        assert_eq!(
            capabilities, declared,
            "{} {}: describe() and the manifest disagree on capabilities",
            release.connector, release.version
        );
        // Releases built on 1.0 run on this 1.1 host side by side with 1.1
        // ones; asking them for a 1.1 interface is a clear refusal.
        assert_eq!(connector.contract.to_string(), release.contract);
        if release.contract == "1.0.0" {
            assert!(!connector.enriches() && !connector.watches());
            let error = connector.enrich(&[]).await.expect_err("1.0 has no enrich");
            assert!(
                error.to_string().contains("added in contract 1.1.0"),
                "{error}"
            );
        } else {
            assert!(connector.enriches() && connector.watches());
        }
        // Search is asked of a release that exports it and declares it.
        assert_eq!(
            connector.searches(),
            release.capabilities.iter().any(|c| c == "search"),
            "{} {}",
            release.connector,
            release.version
        );
    }
}

#[test]
fn the_contract_package_resolves_with_the_wasi_this_host_links() {
    // `cargo xtask contract-package` (run by `cargo xtask test`) writes
    // what a componentize-py or componentize-js build needs; a missing
    // wasi:http there cost an outside vendor hours.
    let kit = root().join("target/contract/folkhub-connector-2.2.0/wit");
    assert!(
        kit.join("world.wit").exists(),
        "{} is missing: run `cargo xtask contract-package`",
        kit.display()
    );
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(&kit)
        .unwrap_or_else(|e| panic!("the contract package does not resolve: {e:#}"));
    // The WASI version the package names is the one wasmtime-wasi-http in
    // Cargo.lock carries, i.e. what the host links.
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).expect("lock");
    assert!(
        lock.contains("name = \"wasmtime-wasi-http\"\nversion = \"48.0.8\""),
        "the host's wasmtime-wasi-http moved: check the WASI version the author guide names"
    );
    for world in [
        "http-connector",
        "http-answering-connector",
        "http-searching-connector",
        "http-full-connector",
    ] {
        let id = resolve
            .select_world(&[package], Some(world))
            .unwrap_or_else(|e| panic!("{world}: {e:#}"));
        let name = |key: &wit_parser::WorldKey| resolve.name_world_key(key);
        let imports: Vec<String> = resolve.worlds[id].imports.keys().map(name).collect();
        let exports: Vec<String> = resolve.worlds[id].exports.keys().map(name).collect();
        assert!(
            imports.contains(&"wasi:http/outgoing-handler@0.2.12".to_string())
                && imports.contains(&"folkhub:connector/host@2.2.0".to_string()),
            "{world} imports {imports:?}"
        );
        assert!(
            exports.contains(&"folkhub:connector/source@2.2.0".to_string()),
            "{world} exports {exports:?}"
        );
    }
}
