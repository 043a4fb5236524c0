//! SPAR connector (Sweden): PersonSök program-program over SOAP and mutual
//! TLS, and the avisering files as the change feed. The wire format and
//! its mapping live in [`mapping`], pure and unit-tested natively.
//!
//! One source, two releases: built with feature `upstream-2021-1` it speaks
//! PersonSök 2021.1 (`spar 1.x`), without it 2023.1 (`spar 2.x`); see
//! `registry-manifest.toml` for which release is which.
//!
//! Operator config: `base-url` (default production
//! `https://ext-ws.statenspersonadressregister.se`), `avisering-url` (where
//! the customer's avisering files are fetched, `{avisering-url}/{n}`),
//! `end-user` (`SlutAnvandarId`, default `folkhub`), `extended`
//! (comma-separated extended permissions to ask for: `Relationer` for
//! custodians and spouses, `Medborgarskap` for citizenship; without them
//! SPAR sends neither, and the connector says those fields are not
//! covered). Host side: the organisation certificate
//! (`credentials.kind = "mtls"`) and the secrets `KundNrLeveransMottagare`,
//! `KundNrSlutkund`, `UppdragId`. SPAR charges per lookup: the manifest
//! says what a call costs, and an answer the connector cannot read is a
//! `malformed-response`, which the host does not retry.
//!
//! Since 1.1.0 / 2.1.0 (contract 2.1): answers say what they cover (a
//! protected person's answer covers the markers only), and an avisering
//! file's posts travel with its changes, so following the feed costs no
//! lookups.
//!
//! Since 1.2.0 / 2.2.0 (contract 2.2): `search`, PersonSök's search by
//! given and family names, birth date, postal code and kommun
//! ([`mapping::search_request`]); one search is one paid call, and SPAR's
//! `OverstigerMaxAntalSvarsposter` is `too-many`.

