#!/usr/bin/env bats
# jobq-work -p: persistent handlers, a line each way per job.

load helpers

# number_of LINE: the number that a result line holds as its result.
number_of() {
	printf '%s\n' "$1" | sed 's/.*"result":\([0-9]*\).*/\1/'
}

# phandler NAME BODY: a persistent shell handler answering each line
# with what BODY prints; $line holds the request.
phandler() {
	handler "$1" "while IFS= read -r line; do
$2
done"
}

# around DOC: a plain job, then DOC, then a plain job, each waited for
# on the result queue; the results are in $lines, and $first and $last
# the handler pids that answered the first and the last.
around() {
	local n doc
	n=$(collect && _finals | wc -l)
	for doc in '{"type":"x"}' "$1" '{"type":"x"}'; do
		echo "$doc" | submit
		n=$((n + 1))
		eventually has_finals "$n"
	done
	run results
	first=$(number_of "${lines[0]}")
	last=$(number_of "${lines[2]}")
}

@test "persistent: -p keeps one process per slot for many jobs" {
	phandler pid 'echo "{\"status\":\"succeeded\",\"result\":$$}"'
	start work jobq-work -p -j 2 "$JOBS/h/pid"
	for i in $(seq 10); do echo '{"type":"x"}'; done | submit
	eventually has_finals 10
	run results
	assert_equal "$(printf '%s\n' "$output" | grep -c '"status":"succeeded"')" 10
	pids=$(printf '%s\n' "$output" | sed 's/.*"result":\([0-9]*\).*/\1/' | sort -u | wc -l)
	[ "$pids" -le 2 ]
}

@test "persistent: the request holds the id, type, attempt and payload" {
	phandler req 'printf "%s\n" "$line" >>'"$JOBS"'/requests
echo "{\"status\":\"succeeded\",\"result\":null}"'
	start work jobq-work -p -j 1 "$JOBS/h/req"
	echo '{"type":"t.1","payload":{"a":[1,"b"]}}' | submit
	eventually has_finals 1
	id=$(cat "$JOBS/ids")
	run cat "$JOBS/requests"
	assert_output --regexp "^\\{\"id\":\"$id\",\"type\":\"t.1\",\"attempt\":1,\"traceparent\":\"00-[0-9a-f]{32}-[0-9a-f]{16}-01\",\"payload\":\\{\"a\":\\[1,\"b\"\\]\\}\\}\$"
}

@test "persistent: the example echo-persistent gives the payload back" {
	start work jobq-work -p -j 2 "$ROOT/handlers/echo-persistent"
	echo '{"type":"x","payload":{"k":"v}","n":[1,2]}}' | submit
	eventually has_finals 1
	run results
	assert_output --partial '"status":"succeeded","result":{"k":"v}","n":[1,2]},"error":null'
}

@test "persistent: retry, fail and failed act as exits 75, 65 and 1" {
	phandler outcomes 'case $line in
*\"retry\"*) echo "{\"status\":\"retry\",\"error\":\"later\"}" ;;
*\"fail\"*) echo "{\"status\":\"fail\",\"error\":\"never\"}" ;;
*) echo "{\"status\":\"failed\",\"error\":\"broke\"}" ;;
esac'
	start work jobq-work -p -j 1 -a 2 -B 1 "$JOBS/h/outcomes"
	echo '{"type":"x","payload":"retry"}' | submit
	echo '{"type":"x","payload":"fail"}' | submit
	echo '{"type":"x","payload":"other"}' | submit
	eventually has_depth "$JOBQ_DEAD_QUEUE" 3
	run results
	assert_output --partial '"status":"retrying","result":null,"error":"later","attempts":1'
	assert_output --partial '"status":"failed","result":null,"error":"later","attempts":2'
	assert_output --partial '"status":"failed","result":null,"error":"never","attempts":1'
	assert_output --partial '"status":"retrying","result":null,"error":"broke","attempts":1'
	assert_output --partial '"status":"failed","result":null,"error":"broke","attempts":2'
}

@test "persistent: a bad reply fails the attempt and replaces the process" {
	phandler bad 'case $line in
*\"bad\"*) echo "not json" ;;
*) echo "{\"status\":\"succeeded\",\"result\":$$}" ;;
esac'
	start work jobq-work -p -j 1 -a 1 "$JOBS/h/bad"
	around '{"type":"x","payload":"bad"}'
	assert_line --index 1 --partial '"status":"failed","result":null,"error":"bad reply from the handler: '
	[ -n "$first" ] && [ "$first" != "$last" ]
}

