#!/usr/bin/env bats
# scripts/jobq-bench, in a small run: every measure is there, with
# numbers, as a table, CSV and JSON.  How fast is never asserted.

bats_require_minimum_version 1.5.0

load '/usr/lib/bats/bats-support/load'
load '/usr/lib/bats/bats-assert/load'

ROOT=$(cd "$BATS_TEST_DIRNAME/.." && pwd)

@test "bench: a small run prints every measure, and writes CSV and JSON" {
	run --separate-stderr "$ROOT/scripts/jobq-bench" -n 300 -r 3 \
	    -o "$BATS_TEST_TMPDIR/b.csv"
	assert_success
	assert_equal "$stderr" ""
	assert_line --regexp '^measure +jobs/s +p50_ms +p90_ms +p99_ms +rss_kib +cpu_s/1000 +ratio$'
	for m in 'broker publish' 'broker backlog' 'broker 1 hop' 'broker 2 hops' \
	    'database copy' 'fork\+exec'; do
		assert_line --regexp "^$m +[0-9]+ +- +- +- +- +- +-\$"
	done
	assert_line --regexp '^jobq-submit stream alone +[0-9]+ +- +- +- +- +- +[0-9.]+$'
	assert_line --regexp '^jobq persistent +[0-9]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +- +- +[0-9.]+$'
	assert_line --regexp '^  at half that rate +[0-9]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +- +- +-$'
	assert_line --regexp '^jobq-store backlog +[0-9]+ +- +- +- +[0-9]+ +[0-9.]+ +[0-9.]+$'
	assert_line --regexp '^jobq one-shot +[0-9]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +- +- +[0-9.]+$'
	assert_line --regexp '^  jobq-work -j 8 +- +- +- +- +[0-9]+ +[0-9.]+ +-$'
	assert_line --regexp '^  jobq-store +- +- +- +- +[0-9]+ +[0-9.]+ +-$'
	assert_line --regexp '^submit one \(ms\) +- +[0-9.]+ +[0-9.]+ +[0-9.]+ +- +- +[0-9.]+$'
	assert_line --regexp '^minimal client \(ms\) +- +[0-9.]+ +[0-9.]+ +[0-9.]+ +- +- +-$'
	for c in 1 8; do
		assert_line --regexp "^httpd POST, $c connections +[0-9]+ +- +- +- +- +- +[0-9.]+\$"
		assert_line --regexp "^  $c publishers, each confirm +[0-9]+ +- +- +- +- +- +-\$"
	done
	run cat "$BATS_TEST_TMPDIR/b.csv"
	assert_line --index 0 'measure,jobs_s,p50_ms,p90_ms,p99_ms,rss_kib,cpu_s_per_1000,ratio'
	assert_line --regexp '^broker 2 hops,[0-9]+,,,,,,$'
	assert_line --regexp '^jobq-work -j 8,,,,,[0-9]+,[0-9.]+,$'
	assert_equal "${#lines[@]}" 25
}

@test "bench: -f json writes one object per measure, null where none" {
	run "$ROOT/scripts/jobq-bench" -n 100 -r 1 -f json \
	    -o "$BATS_TEST_TMPDIR/b.json"
	assert_success
	run cat "$BATS_TEST_TMPDIR/b.json"
	assert_line --index 0 '['
	assert_line --regexp '^\{"measure":"broker publish","jobs_s":[0-9]+,"p50_ms":null,'
	assert_line --regexp '"measure":"jobq one-shot","jobs_s":[0-9]+,"p50_ms":[0-9.]+,'
	assert_line --index 25 ']'
}

@test "bench: -p draws the latency of each job into a PNG file; -m samples memory" {
	run --separate-stderr "$ROOT/scripts/jobq-bench" -n 200 -r 1 \
	    -p "$BATS_TEST_TMPDIR/lat.png" -m 2000
	assert_success
	assert_equal "$stderr" ""
	for n in 200 1000 2000; do
		assert_line --regexp "^  jobq-work at $n jobs +- +- +- +- +[0-9]+ +- +-\$"
		assert_line --regexp "^  jobq-store at $n jobs +- +- +- +- +[0-9]+ +- +-\$"
	done
	assert_line --regexp '^jobq persistent, 2000 jobs +[0-9]+ +- +- +- +- +- +[0-9.]+$'
	# The PNG signature, then the width and height of its header.
	run od -A n -t x1 -w24 -N 24 "$BATS_TEST_TMPDIR/lat.png"
	assert_output --regexp '^ 89 50 4e 47 0d 0a 1a 0a .* 00 00 04 b0 00 00 01 f4$'
}

@test "bench: -p without gnuplot says what is missing and exits 69" {
	mkdir "$BATS_TEST_TMPDIR/bin"
	for t in dirname mktemp; do
		ln -s "$(command -v "$t")" "$BATS_TEST_TMPDIR/bin/$t"
	done
	PATH=$BATS_TEST_TMPDIR/bin run /bin/bash "$ROOT/scripts/jobq-bench" \
	    -p "$BATS_TEST_TMPDIR/lat.png"
	assert_failure 69
	assert_output 'jobq-bench: -p needs gnuplot (Debian: gnuplot-nox)'
}

@test "bench: usage errors exit 64" {
	run "$ROOT/scripts/jobq-bench" -n 0
	assert_failure 64
	run "$ROOT/scripts/jobq-bench" -f xml
	assert_failure 64
	assert_output --partial 'usage: jobq-bench'
}
