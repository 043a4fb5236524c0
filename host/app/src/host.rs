//! Wiring: config → manifest, store, runtime → loaded connectors; and the
//! lifecycle of an installed connector (install, upgrade, rollback, pin,
//! deadline actions).
//!
//! A connector is loaded per call from what the store says is installed
//! now, against the registry manifest as the file says now: an install,
//! upgrade or rollback made by any host takes effect in a running server
//! when its next call starts, and the call in flight finishes on the
//! release it started with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use anyhow::{Context, bail};
use chrono::Utc;
use folkhub_core::MergeRules;
use folkhub_manifest::{Config, Manifest, Release};
use folkhub_runtime::{Connector, ConnectorSettings, Limits, Runtime};
use folkhub_store::sql::{OpenMode, SqlStore, redact};
use folkhub_store::{Installation, Installations, Jobs, PersonStore, Persons};

/// The time overrides expire by: the start of `today` when it is set
/// (`FOLKHUB_TODAY`), else now.
fn clock(today: Option<chrono::NaiveDate>) -> chrono::DateTime<Utc> {
    today
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or_else(Utc::now, |t| t.and_utc())
}

/// The merge rules of a config: its `[merge.groups]` over the defaults.
fn rules_of(config: &Config) -> MergeRules {
    let mut rules = MergeRules::default();
    for (group, sources) in &config.merge.groups {
        rules.groups.insert(group.clone(), sources.clone());
    }
    rules
}

/// The registry manifest, read again when its file changes (a vendor's
/// new release is published while a server runs). A file that no longer
/// parses keeps the last good manifest in use, with a warning.
#[derive(Debug)]
pub struct ManifestFile {
    /// The built-in registry's manifest, then vendors' (`[registry] vendors`).
    paths: Vec<PathBuf>,
    current: RwLock<(Vec<Option<Stamp>>, Arc<Manifest>)>,
}

