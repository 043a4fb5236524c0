//! The HTTP API host apps query (axum, `/v1`, JSON; FHIR R4 under `/fhir`).
//!
//! [`app`] builds the router from its dependencies so tests call it with
//! `oneshot` or serve it on port 0; [`serve`] runs it until shutdown and
//! lets requests in flight finish.
//!
//! Every route but health, metrics and the OpenAPI document needs a client
//! ([`auth`]): its legal basis decides what it sees, its rate limit how
//! often it may ask, and every person it reads is written to the access
//! log ([`access_log`]) before the answer leaves. Errors are [`ApiError`]:
//! a stable `code`, a message for humans, the parameter that was wrong,
//! never internals (those are logged).

pub mod access_log;
mod admin;
pub mod auth;
pub mod cursor;
pub mod edge;
mod extract;
pub mod follows;
pub mod metrics;
pub mod oauth2;
pub mod openapi;
mod persons;
pub mod register_search;
pub mod webhooks;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router, middleware};
use folkhub_core::access::LegalBasis;
use folkhub_store::PersonStore;
use serde::Serialize;
use serde_json::json;

pub use folkhub_read as read;
pub use openapi::openapi;

/// What the API reports about an installed connector.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// True while the circuit breaker is open.
    #[serde(skip)]
    pub breaker_open: bool,
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UpgradeNotice {
    pub to: String,
    pub deadline: String,
    pub upstream_sunset: String,
    pub action: String,
    /// Negative once the deadline passed.
    pub days_left: i64,
}

/// A contract major this host runs, and until when.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// Where the API reads connectors' status from: live, each time it is
/// asked (the application computes it from the store and the registry, so
/// a breaker that opened or an upgrade made after the server started
/// shows at once).
#[async_trait::async_trait]
pub trait StatusSource: Send + Sync {
    /// Every installed connector's status now, or why it cannot be read.
    async fn connectors(&self) -> Result<Vec<ConnectorStatus>, String>;
}

/// A fixed list: for a server without an application behind it (tests).
pub struct FixedStatus(pub Vec<ConnectorStatus>);

#[async_trait::async_trait]
impl StatusSource for FixedStatus {
    async fn connectors(&self) -> Result<Vec<ConnectorStatus>, String> {
        Ok(self.0.clone())
    }
}

/// Asks the registers about a person now: fetch on miss and refresh. The
/// application runs a lookup with every installed connector that serves
/// the ID's scheme; reads of the same person at the same moment share one
/// lookup, and a lookup goes on when its caller stops waiting.
#[async_trait::async_trait]
pub trait Fetcher: Send + Sync {
    /// Looks `id` up now for `client` (whose name the cost ledger
    /// records), past any cache.
    async fn fetch(&self, id: &folkhub_core::PersonId, client: &str)
    -> Result<Fetched, FetchError>;

    /// Searches every register that can (`search`, contract 2.2) for
    /// `client`, whose name the cost ledger records. Nothing is stored and
    /// nobody is followed: the client confirms a hit by following it.
    async fn search(
        &self,
        query: &folkhub_core::contract::SearchQuery,
        client: &str,
    ) -> Result<Searched, FetchError>;
}

/// What a search by identifying details found.
#[derive(Debug, Clone, PartialEq)]
pub struct Searched {
    /// The connectors asked.
    pub asked: Vec<String>,
    /// The persons that match, each as its register describes them, merged
    /// by the host's rules (one per person: the same person found by two
    /// registers is one hit).
    pub hits: Vec<SearchHit>,
    /// A register found more than the query takes: narrow the search.
    /// `Some(n)` when it said how many.
    pub too_many: Option<Option<u32>>,
}

/// One person a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The registers that found them.
    pub sources: Vec<String>,
    pub ids: Vec<folkhub_core::observation::SourceId>,
    pub record: folkhub_core::merge::MergedRecord,
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The connectors asked.
    pub asked: Vec<String>,
    /// Whether any register knew the person.
    pub found: bool,
}

