//! Folkeregisteret connector: the WIT glue. The register's wire format and
//! its mapping to catalogue fields live in [`mapping`], which is pure and
//! unit-tested natively.
//!
//! Operator config: `base-url` (default: production "offentlig med
//! hjemmel"), `parts` (default `person-basis,relasjon-utvidet`).
//! Credentials (a Maskinporten token with scope
//! `folkeregister:deling/offentligmedhjemmel`) are added by the host.
//!
//! Since 1.1.0 (contract 2.1): the shared residence (`deltBosted`) and the
//! postal address (`postadresse`, `postadresseIUtlandet`); answers say what
//! they cover, so a person graded strengt fortrolig (the register then sends
//! no address data) keeps the stored location, protected, and relations
//! are covered only with the part `relasjon-utvidet`; feed events say what
//! happened (created, deceased, new ID).

pub mod mapping;

// Export glue only in the component (wit-bindgen's, `unsafe`).
#[allow(unsafe_code)]
#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component {
    use super::mapping;
    use folkhub_connector_sdk::http;
    use folkhub_connector_sdk::v2::{
        self, AnswerOutcome, AnswerPage, AnswerResult, ChangePage, ConnectorError, Description,
        LookupResult, bindings,
    };

    const PRODUCTION: &str =
        "https://folkeregisteret.api.skatteetaten.no/folkeregisteret/offentlig-med-hjemmel/api/v1";

    struct Folkeregister;

    fn error(e: folkhub_connector_sdk::ConnectorError) -> ConnectorError {
        v2::error(e, mapping::UPSTREAM_VERSION)
    }

    fn base_url() -> String {
        v2::base_url(PRODUCTION)
    }

    fn parts() -> Vec<String> {
        v2::config_or("parts", "person-basis,relasjon-utvidet")
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
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
            v2::lookup_from_answers(<Folkeregister as Answers>::lookup_answers(ids))
        }

        fn changes(cursor: Option<String>) -> Result<ChangePage, ConnectorError> {
            v2::changes_from_answers(<Folkeregister as Answers>::change_answers(cursor))
        }
    }

    use bindings::exports::folkhub::connector::answers::Guest as Answers;

    impl Answers for Folkeregister {
        fn lookup_answers(ids: Vec<String>) -> Result<Vec<AnswerResult>, ConnectorError> {
            let parts = parts();
            let relations_part = parts.iter().any(|p| {
                matches!(
                    p.as_str(),
                    "relasjon-utvidet" | "familierelasjon" | "foreldreansvar"
                )
            });
            let query = parts
                .iter()
                .map(|p| format!("part={p}"))
                .collect::<Vec<_>>()
                .join("&");
            let mut results = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(mapping::MAX_BATCH) {
                let url = format!(
                    "{}/personer/bulkoppslag?{query}&somBestilt=true",
                    base_url()
                );
                let body = serde_json::json!({ "foedselsEllerDNummer": chunk });
                let response = http::post_json(&url, &[("accept", "application/json")], &body)
                    .map_err(error)?;
                let json = http::json_answer(&response, &url, "bulkoppslag").map_err(error)?;
                let mut warnings = Vec::new();
                let mapped = mapping::map_bulk(&json, relations_part, &mut warnings)
                    .map_err(ConnectorError::MalformedResponse)?;
                v2::warn_all(warnings);
                for (requested, outcome) in mapped {
                    let outcome = match outcome {
                        mapping::Outcome::Found(person) => {
                            AnswerOutcome::Found(person.into_answer())
                        }
                        mapping::Outcome::NotFound => AnswerOutcome::NotFound,
                        mapping::Outcome::Invalid(message) => {
                            AnswerOutcome::Failed(ConnectorError::BadInput(message))
                        }
                    };
                    results.push(AnswerResult { requested, outcome });
                }
            }
            Ok(results)
        }

        fn change_answers(cursor: Option<String>) -> Result<AnswerPage, ConnectorError> {
            let seq = match cursor.as_deref() {
                None => 1,
                Some(c) => c.parse::<u64>().map_err(|_| {
                    ConnectorError::BadInput(format!(
                        "cursor {c:?} is not a Folkeregisteret sequence number"
                    ))
                })?,
            };
            let url = format!("{}/hendelser/feed?seq={seq}", base_url());
            let response = http::get(&url, &[("accept", "application/json")]).map_err(error)?;
            let json = http::json_answer(&response, &url, "hendelser/feed").map_err(error)?;
            let page = mapping::map_feed(&json, seq).map_err(ConnectorError::MalformedResponse)?;
            Ok(page.into_page())
        }
    }

    folkhub_connector_sdk::no_enrich_v2!(Folkeregister);
    folkhub_connector_sdk::no_watch_v2!(Folkeregister);
    folkhub_connector_sdk::v2::export_connector_v2!(Folkeregister);
}
