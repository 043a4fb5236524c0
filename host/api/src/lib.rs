//! The HTTP API host apps query (axum, `/v1`, JSON).
//!
//! [`app`] builds the router from its dependencies so tests call it with
//! `oneshot` or serve it on port 0; [`serve`] runs it until shutdown.
//! Errors are [`ApiError`]: a stable machine-readable `code`, a message for
//! humans, never internals (those are logged).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use folkhub_core::access::{self, LegalBasis};
use folkhub_store::{PersonStore, StoredPerson};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What the API reports about an installed connector.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorStatus {
    pub id: String,
    pub version: String,
    pub contract: String,
    pub digest: String,
    pub upstream: String,
    /// Support state of the installed release: `supported`, `deprecated: …`
    /// (deadline and days left) or `unsupported since …`.
    pub support: String,
    /// Kept by the admin: no deadline action moves it.
    pub pinned: bool,
    /// The circuit breaker, when runs failed: `open until …` or
    /// `closed (N failed runs in a row)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<String>,
    /// The newest release in the registry.
    pub newest: String,
    /// When a newer release carries a breaking note: the release, the
    /// upgrade deadline, the upstream sunset and the action at the deadline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeNotice>,
    /// Why it could not be loaded, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The breaking release an installed one must move to, and by when.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeNotice {
    pub to: String,
    pub deadline: String,
    pub upstream_sunset: String,
    pub action: String,
    /// Negative once the deadline passed.
    pub days_left: i64,
}

/// A contract major this host runs, and until when.
#[derive(Debug, Clone, Serialize)]
pub struct ContractSupport {
    pub major: u64,
    /// The newest minor the host has bindings for, e.g. `2.0.0`.
    pub newest: String,
    pub supported_since: String,
    /// `supported` or `deprecated`.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deprecated_since: Option<String>,
    /// The last day a host release supports this major.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removal: Option<String>,
}

/// Where the API queues manual job runs (the scheduler of `folkhub serve`).
#[derive(Clone)]
pub struct JobQueue {
    /// The jobs of `[jobs]` in folkhub.toml.
    pub names: Arc<Vec<String>>,
    pub sender: tokio::sync::mpsc::UnboundedSender<String>,
}

/// Dependencies of the API.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn PersonStore>,
    pub connectors: Arc<Vec<ConnectorStatus>>,
    /// Manual job runs go here; `None` when no scheduler runs.
    pub jobs: Option<JobQueue>,
    /// The legal basis readers of this API have (`server.legal_basis`;
    /// per-client bases come with API clients).
    pub basis: Arc<LegalBasis>,
    /// Contract majors this host runs, with their support dates.
    pub contract_versions: Arc<Vec<ContractSupport>>,
}

/// An error answer: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {error}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to answer; the operator can find the cause in its log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

/// The JSON shape of a person, shared by the API and `folkhub person get --json`.
pub fn person_json(person: &StoredPerson, basis: &LegalBasis, provenance: bool) -> Value {
    let view = access::view(&person.record, basis);
    let mut fields = serde_json::Map::new();
    let mut labels = serde_json::Map::new();
    let mut sources = serde_json::Map::new();
    let mut conflicts = Vec::new();
    for (path, field) in &view.fields {
        fields.insert(path.clone(), field.value.clone());
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
    let mut out = json!({
        "key": person.key,
        "ids": person.ids,
        "version": person.version,
        "updated_at": person.updated_at,
        "fields": fields,
        "labels": labels,
    });
    if !view.withheld.is_empty() {
        // Withheld is not empty: the reader's basis does not cover them.
        out["withheld"] = json!(view.withheld);
    }
    if !conflicts.is_empty() {
        out["conflicts"] = json!(conflicts);
    }
    if provenance {
        out["provenance"] = Value::Object(sources);
    }
    out
}

/// A person's history as a reader may see it: entries of fields outside
/// the basis or protected (then or now) are listed as withheld, without
/// values.
pub fn history_json(changes: &[folkhub_store::PersonChange], basis: &LegalBasis) -> Value {
    let entries: Vec<Value> = changes
        .iter()
        .map(|c| {
            let (shown, withheld) = access::view_diff(&c.diff, basis);
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
    json!({ "history": entries })
}

/// The FHIR R4 `Patient` of a person as a reader may see it.
pub fn patient_json(person: &StoredPerson, basis: &LegalBasis) -> Value {
    let ids: Vec<(String, String, bool)> = person
        .ids
        .iter()
        .map(|i| (i.scheme.clone(), i.value.clone(), i.active))
        .collect();
    folkhub_core::fhir::patient(person.key, &ids, &access::view(&person.record, basis))
}

#[derive(Debug, Deserialize)]
struct PersonQuery {
    #[serde(default)]
    provenance: Option<String>,
}

fn flag(value: &Option<String>, name: &str) -> Result<bool, ApiError> {
    match value.as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            format!("{name}={other}: use true or false"),
        )),
    }
}

