#!/usr/bin/env bats
# jobq-store: results into rows, batched, idempotent, newest kept.

load helpers

ID=3b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a09

# msg ID STATUS ATTEMPTS RESULT: a result message as jobq-work writes it.
msg() {
	printf '{"v":1,"id":"%s","type":"t","status":"%s","result":%s,' \
	    "$1" "$2" "$4"
	printf '"error":null,"attempts":%s,"worker":"w:1",' "$3"
	printf '"submitted_at":"2026-01-01T00:00:00.000001Z",'
	printf '"started_at":"2026-01-01T00:00:01Z",'
	printf '"finished_at":"2026-01-01T00:00:02.5+01:00"}'
}

start_store() {
	migrate
	start store jobq-store "$@"
	eventually has_consumer "$JOBQ_RESULT_QUEUE"
}

# put_result ARGS...: publish msg ARGS... and wait until it is taken.
put_result() {
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$@")"
}

stored() {
	eventually has_depth "$JOBQ_RESULT_QUEUE" 0 &&
	    [ "$(sql "SELECT count(*) FROM jobs")" = "$1" ]
}

@test "jobq-store: a result becomes a row" {
	start_store
	put_result "$ID" succeeded 1 '{"x":[1,"a"]}'
	eventually stored 1
	run sql "SELECT id, type, status, result, error IS NULL, attempts,
	    worker, submitted_at AT TIME ZONE 'UTC',
	    finished_at AT TIME ZONE 'UTC' FROM jobs"
	assert_output "$ID|t|succeeded|{\"x\": [1, \"a\"]}|t|1|w:1|2026-01-01 00:00:00.000001|2025-12-31 23:00:02.5"
}

@test "jobq-store: numbers in a result keep their exact value" {
	start_store
	put_result "$ID" succeeded 1 \
	    '[18446744073709551615, 0.1000000000000000055511, 1e-7]'
	eventually stored 1
	# PostgreSQL writes 1e-7 in its own way, with the same value.
	run sql "SELECT result FROM jobs"
	assert_output '[18446744073709551615, 0.1000000000000000055511, 0.0000001]'
}

@test "jobq-store: a result delivered twice leaves one row, unchanged" {
	start_store
	put_result "$ID" succeeded 1 '"first"'
	eventually stored 1
	before=$(sql "SELECT stored_at FROM jobs")
	put_result "$ID" succeeded 1 '"first"'
	eventually stored 1
	assert_equal "$(sql "SELECT stored_at FROM jobs")" "$before"
}

@test "jobq-store: a later attempt replaces the row, an earlier one does not" {
	start_store
	put_result "$ID" failed 2 '"second"'
	eventually stored 1
	put_result "$ID" succeeded 1 '"first"'
	eventually stored 1
	assert_equal "$(sql "SELECT result, attempts FROM jobs")" '"second"|2'
	put_result "$ID" succeeded 3 '"third"'
	eventually stored 1
	assert_equal "$(sql "SELECT result, attempts FROM jobs")" '"third"|3'
}

@test "jobq-store: in one attempt, succeeded outranks failed" {
	start_store
	put_result "$ID" succeeded 1 '"ok"'
	eventually stored 1
	put_result "$ID" failed 1 null
	eventually stored 1
	assert_equal "$(sql "SELECT status FROM jobs")" succeeded
}

@test "jobq-store: the rule also holds inside one batch" {
	migrate
	jobq-submit </dev/null
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" failed 1 null)"
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 2 '"two"')"
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" failed 2 null)"
	start store jobq-store
	eventually stored 1
	assert_equal "$(sql "SELECT status, attempts FROM jobs")" succeeded\|2
}

@test "jobq-store: many waiting results are stored in few batches" {
	migrate
	jobq-submit </dev/null
	for i in $(seq 200); do
		id=$(printf '00000000-0000-4000-8000-%012d' "$i")
		qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$id" succeeded 1 "$i")"
	done
	JOBQ_LOG=debug start store jobq-store -b 100
	eventually stored 200
	# At least two, since -b caps a batch at 100; far fewer than 200.
	batches=$(grep -c 'msg="batch stored"' "$JOBS/store.log")
	[ "$batches" -ge 2 ] && [ "$batches" -le 50 ]
}

