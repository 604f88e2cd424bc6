#!/usr/bin/env bats
# valgrind memcheck over a few tool runs that exercise most of the
# library: any memory error, or memory definitely or indirectly lost,
# fails the test.  A sanitizer build (SAN=1) cannot run under valgrind,
# and runs every test under the sanitizers instead.

load helpers

ID=5c1e3d2a-7b6f-4e8d-9a0c-1b2d3e4f5a6b

setup() {
	_setup_world
	[ "${SAN:-0}" != 1 ] || skip "the tools are built with sanitizers"
}

# vg COMMAND...: the command under memcheck; exit 99 on any finding,
# otherwise the command's own status.  The report is in $JOBS/vg.log.
vg() {
	valgrind -q --error-exitcode=99 --leak-check=full \
	    --errors-for-leak-kinds=definite,indirect \
	    --show-leak-kinds=definite,indirect --log-file="$JOBS/vg.log" \
	    "$@"
}

# refute_findings: the last vg run found nothing; show its report if so.
refute_findings() {
	if [ "$status" = 99 ]; then
		cat "$JOBS/vg.log" >&3
		return 1
	fi
}

@test "memcheck: jobq-submit of good jobs, and of a bad document" {
	run vg jobq-submit <<-EOF
	{"id":"$ID","type":"resize","payload":{"w":[1,2.5,"x"]}}
	{"type":"x","max_attempts":3,"timeout":9}
	EOF
	refute_findings
	assert_success
	assert_line --index 0 "$ID"
	run vg jobq-submit <<<'{"type":"x"} [1, 2'
	refute_findings
	assert_failure 65
}

@test "memcheck: jobq-result of a stored row, and of none" {
	migrate
	sql "INSERT INTO jobs (id, type, status, result, attempts,
	    submitted_at) VALUES ('$ID', 'x', 'succeeded', '{\"a\": [1]}', 1,
	    now())"
	run vg jobq-result "$ID"
	refute_findings
	assert_success
	assert_output --partial '"result":{"a":[1]}'
	run vg jobq-result 00000000-0000-4000-8000-000000000000
	refute_findings
	assert_failure
}

@test "memcheck: jobq-httpd on canned requests" {
	migrate
	run --separate-stderr vg jobq-httpd < <(printf '%s\r\n' 'POST /job HTTP/1.1' \
	    'Host: x' 'Content-Type: application/json' \
	    'Content-Length: 14' '' '{"type":"x"}' \
	    "GET /job/$ID HTTP/1.1" 'Host: x' '' \
	    'GET /healthz HTTP/1.1' 'Host: x' '' \
	    'GET /metrics HTTP/1.1' 'Host: x' 'Connection: close' '')
	refute_findings
	assert_success
	assert_line --regexp '^HTTP/1.1 202 '
	assert_line --regexp '^HTTP/1.1 404 '
	assert_line --regexp '^HTTP/1.1 200 '
	run --separate-stderr vg jobq-httpd < <(printf 'POST /job HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n{"type":' \
	    'Transfer-Encoding: chunked')
	refute_findings
	assert_line --regexp '^HTTP/1.1 400 '
}