/// Why a fetch gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No installed connector looks up IDs of this scheme.
    NoConnector(String),
    /// Every register asked failed (unreachable, failing, breaker open).
    Unavailable(String),
    /// The month's budget of every connector that could answer is spent.
    OverBudget(String),
    /// A register refused the question itself (a search too vague, a value
    /// it cannot take); the message says what.
    BadQuery(String),
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
    /// Connectors' live status.
    pub status: Arc<dyn StatusSource>,
    /// Asks the registers now, for clients that may fetch; `None`: this
    /// server only reads the store.
    pub fetch: Option<Arc<dyn Fetcher>>,
    /// How long a read waits for a fetch (`server.fetch_deadline`).
    pub fetch_deadline: std::time::Duration,
    /// Webhook subscriptions may use `http://` (`webhooks.allow_http`).
    pub webhooks_allow_http: bool,
    /// Manual job runs go here; `None` when no scheduler runs.
    pub jobs: Option<JobQueue>,
    /// Legal bases clients may hold, by name: the built-in profiles and
    /// `[legal_bases]` of folkhub.toml.
    pub bases: Arc<BTreeMap<String, LegalBasis>>,
    /// Contract majors this host runs, with their support dates.
    pub contract_versions: Arc<Vec<ContractSupport>>,
    /// The access log writer (group commit).
    pub access_log: access_log::AccessLog,
    pub limits: Arc<auth::RateLimits>,
    /// Clients recently found by their secret (see [`auth::CLIENT_CACHE_SECONDS`]).
    pub clients: Arc<auth::ClientCache>,
    pub metrics: Arc<metrics::Metrics>,
    /// Persons sent per client per minute.
    pub quotas: Arc<auth::PersonQuotas>,
    /// OAuth2 issuers, when configured.
    pub oauth2: Option<oauth2::OAuth2>,
    /// Timeouts, sizes, the connection cap and TLS ([`edge`]).
    pub edge: Arc<edge::EdgeConfig>,
    /// The key of search cursors, read from the store on first use.
    pub cursor_key: Arc<tokio::sync::OnceCell<cursor::CursorKey>>,
}

impl ApiState {
    /// The state for a store; starts the access log writer (call inside a
    /// tokio runtime).
    pub fn new(
        store: Arc<dyn PersonStore>,
        bases: BTreeMap<String, LegalBasis>,
        connectors: Vec<ConnectorStatus>,
        contract_versions: Vec<ContractSupport>,
        access_log: access_log::Mode,
    ) -> ApiState {
        let metrics = Arc::new(metrics::Metrics::default());
        ApiState {
            access_log: access_log::AccessLog::start(store.clone(), metrics.clone(), access_log),
            store,
            status: Arc::new(FixedStatus(connectors)),
            fetch: None,
            fetch_deadline: std::time::Duration::from_secs(5),
            webhooks_allow_http: false,
            jobs: None,
            bases: Arc::new(bases),
            contract_versions: Arc::new(contract_versions),
            limits: Arc::new(auth::RateLimits::default()),
            clients: Arc::new(auth::ClientCache::default()),
            metrics,
            cursor_key: Arc::new(tokio::sync::OnceCell::new()),
            edge: Arc::new(edge::EdgeConfig::default()),
            quotas: Arc::new(auth::PersonQuotas::default()),
            oauth2: None,
        }
    }

    /// Connectors' status now.
    pub async fn connectors(&self) -> Result<Vec<ConnectorStatus>, ApiError> {
        self.status.connectors().await.map_err(ApiError::internal)
    }

    /// The key search cursors are sealed with: the store's `cursor`
    /// secret, the same on every host.
    pub async fn cursor_key(&self) -> Result<&cursor::CursorKey, ApiError> {
        self.cursor_key
            .get_or_try_init(|| async {
                let secret = self
                    .store
                    .server_secret("cursor")
                    .await
                    .map_err(ApiError::internal)?;
                Ok(cursor::CursorKey::new(secret.as_bytes()))
            })
            .await
    }
}

