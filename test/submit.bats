#!/usr/bin/env bats
# jobq-submit: job documents in, ids out, jobs on the job queue.

# run --separate-stderr sets stderr and stderr_lines.
# shellcheck disable=SC2154
load helpers

bats_require_minimum_version 1.5.0

UUID='[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'
TIME='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z'

# doc_of BYTES: a job document of exactly BYTES bytes, no newline.
doc_of() {
	local pad
	pad=$(head -c "$(($1 - 25))" /dev/zero | tr '\0' x)
	printf '{"type":"t","payload":"%s"}' "$pad"
}

# queued: the number of jobs waiting on this test's job queue.
queued() {
	depth "$JOBQ_JOB_QUEUE"
}

# masked PORT: a regular expression for the broker URL with the
# password hidden.
masked() {
	printf '%s' "amqp://guest:\*\*\*\*@127\.0\.0\.1:$1"
}

# broker_ctl ARGS...: rabbitmqctl on this run's broker, as an operator.
broker_ctl() {
	HOME=$JOBQ_TEST_SERVERS/rabbit/home \
	    ERL_EPMD_PORT=$JOBQ_TEST_EPMD_PORT \
	    /usr/lib/rabbitmq/bin/rabbitmqctl -q \
	    -n "$JOBQ_TEST_RABBIT_NODE" "$@"
}

# One document

@test "jobq-submit: one document prints its id as one lowercase UUID" {
	run --separate-stderr jobq-submit <<<'{"type":"echo","payload":1}'
	assert_success
	assert_output --regexp "^$UUID\$"
	assert_equal "$stderr" ""
}

@test "jobq-submit: the job goes on the job queue with its properties" {
	id=$(jobq-submit <<<'{"type":"echo","payload":{"n":1}}')

	run qtool get "$JOBQ_JOB_QUEUE"
	assert_success
	assert_line --index 0 --regexp "^routing_key=echo message_id=$id \
content_type=application/json type=echo delivery_mode=2 \
traceparent=00-[0-9a-f]{32}-[0-9a-f]{16}-01\$"
}

@test "jobq-submit: the job message holds the job, attempt 1, a time" {
	id=$(jobq-submit <<<'{"type":"echo","payload":{"n":1}}')

	run qtool get "$JOBQ_JOB_QUEUE"
	assert_success
	body=${lines[1]}
	assert_regex "$body" '^\{.*\}$'
	assert_regex "$body" '[{,]"v":1[,}]'
	assert_regex "$body" "[{,]\"id\":\"$id\"[,}]"
	assert_regex "$body" '[{,]"type":"echo"[,}]'
	assert_regex "$body" '[{,]"payload":\{"n":1\}[,}]'
	assert_regex "$body" '[{,]"attempt":1[,}]'
	assert_regex "$body" "[{,]\"submitted_at\":\"$TIME\"[,}]"
}

@test "jobq-submit: max_attempts and timeout travel with the job" {
	jobq-submit <<<'{"type":"echo","max_attempts":3,"timeout":10}'

	run qtool get "$JOBQ_JOB_QUEUE"
	assert_success
	assert_regex "${lines[1]}" '[{,]"max_attempts":3[,}]'
	assert_regex "${lines[1]}" '[{,]"timeout":10[,}]'
}

@test "jobq-submit: a client's id is kept, printed in lowercase" {
	run --separate-stderr jobq-submit \
	    <<<'{"type":"echo","id":"6F1C1F38-5A43-4E0B-9D6E-0C4B7C1D2E3F"}'
	assert_success
	assert_output 6f1c1f38-5a43-4e0b-9d6e-0c4b7c1d2e3f

	run qtool get "$JOBQ_JOB_QUEUE"
	assert_line --index 0 --partial \
	    ' message_id=6f1c1f38-5a43-4e0b-9d6e-0c4b7c1d2e3f '
	assert_line --index 1 --partial \
	    '"id":"6f1c1f38-5a43-4e0b-9d6e-0c4b7c1d2e3f"'
}

