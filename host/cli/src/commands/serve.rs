//! `folkhub serve`: the HTTP API.

use std::sync::Arc;

use anyhow::Context;
use folkhub_api::{ApiState, ConnectorStatus};
use folkhub_store::PersonStore;

use crate::host::Host;

/// Builds the API state: installed connectors are loaded to report their health.
pub async fn state(host: &Host) -> anyhow::Result<ApiState> {
    let mut connectors = Vec::new();
    for listed in host.store.installations().await? {
        // Loading runs deadline actions (an auto-upgrade changes what is
        // installed), so the installation is read again afterwards.
        let error = host
            .load(&listed.connector)
            .await
            .err()
            .map(|e| format!("{e:#}"));
        let installation = host
            .store
            .installation(&listed.connector)
            .await?
            .unwrap_or(listed);
        let release = host
            .manifest
            .find(&installation.connector, Some(&installation.version));
        let upstream = release
            .map(|r| format!("{} {}", r.upstream.system, r.upstream.version))
            .unwrap_or_default();
        let support = release.map_or_else(
            || "not in the registry".to_string(),
            |r| folkhub_manifest::support_state(&host.manifest, r, host.today()).summary(),
        );
        let state =
            release.map(|r| folkhub_manifest::support_state(&host.manifest, r, host.today()));
        let today = host.today();
        let upgrade = match state {
            Some(folkhub_manifest::SupportState::Deprecated {
                by,
                deadline,
                sunset,
                action,
                ..
            })
            | Some(folkhub_manifest::SupportState::Unsupported {
                by,
                deadline,
                sunset,
                action,
                ..
            }) => Some(folkhub_api::UpgradeNotice {
                to: by,
                deadline: deadline.to_string(),
                upstream_sunset: sunset.to_string(),
                action,
                days_left: (deadline - today).num_days(),
            }),
            _ => None,
        };
        let newest = host
            .manifest
            .find(&installation.connector, None)
            .map(|r| r.version.clone())
            .unwrap_or_default();
        let b = host.store.breaker(&installation.connector).await?;
        let breaker = match b.open_until {
            Some(until) if until > chrono::Utc::now() => Some(format!(
                "open until {} after {} failed runs in a row: {}",
                until.format("%Y-%m-%d %H:%M:%S UTC"),
                b.failures,
                b.last_error.as_deref().unwrap_or("?")
            )),
            _ if b.failures > 0 => Some(format!("closed ({} failed runs in a row)", b.failures)),
            _ => None,
        };
        let breaker_open = b.open_until.is_some_and(|until| until > chrono::Utc::now());
        connectors.push(ConnectorStatus {
            breaker_open,
            breaker,
            pinned: installation.pinned,
            newest,
            upgrade,
            id: installation.connector,
            version: installation.version,
            contract: installation.contract,
            digest: installation.digest,
            upstream,
            support,
            error,
        });
    }
    let bases = host.config.legal_bases();
    let mut state = ApiState::new(
        host.store.clone() as Arc<dyn PersonStore>,
        bases,
        connectors,
        folkhub_runtime::SUPPORTED
            .iter()
            .map(|s| {
                let (state, deprecated_since, removal) = match s.support {
                    folkhub_runtime::negotiate::Support::Supported => ("supported", None, None),
                    folkhub_runtime::negotiate::Support::Deprecated { since, removal } => (
                        "deprecated",
                        Some(since.to_string()),
                        Some(removal.to_string()),
                    ),
                };
                folkhub_api::ContractSupport {
                    major: s.major,
                    newest: s.newest.to_string(),
                    supported_since: s.since.to_string(),
                    state: state.to_string(),
                    deprecated_since,
                    removal,
                }
            })
            .collect(),
        folkhub_api::access_log::Mode::parse(&host.config.server.access_log)
            .context("server.access_log")?,
    );
    state.edge = Arc::new(edge(&host.config.server)?);
    if !host.config.server.oauth2.is_empty() {
        state.oauth2 = Some(oauth2(&host.config.server.oauth2));
    }
    Ok(state)
}

