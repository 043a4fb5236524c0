//! DVV connector (Finland): the VTJ query over SOAP. The wire format and
//! its mapping live in [`mapping`], pure and unit-tested natively.
//!
//! Operator config: `base-url` (the VTJkysely endpoint as the organisation's
//! Suomi.fi-palveluväylä security server publishes it; no default),
//! `product` (`SoSoNimi` from the permit, default `PERUSSANOMA 1`),
//! `end-user` (`Loppukayttaja`, default `folkhub`). Secrets (host side):
//! `vtj-user`, `vtj-password`.
//!
//! VTJ answers one HETU per query, so a batch is a series of queries.
//!
//! Since 1.1.0 (contract 1.1 `watch`): the VTJ change interface, which takes
//! the followed HETUs. Config `changes-url` (e.g. the security server's
//! `.../VTJmutpa/api/v1`), `xroad-client` (the `X-Road-Client` header, e.g.
//! `FI/GOV/0245437-2/folkhub`); the service user is host-side Basic
//! credentials.

pub mod mapping;

#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component {
    use super::mapping::{self, Outcome};
    use folkhub_connector_sdk::{
        ChangePage, ConnectorError, Description, LookupResult, bindings, http, soap,
    };

    struct Dvv;

    impl bindings::exports::folkhub::connector::source::Guest for Dvv {
        fn describe() -> Description {
            Description {
                source: "dvv".into(),
                upstream_versions: vec![mapping::UPSTREAM_VERSION.into()],
                fields: mapping::FIELDS.iter().map(|f| f.to_string()).collect(),
                capabilities: vec!["lookup".into(), "watch".into()],
                max_batch: mapping::MAX_BATCH as u32,
            }
        }

        fn lookup_batch(ids: Vec<String>) -> Result<Vec<LookupResult>, ConnectorError> {
            let url = folkhub_connector_sdk::config("base-url")?;
            let product = folkhub_connector_sdk::config_or("product", "PERUSSANOMA 1");
            let end_user = folkhub_connector_sdk::config_or("end-user", "folkhub");
            folkhub_connector_sdk::one_by_one(ids, mapping::UPSTREAM_VERSION, |id| {
                let hetu = match folkhub_connector_sdk::ids::parse_finnish(id) {
                    Ok(hetu) => hetu,
                    Err(e) => return Ok(Outcome::Failed(ConnectorError::BadInput(e.to_string()))),
                };
                let request = mapping::request(&product, &end_user, &hetu.value);
                let response = soap::post(&url, mapping::SOAP_ACTION, &request)?;
                let text = soap::text(&response, "VTJ answer")?;
                let mut warnings = vec![];
                let mapped = mapping::map_answer(text, &hetu.value, &mut warnings)
                    .map_err(ConnectorError::MalformedResponse);
                folkhub_connector_sdk::warn_all(warnings);
                mapped
            })
        }

        fn changes(_cursor: Option<String>) -> Result<ChangePage, ConnectorError> {
            Err(ConnectorError::Other(
                "VTJ has no feed of everyone: the host follows persons with `changes-for` (capability watch)".into(),
            ))
        }
    }

    impl bindings::exports::folkhub::connector::watch::Guest for Dvv {
        fn changes_for(
            cursor: Option<String>,
            ids: Vec<String>,
        ) -> Result<ChangePage, ConnectorError> {
            let base = folkhub_connector_sdk::config("changes-url")?;
            let base = base.trim_end_matches('/');
            let client = folkhub_connector_sdk::config("xroad-client")?;
            let headers = [
                ("accept", "application/json"),
                ("x-road-client", client.as_str()),
            ];
            let Some(key) = cursor else {
                // Start from today's position in the change log.
                let today = chrono::Utc::now().date_naive();
                let url = format!("{base}/kirjausavain/{today}");
                let response = http::get(&url, &headers)?;
                let json = http::json_answer(&response, &url, "kirjausavain")?;
                let key = mapping::map_key(&json).map_err(ConnectorError::MalformedResponse)?;
                return Ok(ChangePage {
                    changes: vec![],
                    next_cursor: key,
                    caught_up: false,
                });
            };
            let from: u64 = key.parse().map_err(|_| {
                ConnectorError::BadInput(format!("cursor {key:?} is not a kirjausavain"))
            })?;
            if ids.len() > mapping::MAX_FOLLOWED {
                return Err(ConnectorError::BadInput(format!(
                    "{} HETUs in one call; at most {}",
                    ids.len(),
                    mapping::MAX_FOLLOWED
                )));
            }
            let url = format!("{base}/muutokset");
            let body = serde_json::json!({"viimeisinKirjausavain": from, "hetulista": ids});
            let response = http::post_json(&url, &headers, &body)?;
            let json = http::json_answer(&response, &url, "muutokset")?;
            mapping::map_changes(&json).map_err(ConnectorError::MalformedResponse)
        }
    }

    folkhub_connector_sdk::no_enrich!(Dvv);
    folkhub_connector_sdk::export_connector!(Dvv);
}
