//! Folkeregisteret simulator → connector in the sandbox → store → merged
//! record, compared with the ground truth for every person.

use std::collections::BTreeMap;

use folkhub_sim::{Fault, Truth};
use folkhub_store::RunStatus;
use folkhub_store::prelude::*;
use folkhub_sync::Options;
use folkhub_tests::{Setup, TestEnv};
use serde_json::Value;

/// Compares every person with the truth for the fields `sources` provide;
/// returns the mismatches.
pub(crate) async fn mismatches(
    store: &dyn PersonStore,
    truth: &[Truth],
    sources: &[&str],
) -> Vec<String> {
    // The fields the installed releases of `sources` claim (an older
    // release maps fewer than the simulator serves); without installations,
    // what the catalogue says those sources provide.
    let manifest =
        folkhub_manifest::Manifest::load(&folkhub_tests::root().join("registry-manifest.toml"))
            .expect("manifest");
    let claimed: std::collections::BTreeSet<String> = store
        .installations()
        .await
        .expect("installations")
        .iter()
        .filter(|i| sources.contains(&i.connector.as_str()))
        .filter_map(|i| manifest.find(&i.connector, Some(&i.version)))
        .flat_map(|r| r.fields.iter().cloned())
        .collect();
    let mut out = Vec::new();
    for t in truth {
        let current = t.ids.last().expect("every person has an ID");
        let Some(person) = store.person(current).await.expect("store read") else {
            out.push(format!("{current}: missing"));
            continue;
        };
        for old in &t.ids {
            let by_old = store.person(old).await.expect("store read").map(|p| p.key);
            if by_old != Some(person.key) {
                out.push(format!(
                    "{old} (an earlier ID of {current}) resolves to {by_old:?}, not {}",
                    person.key
                ));
            }
        }
        let provided = |path: &str| {
            if claimed.is_empty() {
                folkhub_core::fields::lookup(path)
                    .is_some_and(|f| f.sources.iter().any(|s| sources.contains(s)))
            } else {
                claimed.contains(path)
            }
        };
        let expected: BTreeMap<String, Value> = t
            .fields
            .iter()
            .filter(|(k, _)| provided(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let got: BTreeMap<String, Value> = person
            .record
            .fields
            .iter()
            .map(|(k, f)| (k.clone(), f.value.clone()))
            .collect();
        // A register that starts protecting a person stops sending their
        // location: that is no move. The location stored before stays, and
        // carries the person's protection (contract 2.1 coverage); the
        // truth, which knows only what registers send today, lacks it.
        let markers = person.record.person_labels();
        let kept_and_protected = |key: &str| {
            !expected.contains_key(key)
                && !markers.is_empty()
                && folkhub_core::fields::lookup(key).is_some_and(|f| f.location)
                && person
                    .record
                    .fields
                    .get(key)
                    .is_some_and(|f| markers.iter().all(|m| f.labels.contains(m)))
        };
        if got != expected {
            for key in got
                .keys()
                .chain(expected.keys())
                .collect::<std::collections::BTreeSet<_>>()
            {
                if got.get(key) != expected.get(key) && !kept_and_protected(key) {
                    out.push(format!(
                        "{current} {key}: stored {:?}, truth {:?}",
                        got.get(key),
                        expected.get(key)
                    ));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_sync_then_change_feed_matches_the_truth_for_every_person() {
    let env = TestEnv::start(Setup {
        seed: 42,
        count: 2000,
        ..Setup::default()
    })
    .await;
    let installed = env
        .host
        .install("folkeregister", None, false, "test", "e2e")
        .await
        .expect("install");
    assert_eq!(installed.contract, "2.1.0");
    let connector = env.host.load("folkeregister").await.expect("load");
    let options = Options::default();

    let summary = folkhub_sync::full(
        env.host.store(),
        &connector,
        &["no-fnr", "no-dnr"],
        &options,
    )
    .await
    .expect("full sync");
    assert_eq!(summary.status, RunStatus::Succeeded, "{:?}", summary.errors);
    assert_eq!(summary.counts.created, 2000);
    let truth = env.sim.truth_for(&["folkeregister"]).await;
    let wrong = mismatches(env.host.store(), &truth, &["folkeregister"]).await;
    assert!(
        wrong.is_empty(),
        "{} mismatches after the full sync, first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(15)]
    );
    // One token for the whole sync: the host caches it.
    assert_eq!(
        env.sim
            .shared
            .tokens
            .issued_count
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // The register changes; the feed brings it in.
    env.sim.advance(400).await;
    let summary = folkhub_sync::changes(env.host.store(), &connector, &options)
        .await
        .expect("change sync");
    assert_eq!(summary.status, RunStatus::Succeeded, "{:?}", summary.errors);
    assert!(summary.counts.changed > 100, "{:?}", summary.counts);
    assert!(
        summary.counts.created > 0,
        "births create persons: {:?}",
        summary.counts
    );
    let truth = env.sim.truth_for(&["folkeregister"]).await;
    let wrong = mismatches(env.host.store(), &truth, &["folkeregister"]).await;
    assert!(
        wrong.is_empty(),
        "{} mismatches after the change sync, first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(15)]
    );

    // Caught up: a second run reads no events and changes nothing.
    let again = folkhub_sync::changes(env.host.store(), &connector, &options)
        .await
        .expect("idle sync");
    assert_eq!((again.counts.feed_events, again.counts.changed), (0, 0));

    // Histories explain changes.
    let someone = truth
        .iter()
        .find(|t| t.ids.len() > 1)
        .or(truth.first())
        .expect("a person");
    let person = env
        .host
        .store()
        .person(someone.ids.last().expect("id"))
        .await
        .expect("read")
        .expect("person");
    assert!(
        !env.host
            .store()
            .history(person.key)
            .await
            .expect("history")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_retried_and_malformed_answers_change_nothing() {
    let env = TestEnv::start(Setup {
        seed: 3,
        count: 150,
        ..Setup::default()
    })
    .await;
    env.host
        .install("folkeregister", None, false, "test", "faults")
        .await
        .expect("install");
    let connector = env.host.load("folkeregister").await.expect("load");
    let fast = Options {
        backoff: std::time::Duration::from_millis(5),
        ..Options::default()
    };

    env.sim.shared.inject([
        Fault::RateLimited { retry_after_ms: 20 },
        Fault::Status { status: 503 },
    ]);
    let summary = folkhub_sync::full(env.host.store(), &connector, &["no-fnr", "no-dnr"], &fast)
        .await
        .expect("sync");
    assert_eq!(summary.status, RunStatus::Succeeded, "{:?}", summary.errors);
    assert_eq!(summary.counts.created, 150);
    let cursor = env
        .host
        .store()
        .cursor("folkeregister")
        .await
        .expect("cursor");

    env.sim.advance(50).await;
    let before: Vec<_> = futures_snapshot(&env).await;
    // Truncated JSON and an HTML error page on every attempt: the run fails,
    // the cursor stays, and no stored record changes.
    env.sim.shared.inject([
        Fault::Truncated,
        Fault::Html,
        Fault::Truncated,
        Fault::Html,
        Fault::Truncated,
    ]);
    let summary = folkhub_sync::changes(env.host.store(), &connector, &fast)
        .await
        .expect("sync");
    assert_eq!(summary.status, RunStatus::Failed);
    let message = summary.errors.join("\n");
    assert!(
        message.contains("not valid JSON") || message.contains("unavailable"),
        "{message}"
    );
    assert_eq!(
        env.host
            .store()
            .cursor("folkeregister")
            .await
            .expect("cursor"),
        cursor
    );
    assert_eq!(futures_snapshot(&env).await, before);

    // Once the register answers again, the feed catches up.
    let summary = folkhub_sync::changes(env.host.store(), &connector, &fast)
        .await
        .expect("sync");
    assert_eq!(summary.status, RunStatus::Succeeded, "{:?}", summary.errors);
    let runs = env.host.store().runs(10).await.expect("runs");
    assert_eq!(runs.len(), 3);
    assert_eq!(runs[1].status, RunStatus::Failed);
}

async fn futures_snapshot(env: &TestEnv) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for id in env
        .host
        .store()
        .active_ids(&["no-fnr", "no-dnr"])
        .await
        .expect("ids")
    {
        if let Some(p) = env.host.store().person(&id).await.expect("read") {
            out.push((p.key, p.version));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_an_unauthorized_error_not_a_trap() {
    let env = TestEnv::start(Setup {
        seed: 5,
        count: 20,
        trust_client: false,
        ..Setup::default()
    })
    .await;
    env.host
        .install("folkeregister", None, false, "test", "auth")
        .await
        .expect("install");
    let connector = env.host.load("folkeregister").await.expect("load");
    let error = connector
        .lookup(&["03851598730".to_string()])
        .await
        .expect_err("no token");
    // The host could not get a token, so the request never left; the
    // connector reports the register as unreachable with the reason.
    let text = error.to_string();
    assert!(
        text.contains("credentials") || text.contains("Unauthorized") || text.contains("refused"),
        "{text}"
    );
    assert_eq!(error.kind(), "connector-error", "{text}");

    // With a token lacking the scope the register itself answers 403.
    let token = env
        .sim
        .shared
        .tokens
        .issue(vec!["folkeregister:deling/privat".into()]);
    let release = env
        .host
        .manifest()
        .find("folkeregister", None)
        .expect("release")
        .clone();
    let mut settings = folkhub_runtime::ConnectorSettings {
        granted_hosts: vec![env.sim.base_url()],
        allow_private_networks: true,
        ..Default::default()
    };
    settings.config.insert(
        "base-url".into(),
        format!(
            "{}/folkeregisteret/offentlig-med-hjemmel/api/v1",
            env.sim.base_url()
        ),
    );
    settings.credentials = Some(std::sync::Arc::new(
        folkhub_runtime::credentials::StaticBearer(token),
    ));
    let connector = env
        .host
        .runtime
        .prepare(
            &release,
            &env.host.manifest().artifact_path(&release),
            settings,
        )
        .expect("prepare");
    let error = connector
        .lookup(&["03851598730".to_string()])
        .await
        .expect_err("wrong scope");
    assert!(
        matches!(
            error.connector_error(),
            Some(folkhub_core::contract::ConnectorError::Unauthorized(_))
        ),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folkeregister_and_krr_merge_into_one_record_per_person() {
    let env = TestEnv::start(Setup {
        seed: 9,
        count: 1500,
        ..Setup::default()
    })
    .await;
    let options = Options::default();
    let mut connectors = Vec::new();
    for id in ["folkeregister", "krr"] {
        env.host
            .install(id, None, false, "test", "two registers")
            .await
            .expect("install");
        connectors.push(env.host.load(id).await.expect("load"));
    }
    for connector in &connectors {
        let summary =
            folkhub_sync::full(env.host.store(), connector, &["no-fnr", "no-dnr"], &options)
                .await
                .expect("full sync");
        assert_eq!(
            summary.status,
            RunStatus::Succeeded,
            "{}: {:?}",
            connector.id,
            summary.errors
        );
    }
    let truth = env.sim.truth_for(&["folkeregister", "krr"]).await;
    let wrong = mismatches(env.host.store(), &truth, &["folkeregister", "krr"]).await;
    assert!(
        wrong.is_empty(),
        "{} mismatches after full syncs, first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(15)]
    );
    // Contact fields come from KRR, names from Folkeregisteret, in one record.
    let with_email = truth
        .iter()
        .find(|t| t.fields.contains_key("contact.email"))
        .expect("someone has an e-mail");
    let person = env
        .host
        .store()
        .person(with_email.ids.last().expect("id"))
        .await
        .expect("read")
        .expect("person");
    assert_eq!(
        person.record.fields["contact.email"].provenance.source,
        "krr"
    );
    assert_eq!(
        person.record.fields["name.given"].provenance.source,
        "folkeregister"
    );

    // Both registers change; both feeds bring it in, KRR's via its change log.
    env.sim.advance(300).await;
    for connector in &connectors {
        let summary = folkhub_sync::changes(env.host.store(), connector, &options)
            .await
            .expect("change sync");
        assert_eq!(
            summary.status,
            RunStatus::Succeeded,
            "{}: {:?}",
            connector.id,
            summary.errors
        );
        assert!(
            summary.counts.feed_events > 0,
            "{}: {:?}",
            connector.id,
            summary.counts
        );
    }
    // Persons born during the changes are not in KRR's log (not registered):
    // nothing to compare for them beyond Folkeregisteret's fields.
    let truth = env.sim.truth_for(&["folkeregister", "krr"]).await;
    let wrong = mismatches(env.host.store(), &truth, &["folkeregister", "krr"]).await;
    assert!(
        wrong.is_empty(),
        "{} mismatches after change syncs, first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(15)]
    );
}
