//! Benchmark component: maps register answers with the real connectors'
//! mapping code — the work a connector does per call, without HTTP. The
//! native side of the benchmark runs the same mapping compiled natively.
//!
//! `lookup-batch([register, body, "discard"?])`: `register` is
//! `folkeregister` (a bulkoppslag answer), `krr` (a personer answer),
//! `spar`, `dvv` or `kartverket` (answers separated by U+001E, one per
//! person, as those registers answer one question per call). With
//! "discard" the results are built but not returned, which separates the
//! guest's own work from copying results out.

use folkhub_connector_sdk::{
    ChangePage, ConnectorError, Description, LookupOutcome, LookupResult, PersonRecord, bindings,
};

struct Bench;

/// The separator between single answers in a body.
pub const SEPARATOR: char = '\u{1e}';

fn found(record: PersonRecord) -> LookupResult {
    LookupResult {
        requested: String::new(),
        outcome: LookupOutcome::Found(record),
    }
}

/// KRR (2.1, contract 2) maps into contract 2 records; the benchmark
/// component speaks contract 1, so it builds the 1.x record from the same
/// mapped fields.
fn krr_record(p: connector_krr::mapping::Person) -> PersonRecord {
    PersonRecord {
        ids: vec![folkhub_connector_sdk::PersonId {
            scheme: "no-fnr".into(),
            value: p.id,
            active: true,
        }],
        fields: p
            .fields
            .into_iter()
            .map(|(path, value, effective)| {
                folkhub_connector_sdk::field(path, value, &[], effective)
            })
            .collect(),
        upstream_version: connector_krr::mapping::UPSTREAM_VERSION.into(),
    }
}

fn malformed(e: String) -> ConnectorError {
    ConnectorError::MalformedResponse(e)
}

/// Folkeregisteret (1.1, contract 2.1) likewise: the 1.x record from the
/// same mapped person.
fn freg_record(p: connector_folkeregister::mapping::Person) -> PersonRecord {
    PersonRecord {
        ids: p
            .ids
            .into_iter()
            .map(|(scheme, value, active)| folkhub_connector_sdk::PersonId {
                scheme,
                value,
                active,
            })
            .collect(),
        fields: p
            .fields
            .into_iter()
            .map(|f| folkhub_connector_sdk::field(f.path, f.value, &f.labels, f.effective))
            .collect(),
        upstream_version: connector_folkeregister::mapping::UPSTREAM_VERSION.into(),
    }
}

fn map(register: &str, body: &str) -> Result<Vec<LookupResult>, ConnectorError> {
    Ok(match register {
        "folkeregister" => {
            use connector_folkeregister::mapping;
            let json: serde_json::Value =
                serde_json::from_str(body).map_err(|e| malformed(e.to_string()))?;
            let mut warnings = Vec::new();
            mapping::map_bulk(&json, true, &mut warnings)
                .map_err(malformed)?
                .into_iter()
                .map(|(requested, outcome)| LookupResult {
                    requested,
                    outcome: match outcome {
                        mapping::Outcome::Found(p) => LookupOutcome::Found(freg_record(p)),
                        mapping::Outcome::NotFound => LookupOutcome::NotFound,
                        mapping::Outcome::Invalid(m) => {
                            LookupOutcome::Failed(ConnectorError::BadInput(m))
                        }
                    },
                })
                .collect()
        }
        "krr" => {
            let json: serde_json::Value =
                serde_json::from_str(body).map_err(|e| malformed(e.to_string()))?;
            connector_krr::mapping::map_persons(&json, None)
                .map_err(malformed)?
                .into_iter()
                .map(|p| found(krr_record(p)))
                .collect()
        }
        "spar" => {
            use connector_spar::mapping;
            let mut out = Vec::new();
            for answer in body.split(SEPARATOR) {
                let mut warnings = Vec::new();
                if let mapping::Outcome::Found(p) = mapping::map_answer(
                    answer,
                    "",
                    mapping::Asked {
                        relations: true,
                        citizenship: true,
                    },
                    &mut warnings,
                )
                .map_err(malformed)?
                {
                    out.push(found(p.into_record(mapping::UPSTREAM_VERSION)));
                }
            }
            out
        }
        "dvv" => {
            use connector_dvv::mapping;
            let mut out = Vec::new();
            for answer in body.split(SEPARATOR) {
                let mut warnings = Vec::new();
                if let mapping::Outcome::Found(p) =
                    mapping::map_answer(answer, "", "20261203", &mut warnings).map_err(malformed)?
                {
                    out.push(found(p.into_record(mapping::UPSTREAM_VERSION)));
                }
            }
            out
        }
        "kartverket" => {
            use connector_kartverket::mapping;
            let mut out = Vec::new();
            let mut parts = body.split(SEPARATOR);
            let districts: serde_json::Value = serde_json::from_str(parts.next().unwrap_or("{}"))
                .map_err(|e| malformed(e.to_string()))?;
            let districts = mapping::districts(&districts).map_err(malformed)?;
            // Then pairs: the address asked for, the sok answer.
            while let (Some(address), Some(answer)) = (parts.next(), parts.next()) {
                let address: serde_json::Value =
                    serde_json::from_str(address).map_err(|e| malformed(e.to_string()))?;
                let answer: serde_json::Value =
                    serde_json::from_str(answer).map_err(|e| malformed(e.to_string()))?;
                if let Some(point) = mapping::pick(&answer, &address).map_err(malformed)? {
                    // The bench puts the grunnkrets beside the address (the host sends it as context).
                    let unit = address.get("_statistical_unit").and_then(|u| u.as_str());
                    let person = folkhub_connector_sdk::MappedPerson {
                        fields: mapping::fields(point, unit, &districts),
                        ..Default::default()
                    };
                    out.push(found(person.into_record(mapping::UPSTREAM_VERSION)));
                }
            }
            out
        }
        other => {
            return Err(ConnectorError::BadInput(format!(
                "unknown register {other}"
            )));
        }
    })
}

impl bindings::exports::folkhub::connector::source::Guest for Bench {
    fn describe() -> Description {
        Description {
            source: "mapping-bench".into(),
            upstream_versions: vec![],
            fields: vec![],
            capabilities: vec![],
            max_batch: 1,
        }
    }

    fn lookup_batch(args: Vec<String>) -> Result<Vec<LookupResult>, ConnectorError> {
        let (Some(register), Some(body)) = (args.first(), args.get(1)) else {
            return Ok(vec![]);
        };
        let results = map(register, body)?;
        let discard = args.get(2).is_some_and(|a| a == "discard");
        Ok(if discard { Vec::new() } else { results })
    }

    fn changes(_cursor: Option<String>) -> Result<ChangePage, ConnectorError> {
        Ok(ChangePage {
            changes: vec![],
            next_cursor: "0".into(),
            caught_up: true,
        })
    }
}

folkhub_connector_sdk::no_enrich!(Bench);
folkhub_connector_sdk::no_watch!(Bench);
// wit-bindgen's export glue is `unsafe`; it alone may be.
#[allow(unsafe_code)]
mod export {
    use super::Bench;
    folkhub_connector_sdk::export_connector!(Bench);
}