@test "jobq-submit: the payload is kept as is, in compact form" {
	jobq-submit <<<'{"type":"echo", "payload": {"a": [1, 2, {"b":"x\/y"}]}}'

	run qtool get "$JOBQ_JOB_QUEUE"
	assert_success
	assert_line --index 1 --partial '"payload":{"a":[1,2,{"b":"x/y"}]}'
}

@test "jobq-submit: a missing payload becomes null" {
	jobq-submit <<<'{"type":"echo"}'

	run qtool get "$JOBQ_JOB_QUEUE"
	assert_success
	assert_regex "${lines[1]}" '[{,]"payload":null[,}]'
}

@test "jobq-submit: a type of 64 characters is accepted" {
	type=$(printf '%064d' 0)

	run --separate-stderr jobq-submit <<<"{\"type\":\"$type\"}"
	assert_success
	assert_output --regexp "^$UUID\$"
	assert_equal "$(queued)" 1
}

# Streams

@test "jobq-submit: a stream prints the ids in input order" {
	a=00000000-0000-4000-8000-00000000000a
	b=00000000-0000-4000-8000-00000000000b
	c=00000000-0000-4000-8000-00000000000c
	d=00000000-0000-4000-8000-00000000000d
	cat >"$JOBS/in" <<-EOF
	{"type":"t","id":"$a"}
	{"type":"t","id":"$b"} {"type":"t","id":"$c"}  {"type":"t","id":"$d"}
	EOF

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_success
	assert_output "$a
$b
$c
$d"
	assert_equal "$(queued)" 4
}

@test "jobq-submit: the printed ids are those of the queued jobs, in order" {
	cat >"$JOBS/in" <<-'EOF'
	{"type":"a"}
	{"type":"b"} {"type":"c"}
	EOF

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_success
	assert_equal "${#lines[@]}" 3
	ids=("${lines[@]}")
	for i in 0 1 2; do
		run qtool get "$JOBQ_JOB_QUEUE"
		assert_line --index 0 --partial " message_id=${ids[i]} "
	done
}

@test "jobq-submit: a document may span several lines" {
	cat >"$JOBS/in" <<-'EOF'
	{
	  "type": "echo",
	  "payload": [
	    1
	  ]
	}
	EOF

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_success
	assert_output --regexp "^$UUID\$"
	assert_equal "$(queued)" 1
}

@test "jobq-submit: 600 documents, more than the window, all go in order" {
	printf '{"type":"bulk","id":"00000000-0000-4000-8000-%012d"}\n' \
	    $(seq 600) >"$JOBS/in"
	printf '00000000-0000-4000-8000-%012d\n' $(seq 600) >"$JOBS/expected"

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_success
	assert_output "$(cat "$JOBS/expected")"
	assert_equal "$(queued)" 600
}

@test "jobq-submit: empty input exits 0 and prints nothing" {
	run --separate-stderr jobq-submit </dev/null
	assert_success
	assert_output ""
	assert_equal "$stderr" ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: input of only whitespace exits 0 and prints nothing" {
	printf ' \n\t\r\n\n   ' >"$JOBS/in"

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_success
	assert_output ""
	assert_equal "$stderr" ""
	assert_equal "$(queued)" 0
}

# A bad document stops the stream

@test "jobq-submit: a bad document stops the stream at its line" {
	cat >"$JOBS/in" <<-'EOF'
	{"type":"a"}

	{"type":"b"} {"type":"c"}
	{"type":"d",
	 "payload":1}
	{"type":"e","colour":"red"}
	{"type":"f"}
	EOF

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_failure 65
	assert_equal "$stderr" 'jobq-submit: line 6: unknown member "colour"'
	assert_equal "${#lines[@]}" 4
	assert_equal "$(queued)" 4
}

