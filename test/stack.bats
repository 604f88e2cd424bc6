#!/usr/bin/env bats
# jobq-stack: the whole system up, looked at, used and down again.
#
# One stack serves most tests of this file: starting one takes seconds.

load helpers

# The stack has its own servers and names: none of the shared ones.
setup() {
	unset JOBQ_EXCHANGE JOBQ_JOB_QUEUE JOBQ_RESULT_QUEUE JOBQ_SQL_DIR
	JOBS=$BATS_TEST_TMPDIR
}

# A stack that a test left up, failing, goes down with it.
teardown() {
	local env
	for env in "$BATS_TEST_TMPDIR"/*/stack.env; do
		[ -f "$env" ] || continue
		"$ROOT/scripts/jobq-stack" -s "${env%/stack.env}" down -P \
		    2>/dev/null || true
	done
	stop_started
}

setup_file() {
	export STACK=$BATS_FILE_TMPDIR/state
	"$BATS_TEST_DIRNAME/../scripts/jobq-stack" -s "$STACK" up -j 1 \
	    2>"$BATS_FILE_TMPDIR/up.log"
}

teardown_file() {
	"$BATS_TEST_DIRNAME/../scripts/jobq-stack" -s "$STACK" down -P \
	    2>/dev/null || true
}

stack() {
	"$ROOT/scripts/jobq-stack" -s "$STACK" "$@"
}

@test "jobq-stack: up reports each step, then all services running" {
	run cat "$BATS_FILE_TMPDIR/up.log"
	assert_line --regexp '^rabbitmq and postgres +ok +[0-9.]+ s$'
	assert_line --regexp '^jobq-migrate +ok'
	assert_line --regexp '^jobq-store +ok'
	assert_line --regexp '^jobq-httpd on port [0-9]+ +ok'
	assert_line --regexp '^jobq-work -j 1 +ok'
	assert_line --regexp '^all services running after [0-9.]+ s$'
	assert_output --partial 'amqp://jobq:****@127.0.0.1:'
	refute_output --partial "$(grep RABBIT_PASS "$STACK/secrets" | cut -d= -f2)"
}

@test "jobq-stack: status lists every component up, and the queues" {
	run stack status
	assert_success
	for c in rabbitmq postgres store httpd work; do
		assert_line --regexp "^$c +[0-9]+ +up$"
	done
	assert_line 'queue job-added: 0 ready'
}

@test "jobq-stack: status tells a worker that is not consuming" {
	f=$STACK/pids/work.health
	# Right after a touch, the next is five seconds away.
	m=$(stat -c %Y "$f")
	eventually sh -c "[ \$(stat -c %Y '$f') != $m ]"
	touch -d '1 hour ago' "$f"
	run stack status
	assert_failure 3
	assert_line --regexp '^work +[0-9]+ +up, not consuming$'
	assert_line --regexp '^store +[0-9]+ +up$'
	eventually sh -c "'$ROOT/scripts/jobq-stack' -s '$STACK' status >/dev/null"
}

@test "jobq-stack: env lets the tools of another shell reach the stack" {
	export JOBQ_DATABASE_URL=postgresql://nobody@127.0.0.1:1/x
	export JOBQ_JOB_QUEUE=elsewhere JOBQ_DEAD_QUEUE=elsewhere
	eval "$(stack env)"
	[ -z "${JOBQ_DEAD_QUEUE-}" ]
	id=$(echo '{"type":"echo","payload":"via env"}' | jobq-submit)
	run jobq-result -t 30 "$id"
	assert_success
	assert_output --partial '"result":"via env"'
}

@test "jobq-stack: its credentials are its own and kept private" {
	run stat -c %a "$STACK/secrets"
	assert_output 600
	run stat -c %a "$STACK/rabbit/rabbitmq.conf"
	assert_output 600
	eval "$(stack env)"
	run jobq-submit -u "amqp://guest:guest@127.0.0.1:${JOBQ_AMQP_URL##*@127.0.0.1:}" </dev/null
	assert_failure 69
	run env PGPASSWORD=wrong psql -X -c 'SELECT 1'
	assert_failure
}

@test "jobq-stack: HTTP takes jobs with the stack's token, not without" {
	eval "$(stack env)"
	run curl -s -H "Authorization: Bearer $JOBQ_HTTP_TOKEN" \
	    -d '{"type":"sha256","payload":"x"}' "$JOBQ_HTTP_URL/job"
	assert_output --regexp '^\{"id":"[0-9a-f-]{36}"\}$'
	id=$(printf '%s' "$output" | sed 's/.*"id":"\([^"]*\)".*/\1/')
	jobq-result -t 30 "$id" >/dev/null
	run curl -s -H "Authorization: Bearer $JOBQ_HTTP_TOKEN" \
	    "$JOBQ_HTTP_URL/job/$id"
	assert_output --partial '"status":"succeeded"'
	run curl -s -d '{"type":"echo"}' "$JOBQ_HTTP_URL/job"
	assert_output '{"error":"a valid bearer token is needed"}'
}

