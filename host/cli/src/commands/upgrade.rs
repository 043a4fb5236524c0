//! `folkhub connectors upgrade | rollback | pin | unpin | history`.

use std::collections::BTreeMap;

use folkhub_manifest::Release;
use serde::Serialize;

use crate::host::{Host, UpgradePlan, added_removed};

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
    let cursor = folkhub_store::PersonStore::cursor(host.store(), connector).await?;
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
        support: folkhub_manifest::support_state(&host.manifest, from, host.today()).summary(),
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

fn print_lists(label: &str, l: &Lists) {
    if l.added.is_empty() && l.removed.is_empty() {
        println!("  {label:<14} unchanged");
    } else {
        let mut parts = Vec::new();
        parts.extend(l.added.iter().map(|a| format!("+{a}")));
        parts.extend(l.removed.iter().map(|r| format!("-{r}")));
        println!("  {label:<14} {}", parts.join(" "));
    }
}

fn print_change<T: std::fmt::Display + PartialEq>(label: &str, c: &Change<T>) {
    if c.from == c.to {
        println!("  {label:<14} {} (unchanged)", c.from);
    } else {
        println!("  {label:<14} {} → {}", c.from, c.to);
    }
}

/// Prints a dry run for a person at a terminal.
pub fn print(d: &DryRun) {
    println!(
        "Dry run: {} {} → {}{} — nothing is changed",
        d.connector,
        d.from,
        d.to,
        if d.pinned { " (pinned)" } else { "" }
    );
    println!("Installed {}: {}", d.from, d.support);
    println!("\nRelease notes since {}:", d.from);
    for r in &d.releases {
        println!(
            "  {} (published {}, contract {}, {} {})",
            r.version, r.published, r.contract, r.upstream.system, r.upstream.version
        );
        if !r.notes.is_empty() {
            println!("    {}", r.notes);
        }
        if let Some(b) = &r.breaking {
            println!(
                "    BREAKING: the old upstream is retired on {}; upgrade by {}; at the deadline: {}",
                b.upstream_sunset, b.upgrade_deadline, b.deadline_action
            );
            if !b.impact.is_empty() {
                println!("    impact: {}", b.impact.join(", "));
            }
            println!("    migration: {}", b.migration);
        }
    }
    println!("\nDifferences:");
    print_change("contract", &d.contract);
    println!("  {:<14} {}", "", d.contract_support);
    print_change("upstream", &d.upstream);
    print_lists("capabilities", &d.capabilities);
    print_lists("fields", &d.fields);
    print_lists("ID schemes", &d.id_schemes);
    print_change("credentials", &d.credentials);
    print_change("cost per call", &d.cost_per_call);
    println!("  {:<14} {}", "may reach", d.reachable.join(", "));
    if !d.ungranted.is_empty() {
        println!(
            "  {:<14} {} (requested, not granted in folkhub.toml)",
            "not granted",
            d.ungranted.join(", ")
        );
    }
    println!(
        "  {:<14} {}",
        "feed cursor",
        d.cursor.as_deref().map_or_else(
            || "none stored".to_string(),
            |c| format!("{c}: the new release continues from it")
        )
    );
    for (k, v) in &d.overrides {
        println!("  {:<14} {k} = {v} for {} (--set)", "config", d.to);
    }
    if let Some(s) = &d.shadow {
        println!(
            "\nShadow run on {} persons (both releases asked; nothing stored):",
            s.sampled
        );
        for (r, cost) in [(&s.old, d.cost_per_call.from), (&s.new, d.cost_per_call.to)] {
            let errors: u64 = r.errors.values().sum();
            println!(
                "  {:<8} {} found, {} not found, {} errors, {} calls (cost {:.2})",
                r.version,
                r.found,
                r.not_found,
                errors,
                r.calls,
                r.calls as f64 * cost
            );
            for (message, n) in &r.errors {
                println!("           {n} × {message}");
            }
        }
        println!(
            "  identical merged records: {} of {}",
            s.identical, s.sampled
        );
        if s.ids_differ > 0 {
            println!("  identifiers: differ for {} persons", s.ids_differ);
            for e in &s.id_examples {
                println!(
                    "      person {}: schemes +[{}] -[{}]",
                    e.person,
                    e.added.join(", "),
                    e.removed.join(", ")
                );
            }
        }
        for (path, diff) in &s.fields {
            println!("  {path}: differs for {} persons", diff.persons);
            for e in &diff.examples {
                if e.protected {
                    println!("      person {}: (protected)", e.person);
                } else {
                    println!("      person {}: {} → {}", e.person, e.old, e.new);
                }
            }
        }
    }
    if let Some(why) = &d.shadow_skipped {
        println!("\nNo shadow run: {why}");
    }
    println!(
        "\nRun without --dry-run to upgrade; `folkhub connectors rollback {}` then returns to {}.",
        d.connector, d.from
    );
}

pub async fn upgrade(
    host: &Host,
    connector: &str,
    to: &str,
    actor: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let (plan, installation) = host.upgrade(connector, to, actor, reason).await?;
    println!(
        "upgraded {connector} {} → {} (contract {}, sha256 {}){}",
        plan.from.version,
        installation.version,
        installation.contract,
        &installation.digest[..16],
        if installation.pinned { ", pinned" } else { "" }
    );
    if let Some(note) = plan.between.iter().rev().find_map(|r| r.breaking.as_ref()) {
        println!("  migration reminder: {}", note.migration);
    }
    println!(
        "  `folkhub connectors rollback {connector}` returns to {}",
        plan.from.version
    );
    Ok(())
}

pub async fn rollback(
    host: &Host,
    connector: &str,
    actor: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let (before, after) = host.rollback(connector, actor, reason).await?;
    println!(
        "rolled {connector} back from {} to {} (sha256 {})",
        before.version,
        after.version,
        &after.digest[..16]
    );
    Ok(())
}

pub async fn pin(
    host: &Host,
    connector: &str,
    pinned: bool,
    actor: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let i = host.pin(connector, pinned, actor, reason).await?;
    println!(
        "{connector} {} is {}",
        i.version,
        if pinned {
            "pinned: no automatic upgrade moves it until it is unpinned"
        } else {
            "unpinned"
        }
    );
    Ok(())
}

/// The installation history: every change, who, when, digests, why.
pub async fn history(host: &Host, connector: &str) -> anyhow::Result<()> {
    let audit = folkhub_store::PersonStore::audit(host.store(), connector).await?;
    if audit.is_empty() {
        println!("{connector} has no installation history");
    }
    for e in audit {
        let short = |d: &Option<String>| {
            d.as_deref()
                .map_or("-".to_string(), |d| d[..12.min(d.len())].to_string())
        };
        println!(
            "{}  {:<15} {} ({}) → {} ({})  by {}: {}",
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.action,
            e.version_before.as_deref().unwrap_or("-"),
            short(&e.digest_before),
            e.version_after.as_deref().unwrap_or("-"),
            short(&e.digest_after),
            e.actor,
            e.reason
        );
    }
    Ok(())
}