/// A file's modification time and length: a change to either is a change.
type Stamp = (SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl ManifestFile {
    /// Reads the manifest; an invalid one is an error here.
    pub fn load(path: &Path) -> anyhow::Result<ManifestFile> {
        Self::load_all(path, &[])
    }

    /// Reads the built-in manifest and vendors' manifests as one.
    pub fn load_all(path: &Path, vendors: &[PathBuf]) -> anyhow::Result<ManifestFile> {
        let paths: Vec<PathBuf> = std::iter::once(path.to_path_buf())
            .chain(vendors.iter().cloned())
            .collect();
        let seen = paths.iter().map(|p| stamp(p)).collect();
        let manifest = Self::read(&paths)?;
        Ok(ManifestFile {
            paths,
            current: RwLock::new((seen, Arc::new(manifest))),
        })
    }

    fn read(paths: &[PathBuf]) -> anyhow::Result<Manifest> {
        let first = Manifest::load(&paths[0])?;
        let mut others = Vec::new();
        for path in &paths[1..] {
            others.push((path.display().to_string(), Manifest::load(path)?));
        }
        Ok(Manifest::combine(first, others)?)
    }

    /// The manifest as the files say now.
    pub fn get(&self) -> Arc<Manifest> {
        let now: Vec<Option<Stamp>> = self.paths.iter().map(|p| stamp(p)).collect();
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if current.0 == now {
                return current.1.clone();
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.0 != now {
            match Self::read(&self.paths) {
                Ok(manifest) => {
                    tracing::info!(file = %self.paths[0].display(), "registry manifest changed: reloaded");
                    *current = (now, Arc::new(manifest));
                }
                Err(e) => {
                    tracing::warn!(
                        file = %self.paths[0].display(),
                        "registry manifest changed but does not parse; keeping the last good one: {e}"
                    );
                    // Not again until the file changes once more.
                    current.0 = now;
                }
            }
        }
        current.1.clone()
    }
}

/// What an installed release disabled at its deadline says.
pub(crate) fn disabled(installation: &Installation, by: &str, reason: &str) -> String {
    let connector = &installation.connector;
    format!(
        "{connector} {} is disabled: {reason}; upgrade with `folkhub connectors upgrade {connector} --to {by}`",
        installation.version
    )
}

/// Everything a command needs. Cheap to clone: the store, runtime and
/// manifest are shared (a server hands a clone to its API's status).
#[derive(Clone)]
pub struct Host {
    pub config: Config,
    pub registry: Arc<ManifestFile>,
    pub store: Arc<SqlStore>,
    pub runtime: Arc<Runtime>,
    /// The date deadlines are judged by, when not the real one.
    pub today: Option<chrono::NaiveDate>,
}

impl Host {
    /// Opens the store and builds the runtime from a loaded config.
    pub async fn open(config: Config) -> anyhow::Result<Host> {
        let today = match std::env::var("FOLKHUB_TODAY") {
            Ok(text) => Some(
                chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|e| {
                    anyhow::anyhow!("FOLKHUB_TODAY={text:?} is not a date YYYY-MM-DD: {e}")
                })?,
            ),
            Err(_) => None,
        };
        let (vendors, unfetched) = config.registry.vendor_manifests();
        for url in &unfetched {
            tracing::warn!(
                registry = %url,
                "the vendor registry at {url} has not been fetched yet, so its releases are not listed: run `folkhub connectors fetch`"
            );
        }
        let registry = ManifestFile::load_all(&config.registry.manifest, &vendors)?;
        let mode = match config.store.migrate {
            folkhub_manifest::MigrateMode::OnStart => OpenMode::Migrate,
            folkhub_manifest::MigrateMode::Manual => OpenMode::RequireCurrent,
        };
        let store = SqlStore::open_url(&config.store.url, rules_of(&config), mode)
            .await
            .with_context(|| format!("opening the store {}", redact(&config.store.url)))?;
        // Overrides whose expiry passed end now (by the same clock as
        // deadlines), so every command sees them ended.
        let expired = store.expire_overrides(clock(today)).await?;
        if !expired.is_empty() {
            tracing::info!("overrides expired: {expired:?}");
        }
        let runtime = Runtime::new(
            Some(config.runtime.cache_dir.clone()),
            Limits::from_config(&config.runtime),
        )?;
        Ok(Host {
            config,
            registry: Arc::new(registry),
            store: Arc::new(store),
            runtime: Arc::new(runtime),
            today,
        })
    }

    /// Opens with `folkhub.toml` (or the given file) and the environment.
    pub async fn from_file(path: Option<&Path>) -> anyhow::Result<Host> {
        Host::open(Config::load(path)?).await
    }

    fn settings(&self, connector: &str) -> anyhow::Result<ConnectorSettings> {
        let c = self.config.connector(connector);
        let credentials = match &c.credentials {
            Some(creds) => folkhub_runtime::credentials::from_config(creds)
                .map_err(|e| anyhow::anyhow!("connectors.{connector}.credentials: {e}"))?,
            None => None,
        };
        let client = match &c.credentials {
            Some(folkhub_manifest::Credentials::Mtls {
                cert_file,
                key_file,
            }) => Some((cert_file.as_path(), key_file.as_path())),
            _ => None,
        };
        let tls = if client.is_some() || c.tls_roots.is_some() {
            Some(
                folkhub_runtime::credentials::tls_config(c.tls_roots.as_deref(), client)
                    .map_err(|e| anyhow::anyhow!("connectors.{connector}: {e}"))?,
            )
        } else {
            None
        };
        Ok(ConnectorSettings {
            granted_hosts: c.grant_hosts.clone(),
            allow_private_networks: c.allow_private_networks,
            config: c.config.clone(),
            credentials,
            tls,
            secrets: c.secrets.clone(),
        })
    }

    /// Verifies and prepares a release without recording anything.
    pub fn prepare(&self, release: &Release) -> anyhow::Result<Connector> {
        self.prepare_with(release, &BTreeMap::new())
    }

    /// As [`Host::prepare`], with some of the operator's config values for
    /// the connector replaced (a dry run of a release whose migration note
    /// asks for a new `base-url`, before folkhub.toml is edited).
    pub fn prepare_with(
        &self,
        release: &Release,
        overrides: &BTreeMap<String, String>,
    ) -> anyhow::Result<Connector> {
        let mut settings = self.settings(&release.connector)?;
        settings
            .config
            .extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(self
            .runtime
            .prepare(release, &self.manifest().artifact_path(release), settings)?)
    }

    /// Is `release` signed by a publisher this host trusts (`[registry]
    /// trusted_keys`)? With `allow_unsigned`, a release that is not is
    /// installed with a warning.
    pub fn check_signature(&self, release: &Release) -> anyhow::Result<()> {
        let registry = &self.config.registry;
        match folkhub_manifest::signing::verify(release, &registry.trusted_keys) {
            Ok(()) => Ok(()),
            Err(e) if registry.allow_unsigned => {
                tracing::warn!(
                    connector = %release.connector,
                    "{} {}: {e}; installed anyway ([registry] allow_unsigned = true)",
                    release.connector,
                    release.version
                );
                Ok(())
            }
            Err(e) => bail!("{} {} is refused: {e}", release.connector, release.version),
        }
    }

    /// Refuses a release this host cannot run or that cannot follow the
    /// installed one, by the release's own semver requirements: `host`
    /// (the folkhub versions it needs) and, when `from` is the installed
    /// version it would replace, `upgrades_from`. Both versions are named.
    pub fn check_requirements(&self, release: &Release, from: Option<&str>) -> anyhow::Result<()> {
        use folkhub_manifest::registry::{HOST_VERSION, admits};
        let (connector, version) = (&release.connector, &release.version);
        if let Some(host) = &release.host
            && !admits(host, HOST_VERSION).map_err(anyhow::Error::msg)?
        {
            bail!(
                "{connector} {version} needs folkhub {host}; this host is folkhub {HOST_VERSION}: upgrade folkhub first, or install an earlier release of {connector}"
            );
        }
        if let (Some(required), Some(from)) = (&release.upgrades_from, from)
            && !admits(required, from).map_err(anyhow::Error::msg)?
        {
            let manifest = self.manifest();
            let steps: Vec<String> = manifest
                .releases_of(connector)
                .into_iter()
                .filter(|r| {
                    use folkhub_manifest::registry::{is_prerelease, semver};
                    // A stable release the requirement admits, between
                    // the installed one and this one.
                    admits(required, &r.version).unwrap_or(false)
                        && !is_prerelease(&r.version)
                        && semver(&r.version) > semver(from)
                        && semver(&r.version) < semver(version)
                })
                .map(|r| r.version.clone())
                .collect();
            bail!(
                "{connector} {version} upgrades only from {required}, and the installed release is {from}: {}",
                if steps.is_empty() {
                    format!("no published release of {connector} is in between; ask the vendor")
                } else {
                    format!(
                        "upgrade to {} first (`folkhub connectors upgrade {connector} --to {}`), then to {version}",
                        steps.join(" or "),
                        steps[steps.len() - 1]
                    )
                }
            );
        }
        Ok(())
    }

    /// Installs a release: verifies digest and contract, compiles, links,
    /// checks that the component is the connector it is installed as, then
    /// records it. On any error nothing is recorded.
    pub async fn install(
        &self,
        connector: &str,
        version: Option<&str>,
        pin: bool,
        actor: &str,
        reason: &str,
    ) -> anyhow::Result<Installation> {
        let manifest = self.manifest();
        let Some(release) = manifest.find(connector, version) else {
            let known = manifest
                .releases_of(connector)
                .iter()
                .map(|r| r.version.clone())
                .collect::<Vec<_>>();
            if known.is_empty() {
                let (_, unfetched) = self.config.registry.vendor_manifests();
                let vendors =
                    self.config.registry.vendors.len() + self.config.registry.vendor_urls.len();
                let hint = if !unfetched.is_empty() {
                    format!(
                        "; {} granted registr{} not fetched yet: run `folkhub connectors fetch`",
                        unfetched.len(),
                        if unfetched.len() == 1 {
                            "y is"
                        } else {
                            "ies are"
                        }
                    )
                } else if vendors > 0 {
                    format!(
                        " or its {vendors} vendor registr{}",
                        if vendors == 1 { "y" } else { "ies" }
                    )
                } else {
                    String::new()
                };
                bail!(
                    "no connector {connector:?} in {}{hint}; known: {}",
                    self.config.registry.manifest.display(),
                    manifest.connectors().join(", ")
                );
            }
            bail!(
                "{connector} has no release {}; published: {}",
                version.unwrap_or("?"),
                known.join(", ")
            );
        };
        self.check_signature(release)?;
        self.check_requirements(release, None)?;
        let prepared = self.prepare(release)?;
        is_who_it_says(&prepared).await?;
        let installation = Installation {
            connector: release.connector.clone(),
            version: release.version.clone(),
            digest: prepared.digest.clone(),
            contract: prepared.contract.to_string(),
            pinned: pin,
            installed_at: Utc::now(),
            installed_by: actor.to_string(),
        };
        self.store.install(installation.clone(), reason).await?;
        Ok(installation)
    }

    /// The registry's release of what is installed: still published, and
    /// with the bytes that were installed.
    pub fn installed_release<'m>(
        &self,
        manifest: &'m Manifest,
        installation: &Installation,
    ) -> anyhow::Result<&'m Release> {
        let connector = &installation.connector;
        let Some(release) = manifest.find(connector, Some(&installation.version)) else {
            bail!(
                "{connector} {} is installed but no longer in {}; reinstall a published release",
                installation.version,
                self.config.registry.manifest.display()
            );
        };
        if release.sha256 != installation.digest {
            bail!(
                "{connector} {}: registry-manifest.toml now gives sha256 {}, but {} was installed; a published release must not change (reinstall to accept it)",
                installation.version,
                release.sha256,
                installation.digest
            );
        }
        Ok(release)
    }

    /// Loads the installed release of a connector.
    pub async fn load(&self, connector: &str) -> anyhow::Result<Connector> {
        // At most one automatic upgrade per load.
        for _ in 0..2 {
            let manifest = self.manifest();
            let Some(installation) = self.store.installation(connector).await? else {
                bail!("{connector} is not installed; run `folkhub connectors install {connector}`");
            };
            let release = self.installed_release(&manifest, &installation)?;
            match folkhub_manifest::support_state(&manifest, release, self.today()) {
                folkhub_manifest::SupportState::Supported => {}
                folkhub_manifest::SupportState::Deprecated {
                    by,
                    deadline,
                    days_left,
                    warning: Some(step),
                    ..
                } => tracing::warn!(
                    connector,
                    "{step}-day notice: {connector} {} must be upgraded to {by} by {deadline} ({days_left} days left); see `folkhub connectors outdated`",
                    installation.version
                ),
                folkhub_manifest::SupportState::Deprecated { .. } => {}
                folkhub_manifest::SupportState::Unsupported {
                    by, action, reason, ..
                } => match action.as_str() {
                    "disable" | "warn" => {
                        self.note_deadline(&installation, &action, &reason).await?;
                        if action == "disable" {
                            bail!(disabled(&installation, &by, &reason));
                        }
                        tracing::warn!(
                            connector,
                            "{connector} {} is unsupported: {reason}; upgrade to {by}",
                            installation.version
                        );
                    }
                    "auto-upgrade" if !installation.pinned => {
                        // The release that set the deadline, or a later one of
                        // its major: within a major nothing breaks, and a later
                        // minor may fix what the first release of it got wrong.
                        let Some(target) = manifest.newest_of_major(connector, &by) else {
                            bail!(
                                "{connector}: the auto-upgrade target {by} is not in the manifest"
                            );
                        };
                        self.check_signature(target)?;
                        self.check_requirements(target, Some(&installation.version))?;
                        tracing::warn!(
                            connector,
                            "auto-upgrading to {} ({by} or later of its major): {reason}",
                            target.version
                        );
                        self.record(
                            target,
                            false,
                            "folkhub (deadline action)",
                            "auto-upgrade",
                            &format!("auto-upgrade at the deadline: {reason}"),
                        )
                        .await?;
                        continue;
                    }
                    "auto-upgrade" => {
                        self.note_deadline(
                            &installation,
                            "auto-upgrade-pinned",
                            &format!("pinned, so the auto-upgrade to {by} did not run: {reason}"),
                        )
                        .await?;
                        tracing::warn!(
                            connector,
                            "{connector} {} is pinned, so the auto-upgrade to {by} did not run: {reason}",
                            installation.version
                        )
                    }
                    _ => tracing::warn!(
                        connector,
                        "{connector} {} is unsupported: {reason}; upgrade to {by}",
                        installation.version
                    ),
                },
            }
            let prepared = self.prepare(release)?;
            if let Some(notice) = &prepared.deprecation {
                // Shown by `connectors outdated`; a warning at every load
                // would repeat it on every command for the whole window.
                tracing::info!(connector, "{notice}");
            }
            return Ok(prepared);
        }
        bail!(
            "{connector}: the automatic upgrade did not settle; see `folkhub connectors outdated`"
        )
    }

    /// Stores, once per installed release, that its deadline action ran and
    /// why (the audit trail shows it; `connectors list` shows the state).
    async fn note_deadline(
        &self,
        installation: &Installation,
        action: &str,
        reason: &str,
    ) -> anyhow::Result<()> {
        let name = format!("deadline-{action}");
        let audit = self.store.audit(&installation.connector).await?;
        let noted = audit.iter().any(|e| {
            e.action == name && e.digest_after.as_deref() == Some(installation.digest.as_str())
        });
        if !noted {
            self.store
                .audit_event(
                    &installation.connector,
                    "folkhub (deadline action)",
                    &name,
                    reason,
                )
                .await?;
        }
        Ok(())
    }

    /// The registry manifest as its file says now.
    pub fn manifest(&self) -> Arc<Manifest> {
        self.registry.get()
    }

    /// The time overrides expire by (see [`Host::today`]).
    pub fn now(&self) -> chrono::DateTime<Utc> {
        clock(self.today)
    }

    /// Today for deadlines and support states: `FOLKHUB_TODAY` (read at
    /// open) or the field set by a caller, so an admin can rehearse a
    /// deadline and tests can move the clock; otherwise the real date.
    pub fn today(&self) -> chrono::NaiveDate {
        self.today.unwrap_or_else(|| Utc::now().date_naive())
    }

    /// The ID schemes a connector's installed release looks up.
    pub fn schemes(&self, connector: &Connector) -> Vec<String> {
        self.manifest()
            .find(&connector.id, Some(&connector.version))
            .map(|r| r.id_schemes.clone())
            .unwrap_or_default()
    }

    /// This host's name when several hosts share the database
    /// (PostgreSQL); `None` on SQLite (one host).
    pub fn cluster_name(&self) -> Option<String> {
        if self.store.backend() != folkhub_store::sql::Backend::Postgres {
            return None;
        }
        Some(self.config.store.host_name.clone().unwrap_or_else(|| {
            let machine = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "host".into());
            format!("{machine}-{}", std::process::id())
        }))
    }

    /// How long leases last (`store.lease`).
    pub fn lease(&self) -> std::time::Duration {
        folkhub_manifest::config::parse_ttl(&self.config.store.lease)
            .and_then(|d| d.to_std().ok())
            .unwrap_or(std::time::Duration::from_secs(60))
    }

    pub fn store(&self) -> &dyn PersonStore {
        self.store.as_ref()
    }
}

