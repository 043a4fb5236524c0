//! The SQL store on both backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use folkhub_core::observation::{Observation, SourceId};

mod access;
use access::*;
mod follows;
use follows::*;
mod webhooks;
use webhooks::*;

/// Where a test's store lives: a file in its directory (SQLite) or a
/// new database in this process's own cluster (PostgreSQL).
fn test_url(b: Backend, path: &Path) -> String {
    match b {
        Backend::Sqlite => format!("sqlite://{}", path.display()),
        Backend::Postgres => crate::local_postgres::fresh_database()
            .unwrap_or_else(|e| panic!("a PostgreSQL database for the test: {e}")),
    }
}

async fn open(b: Backend, path: &Path) -> SqlStore {
    SqlStore::open_url(&test_url(b, path), MergeRules::default(), OpenMode::Migrate)
        .await
        .unwrap()
}

/// A store at schema version 3 (the version before leases) holding a
/// person, written as that version would; then this build's checks
/// and migration.
async fn an_older_schema_is_refused_until_migrated_and_keeps_its_data(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = test_url(b, &dir.path().join("old.db"));
    {
        let pool = connect(b, &url).await.unwrap();
        let access = match b {
            Backend::Sqlite => {
                let path = SqlStore::access_path(&sqlite_path(&url));
                connect(b, &format!("sqlite://{}", path.display()))
                    .await
                    .unwrap()
            }
            Backend::Postgres => pool.clone(),
        };
        migrate(&pool, b, &b.migrations()[..3]).await.unwrap();
        if b == Backend::Sqlite {
            migrate(&access, b, &SQLITE_ACCESS_MIGRATIONS[..1])
                .await
                .unwrap();
        }
        // A read logged before the log had its hash chain.
        sqlx::query(
            "INSERT INTO access_log_in (at, client, basis, purpose, person_id, endpoint, fields)
             VALUES ('2026-01-01T00:00:00.000000Z', 'old', 'full', 'p', 1, 'GET /v1/persons/{id}', '[]')",
        )
        .execute(&access)
        .await
        .unwrap();
        let old = SqlStore {
            backend: b,
            pool,
            access,
            access_writer: Mutex::new(()),
            rules: MergeRules::default(),
            writer: Mutex::new(()),
        };
        assert_eq!(old.schema().await.unwrap().before, 3);
        old.apply(batch(
            vec![person(
                &[("03851598730", true)],
                &[("name.family", json!("Nordmann"))],
            )],
            Some("7"),
        ))
        .await
        .unwrap();
    }
    // A build that does not migrate on start says what to run.
    let e = SqlStore::open_url(&url, MergeRules::default(), OpenMode::RequireCurrent)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("schema version 3") && e.contains("folkhub migrate"),
        "{e}"
    );
    let store = SqlStore::open_url(&url, MergeRules::default(), OpenMode::AsIs)
        .await
        .unwrap();
    let state = store.schema().await.unwrap();
    assert_eq!(
        state.pending.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        vec![4, 5, 6, 7, 8, 9]
    );
    let done = store.migrate().await.unwrap();
    assert_eq!((done.before, done.current), (3, 9));
    assert_eq!(done.applied[0].0, 4);
    assert!(store.migrate().await.unwrap().applied.is_empty(), "once");
    // The old entry stays, outside the chain; new ones are chained.
    store
        .log_access(&[AccessEntry {
            at: Utc::now(),
            client: "new".into(),
            basis: "full".into(),
            purpose: "p".into(),
            person: 1,
            endpoint: "GET /v1/persons/{id}".into(),
            fields: vec![],
            criteria: None,
        }])
        .await
        .unwrap();
    let report = store.verify_access_log().await.unwrap();
    assert_eq!((report.entries, report.before_chain), (2, 1));
    assert_eq!(report.broken, None);
    assert_eq!(report.head.map(|h| h.seq), Some(2));
    // The data is there and the new tables work.
    let p = store.person("03851598730").await.unwrap().unwrap();
    assert_eq!(p.record.fields["name.family"].value, json!("Nordmann"));
    assert_eq!(
        store.cursor("folkeregister").await.unwrap().as_deref(),
        Some("7")
    );
    let until = Utc::now() + chrono::Duration::seconds(30);
    assert!(store.acquire_lease("job:x", "a", until).await.unwrap());
    assert!(!store.acquire_lease("job:x", "b", until).await.unwrap());
    // A schema newer than this build is refused.
    sqlx::query(
        "INSERT INTO folkhub_migrations (version, name, applied_at) VALUES (99, 'future', 'now')",
    )
    .execute(&store.pool)
    .await
    .unwrap();
    let e = SqlStore::open_url(&url, MergeRules::default(), OpenMode::Migrate)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("newer folkhub"), "{e}");
}

