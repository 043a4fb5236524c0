//! The shapes a reader gets: typed, serialised as the API sends them and
//! described in its OpenAPI document by the same types.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use folkhub_core::access::{self, LegalBasis, Withholding};
use folkhub_core::fields;
use folkhub_core::merge::Provenance;
use folkhub_store::{PersonChange, StoredId, StoredPerson};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Why a field was withheld: the legal basis does not cover its group, or
/// the value is protected beyond the basis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Withheld {
    OutsideBasis,
    Protected,
}

impl From<Withholding> for Withheld {
    fn from(w: Withholding) -> Withheld {
        match w {
            Withholding::OutsideBasis => Withheld::OutsideBasis,
            Withholding::Protected => Withheld::Protected,
        }
    }
}

/// A unified person record as the reader's legal basis lets them see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = Person)]
pub struct PersonView {
    /// The store's key of the person (stable; also the FHIR Patient id).
    pub key: i64,
    /// Every identifier, active first; old ones keep resolving.
    pub ids: Vec<StoredId>,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
    /// Field path → value (see docs/fields.md for the shapes).
    #[schema(value_type = BTreeMap<String, Object>)]
    pub fields: BTreeMap<String, Value>,
    /// Field path → confidentiality labels.
    pub labels: BTreeMap<String, Vec<String>>,
    /// Field path → why it is not in `fields`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub withheld: BTreeMap<String, Withheld>,
    /// Fields where sources of equal rank disagree.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// With `provenance=true`: field path → source, release, upstream
    /// version, the rule that chose it, times and the values that lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, Object>>)]
    pub provenance: Option<BTreeMap<String, Provenance>>,
    /// Relative's ID → their key, for the relatives the store holds
    /// (a single person's read).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub related: BTreeMap<String, i64>,
    /// In a batch: the requested IDs that found this person.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requested: Vec<String>,
}

/// One change of a merged record, as the reader may see it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub seq: i64,
    /// In the change sequence (`/v1/changes`): whose record changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub person: Option<i64>,
    pub version: i64,
    pub changed_at: DateTime<Utc>,
    pub reason: String,
    /// Field path → `{from, to}`.
    #[schema(value_type = BTreeMap<String, Object>)]
    pub changes: serde_json::Map<String, Value>,
    /// Field path → why its change is not shown.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub withheld: BTreeMap<String, Withheld>,
}

/// A person's history, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct History {
    pub key: i64,
    pub history: Vec<HistoryEntry>,
}

/// A page of the change sequence of every record.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Changes {
    pub changes: Vec<HistoryEntry>,
    /// The `since` of the next request.
    pub next: i64,
    /// True when this page was the last change there is.
    pub caught_up: bool,
}

/// A page of a search.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SearchPage {
    pub persons: Vec<PersonView>,
    /// Pass unchanged as `after` for the next page (an opaque cursor,
    /// valid for this client and these criteria); null on the last page.
    pub next: Option<String>,
}

/// A person a search of the registers found, as the reader's legal basis
/// lets it see them. Not stored: follow an ID of it (`PUT
/// /v1/follows/{id}`) to keep the person.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SearchHit {
    /// The person's IDs as the register gives them, active first.
    pub ids: Vec<StoredId>,
    /// Field path → value.
    #[schema(value_type = BTreeMap<String, Object>)]
    pub fields: BTreeMap<String, Value>,
    /// Field path → confidentiality labels.
    pub labels: BTreeMap<String, Vec<String>>,
    /// Field path → why it is not in `fields`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub withheld: BTreeMap<String, Withheld>,
    /// The registers that found the person.
    pub sources: Vec<String>,
}

/// The answer to a search of the registers.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RegisterSearch {
    /// `hits`: every person that matches is in `hits` (possibly none);
    /// `narrow`: more match than `limit`, and none is shown: add given
    /// names, a postal code or a municipality.
    pub outcome: SearchOutcomeKind,
    pub hits: Vec<SearchHit>,
    /// With `narrow`: how many match, when a register said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<u32>,
    /// With `narrow`: what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The registers asked.
    pub registers: Vec<String>,
}

/// What a search of the registers came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SearchOutcomeKind {
    Hits,
    Narrow,
}

/// A register's hit as a reader may see it, and the paths it shows.
pub fn search_hit(
    ids: Vec<StoredId>,
    record: &folkhub_core::merge::MergedRecord,
    sources: Vec<String>,
    basis: &LegalBasis,
    selection: Option<&Selection>,
) -> (SearchHit, Vec<String>) {
    let shaped = shape(record, basis, selection, false);
    let shown = shaped.values.keys().cloned().collect();
    (
        SearchHit {
            ids,
            fields: shaped.values,
            labels: shaped.labels,
            withheld: shaped.withheld,
            sources,
        },
        shown,
    )
}

/// The answer to a batch.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BatchAnswer {
    /// One per person found, however many of its IDs were asked for.
    pub persons: Vec<PersonView>,
    /// Requested IDs no stored person has.
    pub not_found: Vec<String>,
}

/// A FHIR searchset Bundle of Patients.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PatientBundle {
    #[serde(rename = "resourceType")]
    #[schema(example = "Bundle")]
    pub resource_type: String,
    #[schema(example = "searchset")]
    pub r#type: String,
    pub total: u64,
    pub entry: Vec<BundleEntry>,
}

