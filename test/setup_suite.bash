# Start one private RabbitMQ and PostgreSQL for the whole run, on free
# ports under a temporary folder, and stop them by pid at the end.

setup_suite() {
	local root
	root=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
	JOBQ_TEST_SERVERS=$(mktemp -d /tmp/jobq-test.XXXXXX)
	export JOBQ_TEST_SERVERS
	# Free ports are only free when looked at: another program may
	# take one before a server binds it, so a failed start has a
	# second chance on other ports.
	# The broker's management API, for jobq-stat's unacked figures.
	export JOBQ_SERVERS_MANAGEMENT=1
	if ! "$root/scripts/servers" start "$JOBQ_TEST_SERVERS" >&3 2>&3; then
		tail -n 20 "$JOBQ_TEST_SERVERS"/rabbit/server.log \
		    "$JOBQ_TEST_SERVERS"/pg/postgres.log >&3 2>&1 || true
		rm -rf "$JOBQ_TEST_SERVERS"
		JOBQ_TEST_SERVERS=$(mktemp -d /tmp/jobq-test.XXXXXX)
		"$root/scripts/servers" start "$JOBQ_TEST_SERVERS" >&3 2>&3
	fi
	# shellcheck disable=SC1091
	. "$JOBQ_TEST_SERVERS/env"
}

teardown_suite() {
	local root
	root=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
	"$root/scripts/servers" stop "$JOBQ_TEST_SERVERS"
	rm -rf "$JOBQ_TEST_SERVERS"
}
