/*
 * db.c: the database side of jobq.
 *
 * Connections follow libpq's rules, so the PG* variables work as they
 * do for psql.  Rows are written only through parameters: a batch of
 * results travels as one JSON array that PostgreSQL unpacks itself, so
 * one round trip and one commit store any number of them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq.h"

/* A timestamptz column as RFC 3339 in UTC with microseconds. */
#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', " \
	"'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* The columns of a row as jobq-result prints it; see row_object(). */
#define ROW_COLUMNS \
	"SELECT id::text, type, status, result::text, error, attempts, " \
	"worker, " TS("submitted_at") ", " TS("started_at") ", " \
	TS("finished_at") ", " TS("stored_at") ", traceparent, " \
	"dead_queue FROM jobs "

static const char fetch_sql[] =
	ROW_COLUMNS "WHERE id = ANY($1::uuid[])";

/* Any of the filters may be null, which lets every row through. */
static const char list_sql[] =
	ROW_COLUMNS "WHERE ($1::text IS NULL OR status = $1) "
	"AND ($2::text IS NULL OR type = $2) "
	"AND ($3::float8 IS NULL OR "
	"submitted_at > now() - make_interval(secs => $3)) "
	"ORDER BY submitted_at DESC, id LIMIT $4";

/*
 * One batch of final rows that ended before the age given: a short
 * transaction of its own, which locks only the rows it removes.
 */
static const char expire_sql[] =
	"DELETE FROM jobs WHERE id IN (SELECT id FROM jobs "
	"WHERE finished_at < now() - make_interval(secs => $1) "
	"AND status IN ('succeeded', 'failed') "
	"ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)";

/*
 * Of several results for one job, the row keeps the one with the most
 * attempts, then the highest status rank; a tie keeps what is stored,
 * or in one batch the one delivered first.
 */
static const char store_sql[] =
	"WITH batch AS ("
	" SELECT DISTINCT ON (r.id) r.* FROM ROWS FROM ("
	" jsonb_to_recordset($1::jsonb) AS (id uuid, type text, status text,"
	" result jsonb, error text, attempts int, worker text,"
	" submitted_at timestamptz, started_at timestamptz,"
	" finished_at timestamptz, traceparent text, dead_queue text))"
	" WITH ORDINALITY AS r(id, type, status, result, error, attempts,"
	" worker, submitted_at, started_at, finished_at, traceparent,"
	" dead_queue, n)"
	" ORDER BY r.id, r.attempts DESC, jobq_status_rank(r.status) DESC,"
	" r.n"
	"), stored AS ("
	" INSERT INTO jobs AS j (id, type, status, result, error, attempts,"
	" worker, submitted_at, started_at, finished_at, traceparent,"
	" dead_queue)"
	" SELECT id, type, status, result, error, attempts, worker,"
	" submitted_at, started_at, finished_at, traceparent, dead_queue"
	" FROM batch"
	" ON CONFLICT (id) DO UPDATE SET type = EXCLUDED.type,"
	" status = EXCLUDED.status, result = EXCLUDED.result,"
	" error = EXCLUDED.error, attempts = EXCLUDED.attempts,"
	" worker = EXCLUDED.worker, submitted_at = EXCLUDED.submitted_at,"
	" started_at = EXCLUDED.started_at,"
	" finished_at = EXCLUDED.finished_at,"
	" traceparent = EXCLUDED.traceparent,"
	" dead_queue = EXCLUDED.dead_queue, stored_at = now()"
	" WHERE (EXCLUDED.attempts, jobq_status_rank(EXCLUDED.status)) >"
	" (j.attempts, jobq_status_rank(j.status))"
	" RETURNING 1"
	") SELECT count(*), pg_notify('" JOBQ_NOTIFY_CHANNEL "', "
	"count(*)::text) FROM stored";

/* The first line of libpq's last error message, for one-line reports. */
static const char *
first_line(const char *msg, char *buf, size_t size)
{
	snprintf(buf, size, "%s", msg);
	buf[strcspn(buf, "\n")] = '\0';
	return buf;
}

/*
 * Only a data exception or a constraint violation (SQLSTATE classes 22
 * and 23) blames the data; anything else (a lost connection, a missing
 * table, a full disk) is the database's trouble, and no data may be
 * dropped for it.
 */
static int
db_err(PGconn *conn, PGresult *res, const char *what,
    struct jobq_err *err)
{
	const char	*state = NULL;
	char		 line[400];
	int		 code = EX_UNAVAILABLE;

