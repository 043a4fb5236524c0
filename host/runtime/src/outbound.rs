//! Outbound HTTP policy, in one place.
//!
//! A connector reaches the network only through `wasi:http`, and every
//! request passes here: the origin must be one the release requests in the
//! manifest **and** the operator granted; the host resolves the name itself
//! and refuses private, loopback, link-local and metadata addresses unless
//! the operator allowed private networks for this connector; timeouts are
//! clamped to what is left of the call's deadline; the response body is cut
//! off at the size cap; and credentials are added here, so they never enter
//! the sandbox. Redirects are not followed by wasi:http, so each hop a
//! connector makes is a new request checked again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderName;
use http_body_util::BodyExt;
use wasmtime_wasi_http::{
    Error as HttpError, ForbiddenHeaderFilter, RequestOptions, WasiBody, WasiHttpHooks,
};

use crate::credentials::CredentialSource;

/// Who may be called, decided once per connector.
#[derive(Debug, Clone, Default)]
pub struct HttpPolicy {
    /// Origins (`scheme://host:port`) the release requests and the operator granted.
    pub allowed: BTreeSet<String>,
    /// Origins requested but not granted, for the refusal message.
    pub requested_not_granted: BTreeSet<String>,
    pub allow_private_networks: bool,
    pub max_response_bytes: u64,
}

impl HttpPolicy {
    /// Intersects what the release requests with what the operator granted.
    pub fn new(
        requested: &[String],
        granted: &[String],
        allow_private_networks: bool,
        max_response_bytes: u64,
    ) -> HttpPolicy {
        let granted: BTreeSet<String> = granted
            .iter()
            .filter_map(|g| folkhub_manifest::registry::origin_of(g))
            .collect();
        let requested: BTreeSet<String> = requested
            .iter()
            .filter_map(|r| folkhub_manifest::registry::origin_of(r))
            .collect();
        HttpPolicy {
            allowed: requested.intersection(&granted).cloned().collect(),
            requested_not_granted: requested.difference(&granted).cloned().collect(),
            allow_private_networks,
            max_response_bytes,
        }
    }
}

/// Is this an address a connector must not reach without an explicit grant?
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64/10 carrier NAT
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// The hooks wasmtime-wasi-http calls for every outgoing request of one call.
pub struct PolicyHooks {
    pub policy: Arc<HttpPolicy>,
    pub credentials: Option<Arc<dyn CredentialSource>>,
    /// TLS for this connector: trusted roots and, for mTLS, the client certificate.
    pub tls: Arc<rustls::ClientConfig>,
    /// Values for `{{secret:NAME}}` placeholders in request bodies.
    pub secrets: Arc<BTreeMap<String, String>>,
    pub deadline: Instant,
    pub hostcalls: Arc<AtomicU64>,
    pub max_hostcalls: u64,
    pub connector: Arc<str>,
    /// Requests sent to the register (what the cost ledger counts): one per
    /// request that passed the policy and went out, whatever its answer.
    pub upstream_calls: Arc<AtomicU64>,
}

