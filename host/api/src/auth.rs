//! Clients: who is asking, with which legal basis, how often.
//!
//! A client sends its secret as `X-API-Key: <key>` (clients created with
//! `--auth api-key`, the default) or `Authorization: Bearer <token>`
//! (`--auth bearer`). The store keeps only the secret's SHA-256; secrets
//! are 256 random bits, so a slow password hash would add nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use folkhub_core::access::LegalBasis;
use folkhub_store::{Client, ClientAuth};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{ApiError, ApiState};

/// The header API keys travel in.
pub const API_KEY_HEADER: &str = "x-api-key";

/// A new secret for a client: `fh_` and 64 hex digits (256 random bits).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("fh_{}", hex::encode(bytes))
}

/// What the store keeps of a secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The client a request comes from, and its legal basis.
#[derive(Debug, Clone)]
pub struct Caller {
    pub client: Client,
    pub basis: Arc<LegalBasis>,
}

fn unauthenticated(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

/// The secret a request presents, and how.
fn presented(headers: &HeaderMap) -> Result<(ClientAuth, String), ApiError> {
    let key = headers.get(API_KEY_HEADER);
    let bearer = headers.get(axum::http::header::AUTHORIZATION);
    match (key, bearer) {
        (Some(_), Some(_)) => Err(unauthenticated(
            "send either X-API-Key or Authorization: Bearer, not both",
        )
        .on("Authorization")),
        (Some(key), None) => {
            let key = key
                .to_str()
                .map_err(|_| unauthenticated("X-API-Key is not text").on("X-API-Key"))?;
            Ok((ClientAuth::ApiKey, key.trim().to_string()))
        }
        (None, Some(value)) => {
            let value = value.to_str().unwrap_or("");
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or_else(|| {
                    unauthenticated("Authorization must be `Bearer <token>`").on("Authorization")
                })?;
            Ok((ClientAuth::Bearer, token.trim().to_string()))
        }
        (None, None) => Err(unauthenticated(
            "this route needs a client: send X-API-Key: <key> or Authorization: Bearer <token> \
             (an admin creates clients with `folkhub clients add`)",
        )),
    }
}

/// The client a request's credentials name (without counting the request
/// against any limit).
pub async fn identify(state: &ApiState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let (mut how, secret) = presented(headers)?;
    let mut hash = hash_secret(&secret);
    if how == ClientAuth::Bearer
        && let Some(oauth2) = &state.oauth2
        && crate::oauth2::looks_like_jwt(&secret)
    {
        let token = oauth2.verify(&secret).await.map_err(|why| {
            state.metrics.auth_failed();
            unauthenticated(why).on("Authorization")
        })?;
        how = ClientAuth::OAuth2;
        hash = ClientAuth::oauth2_subject(&token.issuer, &token.client_id);
        let Some(client) = state.clients.get(state, &hash).await? else {
            state.metrics.auth_failed();
            return Err(unauthenticated(format!(
                "the token is valid, but no active client is registered for client id {:?} of \
                 issuer {}; the admin creates one with `folkhub clients add NAME --auth oauth2 \
                 --issuer {} --client-id {}`",
                token.client_id, token.issuer, token.issuer, token.client_id
            )));
        };
        return caller_of(state, client, how);
    }
    let client = state.clients.get(state, &hash).await?;
    let Some(client) = client else {
        state.metrics.auth_failed();
        return Err(unauthenticated(
            "no active client has this secret (it may have been revoked); ask the admin",
        ));
    };
    caller_of(state, client, how)
}

/// The caller a found client makes, if it authenticated as it must.
fn caller_of(state: &ApiState, client: Client, how: ClientAuth) -> Result<Caller, ApiError> {
    if client.auth != how {
        state.metrics.auth_failed();
        let header = match client.auth {
            ClientAuth::ApiKey => "X-API-Key",
            ClientAuth::Bearer => "Authorization: Bearer",
            ClientAuth::OAuth2 => "Authorization: Bearer <a token from its issuer>",
        };
        return Err(unauthenticated(format!(
            "client {} sends its secret as {header}",
            client.name
        )));
    }
    let Some(basis) = state.bases.get(&client.basis).cloned() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "unknown-basis",
            format!(
                "client {} holds legal basis {:?}, which this server does not define; the admin \
                 must define it in [legal_bases] or move the client to another basis",
                client.name, client.basis
            ),
        ));
    };
    Ok(Caller {
        client,
        basis: Arc::new(basis),
    })
}

