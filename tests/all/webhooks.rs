//! Pushed changes end to end: a school subscribes a receiver to the
//! persons it follows; `folkhub serve` (the binary) syncs a change feed
//! and delivers, and is killed with SIGKILL ten times meanwhile. The
//! receiver, which checks every signature from the Standard Webhooks
//! rules on its own, ends with every change exactly once by its
//! `webhook-id`, and no payload names what the school's basis withholds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use folkhub_app::sync::{Mode, run};
use folkhub_store::prelude::*;
use folkhub_tests::{Setup, TestEnv, root};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::api::{Api, get, post_json};

/// What the receiver got: per `webhook-id`, each body received.
type Received = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

/// Checks a delivery as the Standard Webhooks specification says: the
/// signature is `v1,` and the base64 of HMAC-SHA256 over
/// `id.timestamp.body`, keyed with the base64-decoded secret after
/// `whsec_`; the timestamp is within five minutes.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .ok_or(format!("no {name} header"))
    };
    let (id, timestamp, signatures) = (
        header("webhook-id")?,
        header("webhook-timestamp")?,
        header("webhook-signature")?,
    );
    let sent: i64 = timestamp.parse().map_err(|_| "timestamp".to_string())?;
    if (chrono::Utc::now().timestamp() - sent).abs() > 300 {
        return Err("timestamp outside five minutes".into());
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .map_err(|e| e.to_string())?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if !signatures
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
    {
        return Err(format!("no valid v1 signature in {signatures:?}"));
    }
    Ok(id)
}