impl WasiHttpHooks for PolicyHooks {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        // The guest may not set credentials itself; the host adds them.
        Arc::new(|name: &HeaderName| {
            *name == http::header::AUTHORIZATION
                || wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
        })
    }

    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        let _ = fut;
        let policy = self.policy.clone();
        let credentials = self.credentials.clone();
        let tls = self.tls.clone();
        let secrets = self.secrets.clone();
        let deadline = self.deadline;
        let over_limit = self.hostcalls.fetch_add(1, Ordering::Relaxed) + 1 > self.max_hostcalls;
        let connector = self.connector.clone();
        let upstream_calls = self.upstream_calls.clone();
        Box::new(async move {
            // Checks and credentials before anything is sent. A request
            // refused here still takes the guest's body (read and dropped in
            // the background): otherwise the guest, still writing it, sees
            // only a closed stream instead of why the request was refused.
            let prepared: Result<(Vec<IpAddr>, u16, Duration), HttpError> = async {
                if over_limit {
                    return Err(HttpError::HttpRequestDenied);
                }
                let uri = request.uri().clone();
                let Some(origin) = folkhub_manifest::registry::origin_of(&uri.to_string()) else {
                    return Err(HttpError::HttpRequestUriInvalid);
                };
                if !policy.allowed.contains(&origin) {
                    let why = if policy.requested_not_granted.contains(&origin) {
                        "the release requests it but the operator has not granted it"
                    } else {
                        "the release does not request it in registry-manifest.toml"
                    };
                    tracing::warn!(connector = %connector, %origin, "outbound request denied: {why}");
                    return Err(HttpError::HttpRequestDenied);
                }
                // Resolve here and refuse private ranges unless allowed.
                let host = uri
                    .host()
                    .unwrap_or_default()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let port = uri
                    .port_u16()
                    .unwrap_or(if uri.scheme_str() == Some("https") {
                        443
                    } else {
                        80
                    });
                let addresses: Vec<IpAddr> = match tokio::net::lookup_host((host.as_str(), port)).await
                {
                    Ok(list) => list.map(|a| a.ip()).collect(),
                    Err(_) => {
                        return Err(HttpError::DnsError {
                            rcode: None,
                            info_code: None,
                        });
                    }
                };
                if !policy.allow_private_networks && addresses.iter().any(|ip| is_private(*ip)) {
                    tracing::warn!(connector = %connector, %origin, "outbound request denied: resolves to a private address");
                    return Err(HttpError::DestinationIpProhibited);
                }
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(HttpError::ConnectionTimeout);
                }
                if let Some(source) = credentials {
                    let value = source.authorization().await.map_err(|e| {
                        tracing::warn!(connector = %connector, "credentials unavailable: {e}");
                        HttpError::InternalError(Some(format!("credentials unavailable: {e}")))
                    })?;
                    let header = http::HeaderValue::from_str(&value)
                        .map_err(|_| HttpError::InternalError(Some("bad credential header".into())))?;
                    request
                        .headers_mut()
                        .insert(http::header::AUTHORIZATION, header);
                }
                Ok((addresses, port, remaining))
            }
            .await;
            let (addresses, port, remaining) = match prepared {
                Ok(prepared) => prepared,
                Err(e) => {
                    let body = request.into_body();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(30),
                            http_body_util::Limited::new(body, MAX_REQUEST_BODY).collect(),
                        )
                        .await;
                    });
                    return Err(e);
                }
            };
            let clamp = |d: Option<Duration>| Some(d.map_or(remaining, |d| d.min(remaining)));
            let options = RequestOptions {
                connect_timeout: clamp(options.and_then(|o| o.connect_timeout)),
                first_byte_timeout: clamp(options.and_then(|o| o.first_byte_timeout)),
                between_bytes_timeout: clamp(options.and_then(|o| o.between_bytes_timeout)),
            };
            let request = substitute_secrets(request, &secrets, &connector).await?;
            upstream_calls.fetch_add(1, Ordering::Relaxed);
            let (response, io) = send(request, &addresses, port, tls, options).await?;
            let limit = policy.max_response_bytes;
            if let Some(length) = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                && length > limit
            {
                return Err(HttpError::HttpResponseBodySize(Some(length)));
            }
            let response = response.map(|body| {
                CappedBody {
                    inner: body.boxed_unsync(),
                    seen: 0,
                    limit,
                }
                .boxed_unsync()
            });
            Ok((
                response,
                Box::new(io) as Box<dyn Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

/// Largest request body the host reads to replace secret placeholders.
const MAX_REQUEST_BODY: usize = 4 << 20;
const PLACEHOLDER: &str = "{{secret:";

/// Replaces `{{secret:NAME}}` in the request body with the operator's
/// secret. A placeholder the operator did not configure refuses the request
/// (and says so in the log) rather than sending the placeholder upstream.
async fn substitute_secrets(
    request: http::Request<WasiBody>,
    secrets: &BTreeMap<String, String>,
    connector: &str,
) -> Result<http::Request<WasiBody>, HttpError> {
    if request.method() == http::Method::GET || request.method() == http::Method::HEAD {
        return Ok(request);
    }
    let (mut parts, body) = request.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_REQUEST_BODY)
        .collect()
        .await
        .map_err(|_| HttpError::HttpRequestBodySize(None))?
        .to_bytes();
    let bytes = if memchr_placeholder(&bytes) {
        let text = std::str::from_utf8(&bytes).map_err(|_| HttpError::HttpRequestDenied)?;
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find(PLACEHOLDER) {
            out.push_str(&rest[..start]);
            let after = &rest[start + PLACEHOLDER.len()..];
            let Some(end) = after.find("}}") else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let name = &after[..end];
            let Some(value) = secrets.get(name) else {
                tracing::warn!(connector = %connector, secret = %name, "outbound request denied: the connector asks for secret {name:?}, which is not set under [connectors.{connector}.secrets]");
                return Err(HttpError::HttpRequestDenied);
            };
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Bytes::from(out)
    } else {
        bytes
    };
    parts.headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(bytes.len()),
    );
    let body = http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok(http::Request::from_parts(parts, body))
}

fn memchr_placeholder(bytes: &[u8]) -> bool {
    bytes
        .windows(PLACEHOLDER.len())
        .any(|w| w == PLACEHOLDER.as_bytes())
}

/// Sends over a connection to one of the addresses the policy checked (so
/// a second DNS answer cannot point the request elsewhere), with this
/// connector's TLS settings.
async fn send(
    mut request: http::Request<WasiBody>,
    addresses: &[IpAddr],
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    options: RequestOptions,
) -> Result<
    (
        http::Response<WasiBody>,
        impl Future<Output = Result<(), HttpError>> + Send + use<>,
    ),
    HttpError,
> {
    let connect_timeout = options.connect_timeout.unwrap_or(Duration::from_secs(30));
    let first_byte_timeout = options
        .first_byte_timeout
        .unwrap_or(Duration::from_secs(30));
    let uri = request.uri().clone();
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let mut stream = None;
    let mut last = HttpError::DestinationNotFound;
    for ip in addresses {
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect((*ip, port)))
            .await
        {
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = HttpError::ConnectionRefused
            }
            Ok(Err(e)) => last = HttpError::Connect(e),
            Err(_) => last = HttpError::ConnectionTimeout,
        }
    }
    let stream = stream.ok_or(last)?;
    if request.headers().get(http::header::HOST).is_none()
        && let Some(authority) = uri.authority()
        && let Ok(value) = http::HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(http::header::HOST, value);
    }
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let (mut sender, conn) = if uri.scheme_str() == Some("https") {
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => rustls::pki_types::ServerName::from(ip),
            Err(_) => rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|_| HttpError::HttpRequestUriInvalid)?,
        };
        let tls_stream = tokio::time::timeout(
            connect_timeout,
            tokio_rustls::TlsConnector::from(tls).connect(name, stream),
        )
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(tls_error)?;
        let (sender, conn) = tokio::time::timeout(
            connect_timeout,
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls_stream)),
        )
        .await
        .map_err(|_| HttpError::ConnectionTimeout)??;
        (sender, tokio::spawn(conn))
    } else {
        let (sender, conn) = tokio::time::timeout(
            connect_timeout,
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)),
        )
        .await
        .map_err(|_| HttpError::ConnectionTimeout)??;
        (sender, tokio::spawn(conn))
    };
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)?
        .map_err(|e| tls_alert(&e).unwrap_or_else(|| HttpError::from(e)))?;
    let response = response.map(|body| {
        body.map_err(|e| {
            if e.is_timeout() {
                HttpError::HttpResponseTimeout
            } else {
                HttpError::from(e)
            }
        })
        .boxed_unsync()
    });
    Ok((response, async move {
        match conn.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(HttpError::from(e)),
            Err(_) => Err(HttpError::ConnectionTerminated),
        }
    }))
}

