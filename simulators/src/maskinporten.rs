//! A Maskinporten-style token endpoint: the client posts a JWT grant
//! (RFC 7523) signed RS256 with the key it registered; the answer is an
//! access token for the scopes the client is allowed. The simulated
//! registers accept only tokens issued here.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use rand::Rng;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::Shared;

/// A client registered with the token endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub public_key: RsaPublicKey,
    pub scopes: Vec<String>,
}

/// Issued tokens and registered clients.
#[derive(Debug, Default)]
pub struct Tokens {
    clients: Mutex<HashMap<String, Client>>,
    issued: Mutex<HashMap<String, (Vec<String>, i64)>>,
    /// Seconds a token lives (Maskinporten: 120 by default).
    pub lifetime: Mutex<i64>,
    pub issued_count: std::sync::atomic::AtomicU64,
}

impl Tokens {
    /// No clients yet; tokens live `lifetime` seconds.
    pub fn new(lifetime: i64) -> Tokens {
        Tokens {
            lifetime: Mutex::new(lifetime),
            ..Default::default()
        }
    }

    pub fn register(&self, client: Client) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(client.client_id.clone(), client);
        }
    }

    /// The scopes of a valid token.
    pub fn check(&self, token: &str) -> Option<Vec<String>> {
        let issued = self.issued.lock().ok()?;
        let (scopes, expires) = issued.get(token)?;
        (*expires > Utc::now().timestamp()).then(|| scopes.clone())
    }

    /// Issues a token directly (for tests of the register endpoints).
    pub fn issue(&self, scopes: Vec<String>) -> String {
        let token: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(40)
            .map(char::from)
            .collect();
        let lifetime = self.lifetime.lock().map(|l| *l).unwrap_or(120);
        if let Ok(mut issued) = self.issued.lock() {
            issued.insert(token.clone(), (scopes, Utc::now().timestamp() + lifetime));
        }
        self.issued_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        token
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    assertion: Option<String>,
}

fn oauth_error(code: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

pub async fn token(
    State(shared): State<Shared>,
    axum::Form(form): axum::Form<TokenForm>,
) -> Response {
    if form.grant_type.as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return oauth_error(
            "unsupported_grant_type",
            "grant_type must be urn:ietf:params:oauth:grant-type:jwt-bearer",
        );
    }
    let Some(assertion) = form.assertion else {
        return oauth_error("invalid_request", "assertion is missing");
    };
    match verify(&shared, &assertion) {
        Ok((scopes, lifetime)) => {
            let token = shared.tokens.issue(scopes.clone());
            Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime, "scope": scopes.join(" ")})).into_response()
        }
        Err(e) => oauth_error("invalid_grant", &e),
    }
}

fn verify(shared: &Shared, assertion: &str) -> Result<(Vec<String>, i64), String> {
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err("assertion is not a JWS compact serialisation".into());
    };
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| format!("bad base64url: {e}"))
    };
    let header: Value =
        serde_json::from_slice(&decode(header)?).map_err(|e| format!("bad header: {e}"))?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {} not supported; use RS256", header["alg"]));
    }
    let claims_json: Value =
        serde_json::from_slice(&decode(claims)?).map_err(|e| format!("bad claims: {e}"))?;
    let issuer = claims_json["iss"].as_str().ok_or("iss is missing")?;
    let client = shared
        .tokens
        .clients
        .lock()
        .map_err(|_| "internal error".to_string())?
        .get(issuer)
        .cloned()
        .ok_or_else(|| format!("client {issuer} is not registered"))?;
    let signed = format!("{}.{}", parts[0], parts[1]);
    let signature = Signature::try_from(decode(signature)?.as_slice())
        .map_err(|e| format!("bad signature: {e}"))?;
    VerifyingKey::<Sha256>::new(client.public_key.clone())
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "signature does not verify with the registered key".to_string())?;
    let now = Utc::now().timestamp();
    let exp = claims_json["exp"].as_i64().ok_or("exp is missing")?;
    let iat = claims_json["iat"].as_i64().ok_or("iat is missing")?;
    if exp < now || exp - iat > 120 {
        return Err("the grant is expired or lives longer than 120 seconds".into());
    }
    if claims_json["aud"].as_str() != Some(shared.issuer().as_str()) {
        return Err(format!("aud must be {}", shared.issuer()));
    }
    let requested: Vec<String> = claims_json["scope"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    if requested.is_empty() {
        return Err("scope is missing".into());
    }
    if let Some(denied) = requested.iter().find(|s| !client.scopes.contains(s)) {
        return Err(format!("client {issuer} is not allowed scope {denied}"));
    }
    let lifetime = shared.tokens.lifetime.lock().map(|l| *l).unwrap_or(120);
    Ok((requested, lifetime))
}
