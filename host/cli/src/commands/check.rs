//! `folkhub connectors check`: a connector component held to the contract
//! against the simulator of its register, before it is shipped.
//!
//! It installs the component on a throwaway host (SQLite in a temporary
//! directory) wired to an in-process simulator of the five registers, the
//! way an operator's host would be wired to the real ones, and runs what
//! the component declares: lookups found, not found and malformed, a full
//! batch, feed paging and resume, watch, enrichment and search. Each check
//! says what it did and how long the calls took. A trap, a call past the
//! deadline or the memory cap, or a request outside the granted hosts fails
//! the check it happened in.
//!
//! A register without a simulator here (a vendor's own register) is stood
//! in for by the answers its vendor recorded (`--recorded`, see
//! `recorded.rs`): lookups found, not found and malformed, a full batch and
//! the feed run against them. Without a recording such a connector is
//! checked as far as the component itself goes (contract, describe,
//! malformed input).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use folkhub_core::contract::{ChangePage, ConnectorError, LookupOutcome, SearchOutcome};
use folkhub_manifest::registry::Upstream;
use folkhub_manifest::{Config, Manifest, Release};
use folkhub_runtime::CallError;
use serde::Serialize;

use super::recorded::{Recording, Replay};

/// Registers the simulator serves, by connector id.
const SIMULATED: &[&str] = &["folkeregister", "krr", "kartverket", "spar", "dvv"];

/// One check's result.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub check: String,
    pub passed: bool,
    pub detail: String,
    /// Time in the connector's calls, milliseconds.
    pub ms: u128,
}

/// The report of one component.
#[derive(Debug, Serialize)]
pub struct Report {
    pub connector: String,
    pub version: String,
    pub contract: String,
    pub sha256: String,
    pub checks: Vec<Outcome>,
}

impl Report {
    fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !c.passed).count()
    }
}

/// What `folkhub connectors check` was asked to check.
pub enum Target<'a> {
    /// A component, with its manifest entry when there is one.
    Component {
        wasm: &'a Path,
        entry: Option<&'a Path>,
        /// The simulated register to run it against when its id is not a
        /// register's (`acme-krr` speaks to KRR).
        register: Option<&'a str>,
        /// Recorded answers of its register, instead of a simulator.
        recorded: Option<&'a Path>,
    },
    /// Every release of a registry manifest.
    Registry(&'a Path),
}

pub async fn run(target: Target<'_>, json: bool) -> anyhow::Result<()> {
    let work = tempfile::tempdir().context("a temporary directory")?;
    let mut recording = None;
    let (candidates, register) = match target {
        Target::Registry(path) => {
            let manifest = Manifest::load(path)?;
            let all = manifest
                .releases
                .iter()
                .map(|r| (r.clone(), manifest.artifact_path(r)))
                .collect::<Vec<_>>();
            (all, None)
        }
        Target::Component {
            wasm,
            entry,
            register,
            recorded,
        } => {
            if let Some(path) = recorded {
                recording = Some(std::sync::Arc::new(Recording::load(path)?));
            }
            if let Some(r) = register
                && !SIMULATED.contains(&r)
            {
                bail!(
                    "--register {r}: the simulated registers are {}",
                    SIMULATED.join(", ")
                );
            }
            (
                vec![(release_for(wasm, entry)?, wasm.to_path_buf())],
                register.map(String::from),
            )
        }
    };
    let sim = Sim::start(work.path()).await?;
    let replay = match &recording {
        Some(r) => Some((r.clone(), Replay::start(r.clone()).await?)),
        None => None,
    };
    let recorded = replay.as_ref().map(|(r, replay)| (&**r, replay));
    let mut reports = Vec::new();
    for (n, (release, wasm)) in candidates.into_iter().enumerate() {
        let dir = work.path().join(format!("{n}"));
        let report = check_one(&sim, &dir, release, &wasm, register.as_deref(), recorded).await;
        if !json {
            print_report(&report);
        }
        reports.push(report);
    }
    sim.sim.stop().await;
    if json {
        out!("{}", serde_json::to_string_pretty(&reports)?);
    }
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| r.failed() > 0)
        .map(|r| format!("{} {}", r.connector, r.version))
        .collect();
    if !failed.is_empty() {
        bail!("connectors check failed for {}", failed.join(", "));
    }
    Ok(())
}

