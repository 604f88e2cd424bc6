#!/usr/bin/env bats
# Bad job documents, end to end: jobq-submit exits 65 and POST /job
# answers 400 (413 when too large), each with a message that says what
# is wrong, and nothing reaches the job queue.

load helpers

# check_both DOCUMENT MESSAGE: the document is refused by both.
check_both() {
	local doc=$1 msg=$2

	run --separate-stderr jobq-submit <<<"$doc"
	assert_failure 65
	assert_equal "$stderr" "jobq-submit: line 1: $msg"
	assert_output ''
	run --separate-stderr jobq-httpd < <(printf '%s\r\n' \
	    'POST /job HTTP/1.1' 'Content-Type: application/json' \
	    "Content-Length: $(printf '%s' "$doc" | wc -c)" \
	    'Connection: close' ''; printf '%s' "$doc")
	assert_line --index 0 --regexp "^HTTP/1.1 400 "
	# The error, JSON-escaped, perhaps after the line it is on.
	assert_line --regexp "^\\{\"error\":\"(line 1: )?${msg//\"/\\\\\"}\"\\}\$"
	jobq-submit </dev/null
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 0
}

# nest N OPEN CLOSE: a payload nested N levels deep.  printf repeats
# its format for each argument, where a loop in the shell would take
# time that grows with the square of N.
nest() {
	# shellcheck disable=SC2046
	printf "$2%.0s" $(seq "$1")
	printf 1
	# shellcheck disable=SC2046
	printf "$3%.0s" $(seq "$1")
}

@test "bad input: invalid JSON" {
	check_both '{"type":"x",}' 'invalid JSON: unexpected character'
}

@test "bad input: a document cut short" {
	check_both '{"type":"x","payload":{"a":' 'document cut short by the end of input'
}

@test "bad input: a top-level array, string or number" {
	check_both '[{"type":"x"}]' 'a job must be a JSON object, not array'
	check_both '"x"' 'a job must be a JSON object, not string'
	check_both '42' 'a job must be a JSON object, not int'
}

@test "bad input: nesting past 64 levels is refused, 64 is fine" {
	check_both "{\"type\":\"x\",\"payload\":$(nest 64 '[' ']')}" \
	    'nesting deeper than 64 levels'
	run jobq-submit <<<"{\"type\":\"x\",\"payload\":$(nest 63 '[' ']')}"
	assert_success
}

@test "bad input: very deep nesting is refused without a crash" {
	doc="{\"type\":\"x\",\"payload\":$(nest 100000 '{"a":' '}')}"
	check_both "$doc" 'nesting deeper than 64 levels'
}

@test "bad input: a document larger than the size limit" {
	export JOBQ_MAX_SIZE=1000
	doc="{\"type\":\"x\",\"payload\":\"$(head -c 1000 /dev/zero | tr '\0' a)\"}"
	run --separate-stderr jobq-submit <<<"$doc"
	assert_failure 65
	assert_equal "$stderr" 'jobq-submit: line 1: document larger than 1000 bytes'
	run jobq-httpd < <(printf 'POST /job HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s' \
	    "${#doc}" "$doc")
	assert_line --index 0 --regexp '^HTTP/1.1 413 '
	jobq-submit </dev/null
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 0
}

@test "bad input: invalid UTF-8, and a lone UTF-16 surrogate" {
	check_both "$(printf '{"type":"x","payload":"\xc3\x28"}')" \
	    'invalid JSON: invalid utf-8 string'
	check_both '{"type":"x","payload":"\ud800"}' \
	    'a lone UTF-16 surrogate in a string'
	check_both '{"type":"x","payload":"\udc00\ud800"}' \
	    'a lone UTF-16 surrogate in a string'
	run jobq-submit <<<'{"type":"x","payload":"\ud83d\ude00"}'
	assert_success
}