/// Middleware: finds the client, checks its rate limit and its quota of
/// persons, and puts a [`Caller`] in the request's extensions.
pub async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = identify(&state, request.headers()).await?;
    let client = &caller.client;
    if let Err(wait) = state.limits.take(client.id, client.rate_limit) {
        state.metrics.rate_limited(&client.name);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!(
                "client {} may send {} requests per second; wait and try again",
                client.name, client.rate_limit
            ),
        );
        e.retry_after = Some(wait);
        return Err(e);
    }
    if let Err(wait) = state.quotas.check(client.id, client.persons_per_minute) {
        state.metrics.rate_limited(&client.name);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota-exceeded",
            format!(
                "client {} may be sent {} persons per minute and has had them; wait and try \
                 again, or ask for smaller pages",
                client.name, client.persons_per_minute
            ),
        );
        e.retry_after = Some(wait);
        return Err(e);
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// Middleware for the admin's routes.
pub async fn require_admin(request: Request, next: Next) -> Result<Response, ApiError> {
    match request.extensions().get::<Caller>() {
        Some(caller) if caller.client.admin => Ok(next.run(request).await),
        Some(caller) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin-only",
            format!(
                "client {} is not an admin client; this route is for operators",
                caller.client.name
            ),
        )),
        None => Err(unauthenticated("this route needs an admin client")),
    }
}

/// How long a client found by its secret is trusted without asking the
/// store again: a revoke (from the CLI, another process) takes effect
/// within this time.
pub const CLIENT_CACHE_SECONDS: u64 = 5;

/// Clients recently found by their secret's hash. Unknown secrets are not
/// cached (a stream of random keys must not fill memory).
#[derive(Default)]
pub struct ClientCache {
    found: Mutex<HashMap<String, (Client, Instant)>>,
}

impl ClientCache {
    async fn get(&self, state: &ApiState, hash: &str) -> Result<Option<Client>, ApiError> {
        if let Some((client, at)) = self
            .found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(hash)
            && at.elapsed().as_secs() < CLIENT_CACHE_SECONDS
        {
            return Ok(Some(client.clone()));
        }
        let client = state
            .store
            .client_by_secret(hash)
            .await
            .map_err(ApiError::internal)?;
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        match &client {
            Some(c) => {
                found.insert(hash.to_string(), (c.clone(), Instant::now()));
            }
            None => {
                found.remove(hash);
            }
        }
        Ok(client)
    }
}

/// Token buckets per client: `rate` requests per second, bursts up to
/// one second's worth. Kept per host (several hosts each allow the rate).
#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<i64, (f64, Instant)>>,
}

impl RateLimits {
    /// Takes one token, or says how many seconds until one is available.
    pub fn take(&self, client: i64, rate: u32) -> Result<(), u64> {
        let rate = f64::from(rate.max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = buckets.entry(client).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// Persons sent per client per minute: a bucket of `quota` persons that
/// refills at `quota` per minute. A request is let in while the bucket is
/// not empty and its answer is charged in full, so a client gets at most
/// its quota plus one page a minute. Kept per host, like [`RateLimits`].
#[derive(Default)]
pub struct PersonQuotas {
    buckets: Mutex<HashMap<i64, (f64, Instant)>>,
}

impl PersonQuotas {
    fn refill(entry: &mut (f64, Instant), quota: u32) {
        let per_second = f64::from(quota.max(1)) / 60.0;
        let now = Instant::now();
        entry.0 = (entry.0 + now.duration_since(entry.1).as_secs_f64() * per_second)
            .min(f64::from(quota.max(1)));
        entry.1 = now;
    }

    /// Ok while the client has persons left; else the seconds to wait.
    pub fn check(&self, client: i64, quota: u32) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let entry = buckets
            .entry(client)
            .or_insert((f64::from(quota.max(1)), Instant::now()));
        Self::refill(entry, quota);
        if entry.0 > 0.0 {
            Ok(())
        } else {
            let per_second = f64::from(quota.max(1)) / 60.0;
            Err(((1.0 - entry.0) / per_second).ceil().max(1.0) as u64)
        }
    }

    /// Charges the persons an answer carried.
    pub fn charge(&self, client: i64, quota: u32, persons: usize) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let entry = buckets
            .entry(client)
            .or_insert((f64::from(quota.max(1)), Instant::now()));
        Self::refill(entry, quota);
        entry.0 -= persons as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_then_refuses() {
        let limits = RateLimits::default();
        for _ in 0..5 {
            assert!(limits.take(1, 5).is_ok());
        }
        assert_eq!(limits.take(1, 5), Err(1));
        // Another client has its own bucket.
        assert!(limits.take(2, 5).is_ok());
    }

    #[test]
    fn a_person_quota_lets_in_until_spent_then_refuses() {
        let quotas = PersonQuotas::default();
        assert!(quotas.check(1, 600).is_ok());
        quotas.charge(1, 600, 550);
        assert!(quotas.check(1, 600).is_ok());
        // One page over: charged in full, then refused until it refills
        // (600 a minute: 10 a second).
        quotas.charge(1, 600, 100);
        let wait = quotas.check(1, 600).expect_err("spent");
        assert!((1..=6).contains(&wait), "{wait}");
        assert!(quotas.check(2, 600).is_ok());
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 64);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert!(!hash_secret(&a).contains(&a[3..]));
    }
}