/// Leases, the work queue and fenced batches: a batch commits only
/// while its host holds it, a feed page only from its cursor.
async fn leases_and_fences_let_one_host_commit_a_piece_of_work(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(b, &dir.path().join("f.db")).await;
    let soon = Utc::now() + chrono::Duration::seconds(30);
    let past = Utc::now() - chrono::Duration::seconds(1);
    // A lease: its holder renews it, nobody else takes it until it expires.
    assert!(store.acquire_lease("job:n", "a", past).await.unwrap());
    assert!(store.lease("job:n").await.unwrap().is_none(), "expired");
    assert!(
        store.acquire_lease("job:n", "b", soon).await.unwrap(),
        "taken over"
    );
    assert!(!store.acquire_lease("job:n", "a", soon).await.unwrap());
    assert!(
        store.acquire_lease("job:n", "b", soon).await.unwrap(),
        "renewed"
    );
    store.release_lease("job:n", "a").await.unwrap();
    assert_eq!(store.lease("job:n").await.unwrap().unwrap().0, "b");
    store.release_lease("job:n", "b").await.unwrap();
    assert!(store.lease("job:n").await.unwrap().is_none());

    // The work queue: a batch is claimed once; an expired claim passes on.
    let run = store
        .start_run("nightly", Some("folkeregister"), Some("1.0.0"))
        .await
        .unwrap();
    assert!(store.last_started("nightly").await.unwrap().is_some());
    assert!(store.last_started("weekly").await.unwrap().is_none());
    let open = store.open_runs("nightly").await.unwrap();
    assert_eq!(open.iter().map(|r| r.id).collect::<Vec<_>>(), vec![run]);
    store
        .queue_work(
            run,
            "folkeregister",
            &[vec!["03851598730".into()], vec!["x".into()]],
        )
        .await
        .unwrap();
    let conn = vec!["folkeregister".to_string()];
    let brief = Utc::now() + chrono::Duration::milliseconds(300);
    let first = store.claim_work("a", brief, &conn).await.unwrap().unwrap();
    let second = store.claim_work("b", soon, &conn).await.unwrap().unwrap();
    assert_ne!(first.id, second.id);
    assert!(
        store.claim_work("c", soon, &conn).await.unwrap().is_none(),
        "both held"
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(
        store
            .claim_work("c", soon, &["krr".to_string()])
            .await
            .unwrap()
            .is_none()
    );
    // `a`'s claim expired: `c` takes it; `a` can no longer commit it.
    let again = store.claim_work("c", soon, &conn).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (first.id, 2));
    let work = |host: &str, item: i64| {
        let mut batch = batch(
            vec![person(
                &[("03851598730", true)],
                &[("name.family", json!("Hansen"))],
            )],
            None,
        );
        batch.fence = Fence::Work {
            item,
            host: host.into(),
            counts: RunCounts {
                fetched: 1,
                ..RunCounts::default()
            },
        };
        batch
    };
    let e = store.apply(work("a", first.id)).await.unwrap_err();
    assert!(matches!(e, StoreError::Fenced(_)), "{e}");
    assert!(
        store.person("03851598730").await.unwrap().is_none(),
        "nothing written"
    );
    store.apply(work("c", first.id)).await.unwrap();
    let e = store.apply(work("c", first.id)).await.unwrap_err();
    assert!(matches!(e, StoreError::Fenced(_)), "done once: {e}");
    let state = store.work_state(run).await.unwrap();
    assert_eq!((state.pending, state.leased, state.done), (0, 1, 1));
    assert_eq!((state.counts.fetched, state.counts.created), (1, 1));

    // Feed pages: applied only from the cursor they were read at.
    let page = |from: Option<&str>, to: &str, host: &str| {
        let mut batch = batch(
            vec![person(
                &[("03851598730", true)],
                &[("name.family", json!(to))],
            )],
            Some(to),
        );
        batch.fence = Fence::Feed {
            from: from.map(String::from),
            host: host.into(),
            run,
        };
        batch
    };
    store.apply(page(None, "1", "a")).await.unwrap();
    let e = store.apply(page(None, "1", "b")).await.unwrap_err();
    assert!(
        e.to_string().contains("another host applied that page"),
        "{e}"
    );
    store.apply(page(Some("1"), "2", "b")).await.unwrap();
    let pages = store.feed_pages("folkeregister").await.unwrap();
    let seen: Vec<(&str, &str, &str)> = pages
        .iter()
        .map(|p| (p.from.as_str(), p.to.as_str(), p.host.as_str()))
        .collect();
    assert_eq!(seen, vec![("", "1", "a"), ("1", "2", "b")]);
    assert_eq!(
        store.cursor("folkeregister").await.unwrap().as_deref(),
        Some("2")
    );
}

