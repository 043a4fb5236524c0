//! Applying a batch: resolving who a record is about, linking and merging
//! persons the register says are one, merging fields and storing records
//! with their history, under the fences of several hosts.

use super::*;

/// What [`resolve`] found: the person's key, whether it was created, IDs
/// the record names that another person holds (`(scheme, id, owner)`; the
/// caller decides whether the register may link them), and whether the
/// person's own IDs changed (an ID new to them, or one the issuing
/// register now says is in use or no longer in use).
pub(super) struct Resolved {
    pub key: i64,
    pub created: bool,
    pub conflicting: Vec<(String, String, i64)>,
    pub ids_changed: bool,
}

/// Finds (or creates) the person a record is about.
pub(super) async fn resolve(
    tx: &mut Transaction<'_, Any>,
    rules: &MergeRules,
    source: &str,
    person: &FoundPerson,
    at: &str,
) -> Result<Resolved, StoreError> {
    let mut owners: BTreeMap<String, i64> = BTreeMap::new();
    let mut active_now: BTreeMap<String, bool> = BTreeMap::new();
    for id in &person.ids {
        if let Some(row) =
            sqlx::query(
                "SELECT person_id, CASE WHEN active THEN 1 ELSE 0 END AS active FROM identifiers WHERE value = $1",
            )
                .bind(&id.value)
                .fetch_optional(&mut **tx)
                .await?
        {
            owners.insert(id.value.clone(), row.col("person_id")?);
            active_now.insert(id.value.clone(), row.col::<i64>("active")? == 1);
        }
    }
    // Prefer the person that holds the active ID; else any holder.
    let active = person.ids.iter().find(|i| i.active).or(person.ids.first());
    let mut chosen = active
        .and_then(|a| owners.get(&a.value).copied())
        .or_else(|| owners.values().next().copied());
    // No ID at all (a relative known by name): the one stored person with
    // the same given name, family name and birth date, if exactly one.
    let mut review = Vec::new();
    if person.ids.is_empty() {
        let text = |path: &str| {
            person
                .fields
                .iter()
                .find(|f| f.path == path)
                .and_then(|f| f.value.as_str())
                .map(str::to_uppercase)
        };
        if let (Some(given), Some(family), Some(born)) =
            (text("name.given"), text("name.family"), text("birth.date"))
        {
            let b = dialect(tx);
            let fits: Vec<i64> = sqlx::query_scalar(&format!(
                "SELECT person_id FROM merged
                 WHERE {} = $1 AND upper({}) = $2 AND upper({}) = $3
                 ORDER BY person_id",
                b.field("record", "birth.date"),
                b.field("record", "name.family"),
                b.field("record", "name.given"),
            ))
            .bind(&born)
            .bind(&family)
            .bind(&given)
            .fetch_all(&mut **tx)
            .await?;
            match fits.as_slice() {
                [one] => chosen = Some(*one),
                [] => {}
                many => review = many.to_vec(),
            }
        }
    }
    let (key, created) = match chosen {
        Some(key) => (key, false),
        None => {
            let key: i64 =
                sqlx::query_scalar("INSERT INTO persons (created_at) VALUES ($1) RETURNING id")
                    .bind(at)
                    .fetch_one(&mut **tx)
                    .await?;
            (key, true)
        }
    };
    if !review.is_empty() {
        sqlx::query(
            "INSERT INTO identity_reviews (person_id, candidates, source, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(key)
        .bind(id_list(&review))
        .bind(source)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    let mut conflicting = Vec::new();
    let mut ids_changed = false;
    for id in &person.ids {
        match owners.get(&id.value) {
            Some(owner) if *owner != key => {
                conflicting.push((id.scheme.clone(), id.value.clone(), *owner));
            }
            Some(_) => {
                // Only the issuing register's word moves an ID in or out
                // of use as far as readers are told.
                ids_changed |= rules.issues(source, &id.scheme)
                    && active_now.get(&id.value) != Some(&id.active);
                set_active(tx, rules, source, id, at).await?
            }
            None => {
                ids_changed |= !created;
                sqlx::query("INSERT INTO identifiers (value, scheme, person_id, active, source, first_seen, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                    .bind(&id.value)
                    .bind(&id.scheme)
                    .bind(key)
                    .bind(id.active)
                    .bind(source)
                    .bind(at)
                    .bind(at)
                    .execute(&mut **tx)
                    .await?;
            }
        }
    }
    Ok(Resolved {
        key,
        created,
        conflicting,
        ids_changed,
    })
}

/// Only the register that issues an ID (or, for IDs no authority is known
/// for, the source that announced it) says whether it is still in use.
pub(super) async fn set_active(
    tx: &mut Transaction<'_, Any>,
    rules: &MergeRules,
    source: &str,
    id: &folkhub_core::observation::SourceId,
    at: &str,
) -> Result<(), StoreError> {
    if rules.issues(source, &id.scheme) {
        sqlx::query("UPDATE identifiers SET active = $1, source = $2, updated_at = $3 WHERE value = $4 AND (active <> $5 OR source <> $6)")
            .bind(id.active)
            .bind(source)
            .bind(at)
            .bind(&id.value)
            .bind(id.active)
            .bind(source)
            .execute(&mut **tx)
            .await?;
    } else {
        sqlx::query("UPDATE identifiers SET active = $1, updated_at = $2 WHERE value = $3 AND active <> $4 AND source = $5")
            .bind(id.active)
            .bind(at)
            .bind(&id.value)
            .bind(id.active)
            .bind(source)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Makes `current_observations` of a person agree with the log: each
/// source's latest statement per field (by retrieval time, then order).
pub(super) async fn rederive_current(
    tx: &mut Transaction<'_, Any>,
    key: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM current_observations WHERE person_id = $1")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO current_observations (person_id, source, path, observation_id, value, labels, release, upstream_version, effective_at, retrieved_at)
         SELECT person_id, source, path, id, value, labels, release, upstream_version, effective_at, retrieved_at FROM (
           SELECT o.*, ROW_NUMBER() OVER (PARTITION BY source, path ORDER BY retrieved_at DESC, id DESC) AS rn
           FROM observations o WHERE person_id = $1) AS latest
         WHERE rn = 1 AND value IS NOT NULL",
    )
    .bind(key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `source_refresh` of a person from the log (the latest statement time
/// per source), after observations moved between persons.
pub(super) async fn rederive_refresh(
    tx: &mut Transaction<'_, Any>,
    key: i64,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM source_refresh WHERE person_id = $1")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO source_refresh (person_id, source, retrieved_at)
         SELECT person_id, source, MAX(retrieved_at) FROM observations WHERE person_id = $1 GROUP BY person_id, source",
    )
    .bind(key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) fn id_list(values: &[i64]) -> String {
    json!(values).to_string()
}

pub(super) struct Current {
    value: String,
    labels: String,
    effective: Option<String>,
}

pub(super) async fn load_candidates(
    tx: &mut Transaction<'_, Any>,
    key: i64,
) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
    let rows = sqlx::query(
        "SELECT co.source, co.path, co.value, co.labels, co.release, co.upstream_version, co.effective_at,
                COALESCE(sr.retrieved_at, co.retrieved_at) AS retrieved_at
         FROM current_observations co
         LEFT JOIN source_refresh sr ON sr.person_id = co.person_id AND sr.source = co.source
         WHERE co.person_id = $1",
    )
    .bind(key)
    .fetch_all(&mut **tx)
    .await?;
    candidates_from_rows(rows)
}

/// Statements read from the log or its index, by path.
/// Checks a batch's fence inside its transaction (after the write lock, so
/// no other host commits in between): refused batches write nothing.
pub(super) async fn fence_check(
    tx: &mut Transaction<'_, Any>,
    batch: &Batch,
) -> Result<(), StoreError> {
    match &batch.fence {
        Fence::None => Ok(()),
        Fence::Feed { from, .. } => {
            let stored: Option<String> =
                sqlx::query_scalar("SELECT cursor FROM cursors WHERE connector = $1")
                    .bind(&batch.source)
                    .fetch_optional(&mut **tx)
                    .await?;
            if stored != *from {
                return Err(StoreError::Fenced(format!(
                    "the {} feed moved on from {} to {} (another host applied that page); this page is not applied again",
                    batch.source,
                    from.as_deref().unwrap_or("its start"),
                    stored.as_deref().unwrap_or("its start"),
                )));
            }
            Ok(())
        }
        Fence::Work { item, host, .. } => {
            let holder: Option<(String, Option<String>)> =
                sqlx::query("SELECT state, holder FROM work_items WHERE id = $1")
                    .bind(item)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| Ok::<_, StoreError>((r.col("state")?, r.col("holder")?)))
                    .transpose()?;
            match holder {
                Some((state, Some(h))) if state == "leased" && h == *host => Ok(()),
                Some((state, h)) => Err(StoreError::Fenced(format!(
                    "refresh batch #{item} is {state} by {} now (this host's lease passed); not applied again",
                    h.as_deref().unwrap_or("nobody")
                ))),
                None => Err(StoreError::NotFound(format!("no refresh batch #{item}"))),
            }
        }
    }
}

/// Writes what a fenced batch did, in its transaction: the feed page into
/// the log book, or the work item done with its counts.
pub(super) async fn fence_record(
    tx: &mut Transaction<'_, Any>,
    batch: &Batch,
    report: &ApplyReport,
) -> Result<(), StoreError> {
    match &batch.fence {
        Fence::None => {}
        // A look at a feed with nothing new is not a page.
        Fence::Feed { from, .. }
            if batch.persons.is_empty() && from.as_deref() == batch.cursor.as_deref() => {}
        Fence::Feed { from, host, run } => {
            sqlx::query("INSERT INTO feed_pages (connector, cursor_from, cursor_to, host, run_id, persons, at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(&batch.source)
                .bind(from.as_deref().unwrap_or(""))
                .bind(batch.cursor.as_deref().unwrap_or(""))
                .bind(host)
                .bind(run)
                .bind(batch.persons.len() as i64)
                .bind(ts(now()))
                .execute(&mut **tx)
                .await?;
        }
        Fence::Work { item, counts, .. } => {
            let mut counts = counts.clone();
            counts.changed += report.persons_changed;
            counts.created += report.persons_created;
            counts.unchanged += report.persons_unchanged;
            counts.conflicts_opened += report.conflicts_opened;
            sqlx::query(
                "UPDATE work_items SET state = 'done', done_at = $1, counts = $2 WHERE id = $3",
            )
            .bind(ts(now()))
            .bind(serde_json::to_string(&counts).map_err(|e| corrupt("counts", e))?)
            .bind(item)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// The backend a transaction runs on.
pub(super) fn dialect(conn: &sqlx::AnyConnection) -> Backend {
    if conn.backend_name() == "PostgreSQL" {
        Backend::Postgres
    } else {
        Backend::Sqlite
    }
}

/// Statements read from the log or its index, by path.
pub(super) fn candidates_from_rows(
    rows: Vec<AnyRow>,
) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
    let mut out: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for row in rows {
        let path: String = row.col("path")?;
        let value: String = row.col("value")?;
        let labels: String = row.col("labels")?;
        let effective: Option<String> = row.col("effective_at")?;
        out.entry(path).or_default().push(Candidate {
            source: row.col("source")?,
            release: row.col("release")?,
            upstream_version: row.col("upstream_version")?,
            value: serde_json::from_str(&value).map_err(|e| corrupt("observation value", e))?,
            labels: serde_json::from_str(&labels).map_err(|e| corrupt("observation labels", e))?,
            effective: effective.as_deref().map(parse_ts).transpose()?,
            retrieved: parse_ts(row.col::<&str>("retrieved_at")?)?,
        });
    }
    Ok(out)
}

/// A history row.
pub(super) fn change_from(r: &AnyRow) -> Result<PersonChange, StoreError> {
    Ok(PersonChange {
        seq: r.col("seq")?,
        person: r.col("person_id")?,
        changed_at: parse_ts(r.col::<&str>("changed_at")?)?,
        version: r.col("version")?,
        diff: serde_json::from_str(r.col::<&str>("diff")?)
            .map_err(|e| corrupt("history diff", e))?,
        reason: r.col("reason")?,
    })
}

/// What a person's merged record is computed from: each source's current
/// statement per field, and the open overrides.
pub(super) async fn current_candidates(
    tx: &mut Transaction<'_, Any>,
    key: i64,
) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
    let mut out = load_candidates(tx, key).await?;
    override_candidates(tx, key, &mut out).await?;
    Ok(out)
}

/// Open overrides of a person as candidates (source `override`).
pub(super) async fn override_candidates(
    tx: &mut Transaction<'_, Any>,
    key: i64,
    out: &mut BTreeMap<String, Vec<Candidate>>,
) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT id, path, value, created_at FROM overrides WHERE person_id = $1 AND ended_at IS NULL ORDER BY id",
    )
    .bind(key)
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let path: String = row.col("path")?;
        let list = out.entry(path).or_default();
        // The newest open override of a path wins: keep one.
        list.retain(|c| c.source != merge::OVERRIDE);
        list.push(Candidate {
            source: merge::OVERRIDE.into(),
            release: format!("#{}", row.col::<i64>("id")?),
            upstream_version: String::new(),
            value: serde_json::from_str(row.col::<&str>("value")?)
                .map_err(|e| corrupt("override value", e))?,
            labels: vec![],
            effective: None,
            retrieved: parse_ts(row.col::<&str>("created_at")?)?,
        });
    }
    Ok(())
}

/// Each source's latest statement per field, read from the observation log
/// itself (not from `current_observations`): the log is the source of truth.
pub(super) async fn candidates_from_log(
    tx: &mut Transaction<'_, Any>,
    key: i64,
) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
    let rows = sqlx::query(
        "SELECT o.source, o.path, o.value, o.labels, o.release, o.upstream_version, o.effective_at,
                COALESCE(sr.retrieved_at, o.retrieved_at) AS retrieved_at
         FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY source, path ORDER BY retrieved_at DESC, id DESC) AS rn
               FROM observations WHERE person_id = $1) o
         LEFT JOIN source_refresh sr ON sr.person_id = $2 AND sr.source = o.source
         WHERE o.rn = 1 AND o.value IS NOT NULL",
    )
    .bind(key)
    .bind(key)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = candidates_from_rows(rows)?;
    for list in out.values_mut() {
        list.sort_by(|a, b| a.source.cmp(&b.source));
    }
    Ok(out)
}

/// The field-level difference between two merged records.
pub(super) fn diff(before: &MergedRecord, after: &MergedRecord) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let paths: BTreeSet<&String> = before.fields.keys().chain(after.fields.keys()).collect();
    for path in paths {
        let from = before.fields.get(path).map(|f| (&f.value, &f.labels));
        let to = after.fields.get(path).map(|f| (&f.value, &f.labels));
        if from != to {
            // The labels of both sides travel with the entry, so a reader
            // without the basis never sees a value that was protected then.
            let mut entry = json!({
                "from": from.map(|f| f.0.clone()),
                "to": to.map(|f| f.0.clone()),
                "source": after.fields.get(path).map(|f| f.provenance.source.clone()),
            });
            for (key, side) in [("from_labels", from), ("to_labels", to)] {
                if let Some((_, labels)) = side
                    && !labels.is_empty()
                {
                    entry[key] = json!(labels);
                }
            }
            out.insert(path.clone(), entry);
        }
    }
    out
}

