//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! the response types (utoipa), served at `GET /v1/openapi.json`. A test
//! runs schemathesis against a running server and this document.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::{ConnectorStatus, ContractSupport, UpgradeNotice};
// What the person handlers return: the read model's own types.
pub use crate::persons::BatchRequest;
pub use crate::register_search::RegisterSearchRequest;
pub use folkhub_read::{
    BatchAnswer, BundleEntry, BundleSearch, Changes, History, HistoryEntry, PatientBundle,
    PersonView as Person, RegisterSearch, SearchHit, SearchOutcomeKind, SearchPage, Withheld,
};
use folkhub_store::{
    AccessEntry, AccessRecord, AuditEntry, Client, ClientAuth, Conflict, CostRow, JobRun, Override,
    RunCounts, RunStatus, StoredId,
};

/// An error: a stable `code` to branch on, a `message` for humans and, when
/// one parameter was wrong, its name in `field`.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable: `invalid-id`, `invalid-parameter`, `missing-parameter`,
    /// `unknown-field`, `page-too-large`, `batch-too-large`, `invalid-body`,
    /// `invalid-path`, `person-not-found`, `unauthenticated`, `admin-only`,
    /// `outside-basis`, `unknown-basis`, `rate-limited`, `no-such-route`,
    /// `access-log-unavailable`, `internal`, ...
    pub code: String,
    pub message: String,
    /// The query parameter, path segment, header or body member at fault.
    pub field: Option<String>,
}

/// The answers of every route that needs a client, besides its own.
#[derive(utoipa::IntoResponses)]
pub enum ClientErrors {
    /// No client, or an unknown or revoked secret.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The client may not use this route or search.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The client's rate limit; wait Retry-After seconds.
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds to wait")))]
    RateLimited(ErrorBody),
}

/// The answer of a route that returns person data when its reads cannot
/// be written to the access log.
#[derive(utoipa::IntoResponses)]
pub enum LogErrors {
    /// The access log cannot be written.
    #[response(status = 503)]
    AccessLogUnavailable(ErrorBody),
}

/// A FHIR R4 Patient resource (http://hl7.org/fhir/R4/patient.html).
#[derive(serde::Serialize, ToSchema)]
pub struct Patient {
    #[serde(rename = "resourceType")]
    #[schema(example = "Patient")]
    pub resource_type: String,
    pub id: String,
}

#[derive(ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when a connector cannot load or its circuit
    /// breaker is open.
    pub status: String,
    /// Admin clients only (and the admin listener).
    pub persons: Option<u64>,
    /// Admin clients only.
    pub contract_versions: Option<Vec<ContractSupport>>,
    /// Admin clients only.
    pub connectors: Option<Vec<ConnectorStatus>>,
}

#[derive(ToSchema)]
pub struct Connectors {
    pub connectors: Vec<ConnectorStatus>,
}

#[derive(ToSchema)]
pub struct ConnectorHistory {
    pub connector: String,
    pub history: Vec<AuditEntry>,
}

#[derive(ToSchema)]
pub struct Runs {
    pub runs: Vec<JobRun>,
}

#[derive(ToSchema)]
pub struct Queued {
    pub queued: String,
    pub see: String,
}

#[derive(ToSchema)]
pub struct Costs {
    pub costs: Vec<CostRow>,
}

#[derive(ToSchema)]
pub struct Conflicts {
    pub conflicts: Vec<Conflict>,
}

#[derive(ToSchema)]
pub struct Overrides {
    pub overrides: Vec<Override>,
}

#[derive(ToSchema)]
pub struct Clients {
    pub clients: Vec<Client>,
}

#[derive(ToSchema)]
pub struct AccessLogPage {
    pub entries: Vec<AccessRecord>,
    /// Pass as `after` for the next page; null on the last page.
    pub next: Option<i64>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A client's API key (`folkhub clients add NAME --basis B --purpose P`).",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A client's bearer token (`folkhub clients add NAME --auth bearer ...`).",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "folkhub",
        description = "One merged person record per person from the Nordic population registers (Folkeregisteret, KRR, Kartverket, SPAR, DVV/VTJ), shaped by each client's legal basis; every read of person data is written to the access log.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::persons::get_person,
        crate::persons::batch,
        crate::persons::search,
        crate::persons::person_history,
        crate::persons::refresh,
        crate::register_search::search,
        crate::follows::list,
        crate::follows::post,
        crate::follows::put,
        crate::follows::delete,
        crate::follows::populations,
        crate::follows::population_list,
        crate::follows::population_post,
        crate::follows::population_put,
        crate::follows::population_delete,
        crate::webhooks::subscribe,
        crate::webhooks::list,
        crate::webhooks::delete,
        crate::webhooks::deliveries,
        crate::persons::changes,
        crate::persons::fhir_patient,
        crate::persons::fhir_search,
        crate::admin::health,
        crate::admin::connectors,
        crate::admin::connector_history,
        crate::admin::runs,
        crate::admin::run,
        crate::admin::queue_job,
        crate::admin::costs,
        crate::admin::conflicts,
        crate::admin::overrides,
        crate::admin::clients,
        crate::admin::access_log,
        crate::metrics::serve_metrics,
        serve_openapi,
    ),
    components(schemas(
        crate::follows::FollowPage, crate::follows::FollowRequest, crate::follows::Populations,
        crate::follows::PopulationSummary, folkhub_store::FollowChange, folkhub_store::FollowMember,
        crate::webhooks::SubscribeRequest, crate::webhooks::Subscribed, crate::webhooks::SubscriptionList,
        crate::webhooks::Delivery, crate::webhooks::Deliveries, folkhub_store::Subscription,
        folkhub_store::WebhookMessage, folkhub_store::DeliveryAttempt,
        ErrorBody, ErrorDetail, Withheld, Person, BatchRequest, BatchAnswer, SearchPage,
        RegisterSearchRequest, RegisterSearch, SearchHit, SearchOutcomeKind,
        HistoryEntry, History, Changes, Patient, PatientBundle, BundleEntry, BundleSearch, Health, Connectors,
        ConnectorHistory, Runs, Queued, Costs, Conflicts, Overrides, Clients, AccessLogPage,
        ConnectorStatus, UpgradeNotice, ContractSupport, StoredId, AuditEntry, JobRun, RunCounts,
        RunStatus, CostRow, Conflict, Override, Client, ClientAuth, AccessRecord, AccessEntry,
    )),
    modifiers(&Security),
    tags(
        (name = "persons", description = "Person data: every read is logged."),
        (name = "fhir", description = "FHIR R4 Patient read and search."),
        (name = "webhooks", description = "Pushed changes: signed deliveries (Standard Webhooks) of changes to followed persons, and for admins operational events."),
        (name = "follows", description = "The persons a client, or a population several clients share, follows: with `follow.scope = \"followed\"` the store keeps only these."),
        (name = "admin", description = "For admin clients: connectors, jobs, costs, conflicts, overrides, clients, the access log."),
        (name = "operations", description = "Health (details for admin clients), metrics (admin clients, or the admin listener) and this document."),
    )
)]
struct ApiDoc;

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub(crate) async fn serve_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}
