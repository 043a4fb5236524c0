//! Serving: the HTTP API (and the admin listener) with the job scheduler
//! and webhook deliveries beside it, until Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use folkhub_api::ApiState;
use folkhub_store::{Installations, PersonStore};

use crate::host::Host;
use crate::status::LiveStatus;

/// Where a server listens, once it does.
#[derive(Debug, Clone)]
pub struct Listening {
    pub api: SocketAddr,
    /// `server.admin_listen`, when set.
    pub admin: Option<SocketAddr>,
    pub tls: bool,
}

/// The API's state for a host: its store, legal bases, contract support,
/// access-log mode, edge and OAuth2 settings, and connectors' live status
/// ([`LiveStatus`]).
pub async fn api_state(host: &Host) -> anyhow::Result<ApiState> {
    let bases = host.config.legal_bases();
    let mut state = ApiState::new(
        host.store.clone() as Arc<dyn PersonStore>,
        bases,
        Vec::new(),
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
    state.status = Arc::new(LiveStatus::new(host.clone()));
    state.fetch = Some(Arc::new(crate::fetch::Fetch::new(host.clone())));
    state.fetch_deadline = duration(&host.config.server.fetch_deadline, "server.fetch_deadline")?;
    state.edge = Arc::new(edge(&host.config.server)?);
    state.webhooks_allow_http = host.config.webhooks.allow_http;
    if !host.config.server.oauth2.is_empty() {
        state.oauth2 = Some(oauth2(&host.config.server.oauth2));
    }
    Ok(state)
}

pub(crate) fn duration(text: &str, what: &str) -> anyhow::Result<std::time::Duration> {
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

/// Serves the API on `listen` and runs the scheduler beside it until
/// Ctrl-C; `ready` hears where it listens once it does. Installed
/// connectors are loaded first (their deadline actions run); after that
/// each call loads what is installed then, so installs, upgrades and
/// rollbacks need no restart.
pub async fn run(host: &Host, listen: &str, ready: impl FnOnce(&Listening)) -> anyhow::Result<()> {
    for installed in host.store.installations().await? {
        if let Err(e) = host.load(&installed.connector).await {
            tracing::warn!(connector = %installed.connector, "{e:#}");
        }
    }
    let mut state = api_state(host).await?;
    let (queue, requests) = tokio::sync::mpsc::unbounded_channel();
    state.jobs = Some(folkhub_api::JobQueue {
        names: Arc::new(host.config.jobs.keys().cloned().collect()),
        sender: queue,
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut listening = Listening {
        api: listener.local_addr()?,
        admin: None,
        tls: state.edge.tls.is_some(),
    };
    if let Some(admin) = &host.config.server.admin_listen {
        let admin_listener = tokio::net::TcpListener::bind(admin)
            .await
            .with_context(|| format!("binding server.admin_listen {admin}"))?;
        listening.admin = Some(admin_listener.local_addr()?);
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
    ready(&listening);
    let api = folkhub_api::serve(listener, state, async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    // The API and the scheduler side by side; Ctrl-C stops both, letting
    // requests in flight and a running job finish.
    let webhooks = crate::webhooks::run(host, stopped.clone());
    let (api, jobs, webhooks) = tokio::join!(
        api,
        crate::jobs::run(host, stopped, Some(requests)),
        webhooks
    );
    api?;
    jobs?;
    webhooks?;
    Ok(())
}
