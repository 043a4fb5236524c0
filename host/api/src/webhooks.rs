//! Webhook subscriptions over HTTP: a client subscribes a URL to changes
//! of the persons it follows; an admin client also to operational events.
//! `folkhub serve` fills the outbox and delivers (see `folkhub_app::webhooks`).

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use base64::Engine;
use folkhub_store::{DeliveryAttempt, NewSubscription, Subscription, WebhookMessage};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::extract::{JsonBody, PathParam, QueryParams, limit};
use crate::{ApiError, ApiState};

/// Events about followed persons, for every client.
pub const PERSON_EVENTS: &[&str] = &[
    "person.changed",
    "person.merged",
    "person.ids-changed",
    "person.deceased",
    "person.protection-activated",
];

/// Operational events, for admin clients.
pub const ADMIN_EVENTS: &[&str] = &[
    "upgrade.deadline",
    "breaker.opened",
    "budget.warning",
    "run.failed",
];

/// Subscriptions one client may have.
pub const MAX_SUBSCRIPTIONS: usize = 10;

/// A subscription to create.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    /// Where deliveries are POSTed: `https://…` (`http://` only where the
    /// operator allows it).
    pub url: String,
    /// Event types; every type the client may have when left out.
    #[serde(default)]
    pub events: Option<Vec<String>>,
}

/// A subscription as created: the only time its secret is shown.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Subscribed {
    #[serde(flatten)]
    pub subscription: Subscription,
    /// `whsec_…`: verify each delivery's `webhook-signature` with it
    /// (Standard Webhooks). Shown only now.
    pub secret: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<Subscription>,
}

/// A message with its attempts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    #[serde(flatten)]
    pub message: WebhookMessage,
    pub attempts: Vec<DeliveryAttempt>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Deliveries {
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitQuery {
    limit: Option<String>,
}

fn check_url(url: &str, allow_http: bool) -> Result<(), ApiError> {
    let bad = |why: String| ApiError::bad("invalid-url", "url", why);
    if url.len() > 2000 {
        return Err(bad("the URL is longer than 2,000 characters".into()));
    }
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_http => {}
        Some("http") => {
            return Err(bad(
                "deliveries go over https:// only (the operator allows http:// with webhooks.allow_http)".into(),
            ));
        }
        _ => return Err(bad(format!("{url:?}: use an https:// URL"))),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad(format!("{url:?} names no host")));
    };
    if authority.as_str().contains('@') {
        return Err(bad(
            "no user name or password in the URL: deliveries are signed instead".into(),
        ));
    }
    Ok(())
}

/// A new signing secret: 32 random bytes, as Standard Webhooks writes it.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A subscription the caller may see: its own, or any for an admin. Not
/// there and not its own answer alike.
async fn own(state: &ApiState, caller: &Caller, id: i64) -> Result<Subscription, ApiError> {
    state
        .store
        .subscriptions()
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|s| s.id == id && (caller.client.admin || s.client == caller.client.name))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no-such-webhook",
                "this client has no webhook subscription with this id (GET /v1/webhooks lists them)",
            )
        })
}

fn parse_id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad(
            "invalid-path",
            "id",
            format!("{text:?}: a subscription id is a number"),
        )
    })
}

