//! The sandbox that runs connectors.
//!
//! # Layout
//! - [`engine`]: one shared wasmtime [`Engine`](wasmtime::Engine) with epoch
//!   interruption, a ticker thread, and the precompiled-component cache
//!   (keyed by the wasm's sha256 and the engine's compatibility hash).
//! - [`negotiate`]: reads the contract version from a component's export
//!   names and decides whether this host can run it.
//! - [`bindings`]: one module per supported contract major; each converts
//!   into the core types of `folkhub_core::contract`.
//! - [`state`]: what a Store holds: an empty WASI context, limits, the
//!   host imports (`log`, `config`).
//! - [`outbound`]: the HTTP policy (requested ∩ granted origins, private
//!   ranges, timeouts clamped to the call deadline, response size cap) and
//!   credential injection.
//! - [`credentials`]: Maskinporten JWT grants and static bearer tokens.
//! - [`connector`]: a prepared connector: `describe`, `lookup`, `changes`,
//!   each in a fresh Store from a cached `InstancePre`.
//!
//! Not here: which release is installed (the store), sync logic (sync).

pub mod bindings;
pub mod connector;
pub mod credentials;
pub mod diagnostics;
pub mod engine;
pub mod error;
pub mod negotiate;
pub mod outbound;
pub mod state;

pub use connector::{Connector, ConnectorSettings};
pub use engine::{Limits, Runtime};
pub use error::{CallError, InstallError};
pub use negotiate::{ContractVersion, SUPPORTED};
