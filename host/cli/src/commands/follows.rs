//! `folkhub follows` and `folkhub populations`: follow sets from the
//! operator's side, the retention sweep and its deletion audit.

use anyhow::bail;
use folkhub_app::Host;
use folkhub_store::{FollowSet, Follows};

/// Refuses a set whose client or population does not exist.
async fn check_set(host: &Host, set: &FollowSet) -> anyhow::Result<()> {
    match set {
        FollowSet::Client(name) => {
            let clients = host.store().clients().await?;
            if !clients
                .iter()
                .any(|c| &c.name == name && c.revoked_at.is_none())
            {
                bail!("no active client named {name:?} (see `folkhub clients list`)");
            }
        }
        FollowSet::Population(name) => {
            if !host
                .store
                .populations()
                .await?
                .iter()
                .any(|p| &p.name == name)
            {
                bail!("no population named {name:?} (see `folkhub populations list`)");
            }
        }
        FollowSet::Guardians => {}
    }
    Ok(())
}

pub async fn list(host: &Host, set: &FollowSet, json: bool) -> anyhow::Result<()> {
    check_set(host, set).await?;
    let mut members = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = host
            .store
            .follow_members(set, after.as_deref(), 1000)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        members.extend(page);
    }
    if json {
        out!("{}", serde_json::to_string_pretty(&members)?);
        return Ok(());
    }
    for m in &members {
        out!(
            "{}  {:<8} added {} by {}",
            m.id,
            m.scheme,
            m.added_at.format("%Y-%m-%d %H:%M"),
            m.added_by
        );
    }
    out!("{set}: {} followed", members.len());
    Ok(())
}

pub async fn change(
    host: &Host,
    set: &FollowSet,
    ids: &[String],
    remove: bool,
    actor: &str,
) -> anyhow::Result<()> {
    check_set(host, set).await?;
    let change = folkhub_app::follow::change(host, set, ids, remove, actor).await?;
    if remove {
        out!(
            "{set}: {} removed, {} were not followed",
            change.removed,
            change.not_followed
        );
    } else {
        out!(
            "{set}: {} added, {} followed already",
            change.added,
            change.already
        );
    }
    Ok(())
}

pub async fn sweep(host: &Host) -> anyhow::Result<()> {
    let (run, report) = folkhub_app::follow::retention(host, "retention").await?;
    out!(
        "run {run}: {} persons deleted (nobody followed them for {}), {} waiting out the period, {} noted as unfollowed now, {} followed again",
        report.deleted.len(),
        host.config.follow.retention,
        report.waiting,
        report.noted,
        report.followed_again
    );
    Ok(())
}

pub async fn deletions(
    host: &Host,
    id: Option<&str>,
    limit: u32,
    json: bool,
) -> anyhow::Result<()> {
    let store = host.store.as_ref();
    if let Some(id) = id {
        let parsed = folkhub_core::ids::parse(id)?;
        match store.deletion_of(&parsed.value).await? {
            Some(d) => out!(
                "deleted {} by {}: {} (unfollowed since {}, {} observations and {} history entries)",
                d.at.format("%Y-%m-%d %H:%M"),
                d.actor,
                d.reason,
                d.unfollowed_since.format("%Y-%m-%d"),
                d.observations,
                d.changes
            ),
            None => out!("no deletion of this ID is recorded"),
        }
        return Ok(());
    }
    let list = store.deletions(limit).await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        out!("no person has been deleted for want of followers");
    }
    for d in list {
        out!(
            "#{} {} person {} ({} IDs) by {}: {}",
            d.id,
            d.at.format("%Y-%m-%d %H:%M"),
            d.person_key,
            d.id_digests.len(),
            d.actor,
            d.reason
        );
    }
    Ok(())
}

fn valid_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        bail!("{name:?}: a population name is 1 to 64 of a-z, 0-9, - and _");
    }
    Ok(())
}

pub async fn add_population(
    host: &Host,
    name: &str,
    purpose: &str,
    clients: &[String],
    actor: &str,
) -> anyhow::Result<()> {
    valid_name(name)?;
    if purpose.trim().is_empty() {
        bail!("--purpose says what the population is for (it is shown to its clients)");
    }
    for client in clients {
        check_set(host, &FollowSet::Client(client.clone())).await?;
    }
    let p = host
        .store
        .add_population(name, purpose, clients, actor)
        .await?;
    out!(
        "population {} created for {}",
        p.name,
        if p.clients.is_empty() {
            "no client yet (grant one with `folkhub populations grant`)".to_string()
        } else {
            p.clients.join(", ")
        }
    );
    Ok(())
}

pub async fn populations(host: &Host, json: bool) -> anyhow::Result<()> {
    let list = host.store.populations().await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        out!(
            "no populations; create one with `folkhub populations add NAME --purpose P --clients A,B`"
        );
    }
    for p in list {
        out!(
            "{}: {} members, clients {} — {}",
            p.name,
            p.members,
            if p.clients.is_empty() {
                "none".into()
            } else {
                p.clients.join(", ")
            },
            p.purpose
        );
    }
    Ok(())
}

pub async fn grant(host: &Host, name: &str, client: &str, allow: bool) -> anyhow::Result<()> {
    if allow {
        check_set(host, &FollowSet::Client(client.into())).await?;
    }
    host.store.population_client(name, client, allow).await?;
    out!(
        "{client} {} population {name}",
        if allow {
            "may now use"
        } else {
            "may no longer use"
        }
    );
    Ok(())
}

pub async fn drop_population(host: &Host, name: &str) -> anyhow::Result<()> {
    if !host.store.drop_population(name).await? {
        bail!("no population named {name:?} (see `folkhub populations list`)");
    }
    out!("population {name} deleted; persons nobody else follows go at the next retention sweep");
    Ok(())
}
