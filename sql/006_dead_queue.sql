-- The dead-letter queue that a job which failed for good went to.

ALTER TABLE jobs ADD COLUMN dead_queue text;
