#!/usr/bin/env bats
# jobq-work: handlers, their outcomes, concurrency and shutdown.

load helpers

@test "jobq-work: the handler gets the payload and the job's variables" {
	handler env 'payload=$(cat)
printf "{\"p\":%s,\"id\":\"%s\",\"type\":\"%s\",\"attempt\":%s}" \
    "$payload" "$JOBQ_JOB_ID" "$JOBQ_JOB_TYPE" "$JOBQ_ATTEMPT"'
	start work jobq-work -j 1 "$JOBS/h/env"
	echo '{"type":"t.1","payload":{"a":"b/c","n":[1,2]}}' | submit
	id=$(cat "$JOBS/ids")
	run next_result
	assert_success
	assert_output --partial "\"id\":\"$id\",\"type\":\"t.1\",\"status\":\"succeeded\""
	assert_output --partial "\"result\":{\"p\":{\"a\":\"b/c\",\"n\":[1,2]},\"id\":\"$id\",\"type\":\"t.1\",\"attempt\":1}"
	assert_output --partial '"error":null,"attempts":1'
	assert_output --regexp '"worker":"[^"]+:[0-9]+"'
	assert_output --regexp '"started_at":"[0-9-]+T[0-9:]+\.[0-9]{6}Z"'
	assert_output --regexp '"finished_at":"[0-9-]+T[0-9:]+\.[0-9]{6}Z"'
	eventually has_depth "$JOBQ_JOB_QUEUE" 0
}

@test "jobq-work: a command line after -- gets its arguments" {
	start work jobq-work -j 1 -- sh -c 'echo "\"$1\""' sh first
	echo '{"type":"x"}' | submit
	run next_result
	assert_output --partial '"status":"succeeded","result":"first"'
}

@test "jobq-work: output that is not JSON is stored as a string" {
	handler text 'cat >/dev/null; echo "plain words"; echo "two lines"'
	start work jobq-work -j 1 "$JOBS/h/text"
	echo '{"type":"x"}' | submit
	run next_result
	assert_output --partial '"result":"plain words\ntwo lines\n"'
}

@test "jobq-work: output JSON that cannot be carried exactly is kept as a string" {
	handler big 'cat >/dev/null; echo "[123456789012345678901234567890]"'
	start work jobq-work -j 1 "$JOBS/h/big"
	echo '{"type":"x"}' | submit
	run next_result
	assert_output --partial '"result":"[123456789012345678901234567890]\n"'
}

@test "jobq-work: empty output is a null result" {
	start work jobq-work -j 1 true
	echo '{"type":"x","payload":1}' | submit
	run next_result
	assert_output --partial '"status":"succeeded","result":null'
}

@test "jobq-work: invalid UTF-8 and NUL in output are replaced" {
	handler bytes 'printf "a\377b\000c"'
	start work jobq-work -j 1 "$JOBS/h/bytes"
	echo '{"type":"x"}' | submit
	run next_result
	assert_output --partial '"result":"a'$'\xef\xbf\xbd''b'$'\xef\xbf\xbd''c"'
}

@test "jobq-work: output of only NUL bytes is a string, not null" {
	handler nuls 'printf "\000\000"'
	start work jobq-work -j 1 "$JOBS/h/nuls"
	echo '{"type":"x"}' | submit
	run next_result
	assert_output --partial '"result":"'$'\xef\xbf\xbd\xef\xbf\xbd''"'
}

@test "jobq-work: when the result queue is gone it exits 69, job kept" {
	start work jobq-work -j 1 cat
	eventually has_consumer "$JOBQ_JOB_QUEUE"
	qtool delete "$JOBQ_RESULT_QUEUE"
	# Straight onto the queue: jobq-submit would declare it again.
	qtool put "$JOBQ_JOB_QUEUE" '{"v":1,"id":"0a0a0a0a-0000-4000-8000-00000000000a","type":"x","attempt":1,"submitted_at":"2026-01-01T00:00:00Z"}'
	eventually sh -c "! kill -0 $(cat "$JOBS/work.pid") 2>/dev/null"
	run logged work 'is gone'
	assert_success
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 1
}

@test "jobq-work: a non-zero exit fails the job with the end of stderr" {
	handler bad 'cat >/dev/null; echo partial; echo "disk on fire" >&2; exit 3'
	start work jobq-work -j 1 -a 1 "$JOBS/h/bad"
	echo '{"type":"x"}' | submit
	run next_result
	assert_output --partial '"status":"failed","result":null,"error":"exit status 3: disk on fire"'
	eventually has_depth "$JOBQ_JOB_QUEUE" 0
}

