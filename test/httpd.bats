#!/usr/bin/env bats
# jobq-httpd: routes, keep-alive, limits, auth and hostile requests,
# driven on stdin and stdout as a super-server would, and over TCP.

load helpers

JOB='{"type":"echo","payload":{"a":"b/c"}}'

# send FORMAT...: write the bytes printf makes to a fresh jobq-httpd;
# its stdout is the output, its log goes to $JOBS/httpd.log.
send() {
	# shellcheck disable=SC2059
	printf "$@" | jobq-httpd 2>"$JOBS/httpd.log"
}

# post BODY: one POST /job with a Content-Length.
post() {
	send 'POST /job HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
	    "${#1}" "$1"
}

# nothing_published: the job queue exists and holds nothing.
nothing_published() {
	nothing_published_but 0
}

# nothing_published_but N: the job queue holds N jobs and no more.
nothing_published_but() {
	jobq-submit </dev/null
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" "$1"
}

@test "jobq-httpd: POST /job publishes the job and answers 202 with its id" {
	run post "$JOB"
	assert_success
	assert_line --index 0 $'HTTP/1.1 202 Accepted\r'
	assert_output --regexp $'Location: /job/[0-9a-f-]{36}\r'
	assert_output --regexp '\{"id":"[0-9a-f-]{36}"\}$'
	id=$(printf '%s\n' "$output" | sed -n 's/.*{"id":"\([^"]*\)"}.*/\1/p')
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 1
	run qtool get "$JOBQ_JOB_QUEUE"
	assert_output --partial "message_id=$id"
	assert_output --partial '"payload":{"a":"b/c"}'
}

@test "jobq-httpd: responses carry a correct Content-Length" {
	run post '{"type":"echo"}'
	len=$(printf '%s\n' "$output" | sed -n 's/^Content-Length: \([0-9]*\).*/\1/p')
	body=$(printf '%s\n' "$output" | tail -n 1)
	assert_equal "$len" "$(( ${#body} + 1 ))"
}

@test "jobq-httpd: a chunked body works like a Content-Length one" {
	run send 'POST /job HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\n{"typ\r\na;ext=1\r\ne":"echo"}\r\n0\r\nX-Trailer: 1\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 202 Accepted\r'
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 1
}

@test "jobq-httpd: GET /job/ID answers the stored row as jobq-result prints it" {
	migrate
	start store jobq-store
	start work jobq-work -j 1 -D "$ROOT/handlers"
	run post "$JOB"
	id=$(printf '%s\n' "$output" | sed -n 's/.*{"id":"\([^"]*\)"}.*/\1/p')
	row=$(jobq-result -t 30 "$id")
	run send 'GET /job/%s HTTP/1.1\r\nConnection: close\r\n\r\n' "$id"
	assert_line --index 0 $'HTTP/1.1 200 OK\r'
	assert_equal "$(printf '%s\n' "$output" | tail -n 1)" "$row"
}

@test "jobq-httpd: GET /job/ID of a job with no row is 404 with a JSON error" {
	migrate
	run send 'GET /job/0A0A0A0A-0000-4000-8000-00000000000A HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 404 Not Found\r'
	assert_output --partial '{"error":"no result stored for job 0a0a0a0a-0000-4000-8000-00000000000a"}'
}

@test "jobq-httpd: GET /job/ID with a malformed id is 400" {
	run send 'GET /job/not-an-id HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 400 Bad Request\r'
	assert_output --partial '"error":"not a job id (a UUID): not-an-id"'
}

@test "jobq-httpd: GET /healthz is 200 when the broker and database answer" {
	run send 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 200 OK\r'
	assert_output --partial '{"broker":"ok","database":"ok"}'
}

@test "jobq-httpd: GET /healthz is 503 naming the broker when it is down" {
	export JOBQ_AMQP_URL="amqp://guest:guest@127.0.0.1:$(dead_port)/"
	run send 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 503 Service Unavailable\r'
	assert_output --partial '"broker":"unavailable","database":"ok","error":"broker unavailable"'
}