/// Failed runs in a row that open a connector's circuit breaker.
pub const BREAKER_FAILURES: u32 = 3;

/// A connector's spending this month against its budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetState {
    pub spent: f64,
    pub budget: f64,
    /// At 80 % or more.
    pub warn: bool,
    /// At 100 % and the operator asked to stop non-urgent jobs.
    pub stop: bool,
    pub message: String,
}

/// What upgrading an installed connector to another release would change.
#[derive(Debug)]
pub struct UpgradePlan {
    pub installed: Installation,
    pub from: Release,
    pub to: Release,
    /// Releases after the installed one up to the target, oldest first:
    /// their notes are what the admin must read.
    pub between: Vec<Release>,
    /// Origins the target requests that folkhub.toml does not grant.
    pub ungranted: Vec<String>,
    /// Origins the target may reach.
    pub reachable: Vec<String>,
}

/// Items in `b` not in `a`, and in `a` not in `b`.
pub fn added_removed(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
    (
        b.iter().filter(|x| !a.contains(x)).cloned().collect(),
        a.iter().filter(|x| !b.contains(x)).cloned().collect(),
    )
}

impl Host {
    /// Updates the connector's circuit breaker after a run: failed runs in a
    /// row open it after [`BREAKER_FAILURES`], for 5 minutes doubling with
    /// each further failure (at most a day); a run that is not failed
    /// closes it.
    pub async fn after_run(
        &self,
        connector: &str,
        summary: &folkhub_sync::Summary,
    ) -> anyhow::Result<()> {
        let mut b = self.store.breaker(connector).await?;
        if summary.status == folkhub_store::RunStatus::Failed {
            crate::webhooks::event(
                self,
                &format!("run-failed:{}", summary.run),
                "run.failed",
                serde_json::json!({
                    "connector": connector,
                    "run": summary.run,
                    "error": summary.errors.last(),
                }),
            )
            .await;
            b.failures += 1;
            b.last_error = summary.errors.last().cloned();
            if b.failures >= BREAKER_FAILURES {
                let now = Utc::now();
                let doublings = (b.failures - BREAKER_FAILURES).min(9);
                let pause =
                    chrono::Duration::minutes(5 * (1 << doublings)).min(chrono::Duration::days(1));
                if b.open_until.is_none_or(|u| u <= now) {
                    b.opened_at = Some(now);
                    crate::webhooks::event(
                        self,
                        &format!("breaker:{connector}:{}", now.timestamp()),
                        "breaker.opened",
                        serde_json::json!({
                            "connector": connector,
                            "failures": b.failures,
                            "until": (now + pause).to_rfc3339(),
                            "last_error": b.last_error,
                        }),
                    )
                    .await;
                }
                b.open_until = Some(now + pause);
                tracing::warn!(
                    connector,
                    "circuit opened after {} failed runs; no calls until {}",
                    b.failures,
                    now + pause
                );
            }
        } else {
            if b.failures == 0 && b.open_until.is_none() {
                return Ok(());
            }
            b = folkhub_store::Breaker {
                connector: connector.to_string(),
                ..Default::default()
            };
        }
        self.store.set_breaker(&b).await?;
        Ok(())
    }