@test "jobq-submit: invalid JSON stops the stream at its line" {
	cat >"$JOBS/in" <<-'EOF'
	{"type":"a"}
	{"type":"b"}

	{"type":"c",}
	{"type":"d"}
	EOF

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_failure 65
	assert_regex "$stderr" '^jobq-submit: line 4: invalid JSON: .'
	assert_equal "${#lines[@]}" 2
	assert_equal "$(queued)" 2
}

@test "jobq-submit: a bad document is reported at the line it begins on" {
	cat >"$JOBS/in" <<-'EOF'
	{"type":"a"}
	{"type":"b",
	 "payload":-01}
	EOF

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_failure 65
	assert_regex "$stderr" '^jobq-submit: line 2: invalid JSON: .'
	assert_equal "${#lines[@]}" 1
}

@test "jobq-submit: the jobs before a bad document are the ones queued" {
	a=00000000-0000-4000-8000-00000000000a
	b=00000000-0000-4000-8000-00000000000b
	cat >"$JOBS/in" <<-EOF
	{"type":"t","id":"$a"}
	{"type":"t","id":"$b"}
	{"type":1}
	{"type":"t"}
	EOF

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_failure 65
	assert_output "$a
$b"
	run qtool get "$JOBQ_JOB_QUEUE"
	assert_line --index 0 --partial " message_id=$a "
	run qtool get "$JOBQ_JOB_QUEUE"
	assert_line --index 0 --partial " message_id=$b "
	run qtool get "$JOBQ_JOB_QUEUE"
	assert_failure 1
}

# Bad documents: exit 65, say what is wrong, queue nothing

@test "jobq-submit: invalid JSON exits 65" {
	run --separate-stderr jobq-submit <<<'{"type" "echo"}'
	assert_failure 65
	assert_regex "$stderr" '^jobq-submit: line 1: invalid JSON: .'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a trailing comma is invalid JSON" {
	run --separate-stderr jobq-submit <<<'{"type":"echo",}'
	assert_failure 65
	assert_regex "$stderr" '^jobq-submit: line 1: invalid JSON: .'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a comment is invalid JSON" {
	run --separate-stderr jobq-submit <<<'{"type": /* hi */ "echo"}'
	assert_failure 65
	assert_regex "$stderr" '^jobq-submit: line 1: invalid JSON: .'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: single quotes are invalid JSON" {
	run --separate-stderr jobq-submit <<<"{'type':'echo'}"
	assert_failure 65
	assert_regex "$stderr" '^jobq-submit: line 1: invalid JSON: .'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a number with a leading zero is invalid JSON" {
	run --separate-stderr jobq-submit <<<'{"type":"echo","payload":01}'
	assert_failure 65
	assert_regex "$stderr" '^jobq-submit: line 1: invalid JSON: .'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: NaN is invalid JSON" {
	run --separate-stderr jobq-submit <<<'{"type":"echo","payload":NaN}'
	assert_failure 65
	assert_regex "$stderr" '^jobq-submit: line 1: invalid JSON: .'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a raw control character in a string is invalid JSON" {
	printf '{"type":"echo","payload":"a\tb"}\n' >"$JOBS/in"

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_failure 65
	assert_regex "$stderr" '^jobq-submit: line 1: invalid JSON: .'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: invalid UTF-8 is refused" {
	printf '{"type":"echo","payload":"\xff"}\n' >"$JOBS/in"

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_failure 65
	assert_regex "$stderr" '^jobq-submit: line 1: invalid JSON: .*utf-8'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a NUL byte is refused" {
	printf '{"type":"echo","payload":"a\0b"}\n' >"$JOBS/in"

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_failure 65
	assert_equal "$stderr" "jobq-submit: line 1: NUL byte in input"
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a document cut short by the end of input is refused" {
	printf '{"type":"echo","payload":[1,' >"$JOBS/in"

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_failure 65
	assert_equal "$stderr" \
	    "jobq-submit: line 1: document cut short by the end of input"
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: nesting 64 levels deep is accepted" {
	open=$(printf '[%.0s' $(seq 63))
	close=$(printf ']%.0s' $(seq 63))

	doc="{\"type\":\"t\",\"payload\":$open$close}"

	run --separate-stderr jobq-submit <<<"$doc"
	assert_success
	assert_equal "$(queued)" 1
}

