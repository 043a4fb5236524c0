//! Any JSON as a Folkeregisteret bulk answer or person document.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let mut warnings = Vec::new();
    let _ = connector_folkeregister::mapping::map_bulk(&json, true, &mut warnings);
    let _ = connector_folkeregister::mapping::map_person(&json, true, &mut warnings);
});
