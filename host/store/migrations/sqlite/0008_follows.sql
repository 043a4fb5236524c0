-- Follow sets: the persons each client, or a population several clients
-- share, follows. In `follow.scope = "followed"` the sync stores and
-- refreshes only followed persons, and persons nobody follows any more
-- are deleted after `follow.retention`.
--
-- A set is named `client:NAME`, `population:NAME` or `folkhub:guardians`
-- (the guardians of followed minors, kept by the sync). A member is an ID
-- as the client gave it (normalised); it need not be stored yet.
CREATE TABLE follows (
    set_name    TEXT NOT NULL,
    value       TEXT NOT NULL,
    scheme      TEXT NOT NULL,
    added_at    TEXT NOT NULL,
    added_by    TEXT NOT NULL,
    PRIMARY KEY (set_name, value)
);
CREATE INDEX follows_value ON follows(value);

-- Populations several clients share, and who may use each.
CREATE TABLE populations (
    name        TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL
);
CREATE TABLE population_clients (
    population  TEXT NOT NULL REFERENCES populations(name),
    client      TEXT NOT NULL,
    PRIMARY KEY (population, client)
);

-- Stored persons nobody follows, since when (the retention sweep notes
-- them; following one again removes the note).
CREATE TABLE unfollowed (
    person_id   INTEGER PRIMARY KEY REFERENCES persons(id),
    since       TEXT NOT NULL
);

-- Persons deleted because nobody followed them: the audit trail. IDs are
-- kept only as keyed digests (server secret `deletions`), so an auditor can
-- check whether a given ID was deleted without the store keeping it.
CREATE TABLE person_deletions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            TEXT NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    person_key    INTEGER NOT NULL,
    unfollowed_since TEXT NOT NULL,
    id_digests    TEXT NOT NULL,
    observations  INTEGER NOT NULL,
    changes       INTEGER NOT NULL
);
