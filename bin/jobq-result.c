/*
 * jobq-result: print the stored rows of jobs, waiting for them if asked.
 *
 * Rows are printed as JSON lines in the order of the ids given.  A
 * wait listens for the store's notifications and looks again only when
 * one arrives, so waiting costs nothing while nothing is stored.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobq.h"

#define LIST_LIMIT	100	/* rows that -l prints unless -M says */
#define LIST_MAX	1000000
#define EXPIRE_BATCH	1000	/* rows that -X removes per transaction */

static const char	*progname = "jobq-result";

static void
usage(int status)
{
	/* Asked for with -h, it is output; after a mistake, a diagnostic. */
	FILE	*f = status == 0 ? stdout : stderr;

	fprintf(f, "usage: %s [-hVw] [-d conninfo] [-t seconds] id ...\n"
	    "       %s -l [-d conninfo] [-k status] [-M rows] [-N seconds] "
	    "[-y type]\n"
	    "       %s -X seconds [-d conninfo]\n", progname, progname,
	    progname);
	exit(status);
}

static void
die(const struct jobq_err *err)
{
	fprintf(stderr, "%s: %s\n", progname, err->msg);
	exit(err->code);
}

static int
is_final(json_object *row)
{
	json_object	*st;

	return row != NULL && json_object_object_get_ex(row, "status", &st) &&
	    jobq_status_final(json_object_get_string(st));
}

/* Fetch every row that is not final yet; the number still not final. */
static size_t
refresh(PGconn *db, char (*ids)[JOBQ_UUID_LEN + 1], json_object **rows,
    size_t n)
{
	struct jobq_err	 err;
	char		(*want)[JOBQ_UUID_LEN + 1];
	json_object	**got;
	size_t		 i, k = 0, left = 0;

	if ((want = calloc(n, sizeof(*want))) == NULL ||
	    (got = calloc(n, sizeof(*got))) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
	for (i = 0; i < n; i++)
		if (!is_final(rows[i]))
			memcpy(want[k++], ids[i], sizeof(want[0]));
	if (k > 0 && jobq_db_fetch(db, want, k, got, &err) == -1)
		die(&err);
	for (i = 0, k = 0; i < n; i++) {
		if (is_final(rows[i]))
			continue;
		json_object_put(rows[i]);
		rows[i] = got[k++];
		if (!is_final(rows[i]))
			left++;
	}
	free(want);
	free(got);
	return left;
}

/* Read what the server sent; the number of notifications in it. */
static int
notified(PGconn *db)
{
	struct jobq_err	 err;
	PGnotify	*note;
	int		 n = 0;

	if (PQconsumeInput(db) == 0) {
		jobq_errf(&err, EX_UNAVAILABLE, "database: %s",
		    PQerrorMessage(db));
		die(&err);
	}
	while ((note = PQnotifies(db)) != NULL) {
		PQfreemem(note);
		n++;
	}
	return n;
}

/*
 * Wait for notifications until every job is final or the deadline
 * (0: none; else in jobq_now_ms() terms) passes.
 */
static void
wait_rows(PGconn *db, char (*ids)[JOBQ_UUID_LEN + 1], json_object **rows,
    size_t n, long deadline)
{
	struct jobq_err	 err;
	struct pollfd	 pfd;
	PGresult	*res;
	long		 timeout;

	res = PQexec(db, "LISTEN " JOBQ_NOTIFY_CHANNEL);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		jobq_errf(&err, EX_UNAVAILABLE, "listen: %s",
		    PQerrorMessage(db));
		die(&err);
	}
	PQclear(res);
	while (refresh(db, ids, rows, n) > 0) {
		/*
		 * A notification that came in with the answer to the last
		 * query is in libpq's buffer, where poll() cannot see it:
		 * take it first, and look again at once if there was one.
		 */
		if (notified(db) > 0)
			continue;
		timeout = -1;
		if (deadline != 0 && (timeout = deadline - jobq_now_ms()) <= 0)
			return;
		pfd.fd = PQsocket(db);
		pfd.events = POLLIN;
		if (poll(&pfd, 1, (int)timeout) == -1 && errno != EINTR) {
			jobq_errf(&err, EX_OSERR, "poll: %s", strerror(errno));
			die(&err);
		}
		notified(db);
	}
}

