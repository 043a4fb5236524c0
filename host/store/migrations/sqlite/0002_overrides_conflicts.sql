-- Manual overrides: an admin's value for a field of a person, with a
-- reason and an optional expiry. They win over every source until they end
-- (removed, or expired when the expiry is applied). Rows are never
-- deleted: the table is their audit trail.
CREATE TABLE overrides (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id     INTEGER NOT NULL REFERENCES persons(id),
    path          TEXT NOT NULL,
    value         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    ended_at      TEXT,
    ended_by      TEXT,
    ended_reason  TEXT
);
CREATE INDEX overrides_person ON overrides(person_id);
CREATE INDEX overrides_open ON overrides(ended_at, expires_at);

-- Open conflicts: fields where sources of equal rank disagree. Kept in
-- step with the merged record (rebuilt with it).
CREATE TABLE conflicts (
    person_id   INTEGER NOT NULL REFERENCES persons(id),
    path        TEXT NOT NULL,
    candidates  TEXT NOT NULL,
    opened_at   TEXT NOT NULL,
    PRIMARY KEY (person_id, path)
);

-- Identity: when the register that issues a kind of ID says that IDs we
-- hold for two persons belong to one person (a D-number replaced by a
-- fødselsnummer, samordningsnummer → personnummer, a corrected HETU), the
-- two are merged into the older one. What moved is recorded so an admin
-- can undo a wrong link; an undone pair is never merged again on its own.
ALTER TABLE persons ADD COLUMN merged_into INTEGER REFERENCES persons(id);
CREATE TABLE identity_merges (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    survivor      INTEGER NOT NULL REFERENCES persons(id),
    merged        INTEGER NOT NULL REFERENCES persons(id),
    source        TEXT NOT NULL,
    reason        TEXT NOT NULL,
    at            TEXT NOT NULL,
    moved_ids     TEXT NOT NULL,
    moved_observations TEXT NOT NULL,
    moved_changes TEXT NOT NULL,
    undone_at     TEXT,
    undone_by     TEXT,
    undone_reason TEXT
);

-- Persons reported without any ID (a relative known by name) that match
-- more than one stored person on name and birth date: created as a new
-- person and listed here for an admin to review, never merged on a guess.
CREATE TABLE identity_reviews (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id   INTEGER NOT NULL REFERENCES persons(id),
    candidates  TEXT NOT NULL,
    source      TEXT NOT NULL,
    at          TEXT NOT NULL
);

-- The cost ledger: register calls per run, with the price they were
-- counted at (manifest or operator config).
CREATE TABLE cost_ledger (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             TEXT NOT NULL,
    month          TEXT NOT NULL,
    connector      TEXT NOT NULL,
    release        TEXT NOT NULL,
    job            TEXT NOT NULL,
    run_id         INTEGER,
    calls          INTEGER NOT NULL,
    cost_per_call  REAL NOT NULL,
    cost           REAL NOT NULL
);
CREATE INDEX cost_ledger_month ON cost_ledger(month, connector);

-- Circuit breaker per connector: consecutive failed runs; open until a
-- time after repeated failures.
CREATE TABLE breakers (
    connector      TEXT PRIMARY KEY,
    failures       INTEGER NOT NULL,
    opened_at      TEXT,
    open_until     TEXT,
    last_error     TEXT
);
