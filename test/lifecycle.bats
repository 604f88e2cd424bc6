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
