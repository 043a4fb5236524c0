//! What a reader may see of a merged record: its legal basis decides which
//! field groups it reads and which protection labels it may see past. A
//! field it may not see is left out **and listed as withheld** with the
//! reason, so a reader can tell "withheld" from "the register has nothing".
//!
//! Protection labels merge stricter-wins and travel with the fields they
//! protect (see [`crate::merge`]): a person's NO grading, SE sekretess-
//! markering or skyddad folkbokföring and FI turvakielto are put on every
//! location field of the record, whichever source the field came from. For
//! STRENGT_FORTROLIG(_UTLAND) a reader without the basis therefore gets no
//! address, municipality, statistical unit, district or coordinates at all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fields;
use crate::labels::{self, Protection};
use crate::merge::{MergedField, MergedRecord};

/// A reader's legal basis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalBasis {
    /// The basis's name, e.g. `school`, for logs.
    pub name: String,
    /// Field groups the reader may read (`name`, `address`, ...); empty: all.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The strictest Norwegian address protection whose values the reader
    /// may see (`UGRADERT`: none of them).
    #[serde(default = "ugradert")]
    pub max_protection: Protection,
    /// Other markers the reader may see past: `SEKRETESSMARKERING`,
    /// `SKYDDAD_FOLKBOKFORING`, `TURVAKIELTO`.
    #[serde(default)]
    pub markers: Vec<String>,
}

fn ugradert() -> Protection {
    Protection::Ugradert
}

/// The markers other than the NO grading that protect values.
pub const MARKERS: &[&str] = &[
    labels::SE_SECRECY,
    labels::SE_PROTECTED,
    labels::FI_NON_DISCLOSURE,
];

impl LegalBasis {
    /// Everything, every label: e.g. a health service with a legal basis for
    /// confidential data.
    pub fn full(name: &str) -> LegalBasis {
        LegalBasis {
            name: name.into(),
            groups: vec![],
            max_protection: Protection::StrengtFortroligUtland,
            markers: MARKERS.iter().map(|m| m.to_string()).collect(),
        }
    }

    /// The built-in profiles: `full`, `school` (names, birth, address,
    /// district, relations, contact and language; no protected values),
    /// `benefits` (everything up to FORTROLIG and the foreign secrecy
    /// markers, not STRENGT_FORTROLIG), `directory` (names and birth only).
    pub fn profile(name: &str) -> Option<LegalBasis> {
        let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect();
        Some(match name {
            "full" => LegalBasis::full("full"),
            "school" => LegalBasis {
                name: "school".into(),
                groups: groups(&[
                    "name",
                    "birth",
                    "status",
                    "address",
                    "district",
                    "relations",
                    "contact",
                    "language",
                    "protection",
                ]),
                max_protection: Protection::Ugradert,
                markers: vec![],
            },
            "benefits" => LegalBasis {
                name: "benefits".into(),
                groups: vec![],
                max_protection: Protection::Fortrolig,
                markers: vec![labels::SE_SECRECY.into(), labels::FI_NON_DISCLOSURE.into()],
            },
            "directory" => LegalBasis {
                name: "directory".into(),
                groups: groups(&["name", "birth"]),
                max_protection: Protection::Ugradert,
                markers: vec![],
            },
            _ => return None,
        })
    }

    /// Names of the built-in profiles.
    pub const PROFILES: &'static [&'static str] = &["full", "school", "benefits", "directory"];

    fn reads_group(&self, group: &str) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|g| g == group)
    }

    /// May the reader see a value with these labels?
    pub fn covers(&self, labels: &[String]) -> bool {
        labels
            .iter()
            .all(|label| match Protection::from_label(label) {
                Some(p) => p <= self.max_protection,
                None => self.markers.iter().any(|m| m == label),
            })
    }

    /// Why the reader may not see `path` with `labels`, if it may not.
    pub fn refuses(&self, path: &str, labels: &[String]) -> Option<Withholding> {
        if !self.reads_group(fields::group_of(path)) {
            Some(Withholding::OutsideBasis)
        } else if !self.covers(labels) {
            Some(Withholding::Protected)
        } else {
            None
        }
    }
}

/// Why a field was withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Withholding {
    /// The field's group is outside the reader's legal basis.
    OutsideBasis,
    /// The value carries a protection label the reader's basis does not cover.
    Protected,
}

/// May a search show this person to a reader of `basis`? Not when their
/// protection is beyond it: the person's markers (every register's,
/// stricter wins), or any value withheld as protected. A search finds such
/// a person only by their full ID.
pub fn findable(record: &MergedRecord, basis: &LegalBasis) -> bool {
    basis.covers(&record.person_labels())
        && !view(record, basis)
            .withheld
            .values()
            .any(|w| *w == Withholding::Protected)
}

/// A merged record as one reader may see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    pub fields: BTreeMap<String, MergedField>,
    /// Paths the record has but the reader may not see, and why.
    pub withheld: BTreeMap<String, Withholding>,
}

/// The reader's view of a record.
pub fn view(record: &MergedRecord, basis: &LegalBasis) -> View {
    let mut out = View {
        fields: BTreeMap::new(),
        withheld: BTreeMap::new(),
    };
    for (path, field) in &record.fields {
        match basis.refuses(path, &field.labels) {
            None => {
                out.fields.insert(path.clone(), field.clone());
            }
            Some(why) => {
                out.withheld.insert(path.clone(), why);
            }
        }
    }
    out
}

