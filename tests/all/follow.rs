//! Follow sets against the simulated registers: a store in the `followed`
//! scope holds the persons clients follow and the guardians of the minors
//! among them, asks the register about nobody else, and deletes persons
//! nobody follows after the retention period.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use folkhub_app::sync::{Mode, run};
use folkhub_manifest::config::Scope;
use folkhub_store::prelude::*;
use folkhub_tests::{Setup, TestEnv};
use serde_json::{Value, json};

use crate::api::{Api, get, post_json, send_raw};

async fn send(api: Api, method: &str, uri: &str) -> (StatusCode, Value) {
    let (status, _, body) = send_raw(
        api,
        Request::builder().method(method).uri(uri),
        Body::empty(),
    )
    .await;
    (status, body)
}

/// Every ID a stored person has.
async fn stored_ids(store: &dyn PersonStore) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut after = 0;
    loop {
        let page = store.persons_after(after, 1000).await.expect("persons");
        let Some(last) = page.last() else { break };
        after = last.key;
        for p in page {
            out.extend(p.ids.into_iter().map(|i| i.value));
        }
    }
    out
}

/// A host in the `followed` scope whose clock is the simulator's day (the
/// day its ages are computed for).
async fn followed_env(seed: u64, count: usize) -> TestEnv {
    let mut env = TestEnv::start(Setup {
        seed,
        count,
        ..Setup::default()
    })
    .await;
    env.host.config.follow.scope = Scope::Followed;
    env.host.today = Some(folkhub_sim::population::today());
    env.host
        .install("folkeregister", None, false, "test", "follow")
        .await
        .expect("install");
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_following_1000_of_20000_holds_them_and_their_guardians_and_asks_about_nobody_else()
{
    let env = followed_env(83, 20_000).await;
    let state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    let school = Api::with_state(state, "school", false).await;

    // The school follows 1,000 Norwegians, every tenth of its register.
    let (followed, guardians) = {
        let population = env.sim.shared.population.read().await;
        let chosen: Vec<&folkhub_sim::population::Person> = population
            .persons
            .iter()
            .filter(|p| p.id().len() == 11)
            .step_by(10)
            .take(1000)
            .collect();
        let followed: BTreeSet<String> = chosen.iter().map(|p| p.id().to_string()).collect();
        // The register's own answer to who has parental responsibility.
        let guardians: BTreeSet<String> = chosen
            .iter()
            .flat_map(|p| population.parental_responsibility(p))
            .filter_map(|r| r["id"].as_str().map(String::from))
            .filter(|id| !followed.contains(id))
            .collect();
        (followed, guardians)
    };
    assert_eq!(followed.len(), 1000);
    assert!(
        guardians.len() > 50,
        "minors among them: {}",
        guardians.len()
    );
    let ids: Vec<&String> = followed.iter().collect();
    for chunk in ids.chunks(400) {
        let (status, body) =
            post_json(school.clone(), "/v1/follows", &json!({ "add": chunk })).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["added"], chunk.len(), "{body}");
    }
    let (_, page) = get(school.clone(), "/v1/follows?limit=5").await;
    assert_eq!(page["count"], 1000, "{page}");

    // The first sync: the feed names all 20,000; only the followed are
    // looked up, then the guardians of the minors among them.
    env.sim.shared.take_asked();
    let summary = run(&env.host, "folkeregister", Mode::Full)
        .await
        .expect("sync");
    assert!(summary.counts.unfollowed >= 18_000, "{:?}", summary.counts);
    let asked: BTreeSet<String> = env.sim.shared.take_asked().into_iter().collect();
    let allowed: BTreeSet<String> = followed.union(&guardians).cloned().collect();
    let strangers: Vec<&String> = asked.difference(&allowed).collect();
    assert!(
        strangers.is_empty(),
        "asked about {} others: {:?}",
        strangers.len(),
        &strangers[..strangers.len().min(5)]
    );
    let store = env.host.store.as_ref();
    let held = stored_ids(store).await;
    assert!(followed.is_subset(&held), "every followed person is stored");
    assert!(
        guardians.is_subset(&held),
        "and every guardian of a followed minor"
    );
    assert_eq!(
        store.count_persons().await.expect("count") as usize,
        followed.len() + guardians.len(),
        "and nobody else"
    );

    // 3,000 changes later, the feed is read: lookups only for the followed.
    env.sim.shared.population.write().await.advance(3000);
    let summary = run(&env.host, "folkeregister", Mode::Changes)
        .await
        .expect("changes");
    assert!(summary.counts.unfollowed > 0, "{:?}", summary.counts);
    assert!(
        summary.counts.fetched > 0,
        "some followed persons changed: {:?}",
        summary.counts
    );
    let asked: BTreeSet<String> = env.sim.shared.take_asked().into_iter().collect();
    let followed_now: BTreeSet<String> = stored_ids(store).await;
    assert!(
        asked.is_subset(&followed_now),
        "a feed event about someone nobody follows made no lookup: {:?}",
        asked.difference(&followed_now).take(5).collect::<Vec<_>>()
    );
    let runs = store.runs(5).await.expect("runs");
    assert_eq!(
        runs[0].counts.unfollowed, summary.counts.unfollowed,
        "in the run log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfollowed_person_is_deleted_after_the_retention_period_and_the_access_log_stays() {
    let mut env = followed_env(84, 120).await;
    env.host.config.follow.retention = "30d".into();
    let state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    let school = Api::with_state(state.clone(), "school", false).await;
    let clinic = Api::with_state(state, "full", false).await;
    let ids: Vec<String> = folkhub_tests::norwegians(&env)
        .await
        .into_iter()
        .step_by(9)
        .take(6)
        .collect();
    for id in &ids[..4] {
        let (status, body) = send(school.clone(), "PUT", &format!("/v1/follows/{id}")).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // The clinic follows one of them too: it stays when the school lets go.
    let (status, _) = send(clinic.clone(), "PUT", &format!("/v1/follows/{}", ids[0])).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = send(school.clone(), "PUT", &format!("/v1/follows/{}", ids[0])).await;
    assert_eq!(status, StatusCode::OK, "following twice changes nothing");
    run(&env.host, "folkeregister", Mode::Full)
        .await
        .expect("sync");
    let store = env.host.store.as_ref();
    let minors_guardians = store
        .follow_count(&folkhub_store::FollowSet::Guardians)
        .await
        .expect("count");
    // Read one, so the access log names the person.
    let (status, _) = get(school.clone(), &format!("/v1/persons/{}", ids[1])).await;
    assert_eq!(status, StatusCode::OK);
    state_flush(&env).await;

    // Kartverket enriches the followed persons' addresses.
    env.host
        .install("kartverket", None, false, "test", "follow")
        .await
        .expect("install kartverket");
    let asked = |s: &folkhub_sync::Summary| s.counts.fetched + s.counts.not_found;
    let before = run(&env.host, "kartverket", Mode::Full)
        .await
        .expect("enrich");
    let gone = store.person(&ids[1]).await.expect("read").expect("stored");
    assert!(
        gone.record.fields.contains_key("address.residential"),
        "the person to let go has an address to enrich"
    );

    // The school lets go of two; one of them the clinic still follows.
    for id in &ids[..2] {
        let (status, _) = send(school.clone(), "DELETE", &format!("/v1/follows/{id}")).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    // Nobody follows that person now: not enriched while waiting out
    // the retention period.
    let after = run(&env.host, "kartverket", Mode::Full)
        .await
        .expect("enrich");
    assert_eq!(
        asked(&after),
        asked(&before) - 1,
        "{:?} {:?}",
        before.counts,
        after.counts
    );
    let (status, body) = send(school.clone(), "DELETE", &format!("/v1/follows/{}", ids[5])).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not-followed"))
    );

    let (_, first) = folkhub_app::follow::retention(&env.host, "retention")
        .await
        .expect("sweep");
    assert!(first.deleted.is_empty(), "within the period: {first:?}");
    assert!(store.person(&ids[1]).await.expect("read").is_some());
    // 31 days on, the sweep deletes the one nobody follows.
    env.host.today = env.host.today.map(|d| d + chrono::Duration::days(31));
    let (run_id, report) = folkhub_app::follow::retention(&env.host, "retention")
        .await
        .expect("sweep");
    assert_eq!(report.deleted.len(), 1, "{report:?}");
    assert!(store.person(&ids[1]).await.expect("read").is_none(), "gone");
    assert!(
        store.person(&ids[0]).await.expect("read").is_some(),
        "the clinic's stays"
    );
    for id in &ids[2..4] {
        assert!(store.person(id).await.expect("read").is_some());
    }
    let digest = store.deletion_digest(&ids[1]).await.expect("digest");
    let audit = store.deletions(10).await.expect("audit");
    assert!(audit[0].id_digests.contains(&digest), "{audit:?}");
    let runs = store.runs(5).await.expect("runs");
    let sweep = runs
        .iter()
        .find(|r| r.id == run_id)
        .expect("the sweep's run");
    assert_eq!(sweep.counts.deleted, 1);
    // The access log keeps the read of the deleted person.
    let log = store
        .access_log(&folkhub_store::AccessQuery {
            client: Some(school.client.clone()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("log");
    assert!(!log.is_empty(), "the access log is kept");
    // Guardians of the minors still followed stay followed.
    assert_eq!(
        store
            .follow_count(&folkhub_store::FollowSet::Guardians)
            .await
            .expect("count"),
        minors_guardians
    );
    let (status, body) = get(school, &format!("/v1/persons/{}", ids[1])).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("person-not-found"))
    );

    // A national mirror deletes nobody: the sweep is refused.
    env.host.config.follow.scope = Scope::National;
    let refused = folkhub_app::follow::retention(&env.host, "retention")
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("follow.scope"), "{refused}");
}

/// Waits for the access log writer's group commit.
async fn state_flush(env: &TestEnv) {
    for _ in 0..50 {
        let n = env
            .host
            .store
            .access_log(&folkhub_store::AccessQuery {
                limit: 1,
                ..Default::default()
            })
            .await
            .expect("log")
            .len();
        if n > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_routes_refuse_bad_input_and_tell_nothing_about_other_clients() {
    let env = followed_env(85, 40).await;
    let state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    let school = Api::with_state(state.clone(), "school", false).await;
    let other = Api::with_state(state.clone(), "school", false).await;
    let admin = Api::with_state(state, "full", true).await;
    let ids: Vec<String> = folkhub_tests::norwegians(&env)
        .await
        .into_iter()
        .take(3)
        .collect();
    run(&env.host, "folkeregister", Mode::Ids(ids.clone()))
        .await
        .expect("lookup");
    let stored = &ids[0];
    let never = "01010100050"; // a valid fødselsnummer nobody has here
    for id in [stored.as_str(), never] {
        let (status, _) = send(school.clone(), "PUT", &format!("/v1/follows/{id}")).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // A member looks the same whether the store holds the person or not.
    let (_, page) = get(school.clone(), "/v1/follows").await;
    let members = page["members"].as_array().expect("members");
    let keys = |m: &Value| m.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&members[0]), keys(&members[1]), "{page}");
    assert_eq!(page["count"], 2);
    // Another client's set is its own: it sees nothing of the school's.
    let (_, theirs) = get(other.clone(), "/v1/follows").await;
    assert_eq!(theirs["count"], 0, "{theirs}");
    let (status, _) = send(other.clone(), "DELETE", &format!("/v1/follows/{stored}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        env.host
            .store
            .follow_count(&folkhub_store::FollowSet::Client(school.client.clone()))
            .await
            .expect("count"),
        2
    );

    // Bad input: named, and nothing changes.
    let (status, body) = send(school.clone(), "PUT", "/v1/follows/12345678901").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid-id")),
        "{body}"
    );
    let (status, body) = post_json(
        school.clone(),
        "/v1/follows",
        &json!({"add": [ids[1], "not-an-id"]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "add[1]", "{body}");
    let (_, page) = get(school.clone(), "/v1/follows").await;
    assert_eq!(page["count"], 2, "nothing was added");
    let (status, body) = post_json(
        school.clone(),
        "/v1/follows",
        &json!({"add": [], "remove": []}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid-body"))
    );
    let many: Vec<String> = (0..10_001).map(|_| ids[1].clone()).collect();
    let (status, body) = post_json(school.clone(), "/v1/follows", &json!({"add": many})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("batch-too-large"))
    );
    let (status, body) = post_json(
        school.clone(),
        "/v1/follows",
        &json!({"add": [ids[1]], "everyone": true}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = get(school.clone(), "/v1/follows?limit=0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("page-too-large"))
    );

    // Paging walks every member once.
    let (_, r) = post_json(
        school.clone(),
        "/v1/follows",
        &json!({"add": [ids[1], ids[2]]}),
    )
    .await;
    assert_eq!(r["added"], 2, "{r}");
    let mut seen = Vec::new();
    let mut uri = "/v1/follows?limit=1".to_string();
    loop {
        let (_, page) = get(school.clone(), &uri).await;
        for m in page["members"].as_array().expect("members") {
            seen.push(m["id"].as_str().expect("id").to_string());
        }
        match page["next"].as_str() {
            Some(next) => uri = format!("/v1/follows?limit=1&after={next}"),
            None => break,
        }
    }
    let mut expected = vec![
        ids[0].clone(),
        ids[1].clone(),
        ids[2].clone(),
        never.to_string(),
    ];
    expected.sort();
    assert_eq!(seen, expected);

    // Populations: shared by the clients granted; to anyone else, one not
    // granted and one that does not exist answer alike.
    env.host
        .store
        .add_population(
            "pupils",
            "pupils of Oslo",
            std::slice::from_ref(&school.client),
            "admin",
        )
        .await
        .expect("population");
    let (status, _) = send(
        school.clone(),
        "PUT",
        &format!("/v1/populations/pupils/members/{stored}"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, list) = get(school.clone(), "/v1/populations").await;
    assert_eq!(list["populations"][0]["members"], 1, "{list}");
    assert!(
        list["populations"][0]["clients"].is_null(),
        "only admins see who shares it"
    );
    let (_, list) = get(other.clone(), "/v1/populations").await;
    assert_eq!(list["populations"], json!([]), "{list}");
    let (s1, b1) = get(other.clone(), "/v1/populations/pupils/members").await;
    let (s2, b2) = get(other.clone(), "/v1/populations/nosuch/members").await;
    assert_eq!((s1, s2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(b1["error"]["code"], b2["error"]["code"]);
    assert_eq!(
        b1["error"]["message"]
            .as_str()
            .map(|m| m.replace("pupils", "X")),
        b2["error"]["message"]
            .as_str()
            .map(|m| m.replace("nosuch", "X"))
    );
    let (status, _) = send(
        other.clone(),
        "PUT",
        &format!("/v1/populations/pupils/members/{stored}"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, page) = get(admin.clone(), "/v1/populations/pupils/members").await;
    assert_eq!(
        (status, page["count"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{page}"
    );
    let (_, list) = get(admin, "/v1/populations").await;
    assert_eq!(
        list["populations"][0]["clients"],
        json!([school.client.clone()])
    );
}
