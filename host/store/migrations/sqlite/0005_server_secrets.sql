-- Secrets the servers of one store share, created on first use by
-- folkhub (never by SQL, so they come from the operating system's random
-- source): `cursor` keys the MAC of the API's paging cursors, so every host
-- accepts the cursors of the others and nobody can forge one.
CREATE TABLE server_secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- A client's quota of persons returned per minute (issue 16: a request
-- limit alone let a client of 5 requests/s read 50,000 changes a second).
ALTER TABLE clients ADD COLUMN persons_per_minute BIGINT NOT NULL DEFAULT 60000;
