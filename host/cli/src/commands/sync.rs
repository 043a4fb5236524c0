//! `folkhub sync <connector> --full | --changes | --ids FILE`.

use std::io::Write;
use std::time::Instant;

use anyhow::bail;
use folkhub_store::RunStatus;
use folkhub_sync::{Options, Progress};

use crate::host::Host;

/// What a sync run does.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Follow the feed, then refresh every other known person.
    Full,
    /// Follow the feed, then refresh the known persons of one municipality.
    Area(String),
    /// Follow the feed from the stored cursor.
    Changes,
    /// Look up these IDs now.
    Ids(Vec<String>),
}

impl Mode {
    /// The run log's job name for the mode.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Full | Mode::Area(_) => "full",
            Mode::Changes => "changes",
            Mode::Ids(_) => "lookup",
        }
    }
}

/// Reads IDs, one per line (`-` = stdin); blank lines and `#` comments are
/// skipped, and an `se:`/`fi:`/`no:` prefix (for IDs that read validly in
/// two countries) is dropped.
pub fn read_ids(file: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use anyhow::Context as _;
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading IDs from stdin")?
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("reading IDs from {}", file.display()))?
    };
    let ids: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let lower = l.to_ascii_lowercase();
            match ["se:", "fi:", "no:"].iter().find(|p| lower.starts_with(*p)) {
                Some(p) => l[p.len()..].to_string(),
                None => l.to_string(),
            }
        })
        .collect();
    if ids.is_empty() {
        bail!("{} holds no IDs (one per line)", file.display());
    }
    Ok(ids)
}

pub async fn run(
    host: &Host,
    connector: &str,
    mode: Mode,
    quiet: bool,
) -> anyhow::Result<folkhub_sync::Summary> {
    run_as(host, connector, mode, quiet, None).await
}