/// SQLite keeps whatever a column is given: a value of the wrong type
/// (written by hand, or by another program) is an error naming the
/// column, not a panic of the reader.
#[tokio::test]
async fn a_value_the_store_cannot_read_is_an_error_naming_its_column() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(Backend::Sqlite, &dir.path().join("corrupt.db")).await;
    let run = store
        .start_run("nightly", Some("folkeregister"), Some("1.0.0"))
        .await
        .unwrap();
    assert_eq!(store.runs(10).await.unwrap().len(), 1);
    for (column, value) in [("started_at", "42"), ("job", "x'00ff'")] {
        sqlx::query(&format!(
            "UPDATE job_runs SET {column} = {value} WHERE id = $1"
        ))
        .bind(run)
        .execute(&store.pool)
        .await
        .unwrap();
        let error = store.runs(10).await.expect_err("a corrupt row");
        match column {
            // Read as text, it is not a time.
            "started_at" => assert!(
                matches!(&error, StoreError::Corrupt { what, .. } if what.contains("timestamp")),
                "{error:?}"
            ),
            // Not text at all.
            _ => {
                assert!(
                    matches!(&error, StoreError::CorruptRow { column: c, .. } if c == column),
                    "{column}: {error:?}"
                );
                assert!(
                    error.to_string().contains(&format!("column {column}")),
                    "{error}"
                );
            }
        }
        sqlx::query(&format!("UPDATE job_runs SET {column} = $1 WHERE id = $2"))
            .bind(if column == "job" {
                "nightly".to_string()
            } else {
                ts(now())
            })
            .bind(run)
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(store.runs(10).await.unwrap().len(), 1, "repaired");
    }
}

/// The behaviour suite: every test runs on both backends.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Backend::Postgres).await
            })*
        }
    };
}
on_both_backends!(
    an_older_schema_is_refused_until_migrated_and_keeps_its_data,
    leases_and_fences_let_one_host_commit_a_piece_of_work,
    the_merged_record_does_not_depend_on_the_order_statements_arrive_in,
    conflicts_are_listed_and_overrides_win_until_they_expire,
    a_register_links_two_persons_and_an_undone_link_restores_both,
    a_person_without_an_id_is_matched_only_when_exactly_one_fits,
    rebuild_reports_and_repairs_a_record_that_drifted_from_the_log,
    apply_merge_retract_history_and_id_change,
    a_narrower_answer_removes_only_what_it_covers,
    installations_are_audited_and_survive_reopen,
    the_access_log_is_append_only_and_clients_keep_their_names,
    follow_sets_decide_who_stays_and_deletions_are_audited,
    the_outbox_is_filled_once_and_a_message_is_claimed_by_one_host
);

fn person(ids: &[(&str, bool)], fields: &[(&str, Value)]) -> FoundPerson {
    FoundPerson {
        ids: ids
            .iter()
            .map(|(v, a)| SourceId {
                scheme: "no-fnr".into(),
                value: v.to_string(),
                active: *a,
            })
            .collect(),
        fields: fields
            .iter()
            .map(|(p, v)| Observation {
                path: p.to_string(),
                value: v.clone(),
                labels: vec![],
                effective: None,
            })
            .collect(),
        upstream_version: "v1".into(),
        covers: None,
    }
}

fn batch(persons: Vec<FoundPerson>, cursor: Option<&str>) -> Batch {
    Batch {
        source: "folkeregister".into(),
        release: "1.0.0".into(),
        retrieved: Utc::now(),
        persons,
        cursor: cursor.map(String::from),
        reason: "test".into(),
        fence: Default::default(),
    }
}

