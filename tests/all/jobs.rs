//! The run log book and the cost ledger: every register call of a run is
//! recorded with its price, the ledger matches what the register counted,
//! and a budget stops full refreshes at 100 %.

use folkhub_cli::commands::sync::{Mode, run};
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
    let host = folkhub_cli::host::Host::open(config).await.expect("host");
    host.install("folkeregister", None, false, "test", "ledger")
        .await
        .expect("install");

    let before = env.sim.shared.requests();
    let summary = run(&host, "folkeregister", Mode::Full, true)
        .await
        .expect("full");
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
    let error = run(&host, "folkeregister", Mode::Full, true)
        .await
        .expect_err("over budget")
        .to_string();
    assert!(
        error.contains("budget") && error.contains("stop_at_budget"),
        "{error}"
    );
    let before = env.sim.shared.requests();
    let summary = run(&host, "folkeregister", Mode::Changes, true)
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
