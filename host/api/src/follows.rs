//! Follow sets over HTTP: the persons a client follows (`/v1/follows`),
//! and the populations several clients share
//! (`/v1/populations/{name}/members`). With `follow.scope = "followed"`
//! the sync keeps only followed persons.
//!
//! A member list holds the IDs as the client gave them and nothing else:
//! neither whether the store holds the person nor who else follows them,
//! so a client cannot learn about persons by following IDs.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use folkhub_store::{FollowChange, FollowId, FollowMember, FollowSet};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::extract::{JsonBody, PathParam, QueryParams, limit};
use crate::{ApiError, ApiState};

/// IDs one `POST` may add and remove together.
pub const MAX_CHANGE: usize = 10_000;

/// A page of a follow set's members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FollowPage {
    /// `client:NAME` or `population:NAME`.
    pub set: String,
    /// Members in the whole set.
    pub count: u64,
    /// In ID order.
    pub members: Vec<FollowMember>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

/// A population the client may use.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PopulationSummary {
    pub name: String,
    pub purpose: String,
    pub members: u64,
    /// Admin clients only: the clients that share it.
    pub clients: Option<Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Populations {
    pub populations: Vec<PopulationSummary>,
}

/// Many IDs added and removed at once.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowRequest {
    /// IDs to follow (any country, optionally prefixed `no:`, `se:`, `fi:`).
    #[serde(default)]
    pub add: Vec<String>,
    /// IDs to stop following.
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// The client's own set.
fn own(caller: &Caller) -> FollowSet {
    FollowSet::Client(caller.client.name.clone())
}

/// A population the caller may use. Not granted and not there answer
/// the same, so a client learns no other population's name.
async fn population(state: &ApiState, caller: &Caller, name: &str) -> Result<FollowSet, ApiError> {
    let all = state
        .store
        .populations()
        .await
        .map_err(ApiError::internal)?;
    let granted = all.iter().any(|p| {
        p.name == name && (caller.client.admin || p.clients.contains(&caller.client.name))
    });
    if !granted {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no-such-population",
            format!(
                "this client shares no population named {name:?}; GET /v1/populations lists those it does (an admin grants one with `folkhub populations grant`)"
            ),
        ));
    }
    Ok(FollowSet::Population(name.to_string()))
}

fn parse(text: &str, field: &str) -> Result<FollowId, ApiError> {
    let id = crate::persons::parse_id(text, field)?;
    Ok(FollowId {
        scheme: id.scheme.as_str().into(),
        value: id.value,
    })
}

async fn page(
    state: &ApiState,
    set: FollowSet,
    q: PageQuery,
) -> Result<Json<FollowPage>, ApiError> {
    let limit = limit(q.limit.as_deref(), 100, 1000)?;
    let after = match q.after.as_deref() {
        Some(text) => Some(parse(text, "after")?.value),
        None => None,
    };
    let store = &state.store;
    let members = store
        .follow_members(&set, after.as_deref(), limit)
        .await
        .map_err(ApiError::internal)?;
    let count = store.follow_count(&set).await.map_err(ApiError::internal)?;
    let next = (members.len() == limit as usize)
        .then(|| members.last().map(|m| m.id.clone()))
        .flatten();
    Ok(Json(FollowPage {
        set: set.key(),
        count,
        members,
        next,
    }))
}

async fn put_one(
    state: &ApiState,
    caller: &Caller,
    set: FollowSet,
    id: &str,
) -> Result<Response, ApiError> {
    let id = parse(id, "id")?;
    let change = state
        .store
        .follow(&set, &[id], &caller.client.name)
        .await
        .map_err(ApiError::internal)?;
    let status = if change.added > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(change)).into_response())
}

