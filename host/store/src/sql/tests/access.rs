//! The access log and its clients, on both backends and under a
//! PostgreSQL role that does not own it.

use super::*;

/// PostgreSQL with the schema owned by one role and `serve` running as
/// another that may only read and append (the operator guide's
/// advice): the serving role logs and verifies, and cannot change,
/// replace, truncate or un-trigger the access log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_role_without_ownership_cannot_rewrite_the_access_log() {
    let owner_url = crate::local_postgres::fresh_database().unwrap();
    let owner = SqlStore::open_url(&owner_url, MergeRules::default(), OpenMode::Migrate)
        .await
        .unwrap();
    let database = owner_url.rsplit('/').next().unwrap().to_string();
    let role = format!("serve_{database}");
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT CONNECT ON DATABASE {database} TO {role}"),
        format!("GRANT USAGE ON SCHEMA public TO {role}"),
        format!("GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        sqlx::query(&sql).execute(&owner.pool).await.unwrap();
    }
    let serve_url = owner_url.replacen("postgres://folkhub@", &format!("postgres://{role}@"), 1);
    let serve = SqlStore::open_url(&serve_url, MergeRules::default(), OpenMode::RequireCurrent)
        .await
        .unwrap();
    let entry = |person: i64| AccessEntry {
        at: Utc::now(),
        client: "school".into(),
        basis: "school".into(),
        purpose: "pupils".into(),
        person,
        endpoint: "GET /v1/persons/{id}".into(),
        fields: vec!["name.given".into()],
        criteria: None,
    };
    serve.log_access(&[entry(1), entry(2)]).await.unwrap();
    serve.log_access(&[entry(3)]).await.unwrap();
    for sql in [
        "UPDATE access_log SET client = 'nobody' WHERE seq = 1",
        "DELETE FROM access_log WHERE seq = 1",
        "TRUNCATE access_log",
        "INSERT INTO access_log (seq, at, client, basis, purpose, person_id, endpoint, field_set, criteria, hash)
         SELECT seq, at, 'nobody', basis, purpose, person_id, endpoint, field_set, criteria, hash FROM access_log WHERE seq = 1
         ON CONFLICT (seq) DO UPDATE SET client = 'nobody'",
        "ALTER TABLE access_log DISABLE TRIGGER USER",
        "DROP TRIGGER access_log_no_change ON access_log",
        "DROP TABLE access_log CASCADE",
    ] {
        let e = sqlx::query(sql).execute(&serve.access).await;
        assert!(e.is_err(), "the serving role could: {sql}");
    }
    let report = serve.verify_access_log().await.unwrap();
    assert_eq!((report.entries, report.broken), (3, None));
}

pub(super) async fn the_access_log_is_append_only_and_clients_keep_their_names(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(b, &dir.path().join("s.db")).await;
    let entry = |person: i64| AccessEntry {
        at: Utc::now(),
        client: "school".into(),
        basis: "school".into(),
        purpose: "pupils".into(),
        person,
        endpoint: "GET /v1/persons/{id}".into(),
        fields: vec!["name.given".into()],
        criteria: None,
    };
    store
        .log_access(&(1..=250).map(entry).collect::<Vec<_>>())
        .await
        .unwrap();
    let all = store
        .access_log(&AccessQuery {
            limit: 1000,
            ..AccessQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 250);
    let mut want = entry(250);
    want.at = all[249].entry.at;
    assert_eq!(all[249].entry, want);
    // 250 reads of the same fields: the list is stored once.
    let sets: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM access_field_sets")
        .fetch_one(&store.access)
        .await
        .unwrap();
    assert_eq!(sets, 1);
    for sql in [
        "UPDATE access_log SET client = 'nobody'",
        "DELETE FROM access_log WHERE seq = 1",
        "UPDATE access_field_sets SET fields = '[]'",
        "DELETE FROM access_field_sets",
    ] {
        let e = sqlx::query(sql).execute(&store.access).await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
    }
    // An insert may not replace a row (issue 16: SQLite fires no delete
    // trigger on REPLACE; PostgreSQL's upsert is an update).
    let replaces: &[&str] = match b {
        Backend::Sqlite => &[
            "INSERT OR REPLACE INTO access_log (seq, at, client, basis, purpose, person_id, endpoint, field_set, criteria, hash)
             SELECT seq, at, 'nobody', basis, purpose, person_id, endpoint, field_set, criteria, hash FROM access_log WHERE seq = 1",
            "REPLACE INTO access_field_sets (id, fields) VALUES (1, '[]')",
            "INSERT OR REPLACE INTO access_field_sets (fields) VALUES ('[\"name.given\"]')",
        ],
        Backend::Postgres => &[
            "INSERT INTO access_log (seq, at, client, basis, purpose, person_id, endpoint, field_set, criteria, hash)
             SELECT seq, at, 'nobody', basis, purpose, person_id, endpoint, field_set, criteria, hash FROM access_log WHERE seq = 1
             ON CONFLICT (seq) DO UPDATE SET client = 'nobody'",
            "INSERT INTO access_field_sets (id, fields) VALUES (1, '[]') ON CONFLICT (id) DO UPDATE SET fields = '[]'",
        ],
    };
    for sql in replaces {
        let e = sqlx::query(sql).execute(&store.access).await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    // The chain holds; an edit made past the triggers (as whoever owns
    // the file or the tables can) is found at its entry.
    let report = store.verify_access_log().await.unwrap();
    assert_eq!((report.entries, report.before_chain), (250, 0));
    assert_eq!(report.broken, None);
    assert_eq!(report.head.as_ref().map(|h| h.seq), Some(250));
    let bypass: &[&str] = match b {
        Backend::Sqlite => &["DROP TRIGGER access_log_no_update"],
        Backend::Postgres => &["ALTER TABLE access_log DISABLE TRIGGER USER"],
    };
    for sql in bypass {
        sqlx::query(sql).execute(&store.access).await.unwrap();
    }
    sqlx::query("UPDATE access_log SET client = 'nobody' WHERE seq = 100")
        .execute(&store.access)
        .await
        .unwrap();
    let report = store.verify_access_log().await.unwrap();
    assert_eq!(report.broken.map(|b| b.seq), Some(100));
    assert_eq!(report.head, None);
    let page = store
        .access_log(&AccessQuery {
            person: Some(7),
            after: 0,
            limit: 10,
            ..AccessQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);

    let new = |name: &str, hash: &str| NewClient {
        name: name.into(),
        auth: ClientAuth::ApiKey,
        secret_sha256: hash.into(),
        basis: "school".into(),
        purpose: "pupils".into(),
        admin: false,
        rate_limit: 10,
        persons_per_minute: 60_000,
        may_fetch: false,
        created_by: "test".into(),
    };
    store.add_client(new("school", "aa")).await.unwrap();
    assert!(store.client_by_secret("aa").await.unwrap().is_some());
    assert!(store.revoke_client("school", "ops", "done").await.unwrap());
    assert!(store.client_by_secret("aa").await.unwrap().is_none());
    assert!(!store.revoke_client("school", "ops", "again").await.unwrap());
    let e = store.add_client(new("school", "bb")).await.unwrap_err();
    assert!(e.to_string().contains("exists already"), "{e}");
}
