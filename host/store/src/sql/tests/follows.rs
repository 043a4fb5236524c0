//! Follow sets and the retention of persons nobody follows.

use super::*;

fn fnr(value: &str) -> FollowId {
    FollowId {
        scheme: "no-fnr".into(),
        value: value.into(),
    }
}

/// Rows of `table` that still name person `key`.
async fn rows_of(store: &SqlStore, table: &str, key: i64) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM {table} WHERE person_id = $1"
    ))
    .bind(key)
    .fetch_one(&store.pool)
    .await
    .unwrap()
}

pub(super) async fn follow_sets_decide_who_stays_and_deletions_are_audited(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(b, &dir.path().join("f.db")).await;
    let (a, bee, c, c_dnr) = ("01010112345", "02020212345", "03851598730", "43851500119");
    let not_stored = "04040412345";
    for (ids, name) in [
        (vec![(a, true)], "ANNE"),
        (vec![(bee, true)], "BJØRN"),
        (vec![(c_dnr, true)], "CARL"),
    ] {
        store
            .apply(batch(
                vec![person(&ids, &[("name.given", json!(name))])],
                None,
            ))
            .await
            .unwrap();
    }
    // C's D-number becomes a fødselsnummer: two persons become one.
    let mut linked = person(
        &[(c_dnr, false), (c, true)],
        &[("name.given", json!("CARL"))],
    );
    linked.ids[0].scheme = "no-dnr".into();
    store.apply(batch(vec![linked], None)).await.unwrap();
    let c_key = store.person(c).await.unwrap().unwrap().key;
    store
        .apply(batch(
            vec![person(&[(c, true)], &[("name.family", json!("CALLESEN"))])],
            None,
        ))
        .await
        .unwrap();

    let school = FollowSet::Client("school".into());
    let shared = FollowSet::Population("pupils".into());
    store
        .add_population(
            "pupils",
            "pupils of the municipality",
            &["school".into()],
            "admin",
        )
        .await
        .unwrap();
    let r = store
        .follow(&school, &[fnr(a), fnr(not_stored), fnr(a)], "school")
        .await
        .unwrap();
    assert_eq!((r.added, r.already), (2, 1), "{r:?}");
    store.follow(&shared, &[fnr(bee)], "school").await.unwrap();
    assert_eq!(store.follow_count(&school).await.unwrap(), 2);
    let members = store.follow_members(&school, None, 1).await.unwrap();
    assert_eq!(members[0].id, a);
    let rest = store
        .follow_members(&school, Some(&members[0].id), 10)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [not_stored]
    );
    let pops = store.populations().await.unwrap();
    assert_eq!(
        (pops[0].members, pops[0].clients.clone()),
        (1, vec!["school".to_string()])
    );

    // Followed: members, and every ID of a stored member.
    let among = store
        .followed_among(&[
            a.into(),
            bee.into(),
            c.into(),
            c_dnr.into(),
            not_stored.into(),
        ])
        .await
        .unwrap();
    assert_eq!(
        among,
        BTreeSet::from([a.to_string(), bee.to_string(), not_stored.to_string()])
    );
    assert_eq!(
        store.followed_ids(&["no-fnr"]).await.unwrap(),
        vec![a.to_string(), bee.to_string(), not_stored.to_string()]
    );
    // Guardians do not make more guardians.
    store
        .replace_follows(&FollowSet::Guardians, &[fnr(c)], "sync")
        .await
        .unwrap();
    let followed: Vec<String> = store
        .followed_persons_after(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.ids[0].value.clone())
        .collect();
    assert_eq!(followed, vec![a.to_string(), bee.to_string()]);
    let r = store
        .replace_follows(&FollowSet::Guardians, &[], "sync")
        .await
        .unwrap();
    assert_eq!(r.removed, 1);

    // C is followed by nobody: noted, and deleted only after the period.
    let t0 = Utc::now();
    let month = chrono::Duration::days(30);
    let r = store
        .sweep_unfollowed(t0, month, "retention")
        .await
        .unwrap();
    assert_eq!((r.noted, r.waiting, r.deleted.len()), (1, 1, 0), "{r:?}");
    let r = store
        .unfollow(&shared, &[bee.into(), "09090912345".into()])
        .await
        .unwrap();
    assert_eq!((r.removed, r.not_followed), (1, 1));
    let day = chrono::Duration::days(1);
    let r = store
        .sweep_unfollowed(t0 + day, month, "retention")
        .await
        .unwrap();
    assert_eq!((r.noted, r.waiting), (1, 2), "{r:?}");
    // Followed again before the period ends: kept.
    store.follow(&shared, &[fnr(bee)], "school").await.unwrap();
    let r = store
        .sweep_unfollowed(t0 + day * 2, month, "retention")
        .await
        .unwrap();
    assert_eq!((r.followed_again, r.waiting), (1, 1), "{r:?}");

    let r = store
        .sweep_unfollowed(t0 + month + day, month, "retention")
        .await
        .unwrap();
    assert_eq!(r.deleted.len(), 1, "{r:?}");
    let gone = &r.deleted[0];
    assert_eq!(gone.person_key, c_key);
    assert!(gone.observations >= 2 && gone.changes >= 1, "{gone:?}");
    let mut digests = vec![
        store.deletion_digest(c).await.unwrap(),
        store.deletion_digest(c_dnr).await.unwrap(),
    ];
    digests.sort();
    let mut kept = gone.id_digests.clone();
    kept.sort();
    assert_eq!(kept, digests, "both IDs, as digests only");
    assert!(!gone.id_digests.iter().any(|d| d.contains(c)));
    assert!(store.person(c).await.unwrap().is_none());
    assert!(store.person(c_dnr).await.unwrap().is_none());
    for table in [
        "observations",
        "current_observations",
        "person_changes",
        "merged",
        "identifiers",
    ] {
        assert_eq!(rows_of(&store, table, c_key).await, 0, "{table}");
    }
    let persons: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM persons")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(persons, 2, "the merged-away person went with the survivor");
    assert_eq!(store.count_persons().await.unwrap(), 2);
    assert!(store.rebuild(false).await.unwrap().differing.is_empty());
    assert_eq!(store.deletions(10).await.unwrap(), r.deleted);
    // "Was this person deleted?" by either of their IDs, and not by another.
    for id in [c, c_dnr] {
        assert_eq!(
            store.deletion_of(id).await.unwrap().as_ref(),
            Some(gone),
            "{id}"
        );
    }
    assert!(store.deletion_of(a).await.unwrap().is_none());
    // The followed persons are untouched.
    assert!(store.person(a).await.unwrap().is_some());
    assert!(store.person(bee).await.unwrap().is_some());
    assert!(store.drop_population("pupils").await.unwrap());
    assert_eq!(store.follow_count(&shared).await.unwrap(), 0);
}