/* 0 once the standard output is written out, else EX_IOERR. */
static int
flushed(void)
{
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "%s: stdout: %s\n", progname, strerror(errno));
		return EX_IOERR;
	}
	return 0;
}

/* Print the rows; the exit status that they call for. */
static int
print_rows(char (*ids)[JOBQ_UUID_LEN + 1], json_object **rows, size_t n)
{
	json_object	*st;
	size_t		 i;
	int		 rc = 0, missing = 0;

	for (i = 0; i < n; i++) {
		if (rows[i] == NULL) {
			/* Keep the order of the ids on a shared terminal. */
			fflush(stdout);
			fprintf(stderr, "%s: %s: no result stored\n", progname,
			    ids[i]);
			missing = 1;
			continue;
		}
		printf("%s\n", jobq_json_str(rows[i]));
		if (!is_final(rows[i]))
			missing = 1;
		else if (json_object_object_get_ex(rows[i], "status", &st) &&
		    strcmp(json_object_get_string(st), "failed") == 0)
			rc = 1;
	}
	if (flushed() != 0)
		return EX_IOERR;
	return missing ? EX_TEMPFAIL : rc;
}

/* Print a listed row, and let it go. */
static void
print_listed(json_object *row, void *arg)
{
	(void)arg;
	printf("%s\n", jobq_json_str(row));
	json_object_put(row);
}

/* What the filters of -l ask for, and the age of -X. */
struct query {
	const char	*status;	/* -k, or NULL */
	const char	*type;		/* -y, or NULL */
	long		 within;	/* -N seconds, or 0 */
	long		 limit;		/* -M */
	long		 age;		/* -X seconds, or 0 */
};

/* List the rows that match, newest first. */
static int
list(PGconn *db, const struct query *q)
{
	struct jobq_err	 err;

	if (jobq_db_list(db, q->status, q->type, q->within, q->limit,
	    print_listed, NULL, &err) == -1)
		die(&err);
	return flushed();
}

/* Remove the final rows older than -X, and print how many went. */
static int
expire(PGconn *db, const struct query *q)
{
	struct jobq_err	 err;
	long long	 removed;
	int		 rc;

	rc = jobq_db_expire(db, q->age, EXPIRE_BATCH, &removed, &err);
	printf("%lld\n", removed);
	if (rc == -1)
		die(&err);
	return flushed();
}

/* A number option, or a usage error that names it. */
static long
number(int c, long min, long max, const char *unit)
{
	struct jobq_err	 err;
	long		 v;

	if (jobq_opt_number(c, optarg, min, max, unit, &v, &err) == -1) {
		fprintf(stderr, "%s: %s\n", progname, err.msg);
		usage(EX_USAGE);
	}
	return v;
}

