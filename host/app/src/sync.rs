//! One sync run of a connector: the release loaded as installed now, the
//! circuit breaker and the budget consulted, the run made, and the breaker
//! updated from its outcome. `folkhub sync`, scheduled jobs and the API's
//! manual runs all come through here.

use anyhow::bail;
use folkhub_store::{Jobs, Persons, RunStatus};
use folkhub_sync::{Options, Progress};
use tracing::Instrument;

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
    /// Look up these IDs now (those answered within the cache TTL are
    /// skipped).
    Ids(Vec<String>),
    /// Look up these IDs now, past the cache (a client's fetch or refresh).
    Fresh(Vec<String>),
}

impl Mode {
    /// The run log's job name for the mode.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Full | Mode::Area(_) => "full",
            Mode::Changes => "changes",
            Mode::Ids(_) | Mode::Fresh(_) => "lookup",
        }
    }
}

/// Runs a sync now, without progress reports, under the mode's name.
pub async fn run(
    host: &Host,
    connector: &str,
    mode: Mode,
) -> anyhow::Result<folkhub_sync::Summary> {
    run_as(host, connector, mode, None, None).await
}

/// A progress callback of a run (persons done, of how many).
pub type OnProgress<'a> = &'a (dyn Fn(Progress) + Sync);

/// As [`run`], reporting progress, and recorded in the run log and cost
/// ledger under `job` (a scheduled job's name) instead of the mode. The
/// release is the one installed when the run starts: an upgrade or
/// rollback made meanwhile (by any host) takes effect at the next run.
pub async fn run_as(
    host: &Host,
    connector: &str,
    mode: Mode,
    progress: Option<OnProgress<'_>>,
    job: Option<&str>,
) -> anyhow::Result<folkhub_sync::Summary> {
    let span = tracing::info_span!(
        "run",
        connector,
        job = job.unwrap_or(mode.name()),
        release = tracing::field::Empty
    );
    run_in_span(host, connector, mode, progress, job)
        .instrument(span)
        .await
}

/// As [`run_as`], stopped when `cancel` completes (Ctrl-C, a terminal
/// or pipe gone): the run ends at once, what it committed stays (a feed
/// page and its cursor are stored together, so nothing is half applied),
/// and the run log records it as cancelled with the reason `cancel` gives
/// instead of leaving it running.
pub async fn run_until(
    host: &Host,
    connector: &str,
    mode: Mode,
    progress: Option<OnProgress<'_>>,
    job: Option<&str>,
    cancel: impl std::future::Future<Output = String>,
) -> anyhow::Result<folkhub_sync::Summary> {
    let started = chrono::Utc::now();
    let name = job.unwrap_or(mode.name()).to_string();
    tokio::select! {
        outcome = run_as(host, connector, mode, progress, job) => outcome,
        why = cancel => {
            let ended = cancelled(host, &name, connector, started, &why).await?;
            bail!(
                "{connector}: {why}: the run stopped{}; what it stored before stays, and the next run continues from there",
                if ended.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (run {} recorded as cancelled)",
                        ended.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
                    )
                }
            )
        }
    }
}

/// Records this host's runs of `job` on `connector` started since
/// `since` and still running as cancelled. Returns their ids.
async fn cancelled(
    host: &Host,
    job: &str,
    connector: &str,
    since: chrono::DateTime<chrono::Utc>,
    why: &str,
) -> anyhow::Result<Vec<i64>> {
    let me = host.cluster_name();
    let mut ended = Vec::new();
    for run in host.store.open_runs(job).await? {
        let ours = run.connector.as_deref() == Some(connector)
            && run.started_at >= since - chrono::Duration::seconds(1)
            && (run.host.is_none() || run.host == me);
        if !ours {
            continue;
        }
        let mut errors = run.errors.clone();
        errors.push(format!("cancelled: {why}"));
        host.store
            .finish_run(run.id, RunStatus::Cancelled, &run.counts, &errors)
            .await?;
        tracing::warn!(run = run.id, connector, "cancelled: {why}");
        ended.push(run.id);
    }
    Ok(ended)
}

async fn run_in_span(
    host: &Host,
    connector: &str,
    mode: Mode,
    progress: Option<OnProgress<'_>>,
    job: Option<&str>,
) -> anyhow::Result<folkhub_sync::Summary> {
    let store = host.store.as_ref();
    let connector = host.load(connector).await?;
    tracing::Span::current().record("release", connector.version.as_str());
    let breaker = store.breaker(&connector.id).await?;
    let now = chrono::Utc::now();
    if let Some(until) = breaker.open_until
        && until > now
    {
        // Refused runs go into the log book too.
        let run = host
            .store()
            .start_run(
                job.unwrap_or(mode.name()),
                Some(&connector.id),
                Some(&connector.version),
            )
            .await?;
        let message = format!(
            "circuit open: {} failed runs in a row (last: {}); no calls to the register until {}",
            breaker.failures,
            breaker.last_error.as_deref().unwrap_or("?"),
            until.format("%Y-%m-%d %H:%M:%S UTC")
        );
        host.store
            .as_ref()
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
            tracing::warn!(connector = %connector.id, "{}", state.message);
            crate::webhooks::event(
                host,
                &format!("budget:{}:{}", connector.id, host.today().format("%Y-%m")),
                "budget.warning",
                serde_json::json!({
                    "connector": connector.id,
                    "spent": state.spent,
                    "budget": state.budget,
                    "message": state.message,
                }),
            )
            .await;
        }
    }
    let cluster = host.cluster_name();
    let options = Options {
        progress,
        cost_per_call: per_call,
        cache_ttl: match mode {
            Mode::Fresh(_) => None,
            _ => host
                .config
                .connector(&connector.id)
                .cache_ttl
                .as_deref()
                .and_then(folkhub_manifest::config::parse_ttl),
        },
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
        followed_only: host.config.follow.followed_only(),
        guardians: host.config.follow.guardians,
        ..Options::default()
    };
    let summary = match &mode {
        Mode::Full | Mode::Area(_) => {
            let schemes = host.schemes(&connector);
            let schemes: Vec<&str> = schemes.iter().map(String::as_str).collect();
            folkhub_sync::full(host.store.as_ref(), &connector, &schemes, &options).await?
        }
        Mode::Changes => folkhub_sync::changes(host.store.as_ref(), &connector, &options).await?,
        Mode::Ids(ids) | Mode::Fresh(ids) => {
            folkhub_sync::lookup(host.store.as_ref(), &connector, ids, &options).await?
        }
    };
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
    let store = host.store.as_ref();
    let mut wanted = std::collections::BTreeSet::new();
    let mut after = 0;
    loop {
        let page = store.persons_after(after, 1000).await?;
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
        if store.person(&id).await?.is_none() {
            missing.push(id);
        }
    }
    Ok(missing)
}

/// What a guardians run did.
#[derive(Debug)]
pub enum Guardians {
    /// Every guardian of persons of these ages is stored: nothing to ask.
    AllStored,
    /// The missing guardians were looked up.
    Ran(folkhub_sync::Summary),
}

/// Looks up the guardians of persons aged `ages` that the store does not
/// hold yet (`folkhub sync --guardians` and a `guardians` job).
pub async fn guardians(
    host: &Host,
    connector: &str,
    ages: &str,
    progress: Option<OnProgress<'_>>,
    job: Option<&str>,
) -> anyhow::Result<Guardians> {
    let missing = missing_guardians(host, ages).await?;
    if missing.is_empty() {
        return Ok(Guardians::AllStored);
    }
    run_as(host, connector, Mode::Ids(missing), progress, job)
        .await
        .map(Guardians::Ran)
}
