//! The Kartverket, DVV change-interface and SPAR simulators refuse what the
//! real services refuse, page as they page, and the connectors turn faults
//! into the right error kinds.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use folkhub_core::contract::{ConnectorError, Location};
use folkhub_sim::{Fault, Simulator};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use folkhub_tests::{Setup, TestEnv};

async fn send(app: axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.oneshot(request).await.expect("router");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn get(sim: &Simulator, path: &str) -> (StatusCode, Value) {
    let (status, text) = send(
        folkhub_sim::router(sim.shared.clone()),
        Request::get(path).body(Body::empty()).expect("request"),
    )
    .await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kartverket_pages_searches_points_and_refuses_bad_queries() {
    let env = TestEnv::start(Setup {
        seed: 9,
        count: 300,
        ..Setup::default()
    })
    .await;
    let sim = &env.sim;
    let (status, body) = get(
        sim,
        "/adresser/v1/sok?kommunenummer=0301&treffPerSide=5&side=1",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["metadata"]["viserFra"], 5);
    assert_eq!(body["adresser"].as_array().map(Vec::len), Some(5));
    assert!(body["metadata"]["totaltAntallTreff"].as_u64().unwrap_or(0) > 5);
    let first = &body["adresser"][0];
    for key in [
        "adressetekst",
        "adressekode",
        "kommunenavn",
        "objtype",
        "representasjonspunkt",
        "postnummer",
        "poststed",
    ] {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }
    // Free text, and the point search finds the same address first.
    let text = first["adressetekst"].as_str().expect("text").to_string();
    let (status, found) = get(
        sim,
        &format!("/adresser/v1/sok?sok={}", text.replace(' ', "%20")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        found["adresser"]
            .as_array()
            .is_some_and(|a| a.iter().any(|h| h["adressetekst"] == first["adressetekst"]))
    );
    let (lat, lon) = (
        &first["representasjonspunkt"]["lat"],
        &first["representasjonspunkt"]["lon"],
    );
    let (status, near) = get(
        sim,
        &format!("/adresser/v1/punktsok?lat={lat}&lon={lon}&radius=50"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{near}");
    assert_eq!(near["adresser"][0]["meterDistanseTilPunkt"], 0.0);

    for bad in [
        "/adresser/v1/sok",
        "/adresser/v1/sok?kommunenummer=0301&treffPerSide=5000",
        "/adresser/v1/sok?kommunenummer=0301&utkoordsys=25833",
        "/adresser/v1/punktsok?lat=59.9&lon=10.7",
        "/adresser/v1/punktsok?lat=59.9&lon=10.7&radius=90000",
        "/klass/v1/classifications/1/correspondsAt?targetClassificationId=103",
    ] {
        let (status, body) = get(sim, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, _) = get(
        sim,
        "/klass/v1/classifications/7/correspondsAt?targetClassificationId=103&date=2026-01-01",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The connector: a truncated or HTML answer is a clear error, not a trap.
    env.host
        .install("kartverket", None, false, "test", "registers")
        .await
        .expect("install");
    let connector = env.host.load("kartverket").await.expect("load");
    let location = Location {
        key: "1".into(),
        address: json!({"kind": "street", "street": first["adressenavn"], "house_number": first["nummer"].to_string(), "municipality": "0301", "country": "NOR"}),
        context: vec![],
    };
    for (fault, kind) in [
        (Fault::Truncated, "MalformedResponse"),
        (Fault::Html, "UpstreamUnavailable"),
        (
            Fault::RateLimited {
                retry_after_ms: 1000,
            },
            "RateLimited",
        ),
    ] {
        sim.shared.inject([fault.clone()]);
        let error = connector
            .enrich(std::slice::from_ref(&location))
            .await
            .expect_err("fault");
        assert!(
            format!("{:?}", error.connector_error()).contains(kind),
            "{fault:?}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vtj_change_interface_checks_auth_and_lists_and_the_connector_maps_refusals() {
    let env = TestEnv::start(Setup {
        seed: 4,
        count: 200,
        ..Setup::default()
    })
    .await;
    let sim = &env.sim;
    let finn = sim.shared.population.read().await.finns[0].id().to_string();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!(
                "{}:{}",
                folkhub_sim::dvv::MUTP_USER,
                folkhub_sim::dvv::MUTP_PASSWORD
            )
        )
    );
    let post = |body: String, auth: Option<&str>, client: bool| {
        let mut r =
            Request::post("/dvv/api/v1/muutokset").header("content-type", "application/json");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        if client {
            r = r.header("x-road-client", "FI/GOV/0000000-0/test");
        }
        r.body(Body::from(body)).expect("request")
    };
    let app = || folkhub_sim::router(sim.shared.clone());
    let ok = json!({"viimeisinKirjausavain": 0, "hetulista": [finn]}).to_string();
    let (status, body) = send(app(), post(ok.clone(), Some(&basic), true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("json");
    assert!(
        answer["ajanTasalla"].is_boolean() && answer["viimeisinKirjausavain"].is_u64(),
        "{answer}"
    );
    assert_eq!(
        send(app(), post(ok.clone(), None, true)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(app(), post(ok.clone(), Some(&basic), false)).await.0,
        StatusCode::BAD_REQUEST
    );
    let empty = json!({"viimeisinKirjausavain": 0, "hetulista": []}).to_string();
    assert_eq!(
        send(app(), post(empty, Some(&basic), true)).await.0,
        StatusCode::BAD_REQUEST
    );
    let many: Vec<String> =
        std::iter::repeat_n(finn.clone(), folkhub_sim::dvv::MAX_HETUS + 1).collect();
    let many = json!({"viimeisinKirjausavain": 0, "hetulista": many}).to_string();
    assert_eq!(
        send(app(), post(many, Some(&basic), true)).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(app(), post("{\"hetulista\":".into(), Some(&basic), true))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    // Through the connector: a 429 is rate-limited, a wrong service user unauthorized.
    env.host
        .install("dvv", None, false, "test", "registers")
        .await
        .expect("install");
    let dvv = env.host.load("dvv").await.expect("load");
    let start = dvv.changes_for(None, &[]).await.expect("today's key");
    assert!(start.next_cursor.parse::<u64>().is_ok(), "{start:?}");
    sim.shared.inject([Fault::RateLimited {
        retry_after_ms: 3000,
    }]);
    let error = dvv
        .changes_for(Some(&start.next_cursor), std::slice::from_ref(&finn))
        .await
        .expect_err("429");
    assert!(
        matches!(
            error.connector_error(),
            Some(ConnectorError::RateLimited(3000))
        ),
        "{error}"
    );
    let page = dvv
        .changes_for(Some("0"), std::slice::from_ref(&finn))
        .await
        .expect("changes");
    assert!(page.changes.iter().all(|c| c.id == finn));
    let mut config = env.host.config.clone();
    config.connectors.get_mut("dvv").expect("dvv").credentials =
        Some(folkhub_manifest::Credentials::Basic {
            username: "someone".into(),
            password: "wrong".into(),
        });
    let other = folkhub_app::Host::open(config).await.expect("host");
    let error = other
        .load("dvv")
        .await
        .expect("load")
        .changes_for(Some("0"), std::slice::from_ref(&finn))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            error.connector_error(),
            Some(ConnectorError::Unauthorized(_))
        ),
        "{error}"
    );
}

/// A question as PersonsokningFraga.xsd has it: `IdNummer` in person-1.2
/// (prefix `p`), search arguments in sokargument-1.2 (prefix `a`).
fn spar_question(customer: &folkhub_sim::spar::Customer, criteria: &str, extended: &str) -> String {
    use folkhub_sim::spar::{NS_ARGUMENT, NS_IDENTIFICATION, NS_PERSON, NS_QUESTION, NS_SEARCH};
    folkhub_sim::xml::envelope(&format!(
        "<q:SPARPersonsokningFraga xmlns:q=\"{NS_QUESTION}\" xmlns:i=\"{NS_IDENTIFICATION}\" xmlns:s=\"{NS_SEARCH}\" xmlns:p=\"{NS_PERSON}\" xmlns:a=\"{NS_ARGUMENT}\">\
         <i:Identifieringsinformation><i:KundNrLeveransMottagare>{}</i:KundNrLeveransMottagare>\
         <i:KundNrSlutkund>{}</i:KundNrSlutkund><i:UppdragId>{}</i:UppdragId>\
         <i:SlutAnvandarId>test</i:SlutAnvandarId>{extended}</i:Identifieringsinformation>\
         <s:PersonsokningFraga>{criteria}</s:PersonsokningFraga></q:SPARPersonsokningFraga>",
        customer.delivery, customer.end_customer, customer.assignment
    ))
}

/// The `Undantag/Kod` of a SPAR answer, read by namespace (prefixes vary).
fn undantag_code(body: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(body).ok()?;
    doc.descendants()
        .find(|n| {
            n.tag_name().name() == "Kod"
                && n.tag_name().namespace()
                    == Some(
                        "http://statenspersonadressregister.se/schema/komponent/sok/undantag-1.0",
                    )
        })
        .and_then(|n| n.text())
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spar_answers_searches_exceptions_and_faults_as_the_service_does() {
    let sim = Simulator::start(folkhub_sim::Config {
        seed: 8,
        count: 6000,
        ..Default::default()
    })
    .await
    .expect("simulator");
    let app = || folkhub_sim::spar::router().with_state(sim.shared.clone());
    let soap = |body: String, action: &str| {
        Request::post(folkhub_sim::spar::PATH)
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", format!("\"{action}\""))
            .body(Body::from(body))
            .expect("request")
    };
    let action = folkhub_sim::spar::SOAP_ACTION;
    let [full, plain] = folkhub_sim::spar::CUSTOMERS else {
        unreachable!("two customers")
    };
    let family = sim.shared.population.read().await.swedes[0].family.clone();

    // A common name finds more than SPAR returns.
    let (status, body) = send(
        app(),
        soap(
            spar_question(
                full,
                &format!("<a:NamnSokArgument>{family}</a:NamnSokArgument>"),
                "",
            ),
            action,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("OverstigerMaxAntalSvarsposter"), "{body}");
    // Relations only for a customer that holds the permission.
    let refused = "<i:SlutAnvandarUtokadBehorighet>Relationer</i:SlutAnvandarUtokadBehorighet>";
    let (_, body) = send(
        app(),
        soap(
            spar_question(plain, "<p:IdNummer>191212121212</p:IdNummer>", refused),
            action,
        ),
    )
    .await;
    assert_eq!(undantag_code(&body).as_deref(), Some("2"), "{body}");
    // Unknown customer, malformed IdNummer, no criteria.
    let stranger = folkhub_sim::spar::Customer {
        delivery: "1",
        end_customer: "1",
        assignment: "1",
        extended: &[],
    };
    let (_, body) = send(
        app(),
        soap(
            spar_question(&stranger, "<p:IdNummer>191212121212</p:IdNummer>", ""),
            action,
        ),
    )
    .await;
    assert_eq!(undantag_code(&body).as_deref(), Some("1"), "{body}");
    let (_, body) = send(
        app(),
        soap(
            spar_question(full, "<p:IdNummer>19121212121</p:IdNummer>", ""),
            action,
        ),
    )
    .await;
    assert_eq!(undantag_code(&body).as_deref(), Some("3"), "{body}");
    let (_, body) = send(app(), soap(spar_question(full, "", ""), action)).await;
    assert_eq!(undantag_code(&body).as_deref(), Some("3"), "{body}");
    // Wrong SOAPAction, broken XML, wrong namespace: SOAP client faults.
    for (body, action) in [
        (spar_question(full, "", ""), "urn:other"),
        ("<soap:Envelope".to_string(), action),
        (
            spar_question(full, "", "")
                .replace("2021.1/personsokningfraga", "2019.1/personsokningfraga"),
            action,
        ),
    ] {
        let (status, text) = send(app(), soap(body, action)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(text.contains("soap:Client"), "{text}");
    }
    // Avisering files: the first names everyone, a missing one is 404.
    let (status, text) = send(
        app(),
        Request::get("/filtransport/avisering/1")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let first = sim.shared.population.read().await.swedes[0]
        .id()
        .to_string();
    assert!(
        text.contains("komponent/person/aviseringpost-1.2") && text.contains(&first),
        "{text}"
    );
    let (status, _) = send(
        app(),
        Request::get("/filtransport/avisering/99")
            .body(Body::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spar_serves_two_personsok_versions_until_the_old_one_is_retired() {
    let env = TestEnv::start(Setup {
        seed: 13,
        count: 80,
        ..Setup::default()
    })
    .await;
    let swede = env.sim.shared.population.read().await.swedes[0]
        .id()
        .to_string();
    let old_host = env.host.config.clone();
    let old_host = folkhub_app::Host::open(old_host).await.expect("host");
    old_host
        .install("spar", Some("1.1.0"), false, "test", "2021.1")
        .await
        .expect("install 1.1.0");
    let old = old_host.load("spar").await.expect("load");
    let found = old
        .lookup(std::slice::from_ref(&swede))
        .await
        .expect("2021.1");
    assert!(matches!(
        found[0].outcome,
        folkhub_core::contract::LookupOutcome::Found(_)
    ));
    // Both versions answer at once; the 2023.1 release gives the same record.
    let new_host = folkhub_app::Host::open(env.host.config.clone())
        .await
        .expect("host");
    new_host
        .install("spar", Some("2.1.0"), false, "test", "2023.1")
        .await
        .expect("install 2.1.0");
    let new = new_host.load("spar").await.expect("load");
    let again = new
        .lookup(std::slice::from_ref(&swede))
        .await
        .expect("2023.1");
    let fields = |r: &folkhub_core::contract::LookupResult| match &r.outcome {
        folkhub_core::contract::LookupOutcome::Found(p) => {
            (p.fields.clone(), p.upstream_version.clone())
        }
        other => panic!("{other:?}"),
    };
    let (old_fields, old_version) = fields(&found[0]);
    let (new_fields, new_version) = fields(&again[0]);
    assert_eq!(old_fields, new_fields);
    assert_eq!(
        (old_version.as_str(), new_version.as_str()),
        ("2021.1", "2023.1")
    );

    // The sunset passes: 2021.1 answers 410 and the old release says so.
    let sunset = chrono::NaiveDate::from_ymd_opt(2027, 9, 30).expect("date");
    env.sim
        .shared
        .sunsets
        .lock()
        .expect("sunsets")
        .push(("spar-2021.1".into(), sunset));
    env.sim.shared.set_today(sunset);
    let error = old
        .lookup(std::slice::from_ref(&swede))
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
    let still = new
        .lookup(std::slice::from_ref(&swede))
        .await
        .expect("2023.1");
    assert_eq!(fields(&still[0]).0, new_fields);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_actions_run_when_a_release_is_loaded_after_its_deadline() {
    let env = TestEnv::start(Setup {
        seed: 14,
        count: 40,
        ..Setup::default()
    })
    .await;
    let mut host = folkhub_app::Host::open(env.host.config.clone())
        .await
        .expect("host");
    host.install("spar", Some("1.0.1"), false, "test", "before the deadline")
        .await
        .expect("install");
    host.install("krr", Some("1.0.1"), false, "test", "before the deadline")
        .await
        .expect("install");
    // Before the deadline nothing moves.
    host.today = chrono::NaiveDate::from_ymd_opt(2027, 8, 30);
    assert_eq!(host.load("spar").await.expect("load").version, "1.0.1");
    // SPAR 2.0.0 declares auto-upgrade (nothing to migrate): past the
    // deadline, loading the old release upgrades it, to the newest release
    // of 2.x (2.1.0 fixes what 2.0.0 got wrong, 2.2.0 adds search), and
    // says why.
    host.today = chrono::NaiveDate::from_ymd_opt(2027, 9, 1);
    let spar = host.load("spar").await.expect("load");
    assert_eq!(spar.version, "2.2.0");
    let audit = folkhub_store::Installations::audit(host.store.as_ref(), "spar")
        .await
        .expect("audit");
    let last = audit.last().expect("audit entry");
    assert_eq!(last.actor, "folkhub (deadline action)");
    assert_eq!(last.action, "auto-upgrade");
    assert_eq!(last.version_before.as_deref(), Some("1.0.1"));
    assert!(
        last.reason.contains("auto-upgrade at the deadline") && last.reason.contains("2027-08-31"),
        "{last:?}"
    );
    // KRR 2.0.0 needs a config change, so its action is warn: the old
    // release still loads (and its calls fail as 'retired' after the sunset).
    host.today = chrono::NaiveDate::from_ymd_opt(2027, 7, 1);
    assert_eq!(host.load("krr").await.expect("load").version, "1.0.1");
    // A pinned install is not upgraded automatically.
    host.install("spar", Some("1.0.1"), true, "test", "pinned by the admin")
        .await
        .expect("install");
    host.today = chrono::NaiveDate::from_ymd_opt(2027, 9, 1);
    assert_eq!(host.load("spar").await.expect("load").version, "1.0.1");
    // The pin survives a restart.
    let reopened = folkhub_app::Host::open(env.host.config.clone())
        .await
        .expect("host");
    let installation = folkhub_store::Installations::installation(reopened.store.as_ref(), "spar")
        .await
        .expect("read")
        .expect("installed");
    assert!(installation.pinned && installation.version == "1.0.1");

    // ... and a change of the manifest: the vendor publishes spar 2.0.1
    // (the same bytes as 2.0.0) with an earlier deadline and auto-upgrade,
    // and KRR's note now says `disable`.
    let dir = tempfile::tempdir().expect("dir");
    std::os::unix::fs::symlink(
        folkhub_tests::root().join("registry"),
        dir.path().join("registry"),
    )
    .expect("link artifacts");
    let manifest = std::fs::read_to_string(folkhub_tests::root().join("registry-manifest.toml"))
        .expect("manifest");
    let spar_200 = manifest
        .split("[[release]]")
        .find(|r| r.contains("connector = \"spar\"") && r.contains("version = \"2.0.0\""))
        .expect("spar 2.0.0");
    let spar_201 = spar_200
        .replace("version = \"2.0.0\"", "version = \"2.0.1\"")
        .replace(
            "upgrade_deadline = 2027-08-31",
            "upgrade_deadline = 2027-04-30",
        );
    let changed = format!("{manifest}\n[[release]]{spar_201}").replacen(
        "deadline_action = \"warn\"",
        "deadline_action = \"disable\"",
        1,
    );
    assert!(changed.contains("deadline_action = \"disable\""));
    std::fs::write(dir.path().join("registry-manifest.toml"), changed).expect("write");
    let mut config = env.host.config.clone();
    config.registry.manifest = dir.path().join("registry-manifest.toml");
    let mut host = folkhub_app::Host::open(config).await.expect("host");
    host.today = chrono::NaiveDate::from_ymd_opt(2027, 9, 1);
    assert_eq!(
        host.load("spar").await.expect("load").version,
        "1.0.1",
        "pinned: the new release's deadline does not move it"
    );
    // The `disable` action: past the deadline the old release is refused,
    // naming the release to install; nothing is changed.
    let error = host.load("krr").await.expect_err("disabled").to_string();
    assert!(
        error.contains("krr 1.0.1 is disabled")
            && error.contains("folkhub connectors upgrade krr --to 2.0.0"),
        "{error}"
    );
    // The action and its reason are stored once, not at every load.
    let _ = host.load("krr").await.expect_err("still disabled");
    let audit = folkhub_store::Installations::audit(host.store.as_ref(), "krr")
        .await
        .expect("audit");
    let noted: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "deadline-disable")
        .collect();
    assert_eq!(noted.len(), 1, "{audit:?}");
    assert!(noted[0].reason.contains("2027-05-31"), "{:?}", noted[0]);
    let spar_audit = folkhub_store::Installations::audit(host.store.as_ref(), "spar")
        .await
        .expect("audit");
    assert!(
        spar_audit
            .iter()
            .any(|e| e.action == "deadline-auto-upgrade-pinned"),
        "{spar_audit:?}"
    );
    let krr = folkhub_store::Installations::installation(host.store.as_ref(), "krr")
        .await
        .expect("read")
        .expect("installed");
    assert_eq!(krr.version, "1.0.1");
    // Unpinned, the auto-upgrade runs, to the newest release of the major
    // that noted it.
    host.pin("spar", false, "admin", "let it move")
        .await
        .expect("unpin");
    let spar = host.load("spar").await.expect("load");
    assert!(spar.version.starts_with("2."), "{}", spar.version);
}