async fn delete_one(state: &ApiState, set: FollowSet, id: &str) -> Result<StatusCode, ApiError> {
    let id = parse(id, "id")?;
    let change = state
        .store
        .unfollow(&set, &[id.value])
        .await
        .map_err(ApiError::internal)?;
    if change.removed == 0 {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-followed",
            "the set does not follow this ID (GET lists its members)",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn change(
    state: &ApiState,
    caller: &Caller,
    set: FollowSet,
    request: FollowRequest,
) -> Result<Json<FollowChange>, ApiError> {
    let n = request.add.len() + request.remove.len();
    if n == 0 {
        return Err(ApiError::bad(
            "invalid-body",
            "add",
            "give IDs in `add`, `remove` or both",
        ));
    }
    if n > MAX_CHANGE {
        return Err(ApiError::bad(
            "batch-too-large",
            "add",
            format!("{n} IDs: send at most {MAX_CHANGE} per request"),
        ));
    }
    // Every ID is checked before anything changes.
    let add = request
        .add
        .iter()
        .enumerate()
        .map(|(i, t)| parse(t, &format!("add[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let remove = request
        .remove
        .iter()
        .enumerate()
        .map(|(i, t)| parse(t, &format!("remove[{i}]")).map(|id| id.value))
        .collect::<Result<Vec<_>, _>>()?;
    let store = &state.store;
    let mut out = FollowChange::default();
    if !add.is_empty() {
        out = store
            .follow(&set, &add, &caller.client.name)
            .await
            .map_err(ApiError::internal)?;
    }
    if !remove.is_empty() {
        let r = store
            .unfollow(&set, &remove)
            .await
            .map_err(ApiError::internal)?;
        out.removed = r.removed;
        out.not_followed = r.not_followed;
    }
    Ok(Json(out))
}

/// `GET /v1/follows`: the persons this client follows.
#[utoipa::path(get, path = "/v1/follows", tag = "follows",
    params(("after" = Option<String>, Query, description = "The `next` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1,000 (default 100)")),
    responses((status = 200, description = "The client's follow set: its size and a page of members", body = FollowPage),
        (status = 400, description = "Malformed `after` or `limit`", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<FollowPage>, ApiError> {
    page(&state, own(&caller), q).await
}

/// `PUT /v1/follows/{id}`: follow a person.
#[utoipa::path(put, path = "/v1/follows/{id}", tag = "follows",
    params(("id" = String, Path, description = "Any of the person's IDs")),
    responses((status = 201, description = "Followed now", body = FollowChange),
        (status = 200, description = "Followed already", body = FollowChange),
        (status = 400, description = "Malformed ID", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn put(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    put_one(&state, &caller, own(&caller), &id).await
}

/// `DELETE /v1/follows/{id}`: stop following a person.
#[utoipa::path(delete, path = "/v1/follows/{id}", tag = "follows",
    params(("id" = String, Path, description = "The ID as it was followed")),
    responses((status = 204, description = "Not followed any more"),
        (status = 400, description = "Malformed ID", body = crate::openapi::ErrorBody),
        (status = 404, description = "The client does not follow this ID (`not-followed`)", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    delete_one(&state, own(&caller), &id).await
}

/// `POST /v1/follows`: follow and unfollow many IDs at once.
#[utoipa::path(post, path = "/v1/follows", tag = "follows",
    request_body(content = FollowRequest, content_type = "application/json"),
    responses((status = 200, description = "What changed", body = FollowChange),
        (status = 400, description = "No IDs, more than 10,000, a malformed ID (field `add[N]` or `remove[N]`; nothing changed) or an unknown member", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn post(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<FollowRequest>,
) -> Result<Json<FollowChange>, ApiError> {
    change(&state, &caller, own(&caller), request).await
}

/// `GET /v1/populations`: the populations this client shares.
#[utoipa::path(get, path = "/v1/populations", tag = "follows",
    responses((status = 200, description = "Populations the client may read and change (every one for an admin)", body = Populations),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn populations(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Populations>, ApiError> {
    let all = state
        .store
        .populations()
        .await
        .map_err(ApiError::internal)?;
    let admin = caller.client.admin;
    Ok(Json(Populations {
        populations: all
            .into_iter()
            .filter(|p| admin || p.clients.contains(&caller.client.name))
            .map(|p| PopulationSummary {
                name: p.name,
                purpose: p.purpose,
                members: p.members,
                clients: admin.then_some(p.clients),
            })
            .collect(),
    }))
}

/// `GET /v1/populations/{name}/members`
#[utoipa::path(get, path = "/v1/populations/{name}/members", tag = "follows",
    params(("name" = String, Path, description = "The population"),
        ("after" = Option<String>, Query, description = "The `next` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1,000 (default 100)")),
    responses((status = 200, description = "The population's size and a page of members", body = FollowPage),
        (status = 400, description = "Malformed `after` or `limit`", body = crate::openapi::ErrorBody),
        (status = 404, description = "The client shares no such population (`no-such-population`)", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn population_list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam(name): PathParam<String>,
    QueryParams(q): QueryParams<PageQuery>,
) -> Result<Json<FollowPage>, ApiError> {
    let set = population(&state, &caller, &name).await?;
    page(&state, set, q).await
}

/// `PUT /v1/populations/{name}/members/{id}`
#[utoipa::path(put, path = "/v1/populations/{name}/members/{id}", tag = "follows",
    params(("name" = String, Path, description = "The population"),
        ("id" = String, Path, description = "Any of the person's IDs")),
    responses((status = 201, description = "A member now", body = FollowChange),
        (status = 200, description = "A member already", body = FollowChange),
        (status = 400, description = "Malformed ID", body = crate::openapi::ErrorBody),
        (status = 404, description = "The client shares no such population", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn population_put(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam((name, id)): PathParam<(String, String)>,
) -> Result<Response, ApiError> {
    let set = population(&state, &caller, &name).await?;
    put_one(&state, &caller, set, &id).await
}

/// `DELETE /v1/populations/{name}/members/{id}`
#[utoipa::path(delete, path = "/v1/populations/{name}/members/{id}", tag = "follows",
    params(("name" = String, Path, description = "The population"),
        ("id" = String, Path, description = "The ID as it was added")),
    responses((status = 204, description = "Not a member any more"),
        (status = 400, description = "Malformed ID", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such population for this client, or the ID is not a member (`not-followed`)", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn population_delete(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam((name, id)): PathParam<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let set = population(&state, &caller, &name).await?;
    delete_one(&state, set, &id).await
}

/// `POST /v1/populations/{name}/members`
#[utoipa::path(post, path = "/v1/populations/{name}/members", tag = "follows",
    params(("name" = String, Path, description = "The population")),
    request_body(content = FollowRequest, content_type = "application/json"),
    responses((status = 200, description = "What changed", body = FollowChange),
        (status = 400, description = "No IDs, more than 10,000 or a malformed ID (nothing changed)", body = crate::openapi::ErrorBody),
        (status = 404, description = "The client shares no such population", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn population_post(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam(name): PathParam<String>,
    JsonBody(request): JsonBody<FollowRequest>,
) -> Result<Json<FollowChange>, ApiError> {
    let set = population(&state, &caller, &name).await?;
    change(&state, &caller, set, request).await
}
