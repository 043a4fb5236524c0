//! docs/fields.md is generated from the field catalogue and kept in step.

use folkhub_tests::root;

#[test]
fn fields_md() {
    let path = root().join("docs/fields.md");
    let generated = folkhub_core::fields::markdown();
    if std::env::var_os("FOLKHUB_WRITE_DOCS").is_some() {
        std::fs::create_dir_all(path.parent().expect("docs dir")).expect("mkdir");
        std::fs::write(&path, &generated).expect("write");
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        written == generated,
        "docs/fields.md is out of date: run `cargo xtask docs`"
    );
}

/// Every source the catalogue (docs/fields.md) lists for a field is a
/// connector whose newest release claims that field, and every field a
/// newest release claims lists that connector as a source: the two cannot
/// drift apart. That the releases also fill what they claim is checked
/// against the published shapes (the fidelity corpus, `fidelity.rs`) and
/// the simulators (`nordic.rs`).
#[test]
fn catalogue_sources_and_newest_releases_agree() {
    let manifest =
        folkhub_manifest::Manifest::load(&root().join("registry-manifest.toml")).expect("manifest");
    let mut problems = Vec::new();
    for connector in manifest.connectors() {
        let newest = manifest.find(&connector, None).expect("newest");
        for field in &newest.fields {
            match folkhub_core::fields::lookup(field) {
                None => problems.push(format!("{connector} {} claims unknown {field}", newest.version)),
                Some(def) if !def.sources.contains(&connector.as_str()) => problems.push(format!(
                    "{connector} {} fills {field}, but docs/fields.md does not list {connector} as its source",
                    newest.version
                )),
                Some(_) => {}
            }
        }
    }
    for def in folkhub_core::fields::CATALOGUE {
        for source in def.sources {
            match manifest.find(source, None) {
                None => problems.push(format!("{}: source {source} has no release", def.path)),
                Some(r) if !r.fields.iter().any(|f| f == def.path) => problems.push(format!(
                    "docs/fields.md lists {source} for {}, but {source} {} does not fill it",
                    def.path, r.version
                )),
                Some(_) => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
