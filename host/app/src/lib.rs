//! The folkhub application as a library: what the `folkhub` binary does,
//! without its argument parsing and printing.
//!
//! - [`Host`] wires config, registry manifest, store and runtime together
//!   and owns a connector's lifecycle: loading with deadline actions,
//!   install, upgrade, rollback, pin ([`host`], [`upgrade`]).
//! - [`sync`] runs a connector once (breaker, budget, run log); [`jobs`]
//!   holds the configured jobs, the scheduler, and with [`cluster`] the
//!   leases and work queue of several hosts.
//! - [`status`] computes connectors' live status for the API and the CLI;
//!   [`fetch`] asks the registers for a client now (fetch on miss,
//!   refresh).
//! - [`follow`] changes follow sets and runs the retention sweep.
//! - [`webhooks`] turns changes into signed webhook messages and delivers them.
//! - [`serve`] runs the API and the scheduler side by side.
//! - [`audit`] checks and exports the access log.
//!
//! The CLI (`host/cli`) parses arguments and prints; tests drive this.

pub mod audit;
pub mod clients;
pub mod cluster;
pub mod fetch;
pub mod follow;
pub mod host;
pub mod jobs;
pub mod registries;
pub mod search;
pub mod serve;
pub mod status;
pub mod sync;
pub mod upgrade;
pub mod webhooks;

pub use host::{Host, ManifestFile};
