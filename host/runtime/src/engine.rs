//! The shared engine, the epoch ticker and the precompiled-component cache.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::{v1, v2};
use crate::error::InstallError;
use crate::state::HostState;

/// How often the epoch advances. Deadlines are counted in these ticks.
pub const TICK: Duration = Duration::from_millis(10);

/// Instances alive at once across all connectors when pooling.
pub const POOL_SLOTS: u32 = 64;

/// Per-call limits every connector runs under.
#[derive(Debug, Clone)]
pub struct Limits {
    pub call_timeout: Duration,
    pub memory_limit_bytes: usize,
    pub max_response_bytes: u64,
    pub max_hostcalls: u64,
    pub max_concurrency: usize,
    /// Use wasmtime's pooling allocator.
    pub pooling: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_secs(30),
            memory_limit_bytes: 64 << 20,
            max_response_bytes: 32 << 20,
            max_hostcalls: 100_000,
            max_concurrency: 4,
            pooling: true,
        }
    }
}

impl Limits {
    pub fn from_config(runtime: &folkhub_manifest::config::RuntimeConfig) -> Limits {
        Limits {
            call_timeout: Duration::from_millis(runtime.call_timeout_ms),
            memory_limit_bytes: (runtime.memory_limit_mib as usize) << 20,
            max_response_bytes: runtime.max_response_bytes,
            max_hostcalls: runtime.max_hostcalls,
            max_concurrency: runtime.max_concurrency,
            pooling: runtime.pooling,
        }
    }
}

/// One engine and linker for every connector.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    pub(crate) limits: Limits,
    pub(crate) ticker: Arc<Ticker>,
}

/// The epoch ticker's life: held by the runtime and by every connector it
/// prepared, and stopped when the last of them is dropped. Without ticks a
/// busy guest is never interrupted, so a connector must not outlive its
/// ticker.
#[derive(Debug)]
pub(crate) struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch ticker.
    /// `cache_dir` keeps precompiled components between runs.
    pub fn new(cache_dir: Option<PathBuf>, limits: Limits) -> anyhow::Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        if limits.pooling {
            // Reuse instance slots, memories and async stacks between calls
            // instead of mapping fresh ones (about a quarter faster per call,
            // docs/benchmarks.md).
            let mut pool = wasmtime::PoolingAllocationConfig::default();
            pool.total_component_instances(POOL_SLOTS)
                .total_core_instances(POOL_SLOTS * 8)
                .total_memories(POOL_SLOTS * 2)
                .total_tables(POOL_SLOTS * 8)
                .total_stacks(POOL_SLOTS)
                .max_memory_size(limits.memory_limit_bytes);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::<HostState>::new(&engine);
        // Standard WASI (p2) over an empty context, and wasi:http through our hooks.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        v1::World::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
        v2::World::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let stop = stop_ticker.clone();
        std::thread::Builder::new()
            .name("folkhub-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker_engine.increment_epoch();
                }
            })?;
        Ok(Runtime {
            engine,
            linker,
            cache_dir,
            limits,
            ticker: Arc::new(Ticker(stop_ticker)),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A hex key of this engine's compatibility (wasmtime version, target, settings).
    pub fn engine_key(&self) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    fn cache_paths(&self, digest: &str) -> Option<(PathBuf, PathBuf)> {
        let dir = self.cache_dir.as_ref()?;
        let stem = format!("{digest}-{}", self.engine_key());
        Some((
            dir.join(format!("{stem}.cwasm")),
            dir.join(format!("{stem}.cwasm.sha256")),
        ))
    }

    /// The `folkhub:connector` version a component exports, read before
    /// anything is linked (for `folkhub connectors check` on a component
    /// that has no manifest entry yet).
    pub fn contract_of(&self, wasm: &[u8]) -> Result<crate::negotiate::ContractVersion, String> {
        let component = Component::new(&self.engine, wasm)
            .map_err(|e| format!("not a WebAssembly component this host can compile: {e:#}"))?;
        crate::negotiate::exported_version(&self.engine, &component)
    }

    /// Compiles a component, or loads it precompiled from the cache.
    /// `digest` is the sha256 of `wasm`, already verified by the caller.
    pub fn component(
        &self,
        connector: &str,
        version: &str,
        wasm: &[u8],
        digest: &str,
    ) -> Result<Component, InstallError> {
        if let Some((path, sum_path)) = self.cache_paths(digest)
            && let Some(component) = self.load_cached(&path, &sum_path)
        {
            return Ok(component);
        }
        let component = Component::new(&self.engine, wasm).map_err(|e| InstallError::Compile {
            connector: connector.into(),
            version: version.into(),
            message: format!("{e:#}"),
        })?;
        if let Some((path, sum_path)) = self.cache_paths(digest)
            && let Err(e) = self.store_cached(&component, &path, &sum_path)
        {
            // The component compiled; a cache that cannot be written only costs time.
            tracing::warn!("{e}");
        }
        Ok(component)
    }

    fn load_cached(&self, path: &Path, sum_path: &Path) -> Option<Component> {
        let bytes = std::fs::read(path).ok()?;
        let expected = std::fs::read_to_string(sum_path).ok()?;
        if hex::encode(Sha256::digest(&bytes)) != expected.trim() {
            tracing::warn!(path = %path.display(), "precompiled component does not match its checksum; recompiling");
            return None;
        }
        // SAFETY: `deserialize` trusts its input to be a wasmtime artifact
        // for this engine. We only read files this host wrote into its own
        // cache directory (named by the source digest and this engine's
        // compatibility hash), and check them against the checksum written
        // beside them, so a truncated or foreign file is recompiled instead.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, &bytes) };
        match component {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot load precompiled component ({e}); recompiling");
                None
            }
        }
    }

    fn store_cached(
        &self,
        component: &Component,
        path: &Path,
        sum_path: &Path,
    ) -> Result<(), InstallError> {
        let cache_error = |message: String| InstallError::Cache {
            path: path.display().to_string(),
            message,
        };
        let bytes = component
            .serialize()
            .map_err(|e| cache_error(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| cache_error(e.to_string()))?;
        }
        // Write to a temporary name and rename, so readers never see half a file.
        let unique: u64 = rand::random();
        let tmp = path.with_extension(format!("tmp{}-{unique:x}", std::process::id()));
        let sum_tmp = sum_path.with_extension(format!("tmp{}-{unique:x}", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(|e| cache_error(e.to_string()))?;
        std::fs::write(&sum_tmp, hex::encode(Sha256::digest(&bytes)))
            .map_err(|e| cache_error(e.to_string()))?;
        // Checksum first: a reader that sees the new artifact finds its checksum.
        std::fs::rename(&sum_tmp, sum_path).map_err(|e| cache_error(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| cache_error(e.to_string()))?;
        Ok(())
    }
}

/// SHA-256 of bytes, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