/* A usage error that says why. */
static void
misuse(const char *why)
{
	fprintf(stderr, "%s: %s\n", progname, why);
	usage(EX_USAGE);
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "database",	required_argument,	NULL, 'd' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "state",	required_argument,	NULL, 'k' },
		{ "list",	no_argument,		NULL, 'l' },
		{ "max-rows",	required_argument,	NULL, 'M' },
		{ "within",	required_argument,	NULL, 'N' },
		{ "timeout",	required_argument,	NULL, 't' },
		{ "version",	no_argument,		NULL, 'V' },
		{ "wait",	no_argument,		NULL, 'w' },
		{ "expire",	required_argument,	NULL, 'X' },
		{ "type",	required_argument,	NULL, 'y' },
		{ NULL,		0,			NULL, 0 }
	};
	struct jobq_config	 cfg;
	struct jobq_err		 err;
	struct query		 q = { .limit = LIST_LIMIT };
	char			(*ids)[JOBQ_UUID_LEN + 1];
	json_object		**rows;
	PGconn			*db;
	size_t			 n, i;
	long			 timeout = 0;
	int			 c, wait = 0, listing = 0, filters = 0, rc;

	jobq_config_init(&cfg);
	while ((c = getopt_long(argc, argv, "d:hk:lM:N:t:VwX:y:", longopts,
	    NULL)) != -1)
		switch (c) {
		case 'd':
			jobq_config_option(&cfg, c, optarg, &err);
			break;
		case 'k':
			for (i = 0; i < JOBQ_STATUSES; i++)
				if (strcmp(optarg, jobq_statuses[i]) == 0)
					break;
			if (i == JOBQ_STATUSES) {
				fprintf(stderr, "%s: -k %s: not a status: "
				    "queued, running, retrying, failed or "
				    "succeeded\n", progname, optarg);
				usage(EX_USAGE);
			}
			q.status = optarg;
			filters = 1;
			break;
		case 'l':
			listing = 1;
			break;
		case 'M':
			q.limit = number(c, 1, LIST_MAX, NULL);
			filters = 1;
			break;
		case 'N':
			q.within = number(c, 1, 100L * 366 * 86400, "seconds");
			filters = 1;
			break;
		case 't':
			timeout = number(c, 1, JOBQ_MAX_TIMEOUT, "seconds");
			wait = 1;
			break;
		case 'V':
			printf("%s %s\n", progname, JOBQ_VERSION);
			return 0;
		case 'w':
			wait = 1;
			break;
		case 'X':
			q.age = number(c, 1, 100L * 366 * 86400, "seconds");
			break;
		case 'y':
			if (!jobq_type_valid(optarg)) {
				fprintf(stderr, "%s: -y %s: not a job type\n",
				    progname, optarg);
				usage(EX_USAGE);
			}
			q.type = optarg;
			filters = 1;
			break;
		case 'h':
			usage(0);
			break;
		default:
			usage(EX_USAGE);
		}
	argc -= optind;
	argv += optind;
	if (listing + (q.age > 0) + (argc > 0) > 1)
		misuse("give ids, -l or -X, one of them");
	if (filters && !listing)
		misuse("-k, -M, -N and -y go with -l");
	if (wait && argc == 0)
		misuse(listing || q.age > 0 ? "-w and -t go with ids" :
		    "give ids, -l or -X");
	if (!listing && q.age == 0 && argc == 0)
		usage(EX_USAGE);
	if (listing || q.age > 0) {
		if ((db = jobq_db_open(cfg.db_conninfo, &err)) == NULL)
			die(&err);
		rc = listing ? list(db, &q) : expire(db, &q);
		PQfinish(db);
		return rc;
	}

	n = (size_t)argc;
	if ((ids = calloc(n, sizeof(*ids))) == NULL ||
	    (rows = calloc(n, sizeof(*rows))) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
	for (i = 0; i < n; i++)
		if (jobq_uuid_canon(argv[i], ids[i]) == -1) {
			jobq_errf(&err, EX_DATAERR, "%s: not a job id (a UUID)",
			    argv[i]);
			die(&err);
		}
	if ((db = jobq_db_open(cfg.db_conninfo, &err)) == NULL)
		die(&err);
	if (wait)
		wait_rows(db, ids, rows, n, timeout > 0 ?
		    jobq_now_ms() + timeout * 1000 : 0);
	else if (jobq_db_fetch(db, ids, n, rows, &err) == -1)
		die(&err);
	rc = print_rows(ids, rows, n);
	for (i = 0; i < n; i++)
		json_object_put(rows[i]);
	free(rows);
	free(ids);
	PQfinish(db);
	return rc;
}
