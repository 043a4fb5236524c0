#![allow(clippy::unwrap_used, clippy::expect_used)]
//! All integration tests, one binary (real wasm, real simulator, real
//! SQLite; no mocks of our own parts). Build the components first:
//! `cargo xtask test` does.

mod access;
mod api;
mod bad_input;
mod cluster;
mod contract;
mod coverage;
mod crash;
mod docs;
mod end_to_end;
mod fetch;
mod fidelity;
mod follow;
mod hostile;
mod jobs;
mod krr;
mod live;
mod nordic;
mod registers;
mod sandbox;
mod search;
mod upgrade;
mod vendor;
mod webhooks;