async fn get_person(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(query): Query<PersonQuery>,
) -> Result<Json<Value>, ApiError> {
    let provenance = flag(&query.provenance, "provenance")?;
    let person = find_person(&state, &id).await?;
    let mut out = person_json(&person, &state.basis, provenance);
    // Relations are links between persons: the store's key of each related
    // person it holds (any of their IDs resolves).
    let mut related = serde_json::Map::new();
    if let Some(fields) = out["fields"].as_object() {
        for (path, value) in fields {
            if !path.starts_with("relations.") {
                continue;
            }
            for relation in value.as_array().into_iter().flatten() {
                if let Some(rid) = relation.get("id").and_then(Value::as_str)
                    && !related.contains_key(rid)
                    && let Some(p) = state.store.person(rid).await.map_err(ApiError::internal)?
                {
                    related.insert(rid.to_string(), json!(p.key));
                }
            }
        }
    }
    if !related.is_empty() {
        out["related"] = Value::Object(related);
    }
    Ok(Json(out))
}

async fn health(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let persons = state
        .store
        .count_persons()
        .await
        .map_err(ApiError::internal)?;
    let degraded = state
        .connectors
        .iter()
        .any(|c| c.error.is_some() || c.breaker.as_deref().is_some_and(|b| b.starts_with("open")));
    Ok(Json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "persons": persons,
        "contract_versions": *state.contract_versions,
        "connectors": *state.connectors,
    })))
}

/// Installed connectors: release, pin, support state, newest release and
/// any upgrade deadline (the admin's `connectors list`/`outdated`).
async fn connectors(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({ "connectors": *state.connectors }))
}

/// A connector's installation history: every change with who, when,
/// versions and digests before and after, and why.
async fn connector_history(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let audit = state.store.audit(&id).await.map_err(ApiError::internal)?;
    if audit.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "connector-not-installed",
            format!("{id} has never been installed; see GET /v1/connectors"),
        ));
    }
    Ok(Json(json!({ "connector": id, "history": audit })))
}

/// Looks a person up by any ID, or answers the API's errors.
async fn find_person(state: &ApiState, id: &str) -> Result<StoredPerson, ApiError> {
    let parsed = folkhub_core::ids::parse(id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid-id", e.to_string()))?;
    state
        .store
        .person(&parsed.value)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "person-not-found",
                format!(
                    "no person with {} {} is in the store; it may not be synced yet",
                    parsed.scheme, parsed.value
                ),
            )
        })
}

async fn person_history(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let person = find_person(&state, &id).await?;
    let changes = state
        .store
        .history(person.key)
        .await
        .map_err(ApiError::internal)?;
    let mut out = history_json(&changes, &state.basis);
    out["key"] = json!(person.key);
    Ok(Json(out))
}

/// `GET /fhir/Patient/{key}`: the resource id is the store's person key.
async fn fhir_patient(
    State(state): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "person-not-found",
            format!(
                "no Patient/{key}; search by identifier: GET /fhir/Patient?identifier=system|value"
            ),
        )
    };
    let key: i64 = key.parse().map_err(|_| not_found())?;
    let person = state
        .store
        .person_by_key(key)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    Ok(Json(patient_json(&person, &state.basis)))
}

#[derive(Debug, Deserialize)]
struct PatientSearch {
    identifier: Option<String>,
}

/// `GET /fhir/Patient?identifier=system|value`: a searchset Bundle.
async fn fhir_search(
    State(state): State<ApiState>,
    Query(query): Query<PatientSearch>,
) -> Result<Json<Value>, ApiError> {
    let Some(identifier) = query.identifier else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            "search by identifier=system|value, e.g. identifier=urn:oid:2.16.578.1.12.4.1.4.1|03851598730",
        ));
    };
    let (system, value) = match identifier.split_once('|') {
        Some((s, v)) => (Some(s), v),
        None => (None, identifier.as_str()),
    };
    if let Some(system) = system
        && !system.is_empty()
        && folkhub_core::fhir::scheme_of(system).is_none()
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            format!(
                "identifier system {system:?} is not a Nordic person identifier system this API knows"
            ),
        ));
    }
    let parsed = folkhub_core::ids::parse(value)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid-id", e.to_string()))?;
    let found = state
        .store
        .person(&parsed.value)
        .await
        .map_err(ApiError::internal)?
        .filter(|p| {
            system.is_none_or(|s| {
                s.is_empty()
                    || p.ids.iter().any(|i| {
                        i.value == parsed.value && folkhub_core::fhir::system(&i.scheme) == s
                    })
            })
        });
    let entries: Vec<Value> = found
        .iter()
        .map(|p| json!({"fullUrl": format!("Patient/{}", p.key), "resource": patient_json(p, &state.basis),
                        "search": {"mode": "match"}}))
        .collect();
    Ok(Json(json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "entry": entries,
    })))
}