/// One change of a record's history as a reader may see it: an entry of a
/// `{path: {"from", "to", "from_labels", "to_labels"}}` diff is kept only
/// when the reader may see both sides; otherwise its path is listed as
/// withheld and no value of it is given.
///
/// `now` are the person's protection markers today
/// ([`MergedRecord::person_labels`](crate::merge::MergedRecord::person_labels)):
/// a location value an entry shows is protected by them too, so a person
/// who became protected does not have their earlier addresses read from
/// the history.
pub fn view_diff(
    diff: &Value,
    basis: &LegalBasis,
    now: &[String],
) -> (
    serde_json::Map<String, Value>,
    BTreeMap<String, Withholding>,
) {
    let mut shown = serde_json::Map::new();
    let mut withheld = BTreeMap::new();
    let Some(entries) = diff.as_object() else {
        return (shown, withheld);
    };
    let labels_of = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    for (path, entry) in entries {
        let mut before = labels_of(entry.get("from_labels"));
        let mut after = labels_of(entry.get("to_labels"));
        if fields::lookup(path).is_some_and(|f| f.location) {
            before = labels::merge(&before, now);
            after = labels::merge(&after, now);
        }
        let refused = basis
            .refuses(path, &before)
            .or_else(|| basis.refuses(path, &after));
        match refused {
            None => {
                shown.insert(path.clone(), entry.clone());
            }
            Some(why) => {
                withheld.insert(path.clone(), why);
            }
        }
    }
    (shown, withheld)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::testing::record;
    use serde_json::json;

    #[test]
    fn strengt_fortrolig_hides_every_location_field_and_says_so() {
        let r = record(&[
            ("name.given", json!("KARI")),
            ("protection.level", json!("STRENGT_FORTROLIG")),
            ("address.residential", json!({"kind": "street"})),
            ("address.municipality", json!("0301")),
            ("address.district", json!("030101")),
        ]);
        let school = view(&r, &LegalBasis::profile("school").unwrap());
        assert!(school.fields.contains_key("name.given"));
        assert!(school.fields.contains_key("protection.level"));
        for path in [
            "address.residential",
            "address.municipality",
            "address.district",
        ] {
            assert!(!school.fields.contains_key(path), "{path}");
            assert_eq!(school.withheld[path], Withholding::Protected);
        }
        let benefits = view(&r, &LegalBasis::profile("benefits").unwrap());
        assert!(!benefits.fields.contains_key("address.residential"));
        let full = view(&r, &LegalBasis::full("health"));
        assert!(full.fields.contains_key("address.residential") && full.withheld.is_empty());
        let directory = view(&r, &LegalBasis::profile("directory").unwrap());
        assert_eq!(
            directory.withheld["protection.level"],
            Withholding::OutsideBasis
        );
    }

    #[test]
    fn foreign_markers_protect_location_fields_too() {
        for (flag, marker) in [
            ("protection.se-secrecy", labels::SE_SECRECY),
            ("protection.se-protected-registration", labels::SE_PROTECTED),
            ("protection.fi-non-disclosure", labels::FI_NON_DISCLOSURE),
        ] {
            let r = record(&[
                (flag, json!(true)),
                ("address.residential", json!({"kind": "postal"})),
            ]);
            assert_eq!(
                r.fields["address.residential"].labels,
                vec![marker.to_string()]
            );
            let school = view(&r, &LegalBasis::profile("school").unwrap());
            assert_eq!(
                school.withheld["address.residential"],
                Withholding::Protected
            );
            let allowed = LegalBasis {
                markers: vec![marker.to_string()],
                ..LegalBasis::profile("school").unwrap()
            };
            assert!(view(&r, &allowed).withheld.is_empty());
        }
    }

    #[test]
    fn history_entries_are_shown_only_when_both_sides_are_visible() {
        let diff = json!({
            "name.given": {"from": "KARI", "to": "KARIN"},
            "address.residential": {"from": {"kind": "street"}, "to": {"kind": "street", "street": "B"},
                                     "to_labels": ["FORTROLIG"]},
        });
        let (shown, withheld) = view_diff(&diff, &LegalBasis::profile("school").unwrap(), &[]);
        assert!(shown.contains_key("name.given"));
        assert!(!shown.contains_key("address.residential"));
        assert_eq!(withheld["address.residential"], Withholding::Protected);
    }

    #[test]
    fn a_location_in_the_history_is_protected_by_todays_markers() {
        // The person moved while unprotected, then became protected: the
        // old entry carries no label, but it must not show the address now.
        let diff = json!({
            "address.residential": {"from": null, "to": {"kind": "street", "street": "A"}},
            "name.given": {"from": null, "to": "KARI"},
        });
        let school = LegalBasis::profile("school").unwrap();
        let (shown, withheld) = view_diff(&diff, &school, &["SKYDDAD_FOLKBOKFORING".to_string()]);
        assert!(shown.contains_key("name.given"), "names are not locations");
        assert_eq!(withheld["address.residential"], Withholding::Protected);
        let (shown, _) = view_diff(&diff, &school, &[]);
        assert!(shown.contains_key("address.residential"));
        let full = LegalBasis::full("full");
        let (shown, _) = view_diff(&diff, &full, &["STRENGT_FORTROLIG".to_string()]);
        assert!(shown.contains_key("address.residential"));
    }
}
