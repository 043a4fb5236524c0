-- The release of the connector a run used: an install, upgrade or
-- rollback takes effect at the next run, and the run log shows which
-- release each run was made with.
ALTER TABLE job_runs ADD COLUMN connector_release TEXT;
