//! `folkhub connectors list | outdated | install`.

use folkhub_app::Host;
use folkhub_store::Installations;

pub async fn list(host: &Host) -> anyhow::Result<()> {
    let installed = host.store.installations().await?;
    let today = host.today();
    let manifest = host.manifest();
    out!(
        "{:<14} {:<10} {:<8} {:<7} {:<9} {:<28} SUPPORT",
        "CONNECTOR",
        "INSTALLED",
        "NEWEST",
        "PINNED",
        "CONTRACT",
        "UPSTREAM"
    );
    for id in manifest.connectors() {
        let newest = manifest.find(&id, None);
        let current = installed.iter().find(|i| i.connector == id);
        let release = current.and_then(|i| manifest.find(&id, Some(&i.version)));
        let upstream = release
            .or(newest)
            .map(|r| format!("{} {}", r.upstream.system, r.upstream.version))
            .unwrap_or_default();
        let support = release.map_or_else(
            || "-".to_string(),
            |r| folkhub_manifest::support_state(&manifest, r, today).summary(),
        );
        out!(
            "{:<14} {:<10} {:<8} {:<7} {:<9} {:<28} {}",
            id,
            current.map_or("-", |i| i.version.as_str()),
            newest.map_or("-", |r| r.version.as_str()),
            if current.is_some_and(|i| i.pinned) {
                "yes"
            } else {
                "no"
            },
            current.map_or_else(
                || newest.map(|r| r.contract.clone()).unwrap_or_default(),
                |i| i.contract.clone()
            ),
            upstream,
            support,
        );
    }
    Ok(())
}

/// Installed connectors that are behind: a newer release, a deadline, a sunset.
pub async fn outdated(host: &Host) -> anyhow::Result<()> {
    use folkhub_manifest::SupportState;
    let installed = host.store.installations().await?;
    let today = host.today();
    let manifest = host.manifest();
    let mut any = false;
    for i in &installed {
        if let Some(version) = folkhub_runtime::ContractVersion::parse(&i.contract)
            && let Some(major) = folkhub_runtime::SUPPORTED
                .iter()
                .find(|s| s.major == version.major)
            && let folkhub_runtime::negotiate::Support::Deprecated { removal, .. } = major.support
        {
            let newest = folkhub_runtime::negotiate::newest();
            let on_newer = manifest
                .releases_of(&i.connector)
                .iter()
                .filter(|r| {
                    folkhub_runtime::ContractVersion::parse(&r.contract)
                        .is_some_and(|c| c.major > version.major)
                })
                .map(|r| r.version.clone())
                .collect::<Vec<_>>();
            out!(
                "{} {}: built on folkhub:connector {}, a major this host deprecates (removed after {removal}); {}",
                i.connector,
                i.version,
                i.contract,
                match on_newer.last() {
                    Some(v) => format!("{v} is built on {}", newest.major),
                    None => format!("no release on {} yet: ask the vendor", newest.major),
                }
            );
            any = true;
        }
        let Some(release) = manifest.find(&i.connector, Some(&i.version)) else {
            out!(
                "{} {}: installed, but registry-manifest.toml no longer lists this release",
                i.connector,
                i.version
            );
            any = true;
            continue;
        };
        let newest = manifest.find(&i.connector, None);
        let behind = newest.is_some_and(|n| n.version != i.version);
        let state = folkhub_manifest::support_state(&manifest, release, today);
        if !behind && state == SupportState::Supported {
            continue;
        }
        any = true;
        let pinned = if i.pinned { " (pinned)" } else { "" };
        out!(
            "{} {}{pinned} → newest {}",
            i.connector,
            i.version,
            newest.map_or("-", |n| n.version.as_str())
        );
        match &state {
            SupportState::Supported => out!("  supported"),
            SupportState::Deprecated {
                by,
                deadline,
                sunset,
                days_left,
                warning,
                action,
            } => {
                let level =
                    warning.map_or(String::new(), |w| format!("WARNING ({w}-day notice): "));
                out!(
                    "  {level}upgrade to {by} by {deadline}: {days_left} days left; {} {} is retired on {sunset}; at the deadline: {action}",
                    release.upstream.system,
                    release.upstream.version
                );
            }
            SupportState::Unsupported { action, reason, .. } => {
                out!("  UNSUPPORTED: {reason}; action: {action}");
            }
        }
        if let Some(by) = match &state {
            SupportState::Deprecated { by, .. } | SupportState::Unsupported { by, .. } => {
                manifest.find(&i.connector, Some(by))
            }
            SupportState::Supported => None,
        } && let Some(note) = &by.breaking
        {
            out!("  migration: {}", note.migration);
        }
    }
    if !any {
        out!("every installed connector is on its newest release and supported");
    }
    Ok(())
}

pub async fn install(
    host: &Host,
    connector: &str,
    version: Option<&str>,
    pin: bool,
    actor: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let installation = host.install(connector, version, pin, actor, reason).await?;
    out!(
        "installed {} {} (contract {}, sha256 {}){}",
        installation.connector,
        installation.version,
        installation.contract,
        &installation.digest[..16],
        if installation.pinned { ", pinned" } else { "" }
    );
    let connector = host.load(connector).await?;
    let allowed = connector.allowed_origins();
    if allowed.is_empty() {
        out!(
            "  warning: no outbound host is both requested by the release and granted in folkhub.toml; it cannot reach its register"
        );
    } else {
        out!("  may reach: {}", allowed.join(", "));
    }
    Ok(())
}

/// `folkhub connectors fetch`: copies the vendor registries granted by URL
/// into the mirror; exits 1 when one could not be fetched (its last good
/// copy stays in use).
pub async fn fetch(config: &folkhub_manifest::Config) -> anyhow::Result<()> {
    if config.registry.vendor_urls.is_empty() {
        anyhow::bail!(
            "no vendor registry is granted by URL: add its manifest's URL to [registry] vendor_urls in folkhub.toml, then fetch again"
        );
    }
    let mut failed = 0;
    for (url, outcome) in folkhub_app::registries::fetch_all(&config.registry).await {
        match outcome {
            Ok(f) => out!(
                "{url}: {} release(s); {} artifact(s) fetched ({:.1} MB), {} already here; copy in {}",
                f.releases,
                f.downloaded,
                f.bytes as f64 / 1e6,
                f.kept,
                f.manifest.display()
            ),
            Err(e) => {
                failed += 1;
                out!("{url}: not fetched: {e:#}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} registr{} could not be fetched; each keeps its last good copy",
            if failed == 1 { "y" } else { "ies" }
        );
    }
    out!(
        "`folkhub connectors list` shows their releases; install one with `folkhub connectors install`"
    );
    Ok(())
}
