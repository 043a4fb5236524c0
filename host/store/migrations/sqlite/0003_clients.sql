-- API clients: who may read, with which legal basis and for what purpose.
-- The secret is never stored, only its SHA-256 (secrets are 256 random
-- bits, so a slow hash adds nothing). Rows are never deleted: a revoked
-- client keeps its row so the access log still names it.
CREATE TABLE clients (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    auth          TEXT NOT NULL,          -- 'api-key' or 'bearer'
    secret_sha256 TEXT NOT NULL UNIQUE,
    basis         TEXT NOT NULL,
    purpose       TEXT NOT NULL,
    admin         INTEGER NOT NULL,
    rate_limit    INTEGER NOT NULL,       -- requests per second
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    revoked_at    TEXT,
    revoked_by    TEXT,
    revoked_reason TEXT
);

-- Search by birth date (+ name) over the merged records.
CREATE INDEX merged_birth_date ON merged(json_extract(record, '$.fields."birth.date".value'));
