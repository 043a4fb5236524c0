//! A prepared connector and its calls. Each call gets a fresh Store and
//! instance from the cached `InstancePre`, so nothing leaks between calls,
//! and a trap or timeout loses only that call.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use folkhub_core::contract as core;
use folkhub_manifest::Release;
use tokio::sync::Semaphore;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::bindings::Exports;
use crate::credentials::CredentialSource;
use crate::engine::{Runtime, sha256_hex};
use crate::error::{CallError, InstallError};
use crate::negotiate::{self, ContractVersion, Support};
use crate::outbound::{HttpPolicy, PolicyHooks};
use crate::state::{CallContext, HostState};

/// What the operator set for a connector.
#[derive(Default, Clone)]
pub struct ConnectorSettings {
    pub granted_hosts: Vec<String>,
    pub allow_private_networks: bool,
    pub config: BTreeMap<String, String>,
    pub credentials: Option<Arc<dyn CredentialSource>>,
    /// TLS roots and client certificate; `None` = the public web roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Values for `{{secret:NAME}}` placeholders in request bodies.
    pub secrets: BTreeMap<String, String>,
}

/// A verified, compiled, linked connector release, ready to call.
pub struct Connector {
    pub id: String,
    pub version: String,
    pub contract: ContractVersion,
    pub digest: String,
    /// Set when the contract major is deprecated on this host.
    pub deprecation: Option<String>,
    /// Capabilities the release declares in the manifest (`change-feed`, ...).
    pub capabilities: Vec<String>,
    /// ID schemes the release looks up (`no-fnr`, `fi-hetu`, ...).
    pub id_schemes: Vec<String>,
    /// The register API version the release speaks (manifest `upstream.version`).
    pub upstream_version: String,
    pre: wasmtime::component::InstancePre<HostState>,
    exports: Arc<Exports>,
    context: Arc<CallContext>,
    policy: Arc<HttpPolicy>,
    credentials: Option<Arc<dyn CredentialSource>>,
    tls: Arc<rustls::ClientConfig>,
    secrets: Arc<BTreeMap<String, String>>,
    permits: Arc<Semaphore>,
    upstream_calls: Arc<AtomicU64>,
    /// The largest linear memory any call has grown to, bytes.
    memory_peak: Arc<AtomicU64>,
    /// Keeps the epoch ticker running while this connector exists, so its
    /// calls stay interruptible even if the runtime is dropped first.
    _ticker: Arc<crate::engine::Ticker>,
    engine: wasmtime::Engine,
    limits: crate::engine::Limits,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("contract", &self.contract)
            .finish()
    }
}

impl Runtime {
    /// Verifies the artifact against the release, reads and checks its
    /// contract version, compiles (or loads precompiled) and links it.
    /// Nothing is recorded anywhere; the caller decides what to keep.
    pub fn prepare(
        &self,
        release: &Release,
        artifact: &Path,
        settings: ConnectorSettings,
    ) -> Result<Connector, InstallError> {
        let (connector, version) = (release.connector.clone(), release.version.clone());
        let wasm = std::fs::read(artifact).map_err(|source| InstallError::Read {
            connector: connector.clone(),
            version: version.clone(),
            path: artifact.display().to_string(),
            source,
        })?;
        let digest = sha256_hex(&wasm);
        if digest != release.sha256 {
            return Err(InstallError::Digest {
                connector,
                version,
                expected: release.sha256.clone(),
                actual: digest,
            });
        }
        let component = self.component(&connector, &version, &wasm, &digest)?;
        let contract_error = |message: String| InstallError::Contract {
            connector: connector.clone(),
            version: version.clone(),
            message,
        };
        let contract =
            negotiate::exported_version(&self.engine, &component).map_err(contract_error)?;
        let declared = ContractVersion::parse(&release.contract).ok_or_else(|| {
            contract_error(format!(
                "registry-manifest.toml gives contract {:?}, not MAJOR.MINOR.PATCH",
                release.contract
            ))
        })?;
        if declared != contract {
            return Err(contract_error(format!(
                "registry-manifest.toml says it was built against folkhub:connector {declared}, but the artifact exports {contract}; the manifest must agree with the artifact"
            )));
        }
        let major = negotiate::check(contract).map_err(contract_error)?;
        let deprecation = match major.support {
            Support::Supported => None,
            Support::Deprecated { removal, .. } => Some(format!(
                "{connector} {version} is built on folkhub:connector {contract}; major {} is deprecated on this host and removed after {removal}: ask the vendor for a release on {}",
                major.major,
                negotiate::newest()
            )),
        };
        let link_error = |e: wasmtime::Error| InstallError::Link {
            connector: connector.clone(),
            version: version.clone(),
            message: crate::diagnostics::explain_link_error(&e),
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(link_error)?;
        let exports = Exports::new(contract.major, &instance_pre).map_err(link_error)?;
        let pre = instance_pre;
        let requested = release.requested_origins(&settings.config);
        let policy = HttpPolicy::new(
            &requested,
            &settings.granted_hosts,
            settings.allow_private_networks,
            self.limits.max_response_bytes,
        );
        let context = Arc::new(CallContext {
            connector: connector.clone(),
            version: version.clone(),
            config: settings.config,
            max_hostcalls: self.limits.max_hostcalls,
            memory_limit_bytes: self.limits.memory_limit_bytes,
        });
        Ok(Connector {
            id: connector,
            version,
            contract,
            digest,
            deprecation,
            capabilities: release.capabilities.clone(),
            id_schemes: release.id_schemes.clone(),
            upstream_version: release.upstream.version.clone(),
            pre,
            exports: Arc::new(exports),
            context,
            policy: Arc::new(policy),
            credentials: settings.credentials,
            tls: match settings.tls {
                Some(tls) => tls,
                None => crate::credentials::tls_config(None, None).map_err(|message| {
                    InstallError::Credentials {
                        connector: release.connector.clone(),
                        version: release.version.clone(),
                        message,
                    }
                })?,
            },
            secrets: Arc::new(settings.secrets),
            permits: Arc::new(Semaphore::new(self.limits.max_concurrency.max(1))),
            upstream_calls: Arc::new(AtomicU64::new(0)),
            memory_peak: Arc::new(AtomicU64::new(0)),
            _ticker: self.ticker.clone(),
            engine: self.engine.clone(),
            limits: self.limits.clone(),
        })
    }
}

/// Marks why the epoch callback stopped the guest.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the call deadline passed")
    }
}

