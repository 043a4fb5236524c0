//! Person data: by ID, batch, search, history, the change sequence and
//! FHIR `Patient`. Every handler shapes what it returns by the caller's
//! legal basis (withheld fields are listed, never sent) and writes one
//! access-log entry per person returned before it answers.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use folkhub_core::access::{self, LegalBasis, Withholding};
use folkhub_core::fields;
use folkhub_store::{AccessEntry, PersonChange, Search, StoredPerson};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::extract::{JsonBody, PathParam, QueryParams, flag, limit, position};
use crate::{ApiError, ApiState};

/// The most IDs one batch takes.
pub const BATCH_MAX: usize = 1000;
/// The largest search page.
pub const SEARCH_PAGE_MAX: u32 = 100;
/// The largest page of changes.
pub const CHANGES_PAGE_MAX: u32 = 10_000;

/// The JSON shape of a person, shared by the API and `folkhub person get --json`.
pub fn person_json(person: &StoredPerson, basis: &LegalBasis, provenance: bool) -> Value {
    shape(person, basis, provenance, None).0
}

/// The fields a request selected (`fields=`): catalogue paths or groups.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection(BTreeSet<String>);

impl Selection {
    /// Parses `fields=a,b` (or the body's list); `None` selects everything.
    pub(crate) fn parse<'a>(
        items: Option<impl Iterator<Item = &'a str>>,
        field: &str,
    ) -> Result<Option<Selection>, ApiError> {
        let Some(items) = items else {
            return Ok(None);
        };
        let mut out = BTreeSet::new();
        for item in items.map(str::trim).filter(|s| !s.is_empty()) {
            let known =
                fields::lookup(item).is_some() || fields::CATALOGUE.iter().any(|f| f.group == item);
            if !known {
                let groups: BTreeSet<&str> = fields::CATALOGUE.iter().map(|f| f.group).collect();
                return Err(ApiError::bad(
                    "unknown-field",
                    field,
                    format!(
                        "{item:?} is neither a field nor a field group; groups: {} (fields: see docs/fields.md)",
                        groups.into_iter().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            out.insert(item.to_string());
        }
        if out.is_empty() {
            return Err(ApiError::bad(
                "unknown-field",
                field,
                "name at least one field or group, or leave the parameter out for all",
            ));
        }
        Ok(Some(Selection(out)))
    }

    fn takes(&self, path: &str) -> bool {
        self.0.contains(path) || self.0.contains(fields::group_of(path))
    }
}

/// A person as a reader may see it, and the field paths it carries.
fn shape(
    person: &StoredPerson,
    basis: &LegalBasis,
    provenance: bool,
    selection: Option<&Selection>,
) -> (Value, Vec<String>) {
    let view = access::view(&person.record, basis);
    let wanted = |path: &str| selection.is_none_or(|s| s.takes(path));
    let mut values = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    let mut sources = serde_json::Map::new();
    let mut conflicts = Vec::new();
    for (path, field) in view.fields.iter().filter(|(p, _)| wanted(p)) {
        values.insert(path.clone(), field.value.clone());
        if !field.labels.is_empty() {
            labels.insert(path.clone(), json!(field.labels));
        }
        if field.conflict {
            conflicts.push(path.clone());
        }
        if provenance {
            sources.insert(
                path.clone(),
                serde_json::to_value(&field.provenance).unwrap_or(Value::Null),
            );
        }
    }
    let returned: Vec<String> = values.keys().cloned().collect();
    let mut out = json!({
        "key": person.key,
        "ids": person.ids,
        "version": person.version,
        "updated_at": person.updated_at,
        "fields": values,
        "labels": labels,
    });
    let withheld: BTreeMap<&String, &Withholding> =
        view.withheld.iter().filter(|(p, _)| wanted(p)).collect();
    if !withheld.is_empty() {
        out["withheld"] = json!(withheld);
    }
    if !conflicts.is_empty() {
        out["conflicts"] = json!(conflicts);
    }
    if provenance {
        out["provenance"] = Value::Object(sources);
    }
    (out, returned)
}

/// A person's history as a reader may see it: entries of fields outside
/// the basis or protected (then or now) are listed as withheld, without
/// values.
/// `now`: the person's protection markers today, which protect every
/// location value the history shows.
pub fn history_json(changes: &[PersonChange], basis: &LegalBasis, now: &[String]) -> Value {
    json!({ "history": history_entries(changes, basis, &|_| now.to_vec()).0 })
}

/// History entries and the paths whose values they show; `now(person)`
/// gives a person's protection markers today.
fn history_entries(
    changes: &[PersonChange],
    basis: &LegalBasis,
    now: &dyn Fn(i64) -> Vec<String>,
) -> (Vec<Value>, BTreeSet<String>) {
    let mut shown_paths = BTreeSet::new();
    let entries = changes
        .iter()
        .map(|c| {
            let (shown, withheld) = access::view_diff(&c.diff, basis, &now(c.person));
            shown_paths.extend(shown.keys().cloned());
            let mut entry = json!({
                "seq": c.seq,
                "version": c.version,
                "changed_at": c.changed_at,
                "reason": c.reason,
                "changes": shown,
            });
            if !withheld.is_empty() {
                entry["withheld"] = json!(withheld);
            }
            entry
        })
        .collect();
    (entries, shown_paths)
}

/// The FHIR R4 `Patient` of a person as a reader may see it.
pub fn patient_json(person: &StoredPerson, basis: &LegalBasis) -> Value {
    patient(person, basis).0
}

fn patient(person: &StoredPerson, basis: &LegalBasis) -> (Value, Vec<String>) {
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

/// Writes the access-log entries of one answer; no entry, no answer.
pub(crate) async fn log_reads(
    state: &ApiState,
    caller: &Caller,
    endpoint: &str,
    reads: Vec<(i64, Vec<String>)>,
) -> Result<(), ApiError> {
    log_entries(
        state,
        caller,
        endpoint,
        reads.into_iter().map(|(k, f)| (k, f, None)).collect(),
    )
    .await
}

/// [`log_reads`] with a search's criteria on some entries.
async fn log_entries(
    state: &ApiState,
    caller: &Caller,
    endpoint: &str,
    reads: Vec<(i64, Vec<String>, Option<String>)>,
) -> Result<(), ApiError> {
    let at = chrono::Utc::now();
    let persons = reads
        .iter()
        .filter(|(person, _, _)| *person != AccessEntry::SEARCH)
        .count();
    state
        .quotas
        .charge(caller.client.id, caller.client.persons_per_minute, persons);
    let entries = reads
        .into_iter()
        .map(|(person, fields, criteria)| AccessEntry {
            at,
            client: caller.client.name.clone(),
            basis: caller.client.basis.clone(),
            purpose: caller.client.purpose.clone(),
            person,
            endpoint: endpoint.to_string(),
            fields,
            criteria,
        })
        .collect();
    state.access_log.write(entries).await.map_err(|e| {
        tracing::error!("access log: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "access-log-unavailable",
            "person data is not served while the access log cannot be written; try again later",
        )
    })
}

/// An ID as the API takes it: exactly the ID, nothing around or inside it
/// that is not part of it (the ID library forgives surrounding spaces for
/// people typing at a shell; a program sending `ID\n` has a bug it should
/// hear about, and two spellings of one ID must not pass two filters).
fn parse_id(text: &str, field: &str) -> Result<folkhub_core::ids::PersonId, ApiError> {
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::bad(
            "invalid-id",
            field,
            format!(
                "{field}: {text:?} contains {c:?}; send the ID alone, without spaces, line \
                 breaks or other control characters"
            ),
        ));
    }
    folkhub_core::ids::parse(text).map_err(|e| ApiError::bad("invalid-id", field, e.to_string()))
}

fn not_found() -> ApiError {
    // The same answer whether nobody has the ID or the store holds someone
    // the caller may not learn about.
    ApiError::new(
        StatusCode::NOT_FOUND,
        "person-not-found",
        "no person with this ID is in the store; it may not be synced yet",
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PersonQuery {
    provenance: Option<String>,
    fields: Option<String>,
}

/// `GET /v1/persons/{id}`.
#[utoipa::path(get, path = "/v1/persons/{id}", tag = "persons",
    params(("id" = String, Path, pattern = r"^(no:|se:|fi:)?[0-9]{6}[0-9A-Y+-]{4,7}$", description = "Any of the person's IDs: fødselsnummer, D-number, personnummer, samordningsnummer, HETU (optionally `no:`, `se:`, `fi:`)"),
        ("fields" = Option<String>, Query, description = "Comma-separated fields or field groups to return (docs/fields.md); all when left out"),
        ("provenance" = Option<bool>, Query, description = "Add per-field provenance")),
    responses((status = 200, description = "The person as the client's legal basis lets it see it", body = crate::openapi::Person),
        (status = 400, description = "Malformed ID, unknown field or parameter", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such person in the store", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors, crate::openapi::LogErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn get_person(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam(id): PathParam<String>,
    QueryParams(query): QueryParams<PersonQuery>,
) -> Result<Json<Value>, ApiError> {
    let provenance = flag(query.provenance.as_deref(), "provenance")?;
    let selection = Selection::parse(query.fields.as_deref().map(|f| f.split(',')), "fields")?;
    let parsed = parse_id(&id, "id")?;
    let person = state
        .store
        .person(&parsed.value)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    let (mut out, returned) = shape(&person, &caller.basis, provenance, selection.as_ref());
    // Relations link persons: the store's key of each related person it
    // holds (any of their IDs resolves), for the relations the caller sees.
    let mut related = serde_json::Map::new();
    let relative_ids: BTreeSet<String> = out["fields"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(path, _)| path.starts_with("relations."))
        .flat_map(|(_, value)| value.as_array().cloned().unwrap_or_default())
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    if !relative_ids.is_empty() {
        let ids: Vec<String> = relative_ids.into_iter().collect();
        for (rid, found) in state
            .store
            .persons(&ids)
            .await
            .map_err(ApiError::internal)?
        {
            if let Some(p) = found {
                related.insert(rid, json!(p.key));
            }
        }
    }
    if !related.is_empty() {
        out["related"] = Value::Object(related);
    }
    log_reads(
        &state,
        &caller,
        "GET /v1/persons/{id}",
        vec![(person.key, returned)],
    )
    .await?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    ids: Vec<String>,
    #[serde(default)]
    fields: Option<Vec<String>>,
    #[serde(default)]
    provenance: bool,
}

/// `POST /v1/persons/batch`: up to 1,000 IDs in one request.
#[utoipa::path(post, path = "/v1/persons/batch", tag = "persons",
    request_body(content = crate::openapi::BatchRequest, content_type = "application/json"),
    responses((status = 200, description = "The persons found (one per person) and the IDs not found", body = crate::openapi::BatchAnswer),
        (status = 400, description = "No IDs, more than 1,000, a malformed ID (field `ids[N]`) or an unknown field", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors, crate::openapi::LogErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn batch(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<BatchRequest>,
) -> Result<Json<Value>, ApiError> {
    if request.ids.is_empty() {
        return Err(ApiError::bad(
            "invalid-parameter",
            "ids",
            "ids is empty: send 1 to 1000 IDs",
        ));
    }
    if request.ids.len() > BATCH_MAX {
        return Err(ApiError::bad(
            "batch-too-large",
            "ids",
            format!(
                "{} IDs: send at most {BATCH_MAX} per request",
                request.ids.len()
            ),
        ));
    }
    let selection = Selection::parse(
        request
            .fields
            .as_ref()
            .map(|f| f.iter().map(String::as_str)),
        "fields",
    )?;
    let mut normalised = Vec::with_capacity(request.ids.len());
    for (i, id) in request.ids.iter().enumerate() {
        normalised.push(parse_id(id, &format!("ids[{i}]"))?.value);
    }
    let found = state
        .store
        .persons(&normalised)
        .await
        .map_err(ApiError::internal)?;
    // One answer per person, however many of its IDs were asked for.
    let mut by_key: BTreeMap<i64, (StoredPerson, Vec<String>)> = BTreeMap::new();
    let mut order = Vec::new();
    let mut missing = Vec::new();
    for ((_, person), asked) in found.into_iter().zip(&request.ids) {
        match person {
            Some(p) => {
                let entry = by_key.entry(p.key).or_insert_with(|| {
                    order.push(p.key);
                    (p, Vec::new())
                });
                if !entry.1.contains(asked) {
                    entry.1.push(asked.clone());
                }
            }
            None if !missing.contains(asked) => missing.push(asked.clone()),
            None => {}
        }
    }
    // Shaped on two threads when large (each person is independent).
    let mut work: Vec<(StoredPerson, Vec<String>)> = order
        .into_iter()
        .filter_map(|key| by_key.remove(&key))
        .collect();
    let shape_all = {
        let basis = caller.basis.clone();
        let provenance = request.provenance;
        move |part: Vec<(StoredPerson, Vec<String>)>, selection: Option<Selection>| {
            part.into_iter()
                .map(|(person, asked)| {
                    let (mut out, returned) =
                        shape(&person, &basis, provenance, selection.as_ref());
                    out["requested"] = json!(asked);
                    (out, (person.key, returned))
                })
                .collect::<Vec<_>>()
        }
    };
    let shaped = if work.len() < 200 {
        shape_all(work, selection)
    } else {
        let second = work.split_off(work.len() / 2);
        let (f1, f2) = (shape_all.clone(), shape_all);
        let s2 = selection.clone();
        let other = tokio::task::spawn_blocking(move || f2(second, s2));
        let mut first = tokio::task::spawn_blocking(move || f1(work, selection))
            .await
            .map_err(ApiError::internal)?;
        first.extend(other.await.map_err(ApiError::internal)?);
        first
    };
    let (persons, reads): (Vec<Value>, Vec<(i64, Vec<String>)>) = shaped.into_iter().unzip();
    log_reads(&state, &caller, "POST /v1/persons/batch", reads).await?;
    Ok(Json(json!({ "persons": persons, "not_found": missing })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchQuery {
    id: Option<String>,
    family: Option<String>,
    given: Option<String>,
    birth_date: Option<String>,
    limit: Option<String>,
    after: Option<String>,
    fields: Option<String>,
    provenance: Option<String>,
}

/// `GET /v1/persons?id=PREFIX` or `?family=&birth_date=[&given=]`, paged.
#[utoipa::path(get, path = "/v1/persons", tag = "persons",
    params(("id" = Option<String>, Query, pattern = "^[0-9A-Za-z+-]{6,13}$", description = "The start of an identifier as stored, at least its birth-date part (DDMMYY for NO/FI, YYYYMMDD for SE)"),
        ("family" = Option<String>, Query, description = "The start of the family name (any case); with birth_date"),
        ("given" = Option<String>, Query, description = "The start of a given name (any case)"),
        ("birth_date" = Option<String>, Query, format = Date, description = "YYYY-MM-DD; with family"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Persons per page, 1 to 100 (default 20)"),
        ("after" = Option<String>, Query, description = "The `next` of the previous page of the same search, unchanged (an opaque cursor)"),
        ("fields" = Option<String>, Query, description = "Comma-separated fields or field groups to return"),
        ("provenance" = Option<bool>, Query, description = "Add per-field provenance")),
    responses((status = 200, description = "A page of persons, in key order. Persons whose protection the client may not see past are not found by search (only by their full ID).", body = crate::openapi::SearchPage),
        (status = 400, description = "No or contradicting criteria, a malformed value, a page too large", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors, crate::openapi::LogErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn search(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let provenance = flag(q.provenance.as_deref(), "provenance")?;
    let selection = Selection::parse(q.fields.as_deref().map(|f| f.split(',')), "fields")?;
    let limit = limit(q.limit.as_deref(), 20, SEARCH_PAGE_MAX)?;
    let name_given = q.family.is_some() || q.given.is_some() || q.birth_date.is_some();
    let search = match (&q.id, name_given) {
        (Some(_), true) => {
            return Err(ApiError::bad(
                "invalid-parameter",
                "id",
                "search either by id or by family + birth_date, not both",
            ));
        }
        (Some(prefix), false) => {
            let prefix = prefix.to_uppercase();
            let ok = prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-');
            if !ok || prefix.len() < 6 || prefix.len() > 13 {
                return Err(ApiError::bad(
                    "invalid-id",
                    "id",
                    "id: the start of an identifier as stored, at least its birth-date part: \
                     DDMMYY for Norway and Finland, YYYYMMDD for Sweden (6 to 13 characters)",
                ));
            }
            Search::IdPrefix(prefix)
        }
        (None, true) => {
            if ["name.family", "birth.date"]
                .iter()
                .any(|path| caller.basis.refuses(path, &[]).is_some())
            {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "outside-basis",
                    format!(
                        "legal basis {} does not cover names and birth dates; search by id",
                        caller.basis.name
                    ),
                )
                .on("family"));
            }
            let family = q
                .family
                .as_deref()
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .ok_or_else(|| {
                    ApiError::bad(
                        "missing-parameter",
                        "family",
                        "a name search needs family (the start of the family name) and birth_date",
                    )
                })?;
            let birth_date = q.birth_date.as_deref().ok_or_else(|| {
                ApiError::bad(
                    "missing-parameter",
                    "birth_date",
                    "a name search needs birth_date (YYYY-MM-DD)",
                )
            })?;
            chrono::NaiveDate::parse_from_str(birth_date, "%Y-%m-%d").map_err(|_| {
                ApiError::bad(
                    "invalid-parameter",
                    "birth_date",
                    format!("birth_date={birth_date}: a date YYYY-MM-DD"),
                )
            })?;
            Search::Name {
                family: family.to_string(),
                given: q
                    .given
                    .as_deref()
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string),
                birth_date: birth_date.to_string(),
            }
        }
        (None, false) => {
            return Err(ApiError::bad(
                "missing-parameter",
                "id",
                "search by id=PREFIX (at least the birth-date part) or by family=…&birth_date=YYYY-MM-DD",
            ));
        }
    };
    // The cursor belongs to this client and these criteria (see
    // [`crate::cursor`]); a page starts after the person it names.
    let criteria = match &search {
        Search::IdPrefix(prefix) => json!({ "id": prefix }),
        Search::Name {
            family,
            given,
            birth_date,
        } => json!({ "family": family, "given": given, "birth_date": birth_date }),
    }
    .to_string();
    let cursors = state.cursor_key().await?;
    let after = match q.after.as_deref() {
        None => 0,
        Some(cursor) => cursors
            .open(&caller.client.name, &criteria, cursor)
            .ok_or_else(|| {
                ApiError::bad(
                    "invalid-cursor",
                    "after",
                    "after: not a cursor this search gave this client; pass the `next` of the \
                     previous page of the same search unchanged, or leave after out to start over",
                )
            })?,
    };
    // A search does not find persons whose protection the caller may not
    // see past: they are reached only by their full ID. Visibility comes
    // from the person's markers (every register's, stricter wins), not
    // from which fields happen to be stored: a strengt fortrolig person
    // has no stored location to withhold, and must not be found either.
    // The page is filled from the visible persons only, and `next` is the
    // last of them, so neither the page's size nor its cursor says that a
    // protected person was passed over.
    let visible = |person: &folkhub_store::StoredPerson| {
        caller.basis.covers(&person.record.person_labels())
            && !access::view(&person.record, &caller.basis)
                .withheld
                .values()
                .any(|w| *w == Withholding::Protected)
    };
    let mut shown: Vec<folkhub_store::StoredPerson> = Vec::new();
    let mut from = after;
    let more = loop {
        let found = state
            .store
            .search(&search, from, limit)
            .await
            .map_err(ApiError::internal)?;
        let exhausted = (found.len() as u32) < limit;
        from = found.last().map_or(from, |p| p.key);
        let mut rest = found.into_iter().filter(|p| visible(p));
        while (shown.len() as u32) < limit {
            match rest.next() {
                Some(person) => shown.push(person),
                None => break,
            }
        }
        if (shown.len() as u32) == limit {
            // Full: more may follow (among the rest of this batch or later).
            break rest.next().is_some() || !exhausted;
        }
        if exhausted {
            break false;
        }
    };
    let next = more
        .then(|| {
            shown
                .last()
                .map(|p| cursors.seal(&caller.client.name, &criteria, p.key))
        })
        .flatten();
    let mut persons = Vec::new();
    let mut reads = Vec::new();
    for person in &shown {
        let (out, returned) = shape(person, &caller.basis, provenance, selection.as_ref());
        persons.push(out);
        reads.push((person.key, returned));
    }
    // The search itself is logged with what was asked, whatever it found,
    // and each person it returned as any read is.
    let mut logged = serde_json::from_str::<Value>(&criteria).unwrap_or(Value::Null);
    logged["limit"] = json!(limit);
    logged["continued"] = json!(q.after.is_some());
    logged["returned"] = json!(shown.len());
    log_entries(
        &state,
        &caller,
        "GET /v1/persons",
        std::iter::once((AccessEntry::SEARCH, Vec::new(), Some(logged.to_string())))
            .chain(reads.into_iter().map(|(k, f)| (k, f, None)))
            .collect(),
    )
    .await?;
    Ok(Json(json!({ "persons": persons, "next": next })))
}

/// `GET /v1/persons/{id}/history`.
#[utoipa::path(get, path = "/v1/persons/{id}/history", tag = "persons",
    params(("id" = String, Path, pattern = r"^(no:|se:|fi:)?[0-9]{6}[0-9A-Y+-]{4,7}$", description = "Any of the person's IDs")),
    responses((status = 200, description = "Every change of the merged record, oldest first; changes the basis does not cover are listed as withheld", body = crate::openapi::History),
        (status = 400, description = "Malformed ID", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such person in the store", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors, crate::openapi::LogErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn person_history(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let parsed = parse_id(&id, "id")?;
    let person = state
        .store
        .person(&parsed.value)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    let changes = state
        .store
        .history(person.key)
        .await
        .map_err(ApiError::internal)?;
    let labels = person.record.person_labels();
    let (entries, shown) = history_entries(&changes, &caller.basis, &|_| labels.clone());
    log_reads(
        &state,
        &caller,
        "GET /v1/persons/{id}/history",
        vec![(person.key, shown.into_iter().collect())],
    )
    .await?;
    Ok(Json(json!({ "key": person.key, "history": entries })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangesQuery {
    since: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/changes?since=SEQ&limit=N`: changes of every record after SEQ,
/// as the reader may see them; `next` is the SEQ to ask from next.
#[utoipa::path(get, path = "/v1/changes", tag = "persons",
    params(("since" = Option<i64>, Query, minimum = 0, description = "Changes after this sequence number (0: from the start)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "1 to 10,000 (default 1,000)")),
    responses((status = 200, description = "Changes of every record after `since`, in order", body = crate::openapi::Changes),
        (status = 400, description = "Malformed number or page too large", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors, crate::openapi::LogErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn changes(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    QueryParams(query): QueryParams<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = position(query.since.as_deref(), "since")?;
    let limit = limit(query.limit.as_deref(), 1000, CHANGES_PAGE_MAX)?;
    let list = state
        .store
        .changes_since(since, limit)
        .await
        .map_err(ApiError::internal)?;
    let next = list.last().map_or(since, |c| c.seq);
    // Each person's protection today applies to the locations their
    // changes show, however long ago those changes were made.
    let mut now: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for change in &list {
        if let std::collections::btree_map::Entry::Vacant(slot) = now.entry(change.person) {
            let labels = state
                .store
                .person_by_key(change.person)
                .await
                .map_err(ApiError::internal)?
                .map(|p| p.record.person_labels())
                .unwrap_or_default();
            slot.insert(labels);
        }
    }
    let (mut entries, _) = history_entries(&list, &caller.basis, &|person| {
        now.get(&person).cloned().unwrap_or_default()
    });
    let mut reads: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for (entry, change) in entries.iter_mut().zip(&list) {
        entry["person"] = json!(change.person);
        let shown = reads.entry(change.person).or_default();
        if let Some(map) = entry["changes"].as_object() {
            shown.extend(map.keys().cloned());
        }
    }
    log_reads(
        &state,
        &caller,
        "GET /v1/changes",
        reads
            .into_iter()
            .map(|(k, f)| (k, f.into_iter().collect()))
            .collect(),
    )
    .await?;
    Ok(Json(json!({
        "changes": entries,
        "next": next,
        "caught_up": (list.len() as u32) < limit,
    })))
}

/// `GET /fhir/Patient/{key}`: the resource id is the store's person key.
#[utoipa::path(get, path = "/fhir/Patient/{key}", tag = "fhir",
    params(("key" = String, Path, pattern = "^[0-9]{1,18}$", description = "The Patient id: the person's key")),
    responses((status = 200, description = "A FHIR R4 Patient", body = crate::openapi::Patient),
        (status = 400, description = "Malformed path", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such Patient", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors, crate::openapi::LogErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn fhir_patient(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam(key): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "person-not-found",
            "no such Patient; search by identifier: GET /fhir/Patient?identifier=system|value",
        )
    };
    let key: i64 = key.parse().map_err(|_| not_found())?;
    let person = state
        .store
        .person_by_key(key)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    let (out, returned) = patient(&person, &caller.basis);
    log_reads(
        &state,
        &caller,
        "GET /fhir/Patient/{key}",
        vec![(person.key, returned)],
    )
    .await?;
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatientSearch {
    identifier: Option<String>,
}

/// `GET /fhir/Patient?identifier=system|value`: a searchset Bundle.
#[utoipa::path(get, path = "/fhir/Patient", tag = "fhir",
    params(("identifier" = String, Query, description = "`system|value` or `value`, e.g. urn:oid:2.16.578.1.12.4.1.4.1|03851598730")),
    responses((status = 200, description = "A searchset Bundle with the match, if any", body = crate::openapi::PatientBundle),
        (status = 400, description = "Missing identifier, unknown system or malformed ID", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors, crate::openapi::LogErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn fhir_search(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    QueryParams(query): QueryParams<PatientSearch>,
) -> Result<Json<Value>, ApiError> {
    let Some(identifier) = query.identifier else {
        return Err(ApiError::bad(
            "missing-parameter",
            "identifier",
            "search by identifier=system|value, e.g. identifier=urn:oid:2.16.578.1.12.4.1.4.1|03851598730",
        ));
    };
    // The system is required (docs/api.md): a bare value could be read as
    // more than one country's ID, and FHIR's `|value` means "no system".
    let Some((system, value)) = identifier
        .split_once('|')
        .filter(|(system, _)| !system.is_empty())
    else {
        return Err(ApiError::bad(
            "invalid-parameter",
            "identifier",
            "identifier: give the system and the value, system|value, e.g. \
             urn:oid:2.16.578.1.12.4.1.4.1|03851598730 (the systems are in docs/api.md)",
        ));
    };
    if folkhub_core::fhir::scheme_of(system).is_none() {
        return Err(ApiError::bad(
            "invalid-parameter",
            "identifier",
            format!(
                "identifier system {system:?} is not a Nordic person identifier system this API knows"
            ),
        ));
    }
    let parsed = parse_id(value, "identifier")?;
    let found = state
        .store
        .person(&parsed.value)
        .await
        .map_err(ApiError::internal)?
        .filter(|p| {
            p.ids
                .iter()
                .any(|i| i.value == parsed.value && folkhub_core::fhir::system(&i.scheme) == system)
        });
    let mut entries = Vec::new();
    let mut reads = Vec::new();
    if let Some(p) = &found {
        let (resource, returned) = patient(p, &caller.basis);
        entries.push(
            json!({"fullUrl": format!("Patient/{}", p.key), "resource": resource,
                        "search": {"mode": "match"}}),
        );
        reads.push((p.key, returned));
    }
    log_reads(&state, &caller, "GET /fhir/Patient", reads).await?;
    Ok(Json(json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "entry": entries,
    })))
}