@test "jobq-submit: nesting deeper than 64 levels is refused" {
	open=$(printf '[%.0s' $(seq 64))
	close=$(printf ']%.0s' $(seq 64))

	doc="{\"type\":\"t\",\"payload\":$open$close}"

	run --separate-stderr jobq-submit <<<"$doc"
	assert_failure 65
	assert_equal "$stderr" \
	    "jobq-submit: line 1: nesting deeper than 64 levels"
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a top-level array is not a job" {
	run --separate-stderr jobq-submit <<<'[{"type":"echo"}]'
	assert_failure 65
	assert_equal "$stderr" \
	    "jobq-submit: line 1: a job must be a JSON object, not array"
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a string is not a job" {
	run --separate-stderr jobq-submit <<<'"echo"'
	assert_failure 65
	assert_equal "$stderr" \
	    "jobq-submit: line 1: a job must be a JSON object, not string"
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: null is not a job" {
	run --separate-stderr jobq-submit <<<'null'
	assert_failure 65
	assert_equal "$stderr" \
	    "jobq-submit: line 1: a job must be a JSON object, not null"
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a number at the end of input is not a job" {
	printf '42' >"$JOBS/in"

	run --separate-stderr jobq-submit <"$JOBS/in"
	assert_failure 65
	assert_equal "$stderr" \
	    "jobq-submit: line 1: a job must be a JSON object, not int"
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: an unknown member is named" {
	run --separate-stderr jobq-submit <<<'{"type":"echo","paylod":1}'
	assert_failure 65
	assert_equal "$stderr" 'jobq-submit: line 1: unknown member "paylod"'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a missing type is refused" {
	run --separate-stderr jobq-submit <<<'{"payload":1}'
	assert_failure 65
	assert_equal "$stderr" 'jobq-submit: line 1: member "type" is missing'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a type that is not a string is refused" {
	run --separate-stderr jobq-submit <<<'{"type":1}'
	assert_failure 65
	assert_equal "$stderr" \
	    'jobq-submit: line 1: member "type": must be a string, not int'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a type of 65 characters is refused" {
	type=$(printf '%065d' 0)

	run --separate-stderr jobq-submit <<<"{\"type\":\"$type\"}"
	assert_failure 65
	assert_regex "$stderr" \
	    '^jobq-submit: line 1: member "type": must be 1 to 64 characters'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a type starting with a dot is refused" {
	run --separate-stderr jobq-submit <<<'{"type":".echo"}'
	assert_failure 65
	assert_regex "$stderr" \
	    '^jobq-submit: line 1: member "type": must be 1 to 64 characters'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: a type holding a slash is refused" {
	run --separate-stderr jobq-submit <<<'{"type":"a/b"}'
	assert_failure 65
	assert_regex "$stderr" \
	    '^jobq-submit: line 1: member "type": must be 1 to 64 characters'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: an empty type is refused" {
	run --separate-stderr jobq-submit <<<'{"type":""}'
	assert_failure 65
	assert_regex "$stderr" \
	    '^jobq-submit: line 1: member "type": must be 1 to 64 characters'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: an id that is not a UUID is refused" {
	run --separate-stderr jobq-submit \
	    <<<'{"type":"echo","id":"6f1c1f38-5a43-4e0b-9d6e-0c4b7c1d2e3"}'
	assert_failure 65
	assert_equal "$stderr" "jobq-submit: line 1: member \"id\": \
not a UUID in 8-4-4-4-12 hexadecimal form"
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: an id that is not a string is refused" {
	run --separate-stderr jobq-submit <<<'{"type":"echo","id":7}'
	assert_failure 65
	assert_equal "$stderr" \
	    'jobq-submit: line 1: member "id": must be a string, not int'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: max_attempts 0 is refused" {
	run --separate-stderr jobq-submit <<<'{"type":"echo","max_attempts":0}'
	assert_failure 65
	assert_equal "$stderr" \
	    'jobq-submit: line 1: member "max_attempts": must be from 1 to 1000'
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: max_attempts 1.5 is refused" {
	run --separate-stderr jobq-submit \
	    <<<'{"type":"echo","max_attempts":1.5}'
	assert_failure 65
	assert_equal "$stderr" "jobq-submit: line 1: member \"max_attempts\": \
must be an integer, not double"
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: timeout 0 is refused" {
	run --separate-stderr jobq-submit <<<'{"type":"echo","timeout":0}'
	assert_failure 65
	assert_equal "$stderr" \
	    'jobq-submit: line 1: member "timeout": must be from 1 to 86400'
	assert_output ""
	assert_equal "$(queued)" 0
}

