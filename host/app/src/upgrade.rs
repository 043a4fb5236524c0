//! What an upgrade would change, checked and tried before anything is
//! changed: the dry run (`folkhub connectors upgrade --dry-run`).

use std::collections::BTreeMap;

use folkhub_manifest::Release;
use serde::Serialize;

use crate::host::{Host, UpgradePlan, added_removed};
use folkhub_store::Jobs;

/// A difference between two releases: (before, after) or added/removed lists.
#[derive(Debug, Serialize)]
pub struct Change<T> {
    pub from: T,
    pub to: T,
}

#[derive(Debug, Serialize)]
pub struct Lists {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

/// Everything a dry run reports (`--json` prints it as is).
#[derive(Debug, Serialize)]
pub struct DryRun {
    pub connector: String,
    pub from: String,
    pub to: String,
    pub pinned: bool,
    /// Support state of the installed release today (deadline, days left).
    pub support: String,
    /// The releases after the installed one up to the target, with notes.
    pub releases: Vec<Release>,
    pub contract: Change<String>,
    /// How this host supports the target's contract major.
    pub contract_support: String,
    pub upstream: Change<String>,
    pub capabilities: Lists,
    pub fields: Lists,
    pub id_schemes: Lists,
    pub credentials: Change<String>,
    pub reachable: Vec<String>,
    pub ungranted: Vec<String>,
    pub cost_per_call: Change<f64>,
    /// The change feed's stored cursor, which the new release continues from.
    pub cursor: Option<String>,
    /// Config values replaced for the new release (`--set`).
    pub overrides: BTreeMap<String, String>,
    pub shadow: Option<folkhub_sync::shadow::ShadowReport>,
    /// Why there is no shadow run, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_skipped: Option<String>,
}

fn lists(a: &[String], b: &[String]) -> Lists {
    let (added, removed) = added_removed(a, b);
    Lists { added, removed }
}

/// Builds the dry-run report: the plan's checks, then both releases on a
/// sample of `sample` persons. Writes nothing.
/// `overrides` replace operator config values for the new release only.
pub async fn dry_run(
    host: &Host,
    connector: &str,
    to: &str,
    sample: usize,
    overrides: &BTreeMap<String, String>,
) -> anyhow::Result<DryRun> {
    let plan: UpgradePlan = host.plan_upgrade_with(connector, to, overrides).await?;
    let (from, target) = (&plan.from, &plan.to);
    let support = folkhub_runtime::negotiate::ContractVersion::parse(&target.contract)
        .and_then(|v| folkhub_runtime::negotiate::check(v).ok())
        .map_or_else(|| "not supported".to_string(), |m| m.describe());
    let cursor = host.store.cursor(connector).await?;
    let (shadow, shadow_skipped) = if sample == 0 {
        (None, Some("--sample 0".to_string()))
    } else {
        // Prepared directly, not through `load`: a dry run must not run
        // deadline actions.
        let old = host.prepare(from)?;
        let new = host.prepare_with(target, overrides)?;
        let report =
            folkhub_sync::shadow::shadow(host.store(), &host.rules(), &old, &new, sample).await?;
        if report.sampled == 0 {
            (
                Some(report),
                Some(format!(
                    "the store has no person {connector} can be asked about yet; run a sync first"
                )),
            )
        } else {
            (Some(report), None)
        }
    };
    Ok(DryRun {
        connector: connector.to_string(),
        from: from.version.clone(),
        to: target.version.clone(),
        pinned: plan.installed.pinned,
        support: folkhub_manifest::support_state(&host.manifest(), from, host.today()).summary(),
        releases: plan.between.clone(),
        contract: Change {
            from: plan.installed.contract.clone(),
            to: target.contract.clone(),
        },
        contract_support: support,
        upstream: Change {
            from: format!("{} {}", from.upstream.system, from.upstream.version),
            to: format!("{} {}", target.upstream.system, target.upstream.version),
        },
        capabilities: lists(&from.capabilities, &target.capabilities),
        fields: lists(&from.fields, &target.fields),
        id_schemes: lists(&from.id_schemes, &target.id_schemes),
        credentials: Change {
            from: from.credentials.clone(),
            to: target.credentials.clone(),
        },
        reachable: plan.reachable.clone(),
        ungranted: plan.ungranted.clone(),
        cost_per_call: Change {
            from: from.cost_per_call,
            to: target.cost_per_call,
        },
        cursor,
        overrides: overrides.clone(),
        shadow,
        shadow_skipped,
    })
}
