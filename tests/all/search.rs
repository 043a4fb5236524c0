//! Search by identifying details (`POST /v1/persons/search`): the question
//! goes to the simulated SPAR through the 2.2 connector, hits are shown by
//! the client's basis and cost what they cost, and nobody is stored or
//! followed until the client confirms a hit. The protection checks use a
//! register that answers with protected persons, since the simulated SPAR
//! (as the real one) leaves them out of searches.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use folkhub_core::merge::{Candidate, MergeRules, MergedRecord};
use folkhub_core::observation::SourceId;
use folkhub_store::prelude::*;
use folkhub_store::{AccessQuery, ClientAuth, NewClient};
use folkhub_tests::{Setup, TestEnv};
use serde_json::{Value, json};

use crate::api::{Api, get, post_json, send_raw};

/// A client of `basis` on `state`'s router.
async fn client(state: &folkhub_api::ApiState, basis: &str, may_fetch: bool) -> Api {
    static CLIENTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("search-{basis}-{n}");
    let secret = folkhub_api::auth::new_secret();
    state
        .store
        .add_client(NewClient {
            name: name.clone(),
            auth: ClientAuth::ApiKey,
            secret_sha256: folkhub_api::auth::hash_secret(&secret),
            basis: basis.into(),
            purpose: "finding new pupils".into(),
            admin: false,
            rate_limit: 1000,
            persons_per_minute: 10_000,
            may_fetch,
            created_by: "test".into(),
        })
        .await
        .expect("client");
    Api {
        router: folkhub_api::app(state.clone()),
        key: secret,
        client: name,
        auth: ClientAuth::ApiKey,
    }
}

async fn search(api: &Api, body: Value) -> (StatusCode, Value) {
    post_json(api.clone(), "/v1/persons/search", &body).await
}

/// The access-log entries of a client's searches.
async fn searches_logged(store: &dyn PersonStore, client: &str) -> Vec<Value> {
    store
        .access_log(&AccessQuery {
            client: Some(client.into()),
            limit: 1000,
            ..AccessQuery::default()
        })
        .await
        .expect("log")
        .into_iter()
        .filter(|r| r.entry.endpoint == "POST /v1/persons/search")
        .map(|r| serde_json::from_str(r.entry.criteria.as_deref().unwrap_or("null")).expect("json"))
        .collect()
}