@test "persistent: a handler that dies, hangs or closes its output is replaced" {
	phandler moody 'case $line in
*\"die\"*) exit 3 ;;
*\"hang\"*) sleep 60 ;;
*\"close\"*) exec >&- ; sleep 60 ;;
*) echo "{\"status\":\"succeeded\",\"result\":\"fine\"}" ;;
esac'
	start work jobq-work -p -j 1 -a 1 -t 2 "$JOBS/h/moody"
	for p in die fine hang fine close fine; do
		echo "{\"type\":\"x\",\"payload\":\"$p\"}"
	done | submit
	eventually has_finals 6
	run results
	assert_line --index 0 --partial '"error":"exit status 3"'
	assert_line --index 1 --partial '"status":"succeeded","result":"fine"'
	assert_line --index 2 --partial '"error":"timed out after 2 s"'
	assert_line --index 3 --partial '"status":"succeeded","result":"fine"'
	assert_line --index 4 --partial '"error":"the handler closed its output without a reply"'
	assert_line --index 5 --partial '"status":"succeeded","result":"fine"'
}

@test "persistent: TERM ends the handlers' input and exits 0" {
	handler tidy "trap 'echo bye >>$JOBS/bye' EXIT
while IFS= read -r line; do echo '{\"status\":\"succeeded\"}'; done"
	start work jobq-work -p -j 2 "$JOBS/h/tidy"
	echo '{"type":"x"}' | submit
	eventually has_finals 1
	stop work
	assert_equal "$(cat "$JOBS/work.rc")" 0
	assert_equal "$(grep -c bye "$JOBS/bye")" 1
}

@test "persistent: -p with -D is a usage error" {
	run jobq-work -p -D "$JOBS"
	assert_failure 64
	assert_output --partial 'jobq-work: -p runs a command, not -D'
}

@test "persistent: an unknown status is a bad reply, even with an error" {
	phandler weird 'echo "{\"status\":\"maybe\",\"error\":\"e\"}"'
	start work jobq-work -p -j 1 -a 1 "$JOBS/h/weird"
	echo '{"type":"x"}' | submit
	eventually has_finals 1
	run results
	assert_output --partial '"error":"bad reply from the handler: unknown status"'
}

@test "persistent: a reply after the time limit does not count" {
	phandler late "trap 'echo \"{\\\"status\\\":\\\"succeeded\\\",\\\"result\\\":\\\"late\\\"}\"; exit 0' TERM
sleep 30 & wait"
	start work jobq-work -p -j 1 -a 1 -t 1 "$JOBS/h/late"
	echo '{"type":"x"}' | submit
	eventually has_finals 1
	run results
	assert_output --partial '"status":"failed","result":null,"error":"timed out after 1 s"'
}

@test "persistent: a job refused before it reaches the handler spares it" {
	phandler pid 'echo "{\"status\":\"succeeded\",\"result\":$$}"'
	start work jobq-work -p -j 1 -C 100 "$JOBS/h/pid"
	around '{"type":"x","timeout":100}'
	assert_line --index 1 --partial 'is not below the broker'
	assert_equal "$first" "$last"
}

@test "persistent: handlers get no job variables of the worker's own" {
	phandler env 'echo "{\"status\":\"succeeded\",\"result\":\"${JOBQ_JOB_ID-none}\"}"'
	JOBQ_JOB_ID=stray start work jobq-work -p -j 1 "$JOBS/h/env"
	echo '{"type":"x"}' | submit
	eventually has_finals 1
	run results
	assert_output --partial '"result":"none"'
}
