//! folkhub-sim: loopback simulators of the Nordic population registers.
//!
//! # Layout
//! - [`population`]: the deterministic synthetic population, its change
//!   stream and the ground truth a correct merge must produce.
//! - [`freg`]: Folkeregisteret "offentlig med hjemmel" v1 (REST/JSON).
//! - [`krr`]: KRR, contact and reservation register, REST v1 and v2.
//! - [`spar`]: SPAR PersonSök 2021.1 (SOAP over mutual TLS) and its
//!   avisering files; [`pki`] makes the throwaway certificates.
//! - [`dvv`]: DVV's VTJ query (SOAP) and change interface (REST/JSON).
//! - [`kartverket`]: Kartverket's address API and SSB Klass's grunnkrets →
//!   district correspondence.
//! - [`nordic`]: the Swedes, Finns and cross-border persons of the population.
//! - [`maskinporten`]: the token endpoint that issues the bearer tokens the
//!   registers check.
//!
//! [`Simulator::start`] serves all of them on one loopback port (port 0 in
//! tests), SPAR on a second, mutual-TLS port, until [`Simulator::stop`] or drop. Admin routes under `/sim/`
//! advance the change stream and inject faults; the real services have none
//! of them.

pub mod dvv;
pub mod freg;
pub mod kartverket;
pub mod krr;
pub mod maskinporten;
pub mod nordic;
pub mod pki;
pub mod population;
pub mod spar;
pub mod wire;
pub mod xml;

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

/// Where a host reaches a running simulator.
#[derive(Debug, Clone)]
pub struct Endpoints<'a> {
    /// The plain port, e.g. `http://127.0.0.1:18081`.
    pub url: &'a str,
    /// The mutual-TLS port (SPAR), e.g. `https://127.0.0.1:18082`.
    pub tls_url: &'a str,
    /// The directory with the simulator's `ca.pem`, `client.pem`, `client-key.pem`.
    pub pki_dir: &'a std::path::Path,
}

/// The `[connectors.*]` sections of a `folkhub.toml` that point every
/// connector at a simulator, with the credentials it accepts: Maskinporten
/// for a client the simulator trusts (Folkeregisteret, KRR), the client
/// certificate and customer numbers (SPAR), the VTJ user (DVV). The one
/// place that knows the simulator's paths and scopes; tests and
/// `cargo xtask demo` both use it.
pub fn host_config(at: &Endpoints, client_id: &str, key_file: &std::path::Path) -> String {
    let sim_url = at.url;
    let connectors = [
        (
            "folkeregister",
            format!("{sim_url}{}", freg::BASE),
            freg::SCOPE.to_string(),
        ),
        (
            "krr",
            format!("{sim_url}/rest/v2"),
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
base-url = "{base_url}"{extra}
[connectors.{id}.credentials]
kind = "maskinporten"
token_endpoint = "{sim_url}/maskinporten/token"
audience = "{sim_url}/maskinporten/"
client_id = "{client_id}"
key_file = "{key}"
scope = "{scope}"
"#,
            key = key_file.display(),
            // KRR: the scopes the token holds decide what an answer covers.
            extra = if id == "krr" {
                format!("\nscopes = \"{scope}\"")
            } else {
                String::new()
            },
        ));
    }
    let customer = &spar::CUSTOMERS[0];
    let pki = at.pki_dir;
    out.push_str(&format!(
        r#"
[connectors.spar]
grant_hosts = ["{tls}"]
allow_private_networks = true
# The simulator's throwaway CA; the real SPAR has a public certificate.
tls_roots = "{ca}"
[connectors.spar.config]
base-url = "{tls}"
avisering-url = "{tls}/filtransport/avisering"
extended = "Relationer,Medborgarskap"
end-user = "folkhub"
[connectors.spar.credentials]
kind = "mtls"
cert_file = "{cert}"
key_file = "{key}"
[connectors.spar.secrets]
KundNrLeveransMottagare = "{delivery}"
KundNrSlutkund = "{end_customer}"
UppdragId = "{assignment}"

[connectors.dvv]
grant_hosts = ["{sim_url}"]
allow_private_networks = true
[connectors.dvv.config]
base-url = "{sim_url}/dvv/vtjkysely"
changes-url = "{sim_url}/dvv/api/v1"
xroad-client = "FI/GOV/0000000-0/folkhub"
product = "Perussanoma 3"
end-user = "folkhub"
[connectors.dvv.credentials]
kind = "basic"
username = "{mutp_user}"
password = "{mutp_password}"
[connectors.dvv.secrets]
vtj-user = "{vtj_user}"
vtj-password = "{vtj_password}"

[connectors.kartverket]
grant_hosts = ["{sim_url}"]
allow_private_networks = true
[connectors.kartverket.config]
base-url = "{sim_url}/adresser/v1"
klass-url = "{sim_url}/klass/v1"
"#,
        tls = at.tls_url,
        ca = pki.join("ca.pem").display(),
        cert = pki.join("client.pem").display(),
        key = pki.join("client-key.pem").display(),
        delivery = customer.delivery,
        end_customer = customer.end_customer,
        assignment = customer.assignment,
        vtj_user = dvv::USER,
        vtj_password = dvv::PASSWORD,
        mutp_user = dvv::MUTP_USER,
        mutp_password = dvv::MUTP_PASSWORD,
    ));
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
    /// Answer correctly, but only after this many milliseconds.
    Slow { ms: u64 },
}

