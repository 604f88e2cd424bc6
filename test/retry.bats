#!/usr/bin/env bats
# jobq-work: what each outcome of a handler leads to: retries with
# backoff, dead letters, redeliveries counted, time limits, shutdown.

load helpers

# dead_headers: the properties line of the next dead letter.
dead_headers() {
	qtool get "$JOBQ_DEAD_QUEUE" | head -n 1
}

@test "retry: exit 75 is tried again after the backoff, attempt counted" {
	handler flaky '[ "$JOBQ_ATTEMPT" -ge 2 ] && { echo "\"ok $JOBQ_ATTEMPT\""; exit 0; }
echo "not yet" >&2; exit 75'
	start work jobq-work -j 1 -B 1 "$JOBS/h/flaky"
	echo '{"type":"x"}' | submit
	eventually has_finals 2
	run results
	assert_line --index 0 --partial '"status":"retrying","result":null,"error":"exit status 75: not yet","attempts":1'
	assert_line --index 1 --partial '"status":"succeeded","result":"ok 2","error":null,"attempts":2'
	run logged work 'status=retrying attempt=1 ms=[0-9.]* retry_in=1 error="exit status 75: not yet"'
	assert_success
	assert_equal "$(depth "$JOBQ_JOB_QUEUE.delay.1s")" 0
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 0
}

@test "retry: a job waiting to be retried does not hold up the others" {
	handler picky '[ "$(cat)" = "\"bad\"" ] && exit 1; echo done'
	start work jobq-work -j 1 -B 600 "$JOBS/h/picky"
	echo '{"type":"x","payload":"bad"}' | submit
	eventually has_depth "$JOBQ_JOB_QUEUE.delay.600s" 1
	echo '{"type":"x","payload":"good"}' | submit
	eventually has_finals 2
	run results
	assert_line --index 0 --partial '"status":"retrying"'
	assert_line --index 1 --partial '"status":"succeeded","result":"done\n"'
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 0
	run qtool get "$JOBQ_JOB_QUEUE.delay.600s"
	assert_line --index 1 --partial '"attempt":2'
}

@test "retry: exit 65 fails at once and dead-letters the job with why" {
	handler bad 'echo "no such image" >&2; exit 65'
	start work jobq-work -j 1 -B 1 "$JOBS/h/bad"
	echo '{"type":"x","payload":[1]}' | submit
	id=$(cat "$JOBS/ids")
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	eventually has_finals 1
	run results
	assert_output --partial '"status":"failed","result":null,"error":"exit status 65: no such image","attempts":1'
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_line --index 0 --regexp "message_id=$id .*type=x .*x-jobq-reason=exit status 65: no such image x-jobq-queue=$JOBQ_JOB_QUEUE x-jobq-worker=[^ ]+ x-jobq-failed-at=[0-9TZ:.-]+ x-jobq-attempts=1 traceparent=00-[0-9a-f-]+\$"
	assert_line --index 1 --partial "\"id\":\"$id\",\"type\":\"x\",\"payload\":[1],\"attempt\":1"
	assert_equal "$(depth "$JOBQ_JOB_QUEUE.delay.1s")" 0
}

@test "retry: after max_attempts of the job the last failure is final" {
	handler bad 'echo "attempt $JOBQ_ATTEMPT" >&2; exit 1'
	start work jobq-work -j 1 -B 1 -a 10 "$JOBS/h/bad"
	echo '{"type":"x","max_attempts":3}' | submit
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	eventually has_finals 3
	run results
	assert_line --index 0 --partial '"status":"retrying","result":null,"error":"exit status 1: attempt 1","attempts":1'
	assert_line --index 1 --partial '"status":"retrying","result":null,"error":"exit status 1: attempt 2","attempts":2'
	assert_line --index 2 --partial '"status":"failed","result":null,"error":"exit status 1: attempt 3","attempts":3'
	run dead_headers
	assert_output --partial 'x-jobq-reason=exit status 1: attempt 3 (attempt 3 of 3)'
	assert_output --partial 'x-jobq-attempts=3'
}

@test "retry: -a is the number of attempts of a job that gives none" {
	start work jobq-work -j 1 -B 1 -a 2 false
	echo '{"type":"x"}' | submit
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	run results
	assert_line --index 1 --partial '"status":"failed","result":null,"error":"exit status 1","attempts":2'
	run dead_headers
	assert_output --partial 'x-jobq-reason=exit status 1 (attempt 2 of 2)'
}

@test "retry: a signal and a time limit are failures that are retried" {
	handler die 'if [ "$JOBQ_ATTEMPT" = 1 ]; then kill -KILL $$; fi; sleep 30'
	start work jobq-work -j 1 -B 1 -a 2 -t 1 "$JOBS/h/die"
	echo '{"type":"x"}' | submit
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	run results
	assert_line --index 0 --partial '"status":"retrying","result":null,"error":"killed by signal 9","attempts":1'
	assert_line --index 1 --partial '"status":"failed","result":null,"error":"timed out after 1 s","attempts":2'
}