@test "jobq-store: a bad message is dead-lettered, the rest of its batch stored" {
	migrate
	jobq-submit </dev/null
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 1)"
	qtool put "$JOBQ_RESULT_QUEUE" 'not json at all'
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" bogus 1 1 |
	    sed 's/3b7e/4b7e/')"
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 1 |
	    sed 's/3b7e/5b7e/')"
	start store jobq-store
	eventually stored 2
	run logged store 'msg="not a result; dead-lettered"'
	assert_success
	run logged store 'status\\": \\"bogus\\" is not a status known here'
	assert_success
	eventually has_depth "$JOBQ_DEAD_QUEUE" 2
	run jobq-dead
	assert_success
	assert_output --partial "\"reason\":\"not a result: "
	assert_output --partial "\"queue\":\"$JOBQ_RESULT_QUEUE\""
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_line --index 0 --regexp "x-jobq-reason=not a result: .* x-jobq-queue=$JOBQ_RESULT_QUEUE x-jobq-failed-at=[0-9TZ:.-]+\$"
	assert_line --index 1 'not json at all'
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_output --partial 'x-jobq-reason=not a result: member "status": "bogus" is not a status known here'
	assert_output --partial '"status":"bogus"'
	assert_equal "$(depth "$JOBQ_RESULT_QUEUE")" 0
}

@test "jobq-store: a result of another content type is dead-lettered" {
	start_store
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 1)" text/csv
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_line --index 0 --partial 'content_type=text/csv '
	assert_line --index 0 --partial 'x-jobq-reason=not a result: content type text/csv, not application/json '
	assert_equal "$(sql "SELECT count(*) FROM jobs")" 0
}

@test "jobq-store: a bad message at the end of a batch is dead-lettered alone" {
	start_store
	qtool put "$JOBQ_RESULT_QUEUE" 'not json at all'
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	put_result "$ID" succeeded 1 '"later"'
	eventually stored 1
	kill -0 "$(cat "$JOBS/store.pid")"
}

@test "jobq-store: in one batch, a tie keeps the result delivered first" {
	migrate
	jobq-submit </dev/null
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 '"first"')"
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 '"second"')"
	start store jobq-store
	eventually stored 1
	assert_equal "$(sql "SELECT result FROM jobs")" '"first"'
}

@test "jobq-store: times with a numeric offset are stored in UTC" {
	start_store
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 1 |
	    sed 's/"started_at":"[^"]*"/"started_at":"2026-01-01T05:30:00.123456+05:30"/')"
	eventually stored 1
	assert_equal "$(sql "SELECT started_at AT TIME ZONE 'UTC' FROM jobs")" \
	    "2026-01-01 00:00:00.123456"
}

@test "jobq-store: without its table it exits 69 and keeps the result" {
	jobq-submit </dev/null
	put_result "$ID" succeeded 1 1
	run jobq-store
	assert_failure 69
	assert_output --partial 'msg="exiting" err="prepare store: function jobq_status_rank(text) does not exist'
	assert_equal "$(depth "$JOBQ_RESULT_QUEUE")" 1
}

@test "jobq-store: a result the table refuses is dead-lettered, not the batch" {
	migrate
	jobq-submit </dev/null
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 1)"
	# A year that RFC 3339 has no room for, which the check refuses, and
	# a day that does not exist, which only PostgreSQL catches.
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 1 |
	    sed 's/3b7e/4b7e/; s/2026-01-01T00:00:01Z/9999999-01-01T00:00:01Z/')"
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 1 |
	    sed 's/3b7e/4b7e/; s/"started_at":"2026-01-01/"started_at":"2026-02-30/')"
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 1 |
	    sed 's/3b7e/5b7e/')"
	start store jobq-store
	eventually stored 2
	run logged store 'msg="result refused by the database; dead-lettered"'
	assert_success
	eventually has_depth "$JOBQ_DEAD_QUEUE" 2
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_output --partial 'x-jobq-reason=not a result: member "started_at": not an RFC 3339 time'
	assert_output --partial '9999999-01-01T00:00:01Z'
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_output --partial "message_id=4b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a09 "
	assert_output --partial 'x-jobq-reason=refused by the database: store results: '
	assert_output --partial '"started_at":"2026-02-30'
	assert_equal "$(depth "$JOBQ_RESULT_QUEUE")" 0
}

