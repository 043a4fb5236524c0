//! The admin's routes (clients created with `--admin`) and health.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use folkhub_core::access::LegalBasis;
use folkhub_store::AccessQuery;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::extract::{PathParam, QueryParams, flag, limit, position};
use crate::{ApiError, ApiState};

/// `GET /v1/health`: `ok` or `degraded` (a connector cannot be loaded or
/// its breaker is open) for anyone; with an admin client also persons,
/// contract versions, connectors with circuit breakers and upgrade
/// deadlines.
#[utoipa::path(get, path = "/v1/health", tag = "operations",
    responses((status = 200, description = "The status; with an admin client also persons, contract versions, connectors with circuit breakers and upgrade deadlines", body = crate::openapi::Health),
        (status = 500, description = "The store cannot be read", body = crate::openapi::ErrorBody)))]
pub(crate) async fn health(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let connectors = state.connectors().await?;
    let status = overall(&connectors);
    // The details name connectors, releases and digests: for an admin
    // client (or on the admin listener), not for whoever asks.
    let admin = crate::auth::identify(&state, &headers)
        .await
        .is_ok_and(|c| c.client.admin);
    if !admin {
        return Ok(Json(json!({ "status": status })));
    }
    health_details(&state, status, &connectors).await
}

/// `ok`, or `degraded` when a connector cannot load or its breaker is open.
fn overall(connectors: &[crate::ConnectorStatus]) -> &'static str {
    if connectors
        .iter()
        .any(|c| c.error.is_some() || c.breaker_open)
    {
        "degraded"
    } else {
        "ok"
    }
}

/// The detailed health, as the admin listener serves it.
pub(crate) async fn health_details(
    state: &ApiState,
    status: &str,
    connectors: &[crate::ConnectorStatus],
) -> Result<Json<Value>, ApiError> {
    let persons = state
        .store
        .count_persons()
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({
        "status": status,
        "persons": persons,
        "contract_versions": *state.contract_versions,
        "connectors": connectors,
    })))
}

/// `GET /v1/health` on the admin listener: always the details.
pub(crate) async fn admin_health(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let connectors = state.connectors().await?;
    health_details(&state, overall(&connectors), &connectors).await
}

/// Installed connectors: release, pin, support state, newest release and
/// any upgrade deadline (the admin's `connectors list`/`outdated`).
#[utoipa::path(get, path = "/v1/connectors", tag = "admin",
    responses((status = 200, description = "Installed connectors", body = crate::openapi::Connectors),
        crate::openapi::ClientErrors), security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn connectors(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "connectors": state.connectors().await? })))
}

/// A connector's installation history: every change with who, when,
/// versions and digests before and after, and why.
#[utoipa::path(get, path = "/v1/connectors/{id}/history", tag = "admin",
    params(("id" = String, Path, description = "Connector id, e.g. krr")),
    responses((status = 200, description = "Every installation change", body = crate::openapi::ConnectorHistory),
        (status = 400, description = "Malformed path", body = crate::openapi::ErrorBody),
        (status = 404, description = "Never installed", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors), security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn connector_history(
    State(state): State<ApiState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let audit = state.store.audit(&id).await.map_err(ApiError::internal)?;
    if audit.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "connector-not-installed",
            format!("{id} has never been installed; see GET /v1/connectors"),
        )
        .on("id"));
    }
    Ok(Json(json!({ "connector": id, "history": audit })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitQuery {
    limit: Option<String>,
}

/// `GET /v1/jobs/runs?limit=N`: the run log book, newest first.
#[utoipa::path(get, path = "/v1/jobs/runs", tag = "admin",
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1,000 (default 50)")),
    responses((status = 200, description = "The run log book, newest first", body = crate::openapi::Runs),
        (status = 400, description = "Malformed limit", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors), security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn runs(
    State(state): State<ApiState>,
    QueryParams(query): QueryParams<LimitQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit(query.limit.as_deref(), 50, 1000)?;
    let list = state.store.runs(limit).await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "runs": list })))
}

