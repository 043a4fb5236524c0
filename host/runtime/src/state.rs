//! What one Store holds for one call: an empty WASI context (no files, no
//! environment, no sockets), the HTTP context with our policy hooks, memory
//! and table limits, and the host imports of the contract.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::v1::host;
use crate::outbound::PolicyHooks;

/// Who is running, for logs and limits.
#[derive(Debug)]
pub struct CallContext {
    pub connector: String,
    pub version: String,
    /// The operator's config values for this connector.
    pub config: BTreeMap<String, String>,
    pub max_hostcalls: u64,
    pub memory_limit_bytes: usize,
}

/// Memory and table caps; remembers when a cap was hit so the error can be
/// classified (wasmtime reports the failure as a plain error, not a Trap).
#[derive(Debug, Default)]
pub struct Limiter {
    pub memory_limit: usize,
    pub memory_exceeded: bool,
    /// The largest any one linear memory grew to in this call, bytes.
    pub memory_peak: usize,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes reached",
                self.memory_limit
            )));
        }
        self.memory_peak = self.memory_peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}

pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub hooks: PolicyHooks,
    pub limiter: Limiter,
    pub context: Arc<CallContext>,
    /// Host calls made so far in this call; shared with the HTTP hooks.
    pub hostcalls: Arc<AtomicU64>,
    pub hostcall_limit_hit: bool,
    /// What the guest writes to stdout and stderr in this call (bounded).
    pub output: crate::diagnostics::CallOutput,
}

impl HostState {
    pub fn new(
        context: Arc<CallContext>,
        hooks: PolicyHooks,
        hostcalls: Arc<AtomicU64>,
    ) -> HostState {
        let limiter = Limiter {
            memory_limit: context.memory_limit_bytes,
            memory_exceeded: false,
            memory_peak: 0,
        };
        // No preopens, no environment, no arguments, no sockets: the
        // builder starts empty and we add only stdout and stderr, kept
        // bounded for the host log (crate::diagnostics).
        let output = crate::diagnostics::CallOutput::default();
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.stdout.clone())
            .stderr(output.stderr.clone());
        HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks,
            limiter,
            context,
            hostcalls,
            hostcall_limit_hit: false,
            output,
        }
    }

    fn count_hostcall(&mut self) -> wasmtime::Result<()> {
        let n = self.hostcalls.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.context.max_hostcalls {
            self.hostcall_limit_hit = true;
            return Err(wasmtime::Error::msg(format!(
                "more than {} host calls",
                self.context.max_hostcalls
            )));
        }
        Ok(())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A keyed hash of a person ID, so logs can correlate without the ID in clear.
pub fn person_hash(id: &str) -> String {
    let digest = Sha256::digest(format!("folkhub-log:{id}").as_bytes());
    hex::encode(&digest[..6])
}

impl host::Host for HostState {
    fn log(
        &mut self,
        level: host::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.count_hostcall()?;
        let message: String = message.chars().take(2000).collect();
        let fields: Vec<String> = fields
            .into_iter()
            .take(32)
            .map(|(k, v)| {
                if k == "person" {
                    format!("{k}={}", person_hash(&v))
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        let fields = fields.join(" ");
        let (connector, release) = (&self.context.connector, &self.context.version);
        match level {
            host::Level::Trace => {
                tracing::trace!(connector = %connector, release = %release, %fields, "{message}")
            }
            host::Level::Debug => {
                tracing::debug!(connector = %connector, release = %release, %fields, "{message}")
            }
            host::Level::Info => {
                tracing::info!(connector = %connector, release = %release, %fields, "{message}")
            }
            host::Level::Warn => {
                tracing::warn!(connector = %connector, release = %release, %fields, "{message}")
            }
            host::Level::Error => {
                tracing::error!(connector = %connector, release = %release, %fields, "{message}")
            }
        }
        Ok(())
    }

    fn config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.count_hostcall()?;
        Ok(self.context.config.get(&key).cloned())
    }
}