#[derive(Debug, Deserialize)]
struct ChangesQuery {
    since: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/changes?since=SEQ&limit=N`: changes of every record after SEQ,
/// as the reader may see them; `next` is the SEQ to ask from next.
async fn changes(
    State(state): State<ApiState>,
    Query(query): Query<ChangesQuery>,
) -> Result<Json<Value>, ApiError> {
    let number = |value: &Option<String>, name: &str, default: i64| -> Result<i64, ApiError> {
        match value.as_deref() {
            None => Ok(default),
            Some(text) => text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-parameter",
                    format!("{name}={text}: a whole number, 0 or more"),
                )
            }),
        }
    };
    let since = number(&query.since, "since", 0)?;
    let limit = number(&query.limit, "limit", 1000)?;
    if limit == 0 || limit > 10_000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "page-too-large",
            format!("limit={limit}: ask for 1 to 10000 changes per page"),
        ));
    }
    let list = state
        .store
        .changes_since(since, limit as u32)
        .await
        .map_err(ApiError::internal)?;
    let next = list.last().map_or(since, |c| c.seq);
    let mut out = history_json(&list, &state.basis);
    if let Some(entries) = out["history"].as_array_mut() {
        for (entry, change) in entries.iter_mut().zip(&list) {
            entry["person"] = json!(change.person);
        }
    }
    Ok(Json(json!({
        "changes": out["history"].take(),
        "next": next,
        "caught_up": (list.len() as i64) < limit,
    })))
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    limit: Option<String>,
}

/// `GET /v1/jobs/runs?limit=N`: the run log book, newest first.
async fn runs(
    State(state): State<ApiState>,
    Query(query): Query<RunsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = match query.limit.as_deref() {
        None => 50,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-parameter",
                    format!("limit={text}: 1 to 1000"),
                )
            })?,
    };
    let list = state.store.runs(limit).await.map_err(ApiError::internal)?;
    Ok(Json(json!({ "runs": list })))
}

/// `POST /v1/jobs/{name}/run`: queues a run of a configured job; the
/// scheduler runs it after the run in progress, if any.
async fn queue_job(
    State(state): State<ApiState>,
    Path(name): Path<String>,
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
        ));
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

/// `GET /v1/jobs/runs/{id}`: one run with its counts and errors.
async fn run(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "run-not-found",
            format!("no run {id}; see GET /v1/jobs/runs"),
        )
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

/// Open conflicts (admin).
async fn conflicts(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let mut list = state.store.conflicts().await.map_err(ApiError::internal)?;
    if !reads_everything(&state.basis) {
        // The values may be protected; a reader without the full basis
        // learns only where the conflicts are.
        for c in &mut list {
            c.candidates = Value::Null;
        }
    }
    Ok(Json(json!({ "conflicts": list })))
}

/// Overrides with their audit trail (admin); `?all=true` includes ended ones.
async fn overrides(
    State(state): State<ApiState>,
    Query(query): Query<AllQuery>,
) -> Result<Json<Value>, ApiError> {
    let all = flag(&query.all, "all")?;
    let mut list = state
        .store
        .overrides(!all)
        .await
        .map_err(ApiError::internal)?;
    if !reads_everything(&state.basis) {
        for o in &mut list {
            o.value = Value::Null;
        }
    }
    Ok(Json(json!({ "overrides": list })))
}

/// Does the basis see every group and every protected value?
fn reads_everything(basis: &LegalBasis) -> bool {
    basis == &LegalBasis::full(&basis.name)
}

#[derive(Debug, Deserialize)]
struct AllQuery {
    #[serde(default)]
    all: Option<String>,
}

async fn fallback() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no-such-route",
        "no such route; see GET /v1/health, GET /v1/persons/{id} and GET /v1/connectors",
    )
}

/// The router.
pub fn app(state: ApiState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/persons/{id}", get(get_person))
        .route("/v1/persons/{id}/history", get(person_history))
        .route("/fhir/Patient/{key}", get(fhir_patient))
        .route("/fhir/Patient", get(fhir_search))
        .route("/v1/connectors", get(connectors))
        .route("/v1/conflicts", get(conflicts))
        .route("/v1/changes", get(changes))
        .route("/v1/jobs/runs", get(runs))
        .route("/v1/jobs/runs/{id}", get(run))
        .route("/v1/jobs/{name}/run", axum::routing::post(queue_job))
        .route("/v1/overrides", get(overrides))
        .route("/v1/connectors/{id}/history", get(connector_history))
        .fallback(fallback)
        .with_state(state)
}

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