impl SqlStore {
    pub(super) async fn apply_person(
        &self,
        tx: &mut Transaction<'_, Any>,
        batch: &Batch,
        person: &FoundPerson,
        report: &mut ApplyReport,
    ) -> Result<(), StoreError> {
        let at = ts(batch.retrieved);
        let Resolved {
            mut key,
            created,
            conflicting,
            ids_changed,
        } = resolve(tx, &self.rules, &batch.source, person, &at).await?;
        if created {
            report.persons_created += 1;
        }
        if !conflicting.is_empty() {
            key = self
                .link_or_report(tx, key, &batch.source, person, conflicting, &at, report)
                .await?;
        }
        // A statement older than the one this source already gave for the
        // person is stale (e.g. a slow batch finishing after a newer one):
        // it does not replace the newer one, so the record does not depend
        // on the order statements arrive in.
        let last: Option<String> = sqlx::query_scalar(
            "SELECT retrieved_at FROM source_refresh WHERE person_id = $1 AND source = $2",
        )
        .bind(key)
        .bind(&batch.source)
        .fetch_optional(&mut **tx)
        .await?;
        if last.is_some_and(|last| last > at) {
            report.persons_unchanged += 1;
            return Ok(());
        }
        let rows = sqlx::query("SELECT path, value, labels, effective_at FROM current_observations WHERE person_id = $1 AND source = $2")
            .bind(key)
            .bind(&batch.source)
            .fetch_all(&mut **tx)
            .await?;
        let mut current: BTreeMap<String, Current> = rows
            .into_iter()
            .map(|r| {
                Ok((
                    r.col::<String>("path")?,
                    Current {
                        value: r.col("value")?,
                        labels: r.col("labels")?,
                        effective: r.col("effective_at")?,
                    },
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        let mut seen = BTreeSet::new();
        // (path, value, labels, effective) of the statements that are new.
        let mut fresh: Vec<(&str, String, String, Option<String>)> = Vec::new();
        for field in &person.fields {
            if !seen.insert(field.path.clone()) {
                continue; // a connector sent a path twice: the first wins
            }
            if field.value.is_null() {
                continue; // no value: retracted below if the source had one
            }
            let value = field.value.to_string();
            let labels = serde_json::to_string(&field.labels).map_err(|e| corrupt("labels", e))?;
            let effective = field.effective.map(ts);
            if let Some(c) = current.remove(&field.path)
                && c.value == value
                && c.labels == labels
                && c.effective == effective
            {
                continue;
            }
            fresh.push((field.path.as_str(), value, labels, effective));
        }
        if !fresh.is_empty() {
            // One multi-row insert into the log and one into its index,
            // which points at the log rows by the ids the first returns.
            report.observations_added += fresh.len() as u64;
            let rows = placeholders(fresh.len(), 9);
            let sql = format!(
                "INSERT INTO observations (person_id, path, value, labels, source, release, upstream_version, effective_at, retrieved_at) VALUES {rows} RETURNING id, path"
            );
            let mut q = sqlx::query(&sql);
            for (path, value, labels, effective) in &fresh {
                q = q
                    .bind(key)
                    .bind(*path)
                    .bind(value)
                    .bind(labels)
                    .bind(&batch.source)
                    .bind(&batch.release)
                    .bind(&person.upstream_version)
                    .bind(effective)
                    .bind(&at);
            }
            let ids: BTreeMap<String, i64> = q
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(|r| Ok((r.col("path")?, r.col("id")?)))
                .collect::<Result<_, StoreError>>()?;
            let rows = placeholders(fresh.len(), 10);
            let sql = format!(
                "INSERT INTO current_observations (person_id, source, path, observation_id, value, labels, release, upstream_version, effective_at, retrieved_at) VALUES {rows}
                 ON CONFLICT (person_id, source, path) DO UPDATE SET observation_id = excluded.observation_id, value = excluded.value, labels = excluded.labels,
                 release = excluded.release, upstream_version = excluded.upstream_version, effective_at = excluded.effective_at, retrieved_at = excluded.retrieved_at"
            );
            let mut q = sqlx::query(&sql);
            for (path, value, labels, effective) in &fresh {
                let id = *ids
                    .get(*path)
                    .ok_or_else(|| corrupt("observation ids", path))?;
                q = q
                    .bind(key)
                    .bind(&batch.source)
                    .bind(*path)
                    .bind(id)
                    .bind(value)
                    .bind(labels)
                    .bind(&batch.release)
                    .bind(&person.upstream_version)
                    .bind(effective)
                    .bind(&at);
            }
            q.execute(&mut **tx).await?;
        }
        // Whatever the source said before and no longer says is retracted,
        // where the answer speaks for it: a field the answer does not cover
        // (a narrower scope, a censored field, a product without it) keeps
        // its stored value. A register that starts protecting a person and
        // stops sending the address has not moved them; the stored address
        // stays and takes the person's protection label in the merge.
        for path in current.keys().filter(|path| person.speaks_for(path)) {
            report.observations_added += 1;
            sqlx::query(
                "INSERT INTO observations (person_id, path, value, labels, source, release, upstream_version, effective_at, retrieved_at) VALUES ($1, $2, NULL, '[]', $3, $4, $5, NULL, $6)",
            )
            .bind(key)
            .bind(path)
            .bind(&batch.source)
            .bind(&batch.release)
            .bind(&person.upstream_version)
            .bind(&at)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "DELETE FROM current_observations WHERE person_id = $1 AND source = $2 AND path = $3",
            )
            .bind(key)
            .bind(&batch.source)
            .bind(path)
            .execute(&mut **tx)
            .await?;
        }
        sqlx::query("INSERT INTO source_refresh (person_id, source, retrieved_at) VALUES ($1, $2, $3) ON CONFLICT (person_id, source) DO UPDATE SET retrieved_at = excluded.retrieved_at")
            .bind(key)
            .bind(&batch.source)
            .bind(&at)
            .execute(&mut **tx)
            .await?;
        let reason = if ids_changed && !created {
            format!("{IDS_CHANGED}{}", batch.reason)
        } else {
            batch.reason.clone()
        };
        self.store_merged(tx, key, created, &at, &reason, report)
            .await
    }

    /// A record names IDs we hold for other persons. When its source issues
    /// all of those IDs (Folkeregisteret for NO numbers, SPAR for SE, DVV
    /// for FI) the register says they are one person: the persons are
    /// merged into the oldest, unless an admin undid that link before.
    /// Otherwise nothing is merged and the IDs are reported for review.
    /// Returns the key the record is stored under.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn link_or_report(
        &self,
        tx: &mut Transaction<'_, Any>,
        key: i64,
        source: &str,
        person: &FoundPerson,
        conflicting: Vec<(String, String, i64)>,
        at: &str,
        report: &mut ApplyReport,
    ) -> Result<i64, StoreError> {
        let authoritative = conflicting
            .iter()
            .all(|(scheme, _, _)| self.rules.issues(source, scheme));
        let mut keys: BTreeSet<i64> = conflicting.iter().map(|(_, _, o)| *o).collect();
        keys.insert(key);
        let survivor = *keys.iter().next().unwrap_or(&key);
        let mut refused = false;
        for other in keys.iter().filter(|k| **k != survivor) {
            let undone: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM identity_merges WHERE undone_at IS NOT NULL AND ((survivor = $1 AND merged = $2) OR (survivor = $3 AND merged = $4))",
            )
            .bind(survivor)
            .bind(other)
            .bind(other)
            .bind(survivor)
            .fetch_optional(&mut **tx)
            .await?;
            refused |= undone.is_some();
        }
        if !authoritative || refused {
            // Two persons we hold claim to be one: never merged on a guess.
            report
                .identity_conflicts
                .extend(conflicting.into_iter().map(|(_, value, _)| value));
            return Ok(key);
        }
        let ids: Vec<&str> = person.ids.iter().map(|i| i.value.as_str()).collect();
        for other in keys.iter().filter(|k| **k != survivor) {
            self.merge_persons(tx, survivor, *other, source, &ids.join(", "), at)
                .await?;
        }
        for id in &person.ids {
            set_active(tx, &self.rules, source, id, at).await?;
        }
        Ok(survivor)
    }

    /// Moves everything of `merged` to `survivor` and records what moved.
    pub(super) async fn merge_persons(
        &self,
        tx: &mut Transaction<'_, Any>,
        survivor: i64,
        merged: i64,
        source: &str,
        ids: &str,
        at: &str,
    ) -> Result<(), StoreError> {
        let moved_ids: Vec<String> =
            sqlx::query_scalar("SELECT value FROM identifiers WHERE person_id = $1")
                .bind(merged)
                .fetch_all(&mut **tx)
                .await?;
        let moved_obs: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM observations WHERE person_id = $1")
                .bind(merged)
                .fetch_all(&mut **tx)
                .await?;
        let moved_changes: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM person_changes WHERE person_id = $1")
                .bind(merged)
                .fetch_all(&mut **tx)
                .await?;
        for table in ["identifiers", "observations", "person_changes", "overrides"] {
            sqlx::query(&format!(
                "UPDATE {table} SET person_id = $1 WHERE person_id = $2"
            ))
            .bind(survivor)
            .bind(merged)
            .execute(&mut **tx)
            .await?;
        }
        for table in ["current_observations", "conflicts", "merged"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE person_id = $1"))
                .bind(merged)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query("UPDATE persons SET merged_into = $1 WHERE id = $2")
            .bind(survivor)
            .bind(merged)
            .execute(&mut **tx)
            .await?;
        rederive_current(tx, survivor).await?;
        rederive_refresh(tx, survivor).await?;
        sqlx::query("DELETE FROM source_refresh WHERE person_id = $1")
            .bind(merged)
            .execute(&mut **tx)
            .await?;
        let reason = format!("{source} says {ids} are one person");
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO identity_merges (survivor, merged, source, reason, at, moved_ids, moved_observations, moved_changes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(survivor)
        .bind(merged)
        .bind(source)
        .bind(&reason)
        .bind(at)
        .bind(json!(moved_ids).to_string())
        .bind(id_list(&moved_obs))
        .bind(id_list(&moved_changes))
        .fetch_one(&mut **tx)
        .await?;
        self.store_merged(
            tx,
            survivor,
            false,
            at,
            &format!("identity link #{id}: person {merged} merged into {survivor}; {reason}"),
            &mut ApplyReport::default(),
        )
        .await
    }

    /// Recomputes a person's merged record from the current statements and
    /// open overrides, and stores it with a history entry when a value
    /// changed (provenance alone is updated in place), keeping the open
    /// conflicts in step.
    pub(super) async fn store_merged(
        &self,
        tx: &mut Transaction<'_, Any>,
        key: i64,
        created: bool,
        at: &str,
        reason: &str,
        report: &mut ApplyReport,
    ) -> Result<(), StoreError> {
        let candidates = current_candidates(tx, key).await?;
        let merged = merge::merge(&self.rules, &candidates);
        let previous = sqlx::query("SELECT record, version FROM merged WHERE person_id = $1")
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?;
        let (before, version) = match previous {
            Some(row) => {
                let text: String = row.col("record")?;
                (
                    serde_json::from_str::<MergedRecord>(&text)
                        .map_err(|e| corrupt("merged record", e))?,
                    row.col::<i64>("version")?,
                )
            }
            None => (MergedRecord::default(), 0),
        };
        report.conflicts_opened += sync_conflicts(tx, key, &before, &merged, at).await?;
        let changes = diff(&before, &merged);
        // New IDs, or IDs the issuing register moved in or out of use, are a
        // new version even when no value changed: readers see other IDs.
        let ids_changed = reason.starts_with(IDS_CHANGED);
        if changes.is_empty() && !created && !ids_changed {
            // A statement that changes no value (the same again, or a newer
            // effective time): the provenance is kept current (retrieved =
            // the source's latest statement), without a new version.
            if merged != before {
                let record =
                    serde_json::to_string(&merged).map_err(|e| corrupt("merged record", e))?;
                sqlx::query("UPDATE merged SET record = $1 WHERE person_id = $2")
                    .bind(&record)
                    .bind(key)
                    .execute(&mut **tx)
                    .await?;
            }
            report.persons_unchanged += 1;
            return Ok(());
        }
        if !created {
            report.persons_changed += 1;
        }
        let record = serde_json::to_string(&merged).map_err(|e| corrupt("merged record", e))?;
        sqlx::query("INSERT INTO merged (person_id, record, version, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (person_id) DO UPDATE SET record = excluded.record, version = excluded.version, updated_at = excluded.updated_at")
            .bind(key)
            .bind(&record)
            .bind(version + 1)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO person_changes (person_id, changed_at, version, diff, reason) VALUES ($1, $2, $3, $4, $5)")
            .bind(key)
            .bind(at)
            .bind(version + 1)
            .bind(Value::Object(changes).to_string())
            .bind(reason)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// Keeps the `conflicts` table in step with a person's merged record: a
/// conflict opens when a field becomes conflicting and closes when it no
/// longer is (a source changed, or an override decided it).
pub(super) async fn sync_conflicts(
    tx: &mut Transaction<'_, Any>,
    key: i64,
    before: &MergedRecord,
    after: &MergedRecord,
    at: &str,
) -> Result<u64, StoreError> {
    let was: BTreeSet<&String> = before
        .fields
        .iter()
        .filter(|(_, f)| f.conflict)
        .map(|(p, _)| p)
        .collect();
    let now: BTreeSet<&String> = after
        .fields
        .iter()
        .filter(|(_, f)| f.conflict)
        .map(|(p, _)| p)
        .collect();
    if was.is_empty() && now.is_empty() {
        return Ok(0);
    }
    let opened = now.difference(&was).count() as u64;
    for path in was.difference(&now) {
        sqlx::query("DELETE FROM conflicts WHERE person_id = $1 AND path = $2")
            .bind(key)
            .bind(path.as_str())
            .execute(&mut **tx)
            .await?;
    }
    for path in &now {
        let field = &after.fields[*path];
        let mut candidates = vec![json!({"source": field.provenance.source, "value": field.value})];
        candidates.extend(
            field
                .provenance
                .alternatives
                .iter()
                .map(|a| json!({"source": a.source, "value": a.value})),
        );
        sqlx::query(
            "INSERT INTO conflicts (person_id, path, candidates, opened_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (person_id, path) DO UPDATE SET candidates = excluded.candidates",
        )
        .bind(key)
        .bind(path.as_str())
        .bind(Value::Array(candidates).to_string())
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(opened)
}
