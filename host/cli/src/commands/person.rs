//! `folkhub person get <id> [--json|--fhir] [--basis NAME]`, `person history <id>`.

use anyhow::bail;
use folkhub_core::access::LegalBasis;

use crate::host::Host;

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

/// Finds a person and writes the operator's read to the access log (as
/// client `cli:$USER`), like every read through the API.
async fn find(
    host: &Host,
    id: &str,
    basis: &LegalBasis,
    what: &str,
) -> anyhow::Result<folkhub_store::StoredPerson> {
    let parsed = parse_id(id)?;
    let Some(person) = host.store().person(&parsed.value).await? else {
        bail!(
            "no person with {} {} is in the store; run `folkhub sync <connector> --full` first",
            parsed.scheme,
            parsed.value
        );
    };
    let fields = folkhub_core::access::view(&person.record, basis)
        .fields
        .into_keys()
        .collect();
    host.store()
        .log_access(&[folkhub_store::AccessEntry {
            at: chrono::Utc::now(),
            client: format!(
                "cli:{}",
                std::env::var("USER").unwrap_or_else(|_| "operator".into())
            ),
            basis: basis.name.clone(),
            purpose: "operator on the host".into(),
            person: person.key,
            endpoint: what.into(),
            fields,
            criteria: None,
        }])
        .await?;
    Ok(person)
}

/// Output form of `person get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Text,
    Json,
    Fhir,
}

pub async fn get(host: &Host, id: &str, form: Form, basis: &LegalBasis) -> anyhow::Result<()> {
    let person = find(host, id, basis, "folkhub person get").await?;
    match form {
        Form::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&folkhub_api::person_json(&person, basis, true))?
            );
            return Ok(());
        }
        Form::Fhir => {
            println!(
                "{}",
                serde_json::to_string_pretty(&folkhub_api::patient_json(&person, basis))?
            );
            return Ok(());
        }
        Form::Text => {}
    }
    let view = folkhub_core::access::view(&person.record, basis);
    let ids: Vec<String> = person
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
    println!(
        "person {} (version {}, updated {})",
        person.key,
        person.version,
        person.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    println!("ids: {}", ids.join(", "));
    println!();
    let width = view
        .fields
        .keys()
        .chain(view.withheld.keys())
        .map(|k| k.len())
        .max()
        .unwrap_or(10);
    for (path, field) in &view.fields {
        let value = match &field.value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let labels = if field.labels.is_empty() {
            String::new()
        } else {
            format!(" [{}]", field.labels.join(", "))
        };
        let conflict = if field.conflict { " (CONFLICT)" } else { "" };
        println!(
            "{path:<width$}  {value}{labels}{conflict}\n{:<width$}  ↳ {} {} ({}), retrieved {}",
            "",
            field.provenance.source,
            field.provenance.release,
            field.provenance.upstream_version,
            field.provenance.retrieved.format("%Y-%m-%d %H:%M")
        );
    }
    for (path, why) in &view.withheld {
        println!(
            "{path:<width$}  (withheld: {why:?} for basis {})",
            basis.name
        );
    }
    Ok(())
}

/// Every change of a person's record, as `basis` may see it.
pub async fn history(host: &Host, id: &str, basis: &LegalBasis) -> anyhow::Result<()> {
    let person = find(host, id, basis, "folkhub person history").await?;
    let changes = host.store().history(person.key).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&folkhub_api::history_json(
            &changes,
            basis,
            &person.record.person_labels()
        ))?
    );
    Ok(())
}

/// `folkhub rebuild [--check]`.
pub async fn rebuild(host: &Host, check: bool) -> anyhow::Result<()> {
    let report = host.store().rebuild(!check).await?;
    println!(
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
        println!("  person {key}: {}", paths.join(", "));
    }
    if report.differing.len() > 20 {
        println!("  … and {} more", report.differing.len() - 20);
    }
    if check && !report.differing.is_empty() {
        anyhow::bail!(
            "{} stored records differ from the observation log; run `folkhub rebuild` to store the rebuilt ones",
            report.differing.len()
        );
    }
    Ok(())
}