@test "jobq-stack: a second up says so, changes nothing and fails" {
	before=$(cat "$STACK"/pids/*.pid)
	run stack up
	assert_failure 1
	assert_output --partial "jobq-stack: already up in $STACK"
	assert_equal "$(cat "$STACK"/pids/*.pid)" "$before"
}

@test "jobq-stack: logs shows one component or all" {
	run stack logs store
	assert_success
	assert_output --partial 'tool=jobq-store msg="started"'
	run stack logs
	assert_output --partial 'store: '
	assert_output --partial 'work: '
	run stack logs nosuch
	assert_failure
	assert_output 'jobq-stack: no log named nosuch'
}

@test "jobq-stack: a step that fails stops what was started and says where" {
	st=$BATS_TEST_TMPDIR/failing
	port=$(dead_port)
	# Something else holds the HTTP port.
	socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" SYSTEM:true \
	    3>&- &
	echo $! >"$JOBS/squatter.pid"
	eventually bash -c "(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null"
	run "$ROOT/scripts/jobq-stack" -s "$st" up -j 1 -p "$port"
	assert_failure 1
	assert_output --partial "jobq-stack: step \"jobq-httpd on port $port\" failed; see $st/logs/httpd.log"
	run ls "$st/pids"
	assert_output ''
	run "$ROOT/scripts/jobq-stack" -s "$st" down -P
	assert_success
}

@test "jobq-stack: down stops everything by pid, workers first, data kept" {
	st=$BATS_TEST_TMPDIR/down
	"$ROOT/scripts/jobq-stack" -s "$st" up -j 1 2>/dev/null
	pids=$(cat "$st"/pids/*.pid)
	run "$ROOT/scripts/jobq-stack" -s "$st" down
	assert_success
	assert_output "stopped; data kept in $st"
	for pid in $pids; do
		run kill -0 "$pid"
		assert_failure
	done
	pgdir=$(sed -n 's/^PG_DIR=//p' "$st/stack.env")
	amqp=$(sed -n 's/^AMQP_PORT=//p' "$st/stack.env")
	run pgrep -f "$st"
	assert_failure
	# Every component had the stack's broker in its environment.
	run grep -l "127.0.0.1:$amqp/" /proc/[0-9]*/environ
	assert_output 
	run pgrep -f "$pgdir"
	assert_failure
	[ -f "$st/stack.env" ]
	[ -d "$pgdir/data" ]
	run "$ROOT/scripts/jobq-stack" -s "$st" down -P
	assert_success
	assert_output "stopped; $st purged"
	[ ! -e "$st" ]
	[ ! -e "$pgdir" ]
}

@test "jobq-stack: a later up keeps the data and may move the HTTP port" {
	st=$BATS_TEST_TMPDIR/again
	"$ROOT/scripts/jobq-stack" -s "$st" up -j 1 2>/dev/null
	id=$(eval "$("$ROOT/scripts/jobq-stack" -s "$st" env)" &&
	    echo '{"type":"echo","payload":"kept"}' | jobq-submit)
	(eval "$("$ROOT/scripts/jobq-stack" -s "$st" env)" &&
	    jobq-result -t 30 "$id" >/dev/null)
	"$ROOT/scripts/jobq-stack" -s "$st" down 2>/dev/null
	port=$(dead_port)
	run "$ROOT/scripts/jobq-stack" -s "$st" up -j 1 -p "$port"
	assert_success
	assert_output --partial "jobq-httpd on port $port"
	eval "$("$ROOT/scripts/jobq-stack" -s "$st" env)"
	assert_equal "$JOBQ_HTTP_URL" "http://127.0.0.1:$port"
	run curl -s -H "Authorization: Bearer $JOBQ_HTTP_TOKEN" \
	    "http://127.0.0.1:$port/job/$id"
	assert_output --partial '"result":"kept"'
	"$ROOT/scripts/jobq-stack" -s "$st" down -P 2>/dev/null
}

@test "jobq-stack: usage errors exit 64, -h and -V exit 0" {
	run "$ROOT/scripts/jobq-stack"
	assert_failure 64
	assert_output --partial 'usage: jobq-stack'
	run --separate-stderr "$ROOT/scripts/jobq-stack" -h
	assert_success
	assert_line --index 0 --partial 'usage: jobq-stack [-s state] up'
	run "$ROOT/scripts/jobq-stack" -V
	assert_output 'jobq-stack 0.1.0'
	run "$ROOT/scripts/jobq-stack" -s "$BATS_TEST_TMPDIR/x" up -D /tmp -- cat
	assert_failure 64
	assert_output --partial 'give either -D dir or a command'
	run "$ROOT/scripts/jobq-stack" -s "$BATS_TEST_TMPDIR/x" up -j 0
	assert_failure 64
	run "$ROOT/scripts/jobq-stack" -s "$BATS_TEST_TMPDIR/x" up -p 99999
	assert_failure 64
	run "$ROOT/scripts/jobq-stack" -s "$BATS_TEST_TMPDIR/x" status
	assert_failure 1
	assert_output "jobq-stack: no stack in $BATS_TEST_TMPDIR/x"
}
