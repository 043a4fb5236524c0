//! Person data: by ID, batch, search, history, the change sequence and
//! FHIR `Patient`. Every handler shapes what it returns by the caller's
//! legal basis (withheld fields are listed, never sent) and writes one
//! access-log entry per person returned before it answers.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use folkhub_core::access;
use folkhub_read::{
    AccessSink, BatchAnswer, BundleEntry, BundleSearch, Changes, History, PatientBundle,
    PersonRequest, PersonView, ReadError, Reader, SearchPage, Selection, patient, person_view,
};
use folkhub_store::{AccessEntry, Search, StoredPerson};
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

/// Parses `fields=` (or the body's list) as a [`Selection`].
fn selection<'a>(
    items: Option<impl Iterator<Item = &'a str>>,
    field: &str,
) -> Result<Option<Selection>, ApiError> {
    Selection::parse(items).map_err(|message| ApiError::bad("unknown-field", field, message))
}

/// The API's access-log sink: charges the client's person quota, then
/// writes through the group-commit writer.
struct ApiLog<'a> {
    state: &'a ApiState,
    caller: &'a Caller,
}

#[async_trait::async_trait]
impl AccessSink for ApiLog<'_> {
    async fn write(&self, entries: Vec<AccessEntry>) -> Result<(), ReadError> {
        let persons = entries
            .iter()
            .filter(|e| e.person != AccessEntry::SEARCH)
            .count();
        self.state.quotas.charge(
            self.caller.client.id,
            self.caller.client.persons_per_minute,
            persons,
        );
        self.state
            .access_log
            .write(entries)
            .await
            .map_err(|e| ReadError::Log(e.to_string()))
    }
}

impl Caller {
    /// The caller as the read model's reader.
    fn reader(&self) -> Reader<'_> {
        Reader {
            client: &self.client.name,
            basis: &self.basis,
            purpose: &self.client.purpose,
        }
    }
}

/// A read's failure as an answer: no log entry, no person data.
pub(crate) fn read_error(e: ReadError) -> ApiError {
    match e {
        ReadError::Store(e) => ApiError::internal(e),
        ReadError::Log(e) => {
            tracing::error!("access log: {e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "access-log-unavailable",
                "person data is not served while the access log cannot be written; try again later",
            )
        }
        ReadError::Refused(e) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota-exceeded", e),
    }
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
pub(crate) async fn log_entries(
    state: &ApiState,
    caller: &Caller,
    endpoint: &str,
    reads: Vec<(i64, Vec<String>, Option<String>)>,
) -> Result<(), ApiError> {
    let reader = caller.reader();
    let entries = reads
        .into_iter()
        .map(|(person, fields, criteria)| reader.entry(endpoint, person, fields, criteria))
        .collect();
    ApiLog { state, caller }
        .write(entries)
        .await
        .map_err(read_error)
}

/// An ID as the API takes it: exactly the ID, nothing around or inside it
/// that is not part of it (the ID library forgives surrounding spaces for
/// people typing at a shell; a program sending `ID\n` has a bug it should
/// hear about, and two spellings of one ID must not pass two filters).
pub(crate) fn parse_id(text: &str, field: &str) -> Result<folkhub_core::ids::PersonId, ApiError> {
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
    responses((status = 200, description = "The person as the client's legal basis lets it see it. A client that may fetch (`clients add --fetch`) gets a person the store does not hold yet from the registers, within `server.fetch_deadline`", body = crate::openapi::Person),
        (status = 400, description = "Malformed ID, unknown field or parameter", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such person in the store (nor, for a client that may fetch, in the registers that serve the ID)", body = crate::openapi::ErrorBody),
        (status = 503, description = "A fetch found the registers unavailable or their budget spent (`register-unavailable`, `over-budget`)", body = crate::openapi::ErrorBody),
        (status = 504, description = "A fetch did not finish within `server.fetch_deadline`; it goes on (`fetch-timeout`)", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors, crate::openapi::LogErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn get_person(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam(id): PathParam<String>,
    QueryParams(query): QueryParams<PersonQuery>,
) -> Result<Json<PersonView>, ApiError> {
    let provenance = flag(query.provenance.as_deref(), "provenance")?;
    let selection = selection(query.fields.as_deref().map(|f| f.split(',')), "fields")?;
    let parsed = parse_id(&id, "id")?;
    let request = PersonRequest {
        provenance,
        selection: selection.as_ref(),
    };
    let log = ApiLog {
        state: &state,
        caller: &caller,
    };
    let reader = caller.reader();
    let read = || {
        folkhub_read::read_person(
            state.store.as_ref(),
            &log,
            &reader,
            "GET /v1/persons/{id}",
            &parsed.value,
            request,
        )
    };
    let mut view = read().await.map_err(read_error)?;
    // Fetch on miss: a client that may fetch gets a person the store does
    // not hold yet from the registers, within the deadline.
    if view.is_none()
        && caller.client.may_fetch
        && state.fetch.is_some()
        && fetch_now(&state, &caller, &parsed).await?.found
    {
        view = read().await.map_err(read_error)?;
    }
    Ok(Json(view.ok_or_else(not_found)?))
}

/// Asks the registers about `id` for the caller now, waiting at most
/// `server.fetch_deadline` (the lookup goes on after it).
async fn fetch_now(
    state: &ApiState,
    caller: &Caller,
    id: &folkhub_core::ids::PersonId,
) -> Result<crate::Fetched, ApiError> {
    let Some(fetcher) = &state.fetch else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "fetch-unavailable",
            "this server does not ask the registers (it runs without connectors); read stored persons",
        ));
    };
    let deadline = state.fetch_deadline;
    match tokio::time::timeout(deadline, fetcher.fetch(id, &caller.client.name)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "fetch-timeout",
            format!(
                "the registers did not answer within {} s; the lookup goes on, so ask again in a moment",
                deadline.as_secs_f64()
            ),
        )),
        Ok(Ok(fetched)) => Ok(fetched),
        Ok(Err(e)) => Err(register_error(e)),
    }
}

