//! `folkhub.toml`: the operator's configuration.
//!
//! Layers, later wins: built-in defaults, the file, `FOLKHUB_*` environment
//! variables (`FOLKHUB_STORE`, `FOLKHUB_LISTEN`, `FOLKHUB_MANIFEST`,
//! `FOLKHUB_CACHE_DIR`), then command-line flags (applied by the CLI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Invalid, Problem, toml_problem};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where person data lives.
    pub store: StoreConfig,
    /// The HTTP API.
    pub server: ServerConfig,
    /// The connector registry.
    pub registry: RegistryConfig,
    /// Sandbox limits for every connector call.
    pub runtime: RuntimeConfig,
    /// Per-connector grants, config values and credentials.
    pub connectors: BTreeMap<String, ConnectorConfig>,
    /// Survivorship: field group → sources, best first. Unset groups keep the defaults.
    pub merge: MergeConfig,
    /// Scheduled jobs `folkhub serve` runs (and `folkhub jobs run NAME`).
    pub jobs: BTreeMap<String, JobConfig>,
    /// Legal bases of the operator's own, beside the built-in profiles
    /// (`full`, `school`, `benefits`, `directory`); API clients hold one.
    pub legal_bases: BTreeMap<String, BasisConfig>,
    /// Whom the sync keeps: the persons clients follow, or everyone.
    pub follow: FollowConfig,
    /// Pushed changes: how webhooks are delivered.
    pub webhooks: WebhooksConfig,
}

/// `[webhooks]`: delivery of clients' webhook subscriptions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Let subscriptions use `http://` URLs (default: `https://` only).
    pub allow_http: bool,
    /// Deliver to loopback and private addresses (a receiver on the
    /// operator's own network); refused by default, so a client cannot
    /// aim deliveries at internal services.
    pub allow_private_networks: bool,
    /// A receiver answers within this (`10s`); longer is a failed attempt.
    pub timeout: String,
    /// A message not delivered this long after it was made is given up
    /// (`3d`); its attempts stay visible.
    pub give_up_after: String,
    /// How often `serve` turns new changes into messages and sends those
    /// due (`1s`).
    pub poll: String,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow_http: false,
            allow_private_networks: false,
            timeout: "10s".into(),
            give_up_after: "3d".into(),
            poll: "1s".into(),
        }
    }
}

/// Whom the sync stores and refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Every person the feeds name is looked up and stored: a mirror of the
    /// registers (what folkhub did before follow sets, so a store that
    /// predates them keeps everyone unless the operator chooses).
    #[default]
    National,
    /// Only persons a client or population follows (and, with
    /// `follow.guardians`, the guardians of followed minors): feed events
    /// about anyone else are skipped without a lookup, and persons nobody
    /// follows any more are deleted after `follow.retention`.
    Followed,
}

/// `[follow]`: follow sets and retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FollowConfig {
    /// `national` (the default) or `followed`.
    pub scope: Scope,
    /// How long a stored person nobody follows stays before the
    /// `retention` job deletes them (scope `followed`): `30d`.
    pub retention: String,
    /// Follow the guardians of followed minors (under 18), so guardian
    /// linking has them (scope `followed`).
    pub guardians: bool,
}

impl Default for FollowConfig {
    fn default() -> Self {
        FollowConfig {
            scope: Scope::National,
            retention: "30d".into(),
            guardians: true,
        }
    }
}

impl FollowConfig {
    /// Only followed persons are kept.
    pub fn followed_only(&self) -> bool {
        self.scope == Scope::Followed
    }

    /// The retention period (30 days when unreadable: `check` reports it).
    pub fn retention(&self) -> chrono::Duration {
        parse_ttl(&self.retention).unwrap_or(chrono::Duration::days(30))
    }
}