/// An error answer: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The parameter, header or body member that was wrong.
    pub field: Option<String>,
    /// Seconds to wait (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// A 400 about one parameter.
    pub fn bad(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message).on(field)
    }

    /// Names the parameter that was wrong.
    pub fn on(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub(crate) fn internal(error: impl std::fmt::Display) -> ApiError {
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
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"folkhub\""),
            );
        }
        response
    }
}

async fn fallback() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no-such-route",
        "no such route; the routes are listed in GET /v1/openapi.json",
    )
}

/// The router.
pub fn app(state: ApiState) -> Router {
    // Routes that read person data: any client.
    let reads = Router::new()
        .route("/v1/persons", get(persons::search))
        .route("/v1/persons/batch", post(persons::batch))
        .route("/v1/persons/search", post(register_search::search))
        .route("/v1/persons/{id}", get(persons::get_person))
        .route("/v1/persons/{id}/history", get(persons::person_history))
        .route("/v1/persons/{id}/refresh", post(persons::refresh))
        .route("/v1/changes", get(persons::changes))
        .route("/v1/follows", get(follows::list).post(follows::post))
        .route(
            "/v1/follows/{id}",
            put(follows::put).delete(follows::delete),
        )
        .route("/v1/populations", get(follows::populations))
        .route(
            "/v1/webhooks",
            get(webhooks::list).post(webhooks::subscribe),
        )
        .route("/v1/webhooks/{id}", axum::routing::delete(webhooks::delete))
        .route("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route(
            "/v1/populations/{name}/members",
            get(follows::population_list).post(follows::population_post),
        )
        .route(
            "/v1/populations/{name}/members/{id}",
            put(follows::population_put).delete(follows::population_delete),
        )
        .route("/fhir/Patient", get(persons::fhir_search))
        .route("/fhir/Patient/{key}", get(persons::fhir_patient));
    // The admin's routes: clients created with --admin.
    let admin = Router::new()
        .route("/v1/connectors", get(admin::connectors))
        .route("/v1/connectors/{id}/history", get(admin::connector_history))
        .route("/v1/jobs/runs", get(admin::runs))
        .route("/v1/jobs/runs/{id}", get(admin::run))
        .route("/v1/jobs/{name}/run", post(admin::queue_job))
        .route("/v1/costs", get(admin::costs))
        .route("/v1/conflicts", get(admin::conflicts))
        .route("/v1/overrides", get(admin::overrides))
        .route("/v1/clients", get(admin::clients))
        .route("/v1/access-log", get(admin::access_log))
        .route("/metrics", get(metrics::serve_metrics))
        .route_layer(middleware::from_fn(auth::require_admin));
    let authenticated = reads
        .merge(admin)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .route("/v1/health", get(admin::health))
        .route("/v1/openapi.json", get(openapi::serve_openapi))
        .merge(authenticated)
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::record,
        ))
        .layer(middleware::from_fn_with_state(
            state.edge.clone(),
            edge::guard,
        ))
        .with_state(state)
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!(
            "{method} is not allowed on this route; the methods of each route are in GET /v1/openapi.json"
        ),
    )
}

/// The admin listener's router (`server.admin_listen`): `/metrics` and
/// the detailed `/v1/health` without a client, for a scraper on an
/// internal network. Person data is never served here.
pub fn admin_app(state: ApiState) -> Router {
    Router::new()
        .route("/v1/health", get(admin::admin_health))
        .route("/metrics", get(metrics::serve_metrics))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.edge.clone(),
            edge::guard,
        ))
        .with_state(state)
}

/// Serves the API until `shutdown` resolves; requests in flight are
/// answered (and their reads logged) before it returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let log = state.access_log.clone();
    let edge = (*state.edge).clone();
    edge::serve(listener, app(state), edge, shutdown).await?;
    // Reads answered in buffered mode are committed before we return.
    log.flush().await.map_err(std::io::Error::other)
}

/// [`serve`] for a router built by the caller (tests add routes), with
/// the edge's default limits.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    edge::serve(listener, router, edge::EdgeConfig::default(), shutdown).await
}
