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
