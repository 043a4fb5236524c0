//! Shadow runs: two releases of one connector answer for the same sample
//! of persons, and the merged records each would produce are compared field
//! by field. Nothing is written: the store is only read, and nothing goes
//! to the run log.
//!
//! The merged record is computed as the store would: every other source's
//! current statements stay, this connector's are replaced by what the
//! release answered, and the survivorship rules choose.

use std::collections::BTreeMap;

use chrono::Utc;
use folkhub_core::contract::{EnrichOutcome, LookupOutcome};
use folkhub_core::merge::{self, Candidate, MergeRules, MergedRecord};
use folkhub_core::observation::Observation;
use folkhub_runtime::{CallError, Connector};
use folkhub_store::{Persons, StoreError, StoredPerson};
use serde::Serialize;
use serde_json::Value;

/// What one release answered for the sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReleaseAnswers {
    pub version: String,
    /// Calls made (lookup or enrich batches).
    pub calls: u64,
    pub found: u64,
    pub not_found: u64,
    /// Errors by message (per person, or one for a whole call).
    pub errors: BTreeMap<String, u64>,
}

/// One field whose merged value differs between the two releases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldDifference {
    /// Persons whose merged value of this field differs.
    pub persons: u64,
    /// Up to three examples.
    pub examples: Vec<Example>,
}

/// One person's field with each release.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// The store's person key.
    pub person: i64,
    /// The merged value with the old release (null: none).
    pub old: Value,
    pub new: Value,
    /// Either value carries protection labels: show it only to readers
    /// with the legal basis (the CLI prints `(protected)`).
    pub protected: bool,
}

/// The outcome of a shadow run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowReport {
    /// Persons in the sample (eligible: an ID of the release's schemes, or an
    /// address for an enriching source).
    pub sampled: u64,
    /// Persons whose merged record is the same with either release.
    pub identical: u64,
    pub old: ReleaseAnswers,
    pub new: ReleaseAnswers,
    /// Catalogue path → difference.
    pub fields: BTreeMap<String, FieldDifference>,
    /// Persons for whom the releases report different identifiers.
    pub ids_differ: u64,
    /// Up to three examples: ID schemes only the new release reports, and
    /// only the old (values are not shown).
    pub id_examples: Vec<IdDifference>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdDifference {
    pub person: i64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// What a release answered for one person.
#[derive(Debug, Clone, Default)]
struct Answer {
    fields: Vec<Observation>,
    ids: Vec<folkhub_core::observation::SourceId>,
    /// What the answer covers (contract 2.1); `None`: everything.
    covers: Option<Vec<String>>,
}

fn store_error(connector: &Connector, e: StoreError) -> CallError {
    CallError::Host {
        connector: connector.id.clone(),
        version: connector.version.clone(),
        message: e.to_string(),
    }
}

/// A sample of up to `size` persons spread evenly over everyone the
/// release can be asked about (an ID of its schemes, or an address for an
/// enriching source). One pass over the store collects the keys of those
/// persons (8 bytes each), then the chosen ones are read.
async fn sample(
    store: &dyn Persons,
    connector: &Connector,
    size: usize,
) -> Result<Vec<StoredPerson>, CallError> {
    let enriching = connector.capabilities.iter().any(|c| c == "enrich");
    let mut eligible = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .persons_after(after, 1000)
            .await
            .map_err(|e| store_error(connector, e))?;
        let Some(last) = page.last() else { break };
        after = last.key;
        eligible.extend(page.iter().filter_map(|person| {
            let ok = if enriching {
                person.record.fields.contains_key("address.residential")
            } else {
                ask_id(person, connector).is_some()
            };
            ok.then_some(person.key)
        }));
    }
    let chosen: Vec<i64> = if eligible.len() <= size {
        eligible
    } else {
        (0..size)
            .map(|i| eligible[i * eligible.len() / size])
            .collect()
    };
    let mut out = Vec::with_capacity(chosen.len());
    for key in chosen {
        if let Some(person) = store
            .person_by_key(key)
            .await
            .map_err(|e| store_error(connector, e))?
        {
            out.push(person);
        }
    }
    Ok(out)
}

