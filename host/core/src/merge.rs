//! Survivorship: choosing one value per field from what every source says.
//!
//! For each field the candidates are each source's latest observation. The
//! rule of the field's group ranks sources; the best-ranked source with a
//! value wins, and between sources of equal rank the newest effective time
//! wins. Equal rank, equal time and different values is a conflict: the
//! record keeps the first by source name and marks the field.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fields;
use crate::labels::{self, Protection};

/// Ordered source lists per field group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MergeRules {
    /// Group name → sources, best first. Sources not listed rank after all listed ones, equal to each other.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Source → the ID schemes it issues. When such a source says that IDs
    /// held by two persons belong to one person, the persons are merged
    /// (other sources naming them only open an identity conflict).
    #[serde(default = "default_authorities")]
    pub id_authorities: BTreeMap<String, Vec<String>>,
}

fn default_authorities() -> BTreeMap<String, Vec<String>> {
    [
        ("folkeregister", &["no-fnr", "no-dnr"][..]),
        ("spar", &["se-pnr", "se-snr"][..]),
        ("dvv", &["fi-hetu"][..]),
    ]
    .into_iter()
    .map(|(s, schemes)| {
        (
            s.to_string(),
            schemes.iter().map(|x| x.to_string()).collect(),
        )
    })
    .collect()
}

impl Default for MergeRules {
    fn default() -> Self {
        let nordic = ["folkeregister", "spar", "dvv"];
        let mut groups = BTreeMap::new();
        for group in [
            "name",
            "birth",
            "status",
            "family",
            "citizenship",
            "address",
            "protection",
            "relations",
            "language",
        ] {
            groups.insert(
                group.to_string(),
                nordic.iter().map(|s| s.to_string()).collect(),
            );
        }
        groups.insert("contact".into(), vec!["krr".into(), "dvv".into()]);
        groups.insert("district".into(), vec!["kartverket".into()]);
        MergeRules {
            groups,
            id_authorities: default_authorities(),
        }
    }
}

/// The source name of manual overrides: they rank before every source.
pub const OVERRIDE: &str = "override";

impl MergeRules {
    /// Does `source` issue IDs of `scheme`?
    pub fn issues(&self, source: &str, scheme: &str) -> bool {
        self.id_authorities
            .get(source)
            .is_some_and(|schemes| schemes.iter().any(|s| s == scheme))
    }

    fn rank(&self, group: &str, source: &str) -> usize {
        if source == OVERRIDE {
            return 0;
        }
        self.groups
            .get(group)
            .and_then(|order| order.iter().position(|s| s == source))
            .map_or(usize::MAX, |p| p + 1)
    }
}

/// One source's current statement about one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub source: String,
    pub release: String,
    pub upstream_version: String,
    pub value: Value,
    pub labels: Vec<String>,
    pub effective: Option<DateTime<Utc>>,
    pub retrieved: DateTime<Utc>,
}

/// Where a merged value came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub source: String,
    pub release: String,
    pub upstream_version: String,
    /// Which rule chose it, e.g. `group address: folkeregister > spar > dvv`.
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effective: Option<DateTime<Utc>>,
    pub retrieved: DateTime<Utc>,
    /// Values from other sources that lost.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub alternatives: Vec<Alternative>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub source: String,
    pub value: Value,
    pub retrieved: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergedField {
    pub value: Value,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub labels: Vec<String>,
    /// True when sources of equal rank disagree.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub conflict: bool,
    pub provenance: Provenance,
}

/// The merged record of one person (without identifiers, which the store keeps).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MergedRecord {
    pub fields: BTreeMap<String, MergedField>,
}

impl MergedRecord {
    /// The strictest Norwegian address protection in the record.
    pub fn protection(&self) -> Protection {
        self.fields
            .get("protection.level")
            .and_then(|f| f.value.as_str())
            .and_then(Protection::from_label)
            .unwrap_or(Protection::Ugradert)
    }

    /// Field values only, as a JSON object.
    pub fn values(&self) -> serde_json::Map<String, Value> {
        self.fields
            .iter()
            .map(|(k, f)| (k.clone(), f.value.clone()))
            .collect()
    }
}

/// Merges the candidates of every field (`path → one candidate per source`).
/// Registration statuses that say the person does not live in the
/// register's country now.
const NOT_RESIDENT: &[&str] = &["emigrated", "not-resident"];

/// Groups where the register of the person's current residence wins.
const RESIDENCE_GROUPS: &[&str] = &["address", "district"];

