//! One module per verb of the `folkhub` binary.

pub mod clients;
pub mod connectors;
pub mod credentials;
pub mod jobs;
pub mod overrides;
pub mod person;
pub mod serve;
pub mod sync;
pub mod upgrade;
