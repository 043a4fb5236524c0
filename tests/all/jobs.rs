//! The run log book and the cost ledger: every register call of a run is
//! recorded with its price, the ledger matches what the register counted,
//! and a budget stops full refreshes at 100 %.

use folkhub_app::sync::{Mode, run};
use folkhub_tests::{Setup, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_ledger_counts_what_the_register_served_and_a_budget_stops_refreshes() {
    let env = TestEnv::start(Setup {
        seed: 41,
        count: 200,
        ..Setup::default()
    })
    .await;
    let mut config = env.host.config.clone();
    let costs = &mut config
        .connectors
        .get_mut("folkeregister")
        .expect("folkeregister")
        .costs;
    costs.per_call = Some(5.0);
    costs.monthly_fee = 10.0;
    costs.monthly_budget = Some(20.0);
    costs.stop_at_budget = true;
    let host = folkhub_app::Host::open(config).await.expect("host");
    host.install("folkeregister", None, false, "test", "ledger")
        .await
        .expect("install");

    let before = env.sim.shared.requests();
    let summary = run(&host, "folkeregister", Mode::Full).await.expect("full");
    let served = env.sim.shared.requests() - before;
    assert!(served > 0);
    assert_eq!(
        summary.counts.upstream_calls, served,
        "the run log counts the calls"
    );
    let ledger = host.store().costs(None).await.expect("costs");
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!((ledger[0].job.as_str(), ledger[0].calls), ("full", served));
    assert!((ledger[0].cost - served as f64 * 5.0).abs() < 1e-9);
    let runs = host.store().runs(10).await.expect("runs");
    assert_eq!(runs[0].counts.upstream_calls, served);

    // 10 (fee) + 5 per call ≥ 20 after two calls: a full refresh is
    // refused, a feed still runs and is counted.
    assert!(served >= 2, "{served} calls");
    let state = host
        .budget("folkeregister")
        .await
        .expect("budget")
        .expect("set");
    assert!(state.stop && state.warn, "{state:?}");
    let error = run(&host, "folkeregister", Mode::Full)
        .await
        .expect_err("over budget")
        .to_string();
    assert!(
        error.contains("budget") && error.contains("stop_at_budget"),
        "{error}"
    );
    let before = env.sim.shared.requests();
    let summary = run(&host, "folkeregister", Mode::Changes)
        .await
        .expect("changes");
    assert_eq!(
        summary.counts.upstream_calls,
        env.sim.shared.requests() - before
    );
    let total: u64 = host
        .store()
        .costs(None)
        .await
        .expect("costs")
        .iter()
        .map(|r| r.calls)
        .sum();
    assert_eq!(total, served + summary.counts.upstream_calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_cache_serves_within_its_ttl_and_a_feed_event_invalidates_it() {
    let env = TestEnv::start(Setup {
        seed: 42,
        count: 120,
        ..Setup::default()
    })
    .await;
    env.host
        .install("krr", None, false, "test", "ttl")
        .await
        .expect("install");
    env.host
        .install("folkeregister", None, false, "test", "ttl")
        .await
        .expect("install");
    let freg = env.host.load("folkeregister").await.expect("load");
    let krr = env.host.load("krr").await.expect("load");
    let schemes = ["no-fnr", "no-dnr"];
    folkhub_sync::full(
        env.host.store(),
        &freg,
        &schemes,
        &folkhub_sync::Options::default(),
    )
    .await
    .expect("freg");
    let now = chrono::Utc::now();
    let at = |days: i64| folkhub_sync::Options {
        cache_ttl: folkhub_manifest::config::parse_ttl("week"),
        now: Some(now + chrono::Duration::days(days)),
        ..folkhub_sync::Options::default()
    };
    let first = folkhub_sync::full(env.host.store(), &krr, &schemes, &at(0))
        .await
        .expect("first");
    let persons = env.host.store().count_persons().await.expect("count");
    assert_eq!(first.counts.cached, 0);
    // Persons never registered in KRR are not found (nothing is stored for
    // them, so they are asked again next time).
    let unregistered = first.counts.not_found;
    assert!(
        first.counts.fetched + unregistered >= persons - 5,
        "{:?}",
        first.counts
    );

    // A day later: everyone is served from the last answer.
    let before = env.sim.shared.requests();
    let day = folkhub_sync::full(env.host.store(), &krr, &schemes, &at(1))
        .await
        .expect("cached");
    assert_eq!(day.counts.fetched, 0, "{:?}", day.counts);
    assert_eq!(day.counts.not_found, unregistered, "{:?}", day.counts);
    assert!(
        day.counts.cached >= persons - unregistered - 5,
        "{:?}",
        day.counts
    );
    assert!(
        env.sim.shared.requests() - before <= 2,
        "only the feed page and one batch of the unregistered"
    );

    // A feed event refreshes its person within the TTL.
    env.sim.advance(60).await;
    let feed = folkhub_sync::full(env.host.store(), &krr, &schemes, &at(2))
        .await
        .expect("feed");
    assert!(feed.counts.feed_events > 0, "{:?}", feed.counts);
    assert!(
        feed.counts.fetched > 0 && feed.counts.cached > 0,
        "{:?}",
        feed.counts
    );

    // After the TTL everyone is asked again.
    let week = folkhub_sync::full(env.host.store(), &krr, &schemes, &at(8))
        .await
        .expect("expired");
    assert_eq!(week.counts.cached, 0, "{:?}", week.counts);

    // A person the operator adds is looked up at once.
    let truth = env.sim.truth_for(&["folkeregister", "krr"]).await;
    let known = truth[0].ids.last().expect("id").clone();
    // (The clock is injected; the answers were stored at the real time.)
    let added = folkhub_sync::lookup(env.host.store(), &krr, &[known], &at(3))
        .await
        .expect("lookup");
    assert_eq!(
        added.counts.cached, 1,
        "answered within the week: from the cache"
    );
    let fresh = folkhub_sync::lookup(env.host.store(), &krr, &["12345678903".to_string()], &at(3))
        .await
        .expect("new");
    assert_eq!(fresh.counts.cached, 0, "never answered: asked at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_runs_jobs_on_their_schedule_and_stops_cleanly() {
    let env = TestEnv::start(Setup {
        seed: 43,
        count: 60,
        ..Setup::default()
    })
    .await;
    let mut config = env.host.config.clone();
    let job = |kind: &str, connector: Option<&str>, every: Option<&str>, cron: Option<&str>| {
        folkhub_manifest::config::JobConfig {
            kind: kind.into(),
            connector: connector.map(String::from),
            every: every.map(String::from),
            cron: cron.map(String::from),
            area: None,
            ages: None,
        }
    };
    config.jobs.insert(
        "krr-feed".into(),
        job("changes", Some("krr"), Some("1s"), None),
    );
    // 02:00 on 29 February only: not during this test.
    config.jobs.insert(
        "leap-refresh".into(),
        job("full", Some("folkeregister"), None, Some("0 2 29 2 *")),
    );
    let host = folkhub_app::Host::open(config).await.expect("host");
    for id in ["folkeregister", "krr"] {
        host.install(id, None, false, "test", "scheduler")
            .await
            .expect("install");
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // A manual run asked for (as POST /v1/jobs/{name}/run does).
    let (queue, requests) = tokio::sync::mpsc::unbounded_channel();
    queue.send("leap-refresh".to_string()).expect("queue");
    let (scheduled, ()) = tokio::join!(
        folkhub_app::jobs::run(&host, stopped, Some(requests)),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
            let _ = stop.send(true);
        }
    );
    scheduled.expect("scheduler");
    let runs = host.store().runs(100).await.expect("runs");
    let feed: Vec<_> = runs.iter().filter(|r| r.job == "krr-feed").collect();
    assert!((2..=4).contains(&feed.len()), "{runs:?}");
    assert!(
        runs.iter()
            .all(|r| r.status != folkhub_store::RunStatus::Running),
        "every run finished: {runs:?}"
    );
    assert_eq!(
        runs.iter().filter(|r| r.job == "leap-refresh").count(),
        1,
        "only the manual run: its cron is 29 February"
    );

    // A manual run of a configured job, and a clear error for an unknown one.
    let outcome = folkhub_app::jobs::run_job(&host, "leap-refresh")
        .await
        .expect("manual run");
    assert!(outcome.contains("succeeded"), "{outcome}");
    let e = folkhub_app::jobs::run_job(&host, "nightly")
        .await
        .expect_err("unknown")
        .to_string();
    assert!(e.contains("krr-feed, leap-refresh"), "{e}");

    // The log book over the API, and manual runs through it.
    let mut state = folkhub_app::serve::api_state(&host).await.expect("state");
    let no_scheduler = crate::api::Api::with_state(state.clone(), "full", true).await;
    let (status, body) = crate::api::post(no_scheduler, "/v1/jobs/krr-feed/run").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Some("no-scheduler")
        )
    );
    let (queue, mut requests) = tokio::sync::mpsc::unbounded_channel();
    state.jobs = Some(folkhub_api::JobQueue {
        names: std::sync::Arc::new(vec!["krr-feed".into(), "leap-refresh".into()]),
        sender: queue,
    });
    let app = crate::api::Api::with_state(state, "full", true).await;
    let (status, _) = crate::api::post(app.clone(), "/v1/jobs/krr-feed/run").await;
    assert_eq!(status, axum::http::StatusCode::ACCEPTED);
    assert_eq!(requests.recv().await.as_deref(), Some("krr-feed"));
    let (status, body) = crate::api::post(app.clone(), "/v1/jobs/nightly/run").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (axum::http::StatusCode::NOT_FOUND, Some("job-not-found"))
    );
    let (status, body) = crate::api::get(app.clone(), "/v1/jobs/runs?limit=2").await;
    assert_eq!(status, axum::http::StatusCode::OK, "{body}");
    assert_eq!(body["runs"][0]["job"], "leap-refresh");
    let id = body["runs"][0]["id"].as_i64().expect("id");
    let (status, body) = crate::api::get(app.clone(), &format!("/v1/jobs/runs/{id}")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (axum::http::StatusCode::OK, Some("succeeded"))
    );
    let (status, _) = crate::api::get(app, "/v1/jobs/runs/99999").await;
    assert_eq!(status, axum::http::StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_breaker_opens_after_repeated_failed_runs_and_says_so() {
    let env = TestEnv::start(Setup {
        seed: 44,
        count: 30,
        ..Setup::default()
    })
    .await;
    env.host
        .install("folkeregister", None, false, "test", "breaker")
        .await
        .expect("install");
    // The register answers 503 to the next 15 requests: each run tries
    // five times and fails.
    env.sim.shared.inject(std::iter::repeat_n(
        folkhub_sim::Fault::Status { status: 503 },
        15,
    ));
    for _ in 0..folkhub_app::host::BREAKER_FAILURES {
        let e = run(&env.host, "folkeregister", Mode::Changes)
            .await
            .expect_err("fails")
            .to_string();
        assert!(e.contains("failed"), "{e}");
    }
    let breaker = env
        .host
        .store()
        .breaker("folkeregister")
        .await
        .expect("breaker");
    assert_eq!(breaker.failures, folkhub_app::host::BREAKER_FAILURES);
    assert!(breaker.open_until.is_some());
    // Open: the next run makes no call and says why, in the log book too.
    let before = env.sim.shared.requests();
    let e = run(&env.host, "folkeregister", Mode::Changes)
        .await
        .expect_err("open")
        .to_string();
    assert!(
        e.contains("circuit open") && e.contains("3 failed runs"),
        "{e}"
    );
    assert_eq!(
        env.sim.shared.requests(),
        before,
        "no register call while open"
    );
    let runs = env.host.store().runs(1).await.expect("runs");
    assert_eq!(runs[0].status, folkhub_store::RunStatus::Cancelled);
    assert!(runs[0].errors[0].contains("circuit open"));
    let state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    let connectors = state.connectors().await.expect("status");
    let status = connectors
        .iter()
        .find(|c| c.id == "folkeregister")
        .expect("status");
    assert!(
        status
            .breaker
            .as_deref()
            .is_some_and(|b| b.starts_with("open until")),
        "{:?}",
        status.breaker
    );
    // After the pause (moved here by hand) a successful run closes it.
    let mut b = breaker.clone();
    b.open_until = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    env.host.store().set_breaker(&b).await.expect("set");
    let summary = run(&env.host, "folkeregister", Mode::Changes)
        .await
        .expect("the register answers again");
    assert_eq!(summary.status, folkhub_store::RunStatus::Succeeded);
    let closed = env
        .host
        .store()
        .breaker("folkeregister")
        .await
        .expect("breaker");
    assert_eq!((closed.failures, closed.open_until), (0, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_of_one_area_asks_only_for_its_persons() {
    let env = TestEnv::start(Setup {
        seed: 45,
        count: 150,
        ..Setup::default()
    })
    .await;
    for id in ["folkeregister", "krr"] {
        env.host
            .install(id, None, false, "test", "area")
            .await
            .expect("install");
    }
    run(&env.host, "folkeregister", Mode::Full)
        .await
        .expect("freg");
    // The most common home municipality.
    let truth = env.sim.truth_for(&["folkeregister"]).await;
    let mut by_area = std::collections::BTreeMap::<String, usize>::new();
    for t in &truth {
        if let Some(m) = t
            .fields
            .get("address.municipality")
            .and_then(|m| m.as_str())
        {
            *by_area.entry(m.to_string()).or_default() += 1;
        }
    }
    let (area, _) = by_area.iter().max_by_key(|(_, n)| **n).expect("an area");
    let in_area = env
        .host
        .store()
        .active_ids_in(&["no-fnr", "no-dnr"], area)
        .await
        .expect("ids");
    assert!(!in_area.is_empty() && in_area.len() < truth.len());
    let summary = run(&env.host, "krr", Mode::Area(area.clone()))
        .await
        .expect("area refresh");
    assert_eq!(
        summary.counts.fetched + summary.counts.not_found + summary.counts.errors,
        in_area.len() as u64 + summary.counts.feed_events,
        "{:?}",
        summary.counts
    );
    let outside = truth.iter().find(|t| {
        t.fields
            .get("address.municipality")
            .and_then(|m| m.as_str())
            != Some(area.as_str())
            && t.fields.contains_key("contact.email")
    });
    if let Some(t) = outside {
        let p = env
            .host
            .store()
            .person(t.ids.last().expect("id"))
            .await
            .expect("read")
            .expect("stored");
        assert!(!p.record.fields.contains_key("contact.email"), "not asked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_refresh_through_faults_completes_correctly_and_logs_its_retries() {
    use folkhub_sim::Fault;
    let env = TestEnv::start(Setup {
        seed: 46,
        count: 200,
        ..Setup::default()
    })
    .await;
    env.host
        .install("folkeregister", None, false, "test", "faults")
        .await
        .expect("install");
    let freg = env.host.load("folkeregister").await.expect("load");
    env.sim.shared.inject([
        Fault::Status { status: 503 },
        Fault::RateLimited { retry_after_ms: 50 },
        Fault::Slow { ms: 300 },
        Fault::Truncated,
        Fault::Html,
        Fault::Status { status: 500 },
    ]);
    let options = folkhub_sync::Options {
        backoff: std::time::Duration::from_millis(5),
        ..folkhub_sync::Options::default()
    };
    let summary = folkhub_sync::full(env.host.store(), &freg, &["no-fnr", "no-dnr"], &options)
        .await
        .expect("run");
    assert_eq!(
        summary.status,
        folkhub_store::RunStatus::Succeeded,
        "{:?}",
        summary.errors
    );
    assert_eq!(summary.counts.retries, 5, "{:?}", summary.counts);
    let logged = env.host.store().runs(1).await.expect("runs");
    assert_eq!(logged[0].counts.retries, 5);
    let truth = env.sim.truth_for(&["folkeregister"]).await;
    let wrong = crate::end_to_end::mismatches(env.host.store(), &truth, &["folkeregister"]).await;
    assert!(wrong.is_empty(), "{:#?}", &wrong[..wrong.len().min(5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardian_linking_fetches_the_guardians_of_pupils_and_only_adds() {
    let env = TestEnv::start(Setup {
        seed: 48,
        count: 300,
        ..Setup::default()
    })
    .await;
    let mut config = env.host.config.clone();
    config.jobs.insert(
        "guardians".into(),
        folkhub_manifest::config::JobConfig {
            kind: "guardians".into(),
            connector: Some("folkeregister".into()),
            every: Some("1d".into()),
            cron: None,
            area: None,
            ages: Some("6-19".into()),
        },
    );
    let host = folkhub_app::Host::open(config).await.expect("host");
    host.install("folkeregister", None, false, "test", "guardians")
        .await
        .expect("install");
    // The school system adds its pupils only.
    let today = chrono::Utc::now().date_naive();
    let truth = env.sim.truth_for(&["folkeregister"]).await;
    let pupils: Vec<String> = truth
        .iter()
        .filter(|t| {
            let age = t
                .fields
                .get("birth.date")
                .and_then(|b| b.as_str())
                .and_then(|b| chrono::NaiveDate::parse_from_str(b, "%Y-%m-%d").ok())
                .and_then(|b| today.years_since(b));
            age.is_some_and(|a| (6..=19).contains(&a))
                && t.fields
                    .get("relations.parental-responsibility")
                    .and_then(|r| r.as_array())
                    .is_some_and(|r| !r.is_empty())
        })
        .take(25)
        .map(|t| t.ids.last().expect("id").clone())
        .collect();
    assert!(pupils.len() >= 5, "{} pupils", pupils.len());
    run(&host, "folkeregister", Mode::Ids(pupils.clone()))
        .await
        .expect("pupils");
    let before = host.store().count_persons().await.expect("count");
    let missing = folkhub_app::sync::missing_guardians(&host, "6-19")
        .await
        .expect("missing");
    assert!(!missing.is_empty());

    let outcome = folkhub_app::jobs::run_job(&host, "guardians")
        .await
        .expect("guardians job");
    assert!(outcome.contains("guardians looked up"), "{outcome}");
    let after = host.store().count_persons().await.expect("count");
    assert_eq!(
        after,
        before + missing.len() as u64,
        "one new person per guardian"
    );
    assert!(
        folkhub_app::sync::missing_guardians(&host, "6-19")
            .await
            .expect("missing")
            .is_empty()
    );
    // The pupils are untouched and their guardians resolve.
    for id in &pupils {
        let p = host.store().person(id).await.expect("read").expect("pupil");
        for r in p.record.fields["relations.parental-responsibility"]
            .value
            .as_array()
            .expect("list")
        {
            let g = r["id"].as_str().expect("id");
            assert!(host.store().person(g).await.expect("read").is_some(), "{g}");
        }
    }
    let again = folkhub_app::jobs::run_job(&host, "guardians")
        .await
        .expect("again");
    assert!(again.contains("every guardian"), "{again}");
    assert_eq!(host.store().count_persons().await.expect("count"), after);
}
