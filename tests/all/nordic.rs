//! All five registers at once (Folkeregisteret, KRR, Kartverket, SPAR over
//! mutual TLS, DVV's VTJ query and change interface) over one population
//! with Swedes, Finns and persons known in two countries: every person's
//! merged record equals the ground truth, and each simulator refuses what
//! the real service refuses, which the connectors turn into the right error
//! kind.

use folkhub_core::contract::{ConnectorError, LookupOutcome};
use folkhub_core::ids::{self, IdScheme};
use folkhub_sim::Fault;
use folkhub_store::RunStatus;
use folkhub_sync::Options;
use folkhub_tests::{Setup, TestEnv};

use crate::end_to_end::mismatches;

const ALL: &[&str] = &["folkeregister", "krr", "kartverket", "spar", "dvv"];

/// The current HETU of every Finn in the truth: the persons an operator
/// adds for DVV (VTJ has no "everyone" feed). Read as HETUs on purpose:
/// `DDMMYY-NNNT` can also be a valid Swedish `YYMMDD-NNNC`.
fn finnish_ids(truth: &[folkhub_sim::Truth]) -> Vec<String> {
    truth
        .iter()
        .filter_map(|t| {
            t.ids
                .iter()
                .rev()
                .find(|i| ids::parse_finnish(i).is_ok())
                .cloned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_registers_over_five_thousand_persons_match_the_truth() {
    let env = TestEnv::start(Setup {
        seed: 11,
        count: 3400,
        ..Setup::default()
    })
    .await;
    let truth = env.sim.truth_for(ALL).await;
    assert!(truth.len() >= 5000, "{} persons", truth.len());
    let options = Options::default();
    let mut connectors = Vec::new();
    for id in ALL {
        env.host
            .install(id, None, false, "test", "nordic")
            .await
            .expect("install");
        connectors.push(env.host.load(id).await.expect("load"));
    }
    let [freg, krr, kartverket, spar, dvv] = &connectors[..] else {
        unreachable!("five connectors")
    };
    let succeeded = |summary: folkhub_sync::Summary, what: &str| {
        assert_eq!(
            summary.status,
            RunStatus::Succeeded,
            "{what}: {:?}",
            summary.errors
        );
        summary
    };
    for (connector, schemes) in [
        (freg, &["no-fnr", "no-dnr"][..]),
        (krr, &["no-fnr", "no-dnr"][..]),
        (spar, &["se-pnr", "se-snr"][..]),
    ] {
        let summary = folkhub_sync::full(env.host.store(), connector, schemes, &options)
            .await
            .expect("full sync");
        succeeded(summary, &connector.id);
    }
    // VTJ has no "everyone" feed: the operator adds the Finns to follow.
    let summary = folkhub_sync::lookup(env.host.store(), dvv, &finnish_ids(&truth), &options)
        .await
        .expect("dvv lookups");
    succeeded(summary, "dvv");
    // Kartverket enriches the addresses Folkeregisteret gave.
    let summary = folkhub_sync::full(env.host.store(), kartverket, &[], &options)
        .await
        .expect("kartverket");
    let summary = succeeded(summary, "kartverket");
    assert!(summary.counts.fetched > 2000, "{:?}", summary.counts);

    let wrong = mismatches(env.host.store(), &truth, ALL).await;
    assert!(
        wrong.is_empty(),
        "{} mismatches after the full syncs, first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(15)]
    );
    assert_eq!(
        env.host.store().count_persons().await.expect("count"),
        truth.len() as u64,
        "one stored person per real person"
    );

    // A person known in two countries is one person with both IDs, fields
    // from both registers.
    let crosser = truth
        .iter()
        .find(|t| {
            t.ids
                .iter()
                .any(|i| ids::parse(i).is_ok_and(|p| p.scheme == IdScheme::SePnr))
                && t.ids
                    .iter()
                    .any(|i| ids::parse(i).is_ok_and(|p| p.scheme == IdScheme::NoFnr))
                && t.fields.get("status").and_then(|s| s.as_str()) == Some("emigrated")
        })
        .expect("someone moved from Norway to Sweden");
    let person = env
        .host
        .store()
        .person(crosser.ids.first().expect("id"))
        .await
        .expect("read")
        .expect("person");
    assert_eq!(
        person.record.fields["name.given"].provenance.source,
        "folkeregister"
    );
    assert_eq!(
        person.record.fields["address.residential"]
            .provenance
            .source,
        "spar"
    );

    // Every register changes; the feeds and a refresh bring it in,
    // including samordningsnummer → personnummer and corrected HETUs.
    env.sim.advance(600).await;
    for connector in [freg, krr, spar, dvv, kartverket] {
        let summary = folkhub_sync::changes(env.host.store(), connector, &options)
            .await
            .expect("change sync");
        let summary = succeeded(summary, &connector.id);
        if connector.id != "kartverket" {
            assert!(
                summary.counts.feed_events > 0,
                "{}: {:?}",
                connector.id,
                summary.counts
            );
        }
    }
    let truth = env.sim.truth_for(ALL).await;
    let wrong = mismatches(env.host.store(), &truth, ALL).await;
    assert!(
        wrong.is_empty(),
        "{} mismatches after the changes, first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(15)]
    );

    // The merged records equal what the observation log rebuilds.
    let rebuilt = env.host.store().rebuild(false).await.expect("rebuild");
    assert!(
        rebuilt.differing.is_empty(),
        "{} of {} differ: {:?}",
        rebuilt.differing.len(),
        rebuilt.persons,
        &rebuilt.differing[..rebuilt.differing.len().min(5)]
    );

    // Every label of every register protects what it should, for every
    // legal-basis profile, in every output (person, history, FHIR).
    let (withheld, secrets) = crate::access::assert_nothing_leaks(env.host.store()).await;
    let started = std::time::Instant::now();
    crate::access::assert_nothing_leaks_over_the_api(&env.host, &secrets).await;
    eprintln!("no leak over the API: {:?}", started.elapsed());
    for label in ["FORTROLIG", "STRENGT_FORTROLIG", "TURVAKIELTO"] {
        assert!(
            withheld.get(label).copied().unwrap_or(0) > 0,
            "the population has values protected by {label}: {withheld:?}"
        );
    }
    // SPAR answers protected Swedes with their ID and markers only: there
    // is no location value to withhold, and none is stored.
    let mut protected_swedes = 0;
    for t in &truth {
        if t.fields.get("protection.se-protected-registration") == Some(&serde_json::json!(true)) {
            protected_swedes += 1;
            let person = env
                .host
                .store()
                .person(t.ids.last().expect("id"))
                .await
                .expect("read")
                .expect("stored");
            assert!(
                !person.record.fields.contains_key("address.residential"),
                "{:?}",
                person.record.fields.keys()
            );
        }
    }
    assert!(
        protected_swedes > 0,
        "the population has skyddad folkbokföring"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spar_and_dvv_refusals_become_the_right_error_kinds() {
    let env = TestEnv::start(Setup {
        seed: 5,
        count: 120,
        ..Setup::default()
    })
    .await;
    let truth = env.sim.truth_for(&["spar", "dvv"]).await;
    let swede = truth
        .iter()
        .flat_map(|t| t.ids.last())
        .find(|i| ids::parse(i).is_ok_and(|p| p.scheme == IdScheme::SePnr))
        .expect("a Swede")
        .clone();
    let finn = finnish_ids(&truth)[0].clone();

    for id in ["spar", "dvv"] {
        env.host
            .install(id, None, false, "test", "refusals")
            .await
            .expect("install");
    }
    let spar = env.host.load("spar").await.expect("load spar");
    let dvv = env.host.load("dvv").await.expect("load dvv");
    let found = spar
        .lookup(std::slice::from_ref(&swede))
        .await
        .expect("spar lookup");
    assert!(
        matches!(found[0].outcome, LookupOutcome::Found(_)),
        "{:?}",
        found[0]
    );
    let found = dvv
        .lookup(std::slice::from_ref(&finn))
        .await
        .expect("dvv lookup");
    assert!(
        matches!(found[0].outcome, LookupOutcome::Found(_)),
        "{:?}",
        found[0]
    );

    // A malformed ID never reaches the register.
    let bad = spar
        .lookup(&["19791011238".to_string()])
        .await
        .expect("per-ID error");
    assert!(
        matches!(
            &bad[0].outcome,
            LookupOutcome::Failed(ConnectorError::BadInput(_))
        ),
        "{:?}",
        bad[0]
    );
    let bad = dvv
        .lookup(&["010280-952X".to_string()])
        .await
        .expect("per-ID error");
    assert!(
        matches!(
            &bad[0].outcome,
            LookupOutcome::Failed(ConnectorError::BadInput(_))
        ),
        "{:?}",
        bad[0]
    );

    // Unknown IDs are not found.
    let unknown = ids::make_swedish(
        chrono::NaiveDate::from_ymd_opt(1901, 1, 1).expect("date"),
        1,
        false,
    );
    let none = spar.lookup(&[unknown]).await.expect("lookup");
    assert!(matches!(none[0].outcome, LookupOutcome::NotFound));

    // Malformed bodies: truncated XML, an HTML page, a 503 — clear errors, no trap.
    for (fault, check) in [
        (Fault::Truncated, "MalformedResponse"),
        (Fault::Html, "UpstreamUnavailable"),
        (Fault::Status { status: 503 }, "UpstreamUnavailable"),
        (
            Fault::RateLimited {
                retry_after_ms: 2000,
            },
            "RateLimited",
        ),
    ] {
        for connector in [&spar, &dvv] {
            env.sim.shared.inject([fault.clone()]);
            let id = if connector.id == "spar" {
                &swede
            } else {
                &finn
            };
            let error = connector
                .lookup(std::slice::from_ref(id))
                .await
                .expect_err("fault");
            let kind = format!("{:?}", error.connector_error());
            assert!(kind.contains(check), "{} {fault:?}: {error}", connector.id);
        }
    }

    // Wrong customer numbers (SPAR) and a wrong password (VTJ): unauthorized.
    let mut config = env.host.config.clone();
    config
        .connectors
        .get_mut("spar")
        .expect("spar config")
        .secrets
        .insert("KundNrSlutkund".into(), "999999".into());
    config
        .connectors
        .get_mut("dvv")
        .expect("dvv config")
        .secrets
        .insert("vtj-password".into(), "wrong".into());
    let other = folkhub_app::Host::open(config).await.expect("host");
    for (id, person) in [("spar", &swede), ("dvv", &finn)] {
        let connector = other.load(id).await.expect("load");
        let error = connector
            .lookup(std::slice::from_ref(person))
            .await
            .expect_err("refused");
        assert!(
            matches!(
                error.connector_error(),
                Some(ConnectorError::Unauthorized(_))
            ),
            "{id}: {error}"
        );
    }

    // A secret the operator did not set is refused by the host, not sent.
    let mut config = env.host.config.clone();
    config
        .connectors
        .get_mut("dvv")
        .expect("dvv config")
        .secrets
        .remove("vtj-password");
    let other = folkhub_app::Host::open(config).await.expect("host");
    let error = other
        .load("dvv")
        .await
        .expect("load")
        .lookup(std::slice::from_ref(&finn))
        .await
        .expect_err("refused");
    assert!(
        matches!(error.connector_error(), Some(ConnectorError::Denied(_))),
        "{error}"
    );

    // SPAR without the client certificate, and with one from another CA:
    // the TLS handshake refuses it.
    for cert in [
        None,
        Some((
            &env.sim.pki.stranger_cert_file,
            &env.sim.pki.stranger_key_file,
        )),
    ] {
        let mut config = env.host.config.clone();
        let spar_config = config.connectors.get_mut("spar").expect("spar config");
        spar_config.credentials = cert.map(|(c, k)| folkhub_manifest::Credentials::Mtls {
            cert_file: c.clone(),
            key_file: k.clone(),
        });
        let other = folkhub_app::Host::open(config).await.expect("host");
        let error = other
            .load("spar")
            .await
            .expect("load")
            .lookup(std::slice::from_ref(&swede))
            .await
            .expect_err("refused");
        assert!(
            matches!(
                error.connector_error(),
                Some(ConnectorError::Unauthorized(_))
            ),
            "{cert:?}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_spar_and_vtj_answers_fail_the_run_and_change_nothing_stored() {
    let env = TestEnv::start(Setup {
        seed: 6,
        count: 160,
        ..Setup::default()
    })
    .await;
    let fast = Options {
        backoff: std::time::Duration::from_millis(5),
        ..Options::default()
    };
    let truth = env.sim.truth_for(&["spar", "dvv"]).await;
    for id in ["spar", "dvv"] {
        env.host
            .install(id, None, false, "test", "malformed")
            .await
            .expect("install");
    }
    let spar = env.host.load("spar").await.expect("spar");
    let dvv = env.host.load("dvv").await.expect("dvv");
    let summary = folkhub_sync::full(env.host.store(), &spar, &["se-pnr", "se-snr"], &fast)
        .await
        .expect("spar");
    assert_eq!(summary.status, RunStatus::Succeeded, "{:?}", summary.errors);
    let summary = folkhub_sync::lookup(env.host.store(), &dvv, &finnish_ids(&truth), &fast)
        .await
        .expect("dvv");
    assert_eq!(summary.status, RunStatus::Succeeded, "{:?}", summary.errors);

    let snapshot = |schemes: &'static [&'static str]| {
        let store = env.host.store();
        async move {
            let mut out = Vec::new();
            for id in store.active_ids(schemes).await.expect("ids") {
                let p = store.person(&id).await.expect("read").expect("person");
                out.push((p.key, p.version, p.record));
            }
            out
        }
    };
    let before = (
        snapshot(&["se-pnr", "se-snr"]).await,
        snapshot(&["fi-hetu"]).await,
    );
    let cursors = (
        env.host.store().cursor("spar").await.expect("cursor"),
        env.host.store().cursor("dvv").await.expect("cursor"),
    );
    env.sim.advance(300).await;
    for (connector, fault) in [
        (&spar, Fault::Truncated),
        (&dvv, Fault::Html),
        (&dvv, Fault::Truncated),
    ] {
        // Every attempt meets the fault: the run fails, nothing is stored.
        env.sim.shared.inject(std::iter::repeat_n(fault.clone(), 5));
        let summary = folkhub_sync::changes(env.host.store(), connector, &fast)
            .await
            .expect("run");
        assert_eq!(
            summary.status,
            RunStatus::Failed,
            "{} {fault:?}",
            connector.id
        );
        assert!(
            summary.errors.iter().any(|e| e.contains(&connector.id)),
            "{:?}",
            summary.errors
        );
        // Whatever the fault queue still holds must not leak into the next case.
        while folkhub_sim::next_fault(&env.sim.shared).is_some() {}
    }
    let after = (
        snapshot(&["se-pnr", "se-snr"]).await,
        snapshot(&["fi-hetu"]).await,
    );
    assert!(before == after, "stored records changed after failed runs");
    assert_eq!(
        cursors,
        (
            env.host.store().cursor("spar").await.expect("cursor"),
            env.host.store().cursor("dvv").await.expect("cursor"),
        )
    );
    // Once the register answers properly again, the feeds bring the changes in.
    let summary = folkhub_sync::changes(env.host.store(), &spar, &fast)
        .await
        .expect("spar");
    assert_eq!(summary.status, RunStatus::Succeeded, "{:?}", summary.errors);
    assert!(summary.counts.feed_events > 0);
}