@test "jobq-store: a result refused only at the commit is dead-lettered, not lost" {
	migrate
	sql "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS
	    \$\$ BEGIN IF NEW.result = '\"bad\"'::jsonb THEN RAISE EXCEPTION
	    'refused at commit' USING ERRCODE = '23514'; END IF; RETURN NULL;
	    END \$\$; CREATE CONSTRAINT TRIGGER refuse_bad AFTER INSERT ON jobs
	    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION
	    refuse_bad()" >/dev/null
	jobq-submit </dev/null
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 '"good"')"
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 '"bad"' |
	    sed 's/3b7e/4b7e/')"
	start store jobq-store
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	assert_equal "$(sql "SELECT result FROM jobs")" '"good"'
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_output --partial 'x-jobq-reason=refused by the database: store results: refused at commit'
	assert_equal "$(depth "$JOBQ_RESULT_QUEUE")" 0
}

@test "jobq-store: each commit notifies waiters" {
	start_store
	jobq-result -t 30 "$ID" >"$JOBS/waited" 3>&- &
	waiter=$!
	sleep 0.3
	put_result "$ID" succeeded 1 '"woke"'
	wait "$waiter"
	run cat "$JOBS/waited"
	assert_output --partial '"result":"woke"'
}

@test "jobq-store: TERM stops it with exit 0" {
	start_store
	stop store
	assert_equal "$(cat "$JOBS/store.rc")" 0
	run logged store 'msg="stopped" stored=0'
	assert_success
}

@test "jobq-store: an unreachable database exits 69" {
	run env PGPORT="$(dead_port)" jobq-store
	assert_failure 69
	assert_output --partial 'msg="exiting" err="database: '
}

@test "jobq-store: an unreachable broker exits 69" {
	migrate
	run jobq-store -u "amqp://u:pw@127.0.0.1:$(dead_port)/"
	assert_failure 69
	assert_output --partial 'u:****@'
}

@test "jobq-store: usage errors exit 64" {
	run jobq-store -b 0
	assert_failure 64
	assert_output --partial '-b 0: not a number from 1 to 10000'
	run jobq-store extra
	assert_failure 64
	run jobq-store -h
	assert_success
	assert_output --partial 'usage: jobq-store'
	run jobq-store -V
	assert_success
	assert_output 'jobq-store 0.1.0'
}

@test "jobq-store: a retrying result is stored and a later attempt replaces it" {
	start_store
	put_result "$ID" retrying 1 null
	eventually stored 1
	assert_equal "$(sql "SELECT status, attempts FROM jobs")" 'retrying|1'
	put_result "$ID" succeeded 2 '"done"'
	eventually stored 1
	assert_equal "$(sql "SELECT status, attempts, result FROM jobs")" 'succeeded|2|"done"'
}

# running ID ATTEMPTS: the message of a worker that says a job runs.
running() {
	msg "$1" running "$2" null | sed 's/"finished_at":"[^"]*"/"finished_at":null/'
}

@test "jobq-store: the dead-letter queue of a failed job is kept; a bad one refused" {
	start_store
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" failed 1 null |
	    sed 's/}$/,"dead_queue":"job-dead"}/')"
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" failed 1 null |
	    sed 's/3b7e/4b7e/; s/}$/,"dead_queue":""}/')"
	eventually stored 1
	assert_equal "$(sql "SELECT dead_queue FROM jobs")" job-dead
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_output --partial 'x-jobq-reason=not a result: member "dead_queue": not a queue name'
}

@test "jobq-store: a queued job has no start and no end; a later state replaces it" {
	start_store
	queued='{"v":1,"id":"%s","type":"t","status":"queued","result":null,"error":null,"attempts":1,"worker":null,"submitted_at":"2026-01-01T00:00:00Z","started_at":%s,"finished_at":null}'
	# shellcheck disable=SC2059
	qtool put "$JOBQ_RESULT_QUEUE" "$(printf "$queued" "$ID" null)"
	eventually stored 1
	assert_equal "$(sql "SELECT status, started_at IS NULL FROM jobs")" 'queued|t'
	put_result "$ID" succeeded 1 '"done"'
	eventually stored 1
	# shellcheck disable=SC2059
	qtool put "$JOBQ_RESULT_QUEUE" "$(printf "$queued" "$ID" null)"
	eventually stored 1
	assert_equal "$(sql "SELECT status FROM jobs")" succeeded
	# shellcheck disable=SC2059
	qtool put "$JOBQ_RESULT_QUEUE" "$(printf "$queued" 4b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a09 '"2026-01-01T00:00:01Z"')"
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_output --partial 'x-jobq-reason=not a result: member "started_at": not null for a job that is queued'
}