pub mod mapping;
#[allow(unsafe_code)] // wit-bindgen's export glue; the rest is safe Rust
#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component {
    use super::mapping::{self, Outcome};
    use folkhub_connector_sdk::http;
    use folkhub_connector_sdk::soap;
    use folkhub_connector_sdk::v2::{
        self, AnswerChange, AnswerPage, AnswerResult, ChangeKind, ChangePage, ConnectorError,
        Description, LookupResult, bindings,
    };

    const PRODUCTION: &str = "https://ext-ws.statenspersonadressregister.se";

    struct Spar;

    fn error(e: folkhub_connector_sdk::ConnectorError) -> ConnectorError {
        v2::error(e, mapping::UPSTREAM_VERSION)
    }

    impl bindings::exports::folkhub::connector::source::Guest for Spar {
        fn describe() -> Description {
            Description {
                source: "spar".into(),
                upstream_versions: vec![mapping::UPSTREAM_VERSION.into()],
                fields: mapping::FIELDS.iter().map(|f| f.to_string()).collect(),
                capabilities: vec!["lookup".into(), "change-feed".into(), "search".into()],
                max_batch: mapping::MAX_BATCH as u32,
            }
        }

        fn lookup_batch(ids: Vec<String>) -> Result<Vec<LookupResult>, ConnectorError> {
            v2::lookup_from_answers(<Spar as Answers>::lookup_answers(ids))
        }

        fn changes(cursor: Option<String>) -> Result<ChangePage, ConnectorError> {
            v2::changes_from_answers(<Spar as Answers>::change_answers(cursor))
        }
    }

    /// The extended permissions in config `extended` (comma-separated).
    fn extended() -> Vec<String> {
        v2::config_or("extended", "")
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect()
    }

    fn asked() -> mapping::Asked {
        let extended = extended();
        mapping::Asked::from_list(&extended.iter().map(String::as_str).collect::<Vec<_>>())
    }

    use bindings::exports::folkhub::connector::answers::Guest as Answers;

    impl Answers for Spar {
        fn lookup_answers(ids: Vec<String>) -> Result<Vec<AnswerResult>, ConnectorError> {
            let url = format!("{}{}", v2::base_url(PRODUCTION), mapping::UPSTREAM.path);
            let end_user = v2::config_or("end-user", "folkhub");
            let extended = extended();
            let extended: Vec<&str> = extended.iter().map(String::as_str).collect();
            let asked = mapping::Asked::from_list(&extended);
            v2::one_by_one_answers(ids, mapping::UPSTREAM_VERSION, mapping::FIELDS, |id| {
                let parsed = match folkhub_connector_sdk::ids::parse_swedish(id) {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        return Ok(Outcome::Failed(
                            folkhub_connector_sdk::ConnectorError::BadInput(e.to_string()),
                        ));
                    }
                };
                let request = mapping::request(&parsed.value, &end_user, &extended);
                let response = soap::post(&url, mapping::UPSTREAM.soap_action, &request)?;
                let text = soap::text(&response, "SPAR answer")?;
                let mut warnings = vec![];
                let mapped = mapping::map_answer(text, &parsed.value, asked, &mut warnings)
                    .map_err(folkhub_connector_sdk::ConnectorError::MalformedResponse);
                v2::warn_all(warnings);
                mapped
            })
        }

        fn change_answers(cursor: Option<String>) -> Result<AnswerPage, ConnectorError> {
            let done = match cursor.as_deref() {
                None => 0,
                Some(c) => c.parse::<u64>().map_err(|_| {
                    ConnectorError::BadInput(format!(
                        "cursor {c:?} is not an avisering file number"
                    ))
                })?,
            };
            let base = v2::config("avisering-url")?;
            let next = done + 1;
            let url = format!("{}/{next}", base.trim_end_matches('/'));
            let response = http::send("GET", &url, &[("accept", "application/xml")], None)
                .and_then(|r| r.check())
                .map_err(error)?;
            if response.status == 404 {
                // The next file is not produced yet.
                return Ok(AnswerPage {
                    changes: vec![],
                    next_cursor: done.to_string(),
                    caught_up: true,
                });
            }
            let text = soap::text(&response, "avisering file").map_err(error)?;
            let mut warnings = vec![];
            let notified = mapping::map_avisering(text, asked(), &mut warnings)
                .map_err(ConnectorError::MalformedResponse)?;
            v2::warn_all(warnings);
            Ok(AnswerPage {
                changes: notified
                    .into_iter()
                    .map(|n| AnswerChange {
                        id: n.id,
                        kind: ChangeKind::Updated,
                        event: "avisering".into(),
                        position: next.to_string(),
                        recorded: None,
                        person: Some(
                            n.person
                                .into_answer(mapping::UPSTREAM_VERSION, mapping::FIELDS),
                        ),
                    })
                    .collect(),
                next_cursor: next.to_string(),
                caught_up: false,
            })
        }
    }

    use bindings::exports::folkhub::connector::search::Guest as Search;

    impl Search for Spar {
        fn search_persons(query: v2::Query) -> Result<v2::SearchOutcome, ConnectorError> {
            let criteria = mapping::Criteria {
                family: query.family,
                given: query.given,
                birth_date: query.birth_date,
                postal_code: query.postal_code,
                municipality: query.municipality,
            };
            let extended = extended();
            let extended: Vec<&str> = extended.iter().map(String::as_str).collect();
            let end_user = v2::config_or("end-user", "folkhub");
            let request = mapping::search_request(&criteria, &end_user, &extended)
                .map_err(ConnectorError::BadInput)?;
            let url = format!("{}{}", v2::base_url(PRODUCTION), mapping::UPSTREAM.path);
            let response =
                soap::post(&url, mapping::UPSTREAM.soap_action, &request).map_err(error)?;
            let text = soap::text(&response, "SPAR answer").map_err(error)?;
            let mut warnings = vec![];
            let found = mapping::map_search(text, asked(), &mut warnings)
                .map_err(ConnectorError::MalformedResponse)?;
            v2::warn_all(warnings);
            match found {
                mapping::Found::Failed(e) => Err(error(e)),
                mapping::Found::TooMany(n) => Ok(v2::SearchOutcome::TooMany(n)),
                mapping::Found::Hits(hits) if hits.len() > query.max_hits as usize => {
                    Ok(v2::SearchOutcome::TooMany(Some(hits.len() as u32)))
                }
                mapping::Found::Hits(hits) => Ok(v2::SearchOutcome::Hits(
                    hits.into_iter()
                        .map(|p| p.into_answer(mapping::UPSTREAM_VERSION, mapping::FIELDS))
                        .collect(),
                )),
            }
        }
    }

    folkhub_connector_sdk::no_enrich_v2!(Spar);
    folkhub_connector_sdk::no_watch_v2!(Spar);
    folkhub_connector_sdk::v2::export_connector_v2!(Spar);
}
