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