pub struct Inner {
    pub population: RwLock<Population>,
    pub tokens: maskinporten::Tokens,
    faults: Mutex<VecDeque<Fault>>,
    /// Retired upstream API versions and their sunset dates.
    pub sunsets: Mutex<Vec<(String, chrono::NaiveDate)>>,
    /// The simulator's today (sunsets are checked against it); the real
    /// date unless a test or `POST /sim/clock?date=` moved it.
    today: Mutex<Option<chrono::NaiveDate>>,
    /// Kartverket's address index, rebuilt when the population changed.
    pub kartverket: Mutex<Option<(u64, Arc<Vec<kartverket::Entry>>)>>,
    requests: AtomicU64,
    /// Every person ID Folkeregisteret was asked about, in order (what a
    /// register's own request log shows; tests check who was looked up).
    asked: Mutex<Vec<String>>,
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

    /// Notes person IDs a lookup asked about.
    pub fn note_asked<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        if let Ok(mut asked) = self.asked.lock() {
            asked.extend(ids.into_iter().cloned());
        }
    }

    /// The person IDs Folkeregisteret was asked about since the last call
    /// (which empties the log).
    pub fn take_asked(&self) -> Vec<String> {
        self.asked
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }

    /// The token endpoint's issuer, the `aud` a JWT grant must name.
    pub fn issuer(&self) -> String {
        self.issuer.get().cloned().unwrap_or_default()
    }

    /// The simulator's today.
    pub fn today(&self) -> chrono::NaiveDate {
        self.today
            .lock()
            .ok()
            .and_then(|t| *t)
            .unwrap_or_else(|| chrono::Utc::now().date_naive())
    }

    /// Moves the simulator's today (tests, `POST /sim/clock`).
    pub fn set_today(&self, date: chrono::NaiveDate) {
        if let Ok(mut t) = self.today.lock() {
            *t = Some(date);
        }
    }

    /// The sunset date of an upstream API version (`krr-v1`), if it has one
    /// and it has passed.
    pub fn retired(&self, api: &str) -> Option<chrono::NaiveDate> {
        let today = self.today();
        self.sunsets
            .lock()
            .ok()?
            .iter()
            .find(|(name, date)| name == api && *date <= today)
            .map(|(_, date)| *date)
    }

    /// Queues faults for the next requests, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        if let Ok(mut queue) = self.faults.lock() {
            queue.extend(faults);
        }
    }
}

/// Takes the next queued fault, if any.
pub fn next_fault(shared: &Shared) -> Option<Fault> {
    shared.faults.lock().ok()?.pop_front()
}

/// The next queued fault as a SOAP service answers it (SPAR, VTJ), if any
/// (a slow fault waits, then lets the request be answered normally).
pub async fn soap_fault_response(shared: &Shared) -> Option<Response> {
    let fault = next_fault(shared)?;
    Some(match fault {
        Fault::Slow { ms } => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            return None;
        }
        Fault::Status { status } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                [("content-type", "text/xml; charset=utf-8")],
                xml::soap_fault("soap:Server", "Internal error (simulated)"),
            )
                .into_response()
        }
        Fault::RateLimited { retry_after_ms } => {
            let secs = retry_after_ms.div_ceil(1000).max(1);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                "",
            )
                .into_response()
        }
        Fault::Truncated => (
            StatusCode::OK,
            [("content-type", "text/xml; charset=utf-8")],
            "<?xml version=\"1.0\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><Trunc",
        )
            .into_response(),
        Fault::Html => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "text/html")],
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        )
            .into_response(),
        Fault::Gone => (
            StatusCode::GONE,
            [("content-type", "text/plain")],
            "This version of the service has been retired",
        )
            .into_response(),
    })
}

