//! Folkeregisteret connector: the WIT glue. The register's wire format and
//! its mapping to catalogue fields live in [`mapping`], which is pure and
//! unit-tested natively.
//!
//! Operator config: `base-url` (default: production "offentlig med
//! hjemmel"), `parts` (default `person-basis,relasjon-utvidet`).
//! Credentials (a Maskinporten token with scope
//! `folkeregister:deling/offentligmedhjemmel`) are added by the host.

pub mod mapping;

// The export glue only exists in the component; native builds (unit tests
// of the mapping) do not link it.
#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component {
    use super::mapping;
    use folkhub_connector_sdk::{
        ChangePage, ConnectorError, Description, LookupOutcome, LookupResult, bindings, config_or,
        http, log,
    };

    const PRODUCTION: &str =
        "https://folkeregisteret.api.skatteetaten.no/folkeregisteret/offentlig-med-hjemmel/api/v1";

    struct Folkeregister;

    fn base_url() -> String {
        folkhub_connector_sdk::base_url(PRODUCTION)
    }

    fn parts_query() -> String {
        config_or("parts", "person-basis,relasjon-utvidet")
            .split(',')
            .map(|p| format!("part={}", p.trim()))
            .collect::<Vec<_>>()
            .join("&")
    }

    impl bindings::exports::folkhub::connector::source::Guest for Folkeregister {
        fn describe() -> Description {
            Description {
                source: "folkeregister".into(),
                upstream_versions: vec![mapping::UPSTREAM_VERSION.into()],
                fields: mapping::FIELDS.iter().map(|f| f.to_string()).collect(),
                capabilities: vec!["lookup".into(), "batch-lookup".into(), "change-feed".into()],
                max_batch: mapping::MAX_BATCH as u32,
            }
        }

        fn lookup_batch(ids: Vec<String>) -> Result<Vec<LookupResult>, ConnectorError> {
            let mut results = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(mapping::MAX_BATCH) {
                let url = format!(
                    "{}/personer/bulkoppslag?{}&somBestilt=true",
                    base_url(),
                    parts_query()
                );
                let body = serde_json::json!({ "foedselsEllerDNummer": chunk });
                let response = http::post_json(&url, &[("accept", "application/json")], &body)?;
                let json = http::json_answer(&response, &url, "bulkoppslag")?;
                let mut warnings = Vec::new();
                let mapped = mapping::map_bulk(&json, &mut warnings)
                    .map_err(ConnectorError::MalformedResponse)?;
                for warning in &warnings {
                    log::warn(warning, &[]);
                }
                for (requested, outcome) in mapped {
                    let outcome = match outcome {
                        mapping::Outcome::Found(person) => {
                            LookupOutcome::Found(person.into_record())
                        }
                        mapping::Outcome::NotFound => LookupOutcome::NotFound,
                        mapping::Outcome::Invalid(message) => {
                            LookupOutcome::Failed(ConnectorError::BadInput(message))
                        }
                    };
                    results.push(LookupResult { requested, outcome });
                }
            }
            Ok(results)
        }

        fn changes(cursor: Option<String>) -> Result<ChangePage, ConnectorError> {
            let seq = match cursor.as_deref() {
                None => 1,
                Some(c) => c.parse::<u64>().map_err(|_| {
                    ConnectorError::BadInput(format!(
                        "cursor {c:?} is not a Folkeregisteret sequence number"
                    ))
                })?,
            };
            let url = format!("{}/hendelser/feed?seq={seq}", base_url());
            let response = http::get(&url, &[("accept", "application/json")])?;
            let json = http::json_answer(&response, &url, "hendelser/feed")?;
            let page = mapping::map_feed(&json, seq).map_err(ConnectorError::MalformedResponse)?;
            Ok(page.into_page())
        }
    }

    folkhub_connector_sdk::no_enrich!(Folkeregister);
    folkhub_connector_sdk::no_watch!(Folkeregister);
    folkhub_connector_sdk::export_connector!(Folkeregister);
}
