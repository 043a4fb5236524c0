//! Search by identifying details: a client's question (names, birth date,
//! place) is put to every installed connector that searches its register
//! (contract 2.2 `search`, capability `search`). The hits are merged by the
//! host's rules, one per person, and handed to the API, which shows each
//! as the client's legal basis allows. Nothing is stored and nobody is
//! followed: a client confirms a hit by following its ID, and the next
//! read (fetch on miss) or sync stores the person.
//!
//! Each register call lands in the cost ledger under the job
//! `search:CLIENT`, so `folkhub costs` shows what a client's searches cost.

use std::collections::BTreeMap;

use chrono::Utc;
use folkhub_api::{FetchError, SearchHit, Searched};
use folkhub_core::contract::{FoundPerson, SearchOutcome, SearchQuery};
use folkhub_core::merge::{self, Candidate};
use folkhub_store::{CostEntry, Installations, Jobs};

use crate::host::Host;

/// Puts `query` to every connector that searches, for `client`.
pub async fn search(
    host: &Host,
    query: &SearchQuery,
    client: &str,
) -> Result<Searched, FetchError> {
    let installed = host
        .store
        .installations()
        .await
        .map_err(|e| FetchError::Unavailable(format!("store: {e}")))?;
    let manifest = host.manifest();
    let candidates: Vec<String> = installed
        .iter()
        .filter(|i| {
            manifest
                .find(&i.connector, Some(&i.version))
                .is_some_and(|r| r.capabilities.iter().any(|c| c == "search"))
        })
        .map(|i| i.connector.clone())
        .collect();
    if candidates.is_empty() {
        return Err(FetchError::NoConnector("search".into()));
    }
    let job = format!("search:{client}");
    let mut searched = Searched {
        asked: Vec::new(),
        hits: Vec::new(),
        too_many: None,
    };
    let (mut found, mut failures, mut spent) = (Vec::new(), Vec::new(), Vec::new());
    for id in candidates {
        match host.budget(&id).await {
            Ok(Some(budget)) if budget.stop => {
                spent.push(format!("{id}: {}", budget.message));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                failures.push(format!("{id}: {e:#}"));
                continue;
            }
        }
        let connector = match host.load(&id).await {
            Ok(c) if c.searches() => c,
            Ok(_) => continue,
            Err(e) => {
                failures.push(format!("{id}: {e:#}"));
                continue;
            }
        };
        searched.asked.push(id.clone());
        let before = connector.upstream_calls();
        let outcome = connector.search(query).await;
        let calls = connector.upstream_calls().saturating_sub(before);
        if calls > 0
            && let Err(e) = host
                .store
                .record_cost(CostEntry {
                    at: Utc::now(),
                    connector: id.clone(),
                    release: connector.version.clone(),
                    job: job.clone(),
                    run: None,
                    calls,
                    cost_per_call: host.cost_per_call(&connector),
                })
                .await
        {
            tracing::warn!("cost ledger: {e}");
        }
        match outcome {
            Ok(SearchOutcome::Hits(hits)) => {
                for person in hits {
                    found.push((id.clone(), connector.version.clone(), person));
                }
            }
            Ok(SearchOutcome::TooMany(n)) => {
                searched.too_many = Some(match searched.too_many {
                    Some(Some(m)) => n.map(|n| n.max(m)).or(Some(m)),
                    _ => n,
                })
            }
            Err(folkhub_runtime::CallError::Connector {
                error: folkhub_core::contract::ConnectorError::BadInput(why),
                ..
            }) => return Err(FetchError::BadQuery(format!("{id}: {why}"))),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if searched.asked.is_empty() && !spent.is_empty() {
        return Err(FetchError::OverBudget(spent.join("; ")));
    }
    if searched.too_many.is_none() && found.is_empty() && !failures.is_empty() {
        return Err(FetchError::Unavailable(failures.join("; ")));
    }
    if !failures.is_empty() {
        tracing::warn!("search: some registers failed: {}", failures.join("; "));
    }
    searched.hits = merged(&host.rules(), found);
    if searched.too_many.is_none() && searched.hits.len() > query.max_hits as usize {
        searched.too_many = Some(Some(searched.hits.len() as u32));
    }
    if searched.too_many.is_some() {
        searched.hits.clear();
    }
    Ok(searched)
}

/// A person being put together: the registers that found them, their
/// IDs, and each field's candidates.
type Person = (
    Vec<String>,
    Vec<folkhub_core::observation::SourceId>,
    BTreeMap<String, Vec<Candidate>>,
);

/// One hit per person: answers that share an ID are the same person, and
/// their fields are merged by the host's rules, as a sync would.
fn merged(rules: &merge::MergeRules, found: Vec<(String, String, FoundPerson)>) -> Vec<SearchHit> {
    let mut people: Vec<Person> = Vec::new();
    let now = Utc::now();
    for (source, release, person) in found {
        let at = people.iter().position(|(_, ids, _)| {
            ids.iter().any(|a| {
                person
                    .ids
                    .iter()
                    .any(|b| a.scheme == b.scheme && a.value == b.value)
            })
        });
        let slot = match at {
            Some(i) => i,
            None => {
                people.push((Vec::new(), Vec::new(), BTreeMap::new()));
                people.len() - 1
            }
        };
        let (sources, ids, candidates) = &mut people[slot];
        if !sources.contains(&source) {
            sources.push(source.clone());
        }
        for id in &person.ids {
            if !ids
                .iter()
                .any(|i| i.scheme == id.scheme && i.value == id.value)
            {
                ids.push(id.clone());
            }
        }
        for field in person.fields {
            candidates.entry(field.path).or_default().push(Candidate {
                source: source.clone(),
                release: release.clone(),
                upstream_version: person.upstream_version.clone(),
                value: field.value,
                labels: field.labels,
                effective: field.effective,
                retrieved: now,
            });
        }
    }
    people
        .into_iter()
        .map(|(sources, mut ids, candidates)| {
            ids.sort_by_key(|i| !i.active);
            SearchHit {
                sources,
                ids,
                record: merge::merge(rules, &candidates),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use folkhub_core::observation::{Observation, SourceId};
    use serde_json::json;

    fn person(id: &str, family: &str) -> FoundPerson {
        FoundPerson {
            ids: vec![SourceId {
                scheme: "se-pnr".into(),
                value: id.into(),
                active: true,
            }],
            fields: vec![Observation {
                path: "name.family".into(),
                value: json!(family),
                labels: vec![],
                effective: None,
            }],
            upstream_version: "2023.1".into(),
            covers: None,
        }
    }

    #[test]
    fn hits_that_share_an_id_are_one_person() {
        let found = vec![
            (
                "spar".to_string(),
                "2.2.0".to_string(),
                person("198001012384", "Berg"),
            ),
            (
                "other".to_string(),
                "1.0.0".to_string(),
                person("198001012384", "Bergh"),
            ),
            (
                "spar".to_string(),
                "2.2.0".to_string(),
                person("199002023399", "Lind"),
            ),
        ];
        let hits = merged(&merge::MergeRules::default(), found);
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].sources, ["spar", "other"]);
        // spar ranks before a source the rules do not name.
        assert_eq!(hits[0].record.fields["name.family"].value, json!("Berg"));
        assert_eq!(hits[1].record.fields["name.family"].value, json!("Lind"));
    }
}