@test "jobq-work: a handler killed by a signal fails the job" {
	handler sig 'kill -KILL $$'
	start work jobq-work -j 1 -a 1 "$JOBS/h/sig"
	echo '{"type":"x"}' | submit
	run next_result
	assert_output --partial '"error":"killed by signal 9"'
}

@test "jobq-work: only the last 2048 bytes of stderr are kept" {
	handler loud 'i=0; while [ $i -lt 300 ]; do echo "line $i of noise" >&2; i=$((i+1)); done; exit 1'
	start work jobq-work -j 1 -a 1 "$JOBS/h/loud"
	echo '{"type":"x"}' | submit
	run next_result
	assert_output --partial 'line 299 of noise"'
	refute_output --partial 'line 1 of noise'
}

@test "jobq-work: output larger than -S fails the job" {
	handler big 'head -c 5000 /dev/zero | tr "\0" x'
	start work jobq-work -j 1 -a 1 -S 1000 "$JOBS/h/big"
	echo '{"type":"x"}' | submit
	run next_result
	assert_output --partial '"status":"failed"'
	assert_output --partial 'output larger than the limit'
}

@test "jobq-work: a handler that does not read its stdin still works" {
	start work jobq-work -j 1 -- sh -c 'echo 7'
	payload=$(head -c 300000 /dev/zero | tr '\0' a)
	echo "{\"type\":\"x\",\"payload\":\"$payload\"}" | submit
	run next_result
	assert_output --partial '"status":"succeeded","result":7'
}

@test "jobq-work: -D runs the handler named by the job's type" {
	handler up 'tr a-z A-Z'
	handler down 'tr A-Z a-z'
	start work jobq-work -j 2 -D "$JOBS/h"
	echo '{"type":"up","payload":"MiXeD"}' | submit
	eventually has_finals 1
	echo '{"type":"down","payload":"MiXeD"}' | submit
	eventually has_finals 2
	run next_result
	assert_output --partial '"result":"MIXED"'
	run next_result
	assert_output --partial '"result":"mixed"'
}

@test "jobq-work: -D fails a job whose type has no handler" {
	mkdir -p "$JOBS/h"
	start work jobq-work -j 1 -D "$JOBS/h"
	echo '{"type":"missing"}' | submit
	run next_result
	assert_output --partial '"status":"failed"'
	assert_output --partial "\"error\":\"no handler for type missing in $JOBS/h\""
	eventually has_depth "$JOBQ_JOB_QUEUE" 0
}

@test "jobq-work: -j runs that many handlers at once and no more" {
	mkdir -p "$JOBS/running"
	handler slow "touch $JOBS/running/\$JOBQ_JOB_ID
sleep 0.4
ls $JOBS/running | wc -l
rm $JOBS/running/\$JOBQ_JOB_ID"
	start work jobq-work -j 3 "$JOBS/h/slow"
	for i in 1 2 3 4 5 6 7 8 9; do echo '{"type":"x"}'; done | submit
	eventually has_finals 9
	results | sed 's/.*"result":\([0-9]*\).*/\1/' | sort -n >"$JOBS/counts"
	assert_equal "$(tail -n 1 "$JOBS/counts")" 3
}

@test "jobq-work: -t times a handler out, its whole process group too" {
	handler hang "sleep 60 &
echo \$! >$JOBS/child.pid
sleep 60"
	start work jobq-work -j 1 -a 1 -t 1 "$JOBS/h/hang"
	echo '{"type":"x"}' | submit
	run next_result
	assert_output --partial '"status":"failed"'
	assert_output --partial '"error":"timed out after 1 s"'
	run eventually sh -c "! kill -0 $(cat "$JOBS/child.pid") 2>/dev/null"
	assert_success
}

@test "jobq-work: a job's timeout member wins over -t" {
	handler nap 'sleep 30'
	start work jobq-work -j 1 -t 600 "$JOBS/h/nap"
	echo '{"type":"x","timeout":1}' | submit
	run next_result
	assert_output --partial '"error":"timed out after 1 s"'
}

@test "jobq-work: processes a handler leaves behind are killed" {
	handler leave "sleep 60 >/dev/null 2>&1 &
echo \$! >$JOBS/child.pid
echo done"
	start work jobq-work -j 1 "$JOBS/h/leave"
	echo '{"type":"x"}' | submit
	run next_result
	assert_output --partial '"result":"done\n"'
	eventually test -s "$JOBS/child.pid"
	run eventually sh -c "! kill -0 $(cat "$JOBS/child.pid") 2>/dev/null"
	assert_success
}

