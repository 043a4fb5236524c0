//! Benchmark component: `lookup-batch` takes one "ID", a Folkeregisteret
//! bulkoppslag answer as JSON, and maps it with the real connector's mapping
//! code — the same work the connector does per call, without HTTP. The
//! native side of the benchmark runs the same mapping compiled natively.

use connector_folkeregister::mapping;
use folkhub_connector_sdk::{
    ChangePage, ConnectorError, Description, LookupOutcome, LookupResult, bindings,
};

struct Bench;

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

    fn lookup_batch(ids: Vec<String>) -> Result<Vec<LookupResult>, ConnectorError> {
        let Some(body) = ids.first() else {
            return Ok(vec![]);
        };
        let json: serde_json::Value = serde_json::from_str(body)
            .map_err(|e| ConnectorError::MalformedResponse(e.to_string()))?;
        let mut warnings = Vec::new();
        let mapped =
            mapping::map_bulk(&json, &mut warnings).map_err(ConnectorError::MalformedResponse)?;
        // A second argument "discard" maps and converts but returns nothing,
        // which separates the guest's own work from copying results out.
        let discard = ids.get(1).is_some_and(|a| a == "discard");
        let results: Vec<LookupResult> = mapped
            .into_iter()
            .map(|(requested, outcome)| LookupResult {
                requested,
                outcome: match outcome {
                    mapping::Outcome::Found(p) => LookupOutcome::Found(p.into_record()),
                    mapping::Outcome::NotFound => LookupOutcome::NotFound,
                    mapping::Outcome::Invalid(m) => {
                        LookupOutcome::Failed(ConnectorError::BadInput(m))
                    }
                },
            })
            .collect();
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
folkhub_connector_sdk::export_connector!(Bench);
