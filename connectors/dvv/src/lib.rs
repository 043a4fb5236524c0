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
//! Since 1.2.0 (contract 2.1): both address forms (the joined line and the
//! parts OPHREK-style products send), the call name, e-mail, civil status,
//! temporary and postal addresses; answers say what they cover, so a
//! product that lacks a field, or withholds the address under turvakielto,
//! never removes what the host holds.
//!
//! Since 1.1.0 (contract 1.1 `watch`): the VTJ change interface, which takes
//! the followed HETUs. Config `changes-url` (e.g. the security server's
//! `.../VTJmutpa/api/v1`), `xroad-client` (the `X-Road-Client` header, e.g.
//! `FI/GOV/0245437-2/folkhub`); the service user is host-side Basic
//! credentials.

pub mod mapping;
#[allow(unsafe_code)] // wit-bindgen's export glue; the rest is safe Rust
#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component {
    use super::mapping::{self, Outcome};
    use folkhub_connector_sdk::v2::{
        self, AnswerPage, AnswerResult, Change, ChangeKind, ChangePage, ConnectorError,
        Description, LookupResult, bindings,
    };
    use folkhub_connector_sdk::{http, soap};

    struct Dvv;

    fn error(e: folkhub_connector_sdk::ConnectorError) -> ConnectorError {
        v2::error(e, mapping::UPSTREAM_VERSION)
    }

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
            v2::lookup_from_answers(<Dvv as Answers>::lookup_answers(ids))
        }

        fn changes(_cursor: Option<String>) -> Result<ChangePage, ConnectorError> {
            Err(ConnectorError::Other(
                "VTJ has no feed of everyone: the host follows persons with `changes-for` (capability watch)".into(),
            ))
        }
    }

    use bindings::exports::folkhub::connector::answers::Guest as Answers;

    impl Answers for Dvv {
        fn lookup_answers(ids: Vec<String>) -> Result<Vec<AnswerResult>, ConnectorError> {
            let url = v2::config("base-url")?;
            let product = v2::config_or("product", "PERUSSANOMA 1");
            let end_user = v2::config_or("end-user", "folkhub");
            let today = chrono::Utc::now().format("%Y%m%d").to_string();
            v2::one_by_one_answers(ids, mapping::UPSTREAM_VERSION, mapping::FIELDS, |id| {
                let hetu = match folkhub_connector_sdk::ids::parse_finnish(id) {
                    Ok(hetu) => hetu,
                    Err(e) => {
                        return Ok(Outcome::Failed(
                            folkhub_connector_sdk::ConnectorError::BadInput(e.to_string()),
                        ));
                    }
                };
                let request = mapping::request(&product, &end_user, &hetu.value);
                let response = soap::post(&url, mapping::SOAP_ACTION, &request)?;
                let text = soap::text(&response, "VTJ answer")?;
                let mut warnings = vec![];
                let mapped = mapping::map_answer(text, &hetu.value, &today, &mut warnings)
                    .map_err(folkhub_connector_sdk::ConnectorError::MalformedResponse);
                v2::warn_all(warnings);
                mapped
            })
        }

        fn change_answers(_cursor: Option<String>) -> Result<AnswerPage, ConnectorError> {
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
            let base = v2::config("changes-url")?;
            let base = base.trim_end_matches('/');
            let client = v2::config("xroad-client")?;
            let headers = [
                ("accept", "application/json"),
                ("x-road-client", client.as_str()),
            ];
            let Some(key) = cursor else {
                // Start from today's position in the change log.
                let today = chrono::Utc::now().date_naive();
                let url = format!("{base}/kirjausavain/{today}");
                let response = http::get(&url, &headers).map_err(error)?;
                let json = http::json_answer(&response, &url, "kirjausavain").map_err(error)?;
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
            let response = http::post_json(&url, &headers, &body).map_err(error)?;
            let json = http::json_answer(&response, &url, "muutokset").map_err(error)?;
            let page = mapping::map_changes(&json).map_err(ConnectorError::MalformedResponse)?;
            Ok(ChangePage {
                changes: page
                    .changes
                    .into_iter()
                    .map(|m| Change {
                        id: m.id,
                        // The groups say what changed; the host queries
                        // the person for the record.
                        kind: ChangeKind::Updated,
                        event: m.event,
                        position: page.next_key.clone(),
                        recorded: m.recorded,
                        person: None,
                    })
                    .collect(),
                next_cursor: page.next_key,
                caught_up: page.caught_up,
            })
        }
    }

    folkhub_connector_sdk::no_enrich_v2!(Dvv);
    folkhub_connector_sdk::v2::export_connector_v2!(Dvv);
}
