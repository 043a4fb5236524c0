//! OAuth2 clients: JWT access tokens from issuers the operator configured
//! (`[[server.oauth2]]`: Maskinporten, HelseID, a company's own).
//!
//! A token is accepted when its signature verifies with a key from the
//! issuer's JWKS (asymmetric algorithms only; a token naming a key not
//! seen yet makes the JWKS be fetched again, at most once a minute, so a
//! key rotation needs nothing from the operator), its `iss` is the
//! issuer's exactly, its `aud` holds the configured audience, `exp` is in
//! the future and `nbf` in the past (within the leeway), and its scopes
//! hold every scope the issuer requires. The token's client id
//! (`client_id`, else `azp`, else `sub`) and the issuer name then find the
//! folkhub client created with `folkhub clients add NAME --auth oauth2
//! --issuer ISSUER --client-id ID`, whose basis and purpose apply.
//!
//! Validation uses the `jsonwebtoken` crate; only the JWKS cache and the
//! claim mapping are written here.

use std::collections::HashMap;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Fetches a URL's body (the JWKS); given by the host so this crate needs
/// no HTTP client of its own.
pub type Fetch = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>> + Send + Sync,
>;

/// One issuer as configured.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub name: String,
    pub issuer: String,
    pub jwks_url: String,
    pub audience: String,
    pub scopes: Vec<String>,
    pub leeway: Duration,
    /// The JWKS is fetched again for an unknown key at most this often
    /// (a token naming random keys must not make folkhub hammer the
    /// issuer); [`REFETCH_AFTER`] unless a test says otherwise.
    pub refetch_after: Duration,
}

struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
}

struct Issuer {
    config: IssuerConfig,
    keys: tokio::sync::Mutex<Keys>,
}

/// The configured issuers.
#[derive(Clone)]
pub struct OAuth2 {
    issuers: Arc<Vec<Issuer>>,
    fetch: Fetch,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.issuers.iter().map(|i| &i.config.name))
            .finish()
    }
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClient {
    /// The issuer's name in folkhub.toml.
    pub issuer: String,
    pub client_id: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: Option<String>,
    client_id: Option<String>,
    azp: Option<String>,
    sub: Option<String>,
    /// Space-separated (RFC 8693, Maskinporten, HelseID).
    scope: Option<String>,
    /// A list (some issuers).
    scp: Option<Vec<String>>,
}

/// The JWKS may be fetched again for an unknown key at most this often.
pub const REFETCH_AFTER: Duration = Duration::from_secs(60);

/// True when a bearer token has a JWT's shape (three base64url parts, a
/// JSON header); folkhub's own secrets start with `fh_`.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

impl OAuth2 {
    pub fn new(issuers: Vec<IssuerConfig>, fetch: Fetch) -> OAuth2 {
        OAuth2 {
            issuers: Arc::new(
                issuers
                    .into_iter()
                    .map(|config| Issuer {
                        config,
                        keys: tokio::sync::Mutex::new(Keys {
                            by_kid: HashMap::new(),
                            fetched: None,
                        }),
                    })
                    .collect(),
            ),
            fetch,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Checks a token; the error says what was wrong with it.
    pub async fn verify(&self, token: &str) -> Result<TokenClient, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("the bearer token is not a JWT: {e}"))?;
        // Which issuer: its `iss`, read before the signature is checked
        // only to choose the keys it must verify with.
        let unverified = unverified_claims(token)?;
        let iss = unverified
            .iss
            .ok_or("the token has no iss (issuer) claim")?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or_else(|| format!("tokens from issuer {iss:?} are not accepted here"))?;
        let kid = header
            .kid
            .clone()
            .ok_or("the token's header names no key (kid)")?;
        let (key, algorithm) = issuer.key(&kid, &self.fetch).await?;
        if header.alg != algorithm {
            return Err(format!(
                "the token is signed with {:?}, its key {kid:?} is for {algorithm:?}",
                header.alg
            ));
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_audience(&[&issuer.config.audience]);
        validation.leeway = issuer.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => {
                        "the token has expired; get a new one".to_string()
                    }
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
                    ErrorKind::InvalidAudience => format!(
                        "the token is not for this service (aud must hold {:?})",
                        issuer.config.audience
                    ),
                    ErrorKind::InvalidIssuer => "the token's issuer does not match".to_string(),
                    ErrorKind::InvalidSignature => {
                        "the token's signature does not verify".to_string()
                    }
                    ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
                    other => format!("the token is not valid: {other:?}"),
                }
            })?
            .claims;
        let scopes: Vec<String> = match (&claims.scope, &claims.scp) {
            (Some(s), _) => s.split_whitespace().map(str::to_string).collect(),
            (None, Some(list)) => list.clone(),
            (None, None) => Vec::new(),
        };
        let missing: Vec<&String> = issuer
            .config
            .scopes
            .iter()
            .filter(|s| !scopes.contains(s))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the token lacks the scope {} that issuer {} must grant for this service",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                issuer.config.name
            ));
        }
        let client_id = claims
            .client_id
            .or(claims.azp)
            .or(claims.sub)
            .ok_or("the token names no client (client_id, azp or sub)")?;
        Ok(TokenClient {
            issuer: issuer.config.name.clone(),
            client_id,
            scopes,
        })
    }
}

impl Issuer {
    async fn key(&self, kid: &str, fetch: &Fetch) -> Result<(DecodingKey, Algorithm), String> {
        let mut keys = self.keys.lock().await;
        if let Some(found) = keys.by_kid.get(kid) {
            return Ok(found.clone());
        }
        if keys
            .fetched
            .is_some_and(|at| at.elapsed() < self.config.refetch_after)
        {
            return Err(format!(
                "issuer {} publishes no key {kid:?} (its keys were fetched {} s ago)",
                self.config.name,
                keys.fetched.map_or(0, |at| at.elapsed().as_secs())
            ));
        }
        let body = (fetch)(self.config.jwks_url.clone()).await.map_err(|e| {
            format!(
                "the signing keys of issuer {} could not be fetched from {}: {e}",
                self.config.name, self.config.jwks_url
            )
        })?;
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|e| format!("{} is not a JWKS: {e}", self.config.jwks_url))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let Some(id) = &jwk.common.key_id else {
                continue;
            };
            let algorithm = match (&jwk.algorithm, &jwk.common.key_algorithm) {
                // Symmetric keys are never taken from a published set.
                (AlgorithmParameters::OctetKey(_), _) => continue,
                (_, Some(a)) => match Algorithm::from_str(&format!("{a:?}")) {
                    Ok(a) => a,
                    Err(_) => continue,
                },
                (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(_), None) => Algorithm::ES256,
                (AlgorithmParameters::OctetKeyPair(_), None) => Algorithm::EdDSA,
            };
            if matches!(
                algorithm,
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            ) {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                by_kid.insert(id.clone(), (key, algorithm));
            }
        }
        keys.by_kid = by_kid;
        keys.fetched = Some(Instant::now());
        keys.by_kid.get(kid).cloned().ok_or_else(|| {
            format!(
                "issuer {} publishes no key {kid:?} at {}",
                self.config.name, self.config.jwks_url
            )
        })
    }
}

fn unverified_claims(token: &str) -> Result<Claims, String> {
    use base64::Engine;
    let payload = token.split('.').nth(1).ok_or("the token is not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| "the token's claims are not base64url")?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the token's claims are not JSON: {e}"))
}
