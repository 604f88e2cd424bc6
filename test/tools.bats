#!/usr/bin/env bats
# Every tool: help, version, installation and manual pages.

load helpers

TOOLS="jobq-migrate jobq-submit jobq-work jobq-store jobq-result jobq-httpd"

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
	for t in jobq-migrate jobq-submit jobq-work jobq-store jobq-result; do
		[ -f "$d/share/man/man1/$t.1" ]
	done
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
