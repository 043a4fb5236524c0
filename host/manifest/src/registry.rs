//! `registry-manifest.toml`: the one list of connector releases.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::{Invalid, Problem, toml_problem};

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// Every release of every connector, in file order.
    pub releases: Vec<Release>,
    /// Directory the artifact paths are relative to.
    #[serde(skip)]
    pub root: PathBuf,
}

/// One published release of one connector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// Connector id, lower-case, e.g. `folkeregister`.
    pub connector: String,
    /// The release's own semver; a major bump means breaking output, config or state.
    pub version: String,
    /// The `folkhub:connector` contract version the artifact was built against.
    pub contract: String,
    /// Path of the component, relative to the manifest.
    pub artifact: String,
    /// SHA-256 of the artifact, 64 lower-case hex digits.
    pub sha256: String,
    /// Register and API version the release speaks.
    pub upstream: Upstream,
    /// Origins the release may call (`https://host[:port]`); `{key}` stands
    /// for the origin of the operator's config value `key`.
    pub outbound_hosts: Vec<String>,
    /// Catalogue paths the release provides.
    pub fields: Vec<String>,
    /// What it can do: `lookup`, `batch-lookup`, `change-feed`, `search`.
    pub capabilities: Vec<String>,
    /// ID schemes it looks up (`no-fnr`, `no-dnr`, `se-pnr`, ...).
    #[serde(default)]
    pub id_schemes: Vec<String>,
    /// How the host authenticates it upstream: `none`, `maskinporten`, `mtls`, `basic`.
    #[serde(default = "default_credentials")]
    pub credentials: String,
    /// Price of one upstream call in the operator's currency (0 when free).
    #[serde(default)]
    pub cost_per_call: f64,
    /// Publication date.
    pub published: NaiveDate,
    /// Release notes for admins.
    #[serde(default)]
    pub notes: String,
    /// For breaking releases: why, and by when admins must move.
    #[serde(default)]
    pub breaking: Option<Breaking>,
    /// Who published the release: the name of the key that signed it
    /// (`[registry] trusted_keys` maps names to public keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// The publisher's Ed25519 signature (base64) over this entry, artifact
    /// digest included ([`crate::signing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Which installed releases this one upgrades from, as a semver
    /// requirement (`">=1.2"`); none: any earlier release of the connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrades_from: Option<String>,
    /// Which folkhub host versions it needs, as a semver requirement
    /// (`">=0.4"` for a host feature it relies on); none: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

