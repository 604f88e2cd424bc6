-- The W3C trace context of each job, as its traceparent.

ALTER TABLE jobs ADD COLUMN traceparent text
	CHECK (traceparent ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$');