/// One register's statement about one person at one time.
fn statement(rng: &mut impl rand::Rng, source: &str, at: DateTime<Utc>) -> Batch {
    let pool: &[(&str, &[Value])] = &[
        (
            "name.given",
            &[json!("KARI"), json!("KARIN"), json!("KAJA")],
        ),
        ("name.family", &[json!("NORDMANN"), json!("HANSEN")]),
        (
            "contact.email",
            &[json!("a@example.invalid"), json!("b@example.invalid")],
        ),
        ("address.municipality", &[json!("0301"), json!("4601")]),
        ("protection.level", &[json!("FORTROLIG"), json!("UGRADERT")]),
        ("citizenship", &[json!(["NOR"]), json!(["NOR", "SWE"])]),
    ];
    let mut fields = Vec::new();
    for (path, values) in pool {
        if rng.gen_bool(0.6) {
            fields.push(Observation {
                path: path.to_string(),
                value: values[rng.gen_range(0..values.len())].clone(),
                labels: if rng.gen_bool(0.2) {
                    vec!["FORTROLIG".into()]
                } else {
                    vec![]
                },
                effective: if rng.gen_bool(0.5) {
                    Some(
                        format!("2026-0{}-01T00:00:00Z", rng.gen_range(1..10))
                            .parse()
                            .unwrap(),
                    )
                } else {
                    None
                },
            });
        }
    }
    Batch {
        source: source.into(),
        release: "1.0.0".into(),
        retrieved: at,
        persons: vec![FoundPerson {
            ids: vec![SourceId {
                scheme: "no-fnr".into(),
                value: "03851598730".into(),
                active: true,
            }],
            fields,
            upstream_version: "v1".into(),
            covers: None,
        }],
        cursor: None,
        reason: format!("{source} at {at}"),
        fence: Default::default(),
    }
}

async fn the_merged_record_does_not_depend_on_the_order_statements_arrive_in(b: Backend) {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    // Equal ranks on purpose: `x` and `y` are not in the rules, so they
    // tie and their disagreements become conflicts.
    let sources = ["folkeregister", "spar", "krr", "x", "y"];
    for case in 0..40u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(case);
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let statements: Vec<Batch> = (0..8)
            .map(|i| {
                let source = sources[rng.gen_range(0..sources.len())];
                statement(&mut rng, source, start + chrono::Duration::minutes(i))
            })
            .collect();
        let mut expected: Option<MergedRecord> = None;
        for order in 0..4 {
            let mut shuffled = statements.clone();
            if order > 0 {
                shuffled.shuffle(&mut rng);
            }
            let store = open(b, &dir.path().join(format!("c{case}-{order}.db"))).await;
            for s in shuffled {
                store.apply(s).await.unwrap();
            }
            let record = store
                .person("03851598730")
                .await
                .unwrap()
                .map(|p| p.record)
                .unwrap_or_default();
            // The index points at the log rows it copies.
            let wrong: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM current_observations co JOIN observations o ON o.id = co.observation_id
                 WHERE o.path <> co.path OR o.value <> co.value OR o.source <> co.source OR o.person_id <> co.person_id",
            )
            .fetch_one(&store.pool)
            .await
            .unwrap();
            assert_eq!(wrong, 0, "case {case}");
            // Rebuilding from the log gives what was applied incrementally.
            let rebuilt = store.rebuild(false).await.unwrap();
            assert!(rebuilt.differing.is_empty(), "case {case}: {rebuilt:?}");
            match &expected {
                None => expected = Some(record),
                Some(e) => assert_eq!(&record, e, "case {case}, order {order}"),
            }
        }
    }
}