@test "jobq-work: TERM lets running jobs finish, publishes, acks and exits 0" {
	handler slow "touch $JOBS/started; sleep 1; echo finished"
	start work jobq-work -j 1 "$JOBS/h/slow"
	echo '{"type":"x"}' | submit
	eventually test -e "$JOBS/started"
	stop work
	assert_equal "$(cat "$JOBS/work.rc")" 0
	run results
	assert_output --partial '"status":"succeeded","result":"finished'
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 0
	run logged work 'msg="stopped" jobs_done=1'
	assert_success
}

@test "jobq-work: TERM puts jobs that have not started back on the queue" {
	handler slow "touch $JOBS/started; sleep 1"
	start work jobq-work -j 1 "$JOBS/h/slow"
	for i in 1 2 3; do echo '{"type":"x"}'; done | submit
	eventually test -e "$JOBS/started"
	stop work
	assert_equal "$(cat "$JOBS/work.rc")" 0
	assert_equal "$(results | wc -l)" 1
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 2
}

@test "jobq-work: a message that is not a job is dead-lettered and logged" {
	start work jobq-work -j 1 cat
	eventually has_consumer "$JOBQ_JOB_QUEUE"
	qtool put "$JOBQ_JOB_QUEUE" 'not json'
	qtool put "$JOBQ_JOB_QUEUE" '{"v":1,"id":"nope","type":"x"}'
	echo '{"type":"x","payload":"after"}' | submit
	run next_result
	assert_output --partial '"result":"after"'
	run logged work 'msg="not a job; dead-lettered"'
	assert_success
	run logged work 'member \\"id\\": not a UUID'
	assert_success
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 0
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_line --index 0 --regexp ' x-jobq-reason=not a job: [^ ].* x-jobq-queue='"$JOBQ_JOB_QUEUE"' x-jobq-worker=[^ ]+:[0-9]+ x-jobq-failed-at=[0-9-]+T'
	assert_line --index 1 'not json'
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_line --index 0 --partial 'x-jobq-reason=not a job: member "id": not a UUID'
	assert_line --index 1 '{"v":1,"id":"nope","type":"x"}'
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 0
	assert_equal "$(depth "$JOBQ_RESULT_QUEUE")" 0
}

@test "jobq-work: a job of another content type, or too large, is dead-lettered" {
	export JOBQ_MAX_SIZE=1000
	start work jobq-work -j 1 cat
	eventually has_consumer "$JOBQ_JOB_QUEUE"
	job='{"v":1,"id":"3b7e0a52-9c1d-4f6e-8a2b-5d4c3e2f1a09","type":"x","payload":"%s","attempt":1,"submitted_at":"2026-01-01T00:00:00Z"}'
	# shellcheck disable=SC2059
	qtool put "$JOBQ_JOB_QUEUE" "$(printf "$job" a)" text/plain
	# shellcheck disable=SC2059
	qtool put "$JOBQ_JOB_QUEUE" "$(printf "$job" "$(head -c 6000 /dev/zero | tr '\0' a)")"
	# shellcheck disable=SC2059
	qtool put "$JOBQ_JOB_QUEUE" "$(printf "$job" b)" 'Application/JSON ; charset=utf-8'
	eventually has_finals 1
	run results
	assert_output --partial '"result":"b"'
	eventually has_depth "$JOBQ_DEAD_QUEUE" 2
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_line --index 0 --partial 'content_type=text/plain '
	assert_line --index 0 --partial 'x-jobq-reason=not a job: content type text/plain, not application/json '
	run qtool get "$JOBQ_DEAD_QUEUE"
	assert_line --index 0 --partial 'x-jobq-reason=not a job: 6125 bytes, more than the 5096 of a job of the largest size '
	kill -0 "$(cat "$JOBS/work.pid")"
}

@test "jobq-work: logs one logfmt line per job" {
	start work jobq-work -j 1 true
	echo '{"type":"x"}' | submit
	eventually has_finals 1
	id=$(cat "$JOBS/ids")
	run grep "msg=\"job done\" id=$id type=x status=succeeded attempt=1 ms=" "$JOBS/work.log"
	assert_success
	assert_output --regexp '^ts=[0-9-]+T[0-9:.]+Z level=info tool=jobq-work '
}

@test "jobq-work: JOBQ_LOG=error silences the info lines" {
	JOBQ_LOG=error start work jobq-work -j 1 true
	echo '{"type":"x"}' | submit
	eventually has_finals 1
	stop work
	run cat "$JOBS/work.log"
	assert_output ''
}