    /// The price of one register call: operator config, else the release's.
    pub fn cost_per_call(&self, connector: &Connector) -> f64 {
        self.config
            .connector(&connector.id)
            .costs
            .per_call
            .or_else(|| {
                self.manifest()
                    .find(&connector.id, Some(&connector.version))
                    .map(|r| r.cost_per_call)
            })
            .unwrap_or(0.0)
    }

    /// This month's spending (calls and the monthly fee) against the
    /// connector's budget; `None` without a budget.
    pub async fn budget(&self, connector: &str) -> anyhow::Result<Option<BudgetState>> {
        let costs = self.config.connector(connector).costs;
        let Some(budget) = costs.monthly_budget else {
            return Ok(None);
        };
        let month = self.today().format("%Y-%m").to_string();
        let calls: f64 = self
            .store
            .costs(Some(&month))
            .await?
            .iter()
            .filter(|r| r.connector == connector)
            .map(|r| r.cost)
            .sum();
        let spent = calls + costs.monthly_fee;
        let share = if budget > 0.0 {
            spent / budget
        } else {
            f64::INFINITY
        };
        Ok(Some(BudgetState {
            spent,
            budget,
            warn: share >= 0.8,
            stop: share >= 1.0 && costs.stop_at_budget,
            message: format!(
                "{spent:.2} of the {budget:.2} budget for {month} spent ({:.0} %)",
                share * 100.0
            ),
        }))
    }

