//! The hostile world: issue 16's probes, replayed. An attacker and a
//! clumsy client against a running server on loopback: slow headers, idle
//! and surplus connections, slow and oversized bodies, long URIs and
//! headers, wrong methods, odd IDs, metrics and health without a client, a
//! client over its quota of persons, OAuth2 tokens from a local issuer
//! (valid, expired, for another audience, without the scope, from another
//! issuer, after a key rotation, forged with the public key as an HMAC
//! secret), TLS with client certificates, and the access log rewritten on
//! a copy. Search walking and cursor probing over the five-register
//! population are in `access.rs` (`nordic` runs them); tampered release
//! artifacts in `sandbox.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use folkhub_api::edge::EdgeConfig;
use folkhub_store::{AccessEntry, AccessQuery, ClientAuth, NewClient};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::api::{Api, client, get, post_json, send_raw, synced_env};

/// Serves `state` with `edge` on a free loopback port until the sender
/// is dropped or sent to.
async fn serve(
    mut state: folkhub_api::ApiState,
    edge: EdgeConfig,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    state.edge = Arc::new(edge.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(folkhub_api::edge::serve(
        listener,
        folkhub_api::app(state),
        edge,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// Reads until the peer closes (or fails); how long that took, and what came.
async fn until_closed(conn: &mut tokio::net::TcpStream, within: Duration) -> (Duration, String) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(within, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (
        started.elapsed(),
        String::from_utf8_lossy(&seen).into_owned(),
    )
}

fn tight() -> EdgeConfig {
    EdgeConfig {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(1),
        max_connections: 4,
        max_body: 4096,
        tls: None,
    }
}

/// Slowloris, half-open and idle connections, slow and oversized bodies:
/// the edge lets none of them hold the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_and_surplus_connections_are_cut_off() {
    let env = synced_env(161, 3).await;
    let state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    let (addr, _stop) = serve(state, tight()).await;

    // A byte every 300 ms of a head that never ends: cut off at the
    // header timeout (1 s), not after the 30 s the head would take.
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "GET /v1/health HTTP/1.1\r\nhost: x\r\nx-pad: {}",
        "a".repeat(100)
    );
    let (closed_tx, mut closed_rx) = tokio::sync::oneshot::channel::<Duration>();
    let (mut reader, mut writer) = slow.split();
    let started = Instant::now();
    let read = async {
        let mut buf = [0u8; 256];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = closed_tx.send(started.elapsed());
    };
    let write = async {
        for byte in head.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if started.elapsed() > Duration::from_secs(8) {
                break;
            }
        }
    };
    tokio::join!(read, write);
    let took = closed_rx
        .try_recv()
        .expect("the server closed the connection");
    assert!(
        took < Duration::from_secs(4),
        "a slow head held its connection for {took:?}"
    );

    // An idle keep-alive connection after an answer is closed.
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let (took, answer) = until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took < Duration::from_secs(5), "idle for {took:?}");

    // Four half-open connections fill the cap; the fifth is closed at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut surplus = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (took, answer) = until_closed(&mut surplus, Duration::from_secs(5)).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(
        took < Duration::from_millis(900),
        "a connection over the cap was kept {took:?}"
    );
    // The held ones time out, and the server answers again.
    for mut c in held {
        let (took, _) = until_closed(&mut c, Duration::from_secs(5)).await;
        assert!(took < Duration::from_secs(4), "half-open for {took:?}");
    }
    let mut again = tokio::net::TcpStream::connect(addr).await.expect("connect");
    again
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let (_, answer) = until_closed(&mut again, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A body that stalls: 408 as JSON within the body timeout.
    let mut stall = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stall
        .write_all(
            b"POST /v1/persons/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"ids\": [",
        )
        .await
        .expect("write");
    let (took, answer) = until_closed(&mut stall, Duration::from_secs(6)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body-timeout\""), "{answer}");
    assert!(took < Duration::from_secs(4), "{took:?}");

    // A body over max_body: 413 as JSON, without reading it.
    let mut large = tokio::net::TcpStream::connect(addr).await.expect("connect");
    large
        .write_all(
            b"POST /v1/persons/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5000000\r\nconnection: close\r\n\r\n",
        )
        .await
        .expect("write");
    let (_, answer) = until_closed(&mut large, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"body-too-large\""), "{answer}");
    // A chunked body with no length given is cut at the limit too.
    let mut chunked = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let chunk = "x".repeat(3000);
    chunked
        .write_all(
            format!(
                "POST /v1/persons/batch HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
                len = chunk.len()
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let (_, answer) = until_closed(&mut chunked, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// Every status carries a JSON error and every answer the security
/// headers: 404, 405, 413, 414, 431, 401, 403 and 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_json_and_carries_the_security_headers() {
    let env = synced_env(162, 3).await;
    let mut state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    state.edge = Arc::new(tight());
    let admin = Api::with_state(state.clone(), "full", true).await;
    let (sname, skey) = client(env.host.store(), "school", false, ClientAuth::ApiKey, 1000).await;
    let school = admin.as_client(sname, skey, ClientAuth::ApiKey);
    let long = format!("/v1/persons?id=010190&x={}", "a".repeat(9000));
    let cases: Vec<(Api, Request<Body>, StatusCode, &str)> = vec![
        (
            admin.clone(),
            Request::get("/v1/nothing").body(Body::empty()).expect("r"),
            StatusCode::NOT_FOUND,
            "no-such-route",
        ),
        (
            admin.clone(),
            Request::delete("/v1/persons/03851598730")
                .body(Body::empty())
                .expect("r"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
        ),
        (
            admin.clone(),
            Request::post("/v1/health").body(Body::empty()).expect("r"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
        ),
        (
            admin.clone(),
            Request::post("/v1/persons/batch")
                .header("content-type", "application/json")
                .body(Body::from(format!(
                    "{{\"ids\": [\"{}\"]}}",
                    "1".repeat(5000)
                )))
                .expect("r"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
        ),
        (
            admin.clone(),
            Request::get(long.as_str()).body(Body::empty()).expect("r"),
            StatusCode::URI_TOO_LONG,
            "uri-too-long",
        ),
        (
            admin.clone(),
            Request::get("/v1/persons/03851598730")
                .header("x-padding", "p".repeat(20_000))
                .body(Body::empty())
                .expect("r"),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
        ),
        (
            school.clone(),
            Request::get("/v1/access-log")
                .body(Body::empty())
                .expect("r"),
            StatusCode::FORBIDDEN,
            "admin-only",
        ),
        (
            admin.clone(),
            Request::get("/v1/health").body(Body::empty()).expect("r"),
            StatusCode::OK,
            "",
        ),
    ];
    for (api, request, status, code) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let (parts, body) = request.into_parts();
        let mut builder = Request::builder().method(parts.method).uri(parts.uri);
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        let (got, headers, json) = send_raw(api, builder, body).await;
        assert_eq!(got, status, "{what}: {json}");
        if !code.is_empty() {
            assert_eq!(json["error"]["code"], code, "{what}: {json}");
            assert!(json["error"]["message"].is_string(), "{what}");
        }
        for (name, value) in [
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert_eq!(
                headers.get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{what}: {name}"
            );
        }
        assert!(
            headers
                .get("content-security-policy")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("default-src 'none'")),
            "{what}"
        );
    }
    // Without a client at all: 401 as JSON, with the headers.
    let response = tower::ServiceExt::oneshot(
        admin.router.clone(),
        Request::get("/v1/persons/03851598730")
            .body(Body::empty())
            .expect("r"),
    )
    .await
    .expect("response");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["cache-control"], "no-store");
}

/// IDs with whitespace or control characters, FHIR identifiers without a
/// system: refused, never read as another spelling of an ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_and_identifiers_without_a_system_are_refused() {
    let env = synced_env(163, 3).await;
    let api = Api::new(&env.host, "full", true).await;
    let truth = env.sim.truth().await;
    let id = truth[0].ids.last().expect("id").clone();
    let (status, body) = get(api.clone(), &format!("/v1/persons/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for odd in [
        format!("{id}%20"),
        format!("%20{id}"),
        format!("{id}%0A"),
        format!("{id}%0D%0A"),
        format!("{id}%09"),
        format!("{id}%00"),
        format!("{id}%C2%A0"),
        format!("{}%20{}", &id[..6], &id[6..]),
    ] {
        let (status, body) = get(api.clone(), &format!("/v1/persons/{odd}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid-id")),
            "{odd}: {body}"
        );
        let (status, body) = get(api.clone(), &format!("/v1/persons/{odd}/history")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{odd}: {body}");
    }
    let (status, body) = post_json(
        api.clone(),
        "/v1/persons/batch",
        &json!({"ids": [id.clone(), format!("{id}\n")]}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("ids[1]")),
        "{body}"
    );
    let (status, body) = get(api.clone(), &format!("/v1/persons?id={}%20", &id[..6])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // FHIR: the system is required, as docs/api.md says.
    for identifier in [id.clone(), format!("%7C{id}")] {
        let (status, body) = get(
            api.clone(),
            &format!("/fhir/Patient?identifier={identifier}"),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid-parameter")),
            "{identifier}: {body}"
        );
    }
    let (status, body) = get(
        api.clone(),
        &format!("/fhir/Patient?identifier=urn:oid:2.16.578.1.12.4.1.4.1%7C{id}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `/metrics` and the detailed health name clients, releases and
/// digests: an admin client or the admin listener, nobody else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_detailed_health_are_for_admins() {
    let env = synced_env(164, 3).await;
    let state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    let admin = Api::with_state(state.clone(), "full", true).await;
    let (name, key) = client(env.host.store(), "full", false, ClientAuth::ApiKey, 1000).await;
    let reader = admin.as_client(name, key, ClientAuth::ApiKey);
    let anonymous = |uri: &str| {
        tower::ServiceExt::oneshot(
            admin.router.clone(),
            Request::get(uri).body(Body::empty()).expect("r"),
        )
    };
    let response = anonymous("/metrics").await.expect("response");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = get(reader.clone(), "/metrics").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = send_raw(admin.clone(), Request::get("/metrics"), Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let response = anonymous("/v1/health").await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .expect("body")
        .to_bytes();
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(body, json!({"status": "ok"}), "nothing but the status");
    let (_, body) = get(reader, "/v1/health").await;
    assert_eq!(body, json!({"status": "ok"}));
    let (_, body) = get(admin.clone(), "/v1/health").await;
    assert_eq!(body["persons"], 3, "{body}");
    assert!(body["connectors"][0]["digest"].is_string(), "{body}");
    // The admin listener: both, without a client, and no person data.
    let router = folkhub_api::admin_app(state);
    for (uri, status) in [
        ("/metrics", StatusCode::OK),
        ("/v1/health", StatusCode::OK),
        ("/v1/persons/03851598730", StatusCode::NOT_FOUND),
        ("/v1/access-log", StatusCode::NOT_FOUND),
    ] {
        let response = tower::ServiceExt::oneshot(
            router.clone(),
            Request::get(uri).body(Body::empty()).expect("r"),
        )
        .await
        .expect("response");
        assert_eq!(response.status(), status, "{uri}");
    }
}

/// A client limited to requests per second could still read thousands of
/// persons a second; its quota of persons per minute stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gets_no_more_persons_a_minute_than_its_quota() {
    let env = synced_env(165, 12).await;
    let admin = Api::new(&env.host, "full", true).await;
    let secret = folkhub_api::auth::new_secret();
    env.host
        .store()
        .add_client(NewClient {
            name: "greedy".into(),
            auth: ClientAuth::ApiKey,
            secret_sha256: folkhub_api::auth::hash_secret(&secret),
            basis: "full".into(),
            purpose: "testing the quota".into(),
            admin: false,
            rate_limit: 1000,
            persons_per_minute: 10,
            may_fetch: false,
            created_by: "test".into(),
        })
        .await
        .expect("client");
    let greedy = admin.as_client("greedy".into(), secret, ClientAuth::ApiKey);
    let (status, body) = get(greedy.clone(), "/v1/changes?limit=10000").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, headers, body) = send_raw(
        greedy.clone(),
        Request::get("/v1/changes?limit=5"),
        Body::empty(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("quota-exceeded")),
        "{body}"
    );
    assert!(headers.contains_key("retry-after"));
    let (status, _) = get(greedy, "/v1/persons?id=010190").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

/// Overrides and conflicts carry person values: reading them is logged
/// like a person read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_overrides_and_conflicts_are_logged() {
    let env = synced_env(166, 3).await;
    let admin = Api::new(&env.host, "full", true).await;
    let truth = env.sim.truth().await;
    let id = truth[0].ids.last().expect("id").clone();
    let person = env
        .host
        .store()
        .person(&id)
        .await
        .expect("read")
        .expect("person");
    env.host
        .store()
        .add_override(folkhub_store::NewOverride {
            person_id: id.clone(),
            path: "contact.email".into(),
            value: json!("kept@example.no"),
            reason: "the person asked".into(),
            actor: "test".into(),
            expires: None,
        })
        .await
        .expect("override");
    let (status, body) = get(admin.clone(), "/v1/overrides").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = get(admin.clone(), "/v1/conflicts").await;
    assert_eq!(status, StatusCode::OK);
    let log = env
        .host
        .store()
        .access_log(&AccessQuery {
            client: Some(admin.client.clone()),
            limit: 100,
            ..AccessQuery::default()
        })
        .await
        .expect("log");
    let overrides: Vec<_> = log
        .iter()
        .filter(|e| e.entry.endpoint == "GET /v1/overrides")
        .collect();
    assert_eq!(overrides.len(), 1, "{log:?}");
    assert_eq!(overrides[0].entry.person, person.key);
    assert_eq!(overrides[0].entry.fields, vec!["contact.email".to_string()]);
}

/// The access log as a tamperer with the database files would meet it:
/// REPLACE refused, an edit past the triggers named by `audit verify`, a
/// rewritten chain caught against the exported day files; the files are
/// the service user's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_resists_rewriting_and_audit_verify_finds_edits() {
    let env = synced_env(167, 3).await;
    let api = Api::new(&env.host, "full", true).await;
    let store = env.host.store();
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    let entry = |person: i64, at| AccessEntry {
        at,
        client: "school".into(),
        basis: "school".into(),
        purpose: "pupils".into(),
        person,
        endpoint: "GET /v1/persons/{id}".into(),
        fields: vec!["name.given".into()],
        criteria: None,
    };
    store
        .log_access(&(1..=20).map(|p| entry(p, yesterday)).collect::<Vec<_>>())
        .await
        .expect("log");
    let (status, _) = get(api.clone(), "/v1/persons?id=010190").await;
    assert_eq!(status, StatusCode::OK);
    let exports = env.dir.path().join("audit");
    let day = yesterday.date_naive().to_string();
    folkhub_app::audit::export(&env.host, Some(&day), &exports)
        .await
        .expect("export");
    let file = exports.join(format!("access-{day}.jsonl"));
    let text = std::fs::read_to_string(&file).expect("day file");
    assert_eq!(text.lines().count(), 21, "20 entries and the head");
    let head: Value = serde_json::from_str(text.lines().last().expect("head")).expect("json");
    assert_eq!(head["head"]["seq"], 20, "{head}");
    let error = folkhub_app::audit::export(&env.host, Some(&day), &exports)
        .await
        .expect_err("a day is written once");
    assert!(error.to_string().contains("exported once"), "{error}");
    folkhub_app::audit::verify(&env.host, Some(&exports))
        .await
        .expect("verify")
        .ensure_intact()
        .expect("the chain holds");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let db = env.dir.path().join("folkhub.db");
        for path in [
            db.clone(),
            folkhub_store::sql::SqlStore::access_path(&db),
            file.clone(),
        ] {
            let mode = std::fs::metadata(&path).expect("file").permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", path.display());
        }
    }

    // The tamperer's tools, on the access log's own file.
    let access = folkhub_store::sql::SqlStore::access_path(&env.dir.path().join("folkhub.db"));
    let raw = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}", access.display()))
        .await
        .expect("open");
    for sql in [
        "INSERT OR REPLACE INTO access_log (seq, at, client, basis, purpose, person_id, endpoint, field_set, criteria, hash)
         SELECT seq, at, 'nobody', basis, purpose, person_id, endpoint, field_set, criteria, hash FROM access_log WHERE seq = 1",
        "REPLACE INTO access_field_sets (id, fields) VALUES (1, '[]')",
        "UPDATE access_log SET client = 'nobody' WHERE seq = 3",
        "DELETE FROM access_log WHERE seq = 3",
    ] {
        let e = sqlx::query(sql).execute(&raw).await.expect_err(sql);
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    // Past the triggers: the edit is named.
    sqlx::query("DROP TRIGGER access_log_no_update")
        .execute(&raw)
        .await
        .expect("drop");
    sqlx::query("UPDATE access_log SET client = 'nobody' WHERE seq = 7")
        .execute(&raw)
        .await
        .expect("edit");
    let error = folkhub_app::audit::verify(&env.host, None)
        .await
        .expect("verify")
        .ensure_intact()
        .expect_err("broken");
    assert!(error.to_string().contains("entry 7"), "{error}");
    // The whole chain recomputed to hide the edit: it holds in itself, but
    // no longer ends in the head exported yesterday.
    type Row = (
        i64,
        String,
        String,
        String,
        String,
        i64,
        String,
        String,
        Option<String>,
    );
    let rows: Vec<Row> =
        sqlx::query_as(
            "SELECT a.seq, a.at, a.client, a.basis, a.purpose, a.person_id, a.endpoint, f.fields, a.criteria
             FROM access_log a JOIN access_field_sets f ON f.id = a.field_set ORDER BY a.seq",
        )
        .fetch_all(&raw)
        .await
        .expect("rows");
    let mut previous = folkhub_store::audit::GENESIS.to_string();
    for (seq, at, client, basis, purpose, person, endpoint, fields, criteria) in &rows {
        previous = folkhub_store::audit::link_hash(
            &previous,
            &folkhub_store::audit::Link {
                seq: *seq,
                at,
                client,
                basis,
                purpose,
                person: *person,
                endpoint,
                fields,
                criteria: criteria.as_deref(),
            },
        );
        sqlx::query("UPDATE access_log SET hash = $1 WHERE seq = $2")
            .bind(&previous)
            .bind(seq)
            .execute(&raw)
            .await
            .expect("rehash");
    }
    folkhub_app::audit::verify(&env.host, None)
        .await
        .expect("verify")
        .ensure_intact()
        .expect("a recomputed chain holds in itself");
    let error = folkhub_app::audit::verify(&env.host, Some(&exports))
        .await
        .expect("verify")
        .ensure_intact()
        .expect_err("but not against the exported head");
    assert!(error.to_string().contains("rewritten"), "{error}");
}

/// An OAuth2 issuer the test runs on loopback: a JWKS it can rotate, and
/// tokens signed with its keys.
struct Issuer {
    url: String,
    keys: Arc<std::sync::Mutex<Vec<Value>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct SigningKey {
    kid: String,
    der: Vec<u8>,
    jwk: Value,
}

fn signing_key(kid: &str) -> SigningKey {
    use base64::Engine;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("key");
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    SigningKey {
        kid: kid.into(),
        der: key.to_pkcs1_der().expect("der").as_bytes().to_vec(),
        jwk: json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64(key.n().to_bytes_be()), "e": b64(key.e().to_bytes_be()),
        }),
    }
}

async fn issuer() -> Issuer {
    let keys = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let served = keys.clone();
    let router = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let keys = served.lock().expect("keys").clone();
            async move { axum::Json(json!({ "keys": keys })) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Issuer {
        url,
        keys,
        _stop: stop,
    }
}

fn token(key: &SigningKey, claims: Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_der(&key.der),
    )
    .expect("sign")
}

/// Host apps' OAuth2 client credentials: tokens from an issuer the
/// operator configured open the API as the client registered for their
/// client id; every kind of bad token is refused with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_tokens_from_a_local_issuer() {
    let env = synced_env(168, 3).await;
    let issuer = issuer().await;
    let first = signing_key("key-1");
    issuer.keys.lock().expect("keys").push(first.jwk.clone());
    let mut state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    state.oauth2 = Some(folkhub_api::oauth2::OAuth2::new(
        vec![folkhub_api::oauth2::IssuerConfig {
            name: "local".into(),
            issuer: format!("{}/", issuer.url),
            jwks_url: format!("{}/jwks", issuer.url),
            audience: "folkhub".into(),
            scopes: vec!["folkhub:read".into()],
            leeway: Duration::from_secs(5),
            refetch_after: Duration::ZERO,
        }],
        Arc::new(|url: String| {
            Box::pin(async move { folkhub_runtime::credentials::fetch(&url).await })
        }),
    ));
    let api = Api::with_state(state, "full", true).await;
    env.host
        .store()
        .add_client(NewClient {
            name: "school-app".into(),
            auth: ClientAuth::OAuth2,
            secret_sha256: ClientAuth::oauth2_subject("local", "school-app-id"),
            basis: "school".into(),
            purpose: "pupils and guardians".into(),
            admin: false,
            rate_limit: 100,
            persons_per_minute: 10_000,
            may_fetch: false,
            created_by: "test".into(),
        })
        .await
        .expect("client");
    let id = env.sim.truth().await[0].ids.last().expect("id").clone();
    let now = chrono::Utc::now().timestamp();
    let claims = |edit: &dyn Fn(&mut Value)| {
        let mut c = json!({
            "iss": format!("{}/", issuer.url), "aud": "folkhub", "client_id": "school-app-id",
            "scope": "folkhub:read other:scope", "iat": now, "exp": now + 120,
        });
        edit(&mut c);
        c
    };
    let with = |token: String| api.as_client("school-app".into(), token, ClientAuth::OAuth2);
    let uri = format!("/v1/persons/{id}");
    let (status, body) = get(with(token(&first, claims(&|_| {}))), &uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let log = env
        .host
        .store()
        .access_log(&AccessQuery {
            client: Some("school-app".into()),
            limit: 10,
            ..AccessQuery::default()
        })
        .await
        .expect("log");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].entry.basis, "school");

    for (why, token, expect) in [
        (
            "expired",
            token(&first, claims(&|c| c["exp"] = json!(now - 60))),
            "expired",
        ),
        (
            "another audience",
            token(&first, claims(&|c| c["aud"] = json!("another-service"))),
            "not for this service",
        ),
        (
            "no scope",
            token(&first, claims(&|c| c["scope"] = json!("other:scope"))),
            "lacks the scope folkhub:read",
        ),
        (
            "another issuer",
            token(
                &first,
                claims(&|c| c["iss"] = json!("https://evil.example/")),
            ),
            "not accepted",
        ),
        (
            "unregistered client",
            token(&first, claims(&|c| c["client_id"] = json!("stranger"))),
            "no active client is registered",
        ),
        (
            "another key",
            token(&signing_key("key-1"), claims(&|_| {})),
            "does not verify",
        ),
        (
            "not yet valid",
            token(&first, claims(&|c| c["nbf"] = json!(now + 600))),
            "not valid yet",
        ),
    ] {
        let (status, body) = get(with(token), &uri).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(expect), "{why}: {message}");
    }
    // Algorithm confusion: HS256 with the public key as the secret.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("key-1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims(&|_| {}),
        &jsonwebtoken::EncodingKey::from_secret(first.jwk["n"].as_str().expect("n").as_bytes()),
    )
    .expect("sign");
    let (status, _) = get(with(forged), &uri).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Rotation: the issuer publishes a new key and signs with it.
    let second = signing_key("key-2");
    issuer.keys.lock().expect("keys").push(second.jwk.clone());
    let (status, body) = get(with(token(&second, claims(&|_| {}))), &uri).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A token is not an API key of the same client.
    let (status, _) = get(
        api.as_client(
            "school-app".into(),
            token(&second, claims(&|_| {})),
            ClientAuth::ApiKey,
        ),
        &uri,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// TLS with required client certificates: no certificate, no connection;
/// with one, the API answers over TLS with HSTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_required_client_certificates() {
    use rustls_pki_types::pem::PemObject;
    let env = synced_env(169, 3).await;
    let dir = env.dir.path().join("tls");
    // The client side: the simulator's PKI (a CA and a client certificate).
    let pki = folkhub_sim::pki::Pki::generate(&dir.join("clients")).expect("pki");
    // The server's own certificate, self-signed for 127.0.0.1.
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .self_signed(&server_key)
        .expect("cert");
    std::fs::write(dir.join("server.pem"), server_cert.pem()).expect("write");
    std::fs::write(dir.join("server-key.pem"), server_key.serialize_pem()).expect("write");
    let tls = folkhub_api::edge::tls_config(
        &dir.join("server.pem"),
        &dir.join("server-key.pem"),
        Some(&pki.ca_file),
        true,
    )
    .expect("tls");
    let state = folkhub_app::serve::api_state(&env.host)
        .await
        .expect("state");
    let (addr, _stop) = serve(
        state,
        EdgeConfig {
            tls: Some(tls),
            ..EdgeConfig::default()
        },
    )
    .await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server_cert.der().clone()).expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let anonymous = Arc::new(builder.clone().with_no_client_auth());
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(&pki.client_cert_file)
        .expect("pem")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&pki.client_key_file).expect("key");
    let known = Arc::new(
        builder
            .with_client_auth_cert(chain, key)
            .expect("client cert"),
    );
    let ask = |config: Arc<rustls::ClientConfig>| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        tls.read_to_string(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<String, String>(answer)
    };
    let refused = ask(anonymous).await;
    assert!(
        refused.as_ref().map_or(true, |a| !a.contains("200 OK")),
        "a client without a certificate was answered: {refused:?}"
    );
    let answer = ask(known).await.expect("answered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_lowercase().contains("strict-transport-security"),
        "{answer}"
    );
    // A plain-HTTP request to the TLS port gets nothing.
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let (_, answer) = until_closed(&mut plain, Duration::from_secs(5)).await;
    assert!(!answer.contains("200 OK"), "{answer}");
}
