-- Secrets the servers of one store share (see SQLite's version 5), and the
-- tamper-evident access log (SQLite's access-log version 2):
-- 1. `hash`: the SHA-256 chain over the entries, written by folkhub;
--    `folkhub audit verify` recomputes it.
-- 2. `criteria`: a search's own entry (person_id 0).
-- 3. No insert may replace a row: `INSERT ... ON CONFLICT DO UPDATE` fires
--    the BEFORE UPDATE trigger of version 3 and is refused; TRUNCATE of the
--    field sets is refused as the log's is; every entry must carry its seq
--    and hash.
CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

ALTER TABLE access_log ADD COLUMN criteria TEXT;
ALTER TABLE access_log ADD COLUMN hash TEXT;

CREATE FUNCTION access_log_hashed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.hash IS NULL THEN
        RAISE EXCEPTION 'an access-log entry needs its seq and chain hash';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER access_log_hashed BEFORE INSERT ON access_log
    FOR EACH ROW EXECUTE FUNCTION access_log_hashed();
CREATE TRIGGER access_field_sets_no_truncate BEFORE TRUNCATE ON access_field_sets
    FOR EACH STATEMENT EXECUTE FUNCTION access_log_append_only();

DROP VIEW access_log_in CASCADE;
DROP FUNCTION access_log_in_insert();
CREATE VIEW access_log_in AS
    SELECT a.seq, a.at, a.client, a.basis, a.purpose, a.person_id, a.endpoint, f.fields,
           a.criteria, a.hash
    FROM access_log a JOIN access_field_sets f ON f.id = a.field_set;
CREATE FUNCTION access_log_in_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO access_field_sets (fields) VALUES (NEW.fields) ON CONFLICT (fields) DO NOTHING;
    INSERT INTO access_log (seq, at, client, basis, purpose, person_id, endpoint, field_set,
                            criteria, hash)
    VALUES (NEW.seq, NEW.at, NEW.client, NEW.basis, NEW.purpose, NEW.person_id, NEW.endpoint,
            (SELECT id FROM access_field_sets WHERE fields = NEW.fields), NEW.criteria, NEW.hash);
    RETURN NEW;
END;
$$;
CREATE TRIGGER access_log_in_insert INSTEAD OF INSERT ON access_log_in
    FOR EACH ROW EXECUTE FUNCTION access_log_in_insert();

-- A client's quota of persons returned per minute (issue 16: a request
-- limit alone let a client of 5 requests/s read 50,000 changes a second).
ALTER TABLE clients ADD COLUMN persons_per_minute BIGINT NOT NULL DEFAULT 60000;
