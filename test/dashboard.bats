#!/usr/bin/env bats
# The dashboard of jobq-httpd: the page, its JSON, and the page in a
# real browser against a live system.

load helpers

# send FORMAT ARGS...: one request to jobq-httpd on its standard input.
send() {
	# shellcheck disable=SC2059
	printf "$@" | jobq-httpd 2>>"$JOBS/httpd.log"
}

# The body of an answer: what follows the empty line.
body() {
	printf '%s\n' "$output" | sed '1,/^\r$/d'
}

# headless FLAG... URL: headless Chromium, as root, that lets a page's
# scripts have 5 s of their time, and reaches for nothing but the page.
headless() {
	timeout 120 /usr/bin/chromium --headless --no-sandbox --disable-gpu \
	    --disable-background-networking --disable-component-update \
	    --disable-sync --disable-default-apps --no-first-run \
	    --user-data-dir="$JOBS/chromium" --hide-scrollbars \
	    --virtual-time-budget=5000 "$@" 2>>"$JOBS/chromium.log"
}

# browse URL: the DOM of a page, once its scripts have run.
browse() {
	headless --dump-dom "$1"
}

# snap URL WIDTH,HEIGHT FILE: a screenshot of a page.
snap() {
	headless --window-size="$2" --screenshot="$3" "$1" >/dev/null
}

# A value that the page shows: the text of the first element that has
# the attribute given and the class given, in the DOM on stdin.
shown() {
	grep -o "$1\"><td>[^<]*</td><td class=\"n $2\">[^<]*" |
	    sed 's/.*>//' | head -n 1
}

# serve [OPTION...]: jobq-httpd on a free port; its URL in $url.
serve() {
	local port
	port=$(dead_port)
	start tcp "$ROOT/scripts/httpd-tcp" "$port" "$@"
	url=http://127.0.0.1:$port/
	eventually curl -s -o /dev/null "${url}healthz"
}

@test "dashboard: / is the page for anyone; its data needs the token" {
	export JOBQ_HTTP_TOKEN=sesame
	run send 'GET / HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 200 OK\r'
	assert_line $'Content-Type: text/html; charset=utf-8\r'
	assert_output --partial '<title>jobq</title>'
	refute_output --partial 'sesame'
	run send 'GET /api/overview HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 401 Unauthorized\r'
	run send 'GET /api/overview HTTP/1.1\r\nAuthorization: Bearer sesame\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 200 OK\r'
	run send 'POST / HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 405 Method Not Allowed\r'
}

@test "dashboard: /api/overview tells the queues and the table as they are" {
	migrate
	handler ok 'cat'
	handler no 'exit 65'
	start store jobq-store
	start work jobq-work -j 2 -D "$JOBS/h"
	printf '{"type":"ok"}\n{"type":"ok"}\n{"type":"no"}\n' | submit
	jobq-result -t 30 $(cat "$JOBS/ids") >/dev/null || true
	eventually has_depth "$JOBQ_DEAD_QUEUE" 1
	run send 'GET /api/overview HTTP/1.1\r\nConnection: close\r\n\r\n'
	assert_line --index 0 $'HTTP/1.1 200 OK\r'
	run jq -c '[.broker, .database, .queues[2], .jobs.succeeded.jobs,
	    .jobs.failed.jobs, .latency.count, ([.throughput[].succeeded] | add),
	    (.failures | length), .failures[0].error, .broker_error]' <<<"$(body)"
	assert_output "[\"ok\",\"ok\",{\"name\":\"$JOBQ_DEAD_QUEUE\",\"ready\":1,\"consumers\":0},2,1,3,2,1,\"exit status 65\",null]"
}

@test "dashboard: a server that is away is said to be so, at once" {
	migrate
	run env PGPORT="$(dead_port)" sh -c "printf 'GET /api/overview HTTP/1.1\r\nConnection: close\r\n\r\n' | jobq-httpd 2>/dev/null"
	assert_line --index 0 $'HTTP/1.1 200 OK\r'
	run jq -c '[.broker, .database, .jobs, .database_error, (.queues | length)]' <<<"$(body)"
	assert_output '["ok","unavailable",null,"database unavailable",3]'
	run env JOBQ_AMQP_URL="amqp://guest:guest@127.0.0.1:$(dead_port)/" sh -c "printf 'GET /api/overview HTTP/1.1\r\nConnection: close\r\n\r\n' | jobq-httpd 2>/dev/null"
	run jq -c '[.broker, .database, .queues, .broker_error, .jobs.failed.jobs]' <<<"$(body)"
	assert_output '["unavailable","ok",null,"broker unavailable",0]'
}

