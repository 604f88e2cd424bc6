#!/usr/bin/env bats
# Trace ids: a W3C traceparent travels with every job, from the
# submitter to the handler, the logs and the jobs table.

load helpers

PARENT=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
TRACE_ID=4bf92f3577b34da6a3ce929d0e0e4736
TRACE_RE='00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}'

# The traceparent in the header and in the body of the next message on
# a queue, which must agree; fails when they do not.
trace_on() {
	local head body h b
	qtool get "$1" >"$JOBS/got" || return 1
	head=$(head -n 1 "$JOBS/got")
	body=$(tail -n 1 "$JOBS/got")
	h=$(printf '%s\n' "$head" | sed -n 's/.* traceparent=\([^ ]*\).*/\1/p')
	b=$(printf '%s\n' "$body" | sed -n 's/.*"traceparent":"\([^"]*\)".*/\1/p')
	[ -n "$h" ] && [ "$h" = "$b" ] || {
		echo "header '$h' and body '$b' differ" >&2
		return 1
	}
	echo "$h"
}

# A handler that writes its TRACEPARENT where the test can read it.
traced() {
	handler traced "cat >/dev/null; printf '%s\n' \"\$TRACEPARENT\" >>$JOBS/seen"
}

@test "trace: TRACEPARENT of the submitter is the parent of the job's trace" {
	echo '{"type":"x"}' | TRACEPARENT=$PARENT submit
	run trace_on "$JOBQ_JOB_QUEUE"
	assert_success
	assert_output --regexp "^00-$TRACE_ID-[0-9a-f]{16}-01\$"
	refute_output "$PARENT"
}

@test "trace: without one, or with one not valid, each job starts a trace" {
	printf '{"type":"x"}\n{"type":"x"}\n' | submit
	echo '{"type":"x"}' | TRACEPARENT=00-zz-bad-01 submit
	echo '{"type":"x"}' |
	    TRACEPARENT=00-00000000000000000000000000000000-00f067aa0ba902b7-01 submit
	for i in 1 2 3 4; do
		trace_on "$JOBQ_JOB_QUEUE" >>"$JOBS/traces" || return 1
	done
	run cat "$JOBS/traces"
	for i in 0 1 2 3; do
		assert_line --index "$i" --regexp "^$TRACE_RE\$"
	done
	assert_equal "$(cut -c 4-35 "$JOBS/traces" | sort -u | wc -l)" 4
	refute_output --partial 00000000000000000000000000000000
}

@test "trace: the handler, the logs and the row carry the job's traceparent" {
	migrate
	traced
	start store jobq-store
	start work jobq-work -j 1 "$JOBS/h/traced"
	echo '{"type":"x"}' | TRACEPARENT=$PARENT submit
	id=$(cat "$JOBS/ids")
	run jobq-result -w -t 30 "$id"
	assert_success
	trace=$(sql "SELECT traceparent FROM jobs")
	assert_output --partial "\"traceparent\":\"$trace\""
	[[ $trace =~ ^00-$TRACE_ID-[0-9a-f]{16}-01$ ]]
	assert_equal "$(cat "$JOBS/seen")" "$trace"
	run logged work "msg=\"job done\" id=$id .* trace_id=$TRACE_ID"
	assert_success
}

@test "trace: a retry and a dead letter keep the job's trace" {
	migrate
	handler twice 'cat >/dev/null; printf "%s\n" "$TRACEPARENT" >>'"$JOBS"'/seen; exit 75'
	start store jobq-store
	start work jobq-work -j 1 -a 2 -B 1 -J "$JOBS/h/twice"
	echo '{"type":"x"}' | TRACEPARENT=$PARENT submit
	id=$(cat "$JOBS/ids")
	run jobq-result -w -t 30 "$id"
	assert_failure 1
	trace=$(sql "SELECT traceparent FROM jobs")
	assert_equal "$(sort -u "$JOBS/seen")" "$trace"
	assert_equal "$(wc -l <"$JOBS/seen")" 2
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	run trace_on "$JOBQ_DEAD_QUEUE"
	assert_output "$trace"
}