async fn conflicts_are_listed_and_overrides_win_until_they_expire(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(b, &dir.path().join("o.db")).await;
    // Two sources the rules do not rank disagree: an open conflict.
    for (source, email) in [("x", "a@example.invalid"), ("y", "b@example.invalid")] {
        let mut b = batch(
            vec![person(
                &[("03851598730", true)],
                &[("contact.email", json!(email))],
            )],
            None,
        );
        b.source = source.into();
        store.apply(b).await.unwrap();
    }
    let conflicts = store.conflicts().await.unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].path, "contact.email");
    assert_eq!(conflicts[0].candidates.as_array().unwrap().len(), 2);

    // An override decides it, with a reason and an expiry.
    let expires: DateTime<Utc> = "2027-01-01T00:00:00Z".parse().unwrap();
    let o = store
        .add_override(NewOverride {
            person_id: "03851598730".into(),
            path: "contact.email".into(),
            value: json!("c@example.invalid"),
            reason: "the person called the school office".into(),
            actor: "admin".into(),
            expires: Some(expires),
        })
        .await
        .unwrap();
    let p = store.person("03851598730").await.unwrap().unwrap();
    let f = &p.record.fields["contact.email"];
    assert_eq!(f.value, json!("c@example.invalid"));
    assert_eq!(f.provenance.source, "override");
    assert!(f.provenance.rule.contains(&format!("#{}", o.id)));
    assert!(!f.conflict);
    assert!(store.conflicts().await.unwrap().is_empty());
    // A source changing its value does not beat the override.
    let mut b = batch(
        vec![person(
            &[("03851598730", true)],
            &[("contact.email", json!("d@example.invalid"))],
        )],
        None,
    );
    b.source = "x".into();
    store.apply(b).await.unwrap();
    let p = store.person("03851598730").await.unwrap().unwrap();
    assert_eq!(
        p.record.fields["contact.email"].value,
        json!("c@example.invalid")
    );

    // Not yet expired the day before; expired on the day.
    assert!(
        store
            .expire_overrides("2026-12-31T23:59:59Z".parse().unwrap())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.expire_overrides(expires).await.unwrap(), vec![o.id]);
    let p = store.person("03851598730").await.unwrap().unwrap();
    assert_ne!(
        p.record.fields["contact.email"].provenance.source,
        "override"
    );
    assert!(
        p.record.fields["contact.email"].conflict,
        "the disagreement is back"
    );
    assert_eq!(store.conflicts().await.unwrap().len(), 1);
    let all = store.overrides(false).await.unwrap();
    assert_eq!(all[0].ended_by.as_deref(), Some("folkhub (expiry)"));
    assert!(store.overrides(true).await.unwrap().is_empty());
    let reasons: Vec<String> = store
        .history(p.key)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.reason)
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with(&format!("override #{} by admin", o.id)))
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with(&format!("override #{} expired", o.id)))
    );
    // Removing an override that already ended says so.
    assert!(!store.end_override(o.id, "admin", "again").await.unwrap());
    assert!(store.rebuild(false).await.unwrap().differing.is_empty());
    // An override for an unknown person is refused.
    let e = store
        .add_override(NewOverride {
            person_id: "01010112345".into(),
            path: "contact.email".into(),
            value: json!("x"),
            reason: "r".into(),
            actor: "a".into(),
            expires: None,
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no person"), "{e}");
}

async fn a_register_links_two_persons_and_an_undone_link_restores_both(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(b, &dir.path().join("i.db")).await;
    let (dnr, fnr) = ("43851500119", "03851598730");
    let id = |value: &str, scheme: &str, active: bool| SourceId {
        scheme: scheme.into(),
        value: value.into(),
        active,
    };
    let statement = |source: &str, ids: Vec<SourceId>, fields: &[(&str, Value)]| {
        let mut b = batch(vec![person(&[], fields)], None);
        b.source = source.into();
        b.persons[0].ids = ids;
        b
    };
    // Folkeregisteret knows the person by a D-number; KRR already
    // reports them under the new fødselsnummer: two persons for now.
    store
        .apply(statement(
            "folkeregister",
            vec![id(dnr, "no-dnr", true)],
            &[("name.given", json!("KARI"))],
        ))
        .await
        .unwrap();
    store
        .apply(statement(
            "krr",
            vec![id(fnr, "no-fnr", true)],
            &[("contact.email", json!("k@example.invalid"))],
        ))
        .await
        .unwrap();
    let a = store.person(dnr).await.unwrap().unwrap().key;
    let b = store.person(fnr).await.unwrap().unwrap().key;
    assert_ne!(a, b);
    // Another source naming both IDs links nothing: a conflict for review.
    let r = store
        .apply(statement(
            "krr",
            vec![id(dnr, "no-dnr", false), id(fnr, "no-fnr", true)],
            &[("contact.email", json!("k@example.invalid"))],
        ))
        .await
        .unwrap();
    assert_eq!(r.identity_conflicts.len(), 1);
    assert!(store.identity_links().await.unwrap().is_empty());
    // Folkeregisteret announces the change: one person, both IDs resolve.
    let r = store
        .apply(statement(
            "folkeregister",
            vec![id(dnr, "no-dnr", false), id(fnr, "no-fnr", true)],
            &[("name.given", json!("KARI"))],
        ))
        .await
        .unwrap();
    assert!(r.identity_conflicts.is_empty(), "{r:?}");
    let one = store.person(fnr).await.unwrap().unwrap();
    assert_eq!(one.key, a, "merged into the older person");
    assert_eq!(store.person(dnr).await.unwrap().unwrap().key, a);
    assert_eq!(
        one.record.fields["contact.email"].value,
        json!("k@example.invalid")
    );
    assert_eq!(one.record.fields["name.given"].value, json!("KARI"));
    assert_eq!(
        store.person_by_key(b).await.unwrap().unwrap().key,
        a,
        "the old key redirects"
    );
    assert_eq!(store.count_persons().await.unwrap(), 1);
    let active: Vec<bool> = one.ids.iter().map(|i| i.active).collect();
    assert_eq!(active, vec![true, false], "{:?}", one.ids);
    let links = store.identity_links().await.unwrap();
    assert_eq!((links.len(), links[0].survivor, links[0].merged), (1, a, b));
    assert!(store.rebuild(false).await.unwrap().differing.is_empty());

    // The admin undoes the link: both persons are back as they were.
    assert!(
        store
            .undo_link(links[0].id, "admin", "two different persons")
            .await
            .unwrap()
    );
    let pa = store.person(dnr).await.unwrap().unwrap();
    let pb = store.person(fnr).await.unwrap().unwrap();
    assert_eq!((pa.key, pb.key), (a, b));
    assert!(pa.record.fields.contains_key("name.given"));
    assert!(!pa.record.fields.contains_key("contact.email"));
    assert_eq!(
        pb.record.fields["contact.email"].value,
        json!("k@example.invalid")
    );
    assert_eq!(store.count_persons().await.unwrap(), 2);
    assert!(
        !store
            .undo_link(links[0].id, "admin", "again")
            .await
            .unwrap()
    );
    // The register says it again: not merged again on its own.
    let r = store
        .apply(statement(
            "folkeregister",
            vec![id(dnr, "no-dnr", false), id(fnr, "no-fnr", true)],
            &[("name.given", json!("KARI"))],
        ))
        .await
        .unwrap();
    assert_eq!(r.identity_conflicts.len(), 1);
    assert_eq!(store.count_persons().await.unwrap(), 2);
    assert!(store.rebuild(false).await.unwrap().differing.is_empty());
}

async fn a_person_without_an_id_is_matched_only_when_exactly_one_fits(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(b, &dir.path().join("n.db")).await;
    let named = |ids: &[(&str, bool)], given: &str, born: &str| {
        person(
            ids,
            &[
                ("name.given", json!(given)),
                ("name.family", json!("NORDMANN")),
                ("birth.date", json!(born)),
            ],
        )
    };
    store
        .apply(batch(
            vec![named(&[("03851598730", true)], "KARI", "1985-03-03")],
            None,
        ))
        .await
        .unwrap();
    // Known by name only: exactly one fits, so it is that person
    // (names compared without regard to case).
    let mut b = batch(vec![named(&[], "Kari", "1985-03-03")], None);
    b.source = "x".into();
    let r = store.apply(b).await.unwrap();
    assert_eq!(r.persons_created, 0);
    assert_eq!(store.count_persons().await.unwrap(), 1);
    // A different birth date fits nobody: a new person, nothing to review.
    let mut b = batch(vec![named(&[], "KARI", "1990-01-01")], None);
    b.source = "x".into();
    assert_eq!(store.apply(b).await.unwrap().persons_created, 1);
    assert!(store.identity_reviews().await.unwrap().is_empty());
    // Two fit: never a guess — a new person, listed for review.
    store
        .apply(batch(
            vec![named(&[("01010112345", true)], "KARI", "1985-03-03")],
            None,
        ))
        .await
        .unwrap();
    let mut b = batch(vec![named(&[], "KARI", "1985-03-03")], None);
    b.source = "x".into();
    assert_eq!(store.apply(b).await.unwrap().persons_created, 1);
    let reviews = store.identity_reviews().await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].candidates.len(), 2);
    assert_eq!(store.count_persons().await.unwrap(), 4);
}