/// The ID a release looks a person up by: an active ID of its schemes.
fn ask_id(person: &StoredPerson, connector: &Connector) -> Option<String> {
    person
        .ids
        .iter()
        .find(|i| i.active && connector.id_schemes.contains(&i.scheme))
        .map(|i| i.value.clone())
}

/// What a release said for each sampled person (key → fields; None when it
/// did not find the person or failed).
async fn answers(
    connector: &Connector,
    persons: &[StoredPerson],
    tally: &mut ReleaseAnswers,
) -> BTreeMap<i64, Option<Answer>> {
    let mut out = BTreeMap::new();
    let batch = 100;
    if connector.capabilities.iter().any(|c| c == "enrich") {
        for chunk in persons.chunks(batch) {
            let locations: Vec<_> = chunk
                .iter()
                .filter_map(|p| crate::location_of(p, &connector.id, false).flatten())
                .collect();
            tally.calls += 1;
            match connector.enrich(&locations).await {
                Ok(results) => {
                    for r in results {
                        let Ok(key) = r.key.parse::<i64>() else {
                            continue;
                        };
                        let answer = enriched(r.outcome).map(|f| {
                            f.map(|fields| Answer {
                                fields,
                                ids: vec![],
                                covers: None,
                            })
                        });
                        out.insert(key, record(answer, tally));
                    }
                }
                Err(e) => *tally.errors.entry(e.to_string()).or_default() += chunk.len() as u64,
            }
        }
        return out;
    }
    for chunk in persons.chunks(batch) {
        let ids: Vec<(i64, String)> = chunk
            .iter()
            .filter_map(|p| ask_id(p, connector).map(|id| (p.key, id)))
            .collect();
        let asked: Vec<String> = ids.iter().map(|(_, id)| id.clone()).collect();
        tally.calls += 1;
        match connector.lookup(&asked).await {
            Ok(results) => {
                for r in results {
                    let Some((key, _)) = ids.iter().find(|(_, id)| *id == r.requested) else {
                        continue;
                    };
                    let fields = match r.outcome {
                        LookupOutcome::Found(p) => Ok(Some(Answer {
                            fields: p.fields,
                            ids: p.ids,
                            covers: p.covers,
                        })),
                        LookupOutcome::NotFound => Ok(None),
                        LookupOutcome::Failed(e) => Err(e.to_string()),
                    };
                    out.insert(*key, record(fields, tally));
                }
            }
            Err(e) => *tally.errors.entry(e.to_string()).or_default() += chunk.len() as u64,
        }
    }
    out
}

fn record(fields: Result<Option<Answer>, String>, tally: &mut ReleaseAnswers) -> Option<Answer> {
    match fields {
        Ok(Some(fields)) => {
            tally.found += 1;
            Some(fields)
        }
        Ok(None) => {
            tally.not_found += 1;
            None
        }
        Err(e) => {
            *tally.errors.entry(e).or_default() += 1;
            None
        }
    }
}

/// What an enriching source answered for one location.
fn enriched(outcome: EnrichOutcome) -> Result<Option<Vec<Observation>>, String> {
    match outcome {
        EnrichOutcome::Found(fields) => Ok(Some(fields)),
        EnrichOutcome::NotFound => Ok(None),
        EnrichOutcome::Failed(e) => Err(e.to_string()),
    }
}

/// The merged record with this connector's statements replaced by `fields`.
/// The merged record the store would hold after `answer`, as it applies
/// answers: no answer (not found, failed) changes nothing, so the source's
/// stored values (`stored`) stay; an answer replaces them, except the paths
/// it does not cover (contract 2.1), which keep their stored value.
fn merged_with(
    rules: &MergeRules,
    others: &BTreeMap<String, Vec<Candidate>>,
    stored: &BTreeMap<String, Vec<Candidate>>,
    connector: &Connector,
    answer: Option<&Answer>,
) -> MergedRecord {
    let mut candidates = others.clone();
    let kept = |path: &str| match answer {
        None => true,
        Some(a) => a
            .covers
            .as_ref()
            .is_some_and(|list| !list.iter().any(|p| p == path)),
    };
    for (path, list) in stored {
        if kept(path) {
            candidates
                .entry(path.clone())
                .or_default()
                .extend(list.iter().cloned());
        }
    }
    let now = Utc::now();
    for f in answer.map(|a| &a.fields).into_iter().flatten() {
        if f.value.is_null() {
            continue;
        }
        candidates
            .entry(f.path.clone())
            .or_default()
            .push(Candidate {
                source: connector.id.clone(),
                release: connector.version.clone(),
                upstream_version: connector.upstream_version.clone(),
                value: f.value.clone(),
                labels: f.labels.clone(),
                effective: f.effective,
                retrieved: now,
            });
    }
    merge::merge(rules, &candidates)
}

