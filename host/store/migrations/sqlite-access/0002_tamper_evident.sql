-- A tamper-evident access log (issue 16).
--
-- 1. Each entry carries `hash`, the SHA-256 (hex) of the previous entry's
--    hash and this entry's content (see `folkhub_store::audit`), written by
--    folkhub as it appends. `folkhub audit verify` recomputes the chain and
--    names the first entry that does not match; entries written before this
--    migration have no hash and are reported as outside the chain.
-- 2. A search is logged as one entry of its own: `criteria` holds what was
--    searched for (JSON), `person_id` is 0 (no person), and each person
--    it returned has an entry as any read does.
-- 3. No insert may replace a row. SQLite's `INSERT OR REPLACE` deletes the
--    row in the way without firing delete triggers (unless recursive
--    triggers are on), so the append-only triggers of version 1 never saw
--    it: a BEFORE INSERT trigger refuses any row whose key (or field list)
--    is already there, whatever the conflict clause.
ALTER TABLE access_log ADD COLUMN criteria TEXT;
ALTER TABLE access_log ADD COLUMN hash TEXT;

CREATE TRIGGER access_log_no_replace BEFORE INSERT ON access_log
WHEN EXISTS (SELECT 1 FROM access_log WHERE seq = NEW.seq)
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only: an entry with this seq exists');
END;
CREATE TRIGGER access_log_hashed BEFORE INSERT ON access_log
WHEN NEW.hash IS NULL OR NEW.seq IS NULL
BEGIN
    SELECT RAISE(ABORT, 'an access-log entry needs its seq and chain hash');
END;
CREATE TRIGGER access_field_sets_no_replace BEFORE INSERT ON access_field_sets
WHEN EXISTS (SELECT 1 FROM access_field_sets WHERE id = NEW.id OR fields = NEW.fields)
BEGIN
    SELECT RAISE(ABORT, 'the access log is append-only: this field set exists');
END;

DROP TRIGGER access_log_in_insert;
DROP VIEW access_log_in;
CREATE VIEW access_log_in AS
    SELECT a.seq, a.at, a.client, a.basis, a.purpose, a.person_id, a.endpoint, f.fields,
           a.criteria, a.hash
    FROM access_log a JOIN access_field_sets f ON f.id = a.field_set;
CREATE TRIGGER access_log_in_insert INSTEAD OF INSERT ON access_log_in
BEGIN
    INSERT INTO access_field_sets (fields)
        SELECT NEW.fields WHERE NOT EXISTS (SELECT 1 FROM access_field_sets WHERE fields = NEW.fields);
    INSERT INTO access_log (seq, at, client, basis, purpose, person_id, endpoint, field_set,
                            criteria, hash)
    VALUES (NEW.seq, NEW.at, NEW.client, NEW.basis, NEW.purpose, NEW.person_id, NEW.endpoint,
            (SELECT id FROM access_field_sets WHERE fields = NEW.fields), NEW.criteria, NEW.hash);
END;