# Size limits

@test "jobq-submit: -S 100 takes a document of 100 bytes" {
	doc_of 100 >"$JOBS/in"

	run --separate-stderr jobq-submit -S 100 <"$JOBS/in"
	assert_success
	assert_output --regexp "^$UUID\$"
	assert_equal "$(queued)" 1
}

@test "jobq-submit: -S 100 refuses a document of 101 bytes" {
	doc_of 101 >"$JOBS/in"

	run --separate-stderr jobq-submit -S 100 <"$JOBS/in"
	assert_failure 65
	assert_equal "$stderr" \
	    "jobq-submit: line 1: document larger than 100 bytes"
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: JOBQ_MAX_SIZE=100 refuses a document of 101 bytes" {
	doc_of 101 >"$JOBS/in"

	JOBQ_MAX_SIZE=100 run --separate-stderr jobq-submit <"$JOBS/in"
	assert_failure 65
	assert_equal "$stderr" \
	    "jobq-submit: line 1: document larger than 100 bytes"
	assert_output ""
	assert_equal "$(queued)" 0
}

@test "jobq-submit: the whitespace around a document is not counted" {
	{ printf ' \n\t '; doc_of 100; printf '   \n\n'; } >"$JOBS/in"

	run --separate-stderr jobq-submit -S 100 <"$JOBS/in"
	assert_success
	assert_equal "$(queued)" 1
}

@test "jobq-submit: --max-size is -S" {
	doc_of 101 >"$JOBS/in"

	run --separate-stderr jobq-submit --max-size 100 <"$JOBS/in"
	assert_failure 65
	assert_equal "$stderr" \
	    "jobq-submit: line 1: document larger than 100 bytes"
}

@test "jobq-submit: an empty JOBQ_MAX_SIZE counts as unset" {
	doc_of 1000 >"$JOBS/in"

	JOBQ_MAX_SIZE='' run --separate-stderr jobq-submit <"$JOBS/in"
	assert_success
	assert_equal "$(queued)" 1
}

@test "jobq-submit: -S wins over JOBQ_MAX_SIZE" {
	doc_of 100 >"$JOBS/in"

	JOBQ_MAX_SIZE=50 run --separate-stderr jobq-submit -S 100 <"$JOBS/in"
	assert_success
	assert_equal "$(queued)" 1
}

@test "jobq-submit: the size limit holds across reads of the input" {
	doc_of 200001 >"$JOBS/in"

	run --separate-stderr jobq-submit -S 200000 <"$JOBS/in"
	assert_failure 65
	assert_equal "$stderr" \
	    "jobq-submit: line 1: document larger than 200000 bytes"
	assert_equal "$(queued)" 0
}

# Names and topology

@test "jobq-submit: -x and -q name the exchange and the job queue" {
	run --separate-stderr jobq-submit -x "$JOBQ_EXCHANGE.x" \
	    -q "$JOBQ_JOB_QUEUE.x" <<<'{"type":"echo"}'
	assert_success
	assert_equal "$(depth "$JOBQ_JOB_QUEUE.x")" 1
	run qtool depth "$JOBQ_JOB_QUEUE"
	assert_failure
}

