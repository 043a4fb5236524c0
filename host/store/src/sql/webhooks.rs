//! [`Webhooks`] on SQL: subscriptions, the transactional outbox, delivery
//! attempts and operational events.

use super::*;

fn subscription_from(row: &AnyRow) -> Result<Subscription, StoreError> {
    Ok(Subscription {
        id: row.col("id")?,
        client: row.col("client")?,
        url: row.col("url")?,
        secret: row.col("secret")?,
        events: serde_json::from_str(row.col::<&str>("events")?)
            .map_err(|e| corrupt("subscription events", e))?,
        created_at: parse_ts(row.col("created_at")?)?,
        disabled_at: row
            .col::<Option<&str>>("disabled_at")?
            .map(parse_ts)
            .transpose()?,
        disabled_reason: row.col("disabled_reason")?,
        change_cursor: row.col("change_cursor")?,
        event_cursor: row.col("event_cursor")?,
    })
}

fn message_from(row: &AnyRow) -> Result<WebhookMessage, StoreError> {
    let opt_ts = |c: &str| -> Result<Option<DateTime<Utc>>, StoreError> {
        row.col::<Option<&str>>(c)?.map(parse_ts).transpose()
    };
    Ok(WebhookMessage {
        id: row.col("id")?,
        subscription: row.col("subscription")?,
        event_type: row.col("event_type")?,
        payload: row.col("payload")?,
        created_at: parse_ts(row.col("created_at")?)?,
        attempts: row.col("attempts")?,
        next_attempt_at: parse_ts(row.col("next_attempt_at")?)?,
        delivered_at: opt_ts("delivered_at")?,
        failed_at: opt_ts("failed_at")?,
        last_status: row.col("last_status")?,
        last_error: row.col("last_error")?,
    })
}

#[async_trait]
impl Webhooks for SqlStore {
    async fn add_subscription(&self, new: NewSubscription) -> Result<Subscription, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let changes: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM person_changes")
            .fetch_one(&mut *tx)
            .await?;
        let events: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM operational_events")
            .fetch_one(&mut *tx)
            .await?;
        let row = sqlx::query(
            "INSERT INTO webhook_subscriptions (client, url, secret, events, created_at, change_cursor, event_cursor)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
        )
        .bind(&new.client)
        .bind(&new.url)
        .bind(&new.secret)
        .bind(json!(new.events).to_string())
        .bind(ts(now()))
        .bind(changes.unwrap_or(0))
        .bind(events.unwrap_or(0))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        subscription_from(&row)
    }

    async fn subscriptions(&self) -> Result<Vec<Subscription>, StoreError> {
        sqlx::query("SELECT * FROM webhook_subscriptions ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(subscription_from)
            .collect()
    }

    async fn disable_subscription(&self, id: i64, reason: &str) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let n = sqlx::query(
            "UPDATE webhook_subscriptions SET disabled_at = $1, disabled_reason = $2
             WHERE id = $3 AND disabled_at IS NULL",
        )
        .bind(ts(now()))
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn fill_outbox(
        &self,
        subscription: i64,
        from: (i64, i64),
        to: (i64, i64),
        messages: &[NewMessage],
    ) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let moved = sqlx::query(
            "UPDATE webhook_subscriptions SET change_cursor = $1, event_cursor = $2
             WHERE id = $3 AND change_cursor = $4 AND event_cursor = $5",
        )
        .bind(to.0)
        .bind(to.1)
        .bind(subscription)
        .bind(from.0)
        .bind(from.1)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        let at = ts(now());
        for m in messages {
            sqlx::query(
                "INSERT INTO webhook_messages (id, subscription, event_type, payload, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&m.id)
            .bind(subscription)
            .bind(&m.event_type)
            .bind(&m.payload)
            .bind(&at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn due_messages(
        &self,
        at: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<WebhookMessage>, StoreError> {
        sqlx::query(
            "SELECT m.* FROM webhook_messages m JOIN webhook_subscriptions s ON s.id = m.subscription
             WHERE m.delivered_at IS NULL AND m.failed_at IS NULL AND s.disabled_at IS NULL
               AND m.next_attempt_at <= $1
             ORDER BY m.next_attempt_at, m.id LIMIT $2",
        )
        .bind(ts(at))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(message_from)
        .collect()
    }

    async fn claim_message(
        &self,
        message: &WebhookMessage,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let n = sqlx::query(
            "UPDATE webhook_messages SET next_attempt_at = $1
             WHERE id = $2 AND next_attempt_at = $3 AND delivered_at IS NULL AND failed_at IS NULL",
        )
        .bind(ts(until))
        .bind(&message.id)
        .bind(ts(message.next_attempt_at))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn record_delivery(
        &self,
        attempt: &DeliveryAttempt,
        outcome: &DeliveryOutcome,
    ) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (message, at, host, status, error, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&attempt.message)
        .bind(ts(attempt.at))
        .bind(&attempt.host)
        .bind(attempt.status)
        .bind(&attempt.error)
        .bind(attempt.duration_ms)
        .execute(&mut *tx)
        .await?;
        let (delivered, failed, next) = match outcome {
            DeliveryOutcome::Delivered => (Some(ts(attempt.at)), None, ts(attempt.at)),
            DeliveryOutcome::Retry(next) => (None, None, ts(*next)),
            DeliveryOutcome::GaveUp => (None, Some(ts(attempt.at)), ts(attempt.at)),
        };
        sqlx::query(
            "UPDATE webhook_messages SET attempts = attempts + 1, delivered_at = $1, failed_at = $2,
                    next_attempt_at = $3, last_status = $4, last_error = $5
             WHERE id = $6 AND delivered_at IS NULL",
        )
        .bind(delivered)
        .bind(failed)
        .bind(next)
        .bind(attempt.status)
        .bind(&attempt.error)
        .bind(&attempt.message)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn messages(
        &self,
        subscription: i64,
        limit: u32,
    ) -> Result<Vec<WebhookMessage>, StoreError> {
        sqlx::query(
            "SELECT * FROM webhook_messages WHERE subscription = $1
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(subscription)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(message_from)
        .collect()
    }

    async fn attempts(&self, message: &str) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let rows = sqlx::query("SELECT * FROM webhook_attempts WHERE message = $1 ORDER BY id")
            .bind(message)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryAttempt {
                    message: r.col("message")?,
                    at: parse_ts(r.col("at")?)?,
                    host: r.col("host")?,
                    status: r.col("status")?,
                    error: r.col("error")?,
                    duration_ms: r.col("duration_ms")?,
                })
            })
            .collect()
    }

    async fn record_event(
        &self,
        key: &str,
        event_type: &str,
        payload: &Value,
    ) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.write_tx().await?;
        let n = sqlx::query(
            "INSERT INTO operational_events (key, type, at, payload) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(event_type)
        .bind(ts(now()))
        .bind(payload.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn events_after(
        &self,
        seq: i64,
        limit: u32,
    ) -> Result<Vec<OperationalEvent>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM operational_events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(OperationalEvent {
                    seq: r.col("seq")?,
                    key: r.col("key")?,
                    event_type: r.col("type")?,
                    at: parse_ts(r.col("at")?)?,
                    payload: serde_json::from_str(r.col::<&str>("payload")?)
                        .map_err(|e| corrupt("event payload", e))?,
                })
            })
            .collect()
    }
}
