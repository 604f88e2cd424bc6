-- A job that a worker has started has a row too, with the status
-- running, until the result of that attempt replaces it.

ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
	CHECK (status IN ('succeeded', 'failed', 'retrying', 'running'));
