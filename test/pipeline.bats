#!/usr/bin/env bats
# The whole pipeline, composed in shell as a user would.

load helpers

@test "pipeline: 1000 jobs are each stored exactly once with their result" {
	migrate
	start store jobq-store
	start work jobq-work -j 8 -D "$ROOT/handlers"
	seq 1000 | sed 's/.*/{"type":"echo","payload":{"n":&}}/' |
	    jobq-submit >"$JOBS/ids"
	assert_equal "$(wc -l <"$JOBS/ids")" 1000
	assert_equal "$(sort -u "$JOBS/ids" | wc -l)" 1000

	run jobq-result -t 120 $(cat "$JOBS/ids")
	assert_success
	printf '%s\n' "$output" >"$JOBS/rows"

	assert_equal "$(wc -l <"$JOBS/rows")" 1000
	assert_equal "$(sql "SELECT count(*), count(DISTINCT id) FROM jobs")" \
	    "1000|1000"
	# Every row holds the payload of the job with that id, in order.
	cut -c1-48 "$JOBS/rows" | sed 's/{"id":"//; s/".*//' >"$JOBS/row_ids"
	run diff "$JOBS/ids" "$JOBS/row_ids"
	assert_success
	assert_equal "$(sql "SELECT count(*) FROM jobs
	    WHERE status = 'succeeded' AND result ? 'n'
	    AND (result->>'n')::int BETWEEN 1 AND 1000")" 1000
	assert_equal "$(sql "SELECT count(DISTINCT result->>'n') FROM jobs")" \
	    1000
	eventually has_depth "$JOBQ_JOB_QUEUE" 0
	eventually has_depth "$JOBQ_RESULT_QUEUE" 0
}

@test "pipeline: a job submitted twice with one id is stored once" {
	migrate
	start store jobq-store
	start work jobq-work -j 2 -D "$ROOT/handlers"
	id=6f1c1f38-5a43-4e0b-9d6e-0c4b7c1d2e3f
	doc="{\"id\":\"$id\",\"type\":\"echo\",\"payload\":\"once\"}"
	printf '%s\n%s\n' "$doc" "$doc" | jobq-submit >"$JOBS/ids"
	assert_equal "$(cat "$JOBS/ids")" "$id
$id"
	run jobq-result -t 30 "$id"
	assert_success
	assert_output --partial '"result":"once"'
	eventually has_depth "$JOBQ_RESULT_QUEUE" 0
	eventually has_depth "$JOBQ_JOB_QUEUE" 0
	assert_equal "$(sql "SELECT count(*) FROM jobs")" 1
}

@test "pipeline: results of the example handlers" {
	migrate
	start store jobq-store
	start work jobq-work -j 4 -D "$ROOT/handlers"
	jobq-submit >"$JOBS/ids" <<-'EOF2'
	{"type":"echo","payload":{"greeting":"hello/world"}}
	{"type":"sha256","payload":"abc"}
	{"type":"sleep","payload":0.1}
	{"type":"fail","payload":"boom"}
	EOF2
	run jobq-result -t 30 $(cat "$JOBS/ids")
	assert_equal "$status" 1
	assert_line --index 0 --partial \
	    '"status":"succeeded","result":{"greeting":"hello/world"}'
	sum=$(printf '"abc"' | sha256sum | cut -d' ' -f1)
	assert_line --index 1 --partial "\"result\":\"$sum\""
	assert_line --index 2 --partial '"status":"succeeded","result":0.1'
	assert_line --index 3 --partial '"status":"failed","result":null'
	assert_line --index 3 --partial '"error":"exit status 65: failing on purpose: \"boom\""'
}
