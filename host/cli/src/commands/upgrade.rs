//! `folkhub connectors upgrade | rollback | pin | unpin | history`: the
//! lifecycle lives in `folkhub_app`; this prints it.

use folkhub_app::Host;
use folkhub_app::upgrade::{Change, DryRun, Lists};
use folkhub_store::Installations;

fn print_lists(label: &str, l: &Lists) {
    if l.added.is_empty() && l.removed.is_empty() {
        out!("  {label:<14} unchanged");
    } else {
        let mut parts = Vec::new();
        parts.extend(l.added.iter().map(|a| format!("+{a}")));
        parts.extend(l.removed.iter().map(|r| format!("-{r}")));
        out!("  {label:<14} {}", parts.join(" "));
    }
}

fn print_change<T: std::fmt::Display + PartialEq>(label: &str, c: &Change<T>) {
    if c.from == c.to {
        out!("  {label:<14} {} (unchanged)", c.from);
    } else {
        out!("  {label:<14} {} → {}", c.from, c.to);
    }
}

/// Prints a dry run for a person at a terminal.
pub fn print(d: &DryRun) {
    out!(
        "Dry run: {} {} → {}{} — nothing is changed",
        d.connector,
        d.from,
        d.to,
        if d.pinned { " (pinned)" } else { "" }
    );
    out!("Installed {}: {}", d.from, d.support);
    out!("\nRelease notes since {}:", d.from);
    for r in &d.releases {
        out!(
            "  {} (published {}, contract {}, {} {})",
            r.version,
            r.published,
            r.contract,
            r.upstream.system,
            r.upstream.version
        );
        if !r.notes.is_empty() {
            out!("    {}", r.notes);
        }
        if let Some(b) = &r.breaking {
            out!(
                "    BREAKING: the old upstream is retired on {}; upgrade by {}; at the deadline: {}",
                b.upstream_sunset,
                b.upgrade_deadline,
                b.deadline_action
            );
            if !b.impact.is_empty() {
                out!("    impact: {}", b.impact.join(", "));
            }
            out!("    migration: {}", b.migration);
        }
    }
    out!("\nDifferences:");
    print_change("contract", &d.contract);
    out!("  {:<14} {}", "", d.contract_support);
    print_change("upstream", &d.upstream);
    print_lists("capabilities", &d.capabilities);
    print_lists("fields", &d.fields);
    print_lists("ID schemes", &d.id_schemes);
    print_change("credentials", &d.credentials);
    print_change("cost per call", &d.cost_per_call);
    out!("  {:<14} {}", "may reach", d.reachable.join(", "));
    if !d.ungranted.is_empty() {
        out!(
            "  {:<14} {} (requested, not granted in folkhub.toml)",
            "not granted",
            d.ungranted.join(", ")
        );
    }
    out!(
        "  {:<14} {}",
        "feed cursor",
        d.cursor.as_deref().map_or_else(
            || "none stored".to_string(),
            |c| format!("{c}: the new release continues from it")
        )
    );
    for (k, v) in &d.overrides {
        out!("  {:<14} {k} = {v} for {} (--set)", "config", d.to);
    }
    if let Some(s) = &d.shadow {
        out!(
            "\nShadow run on {} persons (both releases asked; nothing stored):",
            s.sampled
        );
        for (r, cost) in [(&s.old, d.cost_per_call.from), (&s.new, d.cost_per_call.to)] {
            let errors: u64 = r.errors.values().sum();
            out!(
                "  {:<8} {} found, {} not found, {} errors, {} calls (cost {:.2})",
                r.version,
                r.found,
                r.not_found,
                errors,
                r.calls,
                r.calls as f64 * cost
            );
            for (message, n) in &r.errors {
                out!("           {n} × {message}");
            }
        }
        out!(
            "  identical merged records: {} of {}",
            s.identical,
            s.sampled
        );
        if s.ids_differ > 0 {
            out!("  identifiers: differ for {} persons", s.ids_differ);
            for e in &s.id_examples {
                out!(
                    "      person {}: schemes +[{}] -[{}]",
                    e.person,
                    e.added.join(", "),
                    e.removed.join(", ")
                );
            }
        }
        for (path, diff) in &s.fields {
            out!("  {path}: differs for {} persons", diff.persons);
            for e in &diff.examples {
                if e.protected {
                    out!("      person {}: (protected)", e.person);
                } else {
                    out!("      person {}: {} → {}", e.person, e.old, e.new);
                }
            }
        }
    }
    if let Some(why) = &d.shadow_skipped {
        out!("\nNo shadow run: {why}");
    }
    out!(
        "\nRun without --dry-run to upgrade; `folkhub connectors rollback {}` then returns to {}.",
        d.connector,
        d.from
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
    out!(
        "upgraded {connector} {} → {} (contract {}, sha256 {}){}",
        plan.from.version,
        installation.version,
        installation.contract,
        &installation.digest[..16],
        if installation.pinned { ", pinned" } else { "" }
    );
    if let Some(note) = plan.between.iter().rev().find_map(|r| r.breaking.as_ref()) {
        out!("  migration reminder: {}", note.migration);
    }
    out!(
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
    out!(
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
    out!(
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
    let audit = host.store.audit(connector).await?;
    if audit.is_empty() {
        out!("{connector} has no installation history");
    }
    for e in audit {
        let short = |d: &Option<String>| {
            d.as_deref()
                .map_or("-".to_string(), |d| d[..12.min(d.len())].to_string())
        };
        out!(
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
