//! Any text through the ID readers: no panic, and an ID that reads reads
//! again, from its normalised value, as the same ID.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let _ = folkhub_ids::parse_norwegian(text);
    let _ = folkhub_ids::parse_swedish(text);
    let _ = folkhub_ids::parse_finnish(text);
    if let Ok(id) = folkhub_ids::parse(text) {
        let prefixed = format!("{}:{}", &id.scheme.to_string()[..2], id.value);
        let again = folkhub_ids::parse(&prefixed)
            .unwrap_or_else(|e| panic!("{text:?} read as {prefixed:?}, which does not read: {e}"));
        assert_eq!(again.value, id.value, "{text:?}");
    }
});
