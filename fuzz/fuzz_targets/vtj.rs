//! Any text as a VTJ query answer, any JSON as a change page: mapped or
//! refused, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let mut warnings = Vec::new();
    let _ = connector_dvv::mapping::map_answer(text, "", "20261203", &mut warnings);
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = connector_dvv::mapping::map_changes(&json);
        let _ = connector_dvv::mapping::map_key(&json);
    }
});