/// A legal basis defined in folkhub.toml: which field groups its clients
/// read and which protected values they may see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasisConfig {
    /// Field groups (`name`, `birth`, `address`, ...); empty: every group.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The strictest Norwegian address protection whose values it sees
    /// (`UGRADERT`, the default: none of them; `FORTROLIG`, ...).
    #[serde(default)]
    pub max_protection: Option<folkhub_core::labels::Protection>,
    /// Other markers it sees past: `SEKRETESSMARKERING`,
    /// `SKYDDAD_FOLKBOKFORING`, `TURVAKIELTO`.
    #[serde(default)]
    pub markers: Vec<String>,
}

impl Config {
    /// Every legal basis a client may hold: the built-in profiles and
    /// `[legal_bases]`.
    pub fn legal_bases(&self) -> BTreeMap<String, folkhub_core::access::LegalBasis> {
        let mut out: BTreeMap<String, folkhub_core::access::LegalBasis> =
            folkhub_core::access::LegalBasis::PROFILES
                .iter()
                .filter_map(|n| {
                    folkhub_core::access::LegalBasis::profile(n).map(|b| (n.to_string(), b))
                })
                .collect();
        for (name, b) in &self.legal_bases {
            out.insert(
                name.clone(),
                folkhub_core::access::LegalBasis {
                    name: name.clone(),
                    groups: b.groups.clone(),
                    max_protection: b
                        .max_protection
                        .unwrap_or(folkhub_core::labels::Protection::Ugradert),
                    markers: b.markers.clone(),
                },
            );
        }
        out
    }
}

/// One scheduled job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// `changes` (the connector's feed from its cursor), `full` (feed, then
    /// a refresh of everyone else, honouring the cache TTL and budget),
    /// `guardians` (look up the guardians of persons of `ages` that are not
    /// stored yet), `expire-overrides` or `retention` (delete persons nobody
    /// has followed for `follow.retention`).
    pub kind: String,
    /// The connector, for `changes` and `full`.
    pub connector: Option<String>,
    /// An interval: `15m`, `1h`, `1d`, `week`.
    pub every: Option<String>,
    /// Or a cron expression (UTC): `0 2 * * *`.
    pub cron: Option<String>,
    /// For `full`: refresh only persons whose home municipality is this
    /// (kommunenummer, kommunkod or kotikunta as the record has it).
    pub area: Option<String>,
    /// For `guardians`: the ages (years, `MIN-MAX`) of the persons whose
    /// guardians are fetched, e.g. pupils `6-19` (the default).
    pub ages: Option<String>,
}