    /// The merge rules from `folkhub.toml` over the defaults.
    pub fn rules(&self) -> MergeRules {
        rules_of(&self.config)
    }

    /// Checks an upgrade without changing anything: the target exists, is
    /// newer than what is installed, verifies (digest, contract, link) and
    /// can reach its register.
    pub async fn plan_upgrade(&self, connector: &str, to: &str) -> anyhow::Result<UpgradePlan> {
        self.plan_upgrade_with(connector, to, &BTreeMap::new())
            .await
    }

    /// As [`Host::plan_upgrade`], with config overrides for the target.
    pub async fn plan_upgrade_with(
        &self,
        connector: &str,
        to: &str,
        overrides: &BTreeMap<String, String>,
    ) -> anyhow::Result<UpgradePlan> {
        let manifest = self.manifest();
        let Some(installed) = self.store.installation(connector).await? else {
            bail!("{connector} is not installed; run `folkhub connectors install {connector}`");
        };
        let Some(from) = manifest.find(connector, Some(&installed.version)) else {
            bail!(
                "{connector} {} is installed but no longer in {}; install a published release with `folkhub connectors install {connector} --version V`",
                installed.version,
                self.config.registry.manifest.display()
            );
        };
        let Some(target) = manifest.find(connector, Some(to)) else {
            let known: Vec<String> = manifest
                .releases_of(connector)
                .iter()
                .map(|r| r.version.clone())
                .collect();
            bail!(
                "{connector} has no release {to}; published: {}",
                known.join(", ")
            );
        };
        let semver = folkhub_manifest::registry::semver;
        if semver(&target.version) <= semver(&from.version) {
            bail!(
                "{connector} {to} is not newer than the installed {}; `folkhub connectors rollback {connector}` returns to the previous release, `folkhub connectors install {connector} --version {to}` installs any",
                installed.version
            );
        }
        self.check_signature(target)?;
        self.check_requirements(target, Some(&installed.version))?;
        let prepared = self
            .prepare_with(target, overrides)
            .with_context(|| format!("{connector} {to} cannot be installed on this host"))?;
        is_who_it_says(&prepared)
            .await
            .with_context(|| format!("{connector} {to} cannot be installed on this host"))?;
        let mut config = self.config.connector(connector).config.clone();
        config.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        let requested = target.requested_origins(&config);
        let reachable = prepared.allowed_origins();
        let ungranted = requested
            .into_iter()
            .filter(|o| !reachable.contains(o))
            .collect();
        let between = manifest
            .releases_of(connector)
            .into_iter()
            .filter(|r| {
                semver(&r.version) > semver(&from.version)
                    && semver(&r.version) <= semver(&target.version)
            })
            .cloned()
            .collect();
        Ok(UpgradePlan {
            installed,
            from: from.clone(),
            to: target.clone(),
            between,
            ungranted,
            reachable,
        })
    }

