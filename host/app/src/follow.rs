//! Follow sets from the operator's side: IDs parsed into members, and the
//! retention sweep (`folkhub follows sweep`, a `retention` job) that
//! deletes persons nobody has followed for `follow.retention`.

use anyhow::{Context, bail};
use folkhub_store::{FollowChange, FollowId, FollowSet, Follows, Jobs, RetentionReport, RunStatus};

use crate::host::Host;

/// Parses IDs as a client gives them (`no:`, `se:`, `fi:` prefixes
/// allowed) into follow-set members; every bad one is named.
pub fn parse_ids(ids: &[String]) -> anyhow::Result<Vec<FollowId>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut bad = Vec::new();
    for (i, raw) in ids.iter().enumerate() {
        match folkhub_core::ids::parse(raw) {
            Ok(id) => out.push(FollowId {
                scheme: id.scheme.as_str().into(),
                value: id.value,
            }),
            Err(e) => bad.push(format!("#{}: {e}", i + 1)),
        }
    }
    if !bad.is_empty() {
        bail!(
            "{} of {} IDs are not person IDs, nothing was changed: {}",
            bad.len(),
            ids.len(),
            bad.join("; ")
        );
    }
    Ok(out)
}

/// Adds IDs to a set, or removes them.
pub async fn change(
    host: &Host,
    set: &FollowSet,
    ids: &[String],
    remove: bool,
    by: &str,
) -> anyhow::Result<FollowChange> {
    let parsed = parse_ids(ids)?;
    let store = host.store.as_ref();
    Ok(if remove {
        let values: Vec<String> = parsed.into_iter().map(|i| i.value).collect();
        store.unfollow(set, &values).await?
    } else {
        store.follow(set, &parsed, by).await?
    })
}

/// Runs the retention sweep now and records it in the run log as job
/// `job`. Refused in the national scope: a mirror deletes nobody.
pub async fn retention(host: &Host, job: &str) -> anyhow::Result<(i64, RetentionReport)> {
    if !host.config.follow.followed_only() {
        bail!(
            "follow.scope is \"national\": the store mirrors the registers and the retention sweep deletes nobody; set follow.scope = \"followed\" in folkhub.toml to keep only followed persons"
        );
    }
    let store = host.store.as_ref();
    let run = store.start_run(job, None, None).await?;
    let outcome = store
        .sweep_unfollowed(host.now(), host.config.follow.retention(), job)
        .await
        .context("the retention sweep");
    let (status, counts, errors) = match &outcome {
        Ok(report) => (
            RunStatus::Succeeded,
            folkhub_store::RunCounts {
                deleted: report.deleted.len() as u64,
                total: report.deleted.len() as u64 + report.waiting,
                ..Default::default()
            },
            vec![],
        ),
        Err(e) => (
            RunStatus::Failed,
            folkhub_store::RunCounts::default(),
            vec![format!("{e:#}")],
        ),
    };
    store.finish_run(run, status, &counts, &errors).await?;
    if let Ok(report) = &outcome {
        for d in &report.deleted {
            tracing::info!(
                person = d.person_key,
                deletion = d.id,
                "deleted: nobody followed the person since {}",
                d.unfollowed_since.format("%Y-%m-%d")
            );
        }
    }
    Ok((run, outcome?))
}
