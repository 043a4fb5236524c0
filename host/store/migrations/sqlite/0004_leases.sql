-- Several hosts on one database (PostgreSQL; on SQLite the same tables
-- keep one host's runs in order).
--
-- Leases: which host holds a piece of work until when. A job's run is
-- `job:NAME`; a host renews its lease while it works and a lease that is
-- not renewed expires, so another host takes over from what was committed.
CREATE TABLE leases (
    name         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    acquired_at  TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);

-- A full refresh's persons, in batches that any host claims: a batch is
-- leased to one host, and its results are committed together with its
-- `done` mark, only while that host still holds it. A batch whose host
-- died is claimed again once its lease expired.
CREATE TABLE work_items (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       INTEGER NOT NULL REFERENCES job_runs(id),
    connector    TEXT NOT NULL,
    ids          TEXT NOT NULL,          -- JSON array of IDs
    state        TEXT NOT NULL,          -- pending | leased | done
    holder       TEXT,
    lease_until  TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    done_at      TEXT,
    counts       TEXT                    -- JSON counts of the batch
);
CREATE INDEX work_items_state ON work_items(state, id);
CREATE INDEX work_items_run ON work_items(run_id);

-- The log book of change-feed pages: one row per page applied, committed
-- with the page and its cursor. A page is applied only from the cursor it
-- was read at, so two hosts never apply one page twice.
CREATE TABLE feed_pages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    connector    TEXT NOT NULL,
    cursor_from  TEXT NOT NULL,          -- '' at the feed's start
    cursor_to    TEXT NOT NULL,
    host         TEXT NOT NULL,
    run_id       INTEGER,
    persons      INTEGER NOT NULL,
    at           TEXT NOT NULL
);
CREATE INDEX feed_pages_connector ON feed_pages(connector, id);

-- Which host ran a job.
ALTER TABLE job_runs ADD COLUMN host TEXT;
