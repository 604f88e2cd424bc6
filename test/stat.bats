#!/usr/bin/env bats
# jobq-stat: the queues and the jobs table at a glance.

load helpers

# A table with rows of each status but queued, some stored long ago.
rows() {
	migrate
	sql "INSERT INTO jobs (id, type, status, attempts, submitted_at,
	    finished_at, stored_at) SELECT gen_random_uuid(), 't', s, 1,
	    now(), now(), now() - make_interval(secs => age)
	    FROM (VALUES ('succeeded', 5), ('succeeded', 10),
	    ('succeeded', 3600), ('failed', 20), ('running', 1),
	    ('retrying', 7200)) AS v(s, age)"
}

@test "stat: prints the queues and the jobs of each status" {
	rows
	printf '{"type":"x"}\n{"type":"x"}\n' | submit
	start store jobq-store
	eventually has_consumer "$JOBQ_RESULT_QUEUE"
	run jobq-stat
	assert_success
	assert_line --index 0 --regexp '^[0-9-]+T[0-9:.]+Z$'
	assert_line --regexp "^$JOBQ_JOB_QUEUE +2 +- +0\$"
	assert_line --regexp "^$JOBQ_RESULT_QUEUE +0 +- +1\$"
	assert_line --regexp "^$JOBQ_DEAD_QUEUE +0 +- +0\$"
	assert_line --regexp '^succeeded +3 +2 +0\.0$'
	assert_line --regexp '^failed +1 +1 +0\.0$'
	assert_line --regexp '^running +1 +1 +0\.0$'
	assert_line --regexp '^retrying +1 +0 +0\.0$'
	assert_line --regexp '^queued +0 +0 +0\.0$'
}

@test "stat: -F json prints one object with the same figures" {
	rows
	echo '{"type":"x"}' | submit
	run jobq-stat -F json
	assert_success
	assert_equal "${#lines[@]}" 1
	run jq -c '[.queues[0], .jobs.succeeded.jobs,
	    .jobs.succeeded.last_minute, .jobs.succeeded.per_second * 60,
	    .jobs.retrying, .broker_error, .database_error]' <<<"$output"
	assert_output "[{\"name\":\"$JOBQ_JOB_QUEUE\",\"ready\":1,\"unacked\":null,\"consumers\":0},3,2,2,{\"jobs\":1,\"last_minute\":0,\"per_second\":0},null,null]"
}

@test "stat: with seconds it looks again until stopped" {
	rows
	start stat jobq-stat -F json 1
	eventually sh -c "[ \$(wc -l <'$JOBS/stat.out') -ge 2 ]"
	echo '{"type":"x"}' | submit
	eventually sh -c "tail -n 1 '$JOBS/stat.out' | grep -q '\"ready\":1'"
	stop stat
	assert_equal "$(cat "$JOBS/stat.rc")" 0
	run jq -r .jobs.succeeded.jobs "$JOBS/stat.out"
	assert_line --index 0 3
}

@test "stat: a server that is away is said to be so, and exits 69" {
	rows
	run env PGPORT="$(dead_port)" jobq-stat
	assert_failure 69
	assert_line --regexp "^$JOBQ_JOB_QUEUE +0 +- +0\$"
	assert_line --regexp '^succeeded +- +- +-$'
	assert_line --partial 'database unavailable: database: '
	run env JOBQ_AMQP_URL="amqp://guest:secret@127.0.0.1:$(dead_port)/" \
	    jobq-stat -F json
	assert_failure 69
	assert_line --index 0 --partial '"queues":null,"broker_error":"broker amqp://guest:****@'
	assert_line --index 0 --partial '"jobs":{"queued":{"jobs":0'
	refute_output --partial secret
}

# unacked QUEUE N: whether jobq-stat, asking the management API, shows
# N messages of a queue held by consumers.
unacked() {
	jobq-stat -F json | jq -e --arg q "$1" --argjson n "$2" \
	    '.queues[] | select(.name == $q) | .unacked == $n' >/dev/null
}

@test "stat: -W asks the management API for the messages consumers hold" {
	[ -n "${JOBQ_TEST_MANAGEMENT_URL-}" ] ||
	    fail "the test broker has no management API"
	migrate
	printf '{"type":"x"}\n{"type":"x"}\n{"type":"x"}\n' | submit
	start work jobq-work -j 3 -s 600000 -- sh -c 'cat >/dev/null; exec sleep 600'
	export JOBQ_MANAGEMENT_URL=$JOBQ_TEST_MANAGEMENT_URL
	# The plugin's figures are some seconds old.
	eventually unacked "$JOBQ_JOB_QUEUE" 3
	run jobq-stat
	assert_success
	assert_line --regexp "^$JOBQ_JOB_QUEUE +0 +3 +1\$"
	assert_line --regexp "^$JOBQ_DEAD_QUEUE +0 +0 +0\$"
	unset JOBQ_MANAGEMENT_URL
	run jobq-stat -W "$JOBQ_TEST_MANAGEMENT_URL" -F json
	assert_success
	run jq -c '[.queues[0].unacked, .management_error]' <<<"$output"
	assert_output '[3,null]'
}

@test "stat: a management API that is away leaves unacked unknown, said once" {
	migrate
	run jobq-stat -W "http://guest:guest@127.0.0.1:$(dead_port)/"
	assert_success
	assert_line --regexp "^$JOBQ_JOB_QUEUE +0 +- +0\$"
	assert_line --regexp '^management API 127\.0\.0\.1:[0-9]+: cannot connect$'
	refute_output --partial guest
	run jobq-stat -W "ftp://127.0.0.1/"
	assert_failure 64
	assert_output --partial 'jobq-stat: management URL: not an http:// URL'
}

@test "stat: usage errors exit 64" {
	run jobq-stat -F xml
	assert_failure 64
	assert_line --index 0 'jobq-stat: -F xml: not text or json'
	run jobq-stat 0
	assert_failure 64
	assert_line --index 0 'jobq-stat: 0: not a number of seconds from 1 to 86400'
	run jobq-stat 1 2
	assert_failure 64
	run jobq-stat -V
	assert_output 'jobq-stat 0.1.0'
}
