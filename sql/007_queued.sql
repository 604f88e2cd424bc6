-- A job submitted with jobq-submit -Q or jobq-httpd -Q has a row from
-- the start, with the status queued, until a worker's news replaces it.

ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
	CHECK (status IN ('succeeded', 'failed', 'retrying', 'running',
	'queued'));
