//! "Not in this answer" is not "removed" (contract 2.1), end to end through
//! the simulators: a KRR token with a narrower scope, a Finn who gets
//! turvakielto under a product without the permit, and a Swede who gets
//! sekretessmarkering. Nothing stored is lost; every location kept is
//! protected at once, in the person read, the history and FHIR.

use folkhub_core::access::{LegalBasis, view};
use folkhub_manifest::config::Credentials;
use folkhub_sync::Options;
use folkhub_tests::{Setup, TestEnv};

const DIGITAL_POST_ONLY: &str = "krr:global/digitalpost.read";

/// A host on the same store whose connector `id` is configured by `change`.
async fn host_with(
    env: &TestEnv,
    id: &str,
    change: impl FnOnce(&mut folkhub_manifest::config::ConnectorConfig),
) -> folkhub_app::Host {
    let mut config = env.host.config.clone();
    change(config.connectors.get_mut(id).expect("configured"));
    folkhub_app::Host::open(config).await.expect("host")
}

fn fast() -> Options<'static> {
    Options {
        backoff: std::time::Duration::from_millis(10),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrower_answer_keeps_what_it_does_not_cover_and_protection_is_no_move() {
    let env = TestEnv::start(Setup {
        seed: 21,
        count: 300,
        ..Setup::default()
    })
    .await;
    let store = env.host.store();
    for id in ["folkeregister", "krr", "spar", "dvv"] {
        env.host
            .install(id, None, false, "test", "coverage")
            .await
            .expect("install");
    }
    let freg = env.host.load("folkeregister").await.expect("load");
    folkhub_sync::full(store, &freg, &["no-fnr", "no-dnr"], &fast())
        .await
        .expect("freg");
    let krr = env.host.load("krr").await.expect("load");
    folkhub_sync::full(store, &krr, &["no-fnr", "no-dnr"], &fast())
        .await
        .expect("krr");

    // KRR under a token with only the digital-post scope: the e-mail and
    // mobile are not in the answer, and not removed.
    let with_email = folkhub_tests::all_persons(store)
        .await
        .into_iter()
        .find(|p| {
            p.record.fields.contains_key("contact.email")
                && p.record.fields.contains_key("contact.mobile")
        })
        .expect("a person with e-mail and mobile");
    let id = with_email
        .ids
        .iter()
        .find(|i| i.active)
        .expect("id")
        .value
        .clone();
    let narrow = host_with(&env, "krr", |c| {
        if let Some(Credentials::Maskinporten { scope, .. }) = &mut c.credentials {
            *scope = DIGITAL_POST_ONLY.into();
        }
        c.config.insert("scopes".into(), DIGITAL_POST_ONLY.into());
    })
    .await;
    let krr_narrow = narrow.load("krr").await.expect("load");
    let summary = folkhub_sync::lookup(store, &krr_narrow, std::slice::from_ref(&id), &fast())
        .await
        .expect("lookup");
    assert_eq!(summary.counts.fetched, 1, "{:?}", summary);
    let after = store.person(&id).await.expect("read").expect("stored");
    for path in [
        "contact.email",
        "contact.mobile",
        "contact.notification-status",
    ] {
        assert_eq!(
            after.record.fields.get(path).map(|f| &f.value),
            with_email.record.fields.get(path).map(|f| &f.value),
            "{path} must survive an answer that does not cover it"
        );
    }
    // The upgrade dry run models the same rule: the same release under the
    // narrower token changes no e-mail or mobile in the shadow run.
    let report = folkhub_sync::shadow::shadow(store, &env.host.rules(), &krr, &krr_narrow, 60)
        .await
        .expect("shadow");
    assert!(report.sampled > 0);
    for path in ["contact.email", "contact.mobile"] {
        assert!(
            !report.fields.contains_key(path),
            "the shadow run shows {path} changing: {:?}",
            report.fields.keys()
        );
    }
    // And the same without the scopes configured: read from the answer.
    let inferred = host_with(&env, "krr", |c| {
        if let Some(Credentials::Maskinporten { scope, .. }) = &mut c.credentials {
            *scope = DIGITAL_POST_ONLY.into();
        }
        c.config.remove("scopes");
    })
    .await;
    let krr_inferred = inferred.load("krr").await.expect("load");
    folkhub_sync::lookup(store, &krr_inferred, std::slice::from_ref(&id), &fast())
        .await
        .expect("lookup");
    let after = store.person(&id).await.expect("read").expect("stored");
    assert!(after.record.fields.contains_key("contact.email"));

    let school = LegalBasis::profile("school").expect("school");
    let full = LegalBasis::full("full");

    // A Finn gets turvakielto; the product in the permit (PERUSSANOMA 1)
    // then withholds the address. No move: the address stays, protected.
    let (finn, finn_address) = {
        let population = env.sim.shared.population.read().await;
        let p = population
            .finns
            .iter()
            .find(|p| !p.non_disclosure && p.death.is_none() && p.address.is_some())
            .expect("a Finn with an address");
        (p.id().to_string(), p.address.clone().expect("address"))
    };
    let basic = host_with(&env, "dvv", |c| {
        c.config.insert("product".into(), "PERUSSANOMA 1".into());
    })
    .await;
    let dvv = basic.load("dvv").await.expect("load");
    folkhub_sync::lookup(store, &dvv, std::slice::from_ref(&finn), &fast())
        .await
        .expect("dvv");
    let before = store.person(&finn).await.expect("read").expect("stored");
    assert!(before.record.fields.contains_key("address.residential"));
    {
        let mut population = env.sim.shared.population.write().await;
        let p = population
            .finns
            .iter_mut()
            .find(|p| p.id() == finn)
            .expect("finn");
        p.non_disclosure = true;
    }
    folkhub_sync::lookup(store, &dvv, std::slice::from_ref(&finn), &fast())
        .await
        .expect("dvv");
    let after = store.person(&finn).await.expect("read").expect("stored");
    let address = &after.record.fields["address.residential"];
    assert_eq!(
        address.value,
        before.record.fields["address.residential"].value
    );
    assert!(
        address.labels.iter().any(|l| l == "TURVAKIELTO"),
        "{:?}",
        address.labels
    );
    assert_eq!(
        after.record.fields["protection.fi-non-disclosure"].value,
        serde_json::json!(true)
    );
    assert_outputs_protect(store, &after, &school, &full, &finn_address.street).await;

    // A Swede gets sekretessmarkering: SPAR now answers with the ID and the
    // markers only. The address stays, protected; the name SPAR no longer
    // gives is not left unprotected.
    let (swede, street) = {
        let population = env.sim.shared.population.read().await;
        let p = population
            .swedes
            .iter()
            .find(|p| !p.is_protected() && p.address.is_some() && p.deregistered.is_none())
            .expect("a Swede with an address");
        (
            p.id().to_string(),
            p.address.as_ref().expect("a").line.clone(),
        )
    };
    let spar = env.host.load("spar").await.expect("load");
    folkhub_sync::lookup(store, &spar, std::slice::from_ref(&swede), &fast())
        .await
        .expect("spar");
    let before = store.person(&swede).await.expect("read").expect("stored");
    assert!(before.record.fields.contains_key("name.family"));
    {
        let mut population = env.sim.shared.population.write().await;
        let p = population
            .swedes
            .iter_mut()
            .find(|p| p.id() == swede)
            .expect("swede");
        p.secrecy = Some(chrono::Utc::now().date_naive());
    }
    let calls = spar.upstream_calls();
    folkhub_sync::lookup(store, &spar, std::slice::from_ref(&swede), &fast())
        .await
        .expect("spar");
    assert_eq!(spar.upstream_calls() - calls, 1, "one paid call");
    let after = store.person(&swede).await.expect("read").expect("stored");
    let address = &after.record.fields["address.residential"];
    assert_eq!(
        address.value,
        before.record.fields["address.residential"].value
    );
    assert!(
        address.labels.iter().any(|l| l == "SEKRETESSMARKERING"),
        "{:?}",
        address.labels
    );
    assert!(
        !after.record.fields.contains_key("name.family"),
        "SPAR no longer gives the name: it is not left without protection"
    );
    assert_outputs_protect(store, &after, &school, &full, &street).await;
}

/// The kept location is withheld from `school` and shown to `full` in the
/// person view, FHIR and the history (whose entry predates the protection).
async fn assert_outputs_protect(
    store: &dyn folkhub_store::PersonStore,
    person: &folkhub_store::StoredPerson,
    school: &LegalBasis,
    full: &LegalBasis,
    street: &str,
) {
    let history = store.history(person.key).await.expect("history");
    let now = person.record.person_labels();
    for (basis, visible) in [(school, false), (full, true)] {
        let shown = view(&person.record, basis);
        assert_eq!(
            shown.fields.contains_key("address.residential"),
            visible,
            "person view as {}",
            basis.name
        );
        for (what, text) in [
            (
                "person",
                folkhub_tests::person_json(person, basis, true).to_string(),
            ),
            (
                "fhir",
                folkhub_tests::patient_json(person, basis).to_string(),
            ),
            (
                "history",
                folkhub_tests::history_json(&history, basis, &now).to_string(),
            ),
        ] {
            assert_eq!(
                text.contains(street),
                visible,
                "{what} as {}: the street {street:?}",
                basis.name
            );
        }
    }
}

/// SPAR charges per lookup: an answer the connector cannot read is not
/// bought again. The run fails once, with the reason, after one call; a
/// free register (VTJ) is asked again, as a cut-off transfer may heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_answer_from_a_paid_register_is_not_asked_again() {
    let env = TestEnv::start(Setup {
        seed: 22,
        count: 120,
        ..Setup::default()
    })
    .await;
    for id in ["spar", "dvv"] {
        env.host
            .install(id, None, false, "test", "paid")
            .await
            .expect("install");
    }
    let store = env.host.store();
    let (swede, finn) = {
        let population = env.sim.shared.population.read().await;
        (
            population.swedes[0].id().to_string(),
            population.finns[0].id().to_string(),
        )
    };
    for (id, person, paid) in [("spar", swede, true), ("dvv", finn, false)] {
        let connector = env.host.load(id).await.expect("load");
        let options = Options {
            cost_per_call: env.host.cost_per_call(&connector),
            ..fast()
        };
        assert_eq!(options.cost_per_call > 0.0, paid, "{id}");
        env.sim
            .shared
            .inject(std::iter::repeat_n(folkhub_sim::Fault::Truncated, 3));
        let calls = connector.upstream_calls();
        let summary =
            folkhub_sync::lookup(store, &connector, std::slice::from_ref(&person), &options)
                .await
                .expect("run");
        while folkhub_sim::next_fault(&env.sim.shared).is_some() {}
        let made = connector.upstream_calls() - calls;
        if paid {
            assert_eq!(made, 1, "{id}: one paid call, not retried");
            assert_eq!(summary.status, folkhub_store::RunStatus::Failed);
            assert!(
                summary.errors.iter().any(|e| e.contains("cannot read")),
                "{:?}",
                summary.errors
            );
        } else {
            assert!(
                made > 1,
                "{id}: a free register is asked again ({made} calls)"
            );
        }
    }
}
