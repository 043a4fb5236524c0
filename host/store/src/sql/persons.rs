//! [`Persons`] on SQL: reads, search, history, identity links, overrides,
//! conflicts and rebuilds (applying a batch is in `apply.rs`).

use super::*;

#[async_trait]
impl Persons for SqlStore {
    async fn apply(&self, batch: Batch) -> Result<ApplyReport, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let mut report = ApplyReport::default();
        fence_check(&mut tx, &batch).await?;
        for person in &batch.persons {
            self.apply_person(&mut tx, &batch, person, &mut report)
                .await?;
        }
        fence_record(&mut tx, &batch, &report).await?;
        if let Some(cursor) = &batch.cursor {
            sqlx::query("INSERT INTO cursors (connector, cursor, updated_at) VALUES ($1, $2, $3) ON CONFLICT (connector) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at")
                .bind(&batch.source)
                .bind(cursor)
                .bind(ts(now()))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(report)
    }

    async fn person(&self, id: &str) -> Result<Option<StoredPerson>, StoreError> {
        // One query (the hot path of the API): the record of whoever holds
        // the ID now (a person merged into another answers as that one)
        // with all its IDs.
        sqlx::query(&format!(
            "SELECT {}
             FROM identifiers i JOIN persons p ON p.id = i.person_id
             JOIN merged m ON m.person_id = COALESCE(p.merged_into, p.id)
             WHERE i.value = $1",
            self.backend.person_columns()
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(stored_person)
        .transpose()
    }

    async fn keys(&self, ids: &[String]) -> Result<BTreeMap<String, i64>, StoreError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT i.value, COALESCE(p.merged_into, p.id) AS key
             FROM {} j JOIN identifiers i ON i.value = j.value
             JOIN persons p ON p.id = i.person_id",
            self.backend.json_values("$1")
        ))
        .bind(json!(ids).to_string())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| Ok((row.col("value")?, row.col("key")?)))
            .collect::<Result<_, StoreError>>()?)
    }

    async fn persons(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, Option<StoredPerson>)>, StoreError> {
        let owner = self.keys(ids).await?;
        let keys: BTreeSet<i64> = owner.values().copied().collect();
        let mut persons = self
            .load_persons(&keys.into_iter().collect::<Vec<_>>())
            .await?;
        // Each person is moved to the last ID that names it and cloned
        // only for the others.
        let mut last_mention: BTreeMap<i64, usize> = BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            if let Some(key) = owner.get(id) {
                last_mention.insert(*key, i);
            }
        }
        Ok(ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let person = owner.get(id).and_then(|key| {
                    if last_mention.get(key) == Some(&i) {
                        persons.remove(key)
                    } else {
                        persons.get(key).cloned()
                    }
                });
                (id.clone(), person)
            })
            .collect())
    }

    async fn search(
        &self,
        search: &Search,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredPerson>, StoreError> {
        let keys: Vec<i64> = match search {
            Search::IdPrefix(prefix) => {
                // A range over the identifier index: every value that
                // starts with the prefix sorts between it and prefix + U+FFFF.
                let top = match self.backend {
                    Backend::Sqlite => "char(65535)",
                    Backend::Postgres => "chr(65535)",
                };
                sqlx::query_scalar(&format!(
                    "SELECT DISTINCT p.id FROM identifiers i JOIN persons p ON p.id = i.person_id
                     WHERE i.value >= $1 AND i.value < $1 || {top}
                       AND p.merged_into IS NULL AND p.id > $2
                     ORDER BY p.id LIMIT $3",
                ))
                .bind(prefix)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            Search::Name {
                family,
                given,
                birth_date,
            } => {
                // The birth date uses the expression index; names compare
                // case-insensitively by prefix.
                let b = self.backend;
                let pos = b.position();
                sqlx::query_scalar(&format!(
                    "SELECT m.person_id FROM merged m JOIN persons p ON p.id = m.person_id
                     WHERE {} = $1
                       AND p.merged_into IS NULL AND m.person_id > $2
                       AND {pos}(lower({}), lower($3)) = 1
                       AND ($4 IS NULL OR {pos}(lower({}), lower($4)) = 1)
                     ORDER BY m.person_id LIMIT $5",
                    b.field("m.record", "birth.date"),
                    b.field("m.record", "name.family"),
                    b.field("m.record", "name.given"),
                ))
                .bind(birth_date)
                .bind(after)
                .bind(family)
                .bind(given.as_deref())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        let mut persons = self.load_persons(&keys).await?;
        Ok(keys.iter().filter_map(|k| persons.remove(k)).collect())
    }

    async fn persons_after(&self, after: i64, limit: u32) -> Result<Vec<StoredPerson>, StoreError> {
        let keys: Vec<i64> = sqlx::query_scalar(
            "SELECT person_id FROM merged WHERE person_id > $1 ORDER BY person_id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut persons = self.load_persons(&keys).await?;
        Ok(keys.iter().filter_map(|k| persons.remove(k)).collect())
    }

    async fn person_by_key(&self, key: i64) -> Result<Option<StoredPerson>, StoreError> {
        // A person merged into another answers as that one.
        sqlx::query(&format!(
            "SELECT {}
             FROM persons p JOIN merged m ON m.person_id = COALESCE(p.merged_into, p.id)
             WHERE p.id = $1",
            self.backend.person_columns()
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(stored_person)
        .transpose()
    }

    async fn active_ids(&self, schemes: &[&str]) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for scheme in schemes {
            let mut list: Vec<String> = sqlx::query_scalar(
                "SELECT value FROM identifiers WHERE scheme = $1 AND active ORDER BY value",
            )
            .bind(scheme)
            .fetch_all(&self.pool)
            .await?;
            out.append(&mut list);
        }
        Ok(out)
    }

    async fn active_ids_in(
        &self,
        schemes: &[&str],
        municipality: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for scheme in schemes {
            let mut list: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT i.value FROM identifiers i JOIN merged m ON m.person_id = i.person_id
                 WHERE i.scheme = $1 AND i.active
                   AND {} = $2
                 ORDER BY i.value",
                self.backend.field("m.record", "address.municipality")
            ))
            .bind(scheme)
            .bind(municipality)
            .fetch_all(&self.pool)
            .await?;
            out.append(&mut list);
        }
        Ok(out)
    }

    async fn refreshed_since(
        &self,
        source: &str,
        since: DateTime<Utc>,
    ) -> Result<BTreeSet<String>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT i.value FROM identifiers i JOIN source_refresh sr ON sr.person_id = i.person_id AND sr.source = $1 WHERE sr.retrieved_at >= $2",
        )
        .bind(source)
        .bind(ts(since))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().collect())
    }

    async fn count_persons(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM merged")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn history(&self, person: i64) -> Result<Vec<PersonChange>, StoreError> {
        let rows = sqlx::query("SELECT seq, person_id, changed_at, version, diff, reason FROM person_changes WHERE person_id = $1 ORDER BY seq")
            .bind(person)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(change_from).collect()
    }

    async fn changes_since(&self, seq: i64, limit: u32) -> Result<Vec<PersonChange>, StoreError> {
        let rows = sqlx::query("SELECT seq, person_id, changed_at, version, diff, reason FROM person_changes WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(change_from).collect()
    }

    async fn identity_reviews(&self) -> Result<Vec<IdentityReview>, StoreError> {
        let rows = sqlx::query("SELECT * FROM identity_reviews ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(IdentityReview {
                    id: r.col("id")?,
                    person: r.col("person_id")?,
                    candidates: serde_json::from_str(r.col::<&str>("candidates")?)
                        .map_err(|e| corrupt("review candidates", e))?,
                    source: r.col("source")?,
                    at: parse_ts(r.col::<&str>("at")?)?,
                })
            })
            .collect()
    }

    async fn identity_links(&self) -> Result<Vec<IdentityLink>, StoreError> {
        let rows = sqlx::query("SELECT * FROM identity_merges ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(IdentityLink {
                    id: r.col("id")?,
                    survivor: r.col("survivor")?,
                    merged: r.col("merged")?,
                    source: r.col("source")?,
                    reason: r.col("reason")?,
                    at: parse_ts(r.col::<&str>("at")?)?,
                    undone_at: r
                        .col::<Option<String>>("undone_at")?
                        .as_deref()
                        .map(parse_ts)
                        .transpose()?,
                    undone_by: r.col("undone_by")?,
                    undone_reason: r.col("undone_reason")?,
                })
            })
            .collect()
    }

    async fn undo_link(&self, id: i64, actor: &str, reason: &str) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let Some(row) =
            sqlx::query("SELECT * FROM identity_merges WHERE id = $1 AND undone_at IS NULL")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(false);
        };
        let (survivor, merged): (i64, i64) = (row.col("survivor")?, row.col("merged")?);
        let ids: Vec<String> = serde_json::from_str(row.col::<&str>("moved_ids")?)
            .map_err(|e| corrupt("moved ids", e))?;
        let obs: Vec<i64> = serde_json::from_str(row.col::<&str>("moved_observations")?)
            .map_err(|e| corrupt("moved observations", e))?;
        let changes: Vec<i64> = serde_json::from_str(row.col::<&str>("moved_changes")?)
            .map_err(|e| corrupt("moved changes", e))?;
        for value in &ids {
            sqlx::query("UPDATE identifiers SET person_id = $1 WHERE value = $2")
                .bind(merged)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        for (table, column, list) in [
            ("observations", "id", &obs),
            ("person_changes", "seq", &changes),
        ] {
            for chunk in list.chunks(500) {
                let marks: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
                let marks = marks.join(", ");
                let sql = format!("UPDATE {table} SET person_id = $1 WHERE {column} IN ({marks})");
                let mut q = sqlx::query(&sql).bind(merged);
                for v in chunk {
                    q = q.bind(v);
                }
                q.execute(&mut *tx).await?;
            }
        }
        sqlx::query("UPDATE persons SET merged_into = NULL WHERE id = $1")
            .bind(merged)
            .execute(&mut *tx)
            .await?;
        let at = ts(now());
        sqlx::query("UPDATE identity_merges SET undone_at = $1, undone_by = $2, undone_reason = $3 WHERE id = $4")
            .bind(&at)
            .bind(actor)
            .bind(reason)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let why = format!("identity link #{id} undone by {actor}: {reason}");
        for key in [survivor, merged] {
            rederive_current(&mut tx, key).await?;
            rederive_refresh(&mut tx, key).await?;
            self.store_merged(
                &mut tx,
                key,
                key == merged,
                &at,
                &why,
                &mut ApplyReport::default(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn add_override(&self, new: NewOverride) -> Result<Override, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let key: i64 = sqlx::query_scalar("SELECT person_id FROM identifiers WHERE value = $1")
            .bind(&new.person_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no person with ID {}", new.person_id)))?;
        let at = ts(now());
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO overrides (person_id, path, value, reason, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(key)
        .bind(&new.path)
        .bind(new.value.to_string())
        .bind(&new.reason)
        .bind(&new.actor)
        .bind(&at)
        .bind(new.expires.map(ts))
        .fetch_one(&mut *tx)
        .await?;
        let reason = format!("override #{id} by {}: {}", new.actor, new.reason);
        self.store_merged(
            &mut tx,
            key,
            false,
            &at,
            &reason,
            &mut ApplyReport::default(),
        )
        .await?;
        tx.commit().await?;
        Ok(Override {
            id,
            person: key,
            path: new.path,
            value: new.value,
            reason: new.reason,
            created_by: new.actor,
            created_at: parse_ts(&at)?,
            expires_at: new.expires,
            ended_at: None,
            ended_by: None,
            ended_reason: None,
        })
    }

    async fn end_override(&self, id: i64, actor: &str, reason: &str) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let key: Option<i64> = sqlx::query_scalar(
            "SELECT person_id FROM overrides WHERE id = $1 AND ended_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(key) = key else { return Ok(false) };
        let at = ts(now());
        sqlx::query(
            "UPDATE overrides SET ended_at = $1, ended_by = $2, ended_reason = $3 WHERE id = $4",
        )
        .bind(&at)
        .bind(actor)
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let why = format!("override #{id} removed by {actor}: {reason}");
        self.store_merged(&mut tx, key, false, &at, &why, &mut ApplyReport::default())
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn expire_overrides(&self, at: DateTime<Utc>) -> Result<Vec<i64>, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let rows = sqlx::query(
            "SELECT id, person_id, expires_at FROM overrides WHERE ended_at IS NULL AND expires_at IS NOT NULL AND expires_at <= $1 ORDER BY id",
        )
        .bind(ts(at))
        .fetch_all(&mut *tx)
        .await?;
        let mut ended = Vec::new();
        for row in rows {
            let (id, key, expires): (i64, i64, String) = (
                row.col("id")?,
                row.col("person_id")?,
                row.col("expires_at")?,
            );
            sqlx::query("UPDATE overrides SET ended_at = $1, ended_by = 'folkhub (expiry)', ended_reason = 'expired' WHERE id = $2")
                .bind(&expires)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let why = format!("override #{id} expired on {expires}");
            self.store_merged(
                &mut tx,
                key,
                false,
                &expires,
                &why,
                &mut ApplyReport::default(),
            )
            .await?;
            ended.push(id);
        }
        tx.commit().await?;
        Ok(ended)
    }

    async fn overrides(&self, open_only: bool) -> Result<Vec<Override>, StoreError> {
        let rows = sqlx::query(if open_only {
            "SELECT * FROM overrides WHERE ended_at IS NULL ORDER BY id"
        } else {
            "SELECT * FROM overrides ORDER BY id"
        })
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let opt_ts = |name: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
                    r.col::<Option<String>>(name)?
                        .as_deref()
                        .map(parse_ts)
                        .transpose()
                };
                Ok(Override {
                    id: r.col("id")?,
                    person: r.col("person_id")?,
                    path: r.col("path")?,
                    value: serde_json::from_str(r.col::<&str>("value")?)
                        .map_err(|e| corrupt("override value", e))?,
                    reason: r.col("reason")?,
                    created_by: r.col("created_by")?,
                    created_at: parse_ts(r.col::<&str>("created_at")?)?,
                    expires_at: opt_ts("expires_at")?,
                    ended_at: opt_ts("ended_at")?,
                    ended_by: r.col("ended_by")?,
                    ended_reason: r.col("ended_reason")?,
                })
            })
            .collect()
    }

    async fn conflicts(&self) -> Result<Vec<Conflict>, StoreError> {
        let rows = sqlx::query("SELECT * FROM conflicts ORDER BY person_id, path")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Conflict {
                    person: r.col("person_id")?,
                    path: r.col("path")?,
                    candidates: serde_json::from_str(r.col::<&str>("candidates")?)
                        .map_err(|e| corrupt("conflict candidates", e))?,
                    opened_at: parse_ts(r.col::<&str>("opened_at")?)?,
                })
            })
            .collect()
    }

    async fn rebuild(&self, apply: bool) -> Result<RebuildReport, StoreError> {
        let _w = if apply {
            Some(self.writer.lock().await)
        } else {
            None
        };
        let keys: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM persons WHERE merged_into IS NULL ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        let mut report = RebuildReport::default();
        for chunk in keys.chunks(500) {
            let mut tx = self.write_tx().await?;
            for &key in chunk {
                report.persons += 1;
                let mut candidates = candidates_from_log(&mut tx, key).await?;
                override_candidates(&mut tx, key, &mut candidates).await?;
                let rebuilt = merge::merge(&self.rules, &candidates);
                let row = sqlx::query("SELECT record, version FROM merged WHERE person_id = $1")
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
                let (stored, version) = match row {
                    Some(r) => {
                        let text: String = r.col("record")?;
                        // A record that no longer parses differs entirely.
                        (
                            serde_json::from_str::<MergedRecord>(&text).unwrap_or_default(),
                            r.col::<i64>("version")?,
                        )
                    }
                    None => (MergedRecord::default(), 0),
                };
                let changes = diff(&stored, &rebuilt);
                let provenance_differs = changes.is_empty() && stored != rebuilt;
                if changes.is_empty() && !provenance_differs {
                    continue;
                }
                let mut paths: Vec<String> = changes.keys().cloned().collect();
                if provenance_differs {
                    paths.push("(provenance)".into());
                }
                report.differing.push((key, paths));
                if !apply {
                    continue;
                }
                // current_observations is an index over the log: make it
                // agree again, then store the rebuilt record with history.
                rederive_current(&mut tx, key).await?;
                let at = ts(now());
                sync_conflicts(&mut tx, key, &stored, &rebuilt, &at).await?;
                let record =
                    serde_json::to_string(&rebuilt).map_err(|e| corrupt("merged record", e))?;
                sqlx::query("INSERT INTO merged (person_id, record, version, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (person_id) DO UPDATE SET record = excluded.record, version = excluded.version, updated_at = excluded.updated_at")
                    .bind(key)
                    .bind(&record)
                    .bind(version + 1)
                    .bind(&at)
                    .execute(&mut *tx)
                    .await?;
                if !changes.is_empty() {
                    sqlx::query("INSERT INTO person_changes (person_id, changed_at, version, diff, reason) VALUES ($1, $2, $3, $4, $5)")
                        .bind(key)
                        .bind(&at)
                        .bind(version + 1)
                        .bind(Value::Object(changes).to_string())
                        .bind("rebuild from the observation log")
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
        }
        Ok(report)
    }

    async fn candidates(
        &self,
        person: i64,
    ) -> Result<BTreeMap<String, Vec<Candidate>>, StoreError> {
        let mut tx = self.write_tx().await?;
        let out = current_candidates(&mut tx, person).await?;
        tx.commit().await?;
        Ok(out)
    }
}
