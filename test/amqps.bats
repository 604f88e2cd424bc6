#!/usr/bin/env bats
# TLS to the broker: amqps:// URLs against the TLS listener that
# scripts/servers gives the suite's broker, whose certificate names
# localhost and is signed by a CA of its own in $JOBQ_TEST_TLS.

load helpers

setup() {
	_setup_world
	[ -n "${JOBQ_TEST_AMQPS_PORT-}" ] ||
	    fail "the suite's broker has no TLS listener: is openssl missing?"
	AMQPS=amqps://guest:guest@localhost:$JOBQ_TEST_AMQPS_PORT/
	export JOBQ_AMQP_CACERT=$JOBQ_TEST_TLS/ca.crt
}

# A key and a certificate that no CA of the broker's signed.
stranger() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	    -days 2 -subj /CN=stranger -keyout "$JOBS/stranger.key" \
	    -out "$JOBS/stranger.crt" 2>/dev/null
}

@test "amqps: jobs go from submit through work and store over TLS" {
	migrate
	export JOBQ_AMQP_URL=$AMQPS
	start store jobq-store
	start work jobq-work -j 2 sh -c 'tr a-z A-Z'
	for i in 1 2 3; do
		echo "{\"type\":\"tls\",\"payload\":\"job $i\"}"
	done >"$JOBS/docs"
	run --separate-stderr jobq-submit <"$JOBS/docs"
	assert_success
	assert_equal "${#lines[@]}" 3
	run --separate-stderr jobq-result -w -t 30 "${lines[@]}"
	assert_success
	run sql "SELECT result FROM jobs ORDER BY result"
	assert_output "$(printf '"JOB 1"\n"JOB 2"\n"JOB 3"')"
	# The broker saw both come over TLS, and nothing in clear.
	run broker_ctl list_connections client_properties ssl
	assert_success
	assert_output --regexp '"connection_name","jobq-store".*	true'
	assert_output --regexp '"connection_name","jobq-work".*	true'
	refute_output --regexp '"jobq-(store|work)".*	false'
}

@test "amqps: a client certificate is sent when the broker asks for one" {
	run --separate-stderr env JOBQ_AMQP_CERT="$JOBQ_TEST_TLS/client.crt" \
	    JOBQ_AMQP_KEY="$JOBQ_TEST_TLS/client.key" \
	    jobq-submit -u "$AMQPS" <<<'{"type":"tls","payload":1}'
	assert_success
	assert_regex "$output" '^[0-9a-f-]{36}$'
	stranger
	run --separate-stderr env JOBQ_AMQP_CERT="$JOBS/stranger.crt" \
	    JOBQ_AMQP_KEY="$JOBS/stranger.key" \
	    jobq-submit -u "$AMQPS" <<<'{"type":"tls","payload":1}'
	assert_failure 69
	assert_output ''
	assert_regex "$stderr" '^jobq-submit: broker amqps://guest:\*\*\*\*@localhost:[0-9]+/: .*SSL'
}

@test "amqps: a certificate of another CA or for another name exits 69" {
	run --separate-stderr env -u JOBQ_AMQP_CACERT jobq-submit -u "$AMQPS" \
	    <<<'{"type":"tls","payload":1}'
	assert_failure 69
	assert_regex "$stderr" ': cannot connect: SSL peer cert verification failed$'
	run --separate-stderr jobq-work -u \
	    "amqps://guest:guest@127.0.0.1:$JOBQ_TEST_AMQPS_PORT/" cat
	assert_failure 69
	assert_regex "$stderr" 'amqps://guest:\*\*\*\*@127.0.0.1:[0-9]+/: cannot connect: SSL hostname verification failed"$'
	refute_output --partial 'guest:guest'
}

@test "amqps: TLS files that cannot be used exit 78 and say which" {
	migrate
	run --separate-stderr env JOBQ_AMQP_CACERT="$JOBS/none.pem" \
	    jobq-submit -u "$AMQPS" <<<'{"type":"tls","payload":1}'
	assert_failure 78
	assert_equal "$stderr" "jobq-submit: JOBQ_AMQP_CACERT $JOBS/none.pem: cannot read CA certificates from it"
	run --separate-stderr env JOBQ_AMQP_CERT="$JOBQ_TEST_TLS/client.crt" \
	    jobq-store -u "$AMQPS"
	assert_failure 78
	assert_regex "$stderr" 'level=error tool=jobq-store msg="exiting" err="JOBQ_AMQP_CERT and JOBQ_AMQP_KEY go together: set both or neither"$'
	run --separate-stderr env JOBQ_AMQP_CERT="$JOBQ_TEST_TLS/client.key" \
	    JOBQ_AMQP_KEY="$JOBQ_TEST_TLS/client.key" jobq-dead -u "$AMQPS" -l
	assert_failure 78
	assert_regex "$stderr" '^jobq-dead: JOBQ_AMQP_CERT .*client.key, JOBQ_AMQP_KEY .*client.key: not a certificate and its key$'
}

@test "amqps: jobq-httpd takes jobs over a TLS broker connection" {
	migrate
	run --separate-stderr env JOBQ_AMQP_URL="$AMQPS" jobq-httpd < <(
	    printf 'POST /job HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 26\r\nConnection: close\r\n\r\n{"type":"tls","payload":7}')
	assert_success
	assert_line --partial 'HTTP/1.1 202'
	eventually has_depth "$JOBQ_JOB_QUEUE" 1
}
