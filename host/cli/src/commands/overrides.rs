//! `folkhub overrides add | list | remove`, `folkhub conflicts` and
//! `folkhub identity links | undo`.

use anyhow::{Context, bail};
use folkhub_store::NewOverride;

use folkhub_app::Host;

/// Adds an override after checking what can be checked here.
pub async fn add(
    host: &Host,
    id: &str,
    path: &str,
    value: &str,
    reason: &str,
    expires: Option<&str>,
    actor: &str,
) -> anyhow::Result<()> {
    let parsed = crate::commands::person::parse_id(id)?;
    if folkhub_core::fields::lookup(path).is_none() {
        bail!(
            "{path:?} is not a field of the catalogue (docs/fields.md), e.g. contact.email or address.residential"
        );
    }
    if reason.trim().is_empty() {
        bail!("--reason must say why the value is overridden (it is kept in the audit trail)");
    }
    // JSON when it parses (objects, lists, numbers, true/false), else text.
    let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::json!(value));
    let expires = match expires {
        None => None,
        Some(day) => {
            let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .with_context(|| format!("--expires {day:?} is not a date YYYY-MM-DD"))?;
            if date <= host.today() {
                bail!("--expires {date} is not after today ({})", host.today());
            }
            date.and_hms_opt(0, 0, 0).map(|t| t.and_utc())
        }
    };
    let o = host
        .store()
        .add_override(NewOverride {
            person_id: parsed.value,
            path: path.to_string(),
            value,
            reason: reason.to_string(),
            actor: actor.to_string(),
            expires,
        })
        .await?;
    out!(
        "override #{} for person {}: {} = {}{}",
        o.id,
        o.person,
        o.path,
        o.value,
        o.expires_at
            .map(|e| format!(" until {}", e.format("%Y-%m-%d")))
            .unwrap_or_default()
    );
    Ok(())
}

pub async fn list(host: &Host, all: bool) -> anyhow::Result<()> {
    let list = host.store().overrides(!all).await?;
    if list.is_empty() {
        out!("no {}overrides", if all { "" } else { "open " });
    }
    for o in list {
        let ended = match (&o.ended_at, &o.ended_by, &o.ended_reason) {
            (Some(at), by, why) => format!(
                " — ended {} by {}: {}",
                at.format("%Y-%m-%d"),
                by.as_deref().unwrap_or("?"),
                why.as_deref().unwrap_or("")
            ),
            _ => String::new(),
        };
        out!(
            "#{} person {} {} = {} (by {} on {}{}: {}){ended}",
            o.id,
            o.person,
            o.path,
            o.value,
            o.created_by,
            o.created_at.format("%Y-%m-%d"),
            o.expires_at
                .map(|e| format!(", until {}", e.format("%Y-%m-%d")))
                .unwrap_or_default(),
            o.reason
        );
    }
    Ok(())
}

pub async fn remove(host: &Host, id: i64, reason: &str, actor: &str) -> anyhow::Result<()> {
    if !host.store().end_override(id, actor, reason).await? {
        bail!("there is no open override #{id}; see `folkhub overrides list --all`");
    }
    out!("override #{id} ended; the sources decide the field again");
    Ok(())
}

pub async fn conflicts(host: &Host) -> anyhow::Result<()> {
    let list = host.store().conflicts().await?;
    if list.is_empty() {
        out!("no open conflicts");
    }
    for c in list {
        let options: Vec<String> = c
            .candidates
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| format!("{}: {}", x["source"].as_str().unwrap_or("?"), x["value"]))
            .collect();
        out!(
            "person {} {} (open since {}): {}",
            c.person,
            c.path,
            c.opened_at.format("%Y-%m-%d"),
            options.join(" | ")
        );
    }
    Ok(())
}

pub async fn links(host: &Host) -> anyhow::Result<()> {
    let list = host.store().identity_links().await?;
    if list.is_empty() {
        out!("no identity links");
    }
    for l in list {
        let undone = match (&l.undone_at, &l.undone_by) {
            (Some(at), by) => format!(
                " — UNDONE {} by {}: {}",
                at.format("%Y-%m-%d"),
                by.as_deref().unwrap_or("?"),
                l.undone_reason.as_deref().unwrap_or("")
            ),
            _ => String::new(),
        };
        out!(
            "#{} {}: person {} merged into {} — {}{undone}",
            l.id,
            l.at.format("%Y-%m-%d %H:%M"),
            l.merged,
            l.survivor,
            l.reason
        );
    }
    Ok(())
}

pub async fn undo_link(host: &Host, id: i64, reason: &str, actor: &str) -> anyhow::Result<()> {
    if reason.trim().is_empty() {
        bail!("--reason must say why the link is wrong (it is kept with the link)");
    }
    if !host.store().undo_link(id, actor, reason).await? {
        bail!("there is no identity link #{id} that is not undone; see `folkhub identity links`");
    }
    out!("identity link #{id} undone: both persons are separate again");
    Ok(())
}

pub async fn reviews(host: &Host) -> anyhow::Result<()> {
    let list = host.store().identity_reviews().await?;
    if list.is_empty() {
        out!("nothing to review");
    }
    for r in list {
        out!(
            "#{} {}: person {} (reported by {} without an ID) may be one of persons {:?}",
            r.id,
            r.at.format("%Y-%m-%d %H:%M"),
            r.person,
            r.source,
            r.candidates
        );
    }
    Ok(())
}
