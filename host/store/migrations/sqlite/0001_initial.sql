-- folkhub store, SQLite. The observation log is the source of truth;
-- everything else can be rebuilt from it.

CREATE TABLE persons (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at  TEXT NOT NULL
);

-- Every identifier a person has had, in any country. Old IDs keep resolving.
CREATE TABLE identifiers (
    value       TEXT PRIMARY KEY,
    scheme      TEXT NOT NULL,
    person_id   INTEGER NOT NULL REFERENCES persons(id),
    active      INTEGER NOT NULL,
    source      TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX identifiers_person ON identifiers(person_id);

-- Append-only: what a source said about a field, when. A NULL value is a
-- retraction (the source no longer has a value).
CREATE TABLE observations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id        INTEGER NOT NULL REFERENCES persons(id),
    path             TEXT NOT NULL,
    value            TEXT,
    labels           TEXT NOT NULL,
    source           TEXT NOT NULL,
    release          TEXT NOT NULL,
    upstream_version TEXT NOT NULL,
    effective_at     TEXT,
    retrieved_at     TEXT NOT NULL
);
CREATE INDEX observations_person ON observations(person_id, path);

-- Each source's latest statement per field: an index over the log.
CREATE TABLE current_observations (
    person_id        INTEGER NOT NULL REFERENCES persons(id),
    source           TEXT NOT NULL,
    path             TEXT NOT NULL,
    observation_id   INTEGER NOT NULL REFERENCES observations(id),
    value            TEXT NOT NULL,
    labels           TEXT NOT NULL,
    release          TEXT NOT NULL,
    upstream_version TEXT NOT NULL,
    effective_at     TEXT,
    retrieved_at     TEXT NOT NULL,
    PRIMARY KEY (person_id, source, path)
);

-- When each source last confirmed a person (for TTL caching).
CREATE TABLE source_refresh (
    person_id     INTEGER NOT NULL REFERENCES persons(id),
    source        TEXT NOT NULL,
    retrieved_at  TEXT NOT NULL,
    PRIMARY KEY (person_id, source)
);

CREATE TABLE merged (
    person_id   INTEGER PRIMARY KEY REFERENCES persons(id),
    record      TEXT NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);

-- History of merged records: what changed, from what to what, why.
CREATE TABLE person_changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id   INTEGER NOT NULL REFERENCES persons(id),
    changed_at  TEXT NOT NULL,
    version     INTEGER NOT NULL,
    diff        TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX person_changes_person ON person_changes(person_id, seq);

-- Which release of each connector is active; survives restarts.
CREATE TABLE installations (
    connector        TEXT PRIMARY KEY,
    version          TEXT NOT NULL,
    digest           TEXT NOT NULL,
    contract         TEXT NOT NULL,
    pinned           INTEGER NOT NULL DEFAULT 0,
    installed_at     TEXT NOT NULL,
    installed_by     TEXT NOT NULL
);

CREATE TABLE installation_audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    connector       TEXT NOT NULL,
    at              TEXT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    version_before  TEXT,
    digest_before   TEXT,
    version_after   TEXT,
    digest_after    TEXT,
    reason          TEXT NOT NULL
);

-- Change-feed positions; advanced in the same transaction as the data.
CREATE TABLE cursors (
    connector   TEXT PRIMARY KEY,
    cursor      TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE job_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job          TEXT NOT NULL,
    connector    TEXT,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    status       TEXT NOT NULL,
    counts       TEXT NOT NULL,
    errors       TEXT NOT NULL
);
