//! `folkhub jobs list | show <run> | pages <connector>` (the run log book
//! and the feed-page log book) and `folkhub costs`.

use anyhow::bail;

use folkhub_app::Host;

pub async fn list(host: &Host, limit: u32) -> anyhow::Result<()> {
    let runs = host.store().runs(limit).await?;
    if runs.is_empty() {
        out!("no runs yet");
    }
    out!(
        "{:>5}  {:<8} {:<14} {:<10} {:<20} {:>8} {:>8} {:>8} {:>7} {:>6}",
        "RUN",
        "JOB",
        "CONNECTOR",
        "STATUS",
        "STARTED",
        "SECONDS",
        "FETCHED",
        "CHANGED",
        "CALLS",
        "ERRORS"
    );
    let hosts = runs.iter().any(|r| r.host.is_some());
    for r in runs {
        let seconds = r
            .finished_at
            .map(|f| {
                format!(
                    "{:.1}",
                    (f - r.started_at).num_milliseconds() as f64 / 1000.0
                )
            })
            .unwrap_or_else(|| "-".into());
        out!(
            "{:>5}  {:<8} {:<14} {:<10} {:<20} {:>8} {:>8} {:>8} {:>7} {:>6}",
            r.id,
            r.job,
            r.connector.as_deref().unwrap_or("-"),
            r.status.as_str(),
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            seconds,
            r.counts.fetched,
            r.counts.changed,
            r.counts.upstream_calls,
            r.counts.errors
        );
        if hosts {
            out!("       on {}", r.host.as_deref().unwrap_or("-"));
        }
    }
    Ok(())
}

/// The feed-page log book of a connector: every page of its change feed
/// applied, from which cursor to which, by which host and run (several
/// hosts: each page appears once).
pub async fn pages(host: &Host, connector: &str, limit: usize) -> anyhow::Result<()> {
    let pages = host.store().feed_pages(connector).await?;
    if pages.is_empty() {
        out!(
            "no feed pages of {connector} in the log book (it records pages when several hosts share a PostgreSQL store)"
        );
        return Ok(());
    }
    out!(
        "{:<20} {:>14} {:>14} {:>8} {:>6}  HOST",
        "APPLIED",
        "FROM",
        "TO",
        "PERSONS",
        "RUN"
    );
    for p in pages.iter().skip(pages.len().saturating_sub(limit)) {
        out!(
            "{:<20} {:>14} {:>14} {:>8} {:>6}  {}",
            p.at.format("%Y-%m-%d %H:%M:%S"),
            if p.from.is_empty() {
                "(start)"
            } else {
                &p.from
            },
            p.to,
            p.persons,
            p.run.map_or("-".into(), |r| r.to_string()),
            p.host
        );
    }
    Ok(())
}

pub async fn show(host: &Host, id: i64) -> anyhow::Result<()> {
    let Some(run) = host
        .store()
        .runs(u32::MAX)
        .await?
        .into_iter()
        .find(|r| r.id == id)
    else {
        bail!("there is no run {id}; see `folkhub jobs list`");
    };
    out!("{}", serde_json::to_string_pretty(&run)?);
    Ok(())
}

pub async fn costs(host: &Host, month: Option<&str>) -> anyhow::Result<()> {
    if let Some(m) = month
        && chrono::NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").is_err()
    {
        bail!("--month {m:?} is not YYYY-MM");
    }
    let rows = host.store().costs(month).await?;
    if rows.is_empty() {
        out!(
            "no register calls recorded{}",
            month.map(|m| format!(" for {m}")).unwrap_or_default()
        );
        return Ok(());
    }
    out!(
        "{:<8} {:<14} {:<8} {:>8} {:>10}",
        "MONTH",
        "CONNECTOR",
        "JOB",
        "CALLS",
        "COST"
    );
    let mut totals: std::collections::BTreeMap<(String, String), (u64, f64)> = Default::default();
    for r in &rows {
        out!(
            "{:<8} {:<14} {:<8} {:>8} {:>10.2}",
            r.month,
            r.connector,
            r.job,
            r.calls,
            r.cost
        );
        let t = totals
            .entry((r.month.clone(), r.connector.clone()))
            .or_default();
        t.0 += r.calls;
        t.1 += r.cost;
    }
    out!();
    for ((m, c), (calls, cost)) in totals {
        let costs = host.config.connector(&c).costs;
        let total = cost + costs.monthly_fee;
        let budget = costs
            .monthly_budget
            .map(|b| {
                format!(
                    " of a {b:.2} budget ({:.0} %)",
                    total / b.max(f64::MIN_POSITIVE) * 100.0
                )
            })
            .unwrap_or_default();
        out!(
            "{m} {c}: {calls} calls, {cost:.2} + monthly fee {:.2} = {total:.2}{budget}",
            costs.monthly_fee
        );
    }
    Ok(())
}
