//! KRR connector: the WIT glue. The wire format and its mapping live in
//! [`mapping`], pure and unit-tested natively.
//!
//! Operator config: `base-url` (default: production `https://kontaktregisteret.no/rest/v2`).
//! 2.0.0 moved from `/rest/v1` to `/rest/v2`, which leaves out persons who are
//! not registered unless asked (`inkluderIkkeRegistrerte`): the connector
//! asks, so a person who leaves KRR still has their contact fields withdrawn.
//! 2.1.0 is built on contract 2.0: the change log's entries are whole
//! records, and the changes carry them, so following the feed costs one
//! call per page instead of a page plus a lookup of everyone on it.
//! 2.2.0 is built on contract 2.1: an answer says what it covers, decided by
//! the token's scopes (config `scopes`, the scopes granted to the
//! operator's Maskinporten client; without it, read from the answer), so a
//! narrower scope never removes stored contact details; `IKKE_REGISTRERT`
//! is not found; the mailbox provider is mapped.
//! Credentials: a Maskinporten token with `krr:global/kontaktinformasjon.read`
//! and, for digital mailboxes, `krr:global/digitalpost.read`, added by the host.

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

    const PRODUCTION: &str = "https://kontaktregisteret.no/rest/v2";

    struct Krr;

    fn error(e: folkhub_connector_sdk::ConnectorError) -> ConnectorError {
        v2::error(e, mapping::UPSTREAM_VERSION)
    }

    fn base_url() -> String {
        v2::base_url(PRODUCTION)
    }

    fn scopes() -> Option<mapping::Scopes> {
        bindings::folkhub::connector::host::config("scopes")
            .map(|s| mapping::Scopes::from_config(&s))
    }

    impl bindings::exports::folkhub::connector::source::Guest for Krr {
        fn describe() -> Description {
            Description {
                source: "krr".into(),
                upstream_versions: vec![mapping::UPSTREAM_VERSION.into()],
                fields: mapping::FIELDS.iter().map(|f| f.to_string()).collect(),
                capabilities: vec!["lookup".into(), "batch-lookup".into(), "change-feed".into()],
                max_batch: mapping::MAX_BATCH as u32,
            }
        }

        fn lookup_batch(ids: Vec<String>) -> Result<Vec<LookupResult>, ConnectorError> {
            v2::lookup_from_answers(<Krr as Answers>::lookup_answers(ids))
        }

        fn changes(cursor: Option<String>) -> Result<ChangePage, ConnectorError> {
            v2::changes_from_answers(<Krr as Answers>::change_answers(cursor))
        }
    }

    use bindings::exports::folkhub::connector::answers::Guest as Answers;

    impl Answers for Krr {
        fn lookup_answers(ids: Vec<String>) -> Result<Vec<AnswerResult>, ConnectorError> {
            let mut results = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(mapping::MAX_BATCH) {
                let url = format!("{}/personer", base_url());
                let body = serde_json::json!({
                    "personidentifikatorer": chunk,
                    "inkluderIkkeRegistrerte": true,
                });
                let response = http::post_json(&url, &[("accept", "application/json")], &body)
                    .map_err(error)?;
                let json = http::json_answer(&response, &url, "personer").map_err(error)?;
                let mapped = mapping::map_persons(&json, scopes())
                    .map_err(ConnectorError::MalformedResponse)?;
                for id in chunk {
                    let outcome = match mapped.iter().find(|p| &p.id == id) {
                        Some(person) if person.registered() => {
                            AnswerOutcome::Found(person.clone().into_answer())
                        }
                        _ => AnswerOutcome::NotFound,
                    };
                    results.push(AnswerResult {
                        requested: id.clone(),
                        outcome,
                    });
                }
            }
            Ok(results)
        }

        fn change_answers(cursor: Option<String>) -> Result<AnswerPage, ConnectorError> {
            let from = match cursor.as_deref() {
                None => 1,
                Some(c) => c.parse::<u64>().map_err(|_| {
                    ConnectorError::BadInput(format!("cursor {c:?} is not a KRR change number"))
                })?,
            };
            let url = format!("{}/endringer?fraEndringsNummer={from}", base_url());
            let response = http::get(&url, &[("accept", "application/json")]).map_err(error)?;
            let json = http::json_answer(&response, &url, "endringer").map_err(error)?;
            mapping::map_changes(&json, from, scopes()).map_err(ConnectorError::MalformedResponse)
        }
    }

    folkhub_connector_sdk::no_enrich_v2!(Krr);
    folkhub_connector_sdk::no_watch_v2!(Krr);
    folkhub_connector_sdk::v2::export_connector_v2!(Krr);
}
