//! One module per verb of the `folkhub` binary.

pub mod audit;
pub mod check;
pub mod clients;
pub mod connectors;
pub mod credentials;
pub mod follows;
pub mod jobs;
pub mod overrides;
pub mod person;
pub mod recorded;
pub mod releases;
pub mod serve;
pub mod sync;
pub mod upgrade;
pub mod webhooks;

/// `folkhub migrate`: the store's schema to this build's version.
pub async fn migrate(config: Option<&std::path::Path>, check: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    use folkhub_store::sql::{OpenMode, SqlStore, redact};
    let config = folkhub_manifest::Config::load(config)?;
    let url = &config.store.url;
    let store = SqlStore::open_url(url, folkhub_core::MergeRules::default(), OpenMode::AsIs)
        .await
        .with_context(|| format!("opening the store {}", redact(url)))?;
    let state = store.schema().await?;
    if check {
        let pending: Vec<String> = state
            .pending
            .iter()
            .map(|(v, name)| format!("{v} ({name})"))
            .collect();
        out!(
            "{}: schema version {}, this folkhub uses {}{}",
            redact(url),
            state.before,
            state.current,
            if pending.is_empty() {
                ": nothing to do".to_string()
            } else {
                format!("; `folkhub migrate` applies {}", pending.join(", "))
            }
        );
        return Ok(());
    }
    let state = store.migrate().await?;
    for (version, name) in &state.applied {
        out!("applied {version}: {name}");
    }
    out!(
        "{}: schema version {} → {}{}",
        redact(url),
        state.before,
        state.current,
        if state.applied.is_empty() {
            " (nothing to do)"
        } else {
            ""
        }
    );
    Ok(())
}