fn print_report(report: &Report) {
    out!(
        "{} {} (contract {}, sha256 {})",
        report.connector,
        report.version,
        report.contract,
        report.sha256
    );
    for c in &report.checks {
        out!(
            "  {}  {:<38} {:>6} ms  {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.check,
            c.ms,
            c.detail
        );
    }
    let failed = report.failed();
    out!(
        "  {}: {} passed, {failed} failed\n",
        if failed == 0 { "PASS" } else { "FAIL" },
        report.checks.len() - failed
    );
}

/// The release a component is checked as: its manifest entry, or one made
/// from what it says of itself.
fn release_for(wasm: &Path, entry: Option<&Path>) -> anyhow::Result<Release> {
    if let Some(entry) = entry {
        let text = std::fs::read_to_string(entry)
            .with_context(|| format!("reading {}", entry.display()))?;
        // A manifest entry as the vendor would add it: one [[release]],
        // with or without `schema`.
        let text = if text.contains("[[release]]") {
            text
        } else {
            format!("[[release]]\n{text}")
        };
        let manifest = Manifest::parse(&text, &entry.display().to_string(), PathBuf::new())?;
        let [release] = manifest.releases.as_slice() else {
            bail!(
                "{} holds {} releases; give the entry of this component only",
                entry.display(),
                manifest.releases.len()
            );
        };
        return Ok(release.clone());
    }
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let runtime = folkhub_runtime::Runtime::new(None, folkhub_runtime::Limits::default())?;
    let contract = runtime
        .contract_of(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", wasm.display()))?;
    // Provisional: describe() fills in what it is once it is linked.
    Ok(Release {
        connector: "unnamed".into(),
        version: "0.0.0".into(),
        contract: contract.to_string(),
        artifact: String::new(),
        sha256: folkhub_runtime::engine::sha256_hex(&bytes),
        upstream: Upstream {
            system: "unknown".into(),
            version: String::new(),
        },
        outbound_hosts: [
            "{base-url}",
            "{avisering-url}",
            "{changes-url}",
            "{klass-url}",
        ]
        .iter()
        .map(|h| h.to_string())
        .collect(),
        fields: vec![],
        capabilities: vec![],
        id_schemes: vec![],
        credentials: "none".into(),
        cost_per_call: 0.0,
        published: chrono::Utc::now().date_naive(),
        notes: String::new(),
        breaking: None,
        publisher: None,
        signature: None,
        upgrades_from: None,
        host: None,
    })
}

/// The simulator and the Maskinporten key its token endpoint trusts.
struct Sim {
    sim: folkhub_sim::Simulator,
    key_file: PathBuf,
}

const CLIENT_ID: &str = "folkhub-connectors-check";

/// Changes the simulator applies before the checks run.
const FEED_CHANGES: u64 = 300;

impl Sim {
    async fn start(dir: &Path) -> anyhow::Result<Sim> {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .context("generating the test client's key")?;
        let key_file = dir.join("maskinporten-key.pem");
        std::fs::write(&key_file, key.to_pkcs8_pem(LineEnding::LF)?.as_bytes())?;
        let sim = folkhub_sim::Simulator::start(folkhub_sim::Config {
            seed: 42,
            count: 400,
            clients: vec![folkhub_sim::Client {
                client_id: CLIENT_ID.into(),
                public_key: key.to_public_key(),
                scopes: folkhub_sim::all_scopes(),
            }],
            ..Default::default()
        })
        .await
        .context("starting the register simulator")?;
        // Registers that changed since the population was made, so every
        // feed has changes to page through.
        sim.advance(FEED_CHANGES).await;
        Ok(Sim { sim, key_file })
    }
}

/// Timing of the calls a check makes.
struct Clock(u128);

impl Clock {
    async fn time<T>(&mut self, call: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let out = call.await;
        self.0 += start.elapsed().as_millis();
        out
    }
}

fn pass(check: &str, detail: impl Into<String>, clock: &Clock) -> Outcome {
    Outcome {
        check: check.into(),
        passed: true,
        detail: detail.into(),
        ms: clock.0,
    }
}

fn fail(check: &str, detail: impl Into<String>, clock: &Clock) -> Outcome {
    Outcome {
        check: check.into(),
        passed: false,
        detail: detail.into(),
        ms: clock.0,
    }
}

/// A call error as a check's failure: traps, deadlines, memory and denied
/// requests are named as such.
fn call_failure(e: &CallError) -> String {
    match e {
        CallError::Connector {
            error: ConnectorError::Denied(why),
            ..
        } => format!("a request left the granted hosts: {why}"),
        other => other.to_string(),
    }
}

async fn check_one(
    sim: &Sim,
    dir: &Path,
    mut release: Release,
    wasm: &Path,
    register: Option<&str>,
    recorded: Option<(&Recording, &Replay)>,
) -> Report {
    let mut report = Report {
        connector: release.connector.clone(),
        version: release.version.clone(),
        contract: release.contract.clone(),
        sha256: release.sha256.clone(),
        checks: Vec::new(),
    };
    let clock = Clock(0);
    // The artifact is the one the entry names.
    let bytes = match std::fs::read(wasm) {
        Ok(b) => b,
        Err(e) => {
            report
                .checks
                .push(fail("artifact", format!("{}: {e}", wasm.display()), &clock));
            return report;
        }
    };
    let digest = folkhub_runtime::engine::sha256_hex(&bytes);
    if digest != release.sha256 {
        report.checks.push(fail(
            "artifact digest",
            format!(
                "the entry says sha256 {}, the file has {digest}",
                release.sha256
            ),
            &clock,
        ));
        return report;
    }
    report.checks.push(pass(
        "artifact digest",
        format!("{} bytes", bytes.len()),
        &clock,
    ));
    // A provisional release takes its id, fields and capabilities from
    // describe() (checked below against nothing but the catalogue).
    if release.connector == "unnamed" {
        match describe_only(&release, wasm).await {
            Ok(d) => {
                release.connector = d.source.clone();
                release.version = "0.0.0".into();
                release.fields = d.fields.clone();
                release.capabilities = d.capabilities.clone();
                release.upstream.version = d.upstream_versions.first().cloned().unwrap_or_default();
                let speaks = register.unwrap_or(&d.source);
                release.id_schemes = schemes_of(speaks);
                release.credentials = credentials_of(speaks).into();
                report.connector = release.connector.clone();
                report.version = release.version.clone();
            }
            Err(e) => {
                report.checks.push(fail("describe", e, &clock));
                return report;
            }
        }
    }
    let register = register.unwrap_or(&release.connector).to_string();
    if recorded.is_some() {
        // The recording stands in for the register and asks for no
        // credentials; the entry's are not exercised here.
        release.credentials = "none".into();
    }
    let host = match host_for(sim, dir, &release, &bytes, &register, recorded).await {
        Ok(h) => h,
        Err(e) => {
            report
                .checks
                .push(fail("host setup", format!("{e:#}"), &clock));
            return report;
        }
    };
    // Install: signature (reported, not required here), contract,
    // digest, link, and that the component is the connector it says.
    let trusted = folkhub_manifest::config::RegistryConfig::default().trusted_keys;
    use folkhub_manifest::signing::Unverified;
    let signature = match folkhub_manifest::signing::verify(&release, &trusted) {
        Ok(()) => "signed by the folkhub project".to_string(),
        Err(Unverified::Unsigned) => "not signed yet (`folkhub releases sign`)".to_string(),
        Err(Unverified::Untrusted(name)) => {
            format!("signed by {name:?} (operators must trust its key)")
        }
        Err(e) => format!("signature: {e}"),
    };
    let mut clock = Clock(0);
    match clock
        .time(host.install(
            &release.connector,
            Some(&release.version),
            false,
            "connectors check",
            "check",
        ))
        .await
    {
        Ok(installed) => report.checks.push(pass(
            "install and negotiate",
            format!("contract {}; {signature}", installed.contract),
            &clock,
        )),
        Err(e) => {
            report
                .checks
                .push(fail("install and negotiate", format!("{e:#}"), &clock));
            return report;
        }
    }
    let connector = match host.load(&release.connector).await {
        Ok(c) => c,
        Err(e) => {
            report.checks.push(fail("load", format!("{e:#}"), &clock));
            return report;
        }
    };
    if let Some(d) = &connector.deprecation {
        report.checks.push(pass(
            "contract support",
            format!("deprecated: {d}"),
            &Clock(0),
        ));
    }
    let checks = Checks {
        sim,
        release: &release,
        connector: &connector,
        register: &register,
        recorded,
    };
    report.checks.extend(checks.all().await);
    report
}

async fn describe_only(
    release: &Release,
    wasm: &Path,
) -> Result<folkhub_core::contract::Description, String> {
    let runtime = folkhub_runtime::Runtime::new(None, folkhub_runtime::Limits::default())
        .map_err(|e| e.to_string())?;
    let connector = runtime
        .prepare(release, wasm, folkhub_runtime::ConnectorSettings::default())
        .map_err(|e| e.to_string())?;
    connector.describe().await.map_err(|e| e.to_string())
}

fn schemes_of(source: &str) -> Vec<String> {
    let s: &[&str] = match source {
        "folkeregister" | "krr" | "kartverket" => &["no-fnr", "no-dnr"],
        "spar" => &["se-pnr", "se-snr"],
        "dvv" => &["fi-hetu"],
        _ => &[],
    };
    s.iter().map(|x| x.to_string()).collect()
}

fn credentials_of(source: &str) -> &'static str {
    match source {
        "folkeregister" | "krr" => "maskinporten",
        "spar" => "mtls",
        "dvv" => "basic",
        _ => "none",
    }
}

