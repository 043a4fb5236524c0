//! Any JSON as a KRR answer.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let _ = connector_krr::mapping::map_persons(&json, None);
});
