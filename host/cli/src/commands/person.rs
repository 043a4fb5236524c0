//! `folkhub person get <id> [--json [--provenance]|--fhir] [--basis NAME]`,
//! `person history <id>`: the read model ([`folkhub_read`]) printed, so
//! `--json` is the API's answer for the same basis.

use folkhub_core::access::LegalBasis;
use folkhub_read::{PersonRequest, Reader, StoreLog};
use folkhub_store::Persons;

use folkhub_app::Host;

/// Parses an ID from the command line, or says what is wrong and what to give.
pub fn parse_id(id: &str) -> anyhow::Result<folkhub_core::PersonId> {
    folkhub_core::ids::parse(id).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nGive a Norwegian fødselsnummer/D-number (11 digits), a Swedish personnummer or a Finnish HETU."
        )
    })
}

/// A legal basis by name (a built-in profile or one of `[legal_bases]`),
/// or what the names are.
pub fn basis(host: &Host, name: &str) -> anyhow::Result<LegalBasis> {
    let bases = host.config.legal_bases();
    bases.get(name).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "--basis {name:?} is not a legal basis; use one of {}",
            bases.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}

/// The operator at the host as the access log records them: client
/// `cli:$USER`, like every read through the API.
fn operator() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    )
}

/// The operator as the read model's reader.
fn operator_reading<'a>(client: &'a str, basis: &'a LegalBasis) -> Reader<'a> {
    Reader {
        client,
        basis,
        purpose: "operator on the host",
    }
}

/// What to do when no stored person has the ID.
fn not_stored(parsed: &folkhub_core::PersonId) -> anyhow::Error {
    anyhow::anyhow!(
        "no person with {} {} is in the store; run `folkhub sync <connector> --full` first",
        parsed.scheme,
        parsed.value
    )
}

/// Output form of `person get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Text,
    /// The API's JSON answer for the same basis (`?provenance=true` with
    /// provenance).
    Json {
        provenance: bool,
    },
    Fhir,
}

/// `folkhub person get`: the read model's answer (the API's), printed.
pub async fn get(host: &Host, id: &str, form: Form, basis: &LegalBasis) -> anyhow::Result<()> {
    let parsed = parse_id(id)?;
    let client = operator();
    let reader = operator_reading(&client, basis);
    let log = StoreLog(host.store.as_ref());
    if form == Form::Fhir {
        let Some(person) = host.store.person(&parsed.value).await? else {
            return Err(not_stored(&parsed));
        };
        let patient =
            folkhub_read::read_patient(&log, &reader, "folkhub person get --fhir", &person).await?;
        out!("{}", serde_json::to_string_pretty(&patient)?);
        return Ok(());
    }
    let provenance = match form {
        Form::Json { provenance } => provenance,
        _ => true,
    };
    let Some(view) = folkhub_read::read_person(
        host.store.as_ref(),
        &log,
        &reader,
        "folkhub person get",
        &parsed.value,
        PersonRequest {
            provenance,
            selection: None,
        },
    )
    .await?
    else {
        return Err(not_stored(&parsed));
    };
    if let Form::Json { .. } = form {
        out!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    let ids: Vec<String> = view
        .ids
        .iter()
        .map(|i| {
            format!(
                "{} {}{}",
                i.scheme,
                i.value,
                if i.active { "" } else { " (replaced)" }
            )
        })
        .collect();
    out!(
        "person {} (version {}, updated {})",
        view.key,
        view.version,
        view.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    out!("ids: {}", ids.join(", "));
    out!();
    let width = view
        .fields
        .keys()
        .chain(view.withheld.keys())
        .map(|k| k.len())
        .max()
        .unwrap_or(10);
    let sources = view.provenance.clone().unwrap_or_default();
    for (path, value) in &view.fields {
        let value = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let labels = view
            .labels
            .get(path)
            .map_or(String::new(), |l| format!(" [{}]", l.join(", ")));
        let conflict = if view.conflicts.contains(path) {
            " (CONFLICT)"
        } else {
            ""
        };
        out!("{path:<width$}  {value}{labels}{conflict}");
        if let Some(p) = sources.get(path) {
            out!(
                "{:<width$}  ↳ {} {} ({}), retrieved {}",
                "",
                p.source,
                p.release,
                p.upstream_version,
                p.retrieved.format("%Y-%m-%d %H:%M")
            );
        }
    }
    for (path, why) in &view.withheld {
        out!(
            "{path:<width$}  (withheld: {why:?} for basis {})",
            basis.name
        );
    }
    Ok(())
}

/// Every change of a person's record, as `basis` may see it.
pub async fn history(host: &Host, id: &str, basis: &LegalBasis) -> anyhow::Result<()> {
    let parsed = parse_id(id)?;
    let client = operator();
    let reader = operator_reading(&client, basis);
    let Some(history) = folkhub_read::read_history(
        host.store.as_ref(),
        &StoreLog(host.store.as_ref()),
        &reader,
        "folkhub person history",
        &parsed.value,
    )
    .await?
    else {
        return Err(not_stored(&parsed));
    };
    out!("{}", serde_json::to_string_pretty(&history)?);
    Ok(())
}

/// `folkhub rebuild [--check]`.
pub async fn rebuild(host: &Host, check: bool) -> anyhow::Result<()> {
    let report = host.store().rebuild(!check).await?;
    out!(
        "{} persons rebuilt from the observation log: {} differ from what was stored{}",
        report.persons,
        report.differing.len(),
        if check || report.differing.is_empty() {
            ""
        } else {
            " (stored now, with a history entry each)"
        }
    );
    for (key, paths) in report.differing.iter().take(20) {
        out!("  person {key}: {}", paths.join(", "));
    }
    if report.differing.len() > 20 {
        out!("  … and {} more", report.differing.len() - 20);
    }
    if check && !report.differing.is_empty() {
        anyhow::bail!(
            "{} stored records differ from the observation log; run `folkhub rebuild` to store the rebuilt ones",
            report.differing.len()
        );
    }
    Ok(())
}