/// Refresh and the registers' search are for clients created with `--fetch`.
pub(crate) fn may_ask_registers(caller: &Caller) -> Result<(), ApiError> {
    if caller.client.may_fetch {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "fetch-not-allowed",
            "this client may not have the registers asked; an admin allows it with `folkhub clients add NAME --fetch`",
        ))
    }
}

/// A search by name needs a basis that reads names and birth dates.
pub(crate) fn reads_names(caller: &Caller) -> Result<(), ApiError> {
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
    Ok(())
}

/// Why the registers gave no answer, as the API says it.
pub(crate) fn register_error(e: crate::FetchError) -> ApiError {
    match e {
        crate::FetchError::NoConnector(scheme) if scheme == "search" => ApiError::new(
            StatusCode::NOT_FOUND,
            "no-register",
            "no register this server asks can search by identifying details; search the store with GET /v1/persons",
        ),
        crate::FetchError::NoConnector(scheme) => ApiError::new(
            StatusCode::NOT_FOUND,
            "no-register",
            format!(
                "no register this server asks looks up {scheme} IDs; only stored persons can be read"
            ),
        ),
        crate::FetchError::Unavailable(why) => {
            tracing::warn!("registers: {why}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "register-unavailable",
                "the registers that could answer could not be asked now; try again later",
            )
        }
        crate::FetchError::OverBudget(why) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "over-budget",
            format!("{why}; the operator must raise the budget before more lookups are made"),
        ),
        crate::FetchError::BadQuery(why) => ApiError::bad("invalid-search", "family", why),
    }
}