@test "jobq-submit: -r names the result queue it declares" {
	run --separate-stderr jobq-submit -r "$JOBQ_RESULT_QUEUE.x" </dev/null
	assert_success
	assert_equal "$(depth "$JOBQ_RESULT_QUEUE.x")" 0
}

@test "jobq-submit: an exchange of another kind exits 69" {
	run --separate-stderr jobq-submit -x amq.fanout <<<'{"type":"echo"}'
	assert_failure 69
	assert_regex "$stderr" '^jobq-submit: declare exchange amq\.fanout: '
	assert_regex "$stderr" ': broker closed the channel: 406 '
	assert_output ""
}

@test "jobq-submit: a job the broker refuses exits 75" {
	broker_ctl set_policy "$JOBQ_JOB_QUEUE.full" "^$JOBQ_JOB_QUEUE\$" \
	    '{"max-length":0,"overflow":"reject-publish"}' \
	    --apply-to queues

	run --separate-stderr jobq-submit \
	    <<<'{"type":"echo","id":"6f1c1f38-5a43-4e0b-9d6e-0c4b7c1d2e3f"}'
	assert_failure 75
	assert_equal "$stderr" "jobq-submit: job \
6f1c1f38-5a43-4e0b-9d6e-0c4b7c1d2e3f: the broker refused it; try again"
	assert_output ""
}

@test "jobq-submit: a job that no queue takes exits 69" {
	id=6f1c1f38-5a43-4e0b-9d6e-0c4b7c1d2e3f

	run --separate-stderr jobq-submit < <(
		echo '{"type":"a"}'
		eventually has_depth "$JOBQ_JOB_QUEUE" 1 2>/dev/null
		broker_ctl delete_queue "$JOBQ_JOB_QUEUE" >/dev/null
		echo "{\"type\":\"b\",\"id\":\"$id\"}"
	)
	assert_failure 69
	assert_equal "$stderr" "jobq-submit: job $id: no queue is bound \
to exchange $JOBQ_EXCHANGE"
	assert_output --regexp "^$UUID\$"
}

# The broker

@test "jobq-submit: -u names the broker" {
	url=$JOBQ_AMQP_URL

	JOBQ_AMQP_URL=amqp://guest:guest@127.0.0.1:$(dead_port)/ \
	    run --separate-stderr jobq-submit -u "$url" <<<'{"type":"echo"}'
	assert_success
	assert_equal "$(queued)" 1
}

@test "jobq-submit: an unreachable broker exits 69, password hidden" {
	port=$(dead_port)

	JOBQ_AMQP_URL=amqp://guest:secret@127.0.0.1:$port/ \
	    run --separate-stderr jobq-submit <<<'{"type":"echo"}'
	assert_failure 69
	assert_equal "${#stderr_lines[@]}" 1
	assert_regex "$stderr" "^jobq-submit: .*$(masked "$port")/"
	refute_regex "$stderr" secret
	assert_output ""
}

@test "jobq-submit: an unreachable broker given by -u exits 69" {
	port=$(dead_port)

	run --separate-stderr jobq-submit \
	    -u "amqp://guest:secret@127.0.0.1:$port/" <<<'{"type":"echo"}'
	assert_failure 69
	assert_equal "${#stderr_lines[@]}" 1
	assert_regex "$stderr" "^jobq-submit: .*$(masked "$port")/"
	refute_regex "$stderr" secret
	assert_output ""
}

@test "jobq-submit: the password is hidden in a URL without a vhost" {
	port=$(dead_port)

	run --separate-stderr jobq-submit \
	    -u "amqp://guest:secret@127.0.0.1:$port" <<<'{"type":"echo"}'
	assert_failure 69
	assert_regex "$stderr" "^jobq-submit: .*$(masked "$port")"
	refute_regex "$stderr" secret
}

