//! Fetch on miss and refresh now: a client allowed to fetch reads a person
//! the store does not hold yet, and has a stored one asked about again,
//! through the API against the simulated registers.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use folkhub_store::{ClientAuth, NewClient};
use folkhub_tests::{Setup, TestEnv};

use crate::api::{Api, get, post};

/// A client of `basis` that may fetch, on `state`'s router.
async fn fetching_client(state: folkhub_api::ApiState, name: &str) -> Api {
    let secret = folkhub_api::auth::new_secret();
    state
        .store
        .add_client(NewClient {
            name: name.into(),
            auth: ClientAuth::ApiKey,
            secret_sha256: folkhub_api::auth::hash_secret(&secret),
            basis: "school".into(),
            purpose: "new pupils".into(),
            admin: false,
            rate_limit: 1000,
            persons_per_minute: 10_000,
            may_fetch: true,
            created_by: "test".into(),
        })
        .await
        .expect("client");
    Api {
        router: folkhub_api::app(state),
        key: secret,
        client: name.into(),
        auth: ClientAuth::ApiKey,
    }
}

/// Norwegians the simulated Folkeregisteret knows (their current IDs).
async fn norwegians(env: &TestEnv, n: usize) -> Vec<String> {
    folkhub_tests::norwegians(env)
        .await
        .into_iter()
        .take(n)
        .collect()
}