/// One Patient of a Bundle.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BundleEntry {
    #[serde(rename = "fullUrl")]
    pub full_url: String,
    /// A FHIR R4 Patient (http://hl7.org/fhir/R4/patient.html).
    #[schema(value_type = Object)]
    pub resource: Value,
    pub search: BundleSearch,
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct BundleSearch {
    #[schema(example = "match")]
    pub mode: String,
}

/// The fields a request selected (`fields=`): catalogue paths or groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection(BTreeSet<String>);

impl Selection {
    /// Parses `a,b` (or a list); `None` selects everything. The error
    /// says which item is neither a field nor a group, and what the groups
    /// are.
    pub fn parse<'a>(
        items: Option<impl Iterator<Item = &'a str>>,
    ) -> Result<Option<Selection>, String> {
        let Some(items) = items else {
            return Ok(None);
        };
        let mut out = BTreeSet::new();
        for item in items.map(str::trim).filter(|s| !s.is_empty()) {
            let known =
                fields::lookup(item).is_some() || fields::CATALOGUE.iter().any(|f| f.group == item);
            if !known {
                let groups: BTreeSet<&str> = fields::CATALOGUE.iter().map(|f| f.group).collect();
                return Err(format!(
                    "{item:?} is neither a field nor a field group; groups: {} (fields: see docs/fields.md)",
                    groups.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            out.insert(item.to_string());
        }
        if out.is_empty() {
            return Err(
                "name at least one field or group, or leave the parameter out for all".into(),
            );
        }
        Ok(Some(Selection(out)))
    }

    fn takes(&self, path: &str) -> bool {
        self.0.contains(path) || self.0.contains(fields::group_of(path))
    }
}

/// A person as a reader may see it, and the field paths it carries (what
/// the access log records as read).
pub fn person_view(
    person: &StoredPerson,
    basis: &LegalBasis,
    provenance: bool,
    selection: Option<&Selection>,
) -> (PersonView, Vec<String>) {
    let shaped = shape(&person.record, basis, selection, provenance);
    let returned: Vec<String> = shaped.values.keys().cloned().collect();
    (
        PersonView {
            key: person.key,
            ids: person.ids.clone(),
            version: person.version,
            updated_at: person.updated_at,
            fields: shaped.values,
            labels: shaped.labels,
            withheld: shaped.withheld,
            conflicts: shaped.conflicts,
            provenance: provenance.then_some(shaped.provenance),
            related: BTreeMap::new(),
            requested: Vec::new(),
        },
        returned,
    )
}

/// A record as a reader may see it, split the way answers carry it.
struct Shaped {
    values: BTreeMap<String, Value>,
    labels: BTreeMap<String, Vec<String>>,
    withheld: BTreeMap<String, Withheld>,
    conflicts: Vec<String>,
    provenance: BTreeMap<String, Provenance>,
}

/// The fields of `record` the reader may see (and asked for), and those
/// withheld with why; provenance only when asked for.
fn shape(
    record: &folkhub_core::merge::MergedRecord,
    basis: &LegalBasis,
    selection: Option<&Selection>,
    provenance: bool,
) -> Shaped {
    let view = access::view(record, basis);
    let wanted = |path: &str| selection.is_none_or(|s| s.takes(path));
    let mut out = Shaped {
        values: BTreeMap::new(),
        labels: BTreeMap::new(),
        withheld: BTreeMap::new(),
        conflicts: Vec::new(),
        provenance: BTreeMap::new(),
    };
    for (path, field) in view.fields.into_iter().filter(|(p, _)| wanted(p)) {
        if !field.labels.is_empty() {
            out.labels.insert(path.clone(), field.labels);
        }
        if field.conflict {
            out.conflicts.push(path.clone());
        }
        if provenance {
            out.provenance.insert(path.clone(), field.provenance);
        }
        out.values.insert(path, field.value);
    }
    out.withheld = view
        .withheld
        .into_iter()
        .filter(|(p, _)| wanted(p))
        .map(|(p, w)| (p, Withheld::from(w)))
        .collect();
    out
}

/// History entries as a reader may see them (entries of fields outside
/// the basis or protected, then or now, are listed as withheld without
/// values), and the paths whose values they show. `now(person)` gives a
/// person's protection markers today, which protect every location value
/// their history shows.
pub fn history_entries(
    changes: &[PersonChange],
    basis: &LegalBasis,
    now: &dyn Fn(i64) -> Vec<String>,
) -> (Vec<HistoryEntry>, BTreeSet<String>) {
    let mut shown_paths = BTreeSet::new();
    let entries = changes
        .iter()
        .map(|c| {
            let (shown, withheld) = access::view_diff(&c.diff, basis, &now(c.person));
            shown_paths.extend(shown.keys().cloned());
            HistoryEntry {
                seq: c.seq,
                person: None,
                version: c.version,
                changed_at: c.changed_at,
                reason: c.reason.clone(),
                changes: shown,
                withheld: withheld
                    .into_iter()
                    .map(|(p, w)| (p, Withheld::from(w)))
                    .collect(),
            }
        })
        .collect();
    (entries, shown_paths)
}

/// The FHIR R4 `Patient` of a person as a reader may see it, and the
/// field paths it carries.
pub fn patient(person: &StoredPerson, basis: &LegalBasis) -> (Value, Vec<String>) {
    let ids: Vec<(String, String, bool)> = person
        .ids
        .iter()
        .map(|i| (i.scheme.clone(), i.value.clone(), i.active))
        .collect();
    let view = access::view(&person.record, basis);
    let returned = view.fields.keys().cloned().collect();
    (
        folkhub_core::fhir::patient(person.key, &ids, &view),
        returned,
    )
}
