//! Schemas of `registry-manifest.toml` (every published connector release)
//! and `folkhub.toml` (the operator's configuration), with validation that
//! reports every error at once, each with its TOML path.
//!
//! Nothing here touches wasm or the database: the runtime checks artifacts
//! against a [`Release`], and the store keeps which release is installed.

pub mod config;
pub mod registry;
pub mod remote;
pub mod schedule;
pub mod signing;
pub mod support;

pub use config::{Config, ConnectorConfig, Credentials, MigrateMode};
pub use registry::{Manifest, Release};
pub use support::{SupportState, support_state};

/// One problem in a TOML file: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// TOML path, e.g. `release[0].sha256`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct Invalid {
    pub file: String,
    pub problems: Vec<Problem>,
}

/// Turns a toml deserialisation error into a problem at `path`.
pub(crate) fn toml_problem(path: &str, error: &toml::de::Error) -> Problem {
    Problem {
        path: path.to_string(),
        message: error.message().trim().to_string(),
    }
}