@test "jobq-httpd: GET /healthz is 503 naming the database when it is down" {
	export PGPORT=$(dead_port)
	run send 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 503 Service Unavailable\r'
	assert_output --partial '"broker":"ok","database":"unavailable","error":"database unavailable"'
}

@test "jobq-httpd: POST /job is 503 and publishes nothing when the broker is down" {
	export JOBQ_AMQP_URL="amqp://guest:guest@127.0.0.1:$(dead_port)/"
	run post "$JOB"
	assert_line --index 0 $'HTTP/1.1 503 Service Unavailable\r'
	assert_output --partial '"error":"broker unavailable"'
}

@test "jobq-httpd: GET /metrics gives queues, jobs and latency" {
	migrate
	start store jobq-store
	run post "$JOB"
	run post "$JOB"
	eventually has_consumer "$JOBQ_RESULT_QUEUE"
	handler quick 'cat'
	start work jobq-work -j 1 "$JOBS/h/quick"
	eventually bash -c '[ "$(psql -X -A -t -c "SELECT count(*) FROM jobs")" = 2 ]'
	stop work
	run post "$JOB"
	run send 'GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 200 OK\r'
	assert_output --partial $'Content-Type: text/plain; version=0.0.4\r'
	assert_line "jobq_queue_messages{queue=\"$JOBQ_JOB_QUEUE\"} 1"
	assert_line "jobq_queue_consumers{queue=\"$JOBQ_JOB_QUEUE\"} 0"
	assert_line "jobq_queue_consumers{queue=\"$JOBQ_RESULT_QUEUE\"} 1"
	assert_line 'jobq_jobs{status="succeeded"} 2'
	assert_line 'jobq_jobs{status="failed"} 0'
	assert_line 'jobq_job_latency_seconds_bucket{le="+Inf"} 2'
	assert_line 'jobq_job_latency_seconds_count 2'
	assert_line '# TYPE jobq_job_latency_seconds histogram'
	# The samples of one metric stand together.
	last_messages=$(printf '%s\n' "$output" | grep -n '^jobq_queue_messages' |
	    tail -n 1 | cut -d: -f1)
	first_consumers=$(printf '%s\n' "$output" |
	    grep -n '^jobq_queue_consumers' | head -n 1 | cut -d: -f1)
	[ "$last_messages" -lt "$first_consumers" ]
}

@test "jobq-httpd: GET /metrics needs the token and is 503 without a broker" {
	migrate
	JOBQ_HTTP_TOKEN=t run send 'GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 401 Unauthorized\r'
	export JOBQ_AMQP_URL="amqp://guest:guest@127.0.0.1:$(dead_port)/"
	run send 'GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 503 Service Unavailable\r'
	assert_output --partial '{"error":"broker unavailable"}'
}

@test "jobq-httpd: HEAD answers the headers of GET without the body" {
	run send 'HEAD /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 200 OK\r'
	assert_output --partial 'Content-Length: 32'
	refute_output --partial '"broker"'
}

@test "jobq-httpd: keep-alive serves several requests on one connection" {
	run send 'GET /healthz HTTP/1.1\r\n\r\nPOST /job HTTP/1.1\r\nContent-Length: 15\r\n\r\n{"type":"echo"}GET /healthz HTTP/1.1\r\n\r\n'
	assert_equal "$(printf '%s\n' "$output" | grep -c '^HTTP/1.1 ')" 3
	assert_line --index 0 $'HTTP/1.1 200 OK\r'
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 1
	assert_equal "$(grep -c 'msg="request"' "$JOBS/httpd.log")" 3
}

@test "jobq-httpd: Connection: close ends the connection after one answer" {
	run send 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n'
	assert_equal "$(printf '%s\n' "$output" | grep -c '^HTTP/1.1 ')" 1
	assert_output --partial $'Connection: close\r'
}

@test "jobq-httpd: HTTP/1.0 gets one answer and the connection ends" {
	run send 'GET /healthz HTTP/1.0\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n'
	assert_equal "$(printf '%s\n' "$output" | grep -c '^HTTP/1.1 ')" 1
}