	if (res != NULL)
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (PQstatus(conn) == CONNECTION_OK && state != NULL &&
	    (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0))
		code = EX_DATAERR;
	if (res != NULL &&
	    PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) != NULL)
		first_line(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY),
		    line, sizeof(line));
	else
		first_line(PQerrorMessage(conn), line, sizeof(line));
	jobq_errf(err, code, "%s: %s", what, line);
	if (err != NULL && state != NULL)
		snprintf(err->sqlstate, sizeof(err->sqlstate), "%s", state);
	return -1;
}

const char *const jobq_statuses[JOBQ_STATUSES] = {
	"queued", "running", "retrying", "failed", "succeeded"
};
const double jobq_buckets[JOBQ_BUCKETS] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300
};

/* libpq prints notices on stderr by default; the library never prints. */
static void
ignore_notice(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

/*
 * Connect with a conninfo string or URL; an empty one means libpq's
 * PG* variables and defaults.  NULL on failure.
 */
PGconn *
jobq_db_open(const char *conninfo, struct jobq_err *err)
{
	const char	*keys[] = { "dbname", "fallback_application_name",
			    NULL };
	const char	*vals[] = { conninfo, "jobq", NULL };
	PGconn		*conn;
	char		 line[400];

	conn = PQconnectdbParams(keys, vals, 1);
	if (conn == NULL) {
		jobq_errf(err, EX_OSERR, "out of memory");
		return NULL;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		jobq_errf(err, EX_UNAVAILABLE, "database: %s",
		    first_line(PQerrorMessage(conn), line, sizeof(line)));
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeProcessor(conn, ignore_notice, NULL);
	return conn;
}

static json_object *
text_or_null(PGresult *res, int row, int col)
{
	if (PQgetisnull(res, row, col))
		return NULL;
	return json_object_new_string(PQgetvalue(res, row, col));
}

/* One row of fetch_sql as the JSON object that jobq-result prints. */
static json_object *
row_object(PGresult *res, int row)
{
	static const char	*names[] = { "id", "type", "status", "result",
				    "error", "attempts", "worker",
				    "submitted_at", "started_at", "finished_at",
				    "stored_at", "traceparent", "dead_queue" };
	json_object		*o, *v;
	int			 col;

	if ((o = json_object_new_object()) == NULL)
		return NULL;
	for (col = 0; col < (int)(sizeof(names) / sizeof(names[0])); col++) {
		if (PQgetisnull(res, row, col))
			v = NULL;
		else if (col == 3)
			v = json_tokener_parse(PQgetvalue(res, row, col));
		else if (col == 5)
			v = json_object_new_int(atoi(PQgetvalue(res, row,
			    col)));
		else
			v = text_or_null(res, row, col);
		json_object_object_add(o, names[col], v);
	}
	return o;
}

/*
 * Look up the rows of n jobs.  rows[i] becomes the row of ids[i] as a
 * JSON object, or NULL when no row is stored for it.  The ids must be
 * canonical UUIDs.
 */
int
jobq_db_fetch(PGconn *conn, char (*ids)[JOBQ_UUID_LEN + 1], size_t n,
    json_object **rows, struct jobq_err *err)
{
	PGresult	*res;
	char		*array, *p;
	const char	*params[1];
	size_t		 i;
	int		 row, rc = -1;

	for (i = 0; i < n; i++)
		rows[i] = NULL;
	if ((array = malloc(n * (JOBQ_UUID_LEN + 1) + 3)) == NULL)
		return jobq_errf(err, EX_OSERR, "out of memory");
	p = array;
	*p++ = '{';
	for (i = 0; i < n; i++) {
		if (i > 0)
			*p++ = ',';
		memcpy(p, ids[i], JOBQ_UUID_LEN);
		p += JOBQ_UUID_LEN;
	}
	*p++ = '}';
	*p = '\0';
	params[0] = array;
	res = PQexecParams(conn, fetch_sql, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		db_err(conn, res, "fetch jobs", err);
		goto out;
	}
	for (row = 0; row < PQntuples(res); row++)
		for (i = 0; i < n; i++)
			if (rows[i] == NULL &&
			    strcmp(ids[i], PQgetvalue(res, row, 0)) == 0)
				rows[i] = row_object(res, row);
	rc = 0;
out:
	PQclear(res);
	free(array);
	return rc;
}

/*
 * Call each for the rows that match: of the status and the type given,
 * unless NULL, submitted in the last within_s seconds, unless 0, the
 * newest first, at most limit of them.  each owns the row it gets.
 */
int
jobq_db_list(PGconn *conn, const char *status, const char *type,
    long within_s, long limit, void (*each)(json_object *, void *),
    void *arg, struct jobq_err *err)
{
	PGresult	*res;
	const char	*params[4];
	char		 within[32], max[32];
	int		 row;

	snprintf(within, sizeof(within), "%ld", within_s);
	snprintf(max, sizeof(max), "%ld", limit);
	params[0] = status;
	params[1] = type;
	params[2] = within_s > 0 ? within : NULL;
	params[3] = max;
	res = PQexecParams(conn, list_sql, 4, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		db_err(conn, res, "list jobs", err);
		PQclear(res);
		return -1;
	}
	for (row = 0; row < PQntuples(res); row++)
		each(row_object(res, row), arg);
	PQclear(res);
	return 0;
}

/*
 * Remove the final rows of jobs that ended more than age_s seconds ago,
 * batch rows at a time, each batch committed on its own, so that no
 * lock is held for long.  *removed counts them, also on an error.
 */
int
jobq_db_expire(PGconn *conn, long age_s, long batch, long long *removed,
    struct jobq_err *err)
{
	PGresult	*res;
	const char	*params[2];
	char		 age[32], max[32];
	long long	 n;

	snprintf(age, sizeof(age), "%ld", age_s);
	snprintf(max, sizeof(max), "%ld", batch);
	params[0] = age;
	params[1] = max;
	*removed = 0;
	do {
		res = PQexecParams(conn, expire_sql, 2, NULL, params, NULL,
		    NULL, 0);
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			db_err(conn, res, "remove old jobs", err);
			PQclear(res);
			return -1;
		}
		n = strtoll(PQcmdTuples(res), NULL, 10);
		*removed += n;
		PQclear(res);
	} while (n == batch);
	return 0;
}

/* Make the statement that stores batches ready on a connection. */
int
jobq_db_prepare_store(PGconn *conn, struct jobq_err *err)
{
	PGresult	*res;
	int		 rc = 0;

	res = PQprepare(conn, "jobq_store", store_sql, 1, NULL);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		rc = db_err(conn, res, "prepare store", err);
	PQclear(res);
	return rc;
}

/*
 * Send a batch of results, given as the JSON text of an array of
 * result messages, to be stored in one statement and so in one
 * transaction that also notifies the waiters.  The connection must
 * have had jobq_db_prepare_store().  jobq_db_store_wait() reads the
 * answer; until then the connection runs nothing else, and
 * PQsocket() becomes readable when the answer comes.
 */
int
jobq_db_store_send(PGconn *conn, const char *batch, struct jobq_err *err)
{
	const char	*params[1] = { batch };
	char		 line[400];

	if (PQsendQueryPrepared(conn, "jobq_store", 1, params, NULL, NULL,
	    0) == 0)
		return jobq_errf(err, EX_UNAVAILABLE, "database: store "
		    "results: %s", first_line(PQerrorMessage(conn), line,
		    sizeof(line)));
	return 0;
}

/*
 * Whether the answer to jobq_db_store_send() has come, so that
 * jobq_db_store_wait() returns at once.  A failed connection counts as
 * an answer: jobq_db_store_wait() reports it.
 */
int
jobq_db_store_done(PGconn *conn)
{
	return PQconsumeInput(conn) == 0 || !PQisBusy(conn);
}

/*
 * Wait for the answer to jobq_db_store_send().  *stored is the number
 * of rows that changed.  EX_DATAERR means the batch held something the
 * table refused; EX_UNAVAILABLE that the connection failed.
 */
int
jobq_db_store_wait(PGconn *conn, long *stored, struct jobq_err *err)
{
	PGresult	*res;
	int		 rc = 0, rows = 0;

	/*
	 * The commit comes after the rows, so that an error of the commit
	 * is a result of its own after them: read every result, and keep
	 * the first error.
	 */
	while ((res = PQgetResult(conn)) != NULL) {
		if (rc == 0 && PQresultStatus(res) == PGRES_TUPLES_OK &&
		    !rows) {
			*stored = atol(PQgetvalue(res, 0, 0));
			rows = 1;
		} else if (rc == 0)
			rc = db_err(conn, res, "store results", err);
		PQclear(res);
	}
	if (rc == 0 && (!rows || PQstatus(conn) != CONNECTION_OK ||
	    PQtransactionStatus(conn) != PQTRANS_IDLE))
		rc = db_err(conn, NULL, "store results", err);
	return rc;
}

/* Store a batch as jobq_db_store_send() does, and wait for it. */
int
jobq_db_store(PGconn *conn, const char *batch, long *stored,
    struct jobq_err *err)
{
	if (jobq_db_store_send(conn, batch, err) == -1)
		return -1;
	return jobq_db_store_wait(conn, stored, err);
}

/*
 * Count the latencies (finished_at - submitted_at) of the jobs that
 * finished in the last window seconds, by the buckets of jobq_buckets.
 */
int
jobq_db_stats(PGconn *conn, int window, struct jobq_stats *st,
    struct jobq_err *err)
{
	PGresult	*res;
	char		 secs[32], sql[2048];
	const char	*params[1] = { secs };
	int		 i, n;

	memset(st, 0, sizeof(*st));
	/* One count per bucket, made from jobq_buckets. */
	n = snprintf(sql, sizeof(sql), "SELECT ");
	for (i = 0; i < JOBQ_BUCKETS; i++)
		n += snprintf(sql + n, sizeof(sql) - n, "count(*) FILTER "
		    "(WHERE l <= %g), ", jobq_buckets[i]);
	snprintf(sql + n, sizeof(sql) - n, "count(*), coalesce(sum(l), 0) "
	    "FROM (SELECT extract(epoch FROM finished_at - submitted_at) "
	    "AS l FROM jobs WHERE finished_at > now() - "
	    "make_interval(secs => $1)) AS recent");
	snprintf(secs, sizeof(secs), "%d", window);
	res = PQexecParams(conn, sql, 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		db_err(conn, res, "measure latency", err);
		PQclear(res);
		return -1;
	}
	for (i = 0; i < JOBQ_BUCKETS; i++)
		st->le[i] = atoll(PQgetvalue(res, 0, i));
	st->count = atoll(PQgetvalue(res, 0, JOBQ_BUCKETS));
	st->sum = atof(PQgetvalue(res, 0, JOBQ_BUCKETS + 1));
	PQclear(res);
	return 0;
}

/*
 * Count the rows of each status, and of them those that reached it, or
 * were last written, in the last window seconds.
 */
int
jobq_db_rates(PGconn *conn, int window, struct jobq_rates *r,
    struct jobq_err *err)
{
	PGresult	*res;
	char		 secs[32];
	const char	*params[1] = { secs };
	int		 row, i;

	memset(r, 0, sizeof(*r));
	snprintf(secs, sizeof(secs), "%d", window);
	res = PQexecParams(conn, "SELECT status, count(*), count(*) FILTER "
	    "(WHERE stored_at > now() - make_interval(secs => $1)) "
	    "FROM jobs GROUP BY status", 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		db_err(conn, res, "count jobs", err);
		PQclear(res);
		return -1;
	}
	for (row = 0; row < PQntuples(res); row++)
		for (i = 0; i < JOBQ_STATUSES; i++)
			if (strcmp(PQgetvalue(res, row, 0),
			    jobq_statuses[i]) == 0) {
				r->by_status[i] = atoll(PQgetvalue(res, row,
				    1));
				r->recent[i] = atoll(PQgetvalue(res, row, 2));
			}
	PQclear(res);
	return 0;
}

/*
 * Count the jobs that ended in each step of step_s seconds of the last
 * window_s, succeeded and failed apart: each step that had any becomes
 * an object of at, its start in seconds since the epoch, succeeded and
 * failed, in an array, oldest first.
 */
json_object *
jobq_db_series(PGconn *conn, int window_s, int step_s, struct jobq_err *err)
{
	PGresult	*res;
	json_object	*a, *o;
	char		 window[32], step[32];
	const char	*params[2] = { window, step };
	int		 row;

	snprintf(window, sizeof(window), "%d", window_s);
	snprintf(step, sizeof(step), "%d", step_s);
	res = PQexecParams(conn, "SELECT (floor(extract(epoch FROM "
	    "finished_at) / $2) * $2)::bigint AS t, "
	    "count(*) FILTER (WHERE status = 'succeeded'), "
	    "count(*) FILTER (WHERE status = 'failed') FROM jobs "
	    "WHERE finished_at > now() - make_interval(secs => $1) "
	    "AND status IN ('succeeded', 'failed') GROUP BY t ORDER BY t",
	    2, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		db_err(conn, res, "count recent jobs", err);
		PQclear(res);
		return NULL;
	}
	a = json_object_new_array();
	for (row = 0; row < PQntuples(res); row++) {
		o = json_object_new_object();
		json_object_object_add(o, "at",
		    json_object_new_int64(atoll(PQgetvalue(res, row, 0))));
		json_object_object_add(o, "succeeded",
		    json_object_new_int64(atoll(PQgetvalue(res, row, 1))));
		json_object_object_add(o, "failed",
		    json_object_new_int64(atoll(PQgetvalue(res, row, 2))));
		json_object_array_add(a, o);
	}
	PQclear(res);
	return a;
}
