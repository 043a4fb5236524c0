//! Credentials the host adds to a connector's requests. The connector never
//! sees them.
//!
//! Maskinporten: the host signs a JWT grant (RFC 7523, RS256) with the
//! operator's private key, posts it to the token endpoint, and caches the
//! access token until shortly before it expires.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use serde_json::json;
use sha2::Sha256;
use tokio::sync::Mutex;

/// Something that yields an `Authorization` header value.
pub trait CredentialSource: Send + Sync {
    fn authorization(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
}

/// A fixed bearer token.
pub struct StaticBearer(pub String);

impl CredentialSource for StaticBearer {
    fn authorization(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move { Ok(format!("Bearer {}", self.0)) })
    }
}

/// Maskinporten JWT-grant client with a token cache.
pub struct Maskinporten {
    token_endpoint: String,
    audience: String,
    client_id: String,
    scope: String,
    key_id: Option<String>,
    key: SigningKey<Sha256>,
    cached: Mutex<Option<(String, Instant)>>,
    /// Tokens fetched so far (tests check the cache works).
    pub fetched: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Maskinporten {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maskinporten")
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Reads an RSA private key from PEM (PKCS#8 or PKCS#1).
pub fn read_private_key(path: &Path) -> Result<RsaPrivateKey, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    RsaPrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
        .map_err(|e| {
            format!(
                "{} is not a PEM RSA private key (PKCS#8 or PKCS#1): {e}",
                path.display()
            )
        })
}

impl Maskinporten {
    pub fn new(
        token_endpoint: String,
        audience: String,
        client_id: String,
        scope: String,
        key_id: Option<String>,
        key: RsaPrivateKey,
    ) -> Maskinporten {
        Maskinporten {
            token_endpoint,
            audience,
            client_id,
            scope,
            key_id,
            key: SigningKey::<Sha256>::new(key),
            cached: Mutex::new(None),
            fetched: Default::default(),
        }
    }

    fn grant(&self) -> Result<String, String> {
        let now = chrono::Utc::now().timestamp();
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = json!(kid);
        }
        let jti: u128 = rand::random();
        let claims = json!({
            "aud": self.audience,
            "iss": self.client_id,
            "scope": self.scope,
            "iat": now,
            "exp": now + 100,
            "jti": format!("{jti:032x}"),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign_with_rng(&mut rand::thread_rng(), signing_input.as_bytes());
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        ))
    }

    async fn fetch(&self) -> Result<(String, Duration), String> {
        let grant = self.grant()?;
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={grant}"
        );
        let uri: http::Uri = self
            .token_endpoint
            .parse()
            .map_err(|e| format!("token_endpoint {:?}: {e}", self.token_endpoint))?;
        let host = uri
            .authority()
            .map(|a| a.to_string())
            .ok_or("token_endpoint has no host")?;
        let request = http::Request::post(uri)
            .header(http::header::HOST, host)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)).map_err(|never| match never {}))
            .map_err(|e| e.to_string())?;
        let options = wasmtime_wasi_http::RequestOptions {
            connect_timeout: Some(Duration::from_secs(10)),
            first_byte_timeout: Some(Duration::from_secs(20)),
            between_bytes_timeout: Some(Duration::from_secs(10)),
        };
        let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options))
            .await
            .map_err(|e| format!("token endpoint {}: {e:?}", self.token_endpoint))?;
        tokio::spawn(io);
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                format!(
                    "token endpoint {}: reading the answer: {e:?}",
                    self.token_endpoint
                )
            })?
            .to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
            format!(
                "token endpoint {} answered {status} with a non-JSON body",
                self.token_endpoint
            )
        })?;
        if !status.is_success() {
            return Err(format!(
                "token endpoint {} refused the grant ({status}): {} {}",
                self.token_endpoint,
                answer["error"].as_str().unwrap_or(""),
                answer["error_description"].as_str().unwrap_or("")
            ));
        }
        let token = answer["access_token"]
            .as_str()
            .ok_or("the token answer has no access_token")?
            .to_string();
        let lifetime = answer["expires_in"].as_u64().unwrap_or(60);
        Ok((token, Duration::from_secs(lifetime)))
    }
}