impl JobConfig {
    /// The schedule, when the config is valid.
    pub fn schedule(&self) -> Result<crate::schedule::Schedule, String> {
        match (&self.every, &self.cron) {
            (Some(every), None) => parse_ttl(every)
                .map(crate::schedule::Schedule::Every)
                .ok_or_else(|| {
                    format!("every = {every:?} is not a duration like 15m, 1h, 1d or week")
                }),
            (None, Some(cron)) => crate::schedule::Cron::parse(cron)
                .map(crate::schedule::Schedule::Cron)
                .map_err(|e| format!("cron = {cron:?}: {e}")),
            _ => Err("give exactly one of `every` and `cron`".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://PATH` (a file, created if missing) or
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (a server, for
    /// several hosts on one database).
    pub url: String,
    /// When schema migrations run: `on-start` (every command applies what
    /// is pending; hosts starting together apply each once) or `manual`
    /// (only `folkhub migrate`; other commands refuse a database that is
    /// not at this build's version).
    pub migrate: MigrateMode,
    /// This host's name among several on one PostgreSQL database (in the
    /// run log, leases and the feed-page log book); unset: the machine's
    /// hostname and the process id.
    pub host_name: Option<String>,
    /// How long a job or a refresh batch stays a host's without it
    /// renewing its lease; a host that dies hands its work over after
    /// this long (e.g. `60s`, `5m`).
    pub lease: String,
}

/// When the store's schema migrations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MigrateMode {
    #[default]
    OnStart,
    Manual,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the API listens on.
    pub listen: String,
    /// When a read's access-log entries are committed: `before-answer`
    /// (the default: no entry, no answer) or `buffered` (the answer does
    /// not wait; entries are committed within milliseconds and at a
    /// graceful shutdown, and a crash can lose the last group).
    pub access_log: String,
    /// Replaced by each API client's own legal basis; refused with a
    /// pointer to `folkhub clients add` when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<String>,
    /// A request's head must arrive within this of the connection opening
    /// or the previous answer (slow-header clients are cut off).
    pub header_timeout: String,
    /// A connection on which nothing moves for this long is closed.
    pub idle_timeout: String,
    /// A request body must arrive within this.
    pub body_timeout: String,
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// The largest request body, in bytes (413 above).
    pub max_body: usize,
    /// How long a read of a person the store does not hold waits for the
    /// registers, for clients allowed to fetch (`clients add --fetch`);
    /// the lookup goes on after it.
    pub fetch_deadline: String,
    /// A second listener for `/metrics` and the detailed `/v1/health`
    /// without a client (for a scraper on an internal network); on the
    /// main listener they need an admin client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<String>,
    /// TLS for the API; plain HTTP without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// OAuth2 issuers whose JWT access tokens identify clients created
    /// with `--auth oauth2`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub oauth2: Vec<OAuth2Issuer>,
}

/// `[server.tls]`: PEM files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// A CA that client certificates must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// With client_ca: `required` (the default: no certificate, no
    /// connection) or `optional`.
    #[serde(default = "required")]
    pub client_certs: String,
}

fn required() -> String {
    "required".into()
}

/// `[[server.oauth2]]`: an issuer of access tokens (Maskinporten,
/// HelseID, a company's own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Issuer {
    /// The name clients are created with (`--issuer`).
    pub name: String,
    /// The tokens' `iss`, exactly.
    pub issuer: String,
    /// Where its signing keys are published (JWKS); fetched again when a
    /// token names a key not seen yet, so key rotation needs nothing.
    pub jwks_url: String,
    /// What the tokens' `aud` must hold.
    pub audience: String,
    /// Scopes every token must carry (all of them).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "leeway")]
    pub leeway: String,
}

fn leeway() -> String {
    "30s".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Path of registry-manifest.toml.
    pub manifest: PathBuf,
    /// Publisher name → Ed25519 public key (base64) of the publishers whose
    /// releases this host installs. Default: the folkhub project's key
    /// (`registry/publisher-keys/folkhub.pub`).
    pub trusted_keys: std::collections::BTreeMap<String, String>,
    /// Install and upgrade to releases without a valid signature by a
    /// trusted key (for a vendor's own development host only).
    pub allow_unsigned: bool,
    /// Vendors' registries beside the built-in one: paths of their
    /// `registry-manifest.toml`, each with its artifacts under its own
    /// directory. A release (connector and version) may be in one registry
    /// only.
    pub vendors: Vec<PathBuf>,
    /// Vendors' registries at a URL, granted by being listed here:
    /// `https://…/registry-manifest.toml` (plain http only to a loopback
    /// address). `folkhub connectors fetch` copies each, manifest and
    /// artifacts, into `mirror`; the host reads that copy beside `vendors`,
    /// so no command waits on the network and a registry that is down
    /// keeps its last good copy.
    pub vendor_urls: Vec<String>,
    /// Where fetched registries are kept: one directory per URL.
    pub mirror: PathBuf,
}

impl RegistryConfig {
    /// The manifest of every vendor registry the host reads: the local
    /// ones, then the fetched copy of each granted URL. A URL not fetched
    /// yet is left out and named in the second list.
    pub fn vendor_manifests(&self) -> (Vec<PathBuf>, Vec<String>) {
        let mut paths = self.vendors.clone();
        let mut missing = Vec::new();
        for text in &self.vendor_urls {
            match crate::remote::registry_url(text) {
                Ok(url) => {
                    let copy =
                        crate::remote::mirror_dir(&self.mirror, &url).join(crate::remote::MANIFEST);
                    if copy.exists() {
                        paths.push(copy);
                    } else {
                        missing.push(text.clone());
                    }
                }
                // Refused when the config was loaded.
                Err(_) => missing.push(text.clone()),
            }
        }
        (paths, missing)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Precompiled components, keyed by wasm digest and engine.
    pub cache_dir: PathBuf,
    /// Deadline of one connector call, in milliseconds.
    pub call_timeout_ms: u64,
    /// Linear memory cap per call, MiB.
    pub memory_limit_mib: u64,
    /// Largest upstream response body a connector may read, bytes.
    pub max_response_bytes: u64,
    /// Host calls (log, config, HTTP requests) allowed per connector call.
    pub max_hostcalls: u64,
    /// Calls of one connector running at once.
    pub max_concurrency: usize,
    /// Reuse instance memory and stacks between calls (wasmtime's pooling allocator).
    pub pooling: bool,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MergeConfig {
    pub groups: BTreeMap<String, Vec<String>>,
}

/// What the operator set for one connector.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectorConfig {
    /// Origins (`https://host[:port]`) the operator allows this connector to
    /// reach. Only origins the release also requests are reachable.
    pub grant_hosts: Vec<String>,
    /// Allow granted origins that resolve to private, loopback or link-local
    /// addresses (simulators, an on-premise proxy). Off by default.
    pub allow_private_networks: bool,
    /// Values the connector reads with `config(key)`.
    pub config: BTreeMap<String, String>,
    /// How the host authenticates this connector upstream.
    pub credentials: Option<Credentials>,
    /// Values the host puts into request bodies where the connector wrote
    /// `{{secret:NAME}}` (VTJ user and password, SPAR customer numbers).
    /// The connector never sees them.
    pub secrets: BTreeMap<String, String>,
    /// PEM file with CA certificates to trust for this connector's TLS
    /// connections, in addition to the public web roots.
    pub tls_roots: Option<PathBuf>,
    /// What the register charges and what the operator allows per month.
    pub costs: CostConfig,
    /// How long a register's answer about a person is good for refreshes
    /// and lookups: `week`, `month` (30 days), `quarter` (91 days) or a
    /// duration like `36h`, `10d`. Unset: every refresh asks again. Feed
    /// events always refresh.
    pub cache_ttl: Option<String>,
}

/// Parses a cache TTL (`week`, `month`, `quarter`, `N[smhd]`).
pub fn parse_ttl(text: &str) -> Option<chrono::Duration> {
    let t = text.trim();
    match t {
        "week" => return Some(chrono::Duration::days(7)),
        "month" => return Some(chrono::Duration::days(30)),
        "quarter" => return Some(chrono::Duration::days(91)),
        _ => {}
    }
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = number.parse().ok().filter(|n| *n > 0)?;
    match unit {
        "s" => Some(chrono::Duration::seconds(n)),
        "m" => Some(chrono::Duration::minutes(n)),
        "h" => Some(chrono::Duration::hours(n)),
        "d" => Some(chrono::Duration::days(n)),
        _ => None,
    }
}

/// A register's price list and the operator's monthly budget.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostConfig {
    /// Price of one register call; unset: the release's `cost_per_call`.
    pub per_call: Option<f64>,
    /// A fixed fee for every month the connector is used (e.g. SPAR's).
    pub monthly_fee: f64,
    /// Monthly budget (fee included); unset: none. Warns at 80 %.
    pub monthly_budget: Option<f64>,
    /// At 100 % of the budget, refuse full refreshes (feeds and lookups
    /// of single persons still run).
    pub stop_at_budget: bool,
}

/// Credentials the host adds to a connector's requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Credentials {
    /// Maskinporten JWT grant (RFC 7523) signed RS256 with the operator's key.
    Maskinporten {
        /// Token endpoint, e.g. `https://maskinporten.no/token`.
        token_endpoint: String,
        /// `aud` of the grant, e.g. `https://maskinporten.no/`.
        audience: String,
        /// The integration's client id (`iss`).
        client_id: String,
        /// PEM file with the RSA private key (PKCS#8 or PKCS#1).
        key_file: PathBuf,
        /// Space-separated scopes.
        scope: String,
        /// Key id registered with Maskinporten, if any.
        #[serde(default)]
        key_id: Option<String>,
    },
    /// A static bearer token (test setups).
    Bearer { token: String },
    /// HTTP Basic authentication (VTJ change interface service users).
    Basic { username: String, password: String },
    /// A TLS client certificate (SPAR's organisation certificate).
    Mtls {
        /// PEM file with the certificate chain, leaf first.
        cert_file: PathBuf,
        /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
        key_file: PathBuf,
    },
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://data/folkhub.db".into(),
            migrate: MigrateMode::OnStart,
            host_name: None,
            lease: "60s".into(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            legal_basis: None,
            access_log: "before-answer".into(),
            header_timeout: "10s".into(),
            idle_timeout: "60s".into(),
            body_timeout: "30s".into(),
            max_connections: 512,
            max_body: 1024 * 1024,
            fetch_deadline: "5s".into(),
            admin_listen: None,
            tls: None,
            oauth2: Vec::new(),
        }
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            manifest: PathBuf::from("registry-manifest.toml"),
            trusted_keys: [(
                crate::signing::PROJECT_PUBLISHER.to_string(),
                crate::signing::project_key().to_string(),
            )]
            .into_iter()
            .collect(),
            allow_unsigned: false,
            vendors: vec![],
            vendor_urls: vec![],
            mirror: PathBuf::from("data/registries"),
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: PathBuf::from("data/cache"),
            call_timeout_ms: 30_000,
            memory_limit_mib: 64,
            max_response_bytes: 32 * 1024 * 1024,
            max_hostcalls: 100_000,
            max_concurrency: 4,
            pooling: true,
        }
    }
}