@test "jobq-submit: a wrong password exits 69, password hidden" {
	url=${JOBQ_AMQP_URL/guest:guest@/guest:secret@}

	run --separate-stderr jobq-submit -u "$url" <<<'{"type":"echo"}'
	assert_failure 69
	assert_regex "$stderr" '^jobq-submit: .*guest:\*\*\*\*@.*: log in: '
	refute_regex "$stderr" secret
	assert_output ""
}

# Input and output

@test "jobq-submit: unreadable input exits 74" {
	run --separate-stderr jobq-submit </
	assert_failure 74
	assert_equal "$stderr" "jobq-submit: stdin: Is a directory"
	assert_equal "$(queued)" 0
}

@test "jobq-submit: ids that cannot be written exit 74" {
	run --separate-stderr sh -c 'jobq-submit >/dev/full' \
	    <<<'{"type":"echo"}'
	assert_failure 74
	assert_equal "$stderr" "jobq-submit: stdout: No space left on device"
}

# Usage

@test "jobq-submit: an unknown option exits 64 with the usage" {
	run --separate-stderr jobq-submit -Z </dev/null
	assert_failure 64
	assert_regex "${stderr_lines[-1]}" '^usage: jobq-submit '
	assert_output ""
}

@test "jobq-submit: an operand exits 64 with the usage" {
	run --separate-stderr jobq-submit jobs.json </dev/null
	assert_failure 64
	assert_regex "$stderr" '^usage: jobq-submit '
	assert_output ""
}

@test "jobq-submit: -h prints the usage on stdout and exits 0" {
	run --separate-stderr jobq-submit -h </dev/null
	assert_success
	assert_output --regexp '^usage: jobq-submit \[-hQV\] '
	assert_equal "$stderr" ""
}

@test "jobq-submit: -V prints the version" {
	run --separate-stderr jobq-submit -V </dev/null
	assert_success
	assert_output "jobq-submit 0.1.0"
}

@test "jobq-submit: -S 0 exits 64" {
	run --separate-stderr jobq-submit -S 0 </dev/null
	assert_failure 64
	assert_equal "${stderr_lines[0]}" \
	    "jobq-submit: -S 0: not a number of bytes from 1 to 67108864"
}

@test "jobq-submit: -S abc exits 64" {
	run --separate-stderr jobq-submit -S abc </dev/null
	assert_failure 64
	assert_equal "${stderr_lines[0]}" \
	    "jobq-submit: -S abc: not a number of bytes from 1 to 67108864"
}

@test "jobq-submit: -S above 64 MiB exits 64" {
	run --separate-stderr jobq-submit -S 67108865 </dev/null
	assert_failure 64
	assert_equal "${stderr_lines[0]}" \
	    "jobq-submit: -S 67108865: not a number of bytes from 1 to 67108864"
}

@test "jobq-submit: JOBQ_MAX_SIZE=abc exits 64" {
	JOBQ_MAX_SIZE=abc run --separate-stderr jobq-submit </dev/null
	assert_failure 64
	assert_equal "$stderr" "jobq-submit: JOBQ_MAX_SIZE: abc: \
not a number of bytes from 1 to 67108864"
}

@test "jobq-submit: an empty exchange name exits 64" {
	run --separate-stderr jobq-submit -x '' </dev/null
	assert_failure 64
	assert_equal "$stderr" \
	    "jobq-submit: exchange name must be 1 to 255 bytes"
}

@test "jobq-submit: a queue name of 256 bytes exits 64" {
	run --separate-stderr jobq-submit -q "$(printf '%0256d' 0)" </dev/null
	assert_failure 64
	assert_equal "$stderr" "jobq-submit: queue names must be 1 to 255 bytes"
}

@test "jobq-submit: a URL that is not amqp:// exits 64, password hidden" {
	run --separate-stderr jobq-submit \
	    -u http://guest:secret@127.0.0.1/ </dev/null
	assert_failure 64
	assert_equal "$stderr" "jobq-submit: \
http://guest:****@127.0.0.1/: not an amqp:// or amqps:// URL"
}
