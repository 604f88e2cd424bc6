#!/usr/bin/env bats
# docker-compose.yml and the Dockerfile, checked without a Docker
# engine (there is none on the test machines): the file is valid, and
# the services start in the order the system needs.

load helpers

setup() {
	command -v docker-compose >/dev/null || skip "docker-compose is not installed"
	cd "$ROOT"
}

teardown() {
	:
}

# config: the file as Compose reads it, with the example credentials.
config() {
	docker-compose --env-file .env.example -f docker-compose.yml config
}

# dependencies: "service dependency condition" lines, sorted.
dependencies() {
	config | awk '
	/^services:/ { in_services = 1; next }
	/^[a-z]/ { in_services = 0 }
	in_services && /^  [a-z]+:$/ { svc = $1; sub(":", "", svc); dep = 0 }
	in_services && /^    depends_on:$/ { dep = 1; next }
	in_services && /^    [a-z_]+:/ { dep = 0 }
	dep && /^      [a-z]+:$/ { d = $1; sub(":", "", d) }
	dep && /^        condition:/ { print svc, d, $2 }' | sort
}

@test "compose: docker-compose accepts the file" {
	run docker-compose --env-file .env.example -f docker-compose.yml config -q
	assert_success
	assert_output ''
}

@test "compose: services start in the order the system needs" {
	run dependencies
	assert_output "httpd migrate service_completed_successfully
httpd rabbitmq service_healthy
migrate postgres service_healthy
store migrate service_completed_successfully
store rabbitmq service_healthy
worker httpd service_healthy"
}

@test "compose: every long-running service has a healthcheck" {
	run config
	for svc in rabbitmq postgres httpd store worker; do
		printf '%s\n' "$output" | awk -v s="  $svc:" '
		    $0 == s { on = 1; next } /^  [a-z]+:$/ { on = 0 }
		    on && /healthcheck:/ { found = 1 } END { exit !found }'
	done
	assert_output --partial 'http://127.0.0.1:8080/healthz'
	assert_output --partial '/usr/local/libexec/jobq/fresh'
}

@test "compose: workers scale, credentials come from the environment" {
	run config
	# Nothing that two workers could not share: no name, no port.
	printf '%s\n' "$output" | awk '
	    /^  worker:$/ { on = 1; next } /^  [a-z]+:$/ { on = 0 }
	    on && /(container_name|ports):/ { bad = 1 } END { exit bad }'
	run grep -c 'change-me' docker-compose.yml
	assert_output 0
	run grep -q '^\.env$' .gitignore
	assert_success
}

@test "compose: the image that runs holds no compiler" {
	run awk '/^FROM/ { stage++ } stage == 2' Dockerfile
	refute_output --partial gcc
	refute_output --partial -dev
	assert_output --partial socat
	assert_output --partial 'COPY --from=build'
}

@test "compose: it will not start without an HTTP token" {
	grep -v '^JOBQ_HTTP_TOKEN=' .env.example >"$BATS_TEST_TMPDIR/env"
	run docker-compose --env-file "$BATS_TEST_TMPDIR/env" \
	    -f docker-compose.yml config -q
	assert_failure
	assert_output --partial 'set JOBQ_HTTP_TOKEN in .env'
	run docker-compose --env-file .env.example -f docker-compose.yml config
	assert_output --partial 'JOBQ_HTTP_TOKEN: change-me-too'
}
