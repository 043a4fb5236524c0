//! One bindings module per supported contract major. Each exposes
//! `instantiate`-free conversions into `folkhub_core::contract` types so the
//! rest of the host never sees generated types.

pub mod v1;