@test "jobq-httpd: a wrong method is 405 with Allow" {
	run send 'PUT /job HTTP/1.1\r\nContent-Length: 0\r\n\r\nDELETE /job/0a0a0a0a-0000-4000-8000-00000000000a HTTP/1.1\r\n\r\nPOST /healthz HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
	assert_equal "$(printf '%s\n' "$output" | grep -c '^HTTP/1.1 405 Method Not Allowed')" 3
	assert_output --partial $'Allow: POST\r'
	assert_output --partial $'Allow: GET, HEAD\r'
	assert_output --partial '{"error":"use POST"}'
}

@test "jobq-httpd: an unknown path is 404 with a JSON error" {
	run send 'GET /nothing/here HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 404 Not Found\r'
	assert_output --partial '{"error":"no such resource: /nothing/here"}'
}

@test "jobq-httpd: a document the tools refuse is 400 with the reason" {
	run post '{"type":"echo","colour":"red"}'
	assert_line --index 0 $'HTTP/1.1 400 Bad Request\r'
	assert_output --partial '{"error":"unknown member \"colour\""}'
	run post '{"type":"echo",}'
	assert_output --partial '"error":"line 1: invalid JSON'
	run post '[1]'
	assert_output --partial '"error":"a job must be a JSON object, not array"'
	run post "$(printf '{"type":"echo","payload":"\xff"}')"
	assert_line --index 0 $'HTTP/1.1 400 Bad Request\r'
	run post '{"type":"echo"} {"type":"echo"}'
	assert_output --partial '"error":"more than one document"'
	nothing_published
}

@test "jobq-httpd: a body that is not JSON by its type is 415" {
	run send 'POST /job HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{"type":"echo"}'
	assert_line --index 0 $'HTTP/1.1 415 Unsupported Media Type\r'
	assert_output --partial '"error":"a job must be sent as application/json, not text/plain"'
	nothing_published
}

@test "jobq-httpd: a body larger than -S is 413, and the connection ends" {
	run jobq-httpd -S 100 < <(printf 'POST /job HTTP/1.1\r\nContent-Length: 101\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n')
	assert_line --index 0 $'HTTP/1.1 413 Content Too Large\r'
	assert_output --partial '"error":"body larger than 100 bytes"'
	assert_equal "$(printf '%s\n' "$output" | grep -c '^HTTP/1.1 ')" 1
	run jobq-httpd -S 10 < <(printf 'POST /job HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{"type":"echo"}\r\n0\r\n\r\n')
	assert_line --index 0 $'HTTP/1.1 413 Content Too Large\r'
	nothing_published
}

@test "jobq-httpd: a head larger than -H is 431" {
	long=$(head -c 600 /dev/zero | tr '\0' a)
	run jobq-httpd -H 512 < <(printf 'GET /healthz HTTP/1.1\r\nX-Long: %s\r\n\r\n' "$long")
	assert_line --index 0 $'HTTP/1.1 431 Request Header Fields Too Large\r'
	assert_output --partial '"error":"request head larger than 512 bytes"'
}

@test "jobq-httpd: more headers than -n is 431" {
	run jobq-httpd -n 3 < <(printf 'GET /healthz HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n')
	assert_line --index 0 $'HTTP/1.1 431 Request Header Fields Too Large\r'
	assert_output --partial '"error":"more than 3 headers"'
}

@test "jobq-httpd: malformed requests are 400 and end the connection" {
	for req in 'GARBAGE\r\n\r\n' 'GET\r\n\r\n' 'GET /healthz\r\n\r\n' \
	    'GET healthz HTTP/1.1\r\n\r\n' 'GET /a b HTTP/1.1\r\n\r\n' \
	    'GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n' \
	    'GET /healthz HTTP/1.1\r\nBad Name: 1\r\n\r\n' \
	    'GET /healthz HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n' \
	    'GET /healthz HTTPS/1.1\r\n\r\n'; do
		run send "$req"'GET /healthz HTTP/1.1\r\n\r\n'
		assert_line --index 0 $'HTTP/1.1 400 Bad Request\r'
		assert_output --partial $'Connection: close\r'
		assert_equal "$(printf '%s\n' "$output" | grep -c '^HTTP/1.1 ')" 1
	done
}

