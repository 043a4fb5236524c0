//! The `folkhub` binary's library half: [`host::Host`] wires config,
//! registry manifest, store and runtime together; [`commands`] holds one
//! module per verb. `main.rs` only parses arguments and dispatches, and the
//! integration tests drive the same [`host::Host`].

pub mod cluster;
pub mod commands;
pub mod host;
pub mod scheduler;
