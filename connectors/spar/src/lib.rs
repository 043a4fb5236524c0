//! SPAR connector (Sweden): PersonSök program-program 2023.1 (2.x; 1.x spoke
//! 2021.1) over SOAP and
//! mutual TLS, and the avisering files as the change feed. The wire format
//! and its mapping live in [`mapping`], pure and unit-tested natively.
//!
//! Operator config: `base-url` (default production
//! `https://ext-ws.statenspersonadressregister.se`), `avisering-url` (where
//! the customer's avisering files are fetched, `{avisering-url}/{n}`),
//! `end-user` (`SlutAnvandarId`, default `folkhub`), `extended`
//! (comma-separated extended permissions to ask for, e.g. `Relationer`).
//! Host side: the organisation certificate (`credentials.kind = "mtls"`)
//! and the secrets `KundNrLeveransMottagare`, `KundNrSlutkund`, `UppdragId`.
//! SPAR charges per lookup: the manifest says what a call costs.

pub mod mapping;

#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component {
    use super::mapping::{self, Outcome};
    use folkhub_connector_sdk::{
        ChangePage, ConnectorError, Description, LookupResult, bindings, http, soap,
    };

    const PRODUCTION: &str = "https://ext-ws.statenspersonadressregister.se";

    struct Spar;

    impl bindings::exports::folkhub::connector::source::Guest for Spar {
        fn describe() -> Description {
            Description {
                source: "spar".into(),
                upstream_versions: vec![mapping::UPSTREAM_VERSION.into()],
                fields: mapping::FIELDS.iter().map(|f| f.to_string()).collect(),
                capabilities: vec!["lookup".into(), "change-feed".into()],
                max_batch: mapping::MAX_BATCH as u32,
            }
        }

        fn lookup_batch(ids: Vec<String>) -> Result<Vec<LookupResult>, ConnectorError> {
            let url = format!(
                "{}{}",
                folkhub_connector_sdk::base_url(PRODUCTION),
                mapping::PATH
            );
            let end_user = folkhub_connector_sdk::config_or("end-user", "folkhub");
            let extended = folkhub_connector_sdk::config_or("extended", "");
            let extended: Vec<&str> = extended
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .collect();
            folkhub_connector_sdk::one_by_one(ids, mapping::UPSTREAM_VERSION, |id| {
                let parsed = match folkhub_connector_sdk::ids::parse_swedish(id) {
                    Ok(parsed) => parsed,
                    Err(e) => return Ok(Outcome::Failed(ConnectorError::BadInput(e.to_string()))),
                };
                let request = mapping::request(&parsed.value, &end_user, &extended);
                let response = soap::post(&url, mapping::SOAP_ACTION, &request)?;
                let text = soap::text(&response, "SPAR answer")?;
                let mut warnings = vec![];
                let mapped = mapping::map_answer(text, &parsed.value, &mut warnings)
                    .map_err(ConnectorError::MalformedResponse);
                folkhub_connector_sdk::warn_all(warnings);
                mapped
            })
        }

        fn changes(cursor: Option<String>) -> Result<ChangePage, ConnectorError> {
            let done = match cursor.as_deref() {
                None => 0,
                Some(c) => c.parse::<u64>().map_err(|_| {
                    ConnectorError::BadInput(format!(
                        "cursor {c:?} is not an avisering Sekvensnummer"
                    ))
                })?,
            };
            let base = folkhub_connector_sdk::config("avisering-url")?;
            let next = done + 1;
            let url = format!("{}/{next}", base.trim_end_matches('/'));
            let response =
                http::send("GET", &url, &[("accept", "application/xml")], None)?.check()?;
            if response.status == 404 {
                // The next file is not produced yet.
                return Ok(ChangePage {
                    changes: vec![],
                    next_cursor: done.to_string(),
                    caught_up: true,
                });
            }
            let text = soap::text(&response, "avisering file")?;
            mapping::map_avisering(text, next).map_err(ConnectorError::MalformedResponse)
        }
    }

    folkhub_connector_sdk::no_enrich!(Spar);
    folkhub_connector_sdk::no_watch!(Spar);
    folkhub_connector_sdk::export_connector!(Spar);
}
