//! Pushed changes: `serve` turns new person changes and operational events
//! into webhook messages and delivers them.
//!
//! - **The outbox.** For each active subscription, the changes after its
//!   cursor (`/v1/changes`' sequence) about persons its client follows
//!   become messages, written with the cursor's move in one transaction.
//!   A message's id (the `webhook-id`, the receiver's idempotency key) is
//!   made from the subscription and the change, so filling again after a
//!   crash makes no new message: nothing is lost or doubled by a SIGKILL.
//! - **Delivery.** A due message is claimed (for `webhooks.timeout` and a
//!   margin, so several hosts do not send it at once), POSTed with the
//!   Standard Webhooks headers (an HMAC-SHA256 over id, timestamp and body,
//!   with the subscription's secret), and marked delivered on a 2xx.
//!   Otherwise it is tried again with backoff (5 s, 5 min, 30 min, 2 h,
//!   5 h, then every 10 h) until `webhooks.give_up_after`. At least once:
//!   a host killed between the receiver's 2xx and the mark sends it again,
//!   with the same `webhook-id`.
//! - **Payloads** carry what the client's legal basis lets it see: the
//!   field groups that changed (never values), and for a person whose
//!   protection the basis does not cover, only that the person changed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use folkhub_core::access::LegalBasis;
use folkhub_store::{
    Access, DeliveryAttempt, DeliveryOutcome, FollowSet, Follows, Installations, NewMessage,
    Persons, Subscription, WebhookMessage, Webhooks,
};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::host::Host;

/// Changes and events turned into messages per subscription per pass.
const PAGE: u32 = 500;

/// Waits between attempts of one message (then 10 h).
const BACKOFF: &[u64] = &[5, 300, 1800, 7200, 18_000, 36_000];