@test "jobq-work: a command that does not exist is refused at start" {
	run jobq-work -j 1 no-such-command-here
	assert_failure 69
	assert_output 'jobq-work: no-such-command-here: command not found'
}

@test "jobq-work: -D of something that is not a folder is refused" {
	run jobq-work -D "$JOBS/nothing"
	assert_failure 66
	assert_output "jobq-work: $JOBS/nothing: not a folder"
}

@test "jobq-work: usage errors exit 64" {
	run jobq-work
	assert_failure 64
	assert_output --partial 'give either -D dir or a command'
	run jobq-work -D "$JOBS" cat
	assert_failure 64
	run jobq-work -j 0 cat
	assert_failure 64
	assert_output --partial '-j 0: not a number from 1 to 1000'
	run jobq-work -j 2x cat
	assert_failure 64
	run jobq-work -t 0 cat
	assert_failure 64
	run jobq-work --bogus cat
	assert_failure 64
	run jobq-work -h
	assert_success
	assert_output --partial 'usage: jobq-work'
}

@test "jobq-work: -V prints the version" {
	run jobq-work -V
	assert_success
	assert_output 'jobq-work 0.1.0'
}

@test "jobq-work: an unreachable broker exits 69 without the password" {
	run jobq-work -u "amqp://guest:hunter2@127.0.0.1:$(dead_port)/" cat
	assert_failure 69
	assert_output --partial 'level=error tool=jobq-work msg="exiting"'
	assert_output --partial 'guest:****@127.0.0.1'
	refute_output --partial hunter2
}

@test "jobq-work: a handler that ignores SIGTERM at its time limit gets SIGKILL" {
	handler stubborn "trap '' TERM
echo \$\$ >$JOBS/stubborn.pid
sleep 30 &
wait
sleep 30"
	start work jobq-work -j 1 -a 1 -t 1 "$JOBS/h/stubborn"
	echo '{"type":"x"}' | submit
	run next_result
	assert_output --partial '"status":"failed"'
	assert_output --partial '"error":"timed out after 1 s"'
	run kill -0 "$(cat "$JOBS/stubborn.pid")"
	assert_failure
}

@test "jobq-work: handlers keep JOBQ_JOB_QUEUE, lose stray job variables" {
	handler env 'printf "\"%s %s\"" "$JOBQ_JOB_QUEUE" "$JOBQ_JOB_TYPE"'
	JOBQ_JOB_TYPE=stray start work jobq-work -j 1 "$JOBS/h/env"
	echo '{"type":"t"}' | submit
	run next_result
	assert_output --partial "\"result\":\"$JOBQ_JOB_QUEUE t\""
	stop work
	JOBQ_JOB_TYPE=stray start work jobq-work -j 1 -e JOBQ_JOB_TYPE \
	    -e JOBQ_JOB_TYPE=other "$JOBS/h/env"
	echo '{"type":"t"}' | submit
	run next_result
	assert_output --partial "\"result\":\"$JOBQ_JOB_QUEUE t\""
}

@test "jobq-work: handlers get no credentials, only what -e passes on" {
	handler env 'printf "\"%s|%s|%s|%s|%s\"" "${JOBQ_AMQP_URL-unset}" \
    "${PGPASSWORD-unset}" "${SECRET-unset}" "${EXTRA-unset}" "$LC_ALL"'
	PGPASSWORD=pw SECRET=s LC_ALL=C start work jobq-work -j 1 \
	    "$JOBS/h/env"
	echo '{"type":"t"}' | submit
	run next_result
	assert_output --partial '"result":"unset|unset|unset|unset|C"'
	stop work
	LC_ALL= PGPASSWORD=pw SECRET=s start work jobq-work -j 1 -e PGPASSWORD \
	    -e EXTRA=a=b -e JOBQ_AMQP_URL -e NOT_SET "$JOBS/h/env"
	echo '{"type":"t"}' | submit
	run next_result
	assert_output --partial "\"result\":\"$JOBQ_AMQP_URL|pw|unset|a=b|\""
}

@test "jobq-work: a persistent handler gets the same clean environment" {
	handler penv 'while read -r _; do
printf "{\"status\":\"succeeded\",\"result\":\"%s|%s\"}\n" \
    "${SECRET-unset}" "${KEPT-unset}"; done'
	SECRET=s KEPT=k start work jobq-work -p -j 1 -e KEPT "$JOBS/h/penv"
	echo '{"type":"t"}' | submit
	run next_result
	assert_output --partial '"result":"unset|k"'
}