/// `GET /v1/jobs/runs/{id}`: one run with its counts and errors.
#[utoipa::path(get, path = "/v1/jobs/runs/{id}", tag = "admin",
    params(("id" = String, Path, pattern = "^[0-9]{1,18}$", description = "Run id")),
    responses((status = 200, description = "One run", body = folkhub_store::JobRun),
        (status = 400, description = "Malformed path", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such run", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors), security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn run(
    State(state): State<ApiState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "run-not-found",
            format!("no run {id}; see GET /v1/jobs/runs"),
        )
        .on("id")
    };
    let id: i64 = id.parse().map_err(|_| not_found())?;
    let found = state
        .store
        .runs(u32::MAX)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(not_found)?;
    Ok(Json(json!(found)))
}

/// `POST /v1/jobs/{name}/run`: queues a run of a configured job; the
/// scheduler runs it after the run in progress, if any.
#[utoipa::path(post, path = "/v1/jobs/{name}/run", tag = "admin",
    params(("name" = String, Path, description = "A job of [jobs] in folkhub.toml")),
    responses((status = 202, description = "Queued for the scheduler", body = crate::openapi::Queued),
        (status = 400, description = "Malformed path", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such job", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors,
        (status = 503, description = "No scheduler runs in this process", body = crate::openapi::ErrorBody)), security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn queue_job(
    State(state): State<ApiState>,
    PathParam(name): PathParam<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(queue) = &state.jobs else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-scheduler",
            "this API has no scheduler to run jobs; run `folkhub jobs run NAME`",
        ));
    };
    if !queue.names.contains(&name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "job-not-found",
            format!(
                "no job {name:?} in [jobs] of folkhub.toml; configured: {}",
                queue.names.join(", ")
            ),
        )
        .on("name"));
    }
    queue.sender.send(name.clone()).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-scheduler",
            "the scheduler has stopped",
        )
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"queued": name, "see": "GET /v1/jobs/runs"})),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CostsQuery {
    month: Option<String>,
}

/// `GET /v1/costs?month=YYYY-MM`: the cost ledger by month, connector and job.
#[utoipa::path(get, path = "/v1/costs", tag = "admin",
    params(("month" = Option<String>, Query, pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$", description = "YYYY-MM; every month when left out")),
    responses((status = 200, description = "Register calls and cost by month, connector and job", body = crate::openapi::Costs),
        (status = 400, description = "Malformed month", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors), security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn costs(
    State(state): State<ApiState>,
    QueryParams(query): QueryParams<CostsQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(month) = &query.month
        && chrono::NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").is_err()
    {
        return Err(ApiError::bad(
            "invalid-parameter",
            "month",
            format!("month={month}: a month YYYY-MM"),
        ));
    }
    let rows = state
        .store
        .costs(query.month.as_deref())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "costs": rows })))
}

/// Does the basis see every group and every protected value?
fn reads_everything(basis: &LegalBasis) -> bool {
    basis == &LegalBasis::full(&basis.name)
}

