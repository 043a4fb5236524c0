//! Any JSON as a Kartverket address answer (against a fixed address) or a
//! districts answer.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let address = serde_json::json!({
        "kind": "street", "street": "Storgata", "house_number": "1", "postal_code": "0155",
        "municipality": "0301"
    });
    let _ = connector_kartverket::mapping::districts(&json);
    if let Ok(Some(point)) = connector_kartverket::mapping::pick(&json, &address) {
        let districts = std::collections::BTreeMap::new();
        let _ = connector_kartverket::mapping::fields(point, None, &districts);
    }
});
