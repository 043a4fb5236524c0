//! Kartverket connector: enriches Norwegian addresses (the `enrich`
//! interface; 1.1.0 is built on contract 2.0, 1.0.0 was on 1.1) with their coordinates and, for Oslo, Bergen, Trondheim and
//! Stavanger, their city district. The wire formats and their mapping live
//! in [`mapping`], pure and unit-tested natively.
//!
//! Operator config: `base-url` (default `https://ws.geonorge.no/adresser/v1`),
//! `klass-url` (default `https://data.ssb.no/api/klass/v1`),
//! `basic-unit-classification` (Klass id of grunnkretser, default `1`),
//! `district-classification` (Klass id of bydeler, default `103`). Both
//! services are open data: no credentials.

pub mod mapping;
#[allow(unsafe_code)] // wit-bindgen's export glue; the rest is safe Rust
#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component {
    use std::collections::BTreeMap;

    use super::mapping;
    use folkhub_connector_sdk::http;
    use folkhub_connector_sdk::v2::{
        self, ChangePage, ConnectorError, Description, EnrichOutcome, EnrichResult, Location,
        LookupResult, bindings,
    };

    fn error(e: folkhub_connector_sdk::ConnectorError) -> ConnectorError {
        v2::error(e, mapping::UPSTREAM_VERSION)
    }

    struct Kartverket;

    impl bindings::exports::folkhub::connector::source::Guest for Kartverket {
        fn describe() -> Description {
            Description {
                source: "kartverket".into(),
                upstream_versions: vec![mapping::UPSTREAM_VERSION.into()],
                fields: mapping::FIELDS.iter().map(|f| f.to_string()).collect(),
                capabilities: vec!["enrich".into()],
                max_batch: mapping::MAX_BATCH as u32,
            }
        }

        fn lookup_batch(_ids: Vec<String>) -> Result<Vec<LookupResult>, ConnectorError> {
            Err(ConnectorError::Other(
                "Kartverket knows addresses, not persons: the host calls enrich-locations".into(),
            ))
        }

        fn changes(_cursor: Option<String>) -> Result<ChangePage, ConnectorError> {
            Err(ConnectorError::Other(
                "Kartverket's address API has no change feed".into(),
            ))
        }
    }

    /// The grunnkrets → district table, read once per call when needed.
    fn district_table() -> Result<BTreeMap<String, String>, ConnectorError> {
        let base = v2::config_or("klass-url", "https://data.ssb.no/api/klass/v1");
        let from = v2::config_or("basic-unit-classification", "1");
        let to = v2::config_or("district-classification", "103");
        let today = chrono::Utc::now().date_naive();
        let url = format!(
            "{}/classifications/{from}/correspondsAt?targetClassificationId={to}&date={today}",
            base.trim_end_matches('/')
        );
        let response = http::get(&url, &[("accept", "application/json")]).map_err(error)?;
        let json = http::json_answer(&response, &url, "Klass correspondsAt").map_err(error)?;
        mapping::districts(&json).map_err(ConnectorError::MalformedResponse)
    }

    impl bindings::exports::folkhub::connector::enrich::Guest for Kartverket {
        fn enrich_locations(locations: Vec<Location>) -> Result<Vec<EnrichResult>, ConnectorError> {
            let base = v2::base_url("https://ws.geonorge.no/adresser/v1");
            let base = base.trim_end_matches('/').to_string();
            let parsed: Vec<(String, Option<serde_json::Value>, Option<String>)> = locations
                .into_iter()
                .map(|l| {
                    let address = serde_json::from_str(&l.address).ok();
                    let unit = l
                        .context
                        .iter()
                        .find(|(k, _)| k == "address.statistical-unit")
                        .and_then(|(_, v)| serde_json::from_str::<String>(v).ok());
                    (l.key, address, unit)
                })
                .collect();
            let needs_districts = parsed.iter().any(|(_, a, u)| {
                u.is_some()
                    && a.as_ref()
                        .and_then(|a| a.get("municipality"))
                        .and_then(|m| m.as_str())
                        .is_some_and(|m| mapping::CITIES.contains(&m))
            });
            let districts = if needs_districts {
                district_table()?
            } else {
                BTreeMap::new()
            };
            let mut results = Vec::with_capacity(parsed.len());
            for (key, address, unit) in parsed {
                let outcome = match address {
                    None => EnrichOutcome::Failed(ConnectorError::BadInput(
                        "the address is not JSON".into(),
                    )),
                    Some(address) => match mapping::query(&base, &address) {
                        None => EnrichOutcome::NotFound,
                        Some(url) => {
                            let response = http::get(&url, &[("accept", "application/json")])
                                .map_err(error)?;
                            let json = http::json_answer(&response, &url, "sok").map_err(error)?;
                            match mapping::pick(&json, &address)
                                .map_err(ConnectorError::MalformedResponse)?
                            {
                                None => EnrichOutcome::NotFound,
                                Some(point) => EnrichOutcome::Found(
                                    mapping::fields(point, unit.as_deref(), &districts)
                                        .into_iter()
                                        .map(|f| {
                                            v2::field(f.path, &f.value, &f.labels, f.effective)
                                        })
                                        .collect(),
                                ),
                            }
                        }
                    },
                };
                results.push(EnrichResult { key, outcome });
            }
            Ok(results)
        }
    }

    folkhub_connector_sdk::no_watch_v2!(Kartverket);
    folkhub_connector_sdk::v2::export_connector_v2!(Kartverket);
}