pub fn merge(rules: &MergeRules, candidates: &BTreeMap<String, Vec<Candidate>>) -> MergedRecord {
    let mut record = MergedRecord::default();
    // Sources that say the person has left their country: for a person
    // registered in two countries, the register of current residence wins
    // the address, whatever the configured order.
    let left: Vec<&str> = candidates
        .get("status")
        .into_iter()
        .flatten()
        .filter(|c| c.value.as_str().is_some_and(|s| NOT_RESIDENT.contains(&s)))
        .map(|c| c.source.as_str())
        .collect();
    for (path, list) in candidates {
        let group = fields::group_of(path);
        let residence = RESIDENCE_GROUPS.contains(&group);
        let rank = |source: &str| {
            let demoted = residence && source != OVERRIDE && left.contains(&source);
            (demoted, rules.rank(group, source))
        };
        let mut with_value: Vec<&Candidate> = list.iter().filter(|c| !c.value.is_null()).collect();
        if with_value.is_empty() {
            continue;
        }
        with_value.sort_by(|a, b| {
            rank(&a.source)
                .cmp(&rank(&b.source))
                .then(b.effective.cmp(&a.effective))
                .then(a.source.cmp(&b.source))
        });
        let best = with_value[0];
        let conflict = with_value.iter().skip(1).any(|c| {
            rank(&c.source) == rank(&best.source)
                && c.effective == best.effective
                && c.value != best.value
        });
        let order = rules
            .groups
            .get(group)
            .map_or_else(|| "any source".to_string(), |o| o.join(" > "));
        let rule = if best.source == OVERRIDE {
            format!(
                "manual override {} wins over every source until it ends (`folkhub overrides list`)",
                best.release
            )
        } else {
            // A source the rules do not name (a vendor's connector the
            // operator has not ranked) comes after every named one; say so
            // instead of naming an order it is not in.
            let unranked = rules.rank(group, &best.source) == usize::MAX;
            format!(
                "group {group}: {order}{}, then newest effective time{}",
                if residence {
                    " (a register that says the person left its country ranks last)"
                } else {
                    ""
                },
                if unranked {
                    format!(
                        "; {} is not ranked for {group} ([merge.groups] in folkhub.toml) and comes after the sources named",
                        best.source
                    )
                } else {
                    String::new()
                }
            )
        };
        record.fields.insert(
            path.clone(),
            MergedField {
                value: best.value.clone(),
                labels: best.labels.clone(),
                conflict,
                provenance: Provenance {
                    source: best.source.clone(),
                    release: best.release.clone(),
                    upstream_version: best.upstream_version.clone(),
                    rule,
                    effective: best.effective,
                    retrieved: best.retrieved,
                    alternatives: with_value[1..]
                        .iter()
                        .map(|c| Alternative {
                            source: c.source.clone(),
                            value: c.value.clone(),
                            retrieved: c.retrieved,
                        })
                        .collect(),
                },
            },
        );
    }
    // Location fields carry the person's protection markers from every
    // register, whichever source a field came from: the strictest NO
    // grading, SE sekretessmarkering and skyddad folkbokföring, FI
    // turvakielto.
    let person_labels = record.person_labels();
    if !person_labels.is_empty() {
        for (path, field) in record.fields.iter_mut() {
            if fields::lookup(path).is_some_and(|f| f.location) {
                field.labels = labels::merge(&field.labels, &person_labels);
            }
        }
    }
    record
}