fn hit_ids(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .flat_map(|h| h["ids"].as_array().cloned().unwrap_or_default())
                .filter_map(|i| i["value"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_search_finds_costs_and_follows_only_when_confirmed() {
    let env = TestEnv::start(Setup {
        seed: 71,
        count: 400,
        ..Setup::default()
    })
    .await;
    let installed = env
        .host
        .install("spar", None, false, "test", "search")
        .await
        .expect("install");
    assert_eq!(
        (installed.version.as_str(), installed.contract.as_str()),
        ("2.2.0", "2.2.0")
    );
    assert!(env.host.load("spar").await.expect("load").searches());
    // Persons the simulated SPAR finds by search (it leaves out protected
    // persons, as the real one does), and a family and kommun several share.
    let (person, crowd) = {
        let population = env.sim.shared.population.read().await;
        let searchable: Vec<_> = population
            .swedes
            .iter()
            .filter(|p| p.address.is_some() && !p.is_protected() && p.deregistered.is_none())
            .cloned()
            .collect();
        let mut groups: BTreeMap<(String, String), usize> = BTreeMap::new();
        for p in &searchable {
            let a = p.address.as_ref().expect("address");
            *groups
                .entry((p.family.clone(), a.municipality_code()))
                .or_default() += 1;
        }
        let crowd = groups.into_iter().max_by_key(|(_, n)| *n).expect("a group");
        (searchable[3].clone(), crowd)
    };
    assert!(crowd.1 >= 2, "{crowd:?}");
    let id = person.ids.last().expect("id").clone();
    let given = person.given.split_whitespace().next().expect("given");
    let birth = person.birth.format("%Y-%m-%d").to_string();
    let state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    let school = client(&state, "school", true).await;

    // Names and birth date find the person; words in any order, `*` a
    // wildcard, as PersonSök takes them.
    let prefix: String = person.family.chars().take(3).collect();
    for (family, given) in [
        (person.family.clone(), Some(given.to_string())),
        (format!("{prefix}*"), None),
    ] {
        let (status, body) = search(
            &school,
            json!({ "family": family, "given": given, "birth_date": birth }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["outcome"], "hits", "{body}");
        assert_eq!(body["registers"], json!(["spar"]));
        assert!(hit_ids(&body).contains(&id), "{body}");
        let hit = body["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .find(|h| h["ids"][0]["value"] == json!(id))
            .expect("the person");
        assert_eq!(hit["fields"]["name.family"], json!(person.family));
        assert_eq!(hit["fields"]["birth.date"], json!(birth));
        assert_eq!(hit["sources"], json!(["spar"]));
    }
    // Nothing was stored or followed by searching.
    assert_eq!(env.host.store().count_persons().await.expect("count"), 0);
    let (_, follows) = get(school.clone(), "/v1/follows").await;
    assert_eq!(follows["count"], json!(0), "{follows}");

    // More than `limit` match: no person is shown, the answer asks for a
    // narrower search and says how many match.
    let ((family, kommun), n) = crowd;
    let (status, body) = search(
        &school,
        json!({ "family": family, "municipality": kommun, "limit": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "narrow", "{body}");
    assert_eq!(body["hits"], json!([]));
    assert_eq!(body["matched"], json!(n));
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("add given names")),
        "{body}"
    );
    let (status, body) = search(
        &school,
        json!({ "family": family, "municipality": kommun, "limit": 100 }),
    )
    .await;
    assert_eq!(
        (status, body["outcome"].clone()),
        (StatusCode::OK, json!("hits"))
    );
    assert_eq!(body["hits"].as_array().map(Vec::len), Some(n), "{body}");

    // Every search is a paid call, recorded under the client.
    let costs = env.host.store().costs(None).await.expect("costs");
    let job = format!("search:{}", school.client);
    let calls: u64 = costs
        .iter()
        .filter(|r| r.job == job && r.connector == "spar")
        .map(|r| r.calls)
        .sum();
    assert_eq!(calls, 4, "{costs:?}");
    // And logged with what was asked and whom it showed.
    let logged = searches_logged(env.host.store(), &school.client).await;
    assert_eq!(logged.len(), 4);
    assert_eq!(logged[0]["family"], json!(person.family));
    assert!(
        logged[0]["shown"]
            .as_array()
            .expect("shown")
            .contains(&json!(format!("se-pnr:{id}"))),
        "{}",
        logged[0]
    );
    assert_eq!(logged[2]["outcome"], "narrow");

    // Confirming a hit is following it; a read then fetches the person.
    let (status, _, _) = send_raw(
        school.clone(),
        Request::put(format!("/v1/follows/{id}")),
        Body::empty(),
    )
    .await;
    assert!(status.is_success(), "{status}");
    let (status, read) = get(school.clone(), &format!("/v1/persons/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["fields"]["name.family"], json!(person.family));
    assert_eq!(env.host.store().count_persons().await.expect("count"), 1);

    // Who may search: a client that may not have the registers asked, a
    // basis without names and birth dates.
    let plain = client(&state, "school", false).await;
    let (status, body) = search(&plain, json!({ "family": family, "birth_date": birth })).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "fetch-not-allowed");

    // Bad input says what was wrong, before any register is asked.
    let before = env.sim.shared.requests();
    for (body, code, field) in [
        (
            json!({ "family": "A", "birth_date": birth }),
            "invalid-parameter",
            "family",
        ),
        (
            json!({ "family": "<script>", "birth_date": birth }),
            "invalid-parameter",
            "family",
        ),
        (
            json!({ "family": "Berg" }),
            "missing-parameter",
            "birth_date",
        ),
        (
            json!({ "family": "Berg", "birth_date": "1980-13-01" }),
            "invalid-parameter",
            "birth_date",
        ),
        (
            json!({ "family": "Berg", "postal_code": "12" }),
            "invalid-parameter",
            "postal_code",
        ),
        (
            json!({ "family": "Berg", "municipality": "stockholm" }),
            "invalid-parameter",
            "municipality",
        ),
        (
            json!({ "family": "Berg", "birth_date": birth, "limit": 0 }),
            "invalid-parameter",
            "limit",
        ),
        (
            json!({ "family": "Berg", "birth_date": birth, "fields": ["nope"] }),
            "unknown-field",
            "fields",
        ),
        (
            json!({ "family": "Berg", "birth_date": birth, "ssn": "x" }),
            "invalid-body",
            "body",
        ),
        (json!({ "birth_date": birth }), "invalid-body", "body"),
    ] {
        let (status, answer) = search(&school, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(
            (
                answer["error"]["code"].as_str(),
                answer["error"]["field"].as_str()
            ),
            (Some(code), Some(field)),
            "{body}: {answer}"
        );
    }
    assert_eq!(
        env.sim.shared.requests(),
        before,
        "no register call for bad input"
    );
}

/// A register that answers every search with the same persons.
struct Canned(Vec<folkhub_api::SearchHit>);

#[async_trait::async_trait]
impl folkhub_api::Fetcher for Canned {
    async fn fetch(
        &self,
        _id: &folkhub_core::PersonId,
        _client: &str,
    ) -> Result<folkhub_api::Fetched, folkhub_api::FetchError> {
        Err(folkhub_api::FetchError::Unavailable(
            "not in this test".into(),
        ))
    }

    async fn search(
        &self,
        _query: &folkhub_core::contract::SearchQuery,
        _client: &str,
    ) -> Result<folkhub_api::Searched, folkhub_api::FetchError> {
        Ok(folkhub_api::Searched {
            asked: vec!["spar".into()],
            hits: self.0.clone(),
            too_many: None,
        })
    }
}

fn hit(id: &str, protected: bool) -> folkhub_api::SearchHit {
    let now = chrono::Utc::now();
    let mut fields = vec![
        ("name.family", json!("Berg"), vec![]),
        ("birth.date", json!("1980-01-01"), vec![]),
        (
            "address.residential",
            json!({"street": "Storgatan 1", "postal_code": "11122", "city": "Stockholm", "country": "SE"}),
            vec![],
        ),
    ];
    if protected {
        fields.push(("protection.se-protected-registration", json!(true), vec![]));
    }
    let candidates: BTreeMap<String, Vec<Candidate>> = fields
        .into_iter()
        .map(|(path, value, labels)| {
            (
                path.to_string(),
                vec![Candidate {
                    source: "spar".into(),
                    release: "2.2.0".into(),
                    upstream_version: "2023.1".into(),
                    value,
                    labels,
                    effective: None,
                    retrieved: now,
                }],
            )
        })
        .collect();
    let record: MergedRecord = folkhub_core::merge::merge(&MergeRules::default(), &candidates);
    folkhub_api::SearchHit {
        sources: vec!["spar".into()],
        ids: vec![SourceId {
            scheme: "se-pnr".into(),
            value: id.into(),
            active: true,
        }],
        record,
    }
}

/// As an attacker would probe it: a protected person a register returns is
/// not shown to a basis that may not see past the protection, is not
/// counted against `limit` (so "narrow" does not betray them), is not in
/// the access log's list of persons shown, and is shown to a basis that
/// covers the protection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_hit_leaves_no_trace_for_a_basis_that_may_not_see_it() {
    let env = TestEnv::start(Setup {
        seed: 72,
        count: 20,
        ..Setup::default()
    })
    .await;
    let (open_a, open_b, hidden) = ("198001012384", "198001019876", "198001015555");
    let mut state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    state.fetch = Some(Arc::new(Canned(vec![
        hit(open_a, false),
        hit(hidden, true),
        hit(open_b, false),
    ])));
    let query =
        |limit: u32| json!({ "family": "Berg", "birth_date": "1980-01-01", "limit": limit });
    for basis in ["school", "directory", "benefits"] {
        let api = client(&state, basis, true).await;
        let (status, body) = search(&api, query(2)).await;
        assert_eq!(status, StatusCode::OK, "{basis}: {body}");
        assert_eq!(body["outcome"], "hits", "{basis}: {body}");
        assert_eq!(hit_ids(&body), [open_a, open_b], "{basis}: {body}");
        assert!(!body.to_string().contains(hidden), "{basis}: {body}");
        // One visible person too many: narrow, counting only the visible.
        let (_, body) = search(&api, query(1)).await;
        assert_eq!(body["outcome"], "narrow", "{basis}: {body}");
        assert_eq!(body["matched"], json!(2), "{basis}: {body}");
        for entry in searches_logged(env.host.store(), &api.client).await {
            assert!(!entry.to_string().contains(hidden), "{basis}: {entry}");
        }
    }
    // The directory basis sees names and birth dates only.
    let directory = client(&state, "directory", true).await;
    let (_, body) = search(&directory, query(5)).await;
    assert_eq!(
        body["hits"][0]["withheld"]["address.residential"],
        "outside-basis"
    );
    assert!(
        body["hits"][0]["fields"]
            .get("address.residential")
            .is_none()
    );
    // A basis that covers skyddad folkbokföring sees all three, the
    // protected address with its label.
    let full = client(&state, "full", true).await;
    let (_, body) = search(&full, query(2)).await;
    assert_eq!(
        (body["outcome"].clone(), body["matched"].clone()),
        (json!("narrow"), json!(3))
    );
    let (_, body) = search(&full, query(3)).await;
    assert_eq!(hit_ids(&body), [open_a, hidden, open_b], "{body}");
    assert_eq!(
        body["hits"][1]["labels"]["address.residential"],
        json!(["SKYDDAD_FOLKBOKFORING"]),
        "{body}"
    );
}

/// The search question the SPAR connector builds holds to the element
/// table written from SPAR's published XSDs (PersonsokningSokparametrar-1.1,
/// Sokargument-1.2): names, namespaces, parents and value types, for every
/// criterion; and what the schema would refuse is refused before a call.
#[test]
fn the_spar_search_question_holds_to_the_published_schema() {
    use connector_spar::mapping::{Criteria, UPSTREAM, search_request};
    let table = folkhub_sim::wire::table(&format!("spar-{}", UPSTREAM.version))
        .unwrap_or_else(|e| panic!("{e}"));
    let filled = |xml: String| {
        xml.replace("{{secret:KundNrLeveransMottagare}}", "500243")
            .replace("{{secret:KundNrSlutkund}}", "500243")
            .replace("{{secret:UppdragId}}", "637")
    };
    let full = Criteria {
        family: Some("Lind* af Klercker".into()),
        given: Some("Anna-Karin  O'Neil".into()),
        birth_date: Some("1984-03-12".into()),
        postal_code: Some("413 19".into()),
        municipality: Some("1480".into()),
    };
    let xml = filled(search_request(&full, "handläggare", &["Relationer"]).expect("question"));
    if let Err(problems) = table.check_xml(&xml) {
        panic!("{problems:?}\n{xml}");
    }
    let doc = roxmltree::Document::parse(&xml).expect("xml");
    let argument = |name: &str| {
        doc.descendants()
            .find(|n| {
                n.tag_name().name() == name
                    && n.tag_name().namespace()
                        == Some("http://statenspersonadressregister.se/schema/komponent/sok/sokargument-1.2")
            })
            .and_then(|n| n.text())
            .map(String::from)
    };
    for (name, value) in [
        ("FornamnSokArgument", "Anna-Karin O'Neil"),
        ("MellanEfternamnSokArgument", "Lind* af Klercker"),
        ("PostNr", "41319"),
        ("Fodelsedatum", "1984-03-12"),
        ("LanKod", "14"),
        ("KommunKod", "80"),
    ] {
        assert_eq!(argument(name).as_deref(), Some(value), "{name}: {xml}");
    }
    for only in [
        Criteria {
            family: Some("Berg".into()),
            ..Criteria::default()
        },
        Criteria {
            postal_code: Some("11122".into()),
            ..Criteria::default()
        },
    ] {
        let xml = filled(search_request(&only, "folkhub", &[]).expect("question"));
        assert!(table.check_xml(&xml).is_ok(), "{xml}");
    }
    for (bad, says) in [
        (
            Criteria {
                family: Some("<Berg>".into()),
                ..Criteria::default()
            },
            "family",
        ),
        (
            Criteria {
                family: Some("B".repeat(61)),
                ..Criteria::default()
            },
            "at most 60",
        ),
        (
            Criteria {
                postal_code: Some("01234".into()),
                ..Criteria::default()
            },
            "postnummer",
        ),
        (
            Criteria {
                municipality: Some("180".into()),
                ..Criteria::default()
            },
            "kommunkod",
        ),
        (
            Criteria {
                birth_date: Some("1984-3-12".into()),
                ..Criteria::default()
            },
            "YYYY-MM-DD",
        ),
        (Criteria::default(), "at least one"),
    ] {
        let e = search_request(&bad, "folkhub", &[]).expect_err("refused");
        assert!(e.contains(says), "{says}: {e}");
    }
}