/// `POST /v1/persons/{id}/refresh`: the registers asked about a person
/// now, past any cache; answers the person as stored afterwards.
#[utoipa::path(post, path = "/v1/persons/{id}/refresh", tag = "persons",
    params(("id" = String, Path, pattern = r"^(no:|se:|fi:)?[0-9]{6}[0-9A-Y+-]{4,7}$", description = "Any of the person's IDs")),
    responses((status = 200, description = "The person as the registers gave them now, as the client's legal basis lets it see it", body = crate::openapi::Person),
        (status = 400, description = "Malformed ID", body = crate::openapi::ErrorBody),
        (status = 404, description = "No register that serves the ID knows the person (`person-not-found`), or none serves its scheme (`no-register`)", body = crate::openapi::ErrorBody),
        (status = 503, description = "The registers are unavailable or their budget is spent", body = crate::openapi::ErrorBody),
        (status = 504, description = "The registers did not answer within `server.fetch_deadline`; the lookup goes on", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors, crate::openapi::LogErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn refresh(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam(id): PathParam<String>,
) -> Result<Json<PersonView>, ApiError> {
    may_ask_registers(&caller)?;
    let parsed = parse_id(&id, "id")?;
    if !fetch_now(&state, &caller, &parsed).await?.found {
        return Err(not_found());
    }
    let view = folkhub_read::read_person(
        state.store.as_ref(),
        &ApiLog {
            state: &state,
            caller: &caller,
        },
        &caller.reader(),
        "POST /v1/persons/{id}/refresh",
        &parsed.value,
        PersonRequest::default(),
    )
    .await
    .map_err(read_error)?
    .ok_or_else(not_found)?;
    Ok(Json(view))
}

/// A batch request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1,000 IDs (any country, optionally prefixed `no:`, `se:`, `fi:`).
    #[schema(min_items = 1, max_items = 1000)]
    ids: Vec<String>,
    /// Fields or field groups to return; all when left out.
    #[serde(default)]
    fields: Option<Vec<String>>,
    #[serde(default)]
    #[schema(default = false)]
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
) -> Result<Json<BatchAnswer>, ApiError> {
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
    let selection = selection(
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
                        person_view(&person, &basis, provenance, selection.as_ref());
                    out.requested = asked;
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
    let (persons, reads): (Vec<PersonView>, Vec<(i64, Vec<String>)>) = shaped.into_iter().unzip();
    log_reads(&state, &caller, "POST /v1/persons/batch", reads).await?;
    Ok(Json(BatchAnswer {
        persons,
        not_found: missing,
    }))
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
) -> Result<Json<SearchPage>, ApiError> {
    let provenance = flag(q.provenance.as_deref(), "provenance")?;
    let selection = selection(q.fields.as_deref().map(|f| f.split(',')), "fields")?;
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
            reads_names(&caller)?;
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
    let visible =
        |person: &folkhub_store::StoredPerson| access::findable(&person.record, &caller.basis);
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
        let (out, returned) = person_view(person, &caller.basis, provenance, selection.as_ref());
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
    Ok(Json(SearchPage { persons, next }))
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
) -> Result<Json<History>, ApiError> {
    let parsed = parse_id(&id, "id")?;
    let history = folkhub_read::read_history(
        state.store.as_ref(),
        &ApiLog {
            state: &state,
            caller: &caller,
        },
        &caller.reader(),
        "GET /v1/persons/{id}/history",
        &parsed.value,
    )
    .await
    .map_err(read_error)?
    .ok_or_else(not_found)?;
    Ok(Json(history))
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
) -> Result<Json<Changes>, ApiError> {
    let since = position(query.since.as_deref(), "since")?;
    let limit = limit(query.limit.as_deref(), 1000, CHANGES_PAGE_MAX)?;
    let changes = folkhub_read::read_changes(
        state.store.as_ref(),
        &ApiLog {
            state: &state,
            caller: &caller,
        },
        &caller.reader(),
        "GET /v1/changes",
        since,
        limit,
    )
    .await
    .map_err(read_error)?;
    Ok(Json(changes))
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
    let resource = folkhub_read::read_patient(
        &ApiLog {
            state: &state,
            caller: &caller,
        },
        &caller.reader(),
        "GET /fhir/Patient/{key}",
        &person,
    )
    .await
    .map_err(read_error)?;
    Ok(Json(resource))
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
) -> Result<Json<PatientBundle>, ApiError> {
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
        entries.push(BundleEntry {
            full_url: format!("Patient/{}", p.key),
            resource,
            search: BundleSearch {
                mode: "match".into(),
            },
        });
        reads.push((p.key, returned));
    }
    log_reads(&state, &caller, "GET /fhir/Patient", reads).await?;
    Ok(Json(PatientBundle {
        resource_type: "Bundle".into(),
        r#type: "searchset".into(),
        total: entries.len() as u64,
        entry: entries,
    }))
}
