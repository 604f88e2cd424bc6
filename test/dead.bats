#!/usr/bin/env bats
# jobq-dead: the dead letters listed as they are, and jobs replayed as
# their next attempt, once each, acked only after the confirm.

# run --separate-stderr sets stderr and stderr_lines.
# shellcheck disable=SC2154
load helpers

ID=6f1c1f38-5a43-4e0b-9d6e-0c4b7c1d2e3f

# kill_jobs N: start a worker whose handler fails for good, submit N
# jobs, one a line of $JOBS/ids, and wait for all N dead letters.  The
# handler writes the id and attempt of each run to $JOBS/runs.
kill_jobs() {
	handler bad "echo \"\$JOBQ_JOB_ID \$JOBQ_ATTEMPT\" >>$JOBS/runs
echo 'no such image' >&2; exit 65"
	start work jobq-work -j 1 -B 1 "$JOBS/h/bad"
	local i
	for i in $(seq "$1"); do
		echo "{\"type\":\"x\",\"payload\":$i}"
	done | jobq-submit >>"$JOBS/ids"
	eventually has_depth "$JOBQ_DEAD_QUEUE" "$(wc -l <"$JOBS/ids")"
}

# id N: the id of the Nth job submitted.
id() {
	sed -n "${1}p" "$JOBS/ids"
}

# not_a_job: have the running worker dead-letter a message that is not
# a job, after those already there.
not_a_job() {
	local n
	n=$(depth "$JOBQ_DEAD_QUEUE")
	qtool put "$JOBQ_JOB_QUEUE" 'not json'
	eventually has_depth "$JOBQ_DEAD_QUEUE" $((n + 1))
}

# job_message ID ATTEMPT [MORE]: a job message as jobq-work reads it.
job_message() {
	printf '{"v":1,"id":"%s","type":"x","payload":"p","attempt":%s%s,' \
	    "$1" "$2" "${3:+,$3}"
	printf '"submitted_at":"2026-01-01T00:00:00.000001Z"}'
}

# next_job: the body of the next message on the job queue, taken.
next_job() {
	qtool get "$JOBQ_JOB_QUEUE" | tail -n 1
}

@test "jobq-dead: lists each dead letter with why, leaving the queue as it was" {
	kill_jobs 2
	not_a_job
	stop work
	run --separate-stderr jobq-dead
	assert_success
	assert_equal "$stderr" ''
	assert_equal "${#lines[@]}" 3
	t='"failed_at":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z"'
	w="\"queue\":\"$JOBQ_JOB_QUEUE\",\"worker\":\"[^\"]+:[0-9]+\""
	assert_line --index 0 --regexp "^\\{\"id\":\"$(id 1)\",\"type\":\"x\",\"reason\":\"exit status 65: no such image\",$w,$t,\"attempts\":1,\"job\":true\\}\$"
	assert_line --index 1 --regexp "^\\{\"id\":\"$(id 2)\",\"type\":\"x\",\"reason\":\"exit status 65: no such image\",$w,$t,\"attempts\":1,\"job\":true\\}\$"
	assert_line --index 2 --regexp "^\\{\"id\":\"qtool\",\"type\":null,\"reason\":\"not a job: line 1: invalid JSON[^\"]*\",$w,$t,\"attempts\":null,\"job\":false\\}\$"
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 3
	before=$output
	run jobq-dead -l
	assert_success
	assert_output "$before"
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 3
}

@test "jobq-dead: -E names the queue; an empty one lists nothing" {
	kill_jobs 1
	stop work
	dead=$JOBQ_DEAD_QUEUE
	JOBQ_DEAD_QUEUE=$dead.other run jobq-dead
	assert_success
	assert_output ''
	JOBQ_DEAD_QUEUE=$dead.other run jobq-dead --dead-queue "$dead"
	assert_success
	assert_output --partial "\"id\":\"$(id 1)\""
	assert_equal "$(depth "$dead")" 1
}

