#!/usr/bin/env bats
# The life of a job in the jobs table: running, then its end.

load helpers

# A handler that says it started, then waits for the file go.
gated() {
	handler gated "cat >/dev/null; touch $JOBS/started
while [ ! -e $JOBS/go ]; do sleep 0.1; done
echo '\"done\"'"
}

# send_get ID: GET /job/ID of jobq-httpd.
send_get() {
	printf 'GET /job/%s HTTP/1.1\r\nConnection: close\r\n\r\n' "$1" |
	    jobq-httpd 2>"$JOBS/httpd.log"
}

# status_of ID STATUS: whether the job's row has that status.
status_of() {
	[ "$(sql "SELECT status FROM jobs WHERE id = '$1'")" = "$2" ]
}

@test "lifecycle: a job that runs a while has a running row until it ends" {
	migrate
	gated
	start store jobq-store
	start work jobq-work -j 1 -s 200 "$JOBS/h/gated"
	echo '{"type":"x"}' | submit
	id=$(cat "$JOBS/ids")
	eventually status_of "$id" running
	run sql "SELECT attempts, worker ~ ':[0-9]+$', started_at IS NOT NULL,
	    finished_at IS NULL, result IS NULL FROM jobs"
	assert_output '1|t|t|t|t'
	run jobq-result "$id"
	assert_failure 75
	assert_output --partial "\"id\":\"$id\",\"type\":\"x\",\"status\":\"running\""
	assert_output --partial '"finished_at":null'
	run send_get "$id"
	assert_line --index 0 $'HTTP/1.1 200 OK\r'
	assert_output --partial '"status":"running"'
	started=$(sql "SELECT started_at FROM jobs")
	touch "$JOBS/go"
	run jobq-result -w -t 30 "$id"
	assert_success
	assert_output --partial '"status":"succeeded","result":"done"'
	# The end keeps the start the running row had.
	assert_equal "$(sql "SELECT started_at FROM jobs")" "$started"
}

@test "lifecycle: a job that ends within -s is never said to run" {
	start work jobq-work -j 1 -s 60000 true
	echo '{"type":"x"}' | submit
	eventually has_finals 1
	stop work
	collect
	assert_equal "$(wc -l <"$JOBS/results.all")" 1
	run grep -c '"status":"succeeded"' "$JOBS/results.all"
	assert_output 1
}

@test "lifecycle: -s 0 says at once that each job runs, before its end" {
	start work jobq-work -j 1 -s 0 true
	echo '{"type":"x"}' | submit
	id=$(cat "$JOBS/ids")
	eventually has_finals 1
	run cat "$JOBS/results.all"
	assert_equal "${#lines[@]}" 2
	assert_line --index 0 --regexp "^\{\"v\":1,\"id\":\"$id\",\"type\":\"x\",\"status\":\"running\",\"result\":null,\"error\":null,\"attempts\":1,\"worker\":\"[^\"]+\",\"submitted_at\":\"[^\"]+\",\"started_at\":\"[^\"]+\",\"finished_at\":null,\"traceparent\":\"00-[0-9a-f-]+\"\}$"
	assert_line --index 1 --partial '"status":"succeeded"'
	# Both tell one start.
	s0=$(sed -n '1s/.*"started_at":"\([^"]*\)".*/\1/p' "$JOBS/results.all")
	s1=$(sed -n '2s/.*"started_at":"\([^"]*\)".*/\1/p' "$JOBS/results.all")
	assert_equal "$s0" "$s1"
}

@test "lifecycle: each attempt runs, waits out its retry, runs again" {
	migrate
	handler twice "cat >/dev/null
[ \"\$JOBQ_ATTEMPT\" -ge 2 ] || exit 75
touch $JOBS/started
while [ ! -e $JOBS/go ]; do sleep 0.1; done"
	start store jobq-store
	start work jobq-work -j 1 -s 0 -B 1 -J "$JOBS/h/twice"
	echo '{"type":"x"}' | submit
	id=$(cat "$JOBS/ids")
	eventually test -e "$JOBS/started"
	eventually status_of "$id" running
	assert_equal "$(sql "SELECT attempts FROM jobs")" 2
	touch "$JOBS/go"
	eventually status_of "$id" succeeded
}

@test "lifecycle: -s must be a number of milliseconds" {
	run jobq-work -s soon true
	assert_failure 64
	assert_line --index 0 --partial 'jobq-work: -s soon: not a number of milliseconds'
}

@test "lifecycle: with -Q, jobq-submit gives each job a queued row" {
	migrate
	start store jobq-store
	echo '{"type":"x"}' | TRACEPARENT=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 jobq-submit -Q >"$JOBS/ids"
	id=$(cat "$JOBS/ids")
	eventually status_of "$id" queued
	run sql "SELECT attempts, worker IS NULL, started_at IS NULL,
	    finished_at IS NULL, traceparent LIKE '00-4bf92f3577b34da6a3ce929d0e0e4736-%'
	    FROM jobs"
	assert_output '1|t|t|t|t'
	run jobq-result "$id"
	assert_failure 75
	assert_output --partial '"status":"queued"'
	start work jobq-work -j 1 true
	run jobq-result -w -t 30 "$id"
	assert_success
	assert_output --partial '"status":"succeeded"'
}

@test "lifecycle: with -Q, POST /job gives the job a queued row" {
	migrate
	start store jobq-store
	run sh -c "printf 'POST /job HTTP/1.1\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{\"type\":\"x\"}' | jobq-httpd -Q 2>/dev/null"
	assert_line --index 0 $'HTTP/1.1 202 Accepted\r'
	id=$(printf '%s\n' "$output" | sed -n 's/.*{"id":"\([^"]*\)"}.*/\1/p')
	eventually status_of "$id" queued
	run jobq-submit -Q -x
	assert_failure 64
}

@test "lifecycle: without -Q, a job has no row until it runs" {
	migrate
	start store jobq-store
	echo '{"type":"x"}' | submit
	qtool put "$JOBQ_RESULT_QUEUE" "$(printf '{"v":1,"id":"%s","type":"x","status":"queued","result":null,"error":null,"attempts":1,"worker":null,"submitted_at":"2026-01-01T00:00:00Z","started_at":null,"finished_at":null}' 3b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a09)"
	eventually status_of 3b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a09 queued
	assert_equal "$(sql "SELECT count(*) FROM jobs WHERE id = '$(cat "$JOBS/ids")'")" 0
	assert_equal "$(depth "$JOBQ_RESULT_QUEUE")" 0
}
