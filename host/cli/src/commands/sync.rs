//! `folkhub sync <connector> --full | --changes | --ids FILE | --guardians AGES`:
//! a run of [`folkhub_app::sync`] with progress on stderr and the summary
//! on stdout.

use std::io::Write;
use std::time::Instant;

use anyhow::bail;
use folkhub_app::Host;
use folkhub_app::sync::{Guardians, Mode};
use folkhub_sync::Progress;

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

/// Runs a sync, showing progress, and prints its summary.
pub async fn run(host: &Host, connector: &str, mode: Mode) -> anyhow::Result<()> {
    let started = Instant::now();
    let progress = progress(started);
    let summary = {
        let _run = crate::output::InRun::start();
        folkhub_app::sync::run_until(
            host,
            connector,
            mode,
            Some(&progress),
            None,
            crate::output::stop_signal(),
        )
        .await
    };
    let _ = writeln!(std::io::stderr());
    print_summary(&summary?, started);
    Ok(())
}

/// `--guardians AGES`: looks up the guardians the store lacks.
pub async fn guardians(host: &Host, connector: &str, ages: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let progress = progress(started);
    match folkhub_app::sync::guardians(host, connector, ages, Some(&progress), None).await? {
        Guardians::AllStored => out!("every guardian of persons aged {ages} is stored"),
        Guardians::Ran(summary) => {
            let _ = writeln!(std::io::stderr());
            print_summary(&summary, started);
        }
    }
    Ok(())
}

/// Persons done (of how many), rate and time left, on one line of stderr.
fn progress(started: Instant) -> impl Fn(Progress) + Sync {
    move |p: Progress| {
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
    }
}

fn print_summary(summary: &folkhub_sync::Summary, started: Instant) {
    let c = &summary.counts;
    out!(
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
    if c.unfollowed > 0 {
        out!(
            "  {} feed events about persons nobody follows skipped without a lookup (follow.scope = \"followed\")",
            c.unfollowed
        );
    }
    for e in summary.errors.iter().take(10) {
        out!("  error: {e}");
    }
    if !summary.identity_conflicts.is_empty() {
        out!(
            "  {} identity conflicts listed for review",
            summary.identity_conflicts.len()
        );
    }
}