@test "retry: -B steps grow with the attempts; -J takes them as given" {
	start work jobq-work -j 1 -B 1,2 -J -a 4 false
	echo '{"type":"x"}' | submit
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	run grep -o 'attempt=[0-9] ms=[0-9.]* retry_in=[0-9]*' "$JOBS/work.log"
	assert_line --index 0 --regexp 'attempt=1 .* retry_in=1$'
	assert_line --index 1 --regexp 'attempt=2 .* retry_in=2$'
	assert_line --index 2 --regexp 'attempt=3 .* retry_in=2$'
	assert_equal "${#lines[@]}" 3
	has_depth "$JOBQ_JOB_QUEUE.delay.1s" 0
	has_depth "$JOBQ_JOB_QUEUE.delay.2s" 0
}

@test "retry: a type without a handler under -D fails like exit 65" {
	mkdir -p "$JOBS/h"
	start work jobq-work -j 1 -B 1 -D "$JOBS/h"
	echo '{"type":"nothing"}' | submit
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	run results
	assert_output --partial '"status":"failed","result":null,"error":"no handler for type nothing in '
	assert_output --partial '"attempts":1'
	run dead_headers
	assert_output --partial 'x-jobq-reason=no handler for type nothing in '
}

@test "retry: a timeout not below the broker's consumer_timeout fails" {
	start work jobq-work -j 1 -B 1 -C 100 true
	echo '{"type":"x","timeout":100}' | submit
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	run results
	assert_output --partial '"status":"failed","result":null,"error":"timeout of 100 s is not below the broker'"'"'s consumer_timeout of 100 s","attempts":1'
	run jobq-work -t 1800 true
	assert_failure 64
	assert_line --index 0 "jobq-work: -t 1800: must be below the broker's consumer_timeout of 1800 s (-C)"
	run jobq-work -C 60 -t 59 -u "amqp://127.0.0.1:$(dead_port)/" true
	assert_failure 69
}

@test "retry: a job that keeps killing its worker is dead-lettered" {
	handler killer 'kill -KILL $PPID; sleep 1'
	echo '{"type":"x"}' | submit
	id=$(cat "$JOBS/ids")
	# Start workers one after another, as a supervisor would, until
	# one of them lives: a copy of the job may outlive the count once,
	# since a worker killed before its ack leaves the original too.
	for n in 1 2 3 4 5 6; do
		start "work$n" jobq-work -j 1 -R 2 "$JOBS/h/killer"
		wait_gone "$(cat "$JOBS/work$n.pid")" || break
	done
	kill -0 "$(cat "$JOBS/work$n.pid")"
	run cat "$JOBS"/work*.log
	assert_output --partial "msg=\"job delivered again; counted and requeued\" id=$id deliveries=1"
	run dead_headers
	assert_output --partial "message_id=$id"
	assert_output --partial 'x-jobq-reason=delivered 2 times without an outcome: the job may be killing its worker'
	run results
	assert_output --partial '"status":"failed","result":null,"error":"delivered 2 times without an outcome'
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 0
}

@test "retry: TERM waits -g seconds for running jobs, then requeues them" {
	handler slow "touch $JOBS/started; sleep 60"
	start work jobq-work -j 1 -g 1 "$JOBS/h/slow"
	echo '{"type":"x"}' | submit
	eventually test -e "$JOBS/started"
	stop work
	assert_equal "$(cat "$JOBS/work.rc")" 0
	run logged work 'msg="grace period over; stopping job"'
	assert_success
	run logged work 'msg="job requeued"'
	assert_success
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 1
	assert_equal "$(results)" ''
}

@test "retry: -f is fresh while consuming and gone after a stop" {
	start work jobq-work -j 1 -f "$JOBS/health" true
	eventually test -e "$JOBS/health"
	run find "$JOBS/health" -newermt '-10 seconds'
	assert_output "$JOBS/health"
	stop work
	assert_equal "$(cat "$JOBS/work.rc")" 0
	[ ! -e "$JOBS/health" ]
}

@test "retry: a worker comes back after the broker closed its connection" {
	start work jobq-work -j 1 -f "$JOBS/health" cat
	eventually has_consumer "$JOBQ_JOB_QUEUE"
	broker_ctl close_all_connections "test"
	eventually logged work 'msg="broker connection lost"'
	eventually logged work 'msg="broker connection restored"'
	run grep -c 'msg="broker connection lost"' "$JOBS/work.log"
	assert_output 1
	echo '{"type":"x","payload":"again"}' | submit
	eventually has_finals 1
	run results
	assert_output --partial '"result":"again"'
	eventually test -e "$JOBS/health"
}

@test "retry: -u may be given more than once; the URLs are tried in turn" {
	url=$JOBQ_AMQP_URL
	start work jobq-work -j 1 -u "amqp://guest:guest@127.0.0.1:$(dead_port)/" -u "$url" cat
	echo '{"type":"x","payload":1}' | submit
	eventually has_finals 1
	JOBQ_AMQP_URL="amqp://127.0.0.1:$(dead_port)/ $url" run qtool depth "$JOBQ_JOB_QUEUE"
	assert_success
}