/// A throwaway host whose registry holds only this release, wired to the
/// simulator as an operator's host is wired to the real registers.
async fn host_for(
    sim: &Sim,
    dir: &Path,
    release: &Release,
    bytes: &[u8],
    register: &str,
    recorded: Option<(&Recording, &Replay)>,
) -> anyhow::Result<folkhub_app::Host> {
    std::fs::create_dir_all(dir.join("artifacts"))?;
    std::fs::write(dir.join("artifacts/component.wasm"), bytes)?;
    let mut entry = release.clone();
    entry.artifact = "artifacts/component.wasm".into();
    let manifest = dir.join("registry-manifest.toml");
    std::fs::write(&manifest, Manifest::text(&[entry])?)?;
    let text = format!(
        r#"
[store]
url = "sqlite://{db}"
[registry]
manifest = "{manifest}"
# The check is about behaviour; the signature is reported on its own.
allow_unsigned = true
[runtime]
cache_dir = "{cache}"
{connectors}"#,
        db = dir.join("check.db").display(),
        manifest = manifest.display(),
        cache = dir.join("cache").display(),
        connectors = sim.sim.host_config(CLIENT_ID, &sim.key_file),
    );
    let mut config = Config::parse(&text, "connectors check")?;
    // A vendor's connector for a simulated register gets that register's
    // settings (hosts, credentials, config).
    if register != release.connector
        && let Some(settings) = config.connectors.get(register).cloned()
    {
        config
            .connectors
            .insert(release.connector.clone(), settings);
    }
    // KRR's v1 releases speak /rest/v1 (their base-url before v2).
    if register == "krr" && release.upstream.version == "v1" {
        config
            .connectors
            .entry(release.connector.clone())
            .or_default()
            .config
            .insert("base-url".into(), format!("{}/rest/v1", sim.sim.base_url()));
    }
    // Recorded answers: the replay server is the register.
    if let Some((recording, replay)) = recorded {
        let c = config
            .connectors
            .entry(release.connector.clone())
            .or_default();
        c.grant_hosts = vec![replay.url()];
        c.allow_private_networks = true;
        c.credentials = None;
        c.config.extend(recording.config.clone());
        c.config.insert(
            "base-url".into(),
            format!("{}{}", replay.url(), recording.base_path),
        );
    }
    folkhub_app::Host::open(config).await
}

