//! Malformed IDs get clear errors from the CLI and 400 with a code from the
//! API; unknown IDs are 404.

use axum::http::StatusCode;

use crate::api::{Api, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_cli_explain_bad_ids() {
    let env = crate::api::synced_env(11, 30).await;
    let app = Api::new(&env.host, "full", true).await;

    let truth = env.sim.truth_for(&["folkeregister", "krr"]).await;
    let id = truth[0].ids.last().expect("id").clone();
    let (status, body) = get(app.clone(), &format!("/v1/persons/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["fields"]["name.given"], truth[0].fields["name.given"]);
    assert!(body.get("provenance").is_none());
    let (_, body) = get(app.clone(), &format!("/v1/persons/{id}?provenance=true")).await;
    assert_eq!(body["provenance"]["name.given"]["source"], "folkeregister");
    assert_eq!(body["provenance"]["name.given"]["upstream_version"], "v1");

    // History and FHIR through the same router.
    let (status, body) = get(app.clone(), &format!("/v1/persons/{id}/history")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["history"][0]["changes"]["name.given"]["to"].is_string(),
        "{body}"
    );
    let key = body["key"].as_i64().expect("key");
    let (status, body) = get(
        app.clone(),
        &format!("/fhir/Patient?identifier=urn:oid:2.16.578.1.12.4.1.4.1|{id}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["resourceType"], "Bundle");
    assert_eq!(body["total"], 1, "{body}");
    assert_eq!(body["entry"][0]["resource"]["id"], key.to_string());
    let (status, body) = get(app.clone(), &format!("/fhir/Patient/{key}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["resourceType"], "Patient");
    assert_eq!(body["identifier"][0]["value"], id.as_str());
    let (status, body) = get(app.clone(), "/fhir/Patient/999999").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("person-not-found"))
    );
    let (status, body) = get(app.clone(), &format!("/fhir/Patient?identifier=urn:x|{id}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid-parameter"))
    );
    let (status, _) = get(app.clone(), "/fhir/Patient").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Relations link persons: the related person's key when it is stored.
    let with_family = truth
        .iter()
        .find(|t| {
            t.fields
                .get("relations.family")
                .and_then(|r| r.as_array())
                .is_some_and(|r| !r.is_empty())
        })
        .expect("someone has family");
    let (_, body) = get(
        app.clone(),
        &format!("/v1/persons/{}", with_family.ids.last().expect("id")),
    )
    .await;
    let relative = with_family.fields["relations.family"][0]["id"]
        .as_str()
        .expect("relative id");
    let (_, other) = get(app.clone(), &format!("/v1/persons/{relative}")).await;
    assert_eq!(body["related"][relative], other["key"], "{body}");

    // The change sequence host apps follow.
    let (status, body) = get(app.clone(), "/v1/changes?since=0&limit=5").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changes"].as_array().expect("changes").len(), 5);
    let next = body["next"].as_i64().expect("next");
    assert!(body["changes"][0]["person"].is_i64());
    let (_, body) = get(
        app.clone(),
        &format!("/v1/changes?since={next}&limit=10000"),
    )
    .await;
    assert_eq!(body["caught_up"], true);
    assert!(body["changes"][0]["seq"].as_i64().expect("seq") > next);
    let (status, body) = get(app.clone(), "/v1/changes?limit=20000").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("page-too-large"))
    );
    let (status, body) = get(app.clone(), "/v1/changes?since=-1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid-parameter"))
    );

    let mut wrong_check = id.clone().into_bytes();
    wrong_check[10] = b'0' + (wrong_check[10] - b'0' + 1) % 10;
    let wrong_check = String::from_utf8(wrong_check).expect("utf8");
    for (bad, expect) in [
        (wrong_check.as_str(), "check digit"),
        ("0101011234", "check digit"),
        ("12345", "characters"),
        ("ABCDEFGHIJK", ""),
    ] {
        let (status, body) = get(app.clone(), &format!("/v1/persons/{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid-id", "{bad}");
        assert!(
            body["error"]["message"]
                .as_str()
                .expect("message")
                .contains(expect),
            "{bad}: {body}"
        );
    }
    let unknown = folkhub_core::ids::make_norwegian(
        chrono::NaiveDate::from_ymd_opt(1990, 1, 1).expect("date"),
        17,
        false,
        false,
    )
    .or_else(|| {
        folkhub_core::ids::make_norwegian(
            chrono::NaiveDate::from_ymd_opt(1990, 1, 1).expect("date"),
            18,
            false,
            false,
        )
    })
    .expect("an id");
    let (status, body) = get(app.clone(), &format!("/v1/persons/{unknown}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "person-not-found");
    let (status, body) = get(app.clone(), "/v1/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["persons"], 30);
    assert_eq!(body["connectors"][0]["support"], "supported", "{body}");

    // The ID readers say what is wrong (the CLI adds what to give:
    // host/cli/tests/cli.rs).
    let error = folkhub_core::ids::parse(&wrong_check).expect_err("bad id");
    assert!(error.to_string().contains("wrong check digit"), "{error}");
    let error = folkhub_core::ids::parse("12x").expect_err("bad id");
    assert!(error.to_string().contains("'12x'"), "{error}");
    // The read model the CLI prints finds the person and logs the read.
    let basis = folkhub_core::access::LegalBasis::full("test");
    let reader = folkhub_read::Reader {
        client: "cli:test",
        basis: &basis,
        purpose: "operator on the host",
    };
    let parsed = folkhub_core::ids::parse(&id).expect("id");
    let view = folkhub_read::read_person(
        env.host.store(),
        &folkhub_read::StoreLog(env.host.store()),
        &reader,
        "folkhub person get",
        &parsed.value,
        folkhub_read::PersonRequest::default(),
    )
    .await
    .expect("read")
    .expect("a known person is found");
    assert!(!view.fields.is_empty());
}