@test "bad input: a NUL byte" {
	run --separate-stderr jobq-submit < <(printf '{"type":"x","payload":"a\0b"}')
	assert_failure 65
	assert_equal "$stderr" 'jobq-submit: line 1: NUL byte in input'
	run jobq-httpd < <(printf 'POST /job HTTP/1.1\r\nContent-Length: 29\r\nConnection: close\r\n\r\n{"type":"x","payload":"a\0b"}')
	assert_line --index 0 --regexp '^HTTP/1.1 400 '
	jobq-submit </dev/null
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 0
}

@test "bad input: two members of one name, at any depth or spelling" {
	check_both '{"type":"x","type":"y"}' \
	    'an object has two members of the same name'
	check_both '{"type":"x","payload":[{"a":1},{"b":{"c":1,"c":2}}]}' \
	    'an object has two members of the same name'
	check_both '{"type":"x","payload":{"a":1,"\u0061":2}}' \
	    'an object has two members of the same name'
	run jobq-submit <<<'{"type":"x","payload":[{"a":1},{"a":{"a":1}}]}'
	assert_success
}

@test "bad input: integers beyond 64 bits are refused, never changed" {
	check_both '{"type":"x","payload":18446744073709551616}' \
	    'an integer beyond 64 bits, which would not be carried exactly'
	check_both '{"type":"x","payload":[-9223372036854775809]}' \
	    'an integer beyond 64 bits, which would not be carried exactly'
}

@test "bad input: numbers that fit are carried exactly as written" {
	run jobq-submit <<<'{"type":"x","payload":[18446744073709551615,-9223372036854775808,0.1000000000000000055511,1e400]}'
	assert_success
	run qtool get "$JOBQ_JOB_QUEUE"
	assert_output --partial '"payload":[18446744073709551615,-9223372036854775808,0.1000000000000000055511,1e400]'
}

@test "bad input: a bad id" {
	check_both '{"id":"3b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a0","type":"x"}' \
	    'member "id": not a UUID in 8-4-4-4-12 hexadecimal form'
	check_both '{"id":7,"type":"x"}' 'member "id": must be a string, not int'
}

@test "bad input: a type outside its pattern" {
	for type in '' 'a b' '-x' "$(printf 'x%.0s' $(seq 65))" 'x;rm' 'é'; do
		check_both "{\"type\":\"$type\"}" \
		    'member "type": must be 1 to 64 characters of A-Z a-z 0-9 . _ -, the first a letter or digit'
	done
}

@test "bad input: quotes built to break SQL or a shell are stored as text" {
	migrate
	start store jobq-store
	mkdir -p "$JOBS/h"
	cat >"$JOBS/h/quote" <<-'EOF'
	#!/bin/sh
	p=$(cat)
	case $p in
	*fail*)	echo "'; DELETE FROM jobs; -- \$(touch pwned)" >&2; exit 65 ;;
	esac
	echo '"x'\''); DROP TABLE jobs; -- $(touch pwned) `touch pwned`"'
	EOF
	chmod +x "$JOBS/h/quote"
	cd "$JOBS"
	start work jobq-work -j 1 -a 1 "$JOBS/h/quote"
	ok=$(jobq-submit <<<"{\"type\":\"x\",\"payload\":\"'; DROP TABLE jobs; --\"}")
	bad=$(jobq-submit <<<'{"type":"x","payload":"fail $(touch pwned)"}')
	run jobq-result -w -t 30 "$ok"
	assert_output --partial '"result":"x'\''); DROP TABLE jobs; -- $(touch pwned) `touch pwned`"'
	run jobq-result -w -t 30 "$bad"
	assert_output --partial '"error":"exit status 65: '\''; DELETE FROM jobs; -- $(touch pwned)"'
	assert_equal "$(sql "SELECT count(*) FROM jobs")" 2
	[ ! -e "$JOBS/pwned" ]
	run jobq-httpd < <(printf 'GET /job/%s%%27%%3B%%20DROP%%20TABLE%%20jobs HTTP/1.1\r\nConnection: close\r\n\r\n' "$ok")
	assert_line --index 0 --regexp '^HTTP/1.1 (400|404) '
	assert_equal "$(sql "SELECT count(*) FROM jobs")" 2
}
