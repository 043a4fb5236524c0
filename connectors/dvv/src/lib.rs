//! DVV connector (Finland): the VTJ query over SOAP. The wire format and
//! its mapping live in [`mapping`], pure and unit-tested natively.
//!
//! Operator config: `base-url` (the VTJkysely endpoint as the organisation's
//! Suomi.fi-palveluväylä security server publishes it; no default),
//! `product` (`SoSoNimi` from the permit, default `PERUSSANOMA 1`),
//! `end-user` (`Loppukayttaja`, default `folkhub`). Secrets (host side):
//! `vtj-user`, `vtj-password`.
//!
//! VTJ answers one HETU per query, so a batch is a series of queries. The
//! change interface (`muutokset`) needs the list of followed HETUs, which
//! contract 1.0 does not pass to `changes`; this release has no feed.

pub mod mapping;

#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component {
    use super::mapping::{self, Outcome};
    use folkhub_connector_sdk::{
        ChangePage, ConnectorError, Description, LookupOutcome, LookupResult, bindings, soap,
    };

    struct Dvv;

    impl bindings::exports::folkhub::connector::source::Guest for Dvv {
        fn describe() -> Description {
            Description {
                source: "dvv".into(),
                upstream_versions: vec![mapping::UPSTREAM_VERSION.into()],
                fields: mapping::FIELDS.iter().map(|f| f.to_string()).collect(),
                capabilities: vec!["lookup".into()],
                max_batch: mapping::MAX_BATCH as u32,
            }
        }

        fn lookup_batch(ids: Vec<String>) -> Result<Vec<LookupResult>, ConnectorError> {
            let url = folkhub_connector_sdk::config("base-url")?;
            let product = folkhub_connector_sdk::config_or("product", "PERUSSANOMA 1");
            let end_user = folkhub_connector_sdk::config_or("end-user", "folkhub");
            let mut results = Vec::with_capacity(ids.len());
            for id in ids {
                let outcome = match folkhub_connector_sdk::ids::parse_finnish(&id) {
                    Err(e) => LookupOutcome::Failed(ConnectorError::BadInput(e.to_string())),
                    Ok(hetu) => {
                        let request = mapping::request(&product, &end_user, &hetu.value);
                        let response = soap::post(&url, mapping::SOAP_ACTION, &request)?;
                        let text = soap::text(&response, "VTJ answer")?;
                        let mut warnings = vec![];
                        let mapped = mapping::map_answer(text, &hetu.value, &mut warnings)
                            .map_err(ConnectorError::MalformedResponse)?;
                        for w in warnings {
                            folkhub_connector_sdk::log::warn(&w, &[]);
                        }
                        match mapped {
                            Outcome::Found(p) => {
                                LookupOutcome::Found(p.into_record(mapping::UPSTREAM_VERSION))
                            }
                            Outcome::NotFound => LookupOutcome::NotFound,
                            // The user, password or product was refused: every
                            // other query would be refused the same way.
                            Outcome::Failed(e @ ConnectorError::Unauthorized(_)) => return Err(e),
                            Outcome::Failed(e) => LookupOutcome::Failed(e),
                        }
                    }
                };
                results.push(LookupResult {
                    requested: id,
                    outcome,
                });
            }
            Ok(results)
        }

        fn changes(_cursor: Option<String>) -> Result<ChangePage, ConnectorError> {
            Err(ConnectorError::Other(
                "dvv 1.0 has no change feed: VTJ muutokset needs the followed HETUs, which contract 1.0 does not pass".into(),
            ))
        }
    }

    folkhub_connector_sdk::export_connector!(Dvv);
}
