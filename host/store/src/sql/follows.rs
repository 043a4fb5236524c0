//! [`Follows`] on SQL: follow sets, shared populations, and the retention
//! sweep that deletes persons nobody follows any more.

use sha2::{Digest, Sha256};

use super::*;

/// Rows per multi-row statement (SQLite allows 32,766 parameters).
const CHUNK: usize = 500;

fn member_from(row: &AnyRow) -> Result<FollowMember, StoreError> {
    Ok(FollowMember {
        id: row.col("value")?,
        scheme: row.col("scheme")?,
        added_at: parse_ts(row.col("added_at")?)?,
        added_by: row.col("added_by")?,
    })
}

/// Persons someone follows, as a condition on a person key column:
/// one of their IDs is a member of a set (`sets` chooses which sets).
fn followed_key(key: &str, sets: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM identifiers fi JOIN follows f ON f.value = fi.value
                 WHERE fi.person_id = {key} {sets})"
    )
}

impl SqlStore {
    /// Members of `set` among `values`.
    async fn members_among(
        &self,
        tx: &mut Transaction<'static, Any>,
        set: &str,
        values: &[String],
    ) -> Result<BTreeSet<String>, StoreError> {
        let mut out = BTreeSet::new();
        for chunk in values.chunks(CHUNK) {
            let found: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT f.value FROM follows f JOIN {} j ON j.value = f.value WHERE f.set_name = $2",
                self.backend.json_values("$1")
            ))
            .bind(json!(chunk).to_string())
            .bind(set)
            .fetch_all(&mut **tx)
            .await?;
            out.extend(found);
        }
        Ok(out)
    }

    async fn insert_members(
        &self,
        tx: &mut Transaction<'static, Any>,
        set: &str,
        ids: &[&FollowId],
        by: &str,
    ) -> Result<(), StoreError> {
        let at = ts(now());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO follows (set_name, value, scheme, added_at, added_by) VALUES {}",
                placeholders(chunk.len(), 5)
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q
                    .bind(set)
                    .bind(&id.value)
                    .bind(&id.scheme)
                    .bind(&at)
                    .bind(by);
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn delete_members(
        &self,
        tx: &mut Transaction<'static, Any>,
        set: &str,
        values: &[String],
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        for chunk in values.chunks(CHUNK) {
            removed += sqlx::query(&format!(
                "DELETE FROM follows WHERE set_name = $2 AND value IN (SELECT value FROM {})",
                self.backend.json_values("$1")
            ))
            .bind(json!(chunk).to_string())
            .bind(set)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        }
        Ok(removed)
    }

    /// Deletes a person and the persons merged into it, with everything
    /// stored about them but the access log. Returns the IDs they had and
    /// the observations and history entries deleted.
    async fn delete_person(
        &self,
        tx: &mut Transaction<'static, Any>,
        key: i64,
    ) -> Result<(Vec<String>, u64, u64), StoreError> {
        let mut keys: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM persons WHERE merged_into = $1")
                .bind(key)
                .fetch_all(&mut **tx)
                .await?;
        keys.push(key);
        let list = json!(keys).to_string();
        let keys_in = format!(
            "(SELECT CAST(value AS BIGINT) FROM {})",
            self.backend.json_values("$1")
        );
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT value FROM identifiers WHERE person_id IN {keys_in} ORDER BY value"
        ))
        .bind(&list)
        .fetch_all(&mut **tx)
        .await?;
        let mut counts = [0u64; 2];
        // Children first: PostgreSQL checks the references.
        for (i, (table, column)) in [
            ("current_observations", "person_id"),
            ("observations", "person_id"),
            ("person_changes", "person_id"),
            ("source_refresh", "person_id"),
            ("merged", "person_id"),
            ("overrides", "person_id"),
            ("conflicts", "person_id"),
            ("identity_reviews", "person_id"),
            ("identity_merges", "survivor"),
            ("identity_merges", "merged"),
            ("identifiers", "person_id"),
            ("unfollowed", "person_id"),
        ]
        .into_iter()
        .enumerate()
        {
            let n = sqlx::query(&format!("DELETE FROM {table} WHERE {column} IN {keys_in}"))
                .bind(&list)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            if i < 3 && i > 0 {
                counts[i - 1] = n;
            }
        }
        // Persons merged into this one point at it: they go first.
        sqlx::query(&format!(
            "DELETE FROM persons WHERE id IN {keys_in} AND merged_into IS NOT NULL"
        ))
        .bind(&list)
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM persons WHERE id = $1")
            .bind(key)
            .execute(&mut **tx)
            .await?;
        Ok((ids, counts[0], counts[1]))
    }
}