/// `POST /v1/webhooks`: subscribe a URL.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks",
    request_body(content = SubscribeRequest, content_type = "application/json"),
    responses((status = 201, description = "Subscribed; the secret is shown only now", body = Subscribed),
        (status = 400, description = "A URL that is not https:// (`invalid-url`), an unknown event type (`invalid-parameter`), or too many subscriptions", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn subscribe(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    JsonBody(request): JsonBody<SubscribeRequest>,
) -> Result<(StatusCode, Json<Subscribed>), ApiError> {
    check_url(&request.url, state.webhooks_allow_http)?;
    let admin = caller.client.admin;
    let events = match request.events {
        Some(events) if events.is_empty() => {
            return Err(ApiError::bad(
                "invalid-parameter",
                "events",
                "name at least one event type, or leave `events` out for all",
            ));
        }
        Some(events) => {
            for (i, e) in events.iter().enumerate() {
                if ADMIN_EVENTS.contains(&e.as_str()) && !admin {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "admin-only",
                        format!("events[{i}]: {e:?} is an operational event, for admin clients"),
                    )
                    .on(format!("events[{i}]")));
                }
                if !PERSON_EVENTS.contains(&e.as_str()) && !ADMIN_EVENTS.contains(&e.as_str()) {
                    return Err(ApiError::bad(
                        "invalid-parameter",
                        format!("events[{i}]"),
                        format!(
                            "{e:?} is not an event type; the types are {}{}",
                            PERSON_EVENTS.join(", "),
                            if admin {
                                format!(", {}", ADMIN_EVENTS.join(", "))
                            } else {
                                String::new()
                            }
                        ),
                    ));
                }
            }
            let mut events = events;
            events.sort();
            events.dedup();
            events
        }
        None => PERSON_EVENTS
            .iter()
            .chain(if admin { ADMIN_EVENTS } else { &[] })
            .map(|e| e.to_string())
            .collect(),
    };
    let store = &state.store;
    let active = store
        .subscriptions()
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .filter(|s| s.client == caller.client.name && s.disabled_at.is_none())
        .count();
    if active >= MAX_SUBSCRIPTIONS {
        return Err(ApiError::bad(
            "too-many-webhooks",
            "url",
            format!(
                "this client has {active} subscriptions, the most it may have; delete one first"
            ),
        ));
    }
    let secret = new_secret();
    let subscription = store
        .add_subscription(NewSubscription {
            client: caller.client.name.clone(),
            url: request.url,
            secret: secret.clone(),
            events,
        })
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(Subscribed {
            subscription,
            secret,
        }),
    ))
}

/// `GET /v1/webhooks`: this client's subscriptions (every one for an admin).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "Subscriptions, disabled ones included", body = SubscriptionList),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<SubscriptionList>, ApiError> {
    let subscriptions = state
        .store
        .subscriptions()
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .filter(|s| caller.client.admin || s.client == caller.client.name)
        .collect();
    Ok(Json(SubscriptionList { subscriptions }))
}

/// `DELETE /v1/webhooks/{id}`: stop a subscription.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = i64, Path, description = "The subscription")),
    responses((status = 204, description = "Stopped; messages not yet delivered are not sent"),
        (status = 400, description = "The id is not a number", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such subscription of this client (`no-such-webhook`)", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn delete(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    let sub = own(&state, &caller, parse_id(&id)?).await?;
    state
        .store
        .disable_subscription(sub.id, &format!("deleted by client {}", caller.client.name))
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/webhooks/{id}/deliveries`: messages and every attempt.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = i64, Path, description = "The subscription"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1,000 (default 100)")),
    responses((status = 200, description = "The newest messages with their attempts: delivered, waiting for a retry, or given up", body = Deliveries),
        (status = 400, description = "The id is not a number, or a malformed limit", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such subscription of this client", body = crate::openapi::ErrorBody),
        crate::openapi::ClientErrors),
    security(("api_key" = []), ("bearer" = [])))]
pub(crate) async fn deliveries(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathParam(id): PathParam<String>,
    QueryParams(q): QueryParams<LimitQuery>,
) -> Result<Json<Deliveries>, ApiError> {
    let sub = own(&state, &caller, parse_id(&id)?).await?;
    let limit = limit(q.limit.as_deref(), 100, 1000)?;
    let store = &state.store;
    let mut deliveries = Vec::new();
    for message in store
        .messages(sub.id, limit)
        .await
        .map_err(ApiError::internal)?
    {
        let attempts = store
            .attempts(&message.id)
            .await
            .map_err(ApiError::internal)?;
        deliveries.push(Delivery { message, attempts });
    }
    Ok(Json(Deliveries { deliveries }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_with_a_host_and_no_credentials() {
        assert!(check_url("https://school.example/hooks", false).is_ok());
        assert!(check_url("http://school.example/hooks", false).is_err());
        assert!(check_url("http://127.0.0.1:9/hooks", true).is_ok());
        assert!(check_url("ftp://school.example/", true).is_err());
        assert!(check_url("https://user:pw@school.example/", false).is_err());
        assert!(check_url("/relative", false).is_err());
        assert!(new_secret().starts_with("whsec_"));
    }
}