/// The next queued fault as a response, if any (a slow fault waits, then
/// lets the request be answered normally).
pub async fn fault_response(shared: &Shared) -> Option<Response> {
    let fault = next_fault(shared)?;
    Some(match fault {
        Fault::Slow { ms } => {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            return None;
        }
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
    /// Listen address of the mutual-TLS port (SPAR); port 0 picks a free one.
    pub listen_tls: SocketAddr,
    /// Where to write the throwaway CA and certificates; a temporary
    /// directory (removed on stop) when not set.
    pub pki_dir: Option<std::path::PathBuf>,
    /// Upstream API versions retired from a date on (`krr-v1`), after which
    /// they answer 410 Gone as the real services do.
    pub sunsets: Vec<(String, chrono::NaiveDate)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            seed: 42,
            count: 2000,
            changes: 0,
            clients: vec![],
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listen_tls: SocketAddr::from(([127, 0, 0, 1], 0)),
            pki_dir: None,
            sunsets: vec![],
        }
    }
}

/// A running simulator.
pub struct Simulator {
    pub addr: SocketAddr,
    /// The mutual-TLS port (SPAR).
    pub tls_addr: SocketAddr,
    /// The throwaway CA, server and client certificates.
    pub pki: pki::Pki,
    pub shared: Shared,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    tls_task: Option<tokio::task::JoinHandle<()>>,
    _pki_dir: Option<tempfile::TempDir>,
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
            kartverket: Mutex::new(None),
            sunsets: Mutex::new(config.sunsets.clone()),
            today: Mutex::new(None),
            requests: AtomicU64::new(0),
            asked: Mutex::new(Vec::new()),
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
        let (pki_temp, pki_dir) = match &config.pki_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::tempdir()?;
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };
        let pki = pki::Pki::generate(&pki_dir)?;
        let tls_listener = tokio::net::TcpListener::bind(config.listen_tls).await?;
        let tls_addr = tls_listener.local_addr()?;
        let tls_task = tokio::spawn(serve_tls(
            tls_listener,
            tokio_rustls::TlsAcceptor::from(pki.server.clone()),
            spar::router().with_state(shared.clone()),
        ));
        Ok(Simulator {
            addr,
            tls_addr,
            pki,
            shared,
            shutdown: Some(tx),
            task: Some(task),
            tls_task: Some(tls_task),
            _pki_dir: pki_temp,
        })
    }

    /// Base URL of the mutual-TLS port.
    pub fn tls_url(&self) -> String {
        format!("https://{}", self.tls_addr)
    }

    /// The `[connectors.*]` sections that point a host at this simulator.
    pub fn host_config(&self, client_id: &str, key_file: &std::path::Path) -> String {
        host_config(
            &Endpoints {
                url: &self.base_url(),
                tls_url: &self.tls_url(),
                pki_dir: &self.pki.dir,
            },
            client_id,
            key_file,
        )
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

    /// The ground truth when only `registers` are synced.
    pub async fn truth_for(&self, registers: &[&str]) -> Vec<Truth> {
        self.shared.population.read().await.truth_for(registers)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.tls_task.take() {
            task.abort();
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
        if let Some(task) = self.tls_task.take() {
            task.abort();
        }
    }
}

/// Accepts TLS connections (the client certificate is verified in the
/// handshake) and serves `app` over HTTP/1.1 on each.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                // No or a wrong client certificate: the handshake failed.
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
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

#[derive(Debug, Deserialize)]
struct ClockQuery {
    date: chrono::NaiveDate,
}

async fn clock(State(shared): State<Shared>, Query(q): Query<ClockQuery>) -> Response {
    shared.set_today(q.date);
    Json(json!({"today": q.date.to_string()})).into_response()
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
        .merge(dvv::router())
        .merge(kartverket::router())
        .route("/maskinporten/token", post(maskinporten::token))
        .route("/sim/advance", post(advance))
        .route("/sim/faults", post(faults))
        .route("/sim/stats", get(stats))
        .route("/sim/clock", post(clock))
        .with_state(shared)
}
