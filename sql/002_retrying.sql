-- A job that failed and waits to be tried again has a row too, with
-- the status retrying, until a later attempt replaces it.

ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
	CHECK (status IN ('succeeded', 'failed', 'retrying'));