@test "jobq-httpd: an HTTP version other than 1.x is 505" {
	run send 'GET /healthz HTTP/2.0\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 505 HTTP Version Not Supported\r'
}

@test "jobq-httpd: ambiguous framing is refused, nothing published" {
	for framing in 'Content-Length: 15\r\nContent-Length: 15' \
	    'Content-Length: 15\r\nTransfer-Encoding: chunked' \
	    'Content-Length: +15' 'Content-Length: 1 5' \
	    'Content-Length: -1' 'Content-Length: 0x0f' \
	    'Content-Length:' 'Content-Length: 99999999999999999999'; do
		run send "POST /job HTTP/1.1\\r\\n$framing\\r\\n\\r\\n"'{"type":"echo"}'
		assert_line --index 0 $'HTTP/1.1 400 Bad Request\r'
	done
	for te in 'gzip' 'chunked, chunked' 'identity'; do
		run send "POST /job HTTP/1.1\\r\\nTransfer-Encoding: $te\\r\\n\\r\\n0\\r\\n\\r\\n"
		assert_line --index 0 $'HTTP/1.1 501 Not Implemented\r'
	done
	nothing_published
}

@test "jobq-httpd: a body cut short is 400, nothing published" {
	run send 'POST /job HTTP/1.1\r\nContent-Length: 40\r\n\r\n{"type":"echo"}'
	assert_line --index 0 $'HTTP/1.1 400 Bad Request\r'
	assert_output --partial '"error":"body cut short"'
	run send 'POST /job HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nf\r\n{"type":"echo"}\r\n'
	assert_output --partial '"error":"body cut short"'
	run send 'POST /job HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n'
	assert_output --partial '"error":"malformed chunk size"'
	nothing_published
}

@test "jobq-httpd: a client too slow to send its request gets 408" {
	run jobq-httpd -t 1 < <(printf 'POST /job HTTP/1.1\r\nContent-Length: 15\r\n\r\n{"ty'; sleep 3)
	assert_line --index 0 $'HTTP/1.1 408 Request Timeout\r'
	nothing_published
}

@test "jobq-httpd: an idle connection is closed without an answer" {
	run jobq-httpd -i 1 < <(sleep 3)
	assert_success
	assert_output ''
}

@test "jobq-httpd: with a token, job routes need it and /healthz does not" {
	export JOBQ_HTTP_TOKEN=s3cret
	run post "$JOB"
	assert_line --index 0 $'HTTP/1.1 401 Unauthorized\r'
	assert_output --partial $'WWW-Authenticate: Bearer\r'
	assert_output --partial '{"error":"a valid bearer token is needed"}'
	run send 'GET /job/0a0a0a0a-0000-4000-8000-00000000000a HTTP/1.1\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 401 Unauthorized\r'
	run send 'GET /job/0a0a0a0a-0000-4000-8000-00000000000a HTTP/1.1\r\nAuthorization: Bearer s3cre\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 401 Unauthorized\r'
	run send 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 200 OK\r'
	nothing_published
	run send 'POST /job HTTP/1.1\r\nAuthorization: Bearer s3cret\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{"type":"echo"}'
	assert_line --index 0 $'HTTP/1.1 202 Accepted\r'
}

@test "jobq-httpd: without the token a body is not even read" {
	export JOBQ_HTTP_TOKEN=s3cret
	run send 'POST /job HTTP/1.1\r\nContent-Length: 50\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 401 Unauthorized\r'
	assert_output --partial $'Connection: close\r'
}

@test "jobq-httpd: the token guards /job and /metrics, not their look-alikes" {
	export JOBQ_HTTP_TOKEN=s3cret
	run send 'GET /jobs HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 404 Not Found\r'
	run send 'GET /metrics?x=1 HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 401 Unauthorized\r'
}

