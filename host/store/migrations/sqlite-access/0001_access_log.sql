-- The access log, in a database file of its own beside the store
-- (`<name>-access.db`): every read of person data is committed here before
-- the answer leaves, and a file of its own has a write lock of its own, so
-- these commits never wait for a sync's transaction in the store.
--
-- Every read of person data: who, for what purpose, which person, which
-- fields, when. Append-only: the triggers refuse changes and deletions.
--
-- The list of fields returned is mostly the same for every read by one
-- basis, so each distinct list is stored once (`access_field_sets`) and
-- entries point at it: about a fifth of the bytes per entry.
CREATE TABLE access_field_sets (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    fields  TEXT NOT NULL UNIQUE          -- JSON array of field paths
);

CREATE TABLE access_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,
    client     TEXT NOT NULL,
    basis      TEXT NOT NULL,
    purpose    TEXT NOT NULL,
    person_id  INTEGER NOT NULL,
    endpoint   TEXT NOT NULL,
    field_set  INTEGER NOT NULL REFERENCES access_field_sets(id)
);
CREATE INDEX access_log_person ON access_log(person_id, seq);
CREATE INDEX access_log_client ON access_log(client, seq);

-- Writers insert here with the field list as text; the trigger files it.
CREATE VIEW access_log_in AS
    SELECT a.at, a.client, a.basis, a.purpose, a.person_id, a.endpoint, f.fields
    FROM access_log a JOIN access_field_sets f ON f.id = a.field_set;
CREATE TRIGGER access_log_in_insert INSTEAD OF INSERT ON access_log_in
BEGIN
    INSERT OR IGNORE INTO access_field_sets (fields) VALUES (NEW.fields);
    INSERT INTO access_log (at, client, basis, purpose, person_id, endpoint, field_set)
    VALUES (NEW.at, NEW.client, NEW.basis, NEW.purpose, NEW.person_id, NEW.endpoint,
            (SELECT id FROM access_field_sets WHERE fields = NEW.fields));
END;

CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only');
END;
CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only');
END;
CREATE TRIGGER access_field_sets_no_update BEFORE UPDATE ON access_field_sets
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only');
END;
CREATE TRIGGER access_field_sets_no_delete BEFORE DELETE ON access_field_sets
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only');
END;