impl Config {
    /// Defaults, then the file if it exists (an explicit path must exist),
    /// then the environment.
    pub fn load(path: Option<&Path>) -> Result<Config, Invalid> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("folkhub.toml"), false),
        };
        let mut config = if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| Invalid {
                file: path.display().to_string(),
                problems: vec![Problem {
                    path: String::new(),
                    message: format!("cannot read it: {e}"),
                }],
            })?;
            Self::parse(&text, &path.display().to_string())?
        } else if required {
            return Err(Invalid {
                file: path.display().to_string(),
                problems: vec![Problem {
                    path: String::new(),
                    message: "the file does not exist".into(),
                }],
            });
        } else {
            Config::default()
        };
        config.apply_env(|k| std::env::var(k).ok());
        Ok(config)
    }

    pub fn parse(text: &str, file: &str) -> Result<Config, Invalid> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let span = e.span().map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}")
            });
            Invalid {
                file: file.to_string(),
                problems: vec![toml_problem(&span.unwrap_or_default(), &e)],
            }
        })?;
        let mut problems = Vec::new();
        config.validate(&mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Invalid {
                file: file.to_string(),
                problems,
            })
        }
    }

    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("FOLKHUB_STORE") {
            self.store.url = v;
        }
        if let Some(v) = get("FOLKHUB_LISTEN") {
            self.server.listen = v;
        }
        if let Some(v) = get("FOLKHUB_MANIFEST") {
            self.registry.manifest = PathBuf::from(v);
        }
        if let Some(v) = get("FOLKHUB_CACHE_DIR") {
            self.runtime.cache_dir = PathBuf::from(v);
        }
    }

    fn validate(&self, problems: &mut Vec<Problem>) {
        for (i, text) in self.registry.vendor_urls.iter().enumerate() {
            if let Err(message) = crate::remote::registry_url(text) {
                problems.push(Problem {
                    path: format!("registry.vendor_urls[{i}]"),
                    message,
                });
            }
        }
        let url = &self.store.url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            problems.push(Problem {
                path: "store.url".into(),
                message: format!(
                    "{:?}: a store URL is sqlite://PATH (a file) or postgres://USER@HOST:PORT/DATABASE (a server)",
                    url.split('@').next_back().unwrap_or(url)
                ),
            });
        }
        if parse_ttl(&self.store.lease).is_none() {
            problems.push(Problem {
                path: "store.lease".into(),
                message: format!(
                    "{:?} is not a duration: a number and s, m or h (e.g. 60s)",
                    self.store.lease
                ),
            });
        }
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(Problem {
                path: "server.listen".into(),
                message: format!("{:?} is not IP:PORT", self.server.listen),
            });
        }
        for (path, value) in [
            ("server.header_timeout", &self.server.header_timeout),
            ("server.idle_timeout", &self.server.idle_timeout),
            ("server.body_timeout", &self.server.body_timeout),
            ("server.fetch_deadline", &self.server.fetch_deadline),
        ] {
            if parse_ttl(value).is_none() {
                problems.push(Problem {
                    path: path.into(),
                    message: format!("{value:?} is not a duration: a number and s or m (e.g. 10s)"),
                });
            }
        }
        for (path, value) in [
            ("webhooks.timeout", &self.webhooks.timeout),
            ("webhooks.give_up_after", &self.webhooks.give_up_after),
            ("webhooks.poll", &self.webhooks.poll),
        ] {
            if parse_ttl(value).is_none() {
                problems.push(Problem {
                    path: path.into(),
                    message: format!(
                        "{value:?} is not a duration: a number and s, m, h or d (e.g. 10s, 3d)"
                    ),
                });
            }
        }
        if parse_ttl(&self.follow.retention).is_none() {
            problems.push(Problem {
                path: "follow.retention".into(),
                message: format!(
                    "{:?} is not a duration: a number and d, h or m (e.g. 30d), or week, month",
                    self.follow.retention
                ),
            });
        }
        if self.server.max_connections == 0 || self.server.max_body == 0 {
            problems.push(Problem {
                path: "server.max_connections".into(),
                message: "server.max_connections and server.max_body must be at least 1".into(),
            });
        }
        if let Some(listen) = &self.server.admin_listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            problems.push(Problem {
                path: "server.admin_listen".into(),
                message: format!("{listen:?} is not IP:PORT"),
            });
        }
        if let Some(tls) = &self.server.tls
            && !["required", "optional"].contains(&tls.client_certs.as_str())
        {
            problems.push(Problem {
                path: "server.tls.client_certs".into(),
                message: format!("{:?}: use required or optional", tls.client_certs),
            });
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, issuer) in self.server.oauth2.iter().enumerate() {
            let at = format!("server.oauth2[{i}]");
            if !names.insert(issuer.name.as_str()) || issuer.name.trim().is_empty() {
                problems.push(Problem {
                    path: format!("{at}.name"),
                    message: format!("{:?}: each issuer needs a name of its own", issuer.name),
                });
            }
            if !(issuer.jwks_url.starts_with("https://")
                || issuer.jwks_url.starts_with("http://127.")
                || issuer.jwks_url.starts_with("http://localhost"))
            {
                problems.push(Problem {
                    path: format!("{at}.jwks_url"),
                    message: format!(
                        "{:?}: signing keys are fetched over https (plain http only from this machine)",
                        issuer.jwks_url
                    ),
                });
            }
            if issuer.audience.trim().is_empty() || issuer.issuer.trim().is_empty() {
                problems.push(Problem {
                    path: format!("{at}.audience"),
                    message: "issuer and audience are required: a token for another service must not open this one".into(),
                });
            }
            if parse_ttl(&issuer.leeway).is_none() {
                problems.push(Problem {
                    path: format!("{at}.leeway"),
                    message: format!("{:?} is not a duration (e.g. 30s)", issuer.leeway),
                });
            }
        }
        if !["before-answer", "buffered"].contains(&self.server.access_log.as_str()) {
            problems.push(Problem {
                path: "server.access_log".into(),
                message: format!(
                    "{:?}: use before-answer (no log entry, no answer) or buffered",
                    self.server.access_log
                ),
            });
        }
        if let Some(basis) = &self.server.legal_basis {
            problems.push(Problem {
                path: "server.legal_basis".into(),
                message: format!(
                    "{basis:?}: the API no longer has one basis for every reader; remove this \
                     line and give each client its own (`folkhub clients add NAME --basis {basis} \
                     --purpose ...`)"
                ),
            });
        }
        for (name, b) in &self.legal_bases {
            let path = format!("legal_bases.{name}");
            if folkhub_core::access::LegalBasis::PROFILES.contains(&name.as_str()) {
                problems.push(Problem {
                    path: path.clone(),
                    message: format!("{name} is a built-in profile; choose another name"),
                });
            }
            for group in &b.groups {
                if !folkhub_core::fields::CATALOGUE
                    .iter()
                    .any(|f| f.group == group)
                {
                    let groups: std::collections::BTreeSet<&str> = folkhub_core::fields::CATALOGUE
                        .iter()
                        .map(|f| f.group)
                        .collect();
                    problems.push(Problem {
                        path: format!("{path}.groups"),
                        message: format!(
                            "{group:?} is not a field group; groups: {}",
                            groups.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            }
            for marker in &b.markers {
                if !folkhub_core::access::MARKERS.contains(&marker.as_str()) {
                    problems.push(Problem {
                        path: format!("{path}.markers"),
                        message: format!(
                            "{marker:?} is not a marker; use {}",
                            folkhub_core::access::MARKERS.join(", ")
                        ),
                    });
                }
            }
        }
        if self.runtime.call_timeout_ms == 0 {
            problems.push(Problem {
                path: "runtime.call_timeout_ms".into(),
                message: "must be more than 0".into(),
            });
        }
        if self.runtime.memory_limit_mib < 2 {
            problems.push(Problem {
                path: "runtime.memory_limit_mib".into(),
                message: "must be at least 2".into(),
            });
        }
        if self.runtime.max_concurrency == 0 {
            problems.push(Problem {
                path: "runtime.max_concurrency".into(),
                message: "must be at least 1".into(),
            });
        }
        for (id, c) in &self.connectors {
            if let Some(ttl) = &c.cache_ttl
                && parse_ttl(ttl).is_none()
            {
                problems.push(Problem {
                    path: format!("connectors.{id}.cache_ttl"),
                    message: format!(
                        "{ttl:?} is not week, month, quarter or a duration like 36h or 10d"
                    ),
                });
            }
            for (key, value) in [
                ("per_call", c.costs.per_call),
                ("monthly_fee", Some(c.costs.monthly_fee)),
                ("monthly_budget", c.costs.monthly_budget),
            ] {
                if value.is_some_and(|v| v < 0.0 || !v.is_finite()) {
                    problems.push(Problem {
                        path: format!("connectors.{id}.costs.{key}"),
                        message: "must be zero or more".into(),
                    });
                }
            }
            for (i, host) in c.grant_hosts.iter().enumerate() {
                if crate::registry::origin_of(host).is_none() {
                    problems.push(Problem {
                        path: format!("connectors.{id}.grant_hosts[{i}]"),
                        message: format!("{host:?} is not an origin like https://host[:port]"),
                    });
                }
            }
        }
        for (name, job) in &self.jobs {
            if let Err(e) = job.schedule() {
                problems.push(Problem {
                    path: format!("jobs.{name}"),
                    message: e,
                });
            }
            match job.kind.as_str() {
                "changes" | "full" | "guardians" => {
                    if job.connector.is_none() {
                        problems.push(Problem {
                            path: format!("jobs.{name}.connector"),
                            message: format!("a `{}` job names its connector", job.kind),
                        });
                    }
                }
                "expire-overrides" | "retention" => {}
                other => problems.push(Problem {
                    path: format!("jobs.{name}.kind"),
                    message: format!(
                        "{other:?} is not one of changes, full, guardians, expire-overrides, retention"
                    ),
                }),
            }
        }
        let groups: std::collections::BTreeSet<&str> = folkhub_core::fields::CATALOGUE
            .iter()
            .map(|f| f.group)
            .collect();
        for (group, sources) in &self.merge.groups {
            if !groups.contains(group.as_str()) {
                problems.push(Problem {
                    path: format!("merge.groups.{group}"),
                    message: format!(
                        "is not a field group; the groups are {}",
                        groups.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            if sources.is_empty() {
                problems.push(Problem {
                    path: format!("merge.groups.{group}"),
                    message: "lists no source; remove it to keep the default".into(),
                });
            }
            let mut seen = std::collections::BTreeSet::new();
            for (i, source) in sources.iter().enumerate() {
                if source == folkhub_core::merge::OVERRIDE {
                    problems.push(Problem {
                        path: format!("merge.groups.{group}[{i}]"),
                        message: "`override` is not a source: manual overrides always win".into(),
                    });
                } else if !seen.insert(source) {
                    problems.push(Problem {
                        path: format!("merge.groups.{group}[{i}]"),
                        message: format!("{source:?} is listed twice"),
                    });
                }
            }
        }
    }

    /// Settings of one connector (empty when the operator set none).
    pub fn connector(&self, id: &str) -> ConnectorConfig {
        self.connectors.get(id).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_and_env() {
        let c = Config::parse(
            r#"
[server]
listen = "127.0.0.1:9999"
[connectors.folkeregister]
grant_hosts = ["http://127.0.0.1:18081"]
allow_private_networks = true
[connectors.folkeregister.config]
base-url = "http://127.0.0.1:18081/x"
[connectors.folkeregister.credentials]
kind = "maskinporten"
token_endpoint = "http://127.0.0.1:18081/maskinporten/token"
audience = "http://127.0.0.1:18081/maskinporten/"
client_id = "demo"
key_file = "data/key.pem"
scope = "folkeregister:deling/offentligmedhjemmel"
"#,
            "folkhub.toml",
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9999");
        assert_eq!(c.runtime.call_timeout_ms, 30_000);
        assert!(matches!(
            c.connector("folkeregister").credentials,
            Some(Credentials::Maskinporten { .. })
        ));
        let mut c = c;
        c.apply_env(|k| (k == "FOLKHUB_LISTEN").then(|| "127.0.0.1:1".to_string()));
        assert_eq!(c.server.listen, "127.0.0.1:1");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse(
            "[server]\nlisten = \"nowhere\"\n[runtime]\nmax_concurrency = 0\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("server.listen") && e.contains("runtime.max_concurrency"),
            "{e}"
        );
        let e = Config::parse("[server]\nlisen = \"x\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `lisen`") && e.contains("line 2"),
            "{e}"
        );
    }

    #[test]
    fn invalid_jobs_are_reported_with_their_path() {
        let e = Config::parse(
            "[jobs.a]\nkind = \"changes\"\nevery = \"15m\"\n[jobs.b]\nkind = \"sync\"\nconnector = \"krr\"\ncron = \"0 25 * * *\"\n[jobs.c]\nkind = \"full\"\nconnector = \"krr\"\nevery = \"1h\"\ncron = \"0 2 * * *\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "jobs.a.connector: a `changes` job names its connector",
            "jobs.b.kind: \"sync\" is not one of changes, full, guardians, expire-overrides, retention",
            "jobs.b: cron = \"0 25 * * *\": hour",
            "jobs.c: give exactly one of `every` and `cron`",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in {e}");
        }
    }

    #[test]
    fn invalid_survivorship_rules_are_reported_with_their_path() {
        let e = Config::parse(
            "[merge.groups]
adress = [\"folkeregister\"]
contact = [\"krr\", \"krr\"]
name = []
address = [\"override\"]
",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "merge.groups.adress: is not a field group",
            "merge.groups.contact[1]: \"krr\" is listed twice",
            "merge.groups.name: lists no source",
            "merge.groups.address[0]: `override` is not a source",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in {e}");
        }
    }
}
