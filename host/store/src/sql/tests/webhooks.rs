//! The webhook outbox: filled once per cursor move, each message once by
//! its id, claimed by one host at a time.

use super::*;

pub(super) async fn the_outbox_is_filled_once_and_a_message_is_claimed_by_one_host(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(b, &dir.path().join("w.db")).await;
    store
        .apply(batch(
            vec![person(
                &[("01010112345", true)],
                &[("name.given", json!("A"))],
            )],
            None,
        ))
        .await
        .unwrap();
    let sub = store
        .add_subscription(NewSubscription {
            client: "school".into(),
            url: "https://school.example/hook".into(),
            secret: "whsec_c2VjcmV0".into(),
            events: vec!["person.changed".into()],
        })
        .await
        .unwrap();
    assert_eq!(sub.change_cursor, 1, "starts after what is stored now");
    let message = |n: i64| NewMessage {
        id: format!("msg_{}_c{n}", sub.id),
        event_type: "person.changed".into(),
        payload: format!("{{\"n\":{n}}}"),
    };
    assert!(
        store
            .fill_outbox(sub.id, (1, 0), (3, 0), &[message(2), message(3)])
            .await
            .unwrap()
    );
    // A second host with the old cursor is fenced out: nothing doubled.
    assert!(
        !store
            .fill_outbox(sub.id, (1, 0), (3, 0), &[message(2)])
            .await
            .unwrap()
    );
    // The same id again (a fill repeated after a crash) adds nothing.
    assert!(
        store
            .fill_outbox(sub.id, (3, 0), (3, 0), &[message(3)])
            .await
            .unwrap()
    );
    let now = Utc::now() + chrono::Duration::seconds(1);
    let due = store.due_messages(now, 10).await.unwrap();
    assert_eq!(due.len(), 2, "{due:?}");
    let until = now + chrono::Duration::seconds(30);
    assert!(store.claim_message(&due[0], until).await.unwrap());
    assert!(
        !store.claim_message(&due[0], until).await.unwrap(),
        "claimed once"
    );
    assert_eq!(store.due_messages(now, 10).await.unwrap().len(), 1);
    let attempt = |status, error: Option<&str>| DeliveryAttempt {
        message: due[0].id.clone(),
        at: now,
        host: Some("a".into()),
        status,
        error: error.map(String::from),
        duration_ms: 3,
    };
    store
        .record_delivery(
            &attempt(Some(503), Some("busy")),
            &DeliveryOutcome::Retry(now),
        )
        .await
        .unwrap();
    assert_eq!(store.due_messages(now, 10).await.unwrap().len(), 2);
    store
        .record_delivery(&attempt(Some(200), None), &DeliveryOutcome::Delivered)
        .await
        .unwrap();
    let all = store.messages(sub.id, 10).await.unwrap();
    let done = all.iter().find(|m| m.id == due[0].id).unwrap();
    assert!(
        done.delivered_at.is_some() && done.attempts == 2,
        "{done:?}"
    );
    assert_eq!(store.attempts(&done.id).await.unwrap().len(), 2);
    assert_eq!(store.due_messages(now, 10).await.unwrap().len(), 1);
    // A disabled subscription sends nothing more.
    assert!(store.disable_subscription(sub.id, "test").await.unwrap());
    assert!(store.due_messages(now, 10).await.unwrap().is_empty());
    // Operational events are recorded once per key.
    assert!(
        store
            .record_event("k", "run.failed", &json!({"run": 1}))
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_event("k", "run.failed", &json!({"run": 1}))
            .await
            .unwrap()
    );
    assert_eq!(store.events_after(0, 10).await.unwrap().len(), 1);
}