@test "jobq-dead: -P replays one job as attempt 2; the others stay, in order" {
	kill_jobs 3
	stop work
	run jobq-dead -P "$(id 2)"
	assert_success
	assert_output "$(id 2)"
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 2
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 1
	run jobq-dead
	assert_line --index 0 --partial "\"id\":\"$(id 1)\""
	assert_line --index 1 --partial "\"id\":\"$(id 3)\""
	assert_equal "${#lines[@]}" 2
	start work jobq-work -j 1 -B 1 "$JOBS/h/bad"
	eventually has_depth "$JOBQ_DEAD_QUEUE" 3
	run grep "^$(id 2) " "$JOBS/runs"
	assert_line --index 0 "$(id 2) 1"
	assert_line --index 1 "$(id 2) 2"
	run jobq-dead
	assert_line --index 2 --partial "\"id\":\"$(id 2)\",\"type\":\"x\",\"reason\":\"exit status 65: no such image\""
	assert_line --index 2 --partial '"attempts":2,"job":true}'
}

@test "jobq-dead: a replay is the next attempt, with -a or the job's own attempts more" {
	kill_jobs 1
	stop work
	run jobq-dead -P "$(id 1)"
	assert_success
	run next_job
	assert_output --partial "\"id\":\"$(id 1)\",\"type\":\"x\",\"payload\":1,\"attempt\":2,\"max_attempts\":6,"
	qtool put "$JOBQ_DEAD_QUEUE" "$(job_message "$ID" 3 '"max_attempts":3')"
	run jobq-dead -a 10 -P "$ID"
	assert_success
	run next_job
	assert_output --partial '"attempt":4,"max_attempts":6,'
	qtool put "$JOBQ_DEAD_QUEUE" "$(job_message "$ID" 7)"
	run jobq-dead --max-attempts 1000 --replay "$ID"
	assert_success
	run qtool get "$JOBQ_JOB_QUEUE"
	assert_line --index 0 --regexp "^routing_key=x message_id=$ID content_type=application/json type=x delivery_mode=2\$"
	assert_line --index 1 --partial '"attempt":8,"max_attempts":1000,'
}

@test "jobq-dead: a job tried 1000 times already is left, with exit 1" {
	jobq-dead
	qtool put "$JOBQ_DEAD_QUEUE" "$(job_message "$ID" 1000)"
	run --separate-stderr jobq-dead -A
	assert_failure 1
	assert_output ''
	assert_equal "$stderr" "jobq-dead: $ID: already tried 1000 times, the most a job may be; left on the queue"
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 1
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 0
}

@test "jobq-dead: -A replays every job and leaves what is not one" {
	kill_jobs 2
	not_a_job
	stop work
	run --separate-stderr jobq-dead -A
	assert_success
	assert_line --index 0 "$(id 1)"
	assert_line --index 1 "$(id 2)"
	assert_equal "${#lines[@]}" 2
	[[ "$stderr" =~ ^"jobq-dead: dead letter 3: not a job: line 1: invalid JSON".*"; left on the queue"$ ]]
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 1
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 2
	run jobq-dead
	assert_output --partial '"job":false}'
}

@test "jobq-dead: copies of one job are replayed once, from the last attempt" {
	jobq-dead
	other=0b6f6a1e-2c3d-4e5f-8a9b-0c1d2e3f4a5b
	qtool put "$JOBQ_DEAD_QUEUE" "$(job_message "$ID" 1)"
	qtool put "$JOBQ_DEAD_QUEUE" "$(job_message "$other" 1)"
	qtool put "$JOBQ_DEAD_QUEUE" "$(job_message "$ID" 3)"
	qtool put "$JOBQ_DEAD_QUEUE" "$(job_message "$ID" 2)"
	run jobq-dead -A
	assert_success
	assert_line --index 0 "$ID"
	assert_line --index 1 "$other"
	assert_equal "${#lines[@]}" 2
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 0
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 2
	run next_job
	assert_output --partial "\"id\":\"$ID\",\"type\":\"x\",\"payload\":\"p\",\"attempt\":4,"
}

@test "jobq-dead: more jobs than are in flight at once are all replayed, in order" {
	# Jobs straight onto the dead-letter queue, through an exchange
	# of their own bound to it.
	seq 300 | sed 's/.*/{"type":"x","payload":&}/' |
	    jobq-submit -x "$JOBQ_EXCHANGE.dead" -q "$JOBQ_DEAD_QUEUE" >"$JOBS/ids"
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 300
	run jobq-dead -A
	assert_success
	assert_output "$(cat "$JOBS/ids")"
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 0
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 300
	run next_job
	assert_output --partial '"payload":1,"attempt":2,"max_attempts":6,'
}

