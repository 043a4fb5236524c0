//! What connectors say, as the rest of the host sees it, whatever contract
//! version the connector was built against. The runtime's per-major
//! bindings convert into these types.

use serde::{Deserialize, Serialize};

use crate::observation::{Observation, SourceId};

/// Errors a connector expects (the contract's `connector-error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum ConnectorError {
    #[error("the register refused the credentials: {0}")]
    Unauthorized(String),
    #[error("the register asks to slow down; retry after {0} ms")]
    RateLimited(u32),
    #[error("the register is unavailable: {0}")]
    UpstreamUnavailable(String),
    #[error(
        "the register retired the upstream API version this release speaks; install a release that speaks a newer one: {0}"
    )]
    UpstreamVersionGone(String),
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("the register answered something the connector cannot read: {0}")]
    MalformedResponse(String),
    #[error("the host refused a request: {0}")]
    Denied(String),
    #[error("{0}")]
    Other(String),
}

impl ConnectorError {
    /// Is a later retry of the same call likely to succeed? An answer the
    /// connector cannot read may be a transfer cut short; a paid register is
    /// not asked again for it all the same ([`ConnectorError::worth_retrying`]).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectorError::RateLimited(_)
                | ConnectorError::UpstreamUnavailable(_)
                | ConnectorError::MalformedResponse(_)
        )
    }

    /// Should the same call be made again, at `cost_per_call`? An answer the
    /// connector cannot read is most often the same answer next time (a
    /// schema it does not know): against a register that charges per call
    /// (SPAR) the run fails once with the reason instead of paying again.
    pub fn worth_retrying(&self, cost_per_call: f64) -> bool {
        match self {
            ConnectorError::MalformedResponse(_) => cost_per_call <= 0.0,
            other => other.is_transient(),
        }
    }
}

/// One person as a register reports it, before it becomes observations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundPerson {
    pub ids: Vec<SourceId>,
    pub fields: Vec<Observation>,
    pub upstream_version: String,
    /// The catalogue paths the answer speaks for (contract 2.1 `answers`).
    /// `None`: the answer speaks for everything this source said before
    /// (contracts before 2.1), so a value it no longer carries is removed.
    /// `Some`: a path not listed is not covered, and the host keeps what it
    /// holds for it (a narrower scope, a censored field, a product without
    /// the field is not a removal).
    #[serde(default)]
    pub covers: Option<Vec<String>>,
}

impl FoundPerson {
    /// Does this answer speak for `path`, so that its absence is a removal?
    pub fn speaks_for(&self, path: &str) -> bool {
        self.covers
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| p == path))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LookupOutcome {
    Found(FoundPerson),
    NotFound,
    Failed(ConnectorError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupResult {
    pub requested: String,
    pub outcome: LookupOutcome,
}

/// What happened to a person (contract 2.0 `change-kind`). Major-1
/// connectors say only the register's event text: [`ChangeKind::Unclassified`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    Created,
    Updated,
    IdsChanged,
    Deceased,
    Removed,
    Other,
    Unclassified,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub id: String,
    pub kind: ChangeKind,
    pub event: String,
    pub position: String,
    pub recorded: Option<String>,
    /// The person as the feed reported them (contract 2.0); the host stores
    /// it instead of looking the person up again.
    pub record: Option<FoundPerson>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    pub next_cursor: String,
    pub caught_up: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    pub source: String,
    pub upstream_versions: Vec<String>,
    pub fields: Vec<String>,
    pub capabilities: Vec<String>,
    pub max_batch: u32,
}

/// A location for an enriching source (contract 1.1 `enrich`).
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    /// The caller's key for the answer.
    pub key: String,
    /// The address object of docs/fields.md.
    pub address: serde_json::Value,
    /// Other fields the source may use, as (path, value).
    pub context: Vec<(String, serde_json::Value)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EnrichOutcome {
    /// What the source adds; empty withdraws what it added before.
    Found(Vec<crate::observation::Observation>),
    NotFound,
    Failed(ConnectorError),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EnrichResult {
    pub key: String,
    pub outcome: EnrichOutcome,
}

/// What a search by identifying details knows (contract 2.2 `search`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// Family (and middle) names, words in any order, `*` a wildcard.
    pub family: Option<String>,
    /// Given names, words in any order, `*` a wildcard.
    pub given: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    /// Postal code of the registered address, without spaces.
    pub postal_code: Option<String>,
    /// Municipality code of the registered address.
    pub municipality: Option<String>,
    /// The most persons the caller takes; more is [`SearchOutcome::TooMany`].
    pub max_hits: u32,
}

/// What a register's search found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SearchOutcome {
    /// Every person that matches.
    Hits(Vec<FoundPerson>),
    /// More match than the caller takes or the register returns; how many,
    /// when the register says.
    TooMany(Option<u32>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_answer_is_not_bought_again() {
        let unreadable = ConnectorError::MalformedResponse("namn-2.0".into());
        assert!(
            unreadable.worth_retrying(0.0),
            "a free register: maybe a cut-off transfer"
        );
        assert!(
            !unreadable.worth_retrying(0.35),
            "a paid register is not asked again"
        );
        assert!(ConnectorError::RateLimited(100).worth_retrying(0.35));
        assert!(!ConnectorError::Unauthorized("x".into()).worth_retrying(0.0));
    }
}