async fn rebuild_reports_and_repairs_a_record_that_drifted_from_the_log(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(b, &dir.path().join("r.db")).await;
    store
        .apply(batch(
            vec![person(
                &[("03851598730", true)],
                &[
                    ("name.given", json!("KARI")),
                    ("name.family", json!("NORDMANN")),
                ],
            )],
            None,
        ))
        .await
        .unwrap();
    let clean = store.rebuild(false).await.unwrap();
    assert_eq!((clean.persons, clean.differing.len()), (1, 0));
    // Someone edits the derived table by hand.
    let mut tampered = store.person("03851598730").await.unwrap().unwrap().record;
    tampered.fields.get_mut("name.given").unwrap().value = json!("OLA");
    sqlx::query("UPDATE merged SET record = $1")
        .bind(serde_json::to_string(&tampered).unwrap())
        .execute(&store.pool)
        .await
        .unwrap();
    let found = store.rebuild(false).await.unwrap();
    assert_eq!(found.differing, vec![(1, vec!["name.given".to_string()])]);
    assert_eq!(
        store
            .person("03851598730")
            .await
            .unwrap()
            .unwrap()
            .record
            .fields["name.given"]
            .value,
        json!("OLA"),
        "a check changes nothing"
    );
    let fixed = store.rebuild(true).await.unwrap();
    assert_eq!(fixed.differing.len(), 1);
    let person = store.person("03851598730").await.unwrap().unwrap();
    assert_eq!(person.record.fields["name.given"].value, json!("KARI"));
    let history = store.history(person.key).await.unwrap();
    assert_eq!(
        history.last().unwrap().reason,
        "rebuild from the observation log"
    );
    assert!(store.rebuild(false).await.unwrap().differing.is_empty());
}

