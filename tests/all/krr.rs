//! The KRR simulator rejects what the real service rejects, and the
//! connector turns it into the right error kind.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use folkhub_core::contract::ConnectorError;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use folkhub_tests::{Setup, TestEnv};

async fn post(env: &TestEnv, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = Request::post("/rest/v1/personer").header("content-type", "application/json");
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let app = folkhub_sim::router(env.sim.shared.clone());
    let response = app
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn krr_checks_auth_scopes_and_batch_size() {
    let env = TestEnv::start(Setup {
        seed: 21,
        count: 60,
        ..Setup::default()
    })
    .await;
    let truth = env.sim.truth_for(&["folkeregister", "krr"]).await;
    let registered = truth
        .iter()
        .find(|t| t.fields.contains_key("contact.digital-mailbox"))
        .expect("someone has a mailbox");
    let id = registered.ids.last().unwrap().clone();

    let (status, _) = post(&env, None, json!({"personidentifikatorer": [id]})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let freg_only = env
        .sim
        .shared
        .tokens
        .issue(vec![folkhub_sim::freg::SCOPE.into()]);
    let (status, _) = post(
        &env,
        Some(&freg_only),
        json!({"personidentifikatorer": [id]}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Contact scope only: e-mail yes, digital mailbox no.
    let contact = env
        .sim
        .shared
        .tokens
        .issue(vec![folkhub_sim::krr::SCOPE_CONTACT.into()]);
    let (status, body) = post(&env, Some(&contact), json!({"personidentifikatorer": [id]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["personer"][0].get("digital_post").is_none(), "{body}");
    assert!(
        body["personer"][0].get("kontaktinformasjon").is_some(),
        "{body}"
    );

    let too_many: Vec<String> = std::iter::repeat_n(id.clone(), 1001).collect();
    let (status, _) = post(
        &env,
        Some(&contact),
        json!({"personidentifikatorer": too_many}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(&env, Some(&contact), json!({"personidentifikatorer": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(&env, Some(&contact), json!({"identifikatorer": [id]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Through the connector: a malformed ID is refused by KRR as bad input.
    env.host
        .install("krr", None, false, "test", "krr")
        .await
        .expect("install");
    let connector = env.host.load("krr").await.expect("load");
    let error = connector
        .lookup(&["12345678901".to_string()])
        .await
        .expect_err("refused");
    assert!(
        matches!(error.connector_error(), Some(ConnectorError::BadInput(_))),
        "{error}"
    );
    let found = connector
        .lookup(std::slice::from_ref(&id))
        .await
        .expect("lookup");
    assert!(matches!(
        found[0].outcome,
        folkhub_core::contract::LookupOutcome::Found(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sunset_upstream_version_answers_gone_and_the_next_release_continues_the_feed() {
    let env = TestEnv::start(Setup {
        seed: 12,
        count: 150,
        ..Setup::default()
    })
    .await;
    let sunset = chrono::NaiveDate::from_ymd_opt(2027, 6, 30).expect("date");
    env.sim
        .shared
        .sunsets
        .lock()
        .expect("sunsets")
        .push(("krr-v1".into(), sunset));
    env.sim.shared.set_today(sunset.pred_opt().expect("date"));
    let fast = folkhub_sync::Options {
        backoff: std::time::Duration::from_millis(5),
        ..folkhub_sync::Options::default()
    };

    // The 1.x release speaks /rest/v1 (its base-url before the migration).
    let mut v1 = env.host.config.clone();
    v1.connectors
        .get_mut("krr")
        .expect("krr")
        .config
        .insert("base-url".into(), format!("{}/rest/v1", env.sim.base_url()));
    let old_host = folkhub_app::Host::open(v1).await.expect("host");
    for id in ["folkeregister"] {
        env.host
            .install(id, None, false, "test", "sunset")
            .await
            .expect("install");
        let c = env.host.load(id).await.expect("load");
        folkhub_sync::full(env.host.store(), &c, &["no-fnr", "no-dnr"], &fast)
            .await
            .expect("freg");
    }
    let installed = old_host
        .install("krr", Some("1.0.1"), false, "test", "before the sunset")
        .await
        .expect("install 1.0.1");
    assert_eq!(installed.version, "1.0.1");
    let old = old_host.load("krr").await.expect("load");
    let summary = folkhub_sync::full(old_host.store(), &old, &["no-fnr", "no-dnr"], &fast)
        .await
        .expect("sync");
    assert_eq!(
        summary.status,
        folkhub_store::RunStatus::Succeeded,
        "{:?}",
        summary.errors
    );
    let cursor = old_host.store().cursor("krr").await.expect("cursor");
    assert!(cursor.is_some());
    let seen = env.sim.shared.population.read().await.krr_changes.len() as u64;

    // The sunset passes: v1 answers 410 and the old release fails clearly,
    // without retries and without touching stored data.
    env.sim.shared.set_today(sunset);
    env.sim.advance(100).await;
    let summary = folkhub_sync::changes(old_host.store(), &old, &fast)
        .await
        .expect("run");
    assert_eq!(summary.status, folkhub_store::RunStatus::Failed);
    assert!(
        summary
            .errors
            .iter()
            .any(|e| e.contains("retired") && e.contains("upstream API version")),
        "{:?}",
        summary.errors
    );
    assert_eq!(
        old_host.store().cursor("krr").await.expect("cursor"),
        cursor
    );

    // The admin migrates base-url to /rest/v2 and installs 2.0.0: the feed
    // continues from the stored cursor, with no gap and no re-read.
    let installed = env
        .host
        .install("krr", Some("2.0.0"), false, "test", "upstream v1 retired")
        .await
        .expect("install 2.0.0");
    assert_eq!(installed.version, "2.0.0");
    let new = env.host.load("krr").await.expect("load");
    let summary = folkhub_sync::changes(env.host.store(), &new, &fast)
        .await
        .expect("run");
    assert_eq!(
        summary.status,
        folkhub_store::RunStatus::Succeeded,
        "{:?}",
        summary.errors
    );
    let log_length = env.sim.shared.population.read().await.krr_changes.len() as u64;
    assert!(log_length > seen, "the changes touched KRR");
    assert_eq!(
        summary.counts.feed_events,
        log_length - seen,
        "exactly the entries after the stored cursor: none lost, none read again"
    );
    let freg = env.host.load("folkeregister").await.expect("load");
    folkhub_sync::changes(env.host.store(), &freg, &fast)
        .await
        .expect("freg changes");
    let truth = env.sim.truth_for(&["folkeregister", "krr"]).await;
    let wrong =
        crate::end_to_end::mismatches(env.host.store(), &truth, &["folkeregister", "krr"]).await;
    assert!(wrong.is_empty(), "{:#?}", &wrong[..wrong.len().min(10)]);
}