@test "dashboard: in a browser, it shows what the table and the queues hold" {
	[ -x /usr/bin/chromium ] || fail "chromium is not installed: run scripts/deps"
	migrate
	handler ok 'cat'
	handler no 'echo "not today" >&2; exit 65'
	handler later 'exit 75'
	handler long "cat >/dev/null; touch $JOBS/long; exec sleep 600"
	start store jobq-store
	start work jobq-work -j 4 -s 0 -a 3 -B 600 -D "$JOBS/h"
	printf '%s\n' '{"type":"ok"}' '{"type":"ok"}' '{"type":"ok"}' \
	    '{"type":"no"}' '{"type":"later"}' '{"type":"long"}' | submit
	eventually test -e "$JOBS/long"
	eventually sh -c "[ \"\$(psql -X -A -t -c \"SELECT string_agg(status, ' '
	    ORDER BY status) FROM jobs\")\" = 'failed retrying running succeeded succeeded succeeded' ]"
	serve
	failed=$(sql "SELECT id FROM jobs WHERE status = 'failed'")
	browse "${url}#job=$failed" >"$JOBS/dom.html"
	for s in queued running retrying failed succeeded; do
		page=$(shown "data-status=\"$s" count <"$JOBS/dom.html")
		table=$(sql "SELECT count(*) FROM jobs WHERE status = '$s'")
		assert_equal "$page" "$table"
		figures="$figures $s $page/$table"
	done
	echo "# page/table:$figures" >&3
	assert_equal "$(shown "data-queue=\"$JOBQ_DEAD_QUEUE" ready <"$JOBS/dom.html")" \
	    "$(depth "$JOBQ_DEAD_QUEUE")"
	run grep -o 'id="broker" class="ok">ok\|id="database" class="ok">ok' "$JOBS/dom.html"
	assert_equal "${#lines[@]}" 2
	# The search of the id in the address found the job's row.
	run grep -o "<dd data-field=\"[a-z_]*\">[^<]*" "$JOBS/dom.html"
	assert_line "<dd data-field=\"id\">$failed"
	assert_line '<dd data-field="status">failed'
	assert_line --partial '<dd data-field="error">exit status 65: not today'
	# It is among the recent failures too.
	grep -q "<tr data-id=\"$failed\">" "$JOBS/dom.html"
	art=${JOBQ_ARTIFACTS:-$ROOT/test/artifacts}
	mkdir -p "$art"
	snap "$url" 1280,900 "$art/dashboard.png"
	snap "$url" 390,844 "$art/dashboard-phone.png"
	[ -s "$art/dashboard.png" ] && [ -s "$art/dashboard-phone.png" ]
	echo "# screenshots: $art/dashboard.png $art/dashboard-phone.png" >&3
}

@test "dashboard: in a browser, a broker that is away is shown so" {
	[ -x /usr/bin/chromium ] || fail "chromium is not installed: run scripts/deps"
	migrate
	JOBQ_AMQP_URL="amqp://guest:guest@127.0.0.1:$(dead_port)/" serve
	browse "$url" >"$JOBS/dom.html"
	grep -q 'id="broker" class="bad">unavailable' "$JOBS/dom.html"
	grep -q 'id="database" class="ok">ok' "$JOBS/dom.html"
	grep -q '<p id="error">broker unavailable</p>' "$JOBS/dom.html"
	assert_equal "$(shown 'data-status="succeeded' count <"$JOBS/dom.html")" 0
}

@test "dashboard: in a browser, a server with a token asks for it" {
	[ -x /usr/bin/chromium ] || fail "chromium is not installed: run scripts/deps"
	migrate
	JOBQ_HTTP_TOKEN=sesame serve
	browse "$url" >"$JOBS/dom.html"
	grep -q '<form id="token-form">' "$JOBS/dom.html"
	grep -q '<p id="error">this server wants a token</p>' "$JOBS/dom.html"
}