    /// Upgrades to `to` after the checks of [`Host::plan_upgrade`]. The pin
    /// stays as it was; the change feed's cursor carries over (it belongs to
    /// the connector, not the release); the previous release stays in the
    /// registry and the compile cache, so a rollback is immediate.
    pub async fn upgrade(
        &self,
        connector: &str,
        to: &str,
        actor: &str,
        reason: &str,
    ) -> anyhow::Result<(UpgradePlan, Installation)> {
        let plan = self.plan_upgrade(connector, to).await?;
        if plan.reachable.is_empty() {
            bail!(
                "{connector} {to} could reach none of the hosts it requests ({}); grant one in [connectors.{connector}] grant_hosts of folkhub.toml first, then upgrade",
                plan.ungranted.join(", ")
            );
        }
        let installation = self
            .record(&plan.to, plan.installed.pinned, actor, "upgrade", reason)
            .await?;
        Ok((plan, installation))
    }

    /// Verifies and records a release with an audit action.
    async fn record(
        &self,
        release: &Release,
        pinned: bool,
        actor: &str,
        action: &str,
        reason: &str,
    ) -> anyhow::Result<Installation> {
        let prepared = self.prepare(release)?;
        let installation = Installation {
            connector: release.connector.clone(),
            version: release.version.clone(),
            digest: prepared.digest.clone(),
            contract: prepared.contract.to_string(),
            pinned,
            installed_at: Utc::now(),
            installed_by: actor.to_string(),
        };
        self.store
            .change_installation(installation.clone(), Some(action), reason)
            .await?;
        Ok(installation)
    }