/// A receiver on loopback that verifies and records every delivery, and
/// answers 200 after a moment (so some kills fall between its answer and
/// the host's note of it).
async fn receiver(secret: Arc<Mutex<String>>, received: Received) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (secret, received) = (secret.clone(), received.clone());
            async move {
                let secret = secret.lock().expect("secret").clone();
                match verify(&secret, &headers, &body) {
                    Ok(id) => {
                        received
                            .lock()
                            .expect("received")
                            .entry(id)
                            .or_default()
                            .push(String::from_utf8_lossy(&body).into_owned());
                        tokio::time::sleep(Duration::from_millis(30)).await;
                        StatusCode::OK
                    }
                    Err(why) => {
                        eprintln!("receiver refused a delivery: {why}");
                        StatusCode::UNAUTHORIZED
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_gets_every_change_exactly_once_across_ten_sigkills() {
    let bin = root().join("target/debug/folkhub");
    assert!(
        bin.exists(),
        "{} is missing: `cargo xtask test` builds it",
        bin.display()
    );
    let mut env = TestEnv::start(Setup {
        seed: 91,
        count: 400,
        ..Setup::default()
    })
    .await;
    env.host.config.webhooks.allow_http = true;
    env.host.config.webhooks.allow_private_networks = true;
    env.host.config.webhooks.timeout = "2s".into();
    env.host
        .install("folkeregister", None, false, "test", "webhooks")
        .await
        .expect("install");
    run(&env.host, "folkeregister", Mode::Full)
        .await
        .expect("first sync");

    // The school follows every Norwegian (protected ones among them) and
    // subscribes its receiver.
    let state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    let school = Api::with_state(state, "school", false).await;
    let followed: Vec<String> = folkhub_tests::norwegians(&env).await;
    let (status, body) = post_json(school.clone(), "/v1/follows", &json!({"add": followed})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let secret = Arc::new(Mutex::new(String::new()));
    let received: Received = Arc::default();
    let url = receiver(secret.clone(), received.clone()).await;
    let (status, sub) = post_json(school.clone(), "/v1/webhooks", &json!({"url": url})).await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    *secret.lock().expect("secret") = sub["secret"].as_str().expect("secret").to_string();
    let sub_id = sub["id"].as_i64().expect("id");
    let start_cursor = sub["change_cursor"].as_i64().expect("cursor");

    // `folkhub serve` with a feed job every second, killed ten times.
    let mut config = env.host.config.clone();
    config.webhooks.poll = "1s".into();
    config.jobs.insert(
        "feed".into(),
        toml::from_str("kind = \"changes\"\nconnector = \"folkeregister\"\nevery = \"1s\"")
            .expect("job"),
    );
    let file = env.dir.path().join("serve.toml");
    std::fs::write(&file, toml::to_string(&config).expect("toml")).expect("write");
    let serve = || {
        std::process::Command::new(&bin)
            .arg("--config")
            .arg(&file)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("FOLKHUB_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn folkhub serve")
    };
    for i in 0..10u64 {
        env.sim.shared.population.write().await.advance(150);
        let mut child = serve();
        tokio::time::sleep(Duration::from_millis(1200 + (i * 373) % 1500)).await;
        child.kill().expect("SIGKILL"); // SIGKILL on Unix
        child.wait().expect("reap");
    }
    let delivered_before_end = received.lock().expect("received").len();

    // The last run: the feed to its head, then serve until the outbox is
    // empty.
    run(&env.host, "folkeregister", Mode::Changes)
        .await
        .expect("catch up");
    let store = env.host.store.as_ref();
    let last_seq = store
        .changes_since(0, u32::MAX)
        .await
        .expect("changes")
        .last()
        .map(|c| c.seq)
        .unwrap_or(0);
    let mut child = serve();
    let mut settled = false;
    for _ in 0..240 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let sub = store
            .subscriptions()
            .await
            .expect("subs")
            .into_iter()
            .find(|s| s.id == sub_id)
            .expect("sub");
        let waiting = store
            .messages(sub_id, u32::MAX)
            .await
            .expect("messages")
            .iter()
            .filter(|m| m.delivered_at.is_none())
            .count();
        if sub.change_cursor >= last_seq && waiting == 0 {
            settled = true;
            break;
        }
    }
    child.kill().expect("stop");
    child.wait().expect("reap");
    assert!(settled, "the outbox emptied after the restarts");

    // Expected: one message per change of a followed person since the
    // subscription, each by its own id.
    let keys: BTreeSet<i64> = {
        let mut keys = BTreeSet::new();
        for id in &followed {
            if let Some(p) = store.person(id).await.expect("person") {
                keys.insert(p.key);
            }
        }
        keys
    };
    let expected: BTreeSet<String> = store
        .changes_since(start_cursor, u32::MAX)
        .await
        .expect("changes")
        .iter()
        .filter(|c| keys.contains(&c.person))
        .map(|c| format!("msg_{sub_id}_c{}", c.seq))
        .collect();
    assert!(
        expected.len() > 100,
        "changes to deliver: {}",
        expected.len()
    );
    let received = received.lock().expect("received").clone();
    let ids: BTreeSet<String> = received.keys().cloned().collect();
    assert_eq!(
        ids.difference(&expected).count() + expected.difference(&ids).count(),
        0,
        "missing {:?}, unexpected {:?}",
        expected.difference(&ids).take(5).collect::<Vec<_>>(),
        ids.difference(&expected).take(5).collect::<Vec<_>>()
    );
    assert!(
        delivered_before_end > 0,
        "deliveries went on between the kills"
    );
    for (id, bodies) in &received {
        assert!(
            bodies.windows(2).all(|w| w[0] == w[1]),
            "{id}: a retry is the same message"
        );
    }

    // Nothing the school's basis withholds: groups of its basis only, no
    // values, and a person protected past it is only "changed" from the
    // change that made them protected on (a message is shaped when it is
    // made, by the person's protection then).
    let basis = folkhub_core::access::LegalBasis::profile("school").expect("school");
    let mut bare = 0;
    for (id, bodies) in &received {
        let seq: i64 = id
            .rsplit_once("_c")
            .expect("a change message")
            .1
            .parse()
            .expect("seq");
        let body: Value = serde_json::from_str(&bodies[0]).expect("json");
        let data = body["data"].as_object().expect("data");
        if data.len() == 1 {
            assert_eq!(body["type"], "person.changed", "{body}");
            bare += 1;
            continue;
        }
        let person = data["id"].as_str().expect("id");
        let person = store.person(person).await.expect("read").expect("stored");
        if !basis.covers(&person.record.person_labels()) {
            let protected_since = store
                .history(person.key)
                .await
                .expect("history")
                .iter()
                .filter(|c| {
                    c.diff.as_object().is_some_and(|d| {
                        d.iter().any(|(path, e)| {
                            path.starts_with("protection.")
                                && matches!(&e["to"], Value::String(s) if s != "UGRADERT")
                                || path.starts_with("protection.") && e["to"] == json!(true)
                        })
                    })
                })
                .map(|c| c.seq)
                .max()
                .unwrap_or(0);
            assert!(
                seq < protected_since,
                "a change after the person became protected names more than the person: {body}"
            );
        }
        let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["id", "seq", "groups"]), "{body}");
        for group in data["groups"].as_array().expect("groups") {
            let group = group.as_str().expect("group");
            assert!(
                basis.groups.iter().any(|g| g == group),
                "{group} is outside the school basis: {body}"
            );
        }
    }
    assert!(
        bare > 0,
        "some followed persons are protected past the school basis"
    );

    // The client sees every delivery and its attempts.
    let (status, page) = get(school, &format!("/v1/webhooks/{sub_id}/deliveries?limit=5")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let first = &page["deliveries"][0];
    assert!(first["delivered_at"].is_string(), "{first}");
    assert!(
        first["attempts"].as_array().is_some_and(|a| !a.is_empty()),
        "{first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_refuse_bad_input_and_other_clients_see_nothing_of_them() {
    let env = TestEnv::start(Setup {
        seed: 92,
        count: 20,
        ..Setup::default()
    })
    .await;
    let state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    let school = Api::with_state(state.clone(), "school", false).await;
    let other = Api::with_state(state.clone(), "school", false).await;
    let admin = Api::with_state(state, "full", true).await;
    let code = |b: &Value| b["error"]["code"].as_str().map(String::from);
    for (url, why) in [
        ("http://school.example/hook", "https only"),
        ("ftp://school.example/hook", "a web URL"),
        ("https://me:pw@school.example/hook", "no credentials"),
        ("not a url", "a URL"),
    ] {
        let (status, body) = post_json(school.clone(), "/v1/webhooks", &json!({"url": url})).await;
        assert_eq!(
            (status, code(&body).as_deref()),
            (StatusCode::BAD_REQUEST, Some("invalid-url")),
            "{why}: {body}"
        );
    }
    let url = "https://school.example/hook";
    let (status, body) = post_json(
        school.clone(),
        "/v1/webhooks",
        &json!({"url": url, "events": ["person.changed", "person.sneezed"]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "events[1]");
    let (status, body) = post_json(
        school.clone(),
        "/v1/webhooks",
        &json!({"url": url, "events": ["run.failed"]}),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_deref()),
        (StatusCode::FORBIDDEN, Some("admin-only"))
    );
    let (status, sub) = post_json(school.clone(), "/v1/webhooks", &json!({"url": url})).await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    assert!(
        sub["secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("whsec_"))
    );
    let events: Vec<&str> = sub["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        events.contains(&"person.deceased") && !events.contains(&"run.failed"),
        "{sub}"
    );
    let id = sub["id"].as_i64().expect("id");
    // The secret is shown once.
    let (_, list) = get(school.clone(), "/v1/webhooks").await;
    assert_eq!(list["subscriptions"].as_array().map(Vec::len), Some(1));
    assert!(!list.to_string().contains("whsec_"), "{list}");
    // Another client: not its subscription, and not there, answer alike.
    let (_, theirs) = get(other.clone(), "/v1/webhooks").await;
    assert_eq!(theirs["subscriptions"], json!([]));
    for path in [
        format!("/v1/webhooks/{id}/deliveries"),
        "/v1/webhooks/999999/deliveries".into(),
    ] {
        let (status, body) = get(other.clone(), &path).await;
        assert_eq!(
            (status, code(&body).as_deref()),
            (StatusCode::NOT_FOUND, Some("no-such-webhook"))
        );
    }
    let (status, body) = get(other.clone(), "/v1/webhooks/x/deliveries").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // An admin sees it and may take operational events too.
    let (_, all) = get(admin.clone(), "/v1/webhooks").await;
    assert_eq!(all["subscriptions"].as_array().map(Vec::len), Some(1));
    let (status, ops) = post_json(
        admin,
        "/v1/webhooks",
        &json!({"url": url, "events": ["run.failed", "upgrade.deadline"]}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{ops}");
    // Deleting stops it.
    let (status, _, _) = crate::api::send_raw(
        school.clone(),
        axum::http::Request::delete(format!("/v1/webhooks/{id}")),
        axum::body::Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = get(school, "/v1/webhooks").await;
    assert!(
        list["subscriptions"][0]["disabled_at"].is_string(),
        "{list}"
    );
}
