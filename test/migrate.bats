#!/usr/bin/env bats
# jobq-migrate: the schema, brought up to date one file at a time.

# run --separate-stderr sets stderr and stderr_lines.
# shellcheck disable=SC2154
load helpers

bats_require_minimum_version 1.5.0

TIME='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z'

# The tests of the mechanics run on a folder of the first migration
# alone, so that later files in sql/ do not change what they expect.
setup() {
	_setup_world
	mkdir "$JOBS/base"
	cp "$ROOT/sql/001_jobs.sql" "$JOBS/base"
	export JOBQ_SQL_DIR=$JOBS/base
}

# migrations: a copy of the base in $JOBS/sql, to add files to.
migrations() {
	mkdir "$JOBS/sql"
	cp "$JOBS"/base/*.sql "$JOBS/sql"
}

# has_table NAME: whether this test's database holds a table NAME.
has_table() {
	[ "$(sql "SELECT to_regclass('$1') IS NOT NULL")" = t ]
}

# A first run

@test "jobq-migrate: on an empty database it applies 001_jobs.sql" {
	run --separate-stderr jobq-migrate
	assert_success
	assert_equal "$stderr" "jobq-migrate: applied 001_jobs.sql"
	assert_output ""
	has_table jobs
	has_table jobq_migrations
}

@test "jobq-migrate: an applied file is recorded with its SHA-256" {
	sum=$(sha256sum "$ROOT/sql/001_jobs.sql" | cut -d' ' -f1)

	run jobq-migrate
	assert_success
	assert_equal "$(sql "SELECT version, name, checksum
	    FROM jobq_migrations")" "1|001_jobs.sql|$sum"
}

@test "jobq-migrate: a second run has nothing to do" {
	migrate

	run --separate-stderr jobq-migrate
	assert_success
	assert_equal "$stderr" \
	    "jobq-migrate: nothing to do: all 1 migrations are applied"
	assert_equal "$(sql "SELECT count(*) FROM jobq_migrations")" 1
}

# Status

@test "jobq-migrate: -l lists a file not yet applied as pending" {
	run --separate-stderr jobq-migrate -l
	assert_success
	assert_output $'001_jobs.sql\tpending'
}

@test "jobq-migrate: -l applies nothing" {
	run --separate-stderr jobq-migrate -l
	assert_success
	run has_table jobs
	assert_failure
}

@test "jobq-migrate: -l lists an applied file with the time" {
	migrate

	run --separate-stderr jobq-migrate -l
	assert_success
	assert_output --regexp $'^001_jobs\\.sql\tapplied\t'"$TIME\$"
}

# New files

@test "jobq-migrate: -l lists a new file in -m DIR as pending" {
	migrations
	jobq-migrate -m "$JOBS/sql" 2>/dev/null
	echo 'CREATE TABLE x (a int);' >"$JOBS/sql/002_x.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql" -l
	assert_success
	assert_line --index 0 --regexp $'^001_jobs\\.sql\tapplied\t'
	assert_line --index 1 $'002_x.sql\tpending'
	assert_equal "${#lines[@]}" 2
}

@test "jobq-migrate: a run applies only the new file" {
	migrations
	jobq-migrate -m "$JOBS/sql" 2>/dev/null
	echo 'CREATE TABLE x (a int);' >"$JOBS/sql/002_x.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_success
	assert_equal "$stderr" "jobq-migrate: applied 002_x.sql"
	has_table x
	assert_equal "$(sql "SELECT string_agg(name, ' ' ORDER BY version)
	    FROM jobq_migrations")" "001_jobs.sql 002_x.sql"
}

@test "jobq-migrate: files are applied in the order of their numbers" {
	migrations
	echo 'CREATE TABLE y (a int REFERENCES x);' >"$JOBS/sql/010_y.sql"
	echo 'CREATE TABLE x (a int PRIMARY KEY);' >"$JOBS/sql/002_x.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_success
	assert_equal "$stderr" "jobq-migrate: applied 001_jobs.sql
jobq-migrate: applied 002_x.sql
jobq-migrate: applied 010_y.sql"
	has_table y
}

@test "jobq-migrate: 10_ comes after 9_: numbers, not names, decide" {
	mkdir "$JOBS/sql"
	echo 'CREATE TABLE y (a int REFERENCES x);' >"$JOBS/sql/10_y.sql"
	echo 'CREATE TABLE x (a int PRIMARY KEY);' >"$JOBS/sql/9_x.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_success
	assert_equal "$stderr" "jobq-migrate: applied 9_x.sql
jobq-migrate: applied 10_y.sql"
}

@test "jobq-migrate: files that are not NNN_name.sql are ignored" {
	migrations
	for f in README notes.txt x.sql 002-x.sql _003.sql 004_x.sql.orig \
	    005_x.SQL; do
		echo 'THIS IS NOT SQL;' >"$JOBS/sql/$f"
	done

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_success
	assert_equal "$stderr" "jobq-migrate: applied 001_jobs.sql"
	assert_equal "$(sql "SELECT count(*) FROM jobq_migrations")" 1
}

@test "jobq-migrate: a migration of only comments is applied" {
	migrations
	echo '-- Nothing to change in this version.' >"$JOBS/sql/002_none.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_success
	assert_equal "${stderr_lines[1]}" "jobq-migrate: applied 002_none.sql"
	assert_equal "$(sql "SELECT count(*) FROM jobq_migrations")" 2
}

# History is not rewritten

@test "jobq-migrate: an applied file that changed exits 65" {
	migrations
	jobq-migrate -m "$JOBS/sql" 2>/dev/null
	echo '-- an afterthought' >>"$JOBS/sql/001_jobs.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_failure 65
	assert_regex "$stderr" "^jobq-migrate: 001_jobs\.sql: \
changed since it was applied at $TIME\$"
}

@test "jobq-migrate: a changed file stops the new files after it" {
	migrations
	jobq-migrate -m "$JOBS/sql" 2>/dev/null
	echo '-- an afterthought' >>"$JOBS/sql/001_jobs.sql"
	echo 'CREATE TABLE x (a int);' >"$JOBS/sql/002_x.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_failure 65
	run has_table x
	assert_failure
	assert_equal "$(sql "SELECT count(*) FROM jobq_migrations")" 1
}

@test "jobq-migrate: -l shows a changed file and exits 65" {
	migrations
	jobq-migrate -m "$JOBS/sql" 2>/dev/null
	echo '-- an afterthought' >>"$JOBS/sql/001_jobs.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql" -l
	assert_failure 65
	assert_output --regexp $'^001_jobs\\.sql\tchanged\t'"$TIME\$"
}

@test "jobq-migrate: two files with one number exit 65" {
	migrations
	echo 'CREATE TABLE x (a int);' >"$JOBS/sql/1_x.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_failure 65
	assert_regex "$stderr" '^jobq-migrate: .*: same number$'
	assert_regex "$stderr" '001_jobs\.sql'
	assert_regex "$stderr" '1_x\.sql'
	run has_table jobs
	assert_failure
}

# A migration that fails

@test "jobq-migrate: a failing migration exits 65 and names the file" {
	migrations
	printf 'CREATE TABLE half (a int);\nSELECT a FROM nowhere;\n' \
	    >"$JOBS/sql/002_bad.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_failure 65
	assert_equal "${stderr_lines[0]}" "jobq-migrate: applied 001_jobs.sql"
	assert_equal "${stderr_lines[1]}" "jobq-migrate: 002_bad.sql: \
ERROR:  relation \"nowhere\" does not exist"
}

@test "jobq-migrate: a failing migration leaves nothing of itself" {
	migrations
	printf 'CREATE TABLE half (a int);\nSELECT a FROM nowhere;\n' \
	    >"$JOBS/sql/002_bad.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_failure 65
	run has_table half
	assert_failure
	assert_equal "$(sql "SELECT string_agg(name, ' ')
	    FROM jobq_migrations")" 001_jobs.sql
}

@test "jobq-migrate: a failing migration stops the files after it" {
	migrations
	echo 'SELECT a FROM nowhere;' >"$JOBS/sql/002_bad.sql"
	echo 'CREATE TABLE after (a int);' >"$JOBS/sql/003_after.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_failure 65
	run has_table after
	assert_failure
	has_table jobs
}

# Two at once

@test "jobq-migrate: two migrators at once apply each file once" {
	jobq-migrate 2>"$JOBS/a.err" &
	a=$!
	jobq-migrate 2>"$JOBS/b.err" &
	b=$!
	rc_a=0 rc_b=0
	wait "$a" || rc_a=$?
	wait "$b" || rc_b=$?

	assert_equal "$rc_a $rc_b" "0 0"
	assert_equal "$(cat "$JOBS/a.err" "$JOBS/b.err" | sort)" \
	    "jobq-migrate: applied 001_jobs.sql
jobq-migrate: nothing to do: all 1 migrations are applied"
	assert_equal "$(sql "SELECT count(*) FROM jobq_migrations")" 1
}

# Where the files and the database are

@test "jobq-migrate: JOBQ_SQL_DIR chooses the folder" {
	migrations
	echo 'CREATE TABLE x (a int);' >"$JOBS/sql/002_x.sql"

	JOBQ_SQL_DIR=$JOBS/sql run --separate-stderr jobq-migrate
	assert_success
	assert_equal "${stderr_lines[1]}" "jobq-migrate: applied 002_x.sql"
	has_table x
}

@test "jobq-migrate: the migrations of sql/ apply in order, each once" {
	run --separate-stderr jobq-migrate -m "$ROOT/sql"
	assert_success
	assert_equal "$stderr" "jobq-migrate: applied 001_jobs.sql
jobq-migrate: applied 002_retrying.sql
jobq-migrate: applied 003_running.sql
jobq-migrate: applied 004_traceparent.sql
jobq-migrate: applied 005_submitted_at.sql
jobq-migrate: applied 006_dead_queue.sql
jobq-migrate: applied 007_queued.sql"
	sql "INSERT INTO jobs (id, type, status, attempts, submitted_at)
	    VALUES (gen_random_uuid(), 't', 'retrying', 1, now())"
	sql "INSERT INTO jobs (id, type, status, attempts, submitted_at)
	    VALUES (gen_random_uuid(), 't', 'running', 1, now())"
	sql "INSERT INTO jobs (id, type, status, attempts, submitted_at)
	    VALUES (gen_random_uuid(), 't', 'queued', 1, now())"
	run sql "INSERT INTO jobs (id, type, status, attempts, submitted_at)
	    VALUES (gen_random_uuid(), 't', 'waiting', 1, now())"
	assert_failure
	run --separate-stderr jobq-migrate -m "$ROOT/sql"
	assert_equal "$stderr" \
	    "jobq-migrate: nothing to do: all 7 migrations are applied"
}

@test "jobq-migrate: -m wins over JOBQ_SQL_DIR" {
	JOBQ_SQL_DIR=$JOBS/nowhere run --separate-stderr \
	    jobq-migrate -m "$JOBS/base"
	assert_success
	assert_equal "$stderr" "jobq-migrate: applied 001_jobs.sql"
}

@test "jobq-migrate: a missing folder exits 66" {
	run --separate-stderr jobq-migrate -m "$JOBS/nowhere"
	assert_failure 66
	assert_equal "$stderr" \
	    "jobq-migrate: $JOBS/nowhere: No such file or directory"
}

@test "jobq-migrate: a folder without NNN_name.sql files exits 66" {
	mkdir "$JOBS/sql"
	touch "$JOBS/sql/README" "$JOBS/sql/x.sql" "$JOBS/sql/001-x.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_failure 66
	assert_equal "$stderr" \
	    "jobq-migrate: $JOBS/sql: no NNN_name.sql files"
}

@test "jobq-migrate: a migration that cannot be opened exits 66" {
	migrations
	ln -s nowhere.sql "$JOBS/sql/002_x.sql"

	run --separate-stderr jobq-migrate -m "$JOBS/sql"
	assert_failure 66
	assert_equal "$stderr" \
	    "jobq-migrate: $JOBS/sql/002_x.sql: No such file or directory"
	run has_table jobs
	assert_failure
}

@test "jobq-migrate: -l that cannot write its list exits 74" {
	run --separate-stderr sh -c 'jobq-migrate -l >/dev/full'
	assert_failure 74
	assert_equal "$stderr" "jobq-migrate: stdout: No space left on device"
}

@test "jobq-migrate: -d chooses the database" {
	db=$PGDATABASE

	run --separate-stderr env PGDATABASE=jobq_nowhere \
	    jobq-migrate -d "dbname=$db"
	assert_success
	has_table jobs
}

@test "jobq-migrate: -d takes a postgresql:// URL" {
	db=$PGDATABASE

	run --separate-stderr env PGDATABASE=jobq_nowhere \
	    jobq-migrate -d "postgresql://$PGUSER@$PGHOST:$PGPORT/$db"
	assert_success
	has_table jobs
}

@test "jobq-migrate: -d takes the name of a database" {
	db=$PGDATABASE

	run --separate-stderr env PGDATABASE=jobq_nowhere jobq-migrate -d "$db"
	assert_success
	has_table jobs
}

@test "jobq-migrate: JOBQ_DATABASE_URL chooses the database" {
	db=$PGDATABASE

	run --separate-stderr env PGDATABASE=jobq_nowhere \
	    JOBQ_DATABASE_URL="dbname=$db" jobq-migrate
	assert_success
	has_table jobs
}

@test "jobq-migrate: -d wins over JOBQ_DATABASE_URL" {
	run --separate-stderr env JOBQ_DATABASE_URL=dbname=jobq_nowhere \
	    jobq-migrate -d "dbname=$PGDATABASE"
	assert_success
	has_table jobs
}

@test "jobq-migrate: an unreachable database exits 69" {
	run --separate-stderr env PGPORT="$(dead_port)" jobq-migrate
	assert_failure 69
	assert_regex "$stderr" '^jobq-migrate: database: .'
	assert_equal "${#stderr_lines[@]}" 1
}

@test "jobq-migrate: -l with an unreachable database exits 69" {
	run --separate-stderr env PGPORT="$(dead_port)" jobq-migrate -l
	assert_failure 69
	assert_regex "$stderr" '^jobq-migrate: database: .'
	assert_output ""
}

@test "jobq-migrate: a database that does not exist exits 69" {
	run --separate-stderr jobq-migrate -d dbname=jobq_nowhere
	assert_failure 69
	assert_regex "$stderr" '^jobq-migrate: database: .*jobq_nowhere'
}

@test "jobq-migrate: the password of -d is not shown" {
	run --separate-stderr env PGPORT="$(dead_port)" \
	    jobq-migrate -d "dbname=$PGDATABASE password=secret"
	assert_failure 69
	refute_regex "$stderr" secret
}

# Usage

@test "jobq-migrate: an unknown option exits 64 with the usage" {
	run --separate-stderr jobq-migrate -Z
	assert_failure 64
	assert_regex "${stderr_lines[-1]}" '^usage: jobq-migrate '
	assert_output ""
}

@test "jobq-migrate: an operand exits 64 with the usage" {
	run --separate-stderr jobq-migrate up
	assert_failure 64
	assert_regex "$stderr" '^usage: jobq-migrate '
	run has_table jobq_migrations
	assert_failure
}

@test "jobq-migrate: -h prints the usage on stdout and exits 0" {
	run --separate-stderr jobq-migrate -h </dev/null
	assert_success
	assert_output --regexp '^usage: jobq-migrate \[-hlV\] '
	assert_equal "$stderr" ""
}

@test "jobq-migrate: -V prints the version" {
	run --separate-stderr jobq-migrate -V
	assert_success
	assert_output "jobq-migrate 0.1.0"
}