@test "jobq-dead: a replayed job that succeeds is stored as succeeded" {
	migrate
	start store jobq-store
	# shellcheck disable=SC2016 # for the handler to expand
	handler once '[ "$JOBQ_ATTEMPT" -ge 2 ] && { echo "\"fixed\""; exit 0; }
echo broken >&2; exit 65'
	start work jobq-work -j 1 -B 1 "$JOBS/h/once"
	id=$(echo '{"type":"x"}' | jobq-submit)
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	run jobq-result -t 20 "$id"
	assert_failure 1
	assert_output --partial '"status":"failed","result":null,"error":"exit status 65: broken","attempts":1'
	assert_output --partial "\"dead_queue\":\"$JOBQ_DEAD_QUEUE\"}"
	run jobq-dead -P "$id"
	assert_success
	assert_output "$id"
	eventually sh -c "jobq-result '$id' | grep -q '\"status\":\"succeeded\"'"
	run jobq-result "$id"
	assert_success
	assert_output --partial '"status":"succeeded","result":"fixed","error":null,"attempts":2'
	assert_output --partial '"dead_queue":null}'
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 0
}

@test "jobq-dead: an id not in the queue is named; the rest is replayed; exit 1" {
	kill_jobs 1
	stop work
	run --separate-stderr jobq-dead -P "$ID" "$(id 1)"
	assert_failure 1
	assert_output "$(id 1)"
	assert_equal "$stderr" "jobq-dead: $ID: not in the dead-letter queue"
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 0
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 1
}

@test "jobq-dead: an id that is not a UUID exits 65 and touches nothing" {
	kill_jobs 1
	stop work
	run --separate-stderr jobq-dead -P "$(id 1)" 42
	assert_failure 65
	assert_output ''
	assert_equal "$stderr" 'jobq-dead: 42: not a job id (a UUID)'
	assert_equal "$(depth "$JOBQ_DEAD_QUEUE")" 1
	assert_equal "$(depth "$JOBQ_JOB_QUEUE")" 0
}

@test "jobq-dead: a wrong command line exits 64 with the usage" {
	for args in "-P" "$ID" "-A -P $ID" "-l -A" "-l -P $ID" "-a 3" \
	    "-A $ID" "-A -a 1001" "--no-such-option" "-x"; do
		# shellcheck disable=SC2086
		run --separate-stderr jobq-dead $args
		assert_failure 64
		assert_output ''
		[[ "$stderr" == *"usage: jobq-dead "* ]]
	done
	run --separate-stderr jobq-dead -A -a 0
	assert_failure 64
	assert_equal "${stderr_lines[0]}" 'jobq-dead: -a 0: not a number from 1 to 1000'
	JOBQ_DEAD_QUEUE='' run jobq-dead -E ''
	assert_failure 64
	assert_output 'jobq-dead: queue names must be 1 to 255 bytes'
}

@test "jobq-dead: an unreachable broker exits 69 without the password" {
	run --separate-stderr jobq-dead -u "amqp://jobq:s3cret@127.0.0.1:$(dead_port)/"
	assert_failure 69
	assert_output ''
	[[ "$stderr" == "jobq-dead: broker amqp://jobq:****@127.0.0.1:"* ]]
	[[ "$stderr" != *s3cret* ]]
}

@test "jobq-dead: -h is the SYNOPSIS of the manual; -V the version" {
	run --separate-stderr jobq-dead --help
	assert_success
	assert_equal "$stderr" ''
	usage=$(printf '%s\n' "$output" | tr -s ' \t\n' ' ' |
	    sed 's/^usage: //; s/ $//')
	if command -v mandoc >/dev/null; then
		synopsis=$(mandoc -Tascii -O width=300 "$ROOT/man/jobq-dead.1" |
		    col -b | awk '/^SYNOPSIS/ { on = 1; next }
		    /^[A-Z]/ { on = 0 } on' | tr -s ' \t\n' ' ' |
		    sed 's/^ //; s/ $//')
		assert_equal "$synopsis" "$usage"
	fi
	run jobq-dead --version
	assert_success
	assert_output 'jobq-dead 0.1.0'
}
