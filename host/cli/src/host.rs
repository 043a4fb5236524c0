//! Wiring: config → manifest, store, runtime → loaded connectors.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::Utc;
use folkhub_core::MergeRules;
use folkhub_manifest::{Config, Manifest, Release};
use folkhub_runtime::{Connector, ConnectorSettings, Limits, Runtime};
use folkhub_store::sqlite::SqliteStore;
use folkhub_store::{Installation, PersonStore};

/// Everything a command needs.
pub struct Host {
    pub config: Config,
    pub manifest: Manifest,
    pub store: Arc<SqliteStore>,
    pub runtime: Runtime,
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
        let manifest = Manifest::load(&config.registry.manifest)?;
        let mut rules = MergeRules::default();
        for (group, sources) in &config.merge.groups {
            rules.groups.insert(group.clone(), sources.clone());
        }
        let store = SqliteStore::open(&config.sqlite_path(), rules)
            .await
            .with_context(|| format!("opening the store {}", config.store.url))?;
        let runtime = Runtime::new(
            Some(config.runtime.cache_dir.clone()),
            Limits::from_config(&config.runtime),
        )?;
        Ok(Host {
            config,
            manifest,
            store: Arc::new(store),
            runtime,
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
        let settings = self.settings(&release.connector)?;
        Ok(self
            .runtime
            .prepare(release, &self.manifest.artifact_path(release), settings)?)
    }

    /// Installs a release: verifies digest and contract, compiles, links,
    /// then records it. On any error nothing is recorded.
    pub async fn install(
        &self,
        connector: &str,
        version: Option<&str>,
        pin: bool,
        actor: &str,
        reason: &str,
    ) -> anyhow::Result<Installation> {
        let Some(release) = self.manifest.find(connector, version) else {
            let known = self
                .manifest
                .releases_of(connector)
                .iter()
                .map(|r| r.version.clone())
                .collect::<Vec<_>>();
            if known.is_empty() {
                bail!(
                    "no connector {connector:?} in {}; known: {}",
                    self.config.registry.manifest.display(),
                    self.manifest.connectors().join(", ")
                );
            }
            bail!(
                "{connector} has no release {}; published: {}",
                version.unwrap_or("?"),
                known.join(", ")
            );
        };
        let prepared = self.prepare(release)?;
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

    /// Loads the installed release of a connector.
    pub async fn load(&self, connector: &str) -> anyhow::Result<Connector> {
        // At most one automatic upgrade per load.
        for _ in 0..2 {
            let Some(installation) = self.store.installation(connector).await? else {
                bail!("{connector} is not installed; run `folkhub connectors install {connector}`");
            };
            let Some(release) = self.manifest.find(connector, Some(&installation.version)) else {
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
            match folkhub_manifest::support_state(&self.manifest, release, self.today()) {
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
                    "disable" => bail!(
                        "{connector} {} is disabled: {reason}; upgrade with `folkhub connectors install {connector} --version {by}`",
                        installation.version
                    ),
                    "auto-upgrade" if !installation.pinned => {
                        tracing::warn!(connector, "auto-upgrading to {by}: {reason}");
                        self.install(
                            connector,
                            Some(&by),
                            false,
                            "folkhub (deadline action)",
                            &format!("auto-upgrade at the deadline: {reason}"),
                        )
                        .await?;
                        continue;
                    }
                    "auto-upgrade" => tracing::warn!(
                        connector,
                        "{connector} {} is pinned, so the auto-upgrade to {by} did not run: {reason}",
                        installation.version
                    ),
                    _ => tracing::warn!(
                        connector,
                        "{connector} {} is unsupported: {reason}; upgrade to {by}",
                        installation.version
                    ),
                },
            }
            let prepared = self.prepare(release)?;
            if let Some(warning) = &prepared.deprecation {
                tracing::warn!(connector, "{warning}");
            }
            return Ok(prepared);
        }
        bail!(
            "{connector}: the automatic upgrade did not settle; see `folkhub connectors outdated`"
        )
    }

    /// Today for deadlines and support states: `FOLKHUB_TODAY` (read at
    /// open) or the field set by a caller, so an admin can rehearse a
    /// deadline and tests can move the clock; otherwise the real date.
    pub fn today(&self) -> chrono::NaiveDate {
        self.today.unwrap_or_else(|| Utc::now().date_naive())
    }

    /// The ID schemes a connector's installed release looks up.
    pub fn schemes(&self, connector: &Connector) -> Vec<String> {
        self.manifest
            .find(&connector.id, Some(&connector.version))
            .map(|r| r.id_schemes.clone())
            .unwrap_or_default()
    }

    pub fn store(&self) -> &dyn PersonStore {
        self.store.as_ref()
    }
}
