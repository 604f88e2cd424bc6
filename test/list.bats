#!/usr/bin/env bats
# jobq-result -l lists rows, and -X removes the old final ones.

load helpers

# put ID STATUS TYPE AGE [ENDED]: a row submitted AGE seconds ago, that
# ended ENDED seconds ago (AGE by default), or has not ended.
put() {
	local end="now() - interval '${5:-$4} seconds'"
	case $2 in
	running|retrying) end=NULL ;;
	esac
	sql "INSERT INTO jobs (id, type, status, attempts, submitted_at,
	    finished_at) VALUES ('$1', '$3', '$2', 1,
	    now() - interval '$4 seconds', $end)"
}

id() {
	printf '00000000-0000-4000-8000-%012d\n' "$1"
}

# The ids that a listing printed, one per line.
ids() {
	printf '%s\n' "$output" | sed 's/^{"id":"\([^"]*\)".*/\1/'
}

setup() {
	_setup_world
	migrate
	put "$(id 1)" succeeded a 400
	put "$(id 2)" failed b 300
	put "$(id 3)" running a 200
	put "$(id 4)" retrying b 100
	put "$(id 5)" succeeded a 10
}

@test "list: -l prints rows as JSON lines, the newest first" {
	run jobq-result -l
	assert_success
	assert_equal "$(ids)" "$(for i in 5 4 3 2 1; do id "$i"; done)"
	assert_line --index 0 --regexp "^\{\"id\":\"$(id 5)\",\"type\":\"a\",\"status\":\"succeeded\",.*\"traceparent\":null,\"dead_queue\":null\}$"
}

@test "list: -k, -y and -N choose the rows, -M how many" {
	run jobq-result -l -k succeeded
	assert_equal "$(ids)" "$(id 5; id 1)"
	run jobq-result -l -y b
	assert_equal "$(ids)" "$(id 4; id 2)"
	run jobq-result -l -N 250
	assert_equal "$(ids)" "$(id 5; id 4; id 3)"
	run jobq-result -l -y a -k running -N 250
	assert_equal "$(ids)" "$(id 3)"
	run jobq-result -l -M 2
	assert_equal "$(ids)" "$(id 5; id 4)"
	run jobq-result -l -k queued
	assert_success
	assert_output ''
}

@test "list: -X removes the final rows that ended before, and counts them" {
	put "$(id 6)" running c 100000
	put "$(id 7)" failed c 100000 50
	run jobq-result -X 250
	assert_success
	assert_output 2
	assert_equal "$(sql "SELECT count(*) FROM jobs WHERE id IN
	    ('$(id 1)', '$(id 2)')")" 0
	assert_equal "$(sql "SELECT count(*) FROM jobs")" 5
	run jobq-result -X 250
	assert_output 0
}

@test "list: -X works through many rows in batches" {
	sql "INSERT INTO jobs (id, type, status, attempts, submitted_at,
	    finished_at) SELECT gen_random_uuid(), 'old', 'succeeded', 1,
	    now() - interval '2 days', now() - interval '2 days'
	    FROM generate_series(1, 2500)"
	run jobq-result -X 86400
	assert_success
	assert_output 2500
	assert_equal "$(sql "SELECT count(*) FROM jobs")" 5
}

@test "list: bad filters and mixed modes are usage errors" {
	run jobq-result -l -k done
	assert_failure 64
	assert_line --index 0 'jobq-result: -k done: not a status: queued, running, retrying, failed or succeeded'
	run jobq-result -l -y 'no/such'
	assert_failure 64
	assert_line --index 0 'jobq-result: -y no/such: not a job type'
	run jobq-result -l -M 0
	assert_failure 64
	run jobq-result -l "$(id 1)"
	assert_failure 64
	assert_line --index 0 'jobq-result: give ids, -l or -X, one of them'
	run jobq-result -k failed "$(id 1)"
	assert_failure 64
	assert_line --index 0 'jobq-result: -k, -M, -N and -y go with -l'
	run jobq-result -l -w
	assert_failure 64
	assert_line --index 0 'jobq-result: -w and -t go with ids'
	run jobq-result -X 0
	assert_failure 64
}

@test "list: an unreachable database exits 69" {
	run env PGPORT="$(dead_port)" jobq-result -l
	assert_failure 69
	run env PGPORT="$(dead_port)" jobq-result -X 60
	assert_failure 69
}