impl MergedRecord {
    /// The person's protection markers, from every register: the strictest
    /// NO grading, SE sekretessmarkering and skyddad folkbokföring, FI
    /// turvakielto. They protect every location field of the record, and
    /// every location value the person's history shows, from the moment
    /// they apply.
    pub fn person_labels(&self) -> Vec<String> {
        let mut person_labels = Vec::new();
        let protection = self.protection();
        if protection != Protection::Ugradert {
            person_labels.push(protection.as_str().to_string());
        }
        for (flag, marker) in [
            ("protection.se-secrecy", labels::SE_SECRECY),
            ("protection.se-protected-registration", labels::SE_PROTECTED),
            ("protection.fi-non-disclosure", labels::FI_NON_DISCLOSURE),
        ] {
            if self
                .fields
                .get(flag)
                .is_some_and(|f| f.value == Value::Bool(true))
            {
                person_labels.push(marker.to_string());
            }
        }
        person_labels
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn candidate(source: &str, value: Value, effective: Option<&str>) -> Candidate {
        Candidate {
            source: source.into(),
            release: "1.0.0".into(),
            upstream_version: "v1".into(),
            value,
            labels: vec![],
            effective: effective.map(|e| e.parse().unwrap()),
            retrieved: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    /// A vendor's connector the operator has not ranked comes last, and its
    /// provenance says so; once ranked in the config, it wins by its rank.
    #[test]
    fn an_unranked_source_comes_last_and_provenance_says_so() {
        let mut c = BTreeMap::new();
        c.insert(
            "contact.email".to_string(),
            vec![candidate("acme-krr", json!("a@example.invalid"), None)],
        );
        let rules = MergeRules::default();
        let rule = &merge(&rules, &c).fields["contact.email"].provenance.rule;
        assert!(
            rule.contains("krr > dvv") && rule.contains("acme-krr is not ranked for contact"),
            "{rule}"
        );
        c.get_mut("contact.email").unwrap().push(candidate(
            "krr",
            json!("k@example.invalid"),
            None,
        ));
        assert_eq!(
            merge(&rules, &c).fields["contact.email"].value,
            json!("k@example.invalid")
        );
        let mut ranked = rules.clone();
        ranked
            .groups
            .insert("contact".into(), vec!["acme-krr".into(), "krr".into()]);
        let field = &merge(&ranked, &c).fields["contact.email"];
        assert_eq!(field.value, json!("a@example.invalid"));
        assert!(
            !field.provenance.rule.contains("not ranked"),
            "{}",
            field.provenance.rule
        );
    }

    #[test]
    fn ranked_source_wins_and_alternatives_are_kept() {
        let mut c = BTreeMap::new();
        c.insert(
            "name.family".to_string(),
            vec![
                candidate("spar", json!("Svensson"), Some("2025-01-01T00:00:00Z")),
                candidate("folkeregister", json!("Hansen"), None),
            ],
        );
        let r = merge(&MergeRules::default(), &c);
        let f = &r.fields["name.family"];
        assert_eq!(f.value, json!("Hansen"));
        assert_eq!(f.provenance.alternatives.len(), 1);
        assert!(!f.conflict);
    }

    #[test]
    fn retracted_values_do_not_win_and_equal_rank_disagreement_is_a_conflict() {
        let mut c = BTreeMap::new();
        c.insert(
            "death.date".to_string(),
            vec![candidate("folkeregister", Value::Null, None)],
        );
        c.insert(
            "contact.email".to_string(),
            vec![
                candidate("x", json!("a@x"), None),
                candidate("y", json!("b@y"), None),
            ],
        );
        let r = merge(&MergeRules::default(), &c);
        assert!(!r.fields.contains_key("death.date"));
        assert!(r.fields["contact.email"].conflict);
    }

    #[test]
    fn the_register_of_current_residence_wins_the_address() {
        let mut c = BTreeMap::new();
        c.insert(
            "status".to_string(),
            vec![
                candidate("folkeregister", json!("emigrated"), None),
                candidate("spar", json!("resident"), None),
            ],
        );
        c.insert(
            "address.residential".to_string(),
            vec![
                candidate(
                    "folkeregister",
                    json!({"kind": "street", "city": "OSLO"}),
                    None,
                ),
                candidate(
                    "spar",
                    json!({"kind": "postal", "lines": ["Storgatan 1"]}),
                    None,
                ),
            ],
        );
        c.insert(
            "name.family".to_string(),
            vec![
                candidate("folkeregister", json!("HANSEN"), None),
                candidate("spar", json!("Hansen"), None),
            ],
        );
        let r = merge(&MergeRules::default(), &c);
        assert_eq!(r.fields["address.residential"].provenance.source, "spar");
        assert!(
            r.fields["address.residential"]
                .provenance
                .rule
                .contains("left its country")
        );
        // Other groups keep the configured order.
        assert_eq!(r.fields["name.family"].provenance.source, "folkeregister");
        // Back home: the configured order again.
        c.insert(
            "status".to_string(),
            vec![candidate("folkeregister", json!("resident"), None)],
        );
        let r = merge(&MergeRules::default(), &c);
        assert_eq!(
            r.fields["address.residential"].provenance.source,
            "folkeregister"
        );
    }

    #[test]
    fn location_fields_carry_protection() {
        let mut c = BTreeMap::new();
        c.insert(
            "protection.level".to_string(),
            vec![candidate("folkeregister", json!("FORTROLIG"), None)],
        );
        c.insert(
            "address.residential".to_string(),
            vec![candidate("folkeregister", json!({"kind": "street"}), None)],
        );
        c.insert(
            "name.given".to_string(),
            vec![candidate("folkeregister", json!("KARI"), None)],
        );
        let r = merge(&MergeRules::default(), &c);
        assert_eq!(
            r.fields["address.residential"].labels,
            vec!["FORTROLIG".to_string()]
        );
        assert!(r.fields["name.given"].labels.is_empty());
    }
}
