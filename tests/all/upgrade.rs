//! Contract majors side by side, and the admin's upgrade of a connector
//! within a deadline: warnings, dry run, upgrade, feed continuity,
//! rollback, and the old upstream's sunset.

use folkhub_core::contract::{ConnectorError, LookupOutcome};
use folkhub_manifest::SupportState;
use folkhub_store::RunStatus;
use folkhub_tests::{Setup, TestEnv};

fn fast() -> folkhub_sync::Options<'static> {
    folkhub_sync::Options {
        backoff: std::time::Duration::from_millis(5),
        ..folkhub_sync::Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_on_contracts_1_0_1_1_and_2_0_run_in_one_host() {
    let env = TestEnv::start(Setup {
        seed: 31,
        count: 60,
        ..Setup::default()
    })
    .await;
    let host = &env.host;
    let release = |id: &str, v: &str| host.manifest().find(id, Some(v)).expect("release").clone();
    let freg_10 = host
        .prepare(&release("folkeregister", "1.0.0"))
        .expect("1.0");
    let krr_11 = host.prepare(&release("krr", "2.0.0")).expect("1.1");
    let krr_20 = host.prepare(&release("krr", "2.1.0")).expect("2.0");
    assert_eq!(freg_10.contract.to_string(), "1.0.0");
    assert_eq!(krr_11.contract.to_string(), "1.1.0");
    assert_eq!(krr_20.contract.to_string(), "2.0.0");
    assert!(
        krr_11
            .deprecation
            .as_deref()
            .is_some_and(|d| d.contains("2028-06-30")),
        "major 1 is deprecated with a removal date: {:?}",
        krr_11.deprecation
    );
    assert!(krr_20.deprecation.is_none());

    let ids: Vec<String> = env
        .sim
        .truth_for(&["folkeregister", "krr"])
        .await
        .iter()
        .take(20)
        .map(|t| t.ids.last().expect("id").clone())
        .collect();
    let freg = freg_10.lookup(&ids).await.expect("1.0 lookup");
    assert!(
        freg.iter()
            .all(|r| matches!(r.outcome, LookupOutcome::Found(_))),
        "{freg:?}"
    );
    // The same register through contract 1.1 and 2.0: the same persons,
    // ids and fields (KRR gives no periods that end).
    let a = krr_11.lookup(&ids).await.expect("1.1 lookup");
    let b = krr_20.lookup(&ids).await.expect("2.0 lookup");
    assert_eq!(a, b);
    assert!(
        a.iter()
            .any(|r| matches!(&r.outcome, LookupOutcome::Found(p) if !p.fields.is_empty()))
    );

    // Contract 2's feed carries the records; 1.1's names persons only.
    let page_11 = krr_11.changes(None).await.expect("1.1 changes");
    let page_20 = krr_20.changes(None).await.expect("2.0 changes");
    assert_eq!(page_11.changes.len(), page_20.changes.len());
    assert!(page_11.changes.iter().all(|c| c.record.is_none()));
    assert!(
        page_20
            .changes
            .iter()
            .all(|c| c.record.is_some() && c.kind == folkhub_core::contract::ChangeKind::Updated)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_upgrades_across_an_upstream_sunset_and_a_contract_major_and_rolls_back() {
    let env = TestEnv::start(Setup {
        seed: 32,
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
    env.sim
        .shared
        .set_today(chrono::NaiveDate::from_ymd_opt(2027, 1, 10).expect("date"));
    let opts = fast();

    // Installed: krr 1.0.1, speaking /rest/v1 (its base-url before the
    // migration). Folkeregisteret gives the persons.
    let v2_url = format!("{}/rest/v2", env.sim.base_url());
    let mut v1 = env.host.config.clone();
    v1.connectors
        .get_mut("krr")
        .expect("krr")
        .config
        .insert("base-url".into(), format!("{}/rest/v1", env.sim.base_url()));
    let mut old_host = folkhub_app::Host::open(v1).await.expect("host");
    env.host
        .install("folkeregister", None, false, "test", "story")
        .await
        .expect("install");
    let freg = env.host.load("folkeregister").await.expect("load");
    folkhub_sync::full(env.host.store(), &freg, &["no-fnr", "no-dnr"], &opts)
        .await
        .expect("freg");
    old_host
        .install("krr", Some("1.0.1"), false, "ops", "first install")
        .await
        .expect("install 1.0.1");
    let old = old_host.load("krr").await.expect("load");
    let summary = folkhub_sync::full(old_host.store(), &old, &["no-fnr", "no-dnr"], &opts)
        .await
        .expect("sync");
    assert_eq!(summary.status, RunStatus::Succeeded, "{:?}", summary.errors);

    // Warnings as the clock advances: none 141 days before the deadline,
    // then the 90-, 30- and 7-day notices, then unsupported.
    let release = old_host
        .manifest()
        .find("krr", Some("1.0.1"))
        .expect("release")
        .clone();
    let mut steps = vec![];
    for day in [
        "2027-01-10",
        "2027-03-03",
        "2027-05-01",
        "2027-05-25",
        "2027-06-01",
    ] {
        old_host.today = Some(day.parse().expect("date"));
        steps.push(
            match folkhub_manifest::support_state(&old_host.manifest(), &release, old_host.today())
            {
                SupportState::Deprecated { warning, by, .. } => {
                    assert_eq!(by, "2.0.0");
                    format!("{warning:?}")
                }
                SupportState::Unsupported { action, .. } => format!("unsupported, {action}"),
                SupportState::Supported => "supported".into(),
            },
        );
    }
    assert_eq!(
        steps,
        [
            "None",
            "Some(90)",
            "Some(30)",
            "Some(7)",
            "unsupported, warn"
        ]
    );
    old_host.today = Some("2027-05-25".parse().expect("date"));

    // The dry run, with the base-url the migration note asks for: both
    // releases' notes, the contract and upstream change, a shadow run on 100
    // persons, and nothing written.
    let audit_before = old_host.store().audit("krr").await.expect("audit");
    let cursor_before = old_host.store().cursor("krr").await.expect("cursor");
    let runs_before = old_host.store().runs(1000).await.expect("runs").len();
    let overrides = [("base-url".to_string(), v2_url.clone())].into();
    let dry = folkhub_app::upgrade::dry_run(&old_host, "krr", "2.1.0", 100, &overrides)
        .await
        .expect("dry run");
    let versions: Vec<&str> = dry.releases.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(versions, ["2.0.0", "2.1.0"]);
    assert!(dry.releases[0].breaking.is_some(), "2.0.0's breaking note");
    assert_eq!(
        (dry.contract.from.as_str(), dry.contract.to.as_str()),
        ("1.1.0", "2.0.0")
    );
    assert_eq!(
        (dry.upstream.from.as_str(), dry.upstream.to.as_str()),
        ("KRR v1", "KRR v2")
    );
    assert!(
        dry.contract_support.contains("2.x"),
        "{}",
        dry.contract_support
    );
    assert_eq!(dry.cursor, cursor_before);
    let shadow = dry.shadow.as_ref().expect("shadow run");
    assert_eq!(shadow.sampled, 100);
    assert!(
        shadow.old.errors.is_empty() && shadow.new.errors.is_empty(),
        "{shadow:?}"
    );
    assert_eq!(shadow.old.found + shadow.old.not_found, 100);
    assert_eq!(
        (shadow.identical, shadow.fields.len()),
        (100, 0),
        "v1 and v2 give the same merged records: {:?}",
        shadow.fields
    );
    assert_eq!(
        old_host.store().audit("krr").await.expect("audit"),
        audit_before
    );
    assert_eq!(
        old_host.store().cursor("krr").await.expect("cursor"),
        cursor_before
    );
    assert_eq!(
        old_host.store().runs(1000).await.expect("runs").len(),
        runs_before
    );
    // A dry run to a release that is not newer, or unknown, says what to do.
    let e = folkhub_app::upgrade::dry_run(&old_host, "krr", "1.0.0", 10, &Default::default())
        .await
        .expect_err("older")
        .to_string();
    assert!(e.contains("not newer") && e.contains("rollback"), "{e}");
    let e = folkhub_app::upgrade::dry_run(&old_host, "krr", "9.0.0", 10, &Default::default())
        .await
        .expect_err("unknown")
        .to_string();
    assert!(e.contains("no release 9.0.0") && e.contains("2.1.0"), "{e}");

    // The admin migrates base-url (env.host's config speaks /rest/v2) and
    // upgrades. The feed continues from the stored cursor: no gap, nothing
    // read twice, and contract 2's records need no lookups.
    let seen = env.sim.shared.population.read().await.krr_changes.len() as u64;
    let (plan, installed) = env
        .host
        .upgrade("krr", "2.1.0", "ops", "KRR v1 sunset")
        .await
        .expect("upgrade");
    assert_eq!(
        (plan.from.version.as_str(), installed.version.as_str()),
        ("1.0.1", "2.1.0")
    );
    assert_eq!(installed.contract, "2.0.0");
    env.sim.advance(100).await;
    let new = env.host.load("krr").await.expect("load");
    let requests = env.sim.shared.requests();
    let summary = folkhub_sync::changes(env.host.store(), &new, &opts)
        .await
        .expect("changes");
    assert_eq!(summary.status, RunStatus::Succeeded, "{:?}", summary.errors);
    let log_length = env.sim.shared.population.read().await.krr_changes.len() as u64;
    assert!(log_length > seen);
    assert_eq!(summary.counts.feed_events, log_length - seen);
    let pages = (log_length - seen).div_ceil(folkhub_sim::krr::PAGE as u64) + 1;
    assert!(
        env.sim.shared.requests() - requests <= pages,
        "the feed's records were stored without lookups: {} requests for {} pages",
        env.sim.shared.requests() - requests,
        pages
    );
    // KRR went first: a person who got a fødselsnummer was reported by KRR
    // under it before Folkeregisteret announced the change; the register's
    // announcement links the two.
    folkhub_sync::changes(env.host.store(), &freg, &opts)
        .await
        .expect("freg changes");
    let truth = env.sim.truth_for(&["folkeregister", "krr"]).await;
    let wrong =
        crate::end_to_end::mismatches(env.host.store(), &truth, &["folkeregister", "krr"]).await;
    assert!(wrong.is_empty(), "{:#?}", &wrong[..wrong.len().min(10)]);
    assert!(
        !env.host
            .store()
            .identity_links()
            .await
            .expect("links")
            .is_empty(),
        "seed 32 has a D-number → fødselsnummer change KRR saw first"
    );

    // Rollback returns to the previous digest at once, and the upgrade can
    // be repeated; every step is audited with digests before and after.
    let digest_101 = old_host
        .manifest()
        .find("krr", Some("1.0.1"))
        .expect("r")
        .sha256
        .clone();
    let (from, to) = env
        .host
        .rollback("krr", "ops", "checking a report")
        .await
        .expect("rollback");
    assert_eq!(
        (from.version.as_str(), to.version.as_str()),
        ("2.1.0", "1.0.1")
    );
    assert_eq!(to.digest, digest_101);
    // The same state over the API (the admin's read-only view).
    let app = crate::api::Api::new(&old_host, "full", true).await;
    let (status, body) = crate::api::get(app.clone(), "/v1/connectors").await;
    assert_eq!(status, axum::http::StatusCode::OK, "{body}");
    let krr = body["connectors"]
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["id"] == "krr")
        .expect("krr")
        .clone();
    assert_eq!(
        (
            krr["version"].as_str(),
            krr["newest"].as_str(),
            krr["pinned"].as_bool()
        ),
        (Some("1.0.1"), Some("2.2.0"), Some(false)),
        "{krr}"
    );
    assert_eq!(krr["upgrade"]["to"], "2.0.0", "{krr}");
    assert_eq!(krr["upgrade"]["deadline"], "2027-05-31");
    assert_eq!(krr["upgrade"]["days_left"], 6);
    let (status, body) = crate::api::get(app.clone(), "/v1/connectors/krr/history").await;
    assert_eq!(status, axum::http::StatusCode::OK);
    assert_eq!(
        body["history"].as_array().expect("history").len(),
        3,
        "{body}"
    );
    assert_eq!(body["history"][2]["action"], "rollback");
    let (status, body) = crate::api::get(app, "/v1/connectors/nope/history").await;
    assert_eq!(status, axum::http::StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "connector-not-installed");

    let (_, again) = env
        .host
        .upgrade("krr", "2.1.0", "ops", "report checked")
        .await
        .expect("upgrade again");
    assert_eq!(again.version, "2.1.0");
    let audit = env.host.store().audit("krr").await.expect("audit");
    let actions: Vec<(&str, Option<&str>, Option<&str>)> = audit
        .iter()
        .map(|e| {
            (
                e.action.as_str(),
                e.version_before.as_deref(),
                e.version_after.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("install", None, Some("1.0.1")),
            ("upgrade", Some("1.0.1"), Some("2.1.0")),
            ("rollback", Some("2.1.0"), Some("1.0.1")),
            ("upgrade", Some("1.0.1"), Some("2.1.0")),
        ]
    );
    assert_eq!(audit[2].digest_after.as_deref(), Some(digest_101.as_str()));
    assert!(
        audit
            .iter()
            .all(|e| e.actor == "ops" && !e.reason.is_empty())
    );

    // After the sunset the old release's calls fail as retired, never with
    // wrong data, and nothing stored changes.
    env.sim.shared.set_today(sunset);
    let error = old
        .lookup(&[truth[0].ids.last().expect("id").clone()])
        .await
        .expect_err("retired");
    assert!(
        matches!(
            error.connector_error(),
            Some(ConnectorError::UpstreamVersionGone(_))
        ),
        "{error}"
    );
    assert!(error.to_string().contains("retired"), "{error}");
    let still = env.host.load("krr").await.expect("load");
    let ids: Vec<String> = truth
        .iter()
        .take(5)
        .map(|t| t.ids.last().expect("id").clone())
        .collect();
    assert!(
        still.lookup(&ids).await.is_ok(),
        "2.1.0 speaks v2, which is not retired"
    );
}

/// Anyone who can edit the manifest can point a release at any artifact
/// whose digest they write down. A release must be signed by a publisher
/// the operator trusts, over its entry and artifact digest; and even a
/// signed (or, on a development host, unsigned) component installed as
/// another connector than it is (krr's artifact as a kartverket release)
/// is refused at install and at an upgrade's check. Nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_must_be_signed_by_a_trusted_publisher_and_be_who_they_say() {
    use folkhub_manifest::signing;
    let env = TestEnv::start(Setup {
        seed: 73,
        count: 20,
        ..Setup::default()
    })
    .await;
    let real =
        folkhub_manifest::Manifest::load(&folkhub_tests::root().join("registry-manifest.toml"))
            .expect("manifest");
    let krr = real.find("krr", Some("2.2.0")).expect("krr").clone();
    let honest = real
        .find("kartverket", Some("1.1.1"))
        .expect("kartverket")
        .clone();
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("artifacts")).expect("dir");
    for release in [&krr, &honest] {
        std::fs::copy(
            real.artifact_path(release),
            dir.path().join(format!(
                "artifacts/{}-{}.wasm",
                release.connector, release.version
            )),
        )
        .expect("copy");
    }
    // A vendor, acme, publishes kartverket 1.1.2 (the same bytes) and
    // signs it; a 1.1.3 goes out unsigned; and someone edits in a 1.2.0
    // that is krr's component, signing it with acme's key.
    let (acme_private, acme_public) = signing::generate().expect("key");
    let mut honest = honest;
    honest.artifact = "artifacts/kartverket-1.1.1.wasm".into();
    let mut vendor = honest.clone();
    vendor.version = "1.1.2".into();
    signing::sign(&mut vendor, "acme", &acme_private).expect("sign");
    let mut unsigned = honest.clone();
    unsigned.version = "1.1.3".into();
    unsigned.publisher = None;
    unsigned.signature = None;
    let mut swapped = honest.clone();
    swapped.version = "1.2.0".into();
    swapped.artifact = "artifacts/krr-2.2.0.wasm".into();
    swapped.sha256 = krr.sha256.clone();
    swapped.contract = krr.contract.clone();
    swapped.breaking = None;
    let mut forged = swapped.clone();
    forged.version = "1.2.1".into();
    signing::sign(&mut swapped, "acme", &acme_private).expect("sign");
    // Copied signature lines onto an edited entry do not pass.
    forged.publisher = Some("folkhub".into());
    forged.signature = honest.signature.clone();
    let manifest = dir.path().join("registry-manifest.toml");
    let text = folkhub_manifest::Manifest::text(&[honest, vendor, unsigned, swapped, forged])
        .expect("toml");
    std::fs::write(&manifest, text).expect("write");
    let host_with = |trust_acme: bool, allow_unsigned: bool| {
        let mut config = env.host.config.clone();
        config.registry.manifest = manifest.clone();
        if trust_acme {
            config
                .registry
                .trusted_keys
                .insert("acme".into(), acme_public.clone());
        }
        config.registry.allow_unsigned = allow_unsigned;
        folkhub_app::Host::open(config)
    };
    let refused = |e: anyhow::Error| format!("{e:#}");
    // The operator trusts only the project's key: acme's release is
    // refused, naming what to do; so are the unsigned and the forged one.
    let host = host_with(false, false).await.expect("host");
    let e = refused(
        host.install("kartverket", Some("1.1.2"), false, "t", "r")
            .await
            .expect_err("untrusted"),
    );
    assert!(
        e.contains("publisher \"acme\"") && e.contains("trusted_keys"),
        "{e}"
    );
    let e = refused(
        host.install("kartverket", Some("1.1.3"), false, "t", "r")
            .await
            .expect_err("unsigned"),
    );
    assert!(
        e.contains("not signed") && e.contains("allow_unsigned"),
        "{e}"
    );
    let e = refused(
        host.install("kartverket", Some("1.2.1"), false, "t", "r")
            .await
            .expect_err("forged"),
    );
    assert!(e.contains("does not match"), "{e}");
    assert!(
        folkhub_store::Installations::installation(host.store.as_ref(), "kartverket")
            .await
            .expect("read")
            .is_none()
    );
    // The project's own release installs.
    host.install("kartverket", Some("1.1.1"), false, "t", "signed by folkhub")
        .await
        .expect("the project's release installs");
    // Trusting acme: its release installs; the krr component it signed as
    // kartverket is still refused, at install and at an upgrade's check.
    let host = host_with(true, false).await.expect("host");
    host.install("kartverket", Some("1.1.2"), false, "t", "acme's")
        .await
        .expect("acme's release installs");
    let e = refused(
        host.install("kartverket", Some("1.2.0"), false, "t", "r")
            .await
            .expect_err("swapped"),
    );
    assert!(e.contains("is the connector \"krr\""), "{e}");
    let e = refused(
        host.plan_upgrade("kartverket", "1.2.0")
            .await
            .expect_err("swapped"),
    );
    assert!(e.contains("is the connector \"krr\""), "{e}");
    // A development host that allows unsigned releases installs 1.1.3.
    let host = host_with(false, true).await.expect("host");
    host.install("kartverket", Some("1.1.3"), false, "t", "dev")
        .await
        .expect("allowed unsigned");
    let installed = folkhub_store::Installations::installation(host.store.as_ref(), "kartverket")
        .await
        .expect("read")
        .expect("installed");
    assert_eq!(installed.version, "1.1.3");
}

/// A vendor's registry beside the built-in one: its releases are offered
/// with their artifacts under its own directory, installed when a key the
/// operator trusts signed them; a release both registries list is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_registry_sits_beside_the_built_in_one() {
    use folkhub_manifest::signing;
    let env = TestEnv::start(Setup {
        seed: 74,
        count: 20,
        ..Setup::default()
    })
    .await;
    let real =
        folkhub_manifest::Manifest::load(&folkhub_tests::root().join("registry-manifest.toml"))
            .expect("manifest");
    let base = real
        .find("kartverket", Some("1.1.1"))
        .expect("kartverket")
        .clone();
    let vendor = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(vendor.path().join("artifacts")).expect("dir");
    std::fs::copy(
        real.artifact_path(&base),
        vendor.path().join("artifacts/kartverket-1.1.2.wasm"),
    )
    .expect("copy");
    let (private, public) = signing::generate().expect("key");
    let mut release = base.clone();
    release.version = "1.1.2".into();
    release.artifact = "artifacts/kartverket-1.1.2.wasm".into();
    release.notes = "acme's build".into();
    signing::sign(&mut release, "acme", &private).expect("sign");
    let write = |releases: Vec<folkhub_manifest::Release>| {
        std::fs::write(
            vendor.path().join("registry-manifest.toml"),
            folkhub_manifest::Manifest::text(&releases).expect("toml"),
        )
        .expect("write");
    };
    write(vec![release.clone()]);
    let mut config = env.host.config.clone();
    config.registry.vendors = vec![vendor.path().join("registry-manifest.toml")];
    config.registry.trusted_keys.insert("acme".into(), public);
    let host = folkhub_app::Host::open(config.clone()).await.expect("host");
    let offered = host.manifest();
    let found = offered.find("kartverket", None).expect("newest");
    assert_eq!(found.version, "1.1.2", "the vendor's release is the newest");
    assert!(offered.artifact_path(found).starts_with(vendor.path()));
    assert!(
        offered.find("krr", Some("2.2.0")).is_some(),
        "the built-in ones stay"
    );
    let installed = host
        .install("kartverket", None, false, "ops", "acme's")
        .await
        .expect("install");
    assert_eq!(installed.version, "1.1.2");
    // A release the built-in registry lists too has two publishers: refused.
    let mut twin = base.clone();
    twin.artifact = "artifacts/kartverket-1.1.2.wasm".into();
    write(vec![release, twin]);
    let e = format!(
        "{:#}",
        folkhub_app::Host::open(config)
            .await
            .err()
            .expect("refused")
    );
    assert!(
        e.contains("kartverket 1.1.1") && e.contains("another registry lists too"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_releases_are_installed_only_when_named_and_requirements_name_both_versions() {
    use folkhub_manifest::signing;
    let env = TestEnv::start(Setup {
        seed: 74,
        count: 10,
        ..Setup::default()
    })
    .await;
    let real =
        folkhub_manifest::Manifest::load(&folkhub_tests::root().join("registry-manifest.toml"))
            .expect("manifest");
    let base = real
        .find("kartverket", Some("1.1.1"))
        .expect("kartverket")
        .clone();
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("artifacts")).expect("dir");
    std::fs::copy(
        real.artifact_path(&base),
        dir.path().join("artifacts/kartverket.wasm"),
    )
    .expect("copy");
    let (private, public) = signing::generate().expect("key");
    // The same component under several versions, as a vendor publishes
    // them: a release candidate, a release with build metadata, a release
    // that upgrades only from 1.3, and one that needs a newer folkhub.
    let release = |version: &str, upgrades_from: Option<&str>, host: Option<&str>| {
        let mut r = base.clone();
        r.artifact = "artifacts/kartverket.wasm".into();
        r.version = version.into();
        r.breaking = None;
        r.upgrades_from = upgrades_from.map(str::to_string);
        r.host = host.map(str::to_string);
        signing::sign(&mut r, "acme", &private).expect("sign");
        r
    };
    let releases = [
        release("1.2.0", None, None),
        release("1.3.0-rc.1", None, None),
        release("1.3.0+build.7", None, None),
        release("1.4.0", Some(">=1.3"), None),
        release("1.5.0-rc.1", None, None),
        release("9.0.0", None, Some(">=99.0")),
    ];
    let manifest_path = dir.path().join("registry-manifest.toml");
    std::fs::write(
        &manifest_path,
        folkhub_manifest::Manifest::text(&releases).expect("toml"),
    )
    .expect("write");
    let manifest =
        folkhub_manifest::Manifest::load(&manifest_path).unwrap_or_else(|e| panic!("{e}"));
    // Ordering by SemVer: the candidate before its release, build
    // metadata ignored; the newest that is not a pre-release is 9.0.0.
    let order: Vec<&str> = manifest
        .releases_of("kartverket")
        .iter()
        .map(|r| r.version.as_str())
        .collect();
    assert_eq!(
        order,
        [
            "1.2.0",
            "1.3.0-rc.1",
            "1.3.0+build.7",
            "1.4.0",
            "1.5.0-rc.1",
            "9.0.0"
        ]
    );
    assert_eq!(manifest.find("kartverket", None).unwrap().version, "9.0.0");
    assert_eq!(
        manifest
            .newest_of_major("kartverket", "1.2.0")
            .unwrap()
            .version,
        "1.4.0",
        "a deadline action never picks a pre-release"
    );
    let mut config = env.host.config.clone();
    config.registry.manifest = manifest_path.clone();
    config.registry.trusted_keys.insert("acme".into(), public);
    let host = folkhub_app::Host::open(config).await.expect("host");
    let installed = |host: &folkhub_app::Host| {
        let store = host.store.clone();
        async move {
            use folkhub_store::Installations as _;
            store
                .installation("kartverket")
                .await
                .expect("store")
                .map(|i| i.version)
        }
    };
    let before = installed(&host).await;
    let text = |e: anyhow::Error| format!("{e:#}");
    // The newest needs a folkhub this host is not: refused, both named.
    let e = text(
        host.install("kartverket", None, false, "t", "r")
            .await
            .expect_err("needs a newer host"),
    );
    let here = folkhub_manifest::registry::HOST_VERSION;
    assert!(
        e.contains("kartverket 9.0.0 needs folkhub >=99.0")
            && e.contains(&format!("this host is folkhub {here}")),
        "{e}"
    );
    assert_eq!(installed(&host).await, before, "nothing changed");
    // A candidate is installed when an admin names it.
    host.install("kartverket", Some("1.3.0-rc.1"), false, "t", "r")
        .await
        .expect("named pre-release");
    // 1.4.0 upgrades only from 1.3: from the candidate (1.3.0-rc.1 is held
    // to its numbers) it may; from 1.2.0 it may not, and the message says
    // which release to go through.
    host.plan_upgrade("kartverket", "1.4.0")
        .await
        .expect("1.3.0-rc.1 is within >=1.3");
    host.install("kartverket", Some("1.2.0"), false, "t", "r")
        .await
        .expect("1.2.0");
    let e = text(
        host.plan_upgrade("kartverket", "1.4.0")
            .await
            .expect_err("not from 1.2.0"),
    );
    assert!(
        e.contains("kartverket 1.4.0 upgrades only from >=1.3, and the installed release is 1.2.0")
            && e.contains("--to 1.3.0+build.7"),
        "{e}"
    );
    // A version that is not SemVer, and a requirement that is not one,
    // are refused when the manifest is read.
    let mut bad = releases[0].clone();
    bad.version = "1.2".into();
    bad.upgrades_from = Some("from 1.0".into());
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        folkhub_manifest::Manifest::text(&[bad]).expect("toml"),
    )
    .expect("write");
    let e = folkhub_manifest::Manifest::load(&path)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("\"1.2\" is not a SemVer 2.0.0 version")
            && e.contains("\"from 1.0\" is not a semver requirement"),
        "{e}"
    );
}
