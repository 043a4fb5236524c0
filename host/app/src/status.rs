//! Connectors' live status: what is installed now, whether it loads, its
//! support state and deadline, and its circuit breaker. Computed when
//! asked (the API's `/v1/health`, `/v1/connectors` and `/metrics` ask on
//! every request), so a breaker that opened or an upgrade another host made
//! after the server started shows at once.

use std::collections::BTreeMap;
use std::sync::Mutex;

use folkhub_api::{ConnectorStatus, UpgradeNotice};
use folkhub_manifest::{Manifest, Release, SupportState};
use folkhub_store::{Installation, Installations, Jobs};

use crate::host::Host;

/// Why an installed release cannot run as the registry and the calendar
/// stand, without running anything (no deadline action, no call): not in
/// the registry any more, changed bytes, or disabled at its deadline.
fn registry_error(host: &Host, manifest: &Manifest, installation: &Installation) -> Option<String> {
    let release = match host.installed_release(manifest, installation) {
        Ok(release) => release,
        Err(e) => return Some(format!("{e:#}")),
    };
    match folkhub_manifest::support_state(manifest, release, host.today()) {
        SupportState::Unsupported {
            by, action, reason, ..
        } if action == "disable" => Some(crate::host::disabled(installation, &by, &reason)),
        _ => None,
    }
}

/// The live status of a host's connectors. Whether a release verifies and
/// links is remembered per installed digest (it cannot change while the
/// process runs); everything else is read on every call.
pub struct LiveStatus {
    host: Host,
    verified: Mutex<BTreeMap<(String, String), Option<String>>>,
}

impl LiveStatus {
    pub fn new(host: Host) -> LiveStatus {
        LiveStatus {
            host,
            verified: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether a release verifies and links on this host (remembered per
    /// digest: the bytes and this process's config do not change).
    fn verify(&self, release: &Release) -> Option<String> {
        let key = (release.connector.clone(), release.sha256.clone());
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .entry(key)
            .or_insert_with(|| self.host.prepare(release).err().map(|e| format!("{e:#}")))
            .clone()
    }

    /// Every installed connector's status now.
    pub async fn connectors(&self) -> anyhow::Result<Vec<ConnectorStatus>> {
        let host = &self.host;
        let manifest = host.manifest();
        let today = host.today();
        let mut out = Vec::new();
        for installation in host.store.installations().await? {
            let release = manifest.find(&installation.connector, Some(&installation.version));
            let error = match (registry_error(host, &manifest, &installation), release) {
                (Some(error), _) => Some(error),
                (None, None) => None,
                (None, Some(release)) => self.verify(release),
            };
            let state = release.map(|r| folkhub_manifest::support_state(&manifest, r, today));
            let upstream = release
                .map(|r| format!("{} {}", r.upstream.system, r.upstream.version))
                .unwrap_or_default();
            let support = state
                .as_ref()
                .map_or_else(|| "not in the registry".to_string(), SupportState::summary);
            let upgrade = state.and_then(|state| notice(state, today));
            let newest = manifest
                .find(&installation.connector, None)
                .map(|r| r.version.clone())
                .unwrap_or_default();
            let b = host.store.breaker(&installation.connector).await?;
            let now = chrono::Utc::now();
            let breaker_open = b.open_until.is_some_and(|until| until > now);
            let breaker = match b.open_until {
                Some(until) if until > now => Some(format!(
                    "open until {} after {} failed runs in a row: {}",
                    until.format("%Y-%m-%d %H:%M:%S UTC"),
                    b.failures,
                    b.last_error.as_deref().unwrap_or("?")
                )),
                _ if b.failures > 0 => {
                    Some(format!("closed ({} failed runs in a row)", b.failures))
                }
                _ => None,
            };
            out.push(ConnectorStatus {
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
        Ok(out)
    }
}

/// The upgrade an installed release is due for, when its support state
/// names a deadline.
fn notice(state: SupportState, today: chrono::NaiveDate) -> Option<UpgradeNotice> {
    match state {
        SupportState::Deprecated {
            by,
            deadline,
            sunset,
            action,
            ..
        }
        | SupportState::Unsupported {
            by,
            deadline,
            sunset,
            action,
            ..
        } => Some(UpgradeNotice {
            to: by,
            deadline: deadline.to_string(),
            upstream_sunset: sunset.to_string(),
            action,
            days_left: (deadline - today).num_days(),
        }),
        _ => None,
    }
}

/// The upgrade `installed` is due for on `today`, if any.
pub fn upgrade_notice(
    host: &Host,
    installed: &folkhub_store::Installation,
    today: chrono::NaiveDate,
) -> Option<UpgradeNotice> {
    let manifest = host.manifest();
    let release = manifest.find(&installed.connector, Some(&installed.version))?;
    notice(
        folkhub_manifest::support_state(&manifest, release, today),
        today,
    )
}

#[async_trait::async_trait]
impl folkhub_api::StatusSource for LiveStatus {
    async fn connectors(&self) -> Result<Vec<ConnectorStatus>, String> {
        LiveStatus::connectors(self)
            .await
            .map_err(|e| format!("{e:#}"))
    }
}