/// With TLS 1.3 a server refuses a client certificate after the client
/// finished its handshake, so the alert shows up on the first read.
fn tls_alert(e: &hyper::Error) -> Option<HttpError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(rustls::Error::AlertReceived(alert)) = s.downcast_ref::<rustls::Error>() {
            return Some(HttpError::TlsAlertReceived {
                alert_id: Some(u8::from(*alert)),
                alert_message: Some(format!("{alert:?}")),
            });
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(rustls::Error::AlertReceived(alert)) =
                io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(HttpError::TlsAlertReceived {
                alert_id: Some(u8::from(*alert)),
                alert_message: Some(format!("{alert:?}")),
            });
        }
        source = s.source();
    }
    None
}

fn tls_error(e: std::io::Error) -> HttpError {
    if let Some(rustls::Error::AlertReceived(alert)) =
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
    {
        return HttpError::TlsAlertReceived {
            alert_id: Some(u8::from(*alert)),
            alert_message: Some(format!("{alert:?}")),
        };
    }
    if let Some(rustls::Error::InvalidCertificate(_)) =
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
    {
        return HttpError::TlsCertificateError;
    }
    let text = e.to_string();
    if text.contains("certificate") || text.contains("Certificate") {
        HttpError::TlsCertificateError
    } else if text.contains("alert") {
        HttpError::TlsAlertReceived {
            alert_id: None,
            alert_message: Some(text),
        }
    } else {
        HttpError::Tls(e)
    }
}

/// A response body that fails once more than `limit` bytes went through.
struct CappedBody {
    inner: WasiBody,
    seen: u64,
    limit: u64,
}

impl http_body::Body for CappedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    if self.seen > self.limit {
                        return Poll::Ready(Some(Err(HttpError::HttpResponseBodySize(Some(
                            self.seen,
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn intersection_and_private_ranges() {
        let p = HttpPolicy::new(
            &["https://a.example".into(), "http://127.0.0.1:9".into()],
            &["https://a.example:443".into(), "https://b.example".into()],
            false,
            10,
        );
        assert!(p.allowed.contains("https://a.example:443"));
        assert!(!p.allowed.contains("https://b.example:443"));
        assert!(p.requested_not_granted.contains("http://127.0.0.1:9"));
        assert!(is_private("127.0.0.1".parse().unwrap()));
        assert!(is_private("169.254.169.254".parse().unwrap()));
        assert!(is_private("10.1.2.3".parse().unwrap()));
        assert!(is_private("::1".parse().unwrap()));
        assert!(!is_private("193.69.2.1".parse().unwrap()));
    }
}