impl Connector {
    /// Origins this connector may reach (requested ∩ granted).
    /// Requests this prepared connector has sent to its register so far
    /// (the cost ledger records the difference over a run).
    /// The largest any one linear memory of a call has grown to since the
    /// connector was loaded, bytes (what `runtime.memory_limit_mib` caps).
    pub fn memory_peak(&self) -> u64 {
        self.memory_peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The cap on any one linear memory of a call, bytes.
    pub fn memory_limit(&self) -> u64 {
        self.context.memory_limit_bytes as u64
    }

    pub fn upstream_calls(&self) -> u64 {
        self.upstream_calls
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn allowed_origins(&self) -> Vec<String> {
        self.policy.allowed.iter().cloned().collect()
    }

    fn new_store(&self, deadline: Instant) -> Store<HostState> {
        let hostcalls = Arc::new(AtomicU64::new(0));
        let hooks = PolicyHooks {
            policy: self.policy.clone(),
            credentials: self.credentials.clone(),
            tls: self.tls.clone(),
            secrets: self.secrets.clone(),
            deadline,
            hostcalls: hostcalls.clone(),
            max_hostcalls: self.limits.max_hostcalls,
            connector: Arc::from(self.id.as_str()),
            upstream_calls: self.upstream_calls.clone(),
        };
        let mut store = Store::new(
            &self.engine,
            HostState::new(self.context.clone(), hooks, hostcalls),
        );
        store.limiter(|state| &mut state.limiter);
        // Check every tick: yield to tokio (so timeouts and other tasks run)
        // until the deadline, then interrupt.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(Trap::Interrupt).context(Stopped))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    fn classify(&self, store: Option<&Store<HostState>>, error: wasmtime::Error) -> CallError {
        let (connector, version) = (self.id.clone(), self.version.clone());
        if let Some(store) = store {
            if store.data().limiter.memory_exceeded {
                return CallError::MemoryLimit {
                    connector,
                    version,
                    limit_mib: (self.limits.memory_limit_bytes >> 20) as u64,
                };
            }
            if store.data().hostcall_limit_hit {
                return CallError::HostcallLimit {
                    connector,
                    version,
                    limit: self.limits.max_hostcalls,
                };
            }
        }
        if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt)
            || error.downcast_ref::<Stopped>().is_some()
        {
            return CallError::Timeout {
                connector,
                version,
                deadline_ms: self.limits.call_timeout.as_millis() as u64,
            };
        }
        // A trap's own words are the guest's stderr (a Python traceback,
        // a Rust panic message): the message carries their end, the log
        // has all that was kept.
        let message = format!("{error:#}");
        let tail = store
            .map(|s| s.data().output.stderr.tail(crate::diagnostics::TRAP_TAIL))
            .unwrap_or_default();
        CallError::Trap {
            connector,
            version,
            message: if tail.is_empty() {
                message
            } else {
                format!("{message}\nthe connector's stderr ended with:\n{tail}")
            },
        }
    }

    async fn run<R>(
        &self,
        call: impl for<'a> FnOnce(
            &'a mut Store<HostState>,
            wasmtime::component::Instance,
            Arc<Exports>,
        ) -> std::pin::Pin<
            Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>,
        >,
    ) -> Result<R, CallError>
    where
        R: Send,
    {
        let _permit = self.permits.acquire().await.map_err(|e| CallError::Host {
            connector: self.id.clone(),
            version: self.version.clone(),
            message: e.to_string(),
        })?;
        let deadline = Instant::now() + self.limits.call_timeout;
        let mut store = self.new_store(deadline);
        // The epoch callback stops busy guests; the timeout stops calls
        // blocked in host functions (HTTP), which epochs cannot interrupt.
        let grace = self.limits.call_timeout + crate::engine::TICK * 5;
        let outcome = tokio::time::timeout(grace, async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            call(&mut store, instance, self.exports.clone()).await
        })
        .await;
        store.data().output.log(&self.id, &self.version);
        self.memory_peak.fetch_max(
            store.data().limiter.memory_peak as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.classify(Some(&store), error)),
            Err(_) => Err(CallError::Timeout {
                connector: self.id.clone(),
                version: self.version.clone(),
                deadline_ms: self.limits.call_timeout.as_millis() as u64,
            }),
        }
    }

    fn connector_error(&self, error: core::ConnectorError) -> CallError {
        CallError::Connector {
            connector: self.id.clone(),
            version: self.version.clone(),
            error,
        }
    }

    pub async fn describe(&self) -> Result<core::Description, CallError> {
        self.run(|store, instance, exports| {
            Box::pin(async move { exports.describe(store, &instance).await })
        })
        .await
    }

    fn answer<T>(&self, answer: crate::bindings::Answer<T>) -> Result<T, CallError> {
        answer.map_err(|e| self.connector_error(e))
    }

    /// Looks up a batch of IDs.
    pub async fn lookup(&self, ids: &[String]) -> Result<Vec<core::LookupResult>, CallError> {
        let ids = ids.to_vec();
        let answer = self
            .run(move |store, instance, exports| {
                Box::pin(async move { exports.lookup(store, &instance, &ids).await })
            })
            .await?;
        self.answer(answer)
    }

    /// Does this release export `enrich` (contract 1.1 and later)?
    pub fn enriches(&self) -> bool {
        self.exports.has_enrich()
    }

    /// Does this release export `watch` (contract 1.1 and later)?
    pub fn watches(&self) -> bool {
        self.exports.has_watch()
    }

    /// Does this release search its register: it exports `search`
    /// (contract 2.2 and later) and declares the capability `search` (an
    /// SDK build exports every interface of its contract, some as stubs).
    pub fn searches(&self) -> bool {
        self.exports.has_search() && self.capabilities.iter().any(|c| c == "search")
    }

    fn unsupported(&self, interface: &'static str) -> CallError {
        CallError::Unsupported {
            connector: self.id.clone(),
            version: self.version.clone(),
            contract: self.contract.to_string(),
            interface,
            since: if interface == "search" {
                "2.2.0"
            } else {
                "1.1.0"
            },
        }
    }

    /// Searches the register by identifying details (`search`).
    pub async fn search(
        &self,
        query: &core::SearchQuery,
    ) -> Result<core::SearchOutcome, CallError> {
        if !self.searches() {
            return Err(self.unsupported("search"));
        }
        let query = query.clone();
        let answer = self
            .run(move |store, instance, exports| {
                Box::pin(async move { exports.search(store, &instance, &query).await })
            })
            .await?;
        self.answer(answer)
    }

    /// Enriches a batch of locations (`enrich`).
    pub async fn enrich(
        &self,
        locations: &[core::Location],
    ) -> Result<Vec<core::EnrichResult>, CallError> {
        if !self.enriches() {
            return Err(self.unsupported("enrich"));
        }
        let locations = locations.to_vec();
        let answer = self
            .run(move |store, instance, exports| {
                Box::pin(async move { exports.enrich(store, &instance, &locations).await })
            })
            .await?;
        self.answer(answer)
    }

    /// Reads one page of changes to the persons `ids` (`watch`).
    pub async fn changes_for(
        &self,
        cursor: Option<&str>,
        ids: &[String],
    ) -> Result<core::ChangePage, CallError> {
        if !self.watches() {
            return Err(self.unsupported("watch"));
        }
        let cursor = cursor.map(String::from);
        let ids = ids.to_vec();
        let answer = self
            .run(move |store, instance, exports| {
                Box::pin(async move {
                    exports
                        .changes_for(store, &instance, cursor.as_deref(), &ids)
                        .await
                })
            })
            .await?;
        self.answer(answer)
    }

    /// Reads one page of the change feed.
    pub async fn changes(&self, cursor: Option<&str>) -> Result<core::ChangePage, CallError> {
        let cursor = cursor.map(String::from);
        let answer = self
            .run(move |store, instance, exports| {
                Box::pin(async move { exports.changes(store, &instance, cursor.as_deref()).await })
            })
            .await?;
        self.answer(answer)
    }
}
