//! `folkhub person get <id> [--json]`.

use anyhow::bail;

use crate::host::Host;

/// Parses an ID from the command line, or says what is wrong and what to give.
pub fn parse_id(id: &str) -> anyhow::Result<folkhub_core::PersonId> {
    folkhub_core::ids::parse(id).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nGive a Norwegian fødselsnummer/D-number (11 digits), a Swedish personnummer or a Finnish HETU."
        )
    })
}

pub async fn get(host: &Host, id: &str, json: bool) -> anyhow::Result<()> {
    let parsed = parse_id(id)?;
    let Some(person) = host.store().person(&parsed.value).await? else {
        bail!(
            "no person with {} {} is in the store; run `folkhub sync <connector> --full` first",
            parsed.scheme,
            parsed.value
        );
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&folkhub_api::person_json(&person, true))?
        );
        return Ok(());
    }
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
    let width = person
        .record
        .fields
        .keys()
        .map(|k| k.len())
        .max()
        .unwrap_or(10);
    for (path, field) in &person.record.fields {
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
    Ok(())
}
