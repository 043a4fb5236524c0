//! Recorded answers: a register `connectors check` has no simulator of,
//! stood in for by the answers its vendor recorded (`--recorded FILE`).
//!
//! The file says which IDs the recording answers as found, which one as
//! not found, and, per exchange, the request it answers (method, path and
//! query, text the body must contain) and the answer (status, headers,
//! body). A loopback server replays them; the connector is given it as its
//! `base-url`. A request no exchange answers gets a 404 that says so, and
//! the check lists every such request, so a vendor sees what is missing
//! from the recording.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use serde::Deserialize;

/// A recording file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Appended to the replay server's address to make the connector's
    /// `base-url` (e.g. `/api/v3`).
    #[serde(default)]
    base_path: String,
    /// IDs the recording answers as found.
    known: Vec<String>,
    /// An ID the recording answers as not found.
    unknown: Option<String>,
    /// An ID the register refuses as malformed (default `12345`).
    malformed: Option<String>,
    /// More configuration for the connector (`[connectors.<id>.config]`).
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    exchange: Vec<ExchangeFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExchangeFile {
    #[serde(default = "get")]
    method: String,
    /// Path and query as the connector sends them; a trailing `*` matches
    /// any rest.
    path: String,
    /// Texts the request body must all contain.
    #[serde(default)]
    body_contains: Vec<String>,
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
    /// The answer's body from a file, relative to the recording.
    body_file: Option<PathBuf>,
}

fn get() -> String {
    "GET".into()
}

fn ok() -> u16 {
    200
}

/// A recording, read and checked.
#[derive(Debug)]
pub struct Recording {
    pub file: PathBuf,
    pub base_path: String,
    pub known: Vec<String>,
    pub unknown: Option<String>,
    pub malformed: String,
    pub config: BTreeMap<String, String>,
    exchanges: Vec<Exchange>,
}

#[derive(Debug)]
struct Exchange {
    method: String,
    path: String,
    body_contains: Vec<String>,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Exchange {
    fn answers(&self, method: &str, path: &str, body: &str) -> bool {
        let path_matches = match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == self.path,
        };
        self.method.eq_ignore_ascii_case(method)
            && path_matches
            && self.body_contains.iter().all(|t| body.contains(t.as_str()))
    }
}

impl Recording {
    /// Reads a recording; every problem is named with the exchange it is in.
    pub fn load(path: &Path) -> anyhow::Result<Recording> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the recording {}", path.display()))?;
        let raw: File =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if raw.known.is_empty() {
            bail!(
                "{}: `known` is empty; list the IDs your recorded answers find, so the lookups can be checked",
                path.display()
            );
        }
        if raw.exchange.is_empty() {
            bail!(
                "{}: no [[exchange]]; record the register's answers to the lookups (and feed) first",
                path.display()
            );
        }
        if !raw.base_path.is_empty() && !raw.base_path.starts_with('/') {
            bail!(
                "{}: base_path {:?} must start with /",
                path.display(),
                raw.base_path
            );
        }
        let mut exchanges = Vec::new();
        for (i, e) in raw.exchange.into_iter().enumerate() {
            let at = format!("{} exchange[{i}]", path.display());
            if !e.path.starts_with('/') {
                bail!(
                    "{at}: path {:?} must start with / (path and query, as sent)",
                    e.path
                );
            }
            if axum::http::Method::from_bytes(e.method.to_ascii_uppercase().as_bytes()).is_err() {
                bail!("{at}: {:?} is not an HTTP method", e.method);
            }
            if !(100..=599).contains(&e.status) {
                bail!("{at}: status {} is not an HTTP status", e.status);
            }
            let body = match (e.body, e.body_file) {
                (Some(_), Some(_)) => bail!("{at}: give body or body_file, not both"),
                (Some(text), None) => text.into_bytes(),
                (None, Some(file)) => {
                    let file = dir.join(file);
                    std::fs::read(&file)
                        .with_context(|| format!("{at}: reading {}", file.display()))?
                }
                (None, None) => Vec::new(),
            };
            for (name, value) in &e.headers {
                if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
                    || axum::http::HeaderValue::from_str(value).is_err()
                {
                    bail!("{at}: header {name:?}: {value:?} is not a valid HTTP header");
                }
            }
            exchanges.push(Exchange {
                method: e.method,
                path: e.path,
                body_contains: e.body_contains,
                status: e.status,
                headers: e.headers.into_iter().collect(),
                body,
            });
        }
        Ok(Recording {
            file: path.to_path_buf(),
            base_path: raw.base_path,
            known: raw.known,
            unknown: raw.unknown,
            malformed: raw.malformed.unwrap_or_else(|| "12345".into()),
            config: raw.config,
            exchanges,
        })
    }
}

/// The replay server: what it was asked that no exchange answers.
pub struct Replay {
    pub addr: SocketAddr,
    pub unanswered: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Replay {
    pub async fn start(recording: Arc<Recording>) -> anyhow::Result<Replay> {
        let unanswered = Arc::new(Mutex::new(Vec::new()));
        let missed = unanswered.clone();
        let router = axum::Router::new().fallback(
            move |method: axum::http::Method, uri: axum::http::Uri, body: axum::body::Bytes| {
                let recording = recording.clone();
                let missed = missed.clone();
                async move {
                    let path = uri
                        .path_and_query()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_else(|| uri.path().to_string());
                    let text = String::from_utf8_lossy(&body);
                    match recording
                        .exchanges
                        .iter()
                        .find(|e| e.answers(method.as_str(), &path, &text))
                    {
                        Some(e) => {
                            let mut response = axum::http::Response::builder().status(e.status);
                            for (name, value) in &e.headers {
                                response = response.header(name, value);
                            }
                            response
                                .body(axum::body::Body::from(e.body.clone()))
                                .unwrap_or_default()
                        }
                        None => {
                            let asked = format!("{method} {path}");
                            let answer =
                                format!("folkhub connectors check: no recorded answer for {asked}");
                            missed.lock().unwrap_or_else(|e| e.into_inner()).push(asked);
                            axum::http::Response::builder()
                                .status(axum::http::StatusCode::NOT_FOUND)
                                .body(axum::body::Body::from(answer))
                                .unwrap_or_default()
                        }
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("a loopback port for the recorded answers")?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(folkhub_api::serve_router(listener, router, async move {
            let _ = stopped.await;
        }));
        Ok(Replay {
            addr,
            unanswered,
            stop: Some(stop),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests no exchange answered, each once, in the order first asked.
    pub fn unanswered(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for asked in self
            .unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if !seen.contains(asked) {
                seen.push(asked.clone());
            }
        }
        seen
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