async fn fetch_runs(env: &TestEnv, job: &str) -> Vec<folkhub_store::JobRun> {
    env.host
        .store()
        .runs(100)
        .await
        .expect("runs")
        .into_iter()
        .filter(|r| r.job == job)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_may_fetch_reads_a_person_the_store_does_not_hold() {
    let mut env = TestEnv::start(Setup {
        seed: 61,
        count: 100,
        ..Setup::default()
    })
    .await;
    // A cache: a plain lookup within a day is skipped; a refresh is not.
    env.host
        .config
        .connectors
        .entry("folkeregister".into())
        .or_default()
        .cache_ttl = Some("1d".into());
    env.host
        .install("folkeregister", None, false, "test", "fetch")
        .await
        .expect("install");
    let ids = norwegians(&env, 3).await;
    assert_eq!(env.host.store().count_persons().await.expect("count"), 0);
    let state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    let reader = Api::with_state(state.clone(), "school", false).await;
    let school = fetching_client(state.clone(), "school-oslo").await;

    // A client without --fetch reads the store only.
    let (status, body) = get(reader.clone(), &format!("/v1/persons/{}", ids[0])).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("person-not-found")),
        "{body}"
    );
    let (status, body) = post(reader.clone(), &format!("/v1/persons/{}/refresh", ids[0])).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("fetch-not-allowed")),
        "{body}"
    );

    // One that may fetch gets the person from the register, stored now.
    let (status, body) = get(school.clone(), &format!("/v1/persons/{}", ids[0])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["fields"]["name.family"].is_string(), "{body}");
    assert!(
        env.host
            .store()
            .person(&ids[0])
            .await
            .expect("read")
            .is_some(),
        "stored"
    );
    // Fetched for the client: it follows the person from now on.
    let (_, follows) = get(school.clone(), "/v1/follows").await;
    assert_eq!(follows["members"][0]["id"], ids[0].as_str(), "{follows}");
    let (_, follows) = get(reader.clone(), "/v1/follows").await;
    assert_eq!(
        follows["count"], 0,
        "a refused fetch follows nobody: {follows}"
    );
    let runs = fetch_runs(&env, "fetch:school-oslo").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].release.as_deref(), Some("1.1.0"), "{runs:?}");
    // The lookup's register calls are in the cost ledger under the client.
    let costs = env.host.store().costs(None).await.expect("costs");
    assert!(
        costs
            .iter()
            .any(|c| c.job == "fetch:school-oslo" && c.calls > 0),
        "{costs:?}"
    );
    // And the read is in the access log, as every read is.
    let logged = env
        .host
        .store()
        .access_log(&folkhub_store::AccessQuery {
            client: Some("school-oslo".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("log");
    assert_eq!(logged.len(), 1, "{logged:?}");

    // Five reads of one new person at once share one lookup (the register
    // is slow, so all five miss the store while it runs).
    env.sim
        .shared
        .inject(std::iter::repeat_n(folkhub_sim::Fault::Slow { ms: 800 }, 2));
    let reads: Vec<_> = (0..5)
        .map(|_| {
            let api = school.clone();
            let path = format!("/v1/persons/{}", ids[1]);
            tokio::spawn(async move { get(api, &path).await })
        })
        .collect();
    for read in reads {
        let (status, body) = read.await.expect("read");
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(fetch_runs(&env, "fetch:school-oslo").await.len(), 2);

    // Refresh asks the register now, past the cache a lookup would use.
    let (status, body) = post(school.clone(), &format!("/v1/persons/{}/refresh", ids[0])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["fields"]["name.family"].is_string(), "{body}");
    let runs = fetch_runs(&env, "fetch:school-oslo").await;
    assert_eq!(runs.len(), 3);
    assert_eq!(
        (runs[0].counts.fetched, runs[0].counts.cached),
        (1, 0),
        "{:?}",
        runs[0]
    );
    let cached = folkhub_app::sync::run(
        &env.host,
        "folkeregister",
        folkhub_app::sync::Mode::Ids(vec![ids[0].clone()]),
    )
    .await
    .expect("lookup");
    assert_eq!(
        (cached.counts.fetched, cached.counts.cached),
        (0, 1),
        "a plain lookup within the TTL is skipped"
    );

    // A protected person fetched for a school: shaped by its basis as any
    // read is (the address is withheld, its value nowhere in the answer).
    let protected = env
        .sim
        .truth_for(&["folkeregister"])
        .await
        .into_iter()
        .find(|t| {
            t.fields.get("protection.level").and_then(|v| v.as_str()) == Some("FORTROLIG")
                && t.fields.contains_key("address.residential")
                && t.ids
                    .last()
                    .is_some_and(|id| id.len() == 11 && !ids.contains(id))
        })
        .expect("a FORTROLIG person in the simulated population");
    let street = protected.fields["address.residential"]["street"]
        .as_str()
        .expect("street")
        .to_string();
    let id = protected.ids.last().expect("id").clone();
    let (status, body) = get(school.clone(), &format!("/v1/persons/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["fields"].get("address.residential").is_none(),
        "{body}"
    );
    assert_eq!(
        body["withheld"]["address.residential"], "protected",
        "{body}"
    );
    assert!(!body.to_string().contains(&street), "{body}");

    // Someone no register knows: not found, after asking.
    let unknown = "01018040006";
    assert!(!ids.iter().any(|i| i == unknown));
    let (status, body) = get(school.clone(), &format!("/v1/persons/{unknown}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("person-not-found")),
        "{body}"
    );
    // A scheme no installed connector looks up says so.
    let (status, body) = get(school, "/v1/persons/se:196408233234").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no-register")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_past_its_deadline_answers_504_and_the_lookup_goes_on() {
    let env = TestEnv::start(Setup {
        seed: 62,
        count: 20,
        ..Setup::default()
    })
    .await;
    env.host
        .install("folkeregister", None, false, "test", "fetch")
        .await
        .expect("install");
    let id = norwegians(&env, 1).await.remove(0);
    let mut state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    state.fetch_deadline = Duration::from_millis(500);
    let school = fetching_client(state, "school-slow").await;
    env.sim.shared.inject(std::iter::repeat_n(
        folkhub_sim::Fault::Slow { ms: 2000 },
        2,
    ));
    let started = Instant::now();
    let (status, body) = get(school.clone(), &format!("/v1/persons/{id}")).await;
    let took = started.elapsed();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::GATEWAY_TIMEOUT, Some("fetch-timeout")),
        "{body}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    // The lookup went on: a read a moment later finds the person.
    let mut found = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if env.host.store().person(&id).await.expect("read").is_some() {
            found = true;
            break;
        }
    }
    assert!(found, "the lookup did not go on");
    let (status, body) = get(school, &format!("/v1/persons/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fetch_runs(&env, "fetch:school-slow").await.len(), 1);
}