@test "retry: jobs a stop puts back are not counted as redelivered" {
	handler slow "touch $JOBS/started; sleep 1; echo done"
	start work jobq-work -j 1 -R 1 "$JOBS/h/slow"
	for i in 1 2 3; do echo '{"type":"x"}'; done | submit
	eventually test -e "$JOBS/started"
	stop work
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 2
	# With -R 1, a job counted once would be dead at once.
	start work2 jobq-work -j 1 -R 1 "$JOBS/h/slow"
	eventually has_finals 3
	run results
	refute_output --partial '"status":"failed"'
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 0
}

@test "retry: a bad broker URL anywhere in the list is refused at start" {
	run jobq-work -u "$JOBQ_AMQP_URL" -u "http://127.0.0.1/" cat
	assert_failure 64
	assert_output 'jobq-work: http://127.0.0.1/: not an amqp:// or amqps:// URL'
	JOBQ_AMQP_URL="$JOBQ_AMQP_URL amqp://u:secret@h/ http://x/" run jobq-store
	assert_failure 64
	refute_output --partial secret
}

@test "retry: a time limit of N seconds gives each handler all N of them" {
	# Three jobs in a row start at three points of a second: a limit
	# counted in whole seconds would end one of them early.
	handler nap 'sleep 1.5; echo "\"napped\""'
	start work jobq-work -j 1 -t 2 -a 1 "$JOBS/h/nap"
	for i in 1 2 3; do echo '{"type":"x"}'; done | submit
	eventually has_finals 3
	run results
	for i in 0 1 2; do
		assert_line --index "$i" --partial '"status":"succeeded","result":"napped"'
	done
}

@test "retry: a job that waited too long to start within consumer_timeout is put back" {
	handler nap 'sleep 2; echo "\"napped\""'
	start work jobq-work -j 1 -C 4 -t 3 "$JOBS/h/nap"
	for i in 1 2; do echo '{"type":"x"}'; done | submit
	eventually has_finals 2
	run results
	assert_line --index 0 --partial '"status":"succeeded","result":"napped"'
	assert_line --index 1 --partial '"status":"succeeded","result":"napped"'
	run logged work 'msg="job waited too long to start; put back"'
	assert_success
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 0
}

@test "retry: a process that left the handler's group cannot hold its slot" {
	handler escape "setsid sleep 60 &
echo \$! >$JOBS/escaped.pid
echo '\"out\"'"
	start work jobq-work -j 1 "$JOBS/h/escape"
	echo '{"type":"x"}' | submit
	eventually has_finals 1
	run results
	assert_output --partial '"status":"succeeded","result":"out"'
	kill "$(cat "$JOBS/escaped.pid")" 2>/dev/null || true
}

@test "retry: a retry waits on its delay queue, marked with when it is due" {
	start work jobq-work -j 1 -B 600 false
	before=$(($(date +%s%3N) + 600000))
	echo '{"type":"x"}' | submit
	eventually has_depth "$JOBQ_JOB_QUEUE.delay.600s" 1
	after=$(($(date +%s%3N) + 600000))
	# Looked at every second, and put back each time: not due yet.
	sleep 2.5
	assert_equal "$(depth "$JOBQ_JOB_QUEUE.delay.600s")" 1
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 0
	stop work
	run broker_ctl list_queues name type arguments
	assert_line --regexp "^$JOBQ_JOB_QUEUE\.delay\.600s	classic	.*x-queue-version"
	refute_line --regexp "^$JOBQ_JOB_QUEUE\.delay\.600s	.*x-message-ttl"
	run qtool get "$JOBQ_JOB_QUEUE.delay.600s"
	assert_success
	due=$(printf '%s\n' "${lines[0]}" | grep -o 'x-jobq-due=[0-9]*' | cut -d= -f2)
	[ "$due" -ge "$before" ] && [ "$due" -le "$after" ] ||
	    fail "x-jobq-due $due not within $before..$after: ${lines[0]}"
}

@test "retry: a due retry outlives the worker that put it there" {
	handler flaky '[ "$JOBQ_ATTEMPT" -ge 2 ] && { echo "\"ok\""; exit 0; }
exit 75'
	start work jobq-work -j 1 -B 2 "$JOBS/h/flaky"
	echo '{"type":"x"}' | submit
	eventually has_depth "$JOBQ_JOB_QUEUE.delay.2s" 1
	kill -KILL "$(cat "$JOBS/work.pid")"
	rm "$JOBS/work.pid"
	sleep 3
	# Due now, and nobody to hand it back: it waits where it is.
	assert_equal "$(depth "$JOBQ_JOB_QUEUE.delay.2s")" 1
	start work2 jobq-work -j 1 -B 2 "$JOBS/h/flaky"
	eventually has_finals 2
	run results
	assert_line --index 1 --partial '"status":"succeeded","result":"ok","error":null,"attempts":2'
	assert_equal "$(depth "$JOBQ_JOB_QUEUE.delay.2s")" 0
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 0
}
