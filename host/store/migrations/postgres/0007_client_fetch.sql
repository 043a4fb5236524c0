-- Clients that may ask the registers about a person the store does not
-- hold (fetch on miss) or refresh one now.
ALTER TABLE clients ADD COLUMN may_fetch BOOLEAN NOT NULL DEFAULT FALSE;