/// Runs both releases on a sample of `size` persons and compares the merged
/// records they would produce. Reads only.
pub async fn shadow(
    store: &dyn Persons,
    rules: &MergeRules,
    old: &Connector,
    new: &Connector,
    size: usize,
) -> Result<ShadowReport, CallError> {
    let persons = sample(store, old, size).await?;
    let mut report = ShadowReport {
        sampled: persons.len() as u64,
        identical: 0,
        old: ReleaseAnswers {
            version: old.version.clone(),
            ..Default::default()
        },
        new: ReleaseAnswers {
            version: new.version.clone(),
            ..Default::default()
        },
        fields: BTreeMap::new(),
        ids_differ: 0,
        id_examples: vec![],
    };
    let before = answers(old, &persons, &mut report.old).await;
    let after = answers(new, &persons, &mut report.new).await;
    for person in &persons {
        let mut others = store
            .candidates(person.key)
            .await
            .map_err(|e| store_error(old, e))?;
        let mut stored: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
        for (path, list) in others.iter_mut() {
            let (own, rest): (Vec<Candidate>, Vec<Candidate>) = std::mem::take(list)
                .into_iter()
                .partition(|c| c.source == old.id);
            *list = rest;
            if !own.is_empty() {
                stored.insert(path.clone(), own);
            }
        }
        others.retain(|_, list| !list.is_empty());
        let x = before.get(&person.key).and_then(Option::as_ref);
        let y = after.get(&person.key).and_then(Option::as_ref);
        let a = merged_with(rules, &others, &stored, old, x);
        let b = merged_with(rules, &others, &stored, new, y);
        let ids = |answer: Option<&Answer>| -> std::collections::BTreeSet<(String, String, bool)> {
            answer
                .map(|a| {
                    a.ids
                        .iter()
                        .map(|i| (i.scheme.clone(), i.value.clone(), i.active))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (ids_a, ids_b) = (ids(x), ids(y));
        let mut same = true;
        // Identifiers are compared where both releases found the person;
        // one that did not find them is counted under "not found".
        if x.is_some() && y.is_some() && ids_a != ids_b {
            same = false;
            report.ids_differ += 1;
            if report.id_examples.len() < 3 {
                report.id_examples.push(IdDifference {
                    person: person.key,
                    added: ids_b.difference(&ids_a).map(|i| i.0.clone()).collect(),
                    removed: ids_a.difference(&ids_b).map(|i| i.0.clone()).collect(),
                });
            }
        }
        let paths: std::collections::BTreeSet<&String> =
            a.fields.keys().chain(b.fields.keys()).collect();
        for path in paths {
            let (x, y) = (a.fields.get(path), b.fields.get(path));
            let differs = x.map(|f| (&f.value, &f.labels)) != y.map(|f| (&f.value, &f.labels));
            if differs {
                same = false;
                let entry = report
                    .fields
                    .entry(path.clone())
                    .or_insert(FieldDifference {
                        persons: 0,
                        examples: vec![],
                    });
                entry.persons += 1;
                if entry.examples.len() < 3 {
                    entry.examples.push(Example {
                        person: person.key,
                        old: x.map_or(Value::Null, |f| f.value.clone()),
                        new: y.map_or(Value::Null, |f| f.value.clone()),
                        protected: x.is_some_and(|f| !f.labels.is_empty())
                            || y.is_some_and(|f| !f.labels.is_empty())
                            || a.protection() != folkhub_core::labels::Protection::Ugradert,
                    });
                }
            }
        }
        if same {
            report.identical += 1;
        }
    }
    Ok(report)
}