/// Contract 2.1: a field the answer does not cover keeps its stored
/// value (a narrower scope, a withheld address); one it covers and
/// lacks is removed. A register that starts protecting a person and
/// stops sending the address has not moved them: the stored address
/// stays and carries the protection at once.
async fn a_narrower_answer_removes_only_what_it_covers(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(b, &dir.path().join("s.db")).await;
    let id = "03851598730";
    let everything = person(
        &[(id, true)],
        &[
            ("name.given", json!("KARI")),
            ("contact.email", json!("kari@example.invalid")),
            ("contact.mobile", json!("+4799999999")),
            (
                "address.residential",
                json!({"kind": "street", "street": "Testveien", "country": "NOR"}),
            ),
            ("address.municipality", json!("0301")),
        ],
    );
    store.apply(batch(vec![everything], None)).await.unwrap();
    // A narrower answer: no contact details, and it does not cover them.
    let mut narrower = person(&[(id, true)], &[("name.given", json!("KARI"))]);
    narrower.covers = Some(vec![
        "name.given".into(),
        "address.residential".into(),
        "address.municipality".into(),
    ]);
    let mut b2 = batch(vec![narrower], None);
    b2.retrieved = Utc::now() + chrono::Duration::seconds(1);
    store.apply(b2).await.unwrap();
    let p = store.person(id).await.unwrap().unwrap();
    assert_eq!(
        p.record.fields["contact.email"].value,
        json!("kari@example.invalid")
    );
    assert_eq!(
        p.record.fields["contact.mobile"].value,
        json!("+4799999999")
    );
    // The answer covered the address and lacked it: removed.
    assert!(
        !p.record.fields.contains_key("address.residential"),
        "{:?}",
        p.record.fields.keys()
    );
    assert!(!p.record.fields.contains_key("address.municipality"));
    // Now the register covers the e-mail and has none: removed; the
    // mobile, not covered, stays.
    let mut covering = person(&[(id, true)], &[("name.given", json!("KARI"))]);
    covering.covers = Some(vec!["name.given".into(), "contact.email".into()]);
    let mut b3 = batch(vec![covering], None);
    b3.retrieved = Utc::now() + chrono::Duration::seconds(2);
    store.apply(b3).await.unwrap();
    let p = store.person(id).await.unwrap().unwrap();
    assert!(!p.record.fields.contains_key("contact.email"));
    assert_eq!(
        p.record.fields["contact.mobile"].value,
        json!("+4799999999")
    );

    // Protection arrives without the address: no move, and the stored
    // address is protected at once.
    let other = "20036914700";
    let home = json!({"kind": "street", "street": "Gata", "country": "NOR"});
    store
        .apply(batch(
            vec![person(
                &[(other, true)],
                &[
                    ("address.residential", home.clone()),
                    ("address.municipality", json!("0301")),
                ],
            )],
            None,
        ))
        .await
        .unwrap();
    let mut graded = person(
        &[(other, true)],
        &[("protection.level", json!("STRENGT_FORTROLIG"))],
    );
    graded.covers = Some(vec!["protection.level".into(), "name.given".into()]);
    let mut b4 = batch(vec![graded], None);
    b4.retrieved = Utc::now() + chrono::Duration::seconds(3);
    store.apply(b4).await.unwrap();
    let p = store.person(other).await.unwrap().unwrap();
    let address = &p.record.fields["address.residential"];
    assert_eq!(address.value, home);
    assert!(
        address.labels.iter().any(|l| l == "STRENGT_FORTROLIG"),
        "{:?}",
        address.labels
    );
    assert!(
        p.record.fields["address.municipality"]
            .labels
            .iter()
            .any(|l| l == "STRENGT_FORTROLIG")
    );
}

