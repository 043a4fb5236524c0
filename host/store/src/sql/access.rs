//! [`Access`] on SQL: API clients, the hash-chained access log and the
//! servers' shared secrets.

use super::*;

#[async_trait]
impl Access for SqlStore {
    async fn add_client(&self, client: NewClient) -> Result<Client, StoreError> {
        let _w = self.writer.lock().await;
        let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM clients WHERE name = $1")
            .bind(&client.name)
            .fetch_optional(&self.pool)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Refused(format!(
                "a client named {:?} exists already (names stay taken after a revoke, so the access log stays clear); choose another name",
                client.name
            )));
        }
        let row = sqlx::query("INSERT INTO clients (name, auth, secret_sha256, basis, purpose, admin, rate_limit, created_at, created_by, persons_per_minute, may_fetch) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *")
            .bind(&client.name)
            .bind(client.auth.as_str())
            .bind(&client.secret_sha256)
            .bind(&client.basis)
            .bind(&client.purpose)
            .bind(client.admin)
            .bind(i64::from(client.rate_limit))
            .bind(ts(now()))
            .bind(&client.created_by)
            .bind(i64::from(client.persons_per_minute))
            .bind(client.may_fetch)
            .fetch_one(&self.pool)
            .await?;
        client_from(&row)
    }

    async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        sqlx::query("SELECT * FROM clients ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(client_from)
            .collect()
    }

    async fn client_by_secret(&self, secret_sha256: &str) -> Result<Option<Client>, StoreError> {
        sqlx::query("SELECT * FROM clients WHERE secret_sha256 = $1 AND revoked_at IS NULL")
            .bind(secret_sha256)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(client_from)
            .transpose()
    }

    async fn revoke_client(
        &self,
        name: &str,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let done = sqlx::query("UPDATE clients SET revoked_at = $1, revoked_by = $2, revoked_reason = $3 WHERE name = $4 AND revoked_at IS NULL")
            .bind(ts(now()))
            .bind(actor)
            .bind(reason)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn log_access(&self, entries: &[AccessEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _w = self.access_writer.lock().await;
        // The chain is extended under the access log's write lock (SQLite's
        // BEGIN IMMEDIATE on its own file; an advisory lock of its own on
        // PostgreSQL, so these commits do not queue behind a sync's).
        let mut tx = begin_locked(&self.access, self.backend, PG_ACCESS_LOCK).await?;
        let last = sqlx::query("SELECT seq, hash FROM access_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (mut seq, mut previous) = match &last {
            Some(row) => (
                row.try_get::<i64, _>("seq")?,
                row.try_get::<Option<String>, _>("hash")?
                    .unwrap_or_else(|| crate::audit::GENESIS.to_string()),
            ),
            None => (0, crate::audit::GENESIS.to_string()),
        };
        // One fixed statement whatever the group's size: the entries travel
        // as one JSON array and the database unpacks them.
        let mut rows: Vec<Value> = Vec::with_capacity(entries.len());
        for e in entries {
            seq += 1;
            let at = ts(e.at);
            let fields = serde_json::to_string(&e.fields).map_err(|e| corrupt("fields", e))?;
            let hash = crate::audit::link_hash(
                &previous,
                &crate::audit::Link {
                    seq,
                    at: &at,
                    client: &e.client,
                    basis: &e.basis,
                    purpose: &e.purpose,
                    person: e.person,
                    endpoint: &e.endpoint,
                    fields: &fields,
                    criteria: e.criteria.as_deref(),
                },
            );
            rows.push(json!([
                seq, at, e.client, e.basis, e.purpose, e.person, e.endpoint, fields, e.criteria,
                hash
            ]));
            previous = hash;
        }
        let sql = match self.backend {
            Backend::Sqlite => {
                "INSERT INTO access_log_in (seq, at, client, basis, purpose, person_id, endpoint,
                                            fields, criteria, hash)
                 SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                        json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                        json_extract(value, '$[4]'), json_extract(value, '$[5]'),
                        json_extract(value, '$[6]'), json_extract(value, '$[7]'),
                        json_extract(value, '$[8]'), json_extract(value, '$[9]')
                 FROM json_each($1) ORDER BY key"
            }
            Backend::Postgres => {
                "INSERT INTO access_log_in (seq, at, client, basis, purpose, person_id, endpoint,
                                            fields, criteria, hash)
                 SELECT CAST(e->>0 AS BIGINT), e->>1, e->>2, e->>3, e->>4, CAST(e->>5 AS BIGINT),
                        e->>6, e->>7, e->>8, e->>9
                 FROM json_array_elements($1::json) WITH ORDINALITY AS t(e, n) ORDER BY n"
            }
        };
        sqlx::query(sql)
            .bind(Value::Array(rows).to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn access_log(&self, q: &AccessQuery) -> Result<Vec<AccessRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.seq, a.at, a.client, a.basis, a.purpose, a.person_id, a.endpoint, a.criteria, a.hash, f.fields
             FROM access_log a JOIN access_field_sets f ON f.id = a.field_set
             WHERE seq > $1
               AND ($2 IS NULL OR client = $2) AND ($3 IS NULL OR person_id = $3)
               AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at < $5)
             ORDER BY seq LIMIT $6",
        )
        .bind(q.after)
        .bind(q.client.as_deref())
        .bind(q.person)
        .bind(q.since.map(ts))
        .bind(q.until.map(ts))
        .bind(i64::from(q.limit))
        .fetch_all(&self.access)
        .await?;
        rows.iter()
            .map(|row| {
                let fields: String = row.try_get("fields")?;
                Ok(AccessRecord {
                    seq: row.try_get("seq")?,
                    entry: AccessEntry {
                        at: parse_ts(row.try_get::<&str, _>("at")?)?,
                        client: row.try_get("client")?,
                        basis: row.try_get("basis")?,
                        purpose: row.try_get("purpose")?,
                        person: row.try_get("person_id")?,
                        endpoint: row.try_get("endpoint")?,
                        fields: serde_json::from_str(&fields)
                            .map_err(|e| corrupt("access log fields", e))?,
                        criteria: row.try_get("criteria")?,
                    },
                    hash: row.try_get("hash")?,
                })
            })
            .collect()
    }

    async fn verify_access_log(&self) -> Result<crate::audit::ChainReport, StoreError> {
        // Read in pages so a long log is not held in memory at once; the
        // field list is the text the chain covers (a changed shared list
        // breaks every entry that uses it).
        let mut verifier = crate::audit::Verifier::default();
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(
                "SELECT a.seq, a.at, a.client, a.basis, a.purpose, a.person_id, a.endpoint,
                        f.fields, a.criteria, a.hash
                 FROM access_log a LEFT JOIN access_field_sets f ON f.id = a.field_set
                 WHERE a.seq > $1 ORDER BY a.seq LIMIT 10000",
            )
            .bind(after)
            .fetch_all(&self.access)
            .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let seq: i64 = row.try_get("seq")?;
                let fields: Option<String> = row.try_get("fields")?;
                let criteria: Option<String> = row.try_get("criteria")?;
                let hash: Option<String> = row.try_get("hash")?;
                let (at, client, basis, purpose, endpoint): (
                    String,
                    String,
                    String,
                    String,
                    String,
                ) = (
                    row.try_get("at")?,
                    row.try_get("client")?,
                    row.try_get("basis")?,
                    row.try_get("purpose")?,
                    row.try_get("endpoint")?,
                );
                let link = crate::audit::Link {
                    seq,
                    at: &at,
                    client: &client,
                    basis: &basis,
                    purpose: &purpose,
                    person: row.try_get("person_id")?,
                    endpoint: &endpoint,
                    fields: fields.as_deref().unwrap_or("(missing field set)"),
                    criteria: criteria.as_deref(),
                };
                if !verifier.next(&link, hash.as_deref()) {
                    return Ok(verifier.finish());
                }
                after = seq;
            }
        }
        Ok(verifier.finish())
    }

    async fn server_secret(&self, name: &str) -> Result<String, StoreError> {
        let read = || {
            sqlx::query_scalar::<_, String>("SELECT value FROM server_secrets WHERE name = $1")
                .bind(name)
        };
        if let Some(value) = read().fetch_optional(&self.pool).await? {
            return Ok(value);
        }
        // 256 bits from the operating system; the first host to get here
        // writes it, the others read that one.
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        sqlx::query(
            "INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&value)
        .bind(ts(now()))
        .execute(&self.pool)
        .await?;
        Ok(read().fetch_one(&self.pool).await?)
    }
}
