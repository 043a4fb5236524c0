//! [`Installations`] on SQL: what is installed, pins, and the audit trail.

use super::*;

impl SqlStore {
    /// An audit entry about the installed release, optionally setting the
    /// pin in the same transaction.
    pub(super) async fn audited(
        &self,
        connector: &str,
        actor: &str,
        action: &str,
        reason: &str,
        pinned: Option<bool>,
    ) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let Some(row) =
            sqlx::query("SELECT version, digest FROM installations WHERE connector = $1")
                .bind(connector)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(false);
        };
        let (version, digest): (String, String) = (row.col("version")?, row.col("digest")?);
        if let Some(pinned) = pinned {
            sqlx::query("UPDATE installations SET pinned = $1 WHERE connector = $2")
                .bind(pinned)
                .bind(connector)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO installation_audit (connector, at, actor, action, version_before, digest_before, version_after, digest_after, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(connector)
        .bind(ts(now()))
        .bind(actor)
        .bind(action)
        .bind(&version)
        .bind(&digest)
        .bind(&version)
        .bind(&digest)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

pub(super) fn installation_from(row: &AnyRow) -> Result<Installation, StoreError> {
    Ok(Installation {
        connector: row.col("connector")?,
        version: row.col("version")?,
        digest: row.col("digest")?,
        contract: row.col("contract")?,
        pinned: flag(row, "pinned"),
        installed_at: parse_ts(row.col::<&str>("installed_at")?)?,
        installed_by: row.col("installed_by")?,
    })
}

#[async_trait]
impl Installations for SqlStore {
    async fn installation(&self, connector: &str) -> Result<Option<Installation>, StoreError> {
        let row = sqlx::query("SELECT * FROM installations WHERE connector = $1")
            .bind(connector)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(installation_from).transpose()
    }

    async fn installations(&self) -> Result<Vec<Installation>, StoreError> {
        let rows = sqlx::query("SELECT * FROM installations ORDER BY connector")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(installation_from).collect()
    }

    async fn change_installation(
        &self,
        installation: Installation,
        action: Option<&str>,
        reason: &str,
    ) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let before = sqlx::query("SELECT version, digest FROM installations WHERE connector = $1")
            .bind(&installation.connector)
            .fetch_optional(&mut *tx)
            .await?;
        let (version_before, digest_before): (Option<String>, Option<String>) = match &before {
            Some(r) => (Some(r.col("version")?), Some(r.col("digest")?)),
            None => (None, None),
        };
        let action = action.unwrap_or(match &version_before {
            None => "install",
            Some(v) if *v == installation.version => "reinstall",
            Some(_) => "change-version",
        });
        sqlx::query(
            "INSERT INTO installations (connector, version, digest, contract, pinned, installed_at, installed_by) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (connector) DO UPDATE SET version = excluded.version, digest = excluded.digest, contract = excluded.contract,
             pinned = excluded.pinned, installed_at = excluded.installed_at, installed_by = excluded.installed_by",
        )
        .bind(&installation.connector)
        .bind(&installation.version)
        .bind(&installation.digest)
        .bind(&installation.contract)
        .bind(installation.pinned)
        .bind(ts(installation.installed_at))
        .bind(&installation.installed_by)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO installation_audit (connector, at, actor, action, version_before, digest_before, version_after, digest_after, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&installation.connector)
        .bind(ts(installation.installed_at))
        .bind(&installation.installed_by)
        .bind(action)
        .bind(version_before)
        .bind(digest_before)
        .bind(&installation.version)
        .bind(&installation.digest)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_pinned(
        &self,
        connector: &str,
        pinned: bool,
        actor: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let action = if pinned { "pin" } else { "unpin" };
        self.audited(connector, actor, action, reason, Some(pinned))
            .await
    }

    async fn audit_event(
        &self,
        connector: &str,
        actor: &str,
        action: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.audited(connector, actor, action, reason, None).await
    }

    async fn audit(&self, connector: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM installation_audit WHERE connector = $1 ORDER BY id")
            .bind(connector)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    connector: r.col("connector")?,
                    at: parse_ts(r.col::<&str>("at")?)?,
                    actor: r.col("actor")?,
                    action: r.col("action")?,
                    version_before: r.col("version_before")?,
                    digest_before: r.col("digest_before")?,
                    version_after: r.col("version_after")?,
                    digest_after: r.col("digest_after")?,
                    reason: r.col("reason")?,
                })
            })
            .collect()
    }
}