@test "jobq-httpd: Expect: 100-continue gets its interim answer" {
	run jobq-httpd < <(printf 'POST /job HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 15\r\nConnection: close\r\n\r\n'
	    sleep 0.5; printf '{"type":"echo"}')
	assert_line --index 0 $'HTTP/1.1 100 Continue\r'
	assert_output --partial $'HTTP/1.1 202 Accepted\r'
	run send 'POST /job HTTP/1.1\r\nExpect: something\r\nContent-Length: 0\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 417 Expectation Failed\r'
	nothing_published_but 1
}

@test "jobq-httpd: close among the Connection options ends the connection" {
	run send 'GET /healthz HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n'
	assert_equal "$(printf '%s\n' "$output" | grep -c '^HTTP/1.1 ')" 1
}

@test "jobq-httpd: answers carry a Date" {
	run send 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_output --regexp $'Date: [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} GMT\r'
}

@test "jobq-httpd: -T reads the token from a file" {
	printf 'fromfile\n' >"$JOBS/token"
	run jobq-httpd -T "$JOBS/token" < <(printf 'POST /job HTTP/1.1\r\nAuthorization: Bearer fromfile\r\nContent-Length: 15\r\n\r\n{"type":"echo"}')
	assert_line --index 0 $'HTTP/1.1 202 Accepted\r'
	run jobq-httpd -T "$JOBS/nothing" </dev/null
	assert_failure 66
	assert_output --partial "jobq-httpd: $JOBS/nothing: "
}

@test "jobq-httpd: one access-log line per request" {
	run send 'HEAD /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n'
	run cat "$JOBS/httpd.log"
	assert_line --index 0 --partial 'method=HEAD path="/healthz" status=200 bytes=0 '
	assert_line --index 1 --regexp '^ts=[^ ]+ level=info tool=jobq-httpd msg="request" method=GET path="/healthz" status=200 bytes=32 ms=[0-9]+ remote=-$'
	assert_line --index 2 --partial 'method=GET path="/nope" status=404'
}

@test "jobq-httpd: -L sends the log to a file" {
	run jobq-httpd -L "$JOBS/access.log" < <(printf 'GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n')
	assert_line --index 0 $'HTTP/1.1 200 OK\r'
	run cat "$JOBS/access.log"
	assert_output --partial 'path="/healthz" status=200'
}

@test "jobq-httpd: as CGI it answers with a Status line" {
	export GATEWAY_INTERFACE=CGI/1.1 REQUEST_METHOD=POST PATH_INFO=/job
	export CONTENT_LENGTH=15 CONTENT_TYPE=application/json
	run --separate-stderr jobq-httpd < <(printf '{"type":"echo"}')
	assert_line --index 0 $'Status: 202 Accepted\r'
	assert_output --regexp '\{"id":"[0-9a-f-]{36}"\}$'
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 1
	export SCRIPT_NAME=/cgi-bin/jobq
	run --separate-stderr jobq-httpd < <(printf '{"type":"echo"}')
	assert_output --regexp $'Location: /cgi-bin/jobq/job/[0-9a-f-]{36}\r'
	export REQUEST_METHOD=GET PATH_INFO=/job/nope CONTENT_LENGTH=
	run jobq-httpd </dev/null
	assert_line --index 0 $'Status: 400 Bad Request\r'
}

@test "jobq-httpd: over TCP, curl submits a job and reads its result" {
	command -v curl >/dev/null || skip "curl is not installed"
	migrate
	start store jobq-store
	start work jobq-work -j 1 -D "$ROOT/handlers"
	port=$(dead_port)
	start tcp "$ROOT/scripts/httpd-tcp" "$port"
	eventually curl -sf "http://127.0.0.1:$port/healthz"
	printf '%s' "$JOB" >"$JOBS/job.json"
	run curl -sf -d @"$JOBS/job.json" \
	    "http://127.0.0.1:$port/job"
	assert_success
	id=$(printf '%s\n' "$output" | sed -n 's/.*{"id":"\([^"]*\)"}.*/\1/p')
	jobq-result -t 30 "$id" >/dev/null
	run curl -sf "http://127.0.0.1:$port/job/$id"
	assert_success
	assert_output --partial "\"id\":\"$id\",\"type\":\"echo\",\"status\":\"succeeded\",\"result\":{\"a\":\"b/c\"}"
}