/// `GET /v1/conflicts`: open conflicts; values only for the full basis.
#[utoipa::path(get, path = "/v1/conflicts", tag = "admin",
    responses((status = 200, description = "Open conflicts (candidate values only for the full basis)", body = crate::openapi::Conflicts),
        crate::openapi::ClientErrors), security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn conflicts(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let mut list = state.store.conflicts().await.map_err(ApiError::internal)?;
    if !reads_everything(&caller.basis) {
        // The values may be protected; a reader without the full basis
        // learns only where the conflicts are.
        for c in &mut list {
            c.candidates = Value::Null;
        }
    }
    // Conflicts name persons and fields (and, for the full basis, carry
    // their values): logged like any read of them.
    let reads = person_paths(list.iter().map(|c| (c.person, c.path.clone())));
    crate::persons::log_reads(&state, &caller, "GET /v1/conflicts", reads).await?;
    Ok(Json(json!({ "conflicts": list })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllQuery {
    all: Option<String>,
}

/// `GET /v1/overrides?all=true`: overrides with their audit trail; values
/// only for the full basis.
#[utoipa::path(get, path = "/v1/overrides", tag = "admin",
    params(("all" = Option<bool>, Query, description = "Include ended overrides")),
    responses((status = 200, description = "Overrides with their audit trail (values only for the full basis)", body = crate::openapi::Overrides),
        (status = 400, description = "Malformed flag", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors), security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn overrides(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    QueryParams(query): QueryParams<AllQuery>,
) -> Result<Json<Value>, ApiError> {
    let all = flag(query.all.as_deref(), "all")?;
    let mut list = state
        .store
        .overrides(!all)
        .await
        .map_err(ApiError::internal)?;
    if !reads_everything(&caller.basis) {
        for o in &mut list {
            o.value = Value::Null;
        }
    }
    let reads = person_paths(list.iter().map(|o| (o.person, o.path.clone())));
    crate::persons::log_reads(&state, &caller, "GET /v1/overrides", reads).await?;
    Ok(Json(json!({ "overrides": list })))
}

/// One access-log read per person, with the field paths listed about them.
fn person_paths(items: impl Iterator<Item = (i64, String)>) -> Vec<(i64, Vec<String>)> {
    let mut by_person: std::collections::BTreeMap<i64, std::collections::BTreeSet<String>> =
        Default::default();
    for (person, path) in items {
        by_person.entry(person).or_default().insert(path);
    }
    by_person
        .into_iter()
        .map(|(person, paths)| (person, paths.into_iter().collect()))
        .collect()
}

/// `GET /v1/clients`: every client (no secrets).
#[utoipa::path(get, path = "/v1/clients", tag = "admin",
    responses((status = 200, description = "Every client (no secrets)", body = crate::openapi::Clients),
        crate::openapi::ClientErrors), security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn clients(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let list = state.store.clients().await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "clients": list })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessLogQuery {
    client: Option<String>,
    person: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

fn instant(text: &str, name: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .or_else(|_| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| {
            ApiError::bad(
                "invalid-parameter",
                name,
                format!("{name}={text}: a date YYYY-MM-DD or an RFC 3339 time"),
            )
        })
}

/// `GET /v1/access-log`: who read whose data, which fields, when and why.
#[utoipa::path(get, path = "/v1/access-log", tag = "admin",
    params(("client" = Option<String>, Query, description = "A client name"),
        ("person" = Option<String>, Query, description = "A person key or any of the person's IDs"),
        ("since" = Option<String>, Query, description = "From this time (YYYY-MM-DD or RFC 3339)"),
        ("until" = Option<String>, Query, description = "Before this time"),
        ("after" = Option<i64>, Query, minimum = 0, description = "The `next` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "1 to 10,000 (default 100)")),
    responses((status = 200, description = "Access log entries, oldest first", body = crate::openapi::AccessLogPage),
        (status = 400, description = "A malformed filter", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors), security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn access_log(
    State(state): State<ApiState>,
    QueryParams(q): QueryParams<AccessLogQuery>,
) -> Result<Json<Value>, ApiError> {
    let person = match q.person.as_deref() {
        None => None,
        // A person key, or any of the person's IDs.
        Some(text) => match text.parse::<i64>() {
            Ok(key) if text.len() < 11 => Some(key),
            _ => {
                let parsed = folkhub_core::ids::parse(text)
                    .map_err(|e| ApiError::bad("invalid-id", "person", e.to_string()))?;
                match state
                    .store
                    .person(&parsed.value)
                    .await
                    .map_err(ApiError::internal)?
                {
                    Some(p) => Some(p.key),
                    None => return Ok(Json(json!({ "entries": [], "next": Value::Null }))),
                }
            }
        },
    };
    let after = position(q.after.as_deref(), "after")?;
    let query = AccessQuery {
        client: q.client.clone(),
        person,
        since: q
            .since
            .as_deref()
            .map(|t| instant(t, "since"))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|t| instant(t, "until"))
            .transpose()?,
        after,
        limit: limit(q.limit.as_deref(), 100, 10_000)?,
    };
    let entries = state
        .store
        .access_log(&query)
        .await
        .map_err(ApiError::internal)?;
    let next = (entries.len() as u32 == query.limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    Ok(Json(json!({ "entries": entries, "next": next })))
}