@test "trace: jobq-httpd takes the traceparent header, or starts a trace" {
	post() {
		printf 'POST /job HTTP/1.1\r\nContent-Length: 12\r\n%sConnection: close\r\n\r\n{"type":"x"}' "$1" |
		    jobq-httpd 2>>"$JOBS/httpd.log"
	}
	post "traceparent: $PARENT"$'\r\n' >/dev/null
	post "Traceparent: $PARENT"$'\r\n'"traceparent: $PARENT"$'\r\n' >/dev/null
	post 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0'$'\r\n' >/dev/null
	post '' >/dev/null
	run trace_on "$JOBQ_JOB_QUEUE"
	assert_output --regexp "^00-$TRACE_ID-[0-9a-f]{16}-01\$"
	for i in 1 2 3; do
		run trace_on "$JOBQ_JOB_QUEUE"
		assert_output --regexp "^$TRACE_RE\$"
		refute_output --partial "$TRACE_ID"
	done
}

@test "trace: jobq-httpd as CGI takes HTTP_TRACEPARENT" {
	GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=POST PATH_INFO=/job \
	    CONTENT_LENGTH=12 CONTENT_TYPE=application/json \
	    HTTP_TRACEPARENT=$PARENT jobq-httpd < <(printf '{"type":"x"}') >/dev/null
	run trace_on "$JOBQ_JOB_QUEUE"
	assert_output --regexp "^00-$TRACE_ID-[0-9a-f]{16}-01\$"
}

@test "trace: a job of another client is traced by its header, else anew" {
	migrate
	traced
	jobq-submit </dev/null
	job='{"v":1,"id":"%s","type":"x","payload":null,"attempt":1,"submitted_at":"2026-01-01T00:00:00Z"}'
	# shellcheck disable=SC2059
	qtool put "$JOBQ_JOB_QUEUE" "$(printf "$job" 3b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a01)" \
	    application/json "$PARENT"
	# shellcheck disable=SC2059
	qtool put "$JOBQ_JOB_QUEUE" "$(printf "$job" 3b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a02)"
	start store jobq-store
	start work jobq-work -j 1 "$JOBS/h/traced"
	jobq-result -w -t 30 3b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a01 \
	    3b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a02 >/dev/null
	run sql "SELECT traceparent FROM jobs ORDER BY id"
	assert_line --index 0 "$PARENT"
	assert_line --index 1 --regexp "^$TRACE_RE\$"
	refute_line --index 1 --partial "$TRACE_ID"
}

@test "trace: the worker's own TRACEPARENT never reaches a handler" {
	traced
	TRACEPARENT=$PARENT start work jobq-work -j 1 -e TRACEPARENT \
	    -e TRACEPARENT=$PARENT "$JOBS/h/traced"
	echo '{"type":"x"}' | submit
	eventually test -s "$JOBS/seen"
	run cat "$JOBS/seen"
	assert_output --regexp "^$TRACE_RE\$"
	refute_output --partial "$TRACE_ID"
}

@test "trace: a persistent handler gets the traceparent in its request" {
	handler req 'while IFS= read -r line; do
printf "%s\n" "$line" >>'"$JOBS"'/requests
echo "{\"status\":\"succeeded\"}"
done'
	start work jobq-work -p -j 1 "$JOBS/h/req"
	echo '{"type":"x","payload":1}' | TRACEPARENT=$PARENT submit
	id=$(cat "$JOBS/ids")
	eventually test -s "$JOBS/requests"
	run cat "$JOBS/requests"
	assert_output --regexp "^\{\"id\":\"$id\",\"type\":\"x\",\"attempt\":1,\"traceparent\":\"00-$TRACE_ID-[0-9a-f]{16}-01\",\"payload\":1\}\$"
}
