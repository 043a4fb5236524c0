//! `folkhub connectors list | install`.

use crate::host::Host;

pub async fn list(host: &Host) -> anyhow::Result<()> {
    let installed = folkhub_store::PersonStore::installations(host.store.as_ref()).await?;
    println!(
        "{:<16} {:<10} {:<10} {:<8} {:<20} CONTRACT",
        "CONNECTOR", "INSTALLED", "NEWEST", "PINNED", "UPSTREAM"
    );
    for id in host.manifest.connectors() {
        let newest = host.manifest.find(&id, None);
        let current = installed.iter().find(|i| i.connector == id);
        let upstream = current
            .and_then(|i| host.manifest.find(&id, Some(&i.version)))
            .or(newest)
            .map(|r| format!("{} {}", r.upstream.system, r.upstream.version))
            .unwrap_or_default();
        println!(
            "{:<16} {:<10} {:<10} {:<8} {:<20} {}",
            id,
            current.map_or("-", |i| i.version.as_str()),
            newest.map_or("-", |r| r.version.as_str()),
            if current.is_some_and(|i| i.pinned) {
                "yes"
            } else {
                "no"
            },
            upstream,
            current.map_or_else(
                || newest.map(|r| r.contract.clone()).unwrap_or_default(),
                |i| i.contract.clone()
            ),
        );
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
    println!(
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
        println!(
            "  warning: no outbound host is both requested by the release and granted in folkhub.toml; it cannot reach its register"
        );
    } else {
        println!("  may reach: {}", allowed.join(", "));
    }
    Ok(())
}