fn default_credentials() -> String {
    "none".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Register name, e.g. `Folkeregisteret`.
    pub system: String,
    /// API version, e.g. `v1`, `2021.1`.
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Breaking {
    /// When the register turns off the upstream version older releases use.
    pub upstream_sunset: NaiveDate,
    /// When installs must have moved to this release; before the sunset.
    pub upgrade_deadline: NaiveDate,
    /// `warn`, `disable` or `auto-upgrade`.
    pub deadline_action: String,
    /// Fields or capabilities whose output changes.
    #[serde(default)]
    pub impact: Vec<String>,
    /// What the admin must do.
    pub migration: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    schema: Option<i64>,
    #[serde(default)]
    release: Vec<toml::Value>,
}

const KNOWN_CAPABILITIES: &[&str] = &[
    "lookup",
    "batch-lookup",
    "change-feed",
    "search",
    "enrich",
    "watch",
];

/// Capabilities that need an interface added in a later contract minor.
const CAPABILITY_SINCE: &[(&str, (u64, u64))] =
    &[("enrich", (1, 1)), ("watch", (1, 1)), ("search", (2, 2))];
const KNOWN_CREDENTIALS: &[&str] = &["none", "maskinporten", "mtls", "basic", "secrets"];

/// Is an artifact path relative to the manifest's directory and inside it?
/// An absolute path, a drive or a `..` would let whoever edits the manifest
/// point a release at any file with a matching digest.
fn artifact_stays_inside(artifact: &str) -> bool {
    let path = Path::new(artifact);
    !artifact.contains('\\')
        && path.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

/// Parses a release version as SemVer 2.0.0 (the `semver` crate), for
/// ordering: `2.2.0-rc.1` comes before `2.2.0`, and build metadata
/// (`+build.5`) is dropped, since SemVer says it does not order releases.
pub fn semver(text: &str) -> Option<semver::Version> {
    let mut version = semver::Version::parse(text).ok()?;
    version.build = semver::BuildMetadata::EMPTY;
    Some(version)
}

/// Is `text` a pre-release (`2.2.0-rc.1`)? Pre-releases are installed
/// only when an admin names them; `outdated`, the newest release and
/// deadline actions never pick them.
pub fn is_prerelease(text: &str) -> bool {
    semver(text).is_some_and(|v| !v.pre.is_empty())
}

/// The version of this folkhub host, which a release's `host`
/// requirement is checked against.
pub const HOST_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Does `requirement` (a release's `upgrades_from` or `host`) admit
/// `version`? A pre-release `version` is held to the requirement's
/// numbers alone, so `>=0.4` admits `0.5.0-dev`.
pub fn admits(requirement: &str, version: &str) -> Result<bool, String> {
    let req = semver::VersionReq::parse(requirement)
        .map_err(|e| format!("{requirement:?} is not a semver requirement: {e}"))?;
    let mut v = semver(version).ok_or_else(|| format!("{version:?} is not a version"))?;
    v.pre = semver::Prerelease::EMPTY;
    Ok(req.matches(&v))
}

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, Invalid> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Invalid {
            file: file.clone(),
            problems: vec![Problem {
                path: String::new(),
                message: format!("cannot read it: {e}"),
            }],
        })?;
        let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &file, root)
    }

    /// Parses and validates manifest text; every problem is reported.
    pub fn parse(text: &str, file: &str, root: PathBuf) -> Result<Manifest, Invalid> {
        let invalid = |problems| Invalid {
            file: file.to_string(),
            problems,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| invalid(vec![toml_problem("", &e)]))?;
        let mut problems = Vec::new();
        if raw.schema.is_some_and(|s| s != 1) {
            problems.push(Problem {
                path: "schema".into(),
                message: "only schema 1 is known to this host".into(),
            });
        }
        let mut releases = Vec::new();
        for (i, value) in raw.release.into_iter().enumerate() {
            let path = format!("release[{i}]");
            match value.try_into::<Release>() {
                Ok(release) => {
                    release.validate(&path, &mut problems);
                    releases.push(release);
                }
                Err(e) => problems.push(toml_problem(&path, &e)),
            }
        }
        let mut seen = BTreeSet::new();
        for (i, r) in releases.iter().enumerate() {
            if !seen.insert((r.connector.clone(), r.version.clone())) {
                problems.push(Problem {
                    path: format!("release[{i}]"),
                    message: format!("{} {} is listed twice; a published release never changes, publish a new version", r.connector, r.version),
                });
            }
        }
        check_auto_upgrades(&releases, &mut problems);
        if problems.is_empty() {
            Ok(Manifest { releases, root })
        } else {
            Err(invalid(problems))
        }
    }

    /// Every release of a connector, oldest version first.
    pub fn releases_of(&self, connector: &str) -> Vec<&Release> {
        let mut list: Vec<&Release> = self
            .releases
            .iter()
            .filter(|r| r.connector == connector)
            .collect();
        list.sort_by_key(|r| semver(&r.version));
        list
    }

    /// A release by connector and version; `None` version means the
    /// newest that is not a pre-release.
    pub fn find(&self, connector: &str, version: Option<&str>) -> Option<&Release> {
        let list = self.releases_of(connector);
        match version {
            Some(v) => list.into_iter().find(|r| r.version == v),
            None => list.into_iter().rfind(|r| !is_prerelease(&r.version)),
        }
    }

    /// The newest release, pre-releases included (`install --pre`).
    pub fn newest_with_prereleases(&self, connector: &str) -> Option<&Release> {
        self.releases_of(connector).last().copied()
    }

    /// The newest release of the same major as `version`, at or after it
    /// (what an automatic upgrade to `version` installs); never a
    /// pre-release.
    pub fn newest_of_major(&self, connector: &str, version: &str) -> Option<&Release> {
        let floor = semver(version)?;
        self.releases_of(connector).into_iter().rfind(|r| {
            !is_prerelease(&r.version)
                && semver(&r.version).is_some_and(|v| v.major == floor.major && v >= floor)
        })
    }

    /// Connector ids, sorted.
    pub fn connectors(&self) -> Vec<String> {
        self.releases
            .iter()
            .map(|r| r.connector.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The built-in registry and vendors' registries as one: each release
    /// keeps its artifact under its own registry's directory. A release
    /// listed by two registries is refused, naming both.
    pub fn combine(first: Manifest, others: Vec<(String, Manifest)>) -> Result<Manifest, Invalid> {
        let mut out = first;
        let mut problems = Vec::new();
        for (file, vendor) in others {
            for mut release in vendor.releases {
                if out
                    .releases
                    .iter()
                    .any(|r| r.connector == release.connector && r.version == release.version)
                {
                    problems.push(Problem {
                        path: format!("{} {}", release.connector, release.version),
                        message: format!(
                            "{file} lists a release another registry lists too; a release has one publisher"
                        ),
                    });
                    continue;
                }
                // Checked to stay inside its directory when it was parsed.
                release.artifact = vendor.root.join(&release.artifact).display().to_string();
                out.releases.push(release);
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(Invalid {
                file: "the registries".into(),
                problems,
            })
        }
    }

    /// A manifest file's text listing `releases` (`schema = 1`), as
    /// `Manifest::parse` reads it back.
    pub fn text(releases: &[Release]) -> Result<String, toml::ser::Error> {
        let mut file = toml::Table::new();
        file.insert("schema".into(), toml::Value::Integer(1));
        file.insert("release".into(), toml::Value::try_from(releases)?);
        toml::to_string(&file)
    }

    /// Absolute path of a release's artifact.
    pub fn artifact_path(&self, release: &Release) -> PathBuf {
        self.root.join(&release.artifact)
    }
}

/// `{key}` templates a release's outbound hosts need from the operator.
fn config_keys(release: &Release) -> BTreeSet<&str> {
    release
        .outbound_hosts
        .iter()
        .filter_map(|h| h.strip_prefix('{').and_then(|h| h.strip_suffix('}')))
        .collect()
}

/// A release may declare `auto-upgrade` only when the host can move an
/// install from the previous release without the admin: the same credential
/// kind, the same ID schemes, no config key the previous release did not
/// use already, and a contract major the previous one had or newer.
fn check_auto_upgrades(releases: &[Release], problems: &mut Vec<Problem>) {
    for (i, r) in releases.iter().enumerate() {
        if r.breaking
            .as_ref()
            .is_none_or(|b| b.deadline_action != "auto-upgrade")
        {
            continue;
        }
        let Some(previous) = releases
            .iter()
            .filter(|p| p.connector == r.connector && semver(&p.version) < semver(&r.version))
            .max_by_key(|p| semver(&p.version))
        else {
            continue;
        };
        let mut why = Vec::new();
        if previous.credentials != r.credentials {
            why.push(format!(
                "the credential kind changes ({} → {})",
                previous.credentials, r.credentials
            ));
        }
        if previous.id_schemes != r.id_schemes {
            why.push("the ID schemes change".to_string());
        }
        let new_keys: Vec<&str> = config_keys(r)
            .difference(&config_keys(previous))
            .copied()
            .collect();
        if !new_keys.is_empty() {
            why.push(format!(
                "it needs config the previous release did not ({})",
                new_keys.join(", ")
            ));
        }
        if !why.is_empty() {
            problems.push(Problem {
                path: format!("release[{i}].breaking.deadline_action"),
                message: format!(
                    "auto-upgrade from {} {} cannot run without the admin: {}; use warn or disable",
                    previous.connector,
                    previous.version,
                    why.join("; ")
                ),
            });
        }
    }
}

impl Release {
    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        let mut problem = |key: &str, message: String| {
            problems.push(Problem {
                path: format!("{path}.{key}"),
                message,
            })
        };
        if self.connector.is_empty()
            || !self
                .connector
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            problem(
                "connector",
                format!(
                    "{:?} must be lower-case letters, digits and '-'",
                    self.connector
                ),
            );
        }
        if semver(&self.version).is_none() {
            problem(
                "version",
                format!(
                    "{:?} is not a SemVer 2.0.0 version (MAJOR.MINOR.PATCH, optionally -PRE-RELEASE and +BUILD, e.g. 2.2.0-rc.1)",
                    self.version
                ),
            );
        }
        for (key, requirement) in [("upgrades_from", &self.upgrades_from), ("host", &self.host)] {
            if let Some(requirement) = requirement
                && let Err(e) = semver::VersionReq::parse(requirement)
            {
                problem(
                    key,
                    format!("{requirement:?} is not a semver requirement such as \">=1.2\" ({e})"),
                );
            }
        }
        // Plain MAJOR.MINOR.PATCH: no pre-release, no build metadata.
        if semver(&self.contract).is_none()
            || !self
                .contract
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.')
        {
            problem(
                "contract",
                format!(
                    "{:?} is not MAJOR.MINOR.PATCH (the folkhub:connector version the artifact exports)",
                    self.contract
                ),
            );
        }
        if self.sha256.len() != 64
            || !self
                .sha256
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            problem(
                "sha256",
                "must be 64 lower-case hex digits (sha256sum of the artifact)".into(),
            );
        }
        if self.artifact.is_empty() {
            problem("artifact", "must name the component file".into());
        } else if !artifact_stays_inside(&self.artifact) {
            problem(
                "artifact",
                format!(
                    "{:?} must be a path inside the manifest's directory, relative to it and without `..` (e.g. registry/artifacts/{}-{}.wasm)",
                    self.artifact, self.connector, self.version
                ),
            );
        }
        for (i, host) in self.outbound_hosts.iter().enumerate() {
            let templated = host.starts_with('{') && host.ends_with('}');
            if !(templated || host.starts_with("https://") || host.starts_with("http://")) {
                problem(
                    &format!("outbound_hosts[{i}]"),
                    format!(
                        "{host:?} must be an origin like https://host[:port] or a {{config-key}} template"
                    ),
                );
            }
        }
        for (i, field) in self.fields.iter().enumerate() {
            if folkhub_core::fields::lookup(field).is_none() {
                problem(
                    &format!("fields[{i}]"),
                    format!("{field:?} is not in the field catalogue (docs/fields.md)"),
                );
            }
        }
        for (i, capability) in self.capabilities.iter().enumerate() {
            if let Some((_, (major, minor))) =
                CAPABILITY_SINCE.iter().find(|(c, _)| c == capability)
                && let Some(v) = semver(&self.contract)
                && (v.major, v.minor) < (*major, *minor)
            {
                problem(
                    &format!("capabilities[{i}]"),
                    format!(
                        "{capability:?} needs contract {major}.{minor}.0 or later; this release says contract {}",
                        self.contract
                    ),
                );
            }
            if !KNOWN_CAPABILITIES.contains(&capability.as_str()) {
                problem(
                    &format!("capabilities[{i}]"),
                    format!(
                        "{capability:?} is not one of {}",
                        KNOWN_CAPABILITIES.join(", ")
                    ),
                );
            }
        }
        for (i, scheme) in self.id_schemes.iter().enumerate() {
            if folkhub_core::IdScheme::from_name(scheme).is_none() {
                problem(
                    &format!("id_schemes[{i}]"),
                    format!(
                        "{scheme:?} is not an ID scheme this host knows (no-fnr, no-dnr, se-pnr, se-snr, fi-hetu, ...)"
                    ),
                );
            }
        }
        if !KNOWN_CREDENTIALS.contains(&self.credentials.as_str()) {
            problem(
                "credentials",
                format!(
                    "{:?} is not one of {}",
                    self.credentials,
                    KNOWN_CREDENTIALS.join(", ")
                ),
            );
        }
        if self.cost_per_call < 0.0 || !self.cost_per_call.is_finite() {
            problem("cost_per_call", "must be zero or more".into());
        }
        if let Some(b) = &self.breaking {
            if b.upgrade_deadline >= b.upstream_sunset {
                problem(
                    "breaking.upgrade_deadline",
                    format!(
                        "{} must fall before breaking.upstream_sunset {}",
                        b.upgrade_deadline, b.upstream_sunset
                    ),
                );
            }
            if !["warn", "disable", "auto-upgrade"].contains(&b.deadline_action.as_str()) {
                problem(
                    "breaking.deadline_action",
                    format!(
                        "{:?} is not one of warn, disable, auto-upgrade",
                        b.deadline_action
                    ),
                );
            }
            if b.migration.trim().is_empty() {
                problem(
                    "breaking.migration",
                    "must tell the admin what to do".into(),
                );
            }
        }
    }

    /// The requested outbound origins with `{key}` templates resolved from
    /// the operator's config values; unresolved templates are dropped.
    pub fn requested_origins(
        &self,
        config: &std::collections::BTreeMap<String, String>,
    ) -> Vec<String> {
        self.outbound_hosts
            .iter()
            .filter_map(|h| {
                if let Some(key) = h.strip_prefix('{').and_then(|h| h.strip_suffix('}')) {
                    config.get(key).and_then(|url| origin_of(url))
                } else {
                    origin_of(h)
                }
            })
            .collect()
    }
}