fn duration(text: &str, what: &str) -> anyhow::Result<std::time::Duration> {
    folkhub_manifest::config::parse_ttl(text)
        .and_then(|d| d.to_std().ok())
        .with_context(|| format!("{what} = {text:?} is not a duration (e.g. 10s)"))
}

/// The edge's rules from `[server]`.
fn edge(
    server: &folkhub_manifest::config::ServerConfig,
) -> anyhow::Result<folkhub_api::edge::EdgeConfig> {
    let tls = match &server.tls {
        None => None,
        Some(tls) => Some(
            folkhub_api::edge::tls_config(
                &tls.cert,
                &tls.key,
                tls.client_ca.as_deref(),
                tls.client_certs != "optional",
            )
            .map_err(anyhow::Error::msg)?,
        ),
    };
    Ok(folkhub_api::edge::EdgeConfig {
        header_timeout: duration(&server.header_timeout, "server.header_timeout")?,
        idle_timeout: duration(&server.idle_timeout, "server.idle_timeout")?,
        body_timeout: duration(&server.body_timeout, "server.body_timeout")?,
        max_connections: server.max_connections,
        max_body: server.max_body,
        tls,
    })
}

/// The OAuth2 issuers of `[[server.oauth2]]`; their JWKS is fetched by
/// the host's HTTP client.
fn oauth2(issuers: &[folkhub_manifest::config::OAuth2Issuer]) -> folkhub_api::oauth2::OAuth2 {
    folkhub_api::oauth2::OAuth2::new(
        issuers
            .iter()
            .map(|i| folkhub_api::oauth2::IssuerConfig {
                name: i.name.clone(),
                issuer: i.issuer.clone(),
                jwks_url: i.jwks_url.clone(),
                audience: i.audience.clone(),
                scopes: i.scopes.clone(),
                leeway: folkhub_manifest::config::parse_ttl(&i.leeway)
                    .and_then(|d| d.to_std().ok())
                    .unwrap_or(std::time::Duration::from_secs(30)),
                refetch_after: folkhub_api::oauth2::REFETCH_AFTER,
            })
            .collect(),
        Arc::new(|url: String| {
            Box::pin(async move { folkhub_runtime::credentials::fetch(&url).await })
        }),
    )
}

pub async fn run(host: &Host, listen: &str) -> anyhow::Result<()> {
    let mut state = state(host).await?;
    let (queue, requests) = tokio::sync::mpsc::unbounded_channel();
    state.jobs = Some(folkhub_api::JobQueue {
        names: Arc::new(host.config.jobs.keys().cloned().collect()),
        sender: queue,
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!(
        "folkhub API on {}://{}/v1 (Ctrl-C stops)",
        if state.edge.tls.is_some() {
            "https"
        } else {
            "http"
        },
        listener.local_addr()?
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Some(admin) = &host.config.server.admin_listen {
        let admin_listener = tokio::net::TcpListener::bind(admin)
            .await
            .with_context(|| format!("binding server.admin_listen {admin}"))?;
        println!(
            "folkhub admin listener (/metrics, /v1/health) on {}://{}",
            if state.edge.tls.is_some() {
                "https"
            } else {
                "http"
            },
            admin_listener.local_addr()?
        );
        let (router, edge) = (folkhub_api::admin_app(state.clone()), (*state.edge).clone());
        let mut admin_stop = stopped.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = admin_stop.wait_for(|s| *s).await;
            };
            if let Err(e) = folkhub_api::edge::serve(admin_listener, router, edge, stop).await {
                tracing::error!("admin listener: {e}");
            }
        });
    }
    let api = folkhub_api::serve(listener, state, async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    // The API and the scheduler side by side; Ctrl-C stops both, letting
    // requests in flight and a running job finish.
    let (api, jobs) = tokio::join!(api, crate::scheduler::run(host, stopped, Some(requests)));
    api?;
    jobs?;
    Ok(())
}
