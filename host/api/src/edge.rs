//! The HTTP edge: connections, TLS, timeouts, sizes and headers, before a
//! request reaches a route.
//!
//! What it promises (docs/operator-guide.md, "Security"):
//! - **Timeouts.** A request's head must arrive within `header_timeout`
//!   of the connection opening or the previous answer (hyper's header
//!   read timeout: a client trickling a byte every half second is cut
//!   off); a connection on which nothing moves for `idle_timeout` is
//!   closed ([`Idle`]); a request body must arrive within `body_timeout`.
//! - **A connection cap.** At most `max_connections` at once; further
//!   connections are closed as they are accepted (and counted).
//! - **TLS** (rustls) when configured, with optional or required client
//!   certificates checked against the operator's CA.
//! - **Sizes.** A body over `max_body` is 413, a URI over [`MAX_URI`]
//!   bytes 414, headers over [`MAX_HEADERS`] bytes 431, all as JSON
//!   errors like every other status (405 too).
//! - **Headers on every answer**: `Cache-Control: no-store` (person data
//!   must not sit in caches), `X-Content-Type-Options: nosniff`, a CSP
//!   that allows nothing, `Referrer-Policy: no-referrer`,
//!   `X-Frame-Options: DENY`, and HSTS over TLS.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ApiError;

/// The longest request target taken (bytes); longer is 414.
pub const MAX_URI: usize = 8 * 1024;
/// The most header bytes taken (names and values); more is 431.
pub const MAX_HEADERS: usize = 16 * 1024;

/// How the edge behaves (`[server]` of folkhub.toml).
#[derive(Clone)]
pub struct EdgeConfig {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// Bytes.
    pub max_body: usize,
    /// TLS, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeConfig")
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_body", &self.max_body)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_body: 1024 * 1024,
            tls: None,
        }
    }
}

/// TLS from PEM files: the server's certificate chain and key and, when
/// given, the CA that client certificates must chain to (`required`:
/// a connection without one is refused in the handshake).
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
    client_cert_required: bool,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| format!("server.tls.cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "server.tls.cert {}: no CERTIFICATE in the file",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("server.tls.key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("server.tls.client_ca {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("server.tls.client_ca {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("server.tls.client_ca {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if client_cert_required {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .map_err(|e| format!("server.tls.client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("server.tls: the key does not fit the certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` on `listener` with the edge's rules until `shutdown`;
/// answers requests in flight before it returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    config: EdgeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let tls = config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "connection from {peer} closed: {} connections are open (server.max_connections)",
                config.max_connections
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            .keep_alive(true);
        let watcher = graceful.watcher();
        let (tls, idle, handshake) = (tls.clone(), config.idle_timeout, config.header_timeout);
        tokio::spawn(async move {
            let _slot = slot;
            let io = Idle::new(stream, idle);
            let result = match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(io), service))
                        .await
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) = tokio::time::timeout(handshake, acceptor.accept(io)).await
                    else {
                        tracing::debug!("TLS handshake with {peer} failed or timed out");
                        return;
                    };
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A stream that fails with `TimedOut` when nothing was read or written
/// for its idle time (hyper then closes the connection).
struct Idle<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S> Idle<S> {
    fn new(inner: S, idle: Duration) -> Idle<S> {
        Idle {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn moved(&mut self) {
        let at = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(at);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "idle connection closed")
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                self.moved();
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The headers every answer carries.
fn secure(response: &mut Response, tls: bool) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// Middleware: sizes and the body's deadline before the routes, security
/// headers after them. [`crate::app`] adds it outermost, so tests that
/// call the router directly go through it too.
pub async fn guard(
    State(config): State<Arc<EdgeConfig>>,
    request: Request,
    next: Next,
) -> Response {
    use tracing::Instrument;
    let tls = config.tls.is_some();
    let span = tracing::info_span!(
        "request",
        id = REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        method = %request.method(),
        route = %route_of(request.uri().path()),
        status = tracing::field::Empty,
    );
    async move {
        let mut response = match checked(&config, request).await {
            Ok(request) => next.run(request).await,
            Err(error) => error.into_response(),
        };
        secure(&mut response, tls);
        tracing::Span::current().record("status", response.status().as_u16());
        response
    }
    .instrument(span)
    .await
}

/// Requests this process has taken (the request span's id).
static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A path as logs may show it: a segment that could be a person's ID or
/// key (six digits or more) is written `{id}`, so no log line names a
/// person.
fn route_of(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.chars().filter(char::is_ascii_digit).count() >= 6
                || (!segment.is_empty() && segment.chars().all(|c| c.is_ascii_digit()))
            {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn checked(config: &EdgeConfig, request: Request) -> Result<Request, ApiError> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > MAX_URI {
        return Err(ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
            format!(
                "the request target has {target} bytes, more than the {MAX_URI} this API takes; \
                 send many IDs with POST /v1/persons/batch"
            ),
        ));
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers > MAX_HEADERS {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            format!(
                "the request's headers have {headers} bytes, more than the {MAX_HEADERS} this API takes"
            ),
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!(
                "the body is larger than {} bytes (server.max_body); send fewer IDs per batch",
                config.max_body
            ),
        )
        .on("body")
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body as u64) {
        return Err(too_large());
    }
    if matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && declared.is_none_or(|n| n == 0)
        && !request.headers().contains_key(header::TRANSFER_ENCODING)
    {
        return Ok(request);
    }
    // Read the body here, within its deadline and size, so no route waits
    // on a slow body or reads a huge one.
    let (parts, body) = request.into_parts();
    let bytes = tokio::time::timeout(
        config.body_timeout,
        axum::body::to_bytes(body, config.max_body),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body-timeout",
            format!(
                "the body did not arrive within {} s",
                config.body_timeout.as_secs()
            ),
        )
        .on("body")
    })?
    .map_err(|e| {
        // `to_bytes` fails on the limit or on a broken body.
        if e.to_string().contains("length limit") {
            too_large()
        } else {
            ApiError::bad(
                "invalid-body",
                "body",
                format!("the body could not be read: {e}"),
            )
        }
    })?;
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}