/// As [`run`], recorded in the run log and cost ledger under `job` (a
/// scheduled job's name) instead of the mode.
pub async fn run_as(
    host: &Host,
    connector: &str,
    mode: Mode,
    quiet: bool,
    job: Option<&str>,
) -> anyhow::Result<folkhub_sync::Summary> {
    let connector = host.load(connector).await?;
    let breaker = host.store().breaker(&connector.id).await?;
    let now = chrono::Utc::now();
    if let Some(until) = breaker.open_until
        && until > now
    {
        // Refused runs go into the log book too.
        let run = host
            .store()
            .start_run(job.unwrap_or(mode.name()), Some(&connector.id))
            .await?;
        let message = format!(
            "circuit open: {} failed runs in a row (last: {}); no calls to the register until {}",
            breaker.failures,
            breaker.last_error.as_deref().unwrap_or("?"),
            until.format("%Y-%m-%d %H:%M:%S UTC")
        );
        host.store()
            .finish_run(
                run,
                RunStatus::Cancelled,
                &folkhub_store::RunCounts::default(),
                std::slice::from_ref(&message),
            )
            .await?;
        bail!("{}: {message}", connector.id);
    }
    let per_call = host.cost_per_call(&connector);
    if let Some(state) = host.budget(&connector.id).await? {
        if state.stop && matches!(mode, Mode::Full | Mode::Area(_)) {
            bail!(
                "{}: {}; the full refresh is not run (connectors.{}.costs.stop_at_budget). Feeds and lookups still run; raise the budget or wait for next month",
                connector.id,
                state.message,
                connector.id
            );
        }
        if state.warn {
            eprintln!("warning: {}: {}", connector.id, state.message);
        }
    }
    let started = Instant::now();
    let progress = move |p: Progress| {
        let rate = p.done as f64 / started.elapsed().as_secs_f64().max(0.001);
        let mut err = std::io::stderr();
        let _ = match p.total {
            Some(total) if total > 0 && p.done > 0 => {
                let eta = (total.saturating_sub(p.done)) as f64 / rate.max(0.001);
                write!(
                    err,
                    "\r  {} / {} persons ({:.0}/s, ETA {:.0}s)   ",
                    p.done, total, rate, eta
                )
            }
            _ => write!(err, "\r  {} persons ({:.0}/s)   ", p.done, rate),
        };
    };
    let cluster = host.cluster_name();
    let options = Options {
        progress: if quiet { None } else { Some(&progress) },
        cost_per_call: per_call,
        cache_ttl: host
            .config
            .connector(&connector.id)
            .cache_ttl
            .as_deref()
            .and_then(folkhub_manifest::config::parse_ttl),
        now: host
            .today
            .and_then(|d| d.and_hms_opt(12, 0, 0))
            .map(|t| t.and_utc()),
        job,
        cluster: cluster.as_deref(),
        lease: host.lease(),
        area: match &mode {
            Mode::Area(area) => Some(area.as_str()),
            _ => None,
        },
        ..Options::default()
    };
    let summary = match &mode {
        Mode::Full | Mode::Area(_) => {
            let schemes = host.schemes(&connector);
            let schemes: Vec<&str> = schemes.iter().map(String::as_str).collect();
            folkhub_sync::full(host.store(), &connector, &schemes, &options).await?
        }
        Mode::Changes => folkhub_sync::changes(host.store(), &connector, &options).await?,
        Mode::Ids(ids) => folkhub_sync::lookup(host.store(), &connector, ids, &options).await?,
    };
    if !quiet {
        eprintln!();
        let c = &summary.counts;
        println!(
            "run {}: {} in {:.1}s — fetched {}, created {}, changed {}, unchanged {}, not found {}, feed events {}, register calls {}, from cache {}, errors {}",
            summary.run,
            summary.status.as_str(),
            started.elapsed().as_secs_f64(),
            c.fetched,
            c.created,
            c.changed,
            c.unchanged,
            c.not_found,
            c.feed_events,
            c.upstream_calls,
            c.cached,
            c.errors
        );
        for e in summary.errors.iter().take(10) {
            println!("  error: {e}");
        }
        if !summary.identity_conflicts.is_empty() {
            println!(
                "  {} identity conflicts listed for review",
                summary.identity_conflicts.len()
            );
        }
    }
    host.after_run(&connector.id, &summary).await?;
    if summary.status == RunStatus::Failed {
        bail!(
            "the sync failed: {}",
            summary
                .errors
                .last()
                .map(String::as_str)
                .unwrap_or("see `folkhub jobs`")
        );
    }
    Ok(summary)
}

/// The IDs of guardians (parental responsibility and guardianship) of the
/// persons aged `ages` (`MIN-MAX` years, by the host's clock) that the store
/// does not hold yet: what a guardian-linking job looks up.
pub async fn missing_guardians(host: &Host, ages: &str) -> anyhow::Result<Vec<String>> {
    let Some((min, max)) = ages
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?)))
        .filter(|(a, b)| a <= b)
    else {
        bail!("ages {ages:?} is not MIN-MAX in years, e.g. 6-19");
    };
    let today = host.today();
    let mut wanted = std::collections::BTreeSet::new();
    let mut after = 0;
    loop {
        let page = host.store().persons_after(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.key;
        for p in &page {
            let Some(born) = p
                .record
                .fields
                .get("birth.date")
                .and_then(|f| f.value.as_str())
                .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            else {
                continue;
            };
            let Some(age) = today.years_since(born) else {
                continue;
            };
            if age < min || age > max {
                continue;
            }
            for path in [
                "relations.parental-responsibility",
                "relations.guardianship",
            ] {
                for r in p
                    .record
                    .fields
                    .get(path)
                    .and_then(|f| f.value.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(id) = r.get("id").and_then(|v| v.as_str()) {
                        wanted.insert(id.to_string());
                    }
                }
            }
        }
    }
    let mut missing = Vec::new();
    for id in wanted {
        if host.store().person(&id).await?.is_none() {
            missing.push(id);
        }
    }
    Ok(missing)
}