@test "jobq-httpd: log lines never reach a client on stderr's socket" {
	command -v socat >/dev/null || skip "socat is not installed"
	port=$(dead_port)
	start tcp socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" \
	    "EXEC:$ROOT/bin/jobq-httpd,stderr"
	eventually bash -c "(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null"
	run bash -c "exec 3<>/dev/tcp/127.0.0.1/$port
	    printf 'GET /healthz HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\nConnection: close\r\n\r\n' >&3
	    timeout 10 cat <&3"
	assert_equal "$(printf '%s\n' "$output" | grep -c '^HTTP/1.1 ')" 2
	assert_output --partial '{"broker":"ok","database":"ok"}'
	refute_output --partial 'level='
}

@test "jobq-httpd: usage errors exit 64" {
	run jobq-httpd -H 1
	assert_failure 64
	assert_output --partial '-H 1: not a number of bytes from 256 to 1048576'
	run jobq-httpd -t 0
	assert_failure 64
	run jobq-httpd extra
	assert_failure 64
	run jobq-httpd -u http://u:pw@localhost/ </dev/null
	assert_failure 64
	assert_output 'jobq-httpd: http://u:****@localhost/: not an amqp:// or amqps:// URL'

	run jobq-httpd -V
	assert_success
	assert_output 'jobq-httpd 0.1.0'
}

@test "jobq-httpd: a kept broker connection that died is opened again" {
	req='POST /job HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s'
	{
		printf "$req" "${#JOB}" "$JOB"
		eventually has_depth "$JOBQ_JOB_QUEUE" 1 2>/dev/null
		broker_ctl close_all_connections "test" >/dev/null
		sleep 0.5
		printf "$req" "${#JOB}" "$JOB"
	} | jobq-httpd 2>"$JOBS/httpd.log" >"$JOBS/out"
	run grep -c '^HTTP/1.1 202 Accepted' "$JOBS/out"
	assert_output 2
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 2
	run logged httpd 'msg="broker connection lost"'
	assert_success
}

@test "jobq-httpd: a kept database connection that died is opened again" {
	migrate
	req='GET /job/3b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a09 HTTP/1.1\r\n\r\n'
	{
		printf "$req"
		sleep 0.5
		cut_db_connections
		sleep 0.5
		printf "$req"
	} | jobq-httpd 2>"$JOBS/httpd.log" >"$JOBS/out"
	run grep -c '^HTTP/1.1 404 Not Found' "$JOBS/out"
	assert_output 2
	run logged httpd 'msg="database connection lost"'
	assert_success
}

@test "jobq-httpd: the broker URLs of JOBQ_AMQP_URL are tried in turn" {
	JOBQ_AMQP_URL="amqp://guest:guest@127.0.0.1:$(dead_port)/ $JOBQ_AMQP_URL" run post "$JOB"
	assert_line --index 0 $'HTTP/1.1 202 Accepted\r'
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 1
}

@test "jobq-httpd: /healthz and /metrics open dead kept connections again" {
	migrate
	req='GET /metrics HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n'
	{
		printf "$req"
		sleep 1
		broker_ctl close_all_connections "test" >/dev/null
		cut_db_connections
		sleep 0.5
		printf "$req"
	} | jobq-httpd 2>"$JOBS/httpd.log" >"$JOBS/out"
	run grep -c '^HTTP/1.1 200 OK' "$JOBS/out"
	assert_output 4
	run logged httpd 'msg="database connection lost"'
	assert_success
	run logged httpd 'msg="broker connection lost"'
	assert_success
}
