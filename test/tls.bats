#!/usr/bin/env bats
# TLS to PostgreSQL: libpq's sslmode and its fellows pass through the
# tools' connection strings and PG* variables untouched, against a
# server of this file's own that takes connections only over TLS.

load helpers

# A self-signed certificate for 127.0.0.1, its key, as NAME.crt and
# NAME.key in the folder of the server.
certificate() {
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
	    -addext subjectAltName=IP:127.0.0.1 -keyout "$TLS_DIR/$1.key" \
	    -out "$TLS_DIR/$1.crt" 2>/dev/null
}

setup_file() {
	[ "$(id -u)" = 0 ] || skip "starts PostgreSQL as the user postgres"
	command -v openssl >/dev/null || skip "openssl is not installed"
	local bin opts
	bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	TLS_DIR=$(mktemp -d /tmp/jobq-tls.XXXXXX)
	chmod 755 "$TLS_DIR"
	certificate server
	certificate other
	chown postgres: "$TLS_DIR" "$TLS_DIR"/server.*
	chmod 600 "$TLS_DIR/server.key"
	runuser -u postgres -- "$bin/initdb" -D "$TLS_DIR/data" -U postgres \
	    -A trust --no-sync >/dev/null
	printf '%s\n' 'local all all trust' \
	    'hostssl all all 127.0.0.1/32 trust' \
	    'host all all 127.0.0.1/32 reject' >"$TLS_DIR/data/pg_hba.conf"
	TLS_PORT=$(dead_port)
	opts="-p $TLS_PORT -k $TLS_DIR -c listen_addresses=127.0.0.1"
	opts="$opts -c ssl=on -c ssl_cert_file=$TLS_DIR/server.crt"
	opts="$opts -c ssl_key_file=$TLS_DIR/server.key"
	runuser -u postgres -- "$bin/pg_ctl" -D "$TLS_DIR/data" -w -t 60 \
	    -l "$TLS_DIR/postgres.log" -o "$opts" start >/dev/null
	export TLS_DIR TLS_PORT TLS_BIN=$bin
}

teardown_file() {
	[ -n "${TLS_DIR-}" ] || return 0
	runuser -u postgres -- "$TLS_BIN/pg_ctl" -D "$TLS_DIR/data" \
	    -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$TLS_DIR"
}

# The server of this file, as a connection string, with more after it.
tls_db() {
	echo "host=127.0.0.1 port=$TLS_PORT user=postgres dbname=postgres $*"
}

@test "tls: sslmode passes through -d, and PGSSLMODE through the environment" {
	run --separate-stderr jobq-migrate -d "$(tls_db sslmode=require)"
	assert_success
	run --separate-stderr jobq-migrate -l -d "$(tls_db \
	    sslmode=verify-full sslrootcert="$TLS_DIR/server.crt")"
	assert_success
	assert_output --partial '001_jobs.sql'
	run --separate-stderr env PGSSLMODE=verify-full \
	    PGSSLROOTCERT="$TLS_DIR/server.crt" \
	    jobq-result -d "$(tls_db)" 0f8fad5b-d9cb-469f-a165-70867728950e
	assert_failure 75
	assert_equal "$stderr" "jobq-result: 0f8fad5b-d9cb-469f-a165-70867728950e: no result stored"
	run --separate-stderr env PGSSLMODE=disable \
	    jobq-result -d "$(tls_db)" 0f8fad5b-d9cb-469f-a165-70867728950e
	assert_failure 69
	assert_regex "$stderr" '^jobq-result: .*no encryption'
}

@test "tls: no TLS, or a certificate that cannot be verified, exits 69 and says why" {
	run --separate-stderr jobq-migrate -l -d "$(tls_db sslmode=disable)"
	assert_failure 69
	assert_regex "$stderr" '^jobq-migrate: database: .*no encryption'
	run --separate-stderr jobq-migrate -l -d "$(tls_db \
	    sslmode=verify-full sslrootcert="$TLS_DIR/other.crt")"
	assert_failure 69
	assert_regex "$stderr" '^jobq-migrate: database: .*certificate verify failed'
}
