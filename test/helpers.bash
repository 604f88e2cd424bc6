# Shared by every test file: assertions, a fresh world for each test,
# and background processes that are stopped by pid when the test ends.

bats_require_minimum_version 1.5.0

load '/usr/lib/bats/bats-support/load'
load '/usr/lib/bats/bats-assert/load'

ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
PATH=$ROOT/bin:$ROOT/test:$PATH

# Each test gets its own exchange, queues and database, so that tests
# share the servers but nothing else.  A file with a setup of its own
# calls _setup_world first.
setup() {
	_setup_world
}

_setup_world() {
	local n=t${BATS_SUITE_TEST_NUMBER}_$$
	export JOBQ_EXCHANGE=$n.jobs JOBQ_JOB_QUEUE=$n.added
	export JOBQ_RESULT_QUEUE=$n.result JOBQ_DEAD_QUEUE=$n.dead PGDATABASE=$n
	export JOBQ_SQL_DIR=$ROOT/sql JOBQ_LOG=info
	unset JOBQ_MAX_SIZE
	createdb "$PGDATABASE"
	JOBS=$BATS_TEST_TMPDIR
}

teardown() {
	stop_started
	dropdb --if-exists --force "$PGDATABASE" 2>/dev/null || true
}

# stop_started: stop what the test started with start, by pid.
stop_started() {
	local f
	for f in "$BATS_TEST_TMPDIR"/*.pid; do
		[ -e "$f" ] || continue
		kill -TERM "$(cat "$f")" 2>/dev/null || true
	done
	for f in "$BATS_TEST_TMPDIR"/*.pid; do
		[ -e "$f" ] || continue
		wait_gone "$(cat "$f")" || kill -KILL "$(cat "$f")" 2>/dev/null || true
	done
}

# migrate: bring this test's database up to date.
migrate() {
	jobq-migrate 2>/dev/null
}

# start NAME COMMAND...: run a long-running tool in the background, its
# stderr in $JOBS/NAME.log and its pid in $JOBS/NAME.pid.
start() {
	local name=$1
	shift
	"$@" >"$JOBS/$name.out" 2>"$JOBS/$name.log" 3>&- &
	echo $! >"$JOBS/$name.pid"
}

# stop NAME: send TERM and wait; the exit status is in $JOBS/NAME.rc.
stop() {
	local pid rc=0
	pid=$(cat "$JOBS/$1.pid")
	kill -TERM "$pid"
	wait "$pid" || rc=$?
	echo "$rc" >"$JOBS/$1.rc"
	rm -f "$JOBS/$1.pid"
}

# wait_gone PID: wait up to 10 s for a process to end.
wait_gone() {
	local _
	for _ in $(seq 100); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

# eventually COMMAND...: retry a command every 0.1 s for up to 20 s.
eventually() {
	local _
	for _ in $(seq 200); do
		"$@" && return 0
		sleep 0.1
	done
	"$@"
}

# depth QUEUE: the number of ready messages on a queue.
depth() {
	qtool depth "$1" | cut -d' ' -f1
}

# has_depth QUEUE N: whether a queue holds exactly N ready messages.
has_depth() {
	[ "$(depth "$1")" = "$2" ]
}

# has_consumer QUEUE: whether a queue exists and someone consumes it.
has_consumer() {
	local n
	n=$(qtool depth "$1" 2>/dev/null | cut -d' ' -f2)
	[ -n "$n" ] && [ "$n" -gt 0 ]
}

# logged NAME TEXT: whether a background tool's log holds TEXT.
logged() {
	grep -q -- "$2" "$JOBS/$1.log"
}

# sql QUERY: the result of a query, unaligned, without headers.
sql() {
	psql -X -A -t -q -c "$1"
}

# handler NAME BODY: write an executable shell handler $JOBS/h/NAME.
handler() {
	mkdir -p "$JOBS/h"
	printf '#!/bin/sh\n%s\n' "$2" >"$JOBS/h/$1"
	chmod +x "$JOBS/h/$1"
}

# a free TCP port of 127.0.0.1 where nothing listens
dead_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || break
	done
	echo "$p"
}

# broker_ctl ARGS...: rabbitmqctl on the tests' broker.
broker_ctl() {
	HOME=$JOBQ_TEST_SERVERS/rabbit/home ERL_EPMD_PORT=$JOBQ_TEST_EPMD_PORT \
	    /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$JOBQ_TEST_RABBIT_NODE" "$@"
}

# submit: jobq-submit, its ids added to $JOBS/ids.
submit() {
	jobq-submit >>"$JOBS/ids"
}

# collect: take every message off the result queue, appending its body
# to $JOBS/results.all as a line.
collect() {
	while qtool get "$JOBQ_RESULT_QUEUE" >"$JOBS/msg"; do
		tail -n 1 "$JOBS/msg" >>"$JOBS/results.all"
	done
}

# Of the collected results, those not about a job that is running: a
# worker says that a job runs once it has run a while, in a message of
# its own before the final one.
_finals() {
	[ -e "$JOBS/results.all" ] || return 0
	grep -v '"status":"running"' "$JOBS/results.all" || true
}

# has_finals N: whether N results other than "running" have arrived.
has_finals() {
	collect
	[ "$(_finals | wc -l)" -ge "$1" ]
}

# results: the results that have arrived, but the "running" ones, one
# per line, each once.
results() {
	collect
	_finals
	rm -f "$JOBS/results.all"
}

# next_result: the first result not yet taken, but the "running" ones,
# waiting for it; fails when none comes.
next_result() {
	eventually has_finals 1 || return 1
	_finals | head -n 1
	_finals | tail -n +2 >"$JOBS/results.rest"
	mv "$JOBS/results.rest" "$JOBS/results.all"
}

# cut_db_connections: end every connection to this test's database, as
# a restart of PostgreSQL would.
cut_db_connections() {
	psql -X -q -d postgres -c "SELECT pg_terminate_backend(pid)
	    FROM pg_stat_activity WHERE datname = '$PGDATABASE'" >/dev/null
}