async fn population_exists(
    tx: &mut Transaction<'static, Any>,
    name: &str,
) -> Result<bool, StoreError> {
    let found: Option<String> = sqlx::query_scalar("SELECT name FROM populations WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(found.is_some())
}

async fn grant(
    tx: &mut Transaction<'static, Any>,
    population: &str,
    client: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO population_clients (population, client) VALUES ($1, $2)")
        .bind(population)
        .bind(client)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn digest(secret: &str, id: &str) -> String {
    let d = Sha256::digest(format!("{secret}:{id}").as_bytes());
    d[..12].iter().map(|b| format!("{b:02x}")).collect()
}

fn deletion_from(row: &AnyRow) -> Result<PersonDeletion, StoreError> {
    Ok(PersonDeletion {
        id: row.col("id")?,
        at: parse_ts(row.col("at")?)?,
        actor: row.col("actor")?,
        reason: row.col("reason")?,
        person_key: row.col("person_key")?,
        unfollowed_since: parse_ts(row.col("unfollowed_since")?)?,
        id_digests: serde_json::from_str(row.col::<&str>("id_digests")?)
            .map_err(|e| corrupt("deletion id digests", e))?,
        observations: row.col::<i64>("observations")? as u64,
        changes: row.col::<i64>("changes")? as u64,
    })
}

#[async_trait]
impl Follows for SqlStore {
    async fn follow(
        &self,
        set: &FollowSet,
        ids: &[FollowId],
        by: &str,
    ) -> Result<FollowChange, StoreError> {
        let set = set.key();
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let mut wanted: BTreeMap<&str, &FollowId> = BTreeMap::new();
        for id in ids {
            wanted.insert(&id.value, id);
        }
        let values: Vec<String> = wanted.keys().map(|v| v.to_string()).collect();
        let present = self.members_among(&mut tx, &set, &values).await?;
        let new: Vec<&FollowId> = wanted
            .values()
            .filter(|id| !present.contains(&id.value))
            .copied()
            .collect();
        self.insert_members(&mut tx, &set, &new, by).await?;
        tx.commit().await?;
        Ok(FollowChange {
            added: new.len() as u64,
            already: (ids.len() - new.len()) as u64,
            ..FollowChange::default()
        })
    }

    async fn unfollow(&self, set: &FollowSet, ids: &[String]) -> Result<FollowChange, StoreError> {
        let set = set.key();
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let unique: BTreeSet<String> = ids.iter().cloned().collect();
        let unique: Vec<String> = unique.into_iter().collect();
        let removed = self.delete_members(&mut tx, &set, &unique).await?;
        tx.commit().await?;
        Ok(FollowChange {
            removed,
            not_followed: ids.len() as u64 - removed,
            ..FollowChange::default()
        })
    }

    async fn replace_follows(
        &self,
        set: &FollowSet,
        ids: &[FollowId],
        by: &str,
    ) -> Result<FollowChange, StoreError> {
        let set = set.key();
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let now: Vec<String> = sqlx::query_scalar("SELECT value FROM follows WHERE set_name = $1")
            .bind(&set)
            .fetch_all(&mut *tx)
            .await?;
        let now: BTreeSet<String> = now.into_iter().collect();
        let mut wanted: BTreeMap<&str, &FollowId> = BTreeMap::new();
        for id in ids {
            wanted.insert(&id.value, id);
        }
        let gone: Vec<String> = now
            .iter()
            .filter(|v| !wanted.contains_key(v.as_str()))
            .cloned()
            .collect();
        let new: Vec<&FollowId> = wanted
            .values()
            .filter(|id| !now.contains(&id.value))
            .copied()
            .collect();
        let removed = self.delete_members(&mut tx, &set, &gone).await?;
        self.insert_members(&mut tx, &set, &new, by).await?;
        tx.commit().await?;
        Ok(FollowChange {
            added: new.len() as u64,
            already: (wanted.len() - new.len()) as u64,
            removed,
            not_followed: 0,
        })
    }

    async fn follow_members(
        &self,
        set: &FollowSet,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FollowMember>, StoreError> {
        sqlx::query(
            "SELECT value, scheme, added_at, added_by FROM follows
             WHERE set_name = $1 AND value > $2 ORDER BY value LIMIT $3",
        )
        .bind(set.key())
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(member_from)
        .collect()
    }

    async fn follow_count(&self, set: &FollowSet) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM follows WHERE set_name = $1")
            .bind(set.key())
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn followed_among(&self, ids: &[String]) -> Result<BTreeSet<String>, StoreError> {
        let mut out = BTreeSet::new();
        for chunk in ids.chunks(CHUNK) {
            let found: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT j.value FROM {} j
                 WHERE EXISTS (SELECT 1 FROM follows f WHERE f.value = j.value)
                    OR EXISTS (SELECT 1 FROM identifiers i JOIN identifiers k ON k.person_id = i.person_id
                               JOIN follows f ON f.value = k.value WHERE i.value = j.value)",
                self.backend.json_values("$1")
            ))
            .bind(json!(chunk).to_string())
            .fetch_all(&self.pool)
            .await?;
            out.extend(found);
        }
        Ok(out)
    }

    async fn followed_ids(&self, schemes: &[&str]) -> Result<Vec<String>, StoreError> {
        let schemes = json!(schemes).to_string();
        let in_schemes = format!("(SELECT value FROM {})", self.backend.json_values("$1"));
        let mut ids: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT i.value FROM identifiers i
             WHERE i.active AND i.scheme IN {in_schemes} AND {}
             UNION
             SELECT f.value FROM follows f
             WHERE f.scheme IN {in_schemes}
               AND NOT EXISTS (SELECT 1 FROM identifiers k WHERE k.value = f.value)",
            followed_key("i.person_id", "")
        ))
        .bind(&schemes)
        .fetch_all(&self.pool)
        .await?;
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    async fn followed_persons_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredPerson>, StoreError> {
        let keys: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT m.person_id FROM merged m WHERE m.person_id > $1 AND {}
             ORDER BY m.person_id LIMIT $2",
            followed_key("m.person_id", "AND f.set_name <> 'folkhub:guardians'")
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut persons = self.load_persons(&keys).await?;
        Ok(keys.iter().filter_map(|k| persons.remove(k)).collect())
    }

    async fn followed_by(
        &self,
        sets: &[FollowSet],
        keys: &[i64],
    ) -> Result<BTreeMap<i64, String>, StoreError> {
        let names: Vec<String> = sets.iter().map(FollowSet::key).collect();
        let mut out = BTreeMap::new();
        for chunk in keys.chunks(CHUNK) {
            let rows = sqlx::query(&format!(
                "SELECT i.person_id, MIN(f.value) AS value FROM identifiers i
                 JOIN follows f ON f.value = i.value
                 WHERE f.set_name IN (SELECT value FROM {})
                   AND i.person_id IN (SELECT CAST(value AS BIGINT) FROM {})
                 GROUP BY i.person_id",
                self.backend.json_values("$1"),
                self.backend.json_values("$2")
            ))
            .bind(json!(names).to_string())
            .bind(json!(chunk).to_string())
            .fetch_all(&self.pool)
            .await?;
            for row in &rows {
                out.insert(row.col("person_id")?, row.col("value")?);
            }
        }
        Ok(out)
    }

    async fn add_population(
        &self,
        name: &str,
        purpose: &str,
        clients: &[String],
        by: &str,
    ) -> Result<Population, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        if population_exists(&mut tx, name).await? {
            return Err(StoreError::Refused(format!(
                "a population named {name:?} exists already; choose another name or grant clients to it with `folkhub populations grant`"
            )));
        }
        let at = now();
        sqlx::query(
            "INSERT INTO populations (name, purpose, created_at, created_by) VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(purpose)
        .bind(ts(at))
        .bind(by)
        .execute(&mut *tx)
        .await?;
        for client in clients {
            grant(&mut tx, name, client).await?;
        }
        tx.commit().await?;
        Ok(Population {
            name: name.into(),
            purpose: purpose.into(),
            clients: clients.to_vec(),
            members: 0,
            created_at: at,
            created_by: by.into(),
        })
    }

    async fn populations(&self) -> Result<Vec<Population>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.name, p.purpose, p.created_at, p.created_by,
                    (SELECT COUNT(*) FROM follows f WHERE f.set_name = 'population:' || p.name) AS members
             FROM populations p ORDER BY p.name",
        )
        .fetch_all(&self.pool)
        .await?;
        let grants =
            sqlx::query("SELECT population, client FROM population_clients ORDER BY client")
                .fetch_all(&self.pool)
                .await?;
        let mut out = Vec::new();
        for row in &rows {
            let name: String = row.col("name")?;
            let mut clients = Vec::new();
            for g in &grants {
                if g.col::<&str>("population")? == name {
                    clients.push(g.col("client")?);
                }
            }
            out.push(Population {
                purpose: row.col("purpose")?,
                clients,
                members: row.col::<i64>("members")? as u64,
                created_at: parse_ts(row.col("created_at")?)?,
                created_by: row.col("created_by")?,
                name,
            });
        }
        Ok(out)
    }

    async fn population_client(
        &self,
        name: &str,
        client: &str,
        allow: bool,
    ) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        if !population_exists(&mut tx, name).await? {
            return Err(StoreError::NotFound(format!(
                "no population named {name:?} (see `folkhub populations list`)"
            )));
        }
        sqlx::query("DELETE FROM population_clients WHERE population = $1 AND client = $2")
            .bind(name)
            .bind(client)
            .execute(&mut *tx)
            .await?;
        if allow {
            grant(&mut tx, name, client).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn drop_population(&self, name: &str) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM follows WHERE set_name = $1")
            .bind(FollowSet::Population(name.into()).key())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM population_clients WHERE population = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM populations WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn sweep_unfollowed(
        &self,
        at: DateTime<Utc>,
        retention: chrono::Duration,
        actor: &str,
    ) -> Result<RetentionReport, StoreError> {
        let secret = self.server_secret("deletions").await?;
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let mut report = RetentionReport::default();
        let followed = followed_key("u.person_id", "");
        report.followed_again = sqlx::query(&format!(
            "DELETE FROM unfollowed WHERE person_id IN (SELECT u.person_id FROM unfollowed u WHERE {followed})"
        ))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        report.noted = sqlx::query(&format!(
            "INSERT INTO unfollowed (person_id, since)
             SELECT m.person_id, $1 FROM merged m
             WHERE NOT {} AND NOT EXISTS (SELECT 1 FROM unfollowed u WHERE u.person_id = m.person_id)",
            followed_key("m.person_id", "")
        ))
        .bind(ts(at))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let cutoff = ts(at - retention);
        let due: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM unfollowed WHERE since <= $1")
            .bind(&cutoff)
            .fetch_one(&mut *tx)
            .await?;
        let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM unfollowed")
            .fetch_one(&mut *tx)
            .await?;
        report.waiting = (waiting - due) as u64;
        tx.commit().await?;
        let reason = format!(
            "nobody followed the person for the retention period ({} days)",
            retention.num_days()
        );
        // Deleted in transactions of a few hundred persons: a store that
        // switched from a national mirror deletes millions without holding
        // the write lock for the whole sweep.
        loop {
            let mut tx = self.write_tx().await?;
            let due = sqlx::query(&format!(
                "SELECT u.person_id, u.since FROM unfollowed u
                 WHERE u.since <= $1 AND NOT {followed} ORDER BY u.person_id LIMIT {CHUNK}"
            ))
            .bind(&cutoff)
            .fetch_all(&mut *tx)
            .await?;
            if due.is_empty() {
                break;
            }
            let deleted_at = parse_ts(&ts(now()))?;
            for row in &due {
                let key: i64 = row.col("person_id")?;
                let since: String = row.col("since")?;
                let (ids, observations, changes) = self.delete_person(&mut tx, key).await?;
                let digests: Vec<String> = ids.iter().map(|id| digest(&secret, id)).collect();
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO person_deletions (at, actor, reason, person_key, unfollowed_since, id_digests, observations, changes)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                )
                .bind(ts(deleted_at))
                .bind(actor)
                .bind(&reason)
                .bind(key)
                .bind(&since)
                .bind(json!(digests).to_string())
                .bind(observations as i64)
                .bind(changes as i64)
                .fetch_one(&mut *tx)
                .await?;
                report.deleted.push(PersonDeletion {
                    id,
                    at: deleted_at,
                    actor: actor.into(),
                    reason: reason.clone(),
                    person_key: key,
                    unfollowed_since: parse_ts(&since)?,
                    id_digests: digests,
                    observations,
                    changes,
                });
            }
            tx.commit().await?;
        }
        Ok(report)
    }

    async fn deletions(&self, limit: u32) -> Result<Vec<PersonDeletion>, StoreError> {
        sqlx::query("SELECT * FROM person_deletions ORDER BY id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(deletion_from)
            .collect()
    }

    async fn deletion_digest(&self, id: &str) -> Result<String, StoreError> {
        Ok(digest(&self.server_secret("deletions").await?, id))
    }

    async fn deletion_of(&self, id: &str) -> Result<Option<PersonDeletion>, StoreError> {
        // The digests are hex, stored as a JSON list: a quoted digest
        // matches only itself, and LIKE finds no wildcard in it.
        let quoted = format!("%\"{}\"%", self.deletion_digest(id).await?);
        sqlx::query(
            "SELECT * FROM person_deletions WHERE id_digests LIKE $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(quoted)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(deletion_from)
        .transpose()
    }
}
