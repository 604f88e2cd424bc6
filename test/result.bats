#!/usr/bin/env bats
# jobq-result: rows as JSON lines, waiting, and exit statuses.

load helpers

A=0a0a0a0a-0000-4000-8000-00000000000a
B=0b0b0b0b-0000-4000-8000-00000000000b

# row ID STATUS: insert a row as jobq-store would have.
row() {
	sql "INSERT INTO jobs (id, type, status, result, error, attempts,
	    worker, submitted_at, started_at, finished_at, traceparent)
	    VALUES ('$1', 't', '$2', '{\"k\": \"v/w\"}', NULL, 1, 'h:1',
	    '2026-01-01 00:00:00.000001+00', '2026-01-01 00:00:01+00',
	    '2026-01-01 00:00:02+00',
	    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01')"
}

@test "jobq-result: prints a stored row as one JSON line" {
	migrate
	row "$A" succeeded
	run jobq-result "$A"
	assert_success
	assert_output --regexp "^\{\"id\":\"$A\",\"type\":\"t\",\"status\":\"succeeded\",\"result\":\{\"k\":\"v/w\"\},\"error\":null,\"attempts\":1,\"worker\":\"h:1\",\"submitted_at\":\"2026-01-01T00:00:00.000001Z\",\"started_at\":\"2026-01-01T00:00:01.000000Z\",\"finished_at\":\"2026-01-01T00:00:02.000000Z\",\"stored_at\":\"[0-9-]+T[0-9:]+\.[0-9]{6}Z\",\"traceparent\":\"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\",\"dead_queue\":null\}$"
}

@test "jobq-result: rows come in the order of the arguments" {
	migrate
	row "$A" succeeded
	row "$B" succeeded
	run jobq-result "$B" "$A" "$B"
	assert_success
	assert_line --index 0 --partial "\"id\":\"$B\""
	assert_line --index 1 --partial "\"id\":\"$A\""
	assert_line --index 2 --partial "\"id\":\"$B\""
}

@test "jobq-result: an id in capitals is the same job" {
	migrate
	row "$A" succeeded
	run jobq-result "${A^^}"
	assert_success
	assert_output --partial "\"id\":\"$A\""
}

@test "jobq-result: a failed job exits 1" {
	migrate
	row "$A" succeeded
	row "$B" failed
	run jobq-result "$A" "$B"
	assert_failure 1
	assert_equal "${#lines[@]}" 2
}

@test "jobq-result: a job with no row exits 75 and says so" {
	migrate
	row "$A" failed
	run jobq-result "$A" "$B"
	assert_failure 75
	assert_line --index 0 --partial "\"id\":\"$A\""
	assert_line --index 1 "jobq-result: $B: no result stored"
}

@test "jobq-result: a malformed id exits 65 before printing anything" {
	migrate
	row "$A" succeeded
	run jobq-result "$A" not-a-uuid
	assert_failure 65
	assert_output 'jobq-result: not-a-uuid: not a job id (a UUID)'
}

@test "jobq-result: -w waits until the job is stored" {
	migrate
	jobq-result -w "$A" >"$JOBS/out" 3>&- &
	waiter=$!
	sleep 0.3
	kill -0 "$waiter"
	row "$A" succeeded
	sql "NOTIFY jobq_stored"
	wait "$waiter"
	run cat "$JOBS/out"
	assert_output --partial "\"id\":\"$A\""
}

@test "jobq-result: -w wakes only for notifications, not by polling" {
	migrate
	jobq-result -w "$A" >"$JOBS/out" 3>&- &
	waiter=$!
	sleep 0.3
	row "$A" succeeded
	sleep 1
	# Without a notification the row is not seen yet.
	kill -0 "$waiter"
	sql "NOTIFY jobq_stored"
	wait "$waiter"
}

@test "jobq-result: -t gives up after the timeout with 75" {
	migrate
	row "$A" succeeded
	run jobq-result -t 1 "$A" "$B"
	assert_failure 75
	assert_line --index 0 --partial "\"id\":\"$A\""
	assert_line --index 1 "jobq-result: $B: no result stored"
}

@test "jobq-result: -d chooses the database" {
	migrate
	row "$A" succeeded
	run env PGDATABASE=postgres jobq-result -d "dbname=$PGDATABASE" "$A"
	assert_success
}

@test "jobq-result: an unreachable database exits 69" {
	run env PGPORT="$(dead_port)" jobq-result "$A"
	assert_failure 69
	assert_output --partial 'jobq-result: database: '
}

@test "jobq-result: usage errors exit 64" {
	run jobq-result
	assert_failure 64
	assert_output --partial 'usage: jobq-result'
	run jobq-result -t 0 "$A"
	assert_failure 64
	run jobq-result -t x "$A"
	assert_failure 64
	run jobq-result -V
	assert_success
	assert_output 'jobq-result 0.1.0'
}