    /// Returns to the release installed before the last version change, if
    /// its artifact still has the digest recorded then.
    pub async fn rollback(
        &self,
        connector: &str,
        actor: &str,
        reason: &str,
    ) -> anyhow::Result<(Installation, Installation)> {
        let manifest = self.manifest();
        let Some(current) = self.store.installation(connector).await? else {
            bail!("{connector} is not installed");
        };
        let audit = self.store.audit(connector).await?;
        let Some(last) = audit.iter().rev().find(|e| {
            e.version_after.as_deref() == Some(current.version.as_str())
                && e.version_before.is_some()
                && e.version_before != e.version_after
        }) else {
            bail!(
                "{connector} {} has no earlier release to roll back to (see `folkhub connectors history {connector}`)",
                current.version
            );
        };
        let (Some(version), Some(digest)) = (&last.version_before, &last.digest_before) else {
            bail!("{connector}: the audit entry has no earlier release");
        };
        let Some(release) = manifest.find(connector, Some(version)) else {
            bail!(
                "{connector} {version} (installed before {}) is no longer in {}; install a published release instead",
                current.version,
                self.config.registry.manifest.display()
            );
        };
        if &release.sha256 != digest {
            bail!(
                "{connector} {version}: registry-manifest.toml now gives sha256 {}, but {digest} was installed before; a rollback returns only to the same bytes",
                release.sha256
            );
        }
        let installation = self
            .record(release, current.pinned, actor, "rollback", reason)
            .await?;
        Ok((current, installation))
    }

    /// Pins or unpins the installed release.
    pub async fn pin(
        &self,
        connector: &str,
        pinned: bool,
        actor: &str,
        reason: &str,
    ) -> anyhow::Result<Installation> {
        if !self
            .store
            .set_pinned(connector, pinned, actor, reason)
            .await?
        {
            bail!("{connector} is not installed");
        }
        self.store
            .installation(connector)
            .await?
            .context("the installation vanished")
    }
}

/// A component says which connector it is (`describe().source`): one
/// installed under another connector's id (an artifact with a matching
/// digest swapped into another release of the manifest) is refused, since
/// its register calls, fields and merge rank would be another's.
async fn is_who_it_says(prepared: &Connector) -> anyhow::Result<()> {
    let described = prepared
        .describe()
        .await
        .with_context(|| format!("{} {}: describe() failed", prepared.id, prepared.version))?;
    if described.source != prepared.id {
        bail!(
            "the artifact of {} {} is the connector {:?} (its describe().source), not {:?}: the manifest entry points at another connector's component; ask the publisher for the right artifact",
            prepared.id,
            prepared.version,
            described.source,
            prepared.id
        );
    }
    Ok(())
}