@test "jobq-work: -c runs handlers in a folder, found from where we were" {
	mkdir -p "$JOBS/wd" "$JOBS/types"
	handler pwd 'cat >/dev/null; printf "\"%s\"" "$(pwd)"'
	cp "$JOBS/h/pwd" "$JOBS/types/pwd"
	cd "$JOBS"
	start work jobq-work -j 1 -c wd h/pwd
	echo '{"type":"t"}' | submit
	run next_result
	assert_output --partial "\"result\":\"$JOBS/wd\""
	stop work
	start work jobq-work -j 1 -c "$JOBS/wd" -D types
	echo '{"type":"pwd"}' | submit
	run next_result
	assert_output --partial "\"status\":\"succeeded\",\"result\":\"$JOBS/wd\""
	stop work
	ln -s pwd "$JOBS/h/named"
	handler pwd 'cat >/dev/null; printf "\"%s\"" "$0"'
	start work jobq-work -j 1 -c wd h/named
	echo '{"type":"t"}' | submit
	run next_result
	assert_output --partial "\"result\":\"$JOBS/h/named\""
}

@test "jobq-work: bad -c and -e are refused at start" {
	run jobq-work -c "$JOBS/none" true
	assert_failure 66
	assert_output "jobq-work: -c $JOBS/none: not a folder"
	run jobq-work -e 1X true
	assert_failure 64
	assert_output --partial 'jobq-work: -e 1X: not a variable name, nor one with =value'
	run jobq-work -e =v true
	assert_failure 64
	run jobq-work $(printf -- '-e V%d ' $(seq 65)) true
	assert_failure 64
	assert_output --partial 'jobq-work: -e: at most 64 variables'
}

@test "jobq-work: -U runs handlers as another user, who cannot see ours" {
	[ "$(id -u)" = 0 ] || skip "only root can run handlers as another user"
	start work jobq-work -j 1 -U nobody -- sh -c 'cat >/dev/null
if cat /proc/$PPID/environ >/dev/null 2>&1; then r=read; else r=denied; fi
printf "\"%s %s %s\"" "$(id -un)" "$USER" "$r"'
	echo '{"type":"t"}' | submit
	run next_result
	assert_output --partial '"status":"succeeded","result":"nobody nobody denied"'
	stop work
	start work jobq-work -p -j 1 -U nobody -- sh -c 'while read -r _; do
printf "{\"status\":\"succeeded\",\"result\":\"%s\"}\n" "$(id -un)"; done'
	echo '{"type":"t"}' | submit
	run next_result
	assert_output --partial '"status":"succeeded","result":"nobody"'
}

@test "jobq-work: -U of its own user needs no root" {
	[ "$(id -u)" = 0 ] || skip "making another user needs root"
	d=$(mktemp -d /tmp/jobq-user.XXXXXX)
	chmod 755 "$d"
	cp "$(command -v jobq-work)" "$d/"
	start work setpriv --reuid nobody --regid nogroup --clear-groups \
	    "$d/jobq-work" -j 1 -U nobody -- sh -c 'cat >/dev/null
printf "\"%s %s\"" "$(id -un)" "$HOME"'
	echo '{"type":"t"}' | submit
	run next_result
	stop work
	rm -rf "$d"
	assert_output --partial "\"status\":\"succeeded\",\"result\":\"nobody $(getent passwd nobody | cut -d: -f6)\""
}

@test "jobq-work: a handler that -U cannot start fails its job" {
	[ "$(id -u)" = 0 ] || skip "only root can run handlers as another user"
	mkdir -p "$JOBS/private"
	chmod 700 "$JOBS/private"
	printf '#!/bin/sh\necho hi\n' >"$JOBS/private/h"
	chmod 755 "$JOBS/private/h"
	start work jobq-work -j 1 -a 1 -U nobody "$JOBS/private/h"
	echo '{"type":"t"}' | submit
	run next_result
	assert_output --partial '"status":"failed"'
	assert_output --partial "cannot run $JOBS/private/h: Permission denied"
}

@test "jobq-work: -U of no user, or not as root, is refused" {
	run jobq-work -U no-such-user-here true
	assert_failure 67
	assert_output 'jobq-work: -U no-such-user-here: no such user'
	[ "$(id -u)" = 0 ] || skip "the second half needs root"
	d=$(mktemp -d /tmp/jobq-user.XXXXXX)
	chmod 755 "$d"
	cp "$(command -v jobq-work)" "$d/"
	run runuser -u nobody -- "$d/jobq-work" -U root true
	rm -rf "$d"
	assert_failure 77
	assert_output 'jobq-work: -U root: only root can run handlers as another user'
}
