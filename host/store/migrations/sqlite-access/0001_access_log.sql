-- The access log, in a database file of its own beside the store
-- (`<name>-access.db`): every read of person data is committed here before
-- the answer leaves, and a file of its own has a write lock of its own, so
-- these commits never wait for a sync's transaction in the store.
-- Every read of person data: who, for what purpose, which person, which
-- fields, when. Append-only: the triggers refuse changes and deletions.
CREATE TABLE access_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    client     TEXT NOT NULL,
    basis      TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    person_id  INTEGER NOT NULL,
    endpoint   TEXT NOT NULL,
    fields     TEXT NOT NULL              -- JSON array of the paths returned
);
CREATE INDEX access_log_person ON access_log(person_id, seq);
CREATE INDEX access_log_client ON access_log(client, seq);

CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only');
END;
CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only');
END;

