//! Errors of installing and calling connectors. Each names the connector and
//! release so the message stands on its own in a log.

use folkhub_core::contract::ConnectorError;

/// Why a connector cannot be installed or loaded.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{connector} {version}: cannot read the artifact {path}: {source}")]
    Read {
        connector: String,
        version: String,
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{connector} {version}: the artifact's sha256 is {actual}, but registry-manifest.toml says {expected}; refusing a tampered or wrong artifact (nothing was changed)"
    )]
    Digest {
        connector: String,
        version: String,
        expected: String,
        actual: String,
    },
    #[error("{connector} {version}: not a valid WebAssembly component: {message}")]
    Compile {
        connector: String,
        version: String,
        message: String,
    },
    #[error("{connector} {version}: {message}")]
    Contract {
        connector: String,
        version: String,
        message: String,
    },
    #[error("{connector} {version}: cannot link the component against this host: {message}")]
    Link {
        connector: String,
        version: String,
        message: String,
    },
    #[error("{connector} {version}: credentials: {message}")]
    Credentials {
        connector: String,
        version: String,
        message: String,
    },
    #[error("precompile cache {path}: {message}")]
    Cache { path: String, message: String },
}

/// Why a call to a connector failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The connector returned an expected error.
    #[error("{connector} {version}: {error}")]
    Connector {
        connector: String,
        version: String,
        error: ConnectorError,
    },
    /// The call ran past its deadline and was stopped.
    #[error(
        "{connector} {version}: the call ran past its deadline of {deadline_ms} ms and was stopped"
    )]
    Timeout {
        connector: String,
        version: String,
        deadline_ms: u64,
    },
    /// The guest tried to grow memory past the cap.
    #[error(
        "{connector} {version}: the call tried to use more than {limit_mib} MiB of memory and was stopped"
    )]
    MemoryLimit {
        connector: String,
        version: String,
        limit_mib: u64,
    },
    /// The guest made more host calls than allowed.
    #[error("{connector} {version}: the call made more than {limit} host calls and was stopped")]
    HostcallLimit {
        connector: String,
        version: String,
        limit: u64,
    },
    /// A trap: a bug in the connector.
    #[error("{connector} {version}: the connector trapped (a bug in the connector): {message}")]
    Trap {
        connector: String,
        version: String,
        message: String,
    },
    /// The release does not export what the call needs (an interface of a
    /// later contract minor than it was built on).
    #[error(
        "{connector} {version} (contract {contract}) does not export `{interface}`, added in contract {since}; install a release that does"
    )]
    Unsupported {
        connector: String,
        version: String,
        contract: String,
        interface: &'static str,
        since: &'static str,
    },
    /// The host could not set up the call.
    #[error("{connector} {version}: the host could not run the call: {message}")]
    Host {
        connector: String,
        version: String,
        message: String,
    },
}

impl CallError {
    /// The connector's own error, if it returned one.
    pub fn connector_error(&self) -> Option<&ConnectorError> {
        match self {
            CallError::Connector { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Short machine-readable kind, for logs and run books.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Connector { .. } => "connector-error",
            CallError::Timeout { .. } => "timeout",
            CallError::MemoryLimit { .. } => "memory-limit",
            CallError::HostcallLimit { .. } => "hostcall-limit",
            CallError::Trap { .. } => "trap",
            CallError::Unsupported { .. } => "unsupported",
            CallError::Host { .. } => "host",
        }
    }
}