/// `scheme://host[:port]` of a URL, lower-cased, default port made explicit.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next()?.to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty())
        && !authority.ends_with(']')
    {
        authority
    } else {
        format!("{authority}:{default_port}")
    };
    Some(format!("{scheme}://{with_port}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
schema = 1
[[release]]
connector = "folkeregister"
version = "1.0.0"
contract = "1.0.0"
artifact = "a.wasm"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
upstream = { system = "Folkeregisteret", version = "v1" }
outbound_hosts = ["https://folkeregisteret.api.skatteetaten.no", "{base-url}"]
fields = ["name.given"]
capabilities = ["lookup"]
credentials = "maskinporten"
published = 2026-11-01
"#;

    #[test]
    fn good_manifest_parses() {
        let m = Manifest::parse(GOOD, "m.toml", PathBuf::new()).unwrap();
        assert_eq!(m.releases.len(), 1);
        let mut cfg = std::collections::BTreeMap::new();
        cfg.insert(
            "base-url".to_string(),
            "http://127.0.0.1:9000/x/y".to_string(),
        );
        assert_eq!(
            m.releases[0].requested_origins(&cfg),
            vec![
                "https://folkeregisteret.api.skatteetaten.no:443".to_string(),
                "http://127.0.0.1:9000".to_string()
            ]
        );
    }

    /// Whoever edits a manifest must not point a release at a file outside
    /// the registry, nor slip in a key this host would ignore.
    #[test]
    fn artifacts_stay_inside_the_registry_and_unknown_keys_are_refused() {
        for outside in [
            "../krr-1.0.0.wasm",
            "registry/../../etc/x.wasm",
            "/tmp/krr.wasm",
            "registry\\..\\x.wasm",
        ] {
            let text = GOOD.replace("artifact = \"a.wasm\"", &format!("artifact = {outside:?}"));
            let e = Manifest::parse(&text, "m.toml", PathBuf::new())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("release[0].artifact") && e.contains("inside the manifest's directory"),
                "{outside}: {e}"
            );
        }
        for inside in ["./a.wasm", "registry/artifacts/a.wasm"] {
            let text = GOOD.replace("artifact = \"a.wasm\"", &format!("artifact = {inside:?}"));
            assert!(
                Manifest::parse(&text, "m.toml", PathBuf::new()).is_ok(),
                "{inside}"
            );
        }
        let text = format!("trusted = true\n{GOOD}");
        let e = Manifest::parse(&text, "m.toml", PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `trusted`"), "{e}");
        let text = GOOD.replace(
            "upstream = { system = \"Folkeregisteret\", version = \"v1\" }",
            "upstream = { system = \"Folkeregisteret\", version = \"v1\", sunset = 2027-01-01 }",
        );
        let e = Manifest::parse(&text, "m.toml", PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `sunset`"), "{e}");
        // A capability needs the contract minor that added its interface.
        let text = GOOD.replace(
            "capabilities = [\"lookup\"]",
            "capabilities = [\"lookup\", \"search\"]",
        );
        let e = Manifest::parse(&text, "m.toml", PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"search\" needs contract 2.2.0"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let bad = GOOD
            .replace("version = \"1.0.0\"", "version = \"1.0\"")
            .replace("\"name.given\"", "\"name.nickname\"")
            .replace(
                "credentials = \"maskinporten\"",
                "credentials = \"magic\"\ncolour = \"red\"",
            );
        let bad = format!(
            "{bad}\n[[release]]\nconnector = \"x\"\nversion = \"1.0.0\"\n{}",
            "contract = \"1.0.0\"\nartifact = \"b.wasm\"\nsha256 = \"xyz\"\nupstream = { system = \"X\", version = \"1\" }\noutbound_hosts = [\"ftp://x\"]\nfields = []\ncapabilities = [\"teleport\"]\npublished = 2026-11-01\n[release.breaking]\nupstream_sunset = 2026-01-01\nupgrade_deadline = 2026-02-01\ndeadline_action = \"panic\"\nmigration = \"\"\n"
        );
        let err = Manifest::parse(&bad, "m.toml", PathBuf::new()).unwrap_err();
        let text = err.to_string();
        // The first release fails to deserialise (unknown key), the second
        // deserialises and fails six checks.
        assert!(
            text.contains("release[0]: unknown field `colour`"),
            "{text}"
        );
        for expected in [
            "release[1].sha256",
            "release[1].outbound_hosts[0]",
            "release[1].capabilities[0]",
            "release[1].breaking.upgrade_deadline",
            "release[1].breaking.deadline_action",
            "release[1].breaking.migration",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }

    #[test]
    fn auto_upgrade_needs_nothing_from_the_admin() {
        let second = GOOD
            .replace("schema = 1\n", "")
            .replace("version = \"1.0.0\"", "version = \"2.0.0\"")
            .replace("\"{base-url}\"", "\"{base-url}\", \"{feed-url}\"")
            .replace("credentials = \"maskinporten\"", "credentials = \"mtls\"");
        let text = format!(
            "{GOOD}{second}[release.breaking]\nupstream_sunset = 2027-02-01\nupgrade_deadline = 2027-01-01\ndeadline_action = \"auto-upgrade\"\nmigration = \"nothing\"\n"
        );
        let err = Manifest::parse(&text, "m.toml", PathBuf::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("release[1].breaking.deadline_action")
                && err.contains("auto-upgrade from folkeregister 1.0.0")
                && err.contains("credential kind changes (maskinporten → mtls)")
                && err.contains("(feed-url)"),
            "{err}"
        );
        let fine = text
            .replace(", \"{feed-url}\"", "")
            .replace("credentials = \"mtls\"", "credentials = \"maskinporten\"");
        Manifest::parse(&fine, "m.toml", PathBuf::new()).unwrap();
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("HTTPS://Example.com/x").as_deref(),
            Some("https://example.com:443")
        );
        assert_eq!(
            origin_of("http://[::1]:8080/").as_deref(),
            Some("http://[::1]:8080")
        );
        assert_eq!(origin_of("http://user@x/"), None);
        assert_eq!(origin_of("ftp://x"), None);
    }
}
