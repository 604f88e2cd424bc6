-- The jobs table: one row per job, holding its latest state.

CREATE FUNCTION jobq_status_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT CASE status
		WHEN 'queued' THEN 0
		WHEN 'running' THEN 1
		WHEN 'retrying' THEN 2
		WHEN 'failed' THEN 3
		WHEN 'succeeded' THEN 4
	END
$$;

CREATE TABLE jobs (
	id		uuid PRIMARY KEY,
	type		text NOT NULL
			CHECK (type ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
	status		text NOT NULL
			CHECK (status IN ('succeeded', 'failed')),
	result		jsonb,
	error		text,
	attempts	integer NOT NULL CHECK (attempts >= 1),
	worker		text,
	submitted_at	timestamptz NOT NULL,
	started_at	timestamptz,
	finished_at	timestamptz,
	stored_at	timestamptz NOT NULL DEFAULT now()
);

-- Recent jobs, by status and over all statuses.
CREATE INDEX jobs_finished_at ON jobs (finished_at);
CREATE INDEX jobs_status_finished_at ON jobs (status, finished_at);
