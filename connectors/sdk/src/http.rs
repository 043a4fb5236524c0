//! Blocking HTTP for connectors over `wasi:http/outgoing-handler`.
//!
//! Status codes map to `connector-error` the same way for every register:
//! 401/403 unauthorized, 410 upstream-version-gone, 429 rate-limited (with
//! Retry-After), 5xx upstream-unavailable; a request the host refuses is
//! `denied`.

use crate::ConnectorError;

/// A response: status, headers (lower-case names) and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Maps the status to the contract's errors; `Ok` for 2xx and 404
    /// (callers decide what 404 means).
    pub fn check(self) -> Result<Response, ConnectorError> {
        let snippet =
            || String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned();
        match self.status {
            200..=299 | 304 | 404 => Ok(self),
            401 | 403 => Err(ConnectorError::Unauthorized(format!(
                "HTTP {}: {}",
                self.status,
                snippet()
            ))),
            410 => Err(ConnectorError::UpstreamVersionGone(format!(
                "HTTP 410: {}",
                snippet()
            ))),
            429 => {
                // Folkeregisteret sends Retry-After in milliseconds; a plain
                // HTTP Retry-After is seconds. Values under 1000 are read as seconds.
                let raw: u32 = self
                    .header("retry-after")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(1000);
                let ms = if raw < 1000 {
                    raw.saturating_mul(1000)
                } else {
                    raw
                };
                Err(ConnectorError::RateLimited(ms))
            }
            400 | 422 => Err(ConnectorError::BadInput(format!(
                "HTTP {}: {}",
                self.status,
                snippet()
            ))),
            500..=599 => Err(ConnectorError::UpstreamUnavailable(format!(
                "HTTP {}: {}",
                self.status,
                snippet()
            ))),
            other => Err(ConnectorError::Other(format!(
                "unexpected HTTP {other}: {}",
                snippet()
            ))),
        }
    }
}

/// Sends a request and reads the whole response.
#[cfg(target_arch = "wasm32")]
pub fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, ConnectorError> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};

    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err(ConnectorError::BadInput(format!(
            "URL {url} must start with http:// or https://"
        )));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| ConnectorError::Other(format!("header {name}: {e:?}")))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        other => Method::Other(other.to_string()),
    };
    let _ = request.set_method(&method);
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let outgoing = request
        .body()
        .map_err(|_| ConnectorError::Other("request body taken twice".into()))?;
    let future = outgoing_handler::handle(request, None).map_err(|e| map_error(e, url))?;
    {
        let stream = outgoing
            .write()
            .map_err(|_| ConnectorError::Other("request body stream unavailable".into()))?;
        if let Some(bytes) = body {
            for chunk in bytes.chunks(4096) {
                stream.blocking_write_and_flush(chunk).map_err(|e| {
                    ConnectorError::UpstreamUnavailable(format!(
                        "writing the request to {url}: {e:?}"
                    ))
                })?;
            }
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| map_error(e, url))?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|_| ConnectorError::Other("response read twice".into()))?
        .map_err(|e: ErrorCode| map_error(e, url))?;
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response
        .consume()
        .map_err(|_| ConnectorError::Other("response body taken twice".into()))?;
    let stream = incoming
        .stream()
        .map_err(|_| ConnectorError::Other("response body stream unavailable".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(wasip2::io::streams::StreamError::LastOperationFailed(e)) => {
                // The host reports its response size cap and cut
                // connections here; the error text says which.
                let detail = e.to_debug_string();
                drop(stream);
                return Err(
                    if detail.contains("BodySize") || detail.contains("body size") {
                        ConnectorError::Denied(format!(
                            "the response from {url} is larger than the host allows ({detail})"
                        ))
                    } else {
                        ConnectorError::MalformedResponse(format!(
                            "the response from {url} broke off: {detail}"
                        ))
                    },
                );
            }
        }
    }
    drop(stream);
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(target_arch = "wasm32")]
fn map_error(e: wasip2::http::types::ErrorCode, url: &str) -> ConnectorError {
    use wasip2::http::types::ErrorCode as E;
    match e {
        E::HttpRequestDenied => ConnectorError::Denied(format!(
            "the host did not allow a request to {url}: ask the operator to grant it"
        )),
        E::DestinationIpProhibited => ConnectorError::Denied(format!(
            "{url} resolves to a private or reserved address that was not granted"
        )),
        E::HttpResponseBodySize(_) => ConnectorError::Denied(format!(
            "the response from {url} is larger than the host allows"
        )),
        E::TlsAlertReceived(alert) => ConnectorError::Unauthorized(format!(
            "{url} refused the TLS connection ({}): check the client certificate the operator configured",
            alert.alert_message.unwrap_or_default()
        )),
        E::TlsCertificateError => ConnectorError::Other(format!(
            "the TLS certificate of {url} is not trusted: check tls_roots in the operator's config"
        )),
        E::ConnectionTimeout | E::HttpResponseTimeout | E::ConnectionReadTimeout => {
            ConnectorError::UpstreamUnavailable(format!("{url} timed out"))
        }
        other => ConnectorError::UpstreamUnavailable(format!("{url}: {other:?}")),
    }
}

/// Native builds (unit tests of mapping code) cannot make requests.
#[cfg(not(target_arch = "wasm32"))]
pub fn send(
    _method: &str,
    url: &str,
    _headers: &[(&str, &str)],
    _body: Option<&[u8]>,
) -> Result<Response, ConnectorError> {
    Err(ConnectorError::Other(format!(
        "HTTP to {url} is only available inside the folkhub host"
    )))
}

/// GET with headers, checked.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, ConnectorError> {
    send("GET", url, headers, None)?.check()
}

/// POST a JSON body, checked.
pub fn post_json(
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> Result<Response, ConnectorError> {
    let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send("POST", url, &all, Some(body.to_string().as_bytes()))?.check()
}

/// The JSON body of a checked answer to `url`. A 404 for a whole endpoint
/// means the operator's `base-url` points somewhere else.
pub fn json_answer(
    response: &Response,
    url: &str,
    what: &str,
) -> Result<serde_json::Value, ConnectorError> {
    if response.status == 404 {
        return Err(ConnectorError::UpstreamUnavailable(format!(
            "{url} answered 404: is base-url right?"
        )));
    }
    json(response, what)
}

/// Parses a JSON body, or says why it could not.
pub fn json(response: &Response, what: &str) -> Result<serde_json::Value, ConnectorError> {
    serde_json::from_slice(&response.body).map_err(|e| {
        let start =
            String::from_utf8_lossy(&response.body[..response.body.len().min(120)]).into_owned();
        ConnectorError::MalformedResponse(format!(
            "{what}: not valid JSON ({e}); the body starts with {start:?}"
        ))
    })
}