struct Checks<'a> {
    sim: &'a Sim,
    release: &'a Release,
    connector: &'a folkhub_runtime::Connector,
    /// The simulated register it speaks to.
    register: &'a str,
    /// Recorded answers standing in for its register.
    recorded: Option<(&'a Recording, &'a Replay)>,
}

impl Checks<'_> {
    fn declares(&self, capability: &str) -> bool {
        self.release.capabilities.iter().any(|c| c == capability)
    }

    async fn all(&self) -> Vec<Outcome> {
        let (described, max_batch) = self.describe().await;
        let mut out = vec![described];
        let recorded = self.recorded.is_some();
        let simulated = SIMULATED.contains(&self.register) && !recorded;
        if self.declares("lookup") {
            out.push(self.malformed_input().await);
            if simulated || recorded {
                out.extend(self.lookups(max_batch).await);
            }
        }
        if (simulated || recorded) && self.declares("change-feed") {
            out.push(self.feed().await);
        }
        if simulated && self.declares("watch") {
            out.push(self.watch().await);
        }
        if simulated && self.declares("enrich") {
            out.push(self.enrich().await);
        }
        if simulated && self.declares("search") {
            out.push(self.search().await);
        }
        // Over nine tenths of the cap on the simulator's small answers, a
        // register's larger ones will reach it.
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let (peak, cap) = (self.connector.memory_peak(), self.connector.memory_limit());
        let detail = format!(
            "the largest linear memory of any call above: {:.1} MiB, of the {:.0} MiB cap",
            mib(peak),
            mib(cap)
        );
        out.push(if peak * 10 <= cap * 9 {
            pass("memory per call", detail, &Clock(0))
        } else {
            fail(
                "memory per call",
                format!("{detail}: too close to it for larger answers; use less memory per call, or ask operators for a higher runtime.memory_limit_mib"),
                &Clock(0),
            )
        });
        if let Some((recording, replay)) = self.recorded {
            let skipped: Vec<&str> = ["watch", "enrich", "search"]
                .into_iter()
                .filter(|c| self.declares(c))
                .collect();
            if !skipped.is_empty() {
                out.push(pass(
                    "not run against recordings",
                    format!("{}: they need a simulated register", skipped.join(", ")),
                    &Clock(0),
                ));
            }
            let unanswered = replay.unanswered();
            out.push(if unanswered.is_empty() {
                pass(
                    "recorded answers cover every request",
                    format!("{} answered every request", recording.file.display()),
                    &Clock(0),
                )
            } else {
                fail(
                    "recorded answers cover every request",
                    format!(
                        "{} has no answer for: {}; record them and check again",
                        recording.file.display(),
                        unanswered.join(", ")
                    ),
                    &Clock(0),
                )
            });
        } else if !simulated {
            out.push(pass(
                "register calls",
                format!(
                    "no simulator for {:?} here (--register names one, or --recorded gives recorded answers): lookups, feed and enrichment were not run",
                    self.register
                ),
                &Clock(0),
            ));
        }
        out
    }

    /// The describe check, and the largest batch the component takes.
    async fn describe(&self) -> (Outcome, u32) {
        let mut clock = Clock(0);
        let d = match clock.time(self.connector.describe()).await {
            Ok(d) => d,
            Err(e) => return (fail("describe", call_failure(&e), &clock), 1),
        };
        let mut problems = Vec::new();
        if d.source != self.release.connector {
            problems.push(format!(
                "source {:?}, the manifest says {:?}",
                d.source, self.release.connector
            ));
        }
        let sorted = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
        if sorted(&d.fields) != sorted(&self.release.fields) {
            problems.push(format!(
                "fields {:?}, the manifest says {:?}",
                d.fields, self.release.fields
            ));
        }
        if sorted(&d.capabilities) != sorted(&self.release.capabilities) {
            problems.push(format!(
                "capabilities {:?}, the manifest says {:?}",
                d.capabilities, self.release.capabilities
            ));
        }
        if !d.upstream_versions.contains(&self.release.upstream.version) {
            problems.push(format!(
                "upstream versions {:?} lack the manifest's {:?}",
                d.upstream_versions, self.release.upstream.version
            ));
        }
        for f in &d.fields {
            if folkhub_core::fields::lookup(f).is_none() {
                problems.push(format!(
                    "{f} is not in the field catalogue (docs/fields.md)"
                ));
            }
        }
        if d.max_batch == 0 {
            problems.push("max-batch 0: no lookup could be made".into());
        }
        let outcome = if problems.is_empty() {
            pass(
                "describe matches the manifest",
                format!(
                    "{} fields, capabilities {}, max-batch {}",
                    d.fields.len(),
                    d.capabilities.join(","),
                    d.max_batch
                ),
                &clock,
            )
        } else {
            fail("describe matches the manifest", problems.join("; "), &clock)
        };
        (outcome, d.max_batch)
    }

    async fn malformed_input(&self) -> Outcome {
        let mut clock = Clock(0);
        let malformed = self.recorded.map_or("12345", |(r, _)| r.malformed.as_str());
        let asked = vec![malformed.to_string()];
        match clock.time(self.connector.lookup(&asked)).await {
            Err(CallError::Connector {
                error: ConnectorError::BadInput(_),
                ..
            }) => pass(
                "lookup: malformed ID",
                "bad-input for the whole call",
                &clock,
            ),
            Ok(results) => match results.as_slice() {
                [r] if matches!(
                    r.outcome,
                    LookupOutcome::Failed(ConnectorError::BadInput(_))
                ) =>
                {
                    pass("lookup: malformed ID", "bad-input for the ID", &clock)
                }
                other => fail(
                    "lookup: malformed ID",
                    format!("{malformed:?} must be bad-input, got {other:?}"),
                    &clock,
                ),
            },
            Err(e) => fail("lookup: malformed ID", call_failure(&e), &clock),
        }
    }

    /// IDs the simulated register knows, in the release's first scheme.
    async fn known_ids(&self) -> Vec<String> {
        if let Some((recording, _)) = self.recorded {
            return recording.known.clone();
        }
        let register = match self.register {
            "kartverket" => "folkeregister",
            other => other,
        };
        let scheme = self.release.id_schemes.first().map(String::as_str);
        self.sim
            .sim
            .truth_for(&[register])
            .await
            .into_iter()
            .filter_map(|t| t.ids.last().cloned())
            .filter(|id| match scheme {
                Some("no-fnr") => id.len() == 11 && !id.starts_with(['4', '5', '6', '7']),
                Some("se-pnr") => id.len() == 12,
                Some("fi-hetu") => id.len() == 11,
                _ => true,
            })
            .collect()
    }

    async fn lookups(&self, max_batch: u32) -> Vec<Outcome> {
        let known = self.known_ids().await;
        let mut out = Vec::new();
        let mut clock = Clock(0);
        let some: Vec<String> = known.iter().take(5).cloned().collect();
        if some.is_empty() {
            out.push(fail(
                "lookup: found",
                "the simulator knows nobody in this scheme",
                &clock,
            ));
            return out;
        }
        match clock.time(self.connector.lookup(&some)).await {
            Ok(results) => {
                let found = results
                    .iter()
                    .filter(|r| matches!(r.outcome, LookupOutcome::Found(_)))
                    .count();
                let answered: BTreeSet<&str> =
                    results.iter().map(|r| r.requested.as_str()).collect();
                if found == some.len() && some.iter().all(|id| answered.contains(id.as_str())) {
                    out.push(pass(
                        "lookup: found",
                        format!("{found} known persons, each answered under the ID asked"),
                        &clock,
                    ));
                } else {
                    out.push(fail(
                        "lookup: found",
                        format!("{found} of {} known persons found: {results:?}", some.len()),
                        &clock,
                    ));
                }
            }
            Err(e) => out.push(fail("lookup: found", call_failure(&e), &clock)),
        }
        let mut clock = Clock(0);
        let nobody = match self.recorded {
            Some((recording, _)) => recording.unknown.clone(),
            None => unknown_id(self.release.id_schemes.first().map(String::as_str), &known),
        };
        match nobody {
            None => {}
            Some(nobody) => match clock
                .time(self.connector.lookup(std::slice::from_ref(&nobody)))
                .await
            {
                Ok(results)
                    if matches!(
                        results.as_slice(),
                        [r] if matches!(r.outcome, LookupOutcome::NotFound)
                    ) =>
                {
                    out.push(pass(
                        "lookup: not found",
                        format!("{nobody}: not-found"),
                        &clock,
                    ))
                }
                Ok(results) => out.push(fail(
                    "lookup: not found",
                    format!("{nobody} is nobody; got {results:?}"),
                    &clock,
                )),
                Err(e) => out.push(fail("lookup: not found", call_failure(&e), &clock)),
            },
        }
        let max = (max_batch as usize).clamp(1, 1000);
        if max > 1 {
            let mut clock = Clock(0);
            let batch: Vec<String> = known.iter().cycle().take(max).cloned().collect();
            match clock.time(self.connector.lookup(&batch)).await {
                Ok(results) if results.len() == batch.len() => out.push(pass(
                    "lookup: a full batch",
                    format!("{max} IDs, {max} results"),
                    &clock,
                )),
                Ok(results) => out.push(fail(
                    "lookup: a full batch",
                    format!("{max} IDs gave {} results; one per ID asked", results.len()),
                    &clock,
                )),
                Err(e) => out.push(fail("lookup: a full batch", call_failure(&e), &clock)),
            }
        }
        out
    }

    async fn feed(&self) -> Outcome {
        let mut clock = Clock(0);
        let first = match clock.time(self.connector.changes(None)).await {
            Ok(p) => p,
            Err(e) => return fail("change feed: paging and resume", call_failure(&e), &clock),
        };
        if first.next_cursor.is_empty() {
            return fail(
                "change feed: paging and resume",
                "the first page has an empty next-cursor",
                &clock,
            );
        }
        let second = match clock
            .time(self.connector.changes(Some(&first.next_cursor)))
            .await
        {
            Ok(p) => p,
            Err(e) => return fail("change feed: paging and resume", call_failure(&e), &clock),
        };
        // Resuming from the same cursor (a host restarted) gives the same page.
        let again = match clock
            .time(self.connector.changes(Some(&first.next_cursor)))
            .await
        {
            Ok(p) => p,
            Err(e) => return fail("change feed: paging and resume", call_failure(&e), &clock),
        };
        let positions = |p: &ChangePage| {
            p.changes
                .iter()
                .map(|c| c.position.clone())
                .collect::<Vec<_>>()
        };
        if positions(&second) != positions(&again) || second.next_cursor != again.next_cursor {
            return fail(
                "change feed: paging and resume",
                "two reads from the same cursor gave different pages",
                &clock,
            );
        }
        if first.changes.is_empty() {
            return fail(
                "change feed: paging and resume",
                match self.recorded {
                    Some((r, _)) => format!(
                        "the first page from the start is empty; record a first page with changes in {}",
                        r.file.display()
                    ),
                    None => format!(
                        "the first page from the start is empty, but the register has {FEED_CHANGES} changes"
                    ),
                },
                &clock,
            );
        }
        let seen = positions(&first);
        if let Some(c) = second.changes.iter().find(|c| seen.contains(&c.position)) {
            return fail(
                "change feed: paging and resume",
                format!(
                    "the page after next-cursor {:?} repeats position {:?} of the page before it",
                    first.next_cursor, c.position
                ),
                &clock,
            );
        }
        if first
            .changes
            .iter()
            .chain(&second.changes)
            .any(|c| c.id.is_empty())
        {
            return fail(
                "change feed: paging and resume",
                "a change names no person",
                &clock,
            );
        }
        pass(
            "change feed: paging and resume",
            format!(
                "pages of {} and {} changes; the same page again from the same cursor",
                first.changes.len(),
                second.changes.len()
            ),
            &clock,
        )
    }

    async fn watch(&self) -> Outcome {
        let mut clock = Clock(0);
        let ids: Vec<String> = self.known_ids().await.into_iter().take(10).collect();
        match clock.time(self.connector.changes_for(None, &ids)).await {
            Ok(page) if !page.next_cursor.is_empty() => pass(
                "watch: changes of named persons",
                format!("{} IDs, {} changes", ids.len(), page.changes.len()),
                &clock,
            ),
            Ok(_) => fail(
                "watch: changes of named persons",
                "an empty next-cursor",
                &clock,
            ),
            Err(e) => fail("watch: changes of named persons", call_failure(&e), &clock),
        }
    }

    async fn enrich(&self) -> Outcome {
        let mut clock = Clock(0);
        let truth = self.sim.sim.truth_for(&["folkeregister"]).await;
        let locations: Vec<folkhub_core::contract::Location> = truth
            .iter()
            .filter_map(|t| {
                let address = t.fields.get("address.residential")?.clone();
                let context = t
                    .fields
                    .get("address.municipality")
                    .map(|m| vec![("address.municipality".to_string(), m.clone())])
                    .unwrap_or_default();
                Some(folkhub_core::contract::Location {
                    key: t.ids.last()?.clone(),
                    address,
                    context,
                })
            })
            .take(5)
            .collect();
        if locations.is_empty() {
            return fail("enrich: known addresses", "no address to enrich", &clock);
        }
        match clock.time(self.connector.enrich(&locations)).await {
            Ok(results) => {
                let found = results
                    .iter()
                    .filter(|r| {
                        matches!(r.outcome, folkhub_core::contract::EnrichOutcome::Found(_))
                    })
                    .count();
                let keys: BTreeSet<&str> = results.iter().map(|r| r.key.as_str()).collect();
                if found > 0 && locations.iter().all(|l| keys.contains(l.key.as_str())) {
                    pass(
                        "enrich: known addresses",
                        format!(
                            "{found} of {} addresses enriched, each under its key",
                            locations.len()
                        ),
                        &clock,
                    )
                } else {
                    fail(
                        "enrich: known addresses",
                        format!("{found} of {} enriched: {results:?}", locations.len()),
                        &clock,
                    )
                }
            }
            Err(e) => fail("enrich: known addresses", call_failure(&e), &clock),
        }
    }

    async fn search(&self) -> Outcome {
        let mut clock = Clock(0);
        let person = {
            let population = self.sim.sim.shared.population.read().await;
            population
                .swedes
                .iter()
                .find(|p| p.address.is_some() && !p.is_protected() && p.deregistered.is_none())
                .cloned()
        };
        let Some(person) = person else {
            return fail("search: a known person", "no searchable person", &clock);
        };
        let query = folkhub_core::contract::SearchQuery {
            family: Some(person.family.clone()),
            given: person.given.split_whitespace().next().map(String::from),
            birth_date: Some(person.birth.format("%Y-%m-%d").to_string()),
            postal_code: None,
            municipality: None,
            max_hits: 100,
        };
        let id = person.ids.last().cloned().unwrap_or_default();
        match clock.time(self.connector.search(&query)).await {
            Ok(SearchOutcome::Hits(hits))
                if hits.iter().any(|h| h.ids.iter().any(|i| i.value == id)) =>
            {
                pass(
                    "search: a known person",
                    format!("{} hits, the person among them", hits.len()),
                    &clock,
                )
            }
            Ok(other) => fail(
                "search: a known person",
                format!("{id} not among the hits: {other:?}"),
                &clock,
            ),
            Err(e) => fail("search: a known person", call_failure(&e), &clock),
        }
    }
}

/// A valid ID of `scheme` that nobody in `known` has.
fn unknown_id(scheme: Option<&str>, known: &[String]) -> Option<String> {
    let known: BTreeSet<&str> = known.iter().map(String::as_str).collect();
    match scheme? {
        "no-fnr" | "no-dnr" => (0..1000).find_map(|n| {
            (0..100).find_map(|check| {
                let id = format!("150391{n:03}{check:02}");
                (folkhub_core::ids::parse_norwegian(&id).is_ok() && !known.contains(id.as_str()))
                    .then_some(id)
            })
        }),
        "se-pnr" | "se-snr" => (0..1000).find_map(|n| {
            (0..10).find_map(|check| {
                let id = format!("19391215{n:03}{check}");
                (folkhub_core::ids::parse_swedish(&id).is_ok() && !known.contains(id.as_str()))
                    .then_some(id)
            })
        }),
        "fi-hetu" => (0..1000).find_map(|n| {
            "0123456789ABCDEFHJKLMNPRSTUVWXY".chars().find_map(|check| {
                let id = format!("150391-{n:03}{check}");
                (folkhub_core::ids::parse_finnish(&id).is_ok() && !known.contains(id.as_str()))
                    .then_some(id)
            })
        }),
        _ => None,
    }
}
