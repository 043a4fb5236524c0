//! `folkhub webhooks`: every client's subscriptions and their deliveries,
//! for the operator.

use anyhow::bail;
use folkhub_app::Host;
use folkhub_store::Webhooks;

pub async fn list(host: &Host, json: bool) -> anyhow::Result<()> {
    let subs = host.store.subscriptions().await?;
    if json {
        out!("{}", serde_json::to_string_pretty(&subs)?);
        return Ok(());
    }
    if subs.is_empty() {
        out!("no webhook subscriptions; a client makes one with POST /v1/webhooks");
    }
    for s in subs {
        let state = match (&s.disabled_at, &s.disabled_reason) {
            (Some(at), reason) => format!(
                "disabled {}: {}",
                at.format("%Y-%m-%d"),
                reason.as_deref().unwrap_or("")
            ),
            (None, _) => "active".into(),
        };
        out!(
            "#{} {} → {} [{}] {state}; fed up to change {}",
            s.id,
            s.client,
            s.url,
            s.events.join(", "),
            s.change_cursor
        );
    }
    Ok(())
}

pub async fn deliveries(host: &Host, id: i64, limit: u32, json: bool) -> anyhow::Result<()> {
    let store = host.store.as_ref();
    if !store.subscriptions().await?.iter().any(|s| s.id == id) {
        bail!("no webhook subscription #{id} (see `folkhub webhooks list`)");
    }
    let messages = store.messages(id, limit).await?;
    if json {
        let mut out = Vec::new();
        for m in messages {
            let attempts = store.attempts(&m.id).await?;
            out.push(serde_json::json!({"message": m, "attempts": attempts}));
        }
        out!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if messages.is_empty() {
        out!("no messages yet");
    }
    for m in messages {
        let state = match (&m.delivered_at, &m.failed_at) {
            (Some(at), _) => format!("delivered {}", at.format("%Y-%m-%d %H:%M:%S")),
            (None, Some(at)) => format!(
                "given up {}: {}",
                at.format("%Y-%m-%d %H:%M:%S"),
                m.last_error.as_deref().unwrap_or("")
            ),
            (None, None) if m.attempts > 0 => format!(
                "retry at {}: {}",
                m.next_attempt_at.format("%Y-%m-%d %H:%M:%S"),
                m.last_error.as_deref().unwrap_or("")
            ),
            (None, None) => "waiting".into(),
        };
        out!(
            "{} {} ({} attempts) {state}",
            m.id,
            m.event_type,
            m.attempts
        );
    }
    Ok(())
}

pub async fn disable(host: &Host, id: i64, reason: &str, actor: &str) -> anyhow::Result<()> {
    if reason.trim().is_empty() {
        bail!("--reason says why the subscription stops (its client sees it)");
    }
    if !host
        .store
        .disable_subscription(id, &format!("{reason} (by {actor})"))
        .await?
    {
        bail!("no active webhook subscription #{id} (see `folkhub webhooks list`)");
    }
    out!("subscription #{id} disabled; its undelivered messages are not sent");
    Ok(())
}
