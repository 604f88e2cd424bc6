-- The newest jobs first, for jobq-result -l.

CREATE INDEX jobs_submitted_at ON jobs (submitted_at);