@test "jobq-store: a running job has a row with no end, which its result replaces" {
	start_store
	qtool put "$JOBQ_RESULT_QUEUE" "$(running "$ID" 1)"
	eventually stored 1
	assert_equal "$(sql "SELECT status, attempts, worker,
	    started_at IS NOT NULL, finished_at IS NULL FROM jobs")" 'running|1|w:1|t|t'
	put_result "$ID" succeeded 1 '"done"'
	eventually stored 1
	assert_equal "$(sql "SELECT status, result, finished_at IS NULL
	    FROM jobs")" 'succeeded|"done"|f'
}

@test "jobq-store: news of a run that comes late replaces no later state" {
	start_store
	put_result "$ID" failed 1 null
	eventually stored 1
	qtool put "$JOBQ_RESULT_QUEUE" "$(running "$ID" 1)"
	eventually stored 1
	assert_equal "$(sql "SELECT status FROM jobs")" failed
	put_result "$ID" retrying 2 null
	eventually stored 1
	qtool put "$JOBQ_RESULT_QUEUE" "$(running "$ID" 2)"
	eventually stored 1
	assert_equal "$(sql "SELECT status, attempts FROM jobs")" 'retrying|2'
	# The run of the next attempt is news again.
	qtool put "$JOBQ_RESULT_QUEUE" "$(running "$ID" 3)"
	eventually stored 1
	assert_equal "$(sql "SELECT status, attempts FROM jobs")" 'running|3'
}

@test "jobq-store: a running job with an end, or an end without one, is refused" {
	start_store
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" running 1 null)"
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 null |
	    sed 's/"finished_at":"[^"]*"/"finished_at":null/')"
	eventually has_depth "$JOBQ_DEAD_QUEUE" 2
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_output --partial 'x-jobq-reason=not a result: member "finished_at": not null for a job that is running'
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_output --partial 'x-jobq-reason=not a result: member "finished_at"'
	assert_equal "$(sql "SELECT count(*) FROM jobs")" 0
}

@test "jobq-store: a result's traceparent is stored; one not valid is refused" {
	start_store
	t=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 1 null |
	    sed "s/}\$/,\"traceparent\":\"$t\"}/")"
	qtool put "$JOBQ_RESULT_QUEUE" "$(msg "$ID" succeeded 2 null |
	    sed 's/3b7e/4b7e/; s/}$/,"traceparent":"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}/')"
	eventually stored 1
	assert_equal "$(sql "SELECT traceparent FROM jobs")" "$t"
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_output --partial 'x-jobq-reason=not a result: member "traceparent": not a W3C traceparent'
}

@test "jobq-store: it comes back after the broker closed its connection" {
	start_store -f "$JOBS/health"
	eventually test -e "$JOBS/health"
	broker_ctl close_all_connections "test"
	eventually logged store 'msg="connection lost"'
	eventually logged store 'msg="connection restored"'
	put_result "$ID" succeeded 1 '"after"'
	eventually stored 1
	eventually test -e "$JOBS/health"
	run grep -c 'msg="connection lost"' "$JOBS/store.log"
	assert_output 1
}

@test "jobq-store: results wait on the queue while the database is away" {
	start_store -f "$JOBS/health"
	eventually test -e "$JOBS/health"
	psql -X -q -d postgres -c "ALTER DATABASE \"$PGDATABASE\" ALLOW_CONNECTIONS false"
	cut_db_connections
	put_result "$ID" succeeded 1 '"kept"'
	put_result 4b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a09 succeeded 1 '"kept"'
	eventually logged store 'msg="connection lost"'
	eventually sh -c "[ ! -e '$JOBS/health' ]"
	sleep 2
	assert_equal "$(depth "$JOBQ_RESULT_QUEUE")" 2
	psql -X -q -d postgres -c "ALTER DATABASE \"$PGDATABASE\" ALLOW_CONNECTIONS true"
	eventually stored 2
	run logged store 'msg="connection restored"'
	assert_success
	kill -0 "$(cat "$JOBS/store.pid")"
}

@test "jobq-store: -f is fresh while consuming and gone after a stop" {
	start_store -f "$JOBS/health"
	eventually test -e "$JOBS/health"
	run find "$JOBS/health" -newermt '-10 seconds'
	assert_output "$JOBS/health"
	stop store
	assert_equal "$(cat "$JOBS/store.rc")" 0
	[ ! -e "$JOBS/health" ]
}