impl CredentialSource for Maskinporten {
    fn authorization(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            let mut cached = self.cached.lock().await;
            if let Some((token, expires)) = cached.as_ref()
                && *expires > Instant::now() + Duration::from_secs(10)
            {
                return Ok(format!("Bearer {token}"));
            }
            let (token, lifetime) = self.fetch().await?;
            self.fetched
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *cached = Some((token.clone(), Instant::now() + lifetime));
            Ok(format!("Bearer {token}"))
        })
    }
}

/// Sends one request (https with the web PKI's roots, or http) and reads
/// at most `limit` bytes of the answer: the status and the body. Ten
/// seconds to connect, `first_byte` to the first byte of the answer. The
/// API's OAuth2 JWKS and webhook deliveries go through here.
pub async fn send(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    first_byte: Duration,
    limit: usize,
) -> Result<(http::StatusCode, Bytes), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    let host = uri
        .authority()
        .map(|a| a.to_string())
        .ok_or_else(|| format!("{url:?} has no host"))?;
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::HOST, host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(body).map_err(|never| match never {}))
        .map_err(|e| e.to_string())?;
    let options = wasmtime_wasi_http::RequestOptions {
        connect_timeout: Some(Duration::from_secs(10)),
        first_byte_timeout: Some(first_byte),
        between_bytes_timeout: Some(Duration::from_secs(10)),
    };
    let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options))
        .await
        .map_err(|e| format!("{url}: {e:?}"))?;
    tokio::spawn(io);
    let status = response.status();
    let bytes = http_body_util::Limited::new(response.into_body(), limit)
        .collect()
        .await
        .map_err(|e| format!("{url}: reading the answer: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

/// Fetches a URL with GET: the API's OAuth2 issuers' JWKS. Twenty seconds
/// to the first byte; a body over 1 MiB or a status other than 2xx is an
/// error.
pub async fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let (status, bytes) = send(
        http::Method::GET,
        url,
        &[("accept", "application/json")],
        Bytes::new(),
        Duration::from_secs(20),
        1024 * 1024,
    )
    .await?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}"));
    }
    Ok(bytes.to_vec())
}

/// Fixed HTTP Basic credentials.
pub struct StaticBasic(String);

impl StaticBasic {
    pub fn new(username: &str, password: &str) -> StaticBasic {
        use base64::engine::general_purpose::STANDARD;
        StaticBasic(format!(
            "Basic {}",
            STANDARD.encode(format!("{username}:{password}"))
        ))
    }
}

impl CredentialSource for StaticBasic {
    fn authorization(
        &self,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// TLS settings for one connector: the public web roots plus the operator's
/// extra roots, and the client certificate when the register wants mTLS.
pub fn tls_config(
    extra_roots: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_roots {
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("tls_roots {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls_roots {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "tls_roots {} holds no PEM certificate",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("tls_roots {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
                .map_err(|e| format!("cert_file {}: {e}", cert_file.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("cert_file {}: {e}", cert_file.display()))?;
            if chain.is_empty() {
                return Err(format!(
                    "cert_file {} holds no PEM certificate",
                    cert_file.display()
                ));
            }
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                format!(
                    "key_file {}: not a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                    key_file.display()
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "cert_file {} and key_file {} do not make a client certificate: {e}",
                    cert_file.display(),
                    key_file.display()
                )
            })?
        }
    };
    Ok(Arc::new(config))
}

/// Builds the header credential source the operator configured (none for
/// mTLS, which works at the TLS layer).
pub fn from_config(
    credentials: &folkhub_manifest::Credentials,
) -> Result<Option<Arc<dyn CredentialSource>>, String> {
    Ok(Some(match credentials {
        folkhub_manifest::Credentials::Mtls { .. } => return Ok(None),
        folkhub_manifest::Credentials::Basic { username, password } => {
            Arc::new(StaticBasic::new(username, password))
        }
        folkhub_manifest::Credentials::Bearer { token } => Arc::new(StaticBearer(token.clone())),
        folkhub_manifest::Credentials::Maskinporten {
            token_endpoint,
            audience,
            client_id,
            key_file,
            scope,
            key_id,
        } => {
            let key = read_private_key(key_file)?;
            Arc::new(Maskinporten::new(
                token_endpoint.clone(),
                audience.clone(),
                client_id.clone(),
                scope.clone(),
                key_id.clone(),
                key,
            ))
        }
    }))
}