async fn apply_merge_retract_history_and_id_change(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(b, &dir.path().join("s.db")).await;
    let r = store
        .apply(batch(
            vec![person(
                &[("43851500119", true)],
                &[
                    ("name.given", json!("KARI")),
                    ("death.date", json!("2020-01-01")),
                ],
            )],
            Some("5"),
        ))
        .await
        .unwrap();
    assert_eq!(r.persons_created, 1);
    assert_eq!(
        store.cursor("folkeregister").await.unwrap().as_deref(),
        Some("5")
    );
    // Same data again: unchanged, no new observations.
    let r = store
        .apply(batch(
            vec![person(
                &[("43851500119", true)],
                &[
                    ("name.given", json!("KARI")),
                    ("death.date", json!("2020-01-01")),
                ],
            )],
            None,
        ))
        .await
        .unwrap();
    assert_eq!((r.persons_unchanged, r.observations_added), (1, 0));
    // The D-number gets a fødselsnummer; death retracted; name changed.
    let r = store
        .apply(batch(
            vec![person(
                &[("43851500119", false), ("03851598730", true)],
                &[("name.given", json!("KARIANNE"))],
            )],
            Some("9"),
        ))
        .await
        .unwrap();
    assert_eq!(r.persons_changed, 1);
    let by_old = store.person("43851500119").await.unwrap().unwrap();
    let by_new = store.person("03851598730").await.unwrap().unwrap();
    assert_eq!(by_old.key, by_new.key);
    assert_eq!(by_new.record.fields["name.given"].value, json!("KARIANNE"));
    assert!(!by_new.record.fields.contains_key("death.date"));
    assert_eq!(by_new.ids[0].value, "03851598730");
    let history = store.history(by_new.key).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].diff["name.given"]["from"], json!("KARI"));
    assert!(
        history[1].reason.starts_with(crate::IDS_CHANGED),
        "{history:?}"
    );
    assert_eq!(
        store.active_ids(&["no-fnr"]).await.unwrap(),
        vec!["03851598730".to_string()]
    );
    // An ID change with no value change is a version of its own, so that
    // readers and webhooks hear of it; the same IDs again are not.
    let version = by_new.version;
    let ids = [
        ("43851500119", false),
        ("03851598730", true),
        ("03851599893", false),
    ];
    for round in 0..2 {
        let r = store
            .apply(batch(
                vec![person(&ids, &[("name.given", json!("KARIANNE"))])],
                None,
            ))
            .await
            .unwrap();
        assert_eq!(
            (r.persons_changed, r.persons_unchanged),
            if round == 0 { (1, 0) } else { (0, 1) }
        );
    }
    let after = store.person("03851599893").await.unwrap().unwrap();
    assert_eq!((after.key, after.version), (by_new.key, version + 1));
    let history = store.history(by_new.key).await.unwrap();
    assert_eq!(history.len(), 3);
    assert!(history[2].reason.starts_with(crate::IDS_CHANGED));
    assert_eq!(history[2].diff, json!({}));
    // A register that does not issue the ID moving it is not its word.
    let mut krr = batch(vec![person(&[("03851598730", false)], &[])], None);
    krr.source = "krr".into();
    store.apply(krr).await.unwrap();
    assert_eq!(store.history(by_new.key).await.unwrap().len(), 3);
}

async fn installations_are_audited_and_survive_reopen(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let url = test_url(b, &dir.path().join("s.db"));
    {
        let store = SqlStore::open_url(&url, MergeRules::default(), OpenMode::Migrate)
            .await
            .unwrap();
        let inst = Installation {
            connector: "folkeregister".into(),
            version: "1.0.0".into(),
            digest: "ab".into(),
            contract: "1.0.0".into(),
            pinned: true,
            installed_at: Utc::now(),
            installed_by: "admin".into(),
        };
        store.install(inst, "first install").await.unwrap();
        let run = store
            .start_run("sync", Some("folkeregister"), Some("1.0.0"))
            .await
            .unwrap();
        store
            .finish_run(
                run,
                RunStatus::Succeeded,
                &RunCounts {
                    fetched: 3,
                    ..Default::default()
                },
                &[],
            )
            .await
            .unwrap();
    }
    let store = SqlStore::open_url(&url, MergeRules::default(), OpenMode::Migrate)
        .await
        .unwrap();
    let inst = store.installation("folkeregister").await.unwrap().unwrap();
    assert!(inst.pinned);
    assert_eq!(
        store.audit("folkeregister").await.unwrap()[0].action,
        "install"
    );
    assert_eq!(store.runs(10).await.unwrap()[0].counts.fetched, 3);
}
