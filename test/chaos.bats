#!/usr/bin/env bats
# scripts/chaos, in a short run: workers and the store killed, the
# broker and the database restarted, and still every job ends once, as
# its handler says, with the dead ones on the dead-letter queue.

bats_require_minimum_version 1.5.0

load '/usr/lib/bats/bats-support/load'
load '/usr/lib/bats/bats-assert/load'

ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)

@test "chaos: 2000 jobs survive kills and restarts, each ending as predicted" {
	run "$ROOT/scripts/chaos" -n 2000 -k 2 -l 600
	printf '%s\n' "$output" | grep -v '^chaos: *[0-9.]* s: ' >&3
	assert_success
	assert_line 'chaos: rows: 2000 (succeeded 1760, failed 240), 2000 as their kind predicts'
	assert_line --regexp '^chaos: dead letters: 240 distinct ids of 240 expected \(0 missing, 0 extra\), [0-9]+ copies$'
	assert_line 'chaos: queues other than job-dead holding messages: 0'
	assert_line 'chaos: passed'
}

@test "chaos: usage errors exit 64" {
	run "$ROOT/scripts/chaos" -n 0
	assert_failure 64
	assert_output --partial 'chaos: -n 0: at least 1'
	run "$ROOT/scripts/chaos" -x
	assert_failure 64
	assert_output --partial 'usage: chaos'
}
