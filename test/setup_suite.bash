# Start one private RabbitMQ and PostgreSQL for the whole run, on free
# ports under a temporary folder, and stop them by pid at the end.

setup_suite() {
	local root
	root=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
	JOBQ_TEST_SERVERS=$(mktemp -d /tmp/jobq-test.XXXXXX)
	export JOBQ_TEST_SERVERS
	"$root/scripts/servers" start "$JOBQ_TEST_SERVERS" >&3 2>&3
	# shellcheck disable=SC1091
	. "$JOBQ_TEST_SERVERS/env"
}

teardown_suite() {
	local root
	root=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
	"$root/scripts/servers" stop "$JOBQ_TEST_SERVERS"
	rm -rf "$JOBQ_TEST_SERVERS"
}
