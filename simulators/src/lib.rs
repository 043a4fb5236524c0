//! folkhub-sim: loopback simulators of the Nordic population registers.
//!
//! # Layout
//! - [`population`]: the deterministic synthetic population, its change
//!   stream and the ground truth a correct merge must produce.
//! - [`freg`]: Folkeregisteret "offentlig med hjemmel" v1 (REST/JSON).
//! - [`krr`]: KRR, contact and reservation register, REST v1 and v2.
//! - [`maskinporten`]: the token endpoint that issues the bearer tokens the
//!   registers check.
//!
//! [`Simulator::start`] serves all of them on one loopback port (port 0 in
//! tests) until [`Simulator::stop`] or drop. Admin routes under `/sim/`
//! advance the change stream and inject faults; the real services have none
//! of them.

pub mod freg;
pub mod krr;
pub mod maskinporten;
pub mod population;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{RwLock, oneshot};

pub use maskinporten::Client;
pub use population::{Population, Truth};

/// Every scope the simulated token endpoint can grant.
pub fn all_scopes() -> Vec<String> {
    [freg::SCOPE, krr::SCOPE_CONTACT, krr::SCOPE_MAILBOX]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The `[connectors.*]` sections of a `folkhub.toml` that point every
/// connector at a simulator on `sim_url`, with Maskinporten credentials for
/// a client the simulator trusts. The one place that knows the simulator's
/// paths and scopes; tests and `cargo xtask demo` both use it.
pub fn host_config(sim_url: &str, client_id: &str, key_file: &std::path::Path) -> String {
    let connectors = [
        (
            "folkeregister",
            format!("{sim_url}{}", freg::BASE),
            freg::SCOPE.to_string(),
        ),
        (
            "krr",
            format!("{sim_url}/rest/v1"),
            format!("{} {}", krr::SCOPE_CONTACT, krr::SCOPE_MAILBOX),
        ),
    ];
    let mut out = String::new();
    for (id, base_url, scope) in connectors {
        out.push_str(&format!(
            r#"
[connectors.{id}]
grant_hosts = ["{sim_url}"]
# The simulator runs on loopback, which connectors may only reach when allowed.
allow_private_networks = true
[connectors.{id}.config]
base-url = "{base_url}"
[connectors.{id}.credentials]
kind = "maskinporten"
token_endpoint = "{sim_url}/maskinporten/token"
audience = "{sim_url}/maskinporten/"
client_id = "{client_id}"
key_file = "{key}"
scope = "{scope}"
"#,
            key = key_file.display(),
        ));
    }
    out
}

/// A fault the next request(s) will meet, as real registers misbehave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// Answer with this HTTP status and the register's error body.
    Status { status: u16 },
    /// 429 with `Retry-After` in milliseconds, as Folkeregisteret sends it.
    RateLimited { retry_after_ms: u64 },
    /// 200 with a body cut off in the middle.
    Truncated,
    /// 502 with an HTML page from a proxy.
    Html,
    /// 410 Gone: the API version was retired.
    Gone,
}

pub struct Inner {
    pub population: RwLock<Population>,
    pub tokens: maskinporten::Tokens,
    faults: Mutex<VecDeque<Fault>>,
    requests: AtomicU64,
    issuer: OnceLock<String>,
}

/// Shared state of all simulated services.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

impl std::ops::Deref for Shared {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Shared {
    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Register requests served so far (token requests not counted).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The token endpoint's issuer, the `aud` a JWT grant must name.
    pub fn issuer(&self) -> String {
        self.issuer.get().cloned().unwrap_or_default()
    }

    /// Queues faults for the next requests, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        if let Ok(mut queue) = self.faults.lock() {
            queue.extend(faults);
        }
    }
}

/// The next queued fault as a response, if any.
pub fn fault_response(shared: &Shared) -> Option<Response> {
    let fault = shared.faults.lock().ok()?.pop_front()?;
    Some(match fault {
        Fault::Status { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            freg::error(status, "FREG-500", "Intern feil (simulert)")
        }
        Fault::RateLimited { retry_after_ms } => {
            let mut r = freg::error(
                StatusCode::TOO_MANY_REQUESTS,
                "FREG-429",
                "For mange forespørsler",
            );
            if let Ok(v) = retry_after_ms.to_string().parse() {
                r.headers_mut().insert("retry-after", v);
            }
            r
        }
        Fault::Truncated => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"oppslag\":[{\"foedselsEllerDNummer\":\"0",
        )
            .into_response(),
        Fault::Html => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
        Fault::Gone => freg::error(
            StatusCode::GONE,
            "FREG-410",
            "Denne versjonen av APIet er faset ut",
        ),
    })
}

/// How to start the simulators.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub count: usize,
    /// Changes applied before serving.
    pub changes: u64,
    /// Clients the token endpoint trusts.
    pub clients: Vec<Client>,
    /// Listen address; port 0 picks a free one.
    pub listen: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 42,
            count: 2000,
            changes: 0,
            clients: vec![],
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// A running simulator.
pub struct Simulator {
    pub addr: SocketAddr,
    pub shared: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Simulator {
    /// Binds and serves in a background task.
    pub async fn start(config: Config) -> anyhow::Result<Simulator> {
        let mut population = Population::generate(config.seed, config.count);
        population.advance(config.changes);
        let shared = Shared(Arc::new(Inner {
            population: RwLock::new(population),
            tokens: maskinporten::Tokens::new(120),
            faults: Mutex::new(VecDeque::new()),
            requests: AtomicU64::new(0),
            issuer: OnceLock::new(),
        }));
        for client in config.clients {
            shared.tokens.register(client);
        }
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let _ = shared.issuer.set(format!("http://{addr}/maskinporten/"));
        let app = router(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Simulator {
            addr,
            shared,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/maskinporten/token", self.addr)
    }

    /// Applies `n` more changes to the population (and the feed).
    pub async fn advance(&self, n: u64) {
        self.shared.population.write().await.advance(n);
    }

    /// The ground truth now.
    pub async fn truth(&self) -> Vec<Truth> {
        self.shared.population.read().await.truth()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[derive(Debug, Deserialize)]
struct AdvanceQuery {
    changes: Option<u64>,
}

async fn advance(State(shared): State<Shared>, Query(q): Query<AdvanceQuery>) -> Response {
    let mut population = shared.population.write().await;
    population.advance(q.changes.unwrap_or(1));
    Json(json!({"changes_applied": population.changes_applied, "events": population.events.len()}))
        .into_response()
}

async fn faults(State(shared): State<Shared>, Json(faults): Json<Vec<Fault>>) -> Response {
    shared.inject(faults);
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(shared): State<Shared>) -> Response {
    let population = shared.population.read().await;
    Json(json!({
        "persons": population.persons.len(),
        "events": population.events.len(),
        "changes_applied": population.changes_applied,
        "requests": shared.requests(),
    }))
    .into_response()
}

pub fn router(shared: Shared) -> axum::Router {
    use axum::routing::{get, post};
    freg::router()
        .merge(krr::router())
        .route("/maskinporten/token", post(maskinporten::token))
        .route("/sim/advance", post(advance))
        .route("/sim/faults", post(faults))
        .route("/sim/stats", get(stats))
        .with_state(shared)
}
