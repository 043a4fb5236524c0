-- Pushed changes: webhook subscriptions, the outbox of messages to
-- deliver (each with its idempotency id), every delivery attempt, and the
-- operational events admins subscribe to.
CREATE TABLE webhook_subscriptions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    client       TEXT NOT NULL,
    url          TEXT NOT NULL,
    secret       TEXT NOT NULL,          -- whsec_<base64>: signs every delivery
    events       TEXT NOT NULL,          -- JSON array of event types
    created_at   TEXT NOT NULL,
    disabled_at  TEXT,
    disabled_reason TEXT,
    change_cursor BIGINT NOT NULL,       -- person_changes.seq fed up to
    event_cursor  BIGINT NOT NULL        -- operational_events.seq fed up to
);

CREATE TABLE webhook_messages (
    id            TEXT PRIMARY KEY,      -- the webhook-id: the same on every retry
    subscription  BIGINT NOT NULL REFERENCES webhook_subscriptions(id),
    event_type    TEXT NOT NULL,
    payload       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    delivered_at  TEXT,
    failed_at     TEXT,                  -- given up (webhooks.give_up_after)
    last_status   INTEGER,
    last_error    TEXT
);
CREATE INDEX webhook_messages_due ON webhook_messages(delivered_at, failed_at, next_attempt_at);
CREATE INDEX webhook_messages_subscription ON webhook_messages(subscription, created_at);

CREATE TABLE webhook_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message     TEXT NOT NULL,
    at          TEXT NOT NULL,
    host        TEXT,
    status      INTEGER,
    error       TEXT,
    duration_ms BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_message ON webhook_attempts(message);

-- Operational events: upgrade deadlines near, a breaker opened, a budget
-- at 80 %, a failed run. `key` makes each one recorded once.
CREATE TABLE operational_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    key      TEXT NOT NULL UNIQUE,
    type     TEXT NOT NULL,
    at       TEXT NOT NULL,
    payload  TEXT NOT NULL
);