/// Runs the outbox and deliveries until `shutdown` turns true.
pub async fn run(host: &Host, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let poll = crate::serve::duration(&host.config.webhooks.poll, "webhooks.poll")?;
    loop {
        if let Err(e) = pass(host).await {
            tracing::warn!("webhooks: {e:#}");
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// One pass: operational events noticed, the outbox filled, due messages
/// sent. Returns the messages sent.
pub async fn pass(host: &Host) -> anyhow::Result<usize> {
    deadline_events(host).await?;
    fill(host).await?;
    deliver(host).await
}

/// The sets a client reads changes of: its own and its populations'.
async fn sets_of(host: &Host, client: &str) -> anyhow::Result<Vec<FollowSet>> {
    let mut sets = vec![FollowSet::Client(client.to_string())];
    for p in host.store.populations().await? {
        if p.clients.iter().any(|c| c == client) {
            sets.push(FollowSet::Population(p.name));
        }
    }
    Ok(sets)
}

/// Turns new changes and events into messages for every active subscription.
pub async fn fill(host: &Host) -> anyhow::Result<()> {
    let store = host.store.as_ref();
    let clients = store.clients().await?;
    let bases = host.config.legal_bases();
    for sub in store.subscriptions().await? {
        if sub.disabled_at.is_some() {
            continue;
        }
        let Some(client) = clients
            .iter()
            .find(|c| c.name == sub.client && c.revoked_at.is_none())
        else {
            store
                .disable_subscription(sub.id, "its client was revoked")
                .await?;
            continue;
        };
        let Some(basis) = bases.get(&client.basis) else {
            tracing::warn!(client = %client.name, basis = %client.basis, "webhooks: unknown legal basis; nothing sent");
            continue;
        };
        let sets = sets_of(host, &client.name).await?;
        let mut sub = sub;
        loop {
            let changes = store.changes_since(sub.change_cursor, PAGE).await?;
            let events = if client.admin {
                store.events_after(sub.event_cursor, PAGE).await?
            } else {
                vec![]
            };
            if changes.is_empty() && events.is_empty() {
                break;
            }
            let keys: Vec<i64> = changes.iter().map(|c| c.person).collect();
            let followed = store.followed_by(&sets, &keys).await?;
            // The protection markers of the persons these changes are
            // about, as they are now, read in one go.
            let ids: Vec<String> = followed
                .values()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let markers: BTreeMap<String, Vec<String>> = store
                .persons(&ids)
                .await?
                .into_iter()
                .map(|(id, p)| (id, p.map(|p| p.record.person_labels()).unwrap_or_default()))
                .collect();
            let mut messages = Vec::new();
            for change in &changes {
                let Some(id) = followed.get(&change.person) else {
                    continue;
                };
                let labels = markers.get(id).map(Vec::as_slice).unwrap_or_default();
                let (event_type, payload) = person_event(change, id, basis, labels);
                if !sub.events.iter().any(|e| e == event_type) {
                    continue;
                }
                messages.push(NewMessage {
                    id: format!("msg_{}_c{}", sub.id, change.seq),
                    event_type: event_type.to_string(),
                    payload: payload.to_string(),
                });
            }
            for event in &events {
                if !sub.events.contains(&event.event_type) {
                    continue;
                }
                let payload = json!({
                    "type": event.event_type,
                    "timestamp": event.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "data": event.payload,
                });
                messages.push(NewMessage {
                    id: format!("msg_{}_e{}", sub.id, event.seq),
                    event_type: event.event_type.clone(),
                    payload: payload.to_string(),
                });
            }
            let from = (sub.change_cursor, sub.event_cursor);
            let to = (
                changes.last().map_or(sub.change_cursor, |c| c.seq),
                events.last().map_or(sub.event_cursor, |e| e.seq),
            );
            if !store.fill_outbox(sub.id, from, to, &messages).await? {
                // Another host filled it meanwhile: it goes on from there.
                break;
            }
            (sub.change_cursor, sub.event_cursor) = to;
        }
    }
    Ok(())
}

/// What a change tells a client: its event type and payload, shaped by
/// the client's basis. `labels`: the person's protection markers now.
pub fn person_event(
    change: &folkhub_store::PersonChange,
    id: &str,
    basis: &LegalBasis,
    labels: &[String],
) -> (&'static str, Value) {
    let timestamp = change
        .changed_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if !basis.covers(labels) {
        // Protected past this basis: that the person changed, no more.
        return (
            "person.changed",
            json!({"type": "person.changed", "timestamp": timestamp, "data": {"id": id}}),
        );
    }
    let (shown, _) = folkhub_core::access::view_diff(&change.diff, basis, labels);
    let to = |path: &str| shown.get(path).map(|e| &e["to"]);
    let event_type = if change.reason.starts_with("identity link #") {
        "person.merged"
    } else if to("status").and_then(Value::as_str) == Some("deceased")
        || to("death.date").is_some_and(|v| !v.is_null())
    {
        "person.deceased"
    } else if shown.keys().any(|p| p.starts_with("protection."))
        && shown
            .iter()
            .filter(|(p, _)| p.starts_with("protection."))
            .any(|(_, e)| protected_value(&e["to"]) && !protected_value(&e["from"]))
    {
        "person.protection-activated"
    } else if change.reason.starts_with(folkhub_store::IDS_CHANGED) {
        "person.ids-changed"
    } else {
        "person.changed"
    };
    let mut groups: Vec<&str> = shown
        .keys()
        .map(|p| folkhub_core::fields::group_of(p))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    (
        event_type,
        json!({
            "type": event_type,
            "timestamp": timestamp,
            "data": {"id": id, "seq": change.seq, "groups": groups},
        }),
    )
}

/// A protection field's value that means protected.
fn protected_value(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s != "UGRADERT",
        _ => false,
    }
}

/// Records an upgrade-deadline event for each installed connector whose
/// deadline is 90, 30 or 7 days away or less (once each).
async fn deadline_events(host: &Host) -> anyhow::Result<()> {
    let today = host.today();
    for installed in host.store.installations().await? {
        let Some(notice) = crate::status::upgrade_notice(host, &installed, today) else {
            continue;
        };
        for threshold in [90, 30, 7] {
            if notice.days_left <= threshold {
                host.store
                    .record_event(
                        &format!(
                            "deadline:{}:{}:{threshold}",
                            installed.connector, installed.version
                        ),
                        "upgrade.deadline",
                        &json!({
                            "connector": installed.connector,
                            "installed": installed.version,
                            "upgrade_to": notice.to,
                            "deadline": notice.deadline,
                            "days_left": notice.days_left,
                            "action": notice.action,
                            "upstream_sunset": notice.upstream_sunset,
                        }),
                    )
                    .await?;
            }
        }
    }
    Ok(())
}

/// Sends the messages due now; returns how many were sent.
pub async fn deliver(host: &Host) -> anyhow::Result<usize> {
    let store = host.store.as_ref();
    let config = &host.config.webhooks;
    let timeout = crate::serve::duration(&config.timeout, "webhooks.timeout")?;
    let give_up = folkhub_manifest::config::parse_ttl(&config.give_up_after)
        .context("webhooks.give_up_after")?;
    let due = store.due_messages(Utc::now(), 100).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let subs: BTreeMap<i64, Subscription> = store
        .subscriptions()
        .await?
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    let mut sent = 0;
    for message in due {
        let Some(sub) = subs.get(&message.subscription) else {
            continue;
        };
        let lease = chrono::Duration::from_std(timeout + Duration::from_secs(5))
            .unwrap_or(chrono::Duration::seconds(15));
        if !store.claim_message(&message, Utc::now() + lease).await? {
            continue;
        }
        let started = Instant::now();
        let at = Utc::now();
        let result = send(host, sub, &message, timeout).await;
        let (status, error) = match &result {
            Ok(status) if (200..300).contains(status) => (Some(i64::from(*status)), None),
            Ok(status) => (
                Some(i64::from(*status)),
                Some(format!("the receiver answered {status}")),
            ),
            Err(e) => (None, Some(e.clone())),
        };
        let outcome = if error.is_none() {
            DeliveryOutcome::Delivered
        } else if message.created_at + give_up <= at {
            DeliveryOutcome::GaveUp
        } else {
            let wait = BACKOFF
                .get(message.attempts as usize)
                .copied()
                .unwrap_or(36_000);
            DeliveryOutcome::Retry(at + chrono::Duration::seconds(wait as i64))
        };
        if let Some(e) = &error {
            tracing::warn!(message = %message.id, subscription = sub.id, "webhook delivery failed: {e}");
        }
        store
            .record_delivery(
                &DeliveryAttempt {
                    message: message.id.clone(),
                    at,
                    host: host.cluster_name(),
                    status,
                    error,
                    duration_ms: started.elapsed().as_millis() as i64,
                },
                &outcome,
            )
            .await?;
        sent += 1;
    }
    Ok(sent)
}

/// POSTs one message, signed: the receiver's status, or why none came.
async fn send(
    host: &Host,
    sub: &Subscription,
    message: &WebhookMessage,
    timeout: Duration,
) -> Result<u16, String> {
    check_target(&sub.url, &host.config.webhooks).await?;
    let timestamp = Utc::now().timestamp();
    let signature = standardwebhooks::Webhook::new(&sub.secret)
        .and_then(|w| w.sign(&message.id, timestamp, message.payload.as_bytes()))
        .map_err(|e| format!("signing: {e}"))?;
    let timestamp = timestamp.to_string();
    let headers = [
        ("content-type", "application/json"),
        ("user-agent", "folkhub-webhooks"),
        (standardwebhooks::HEADER_WEBHOOK_ID, message.id.as_str()),
        (
            standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
            timestamp.as_str(),
        ),
        (
            standardwebhooks::HEADER_WEBHOOK_SIGNATURE,
            signature.as_str(),
        ),
    ];
    let call = folkhub_runtime::credentials::send(
        http::Method::POST,
        &sub.url,
        &headers,
        bytes::Bytes::from(message.payload.clone()),
        timeout,
        64 * 1024,
    );
    match tokio::time::timeout(timeout + Duration::from_secs(1), call).await {
        Ok(Ok((status, _))) => Ok(status.as_u16()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
    }
}

/// Refuses a URL whose host resolves to a loopback or private address,
/// unless `webhooks.allow_private_networks` (checked at every delivery:
/// a name may point elsewhere later).
async fn check_target(
    url: &str,
    config: &folkhub_manifest::config::WebhooksConfig,
) -> Result<(), String> {
    if config.allow_private_networks {
        return Ok(());
    }
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolving {host}: {e}"))?;
    for address in addresses {
        if folkhub_runtime::outbound::is_private(address.ip()) {
            return Err(format!(
                "{host} resolves to the private address {}; deliveries there need webhooks.allow_private_networks = true",
                address.ip()
            ));
        }
    }
    Ok(())
}

/// Records an operational event, logging (not failing) when it cannot.
pub async fn event(host: &Host, key: &str, event_type: &str, payload: Value) {
    if let Err(e) = host.store.record_event(key, event_type, &payload).await {
        tracing::warn!("operational event {key} not recorded: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(reason: &str, diff: Value) -> folkhub_store::PersonChange {
        folkhub_store::PersonChange {
            seq: 7,
            person: 1,
            changed_at: Utc::now(),
            version: 2,
            diff,
            reason: reason.into(),
        }
    }

    #[test]
    fn each_change_is_told_as_what_it_is_and_only_as_far_as_the_basis_reads() {
        let school = LegalBasis::profile("school").expect("school");
        let kind =
            |reason: &str, diff: Value| person_event(&change(reason, diff), "1", &school, &[]).0;
        assert_eq!(
            kind("identity link #3: person 2 merged into 1; x", json!({})),
            "person.merged"
        );
        assert_eq!(
            kind(
                "feed",
                json!({"status": {"from": "resident", "to": "deceased"}})
            ),
            "person.deceased"
        );
        assert_eq!(
            kind(
                "feed",
                json!({"protection.level": {"from": "UGRADERT", "to": "FORTROLIG"}})
            ),
            "person.protection-activated"
        );
        assert_eq!(
            kind(&format!("{}feed", folkhub_store::IDS_CHANGED), json!({})),
            "person.ids-changed"
        );
        assert_eq!(
            kind(
                "feed",
                json!({"name.given": {"from": "KARI", "to": "KARIANNE"}})
            ),
            "person.changed"
        );
        // Groups, never values; and only the groups the basis reads.
        let (_, payload) = person_event(
            &change(
                "feed",
                json!({"name.given": {"from": "A", "to": "B"}, "civil-status": {"from": "x", "to": "y"}}),
            ),
            "15031210140",
            &school,
            &[],
        );
        assert_eq!(payload["data"]["groups"], json!(["name"]));
        assert!(!payload.to_string().contains("\"B\""));
        // A person protected past the basis: that they changed, no more,
        // whatever the change was.
        let (kind, payload) = person_event(
            &change(&format!("{}feed", folkhub_store::IDS_CHANGED), json!({})),
            "15031210140",
            &school,
            &["FORTROLIG".to_string()],
        );
        assert_eq!(kind, "person.changed");
        assert_eq!(payload["data"], json!({"id": "15031210140"}));
    }
}
