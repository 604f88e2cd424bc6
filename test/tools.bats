#!/usr/bin/env bats
# Every tool: help, version, installation and manual pages.

load helpers

# A stack that a test left up goes down with it.
teardown() {
	if [ -d "$JOBS/st" ]; then
		"$ROOT/scripts/jobq-stack" -s "$JOBS/st" down -P 2>/dev/null || true
	fi
	stop_started
	dropdb --if-exists --force "$PGDATABASE" 2>/dev/null || true
}

TOOLS="jobq-migrate jobq-submit jobq-work jobq-store jobq-result jobq-httpd
jobq-dead"

# The manual page of a tool.
page() {
	if [ "$1" = jobq-httpd ]; then
		echo "$ROOT/man/$1.8"
	else
		echo "$ROOT/man/$1.1"
	fi
}

@test "tools: -h prints the usage on stdout and exits 0" {
	for t in $TOOLS; do
		run --separate-stderr "$t" -h
		assert_success
		assert_line --index 0 --regexp "^usage: $t "
		assert_equal "$stderr" ""
	done
}

@test "tools: a usage error prints the usage on stderr and exits 64" {
	for t in $TOOLS; do
		run --separate-stderr "$t" --no-such-option
		assert_failure 64
		assert_output ''
		[[ "$stderr" == *"usage: $t "* ]]
	done
}

@test "tools: -V prints the name and version" {
	for t in $TOOLS; do
		run "$t" -V
		assert_success
		assert_output "$t 0.1.0"
	done
}

@test "tools: each usage line matches the SYNOPSIS of its manual" {
	command -v mandoc >/dev/null || skip "mandoc is not installed"
	for t in $TOOLS; do
		run "$t" -h
		usage=$(printf '%s\n' "$output" | tr -s ' \t\n' ' ' |
		    sed 's/^usage: //; s/ $//')
		synopsis=$(mandoc -Tascii -O width=300 "$(page "$t")" |
		    col -b | awk '/^SYNOPSIS/ { on = 1; next }
		    /^[A-Z]/ { on = 0 } on' | tr -s ' \t\n' ' ' |
		    sed 's/^ //; s/ $//')
		assert_equal "$synopsis" "$usage"
	done
}

@test "tools: the manual pages are lint-clean" {
	command -v mandoc >/dev/null || skip "mandoc is not installed"
	# From the folder of the pages, so that their references resolve.
	cd "$ROOT/man"
	run mandoc -Tlint -Wstyle jobq.7 jobq-*.1 jobq-httpd.8
	assert_success
	assert_output ''
}

@test "tools: make install puts everything under PREFIX in DESTDIR" {
	run make -s -C "$ROOT" install DESTDIR="$JOBS/dest" PREFIX=/opt/jq
	assert_success
	d=$JOBS/dest/opt/jq
	for t in $TOOLS; do
		[ -x "$d/bin/$t" ]
	done
	for t in jobq-migrate jobq-submit jobq-work jobq-store jobq-result \
	    jobq-dead jobq-stack; do
		[ -f "$d/share/man/man1/$t.1" ]
	done
	[ -f "$d/share/jobq/sql/002_retrying.sql" ]
	[ -x "$d/libexec/jobq/fresh" ]
	[ -f "$d/share/man/man8/jobq-httpd.8" ]
	[ -f "$d/share/man/man7/jobq.7" ]
	[ -f "$d/share/jobq/sql/001_jobs.sql" ]
	for h in echo fail sha256 sleep; do
		[ -x "$d/libexec/jobq/handlers/$h" ]
	done
	run make -s -C "$ROOT" uninstall DESTDIR="$JOBS/dest" PREFIX=/opt/jq
	assert_success
	run find "$JOBS/dest" -type f
	assert_output ''
}

@test "tools: installed jobq-migrate finds its migrations by default" {
	make -s -C "$ROOT" install DESTDIR="$JOBS/dest" PREFIX=/opt/jq
	# The default is compiled in as PREFIX/share/jobq/sql; DESTDIR is a
	# staging area, so point the default at it through the environment.
	unset JOBQ_SQL_DIR
	run "$JOBS/dest/opt/jq/bin/jobq-migrate" -l
	assert_failure 66
	assert_output --partial '/opt/jq/share/jobq/sql'
}

@test "tools: an installed jobq-stack runs the installed parts" {
	make -s -C "$ROOT" install DESTDIR="$JOBS/dest" PREFIX=/opt/jq
	d=$JOBS/dest/opt/jq
	run env -u JOBQ_SQL_DIR -u JOBQ_EXCHANGE -u JOBQ_JOB_QUEUE \
	    -u JOBQ_RESULT_QUEUE PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	    "$d/bin/jobq-stack" -s "$JOBS/st" up -j 1
	assert_success
	assert_output --partial 'all services running'
	run "$d/bin/jobq-stack" -s "$JOBS/st" status
	assert_success
	run tr '\0' ' ' <"/proc/$(cat "$JOBS/st/pids/work.pid")/cmdline"
	assert_output "jobq-work -j 1 -f $JOBS/st/pids/work.health -D $d/bin/../libexec/jobq/handlers "
	run "$d/bin/jobq-stack" -s "$JOBS/st" down -P
	assert_success
}

@test "fresh: a health file touched lately is fresh, an old or missing one not" {
	touch "$JOBS/h"
	run "$ROOT/scripts/fresh" "$JOBS/h"
	assert_success
	touch -d '20 seconds ago' "$JOBS/h"
	run "$ROOT/scripts/fresh" "$JOBS/h"
	assert_failure 1
	run "$ROOT/scripts/fresh" "$JOBS/h" 30
	assert_success
	run "$ROOT/scripts/fresh" "$JOBS/nothing"
	assert_failure 1
	run "$ROOT/scripts/fresh"
	assert_failure 64
	run "$ROOT/scripts/fresh" "$JOBS/h" soon
	assert_failure 64
}
