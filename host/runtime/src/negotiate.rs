//! Contract version negotiation.
//!
//! The version a component was built against is read from the names of its
//! exported interfaces (`folkhub:connector/source@1.0.0`) before anything is
//! instantiated. The host supports each major up to a known minor; a newer
//! minor or an unknown major is refused with both versions named, instead of
//! the linker's "function implementation is missing".

use std::fmt;

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;

/// A `folkhub:connector` package version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContractVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl fmt::Display for ContractVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl ContractVersion {
    pub fn parse(text: &str) -> Option<ContractVersion> {
        let mut parts = text.split('.');
        let v = ContractVersion {
            major: parts.next()?.parse().ok()?,
            minor: parts.next()?.parse().ok()?,
            patch: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(v)
    }
}

/// Support state of a contract major on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Supported,
    /// Still loads, warns, and shows the removal date: the first host
    /// release after `removal` no longer has bindings for the major.
    Deprecated {
        since: &'static str,
        removal: &'static str,
    },
}

/// A contract major this host runs.
#[derive(Debug, Clone, Copy)]
pub struct SupportedMajor {
    pub major: u64,
    /// The newest minor of this major the host has bindings for.
    pub newest: ContractVersion,
    pub support: Support,
    /// The date support started.
    pub since: &'static str,
}

impl SupportedMajor {
    /// One line for `folkhub version` and the health endpoint.
    pub fn describe(&self) -> String {
        let state = match self.support {
            Support::Supported => "supported".to_string(),
            Support::Deprecated { since, removal } => {
                format!("deprecated since {since}, removed after {removal}")
            }
        };
        format!(
            "folkhub:connector {}.x up to {} (supported since {}): {state}",
            self.major, self.newest, self.since
        )
    }
}

/// Every contract major this host supports. Major 1 stays loadable during
/// its deprecation window so connectors can move to 2 on their own
/// schedule; its 1.0 and 1.1 minors both run.
pub const SUPPORTED: &[SupportedMajor] = &[
    SupportedMajor {
        major: 1,
        newest: ContractVersion {
            major: 1,
            minor: 1,
            patch: 0,
        },
        support: Support::Deprecated {
            since: "2026-11-22",
            removal: "2028-06-30",
        },
        since: "2026-11-22",
    },
    SupportedMajor {
        major: 2,
        newest: ContractVersion {
            major: 2,
            minor: 2,
            patch: 0,
        },
        support: Support::Supported,
        since: "2026-11-22",
    },
];

/// The newest contract version this host runs.
pub fn newest() -> ContractVersion {
    SUPPORTED
        .iter()
        .map(|s| s.newest)
        .max()
        .unwrap_or(ContractVersion {
            major: 0,
            minor: 0,
            patch: 0,
        })
}

/// The export that carries the version.
pub const SOURCE_INTERFACE: &str = "folkhub:connector/source";

/// Reads the contract version from the component's exports.
pub fn exported_version(engine: &Engine, component: &Component) -> Result<ContractVersion, String> {
    let ty = component.component_type();
    let mut found = Vec::new();
    for (name, item) in ty.exports(engine) {
        if let Some(version) = name
            .strip_prefix(SOURCE_INTERFACE)
            .and_then(|rest| rest.strip_prefix('@'))
        {
            if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
                return Err(format!(
                    "it exports {name} but not as an interface instance"
                ));
            }
            found.push(ContractVersion::parse(version).ok_or_else(|| {
                format!("it exports {name}, whose version is not MAJOR.MINOR.PATCH")
            })?);
        }
    }
    match found.as_slice() {
        [one] => Ok(*one),
        [] => {
            let names: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
            Err(format!(
                "it does not export {SOURCE_INTERFACE}@<version>, so it is not a folkhub connector (it exports: {})",
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
        _ => Err(format!("it exports {SOURCE_INTERFACE} more than once")),
    }
}

/// Decides whether this host can run a component built against `version`.
pub fn check(version: ContractVersion) -> Result<&'static SupportedMajor, String> {
    let host_versions: Vec<String> = SUPPORTED.iter().map(|s| s.newest.to_string()).collect();
    let Some(major) = SUPPORTED.iter().find(|s| s.major == version.major) else {
        let newest = SUPPORTED.iter().map(|s| s.major).max().unwrap_or(0);
        return Err(if version.major > newest {
            format!(
                "it needs folkhub:connector {version}, a newer major than this host supports (host API {}); upgrade folkhub",
                host_versions.join(", ")
            )
        } else {
            format!(
                "it was built against folkhub:connector {version}, whose major is no longer supported by this host (host API {}); install a newer release of the connector",
                host_versions.join(", ")
            )
        });
    };
    if version.minor > major.newest.minor {
        return Err(format!(
            "it needs host API {}.{} (folkhub:connector {version}), this host has {}.{} ({}); upgrade folkhub or install an older release of the connector",
            version.major, version.minor, major.newest.major, major.newest.minor, major.newest
        ));
    }
    Ok(major)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn newer_minor_and_unknown_major_are_refused_with_both_versions() {
        assert!(check(ContractVersion::parse("1.0.0").unwrap()).is_ok());
        assert!(check(ContractVersion::parse("1.0.7").unwrap()).is_ok());
        assert!(check(ContractVersion::parse("1.1.0").unwrap()).is_ok());
        let e = check(ContractVersion::parse("1.2.0").unwrap()).unwrap_err();
        assert!(
            e.contains("needs host API 1.2") && e.contains("this host has 1.1"),
            "{e}"
        );
        assert!(check(ContractVersion::parse("2.0.0").unwrap()).is_ok());
        assert!(check(ContractVersion::parse("2.1.0").unwrap()).is_ok());
        assert!(check(ContractVersion::parse("2.2.0").unwrap()).is_ok());
        let e = check(ContractVersion::parse("2.3.0").unwrap()).unwrap_err();
        assert!(
            e.contains("needs host API 2.3") && e.contains("this host has 2.2"),
            "{e}"
        );
        let e = check(ContractVersion::parse("3.0.0").unwrap()).unwrap_err();
        assert!(
            e.contains("3.0.0") && e.contains("1.1.0, 2.2.0") && e.contains("newer major"),
            "{e}"
        );
        let e = check(ContractVersion::parse("0.9.0").unwrap()).unwrap_err();
        assert!(e.contains("no longer supported"), "{e}");
    }
}
