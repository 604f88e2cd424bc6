/*
 * jobq-migrate: bring the database schema up to date.
 *
 * Applies the files NNN_name.sql of a folder in the order of their
 * numbers, each in a transaction of its own together with its record
 * in jobq_migrations.  A session advisory lock keeps two migrators from
 * racing.  An applied file whose checksum changed is an error: history
 * is never rewritten in place, a new file is added instead.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq.h"
#include "paths.h"

#define LOCK_KEY	"7013342653911482641"

struct migration {
	long	 version;
	char	 name[256];
	char	*sql;
	size_t	 len;
	char	 checksum[65];
	char	 applied_at[64];	/* empty: pending */
	char	 applied_sum[65];
};

static const char	*progname = "jobq-migrate";

static const char create_sql[] =
	"CREATE TABLE IF NOT EXISTS jobq_migrations ("
	" version integer PRIMARY KEY,"
	" name text NOT NULL,"
	" checksum text NOT NULL,"
	" applied_at timestamptz NOT NULL DEFAULT now())";

static void
usage(int status)
{
	/* Asked for with -h, it is output; after a mistake, a diagnostic. */
	FILE	*f = status == 0 ? stdout : stderr;

	fprintf(f, "usage: %s [-hlV] [-d conninfo] [-m dir]\n", progname);
	exit(status);
}

static void
die(const struct jobq_err *err)
{
	fprintf(stderr, "%s: %s\n", progname, err->msg);
	exit(err->code);
}

/*
 * Run a statement; -1 with err on failure.  A lost connection is 69;
 * any other failure is code: 65 when the statement came from a
 * migration file, 69 when it is our own.
 */
static int
exec_ok(PGconn *db, const char *sql, const char *what, int code,
    struct jobq_err *err)
{
	PGresult	*res = PQexec(db, sql);
	int		 ok;
	char		 msg[400];

	/* A file of only comments is an empty query, and harmless. */
	ok = PQresultStatus(res) == PGRES_COMMAND_OK ||
	    PQresultStatus(res) == PGRES_TUPLES_OK ||
	    PQresultStatus(res) == PGRES_EMPTY_QUERY;
	if (!ok) {
		snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(res));
		msg[strcspn(msg, "\n")] = '\0';
		jobq_errf(err, PQstatus(db) == CONNECTION_BAD ?
		    EX_UNAVAILABLE : code, "%s: %s", what, msg);
	}
	PQclear(res);
	return ok ? 0 : -1;
}

/* A migration's number, or -1 when name is not NNN_name.sql. */
static long
parse_name(const char *name)
{
	size_t	 n = strlen(name), i;
	long	 v = 0;

	if (n < 6 || strcmp(name + n - 4, ".sql") != 0)
		return -1;
	for (i = 0; name[i] >= '0' && name[i] <= '9'; i++)
		if ((v = v * 10 + (name[i] - '0')) > 1000000)
			return -1;
	if (i == 0 || name[i] != '_')
		return -1;
	return v;
}

static int
read_file(const char *dir, struct migration *m, struct jobq_err *err)
{
	char	 path[4096];
	FILE	*f;
	long	 size;

	snprintf(path, sizeof(path), "%s/%s", dir, m->name);
	if ((f = fopen(path, "rb")) == NULL)
		return jobq_errf(err, EX_NOINPUT, "%s: %s", path,
		    strerror(errno));
	if (fseek(f, 0, SEEK_END) == -1 || (size = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) == -1 ||
	    (m->sql = malloc((size_t)size + 1)) == NULL ||
	    fread(m->sql, 1, (size_t)size, f) != (size_t)size) {
		fclose(f);
		return jobq_errf(err, EX_IOERR, "%s: cannot read", path);
	}
	fclose(f);
	m->sql[size] = '\0';
	m->len = (size_t)size;
	return 0;
}

static int
by_version(const void *a, const void *b)
{
	const struct migration *x = a, *y = b;

	return (x->version > y->version) - (x->version < y->version);
}

static void
free_migrations(struct migration *ms, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		free(ms[i].sql);
	free(ms);
}

/* Read every NNN_name.sql of dir, sorted by number. */
static struct migration *
load(const char *dir, size_t *count, struct jobq_err *err)
{
	struct migration	*ms = NULL, *grown;
	struct dirent		*e;
	DIR			*d;
	size_t			 n = 0, i;
	long			 v;

	*count = 0;
	if ((d = opendir(dir)) == NULL) {
		jobq_errf(err, EX_NOINPUT, "%s: %s", dir, strerror(errno));
		return NULL;
	}
	while ((e = readdir(d)) != NULL) {
		if ((v = parse_name(e->d_name)) < 0 ||
		    strlen(e->d_name) >= sizeof(ms->name))
			continue;
		if ((grown = realloc(ms, (n + 1) * sizeof(*ms))) == NULL) {
			jobq_errf(err, EX_OSERR, "out of memory");
			goto fail;
		}
		ms = grown;
		memset(&ms[n], 0, sizeof(ms[n]));
		ms[n].version = v;
		strcpy(ms[n].name, e->d_name);
		if (read_file(dir, &ms[n++], err) == -1)
			goto fail;
	}
	closedir(d);
	if (n > 1)
		qsort(ms, n, sizeof(*ms), by_version);
	for (i = 1; i < n; i++)
		if (ms[i].version == ms[i - 1].version) {
			jobq_errf(err, EX_DATAERR, "%s and %s: same number",
			    ms[i - 1].name, ms[i].name);
			free_migrations(ms, n);
			return NULL;
		}
	*count = n;
	return ms;
fail:
	closedir(d);
	free_migrations(ms, n);
	return NULL;
}

/* The SHA-256 of each file, computed by the server, as hex. */
static int
checksum(PGconn *db, struct migration *m, struct jobq_err *err)
{
	const char	*vals[1] = { m->sql };
	int		 lens[1] = { (int)m->len }, fmts[1] = { 1 };
	PGresult	*res;

	res = PQexecParams(db, "SELECT encode(sha256($1::bytea), 'hex')", 1,
	    NULL, vals, lens, fmts, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		jobq_errf(err, EX_UNAVAILABLE, "checksum: %s",
		    PQerrorMessage(db));
		PQclear(res);
		return -1;
	}
	snprintf(m->checksum, sizeof(m->checksum), "%s",
	    PQgetvalue(res, 0, 0));
	PQclear(res);
	return 0;
}

/* Fill in which migrations are applied, and when, from the table. */
static int
read_applied(PGconn *db, struct migration *ms, size_t n,
    struct jobq_err *err)
{
	PGresult	*res;
	size_t		 i;
	int		 row, exists;

	res = PQexec(db, "SELECT to_regclass('jobq_migrations') IS NOT NULL");
	exists = PQresultStatus(res) == PGRES_TUPLES_OK &&
	    strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!exists)
		return 0;
	res = PQexec(db, "SELECT version, checksum, to_char(applied_at AT "
	    "TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
	    "FROM jobq_migrations");
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		jobq_errf(err, EX_UNAVAILABLE, "read jobq_migrations: %s",
		    PQerrorMessage(db));
		PQclear(res);
		return -1;
	}
	for (row = 0; row < PQntuples(res); row++)
		for (i = 0; i < n; i++)
			if (ms[i].version == atol(PQgetvalue(res, row, 0))) {
				snprintf(ms[i].applied_sum,
				    sizeof(ms[i].applied_sum), "%s",
				    PQgetvalue(res, row, 1));
				snprintf(ms[i].applied_at,
				    sizeof(ms[i].applied_at), "%s",
				    PQgetvalue(res, row, 2));
			}
	PQclear(res);
	return 0;
}

static int
changed(const struct migration *m)
{
	return m->applied_at[0] != '\0' &&
	    strcmp(m->checksum, m->applied_sum) != 0;
}

/* Print one line per migration; 65 when an applied one changed. */
static int
print_status(const struct migration *ms, size_t n)
{
	size_t	 i;
	int	 rc = 0;

	for (i = 0; i < n; i++) {
		if (changed(&ms[i])) {
			printf("%s\tchanged\t%s\n", ms[i].name,
			    ms[i].applied_at);
			rc = EX_DATAERR;
		} else if (ms[i].applied_at[0] != '\0')
			printf("%s\tapplied\t%s\n", ms[i].name,
			    ms[i].applied_at);
		else
			printf("%s\tpending\n", ms[i].name);
	}
	if (fflush(stdout) == EOF || ferror(stdout)) {
		fprintf(stderr, "%s: stdout: %s\n", progname,
		    strerror(errno));
		return EX_IOERR;
	}
	return rc;
}

/* Apply one migration and record it, in one transaction. */
static int
apply(PGconn *db, const struct migration *m, struct jobq_err *err)
{
	char		 version[32];
	const char	*vals[3] = { version, m->name, m->checksum };
	PGresult	*res;
	int		 ok;

	snprintf(version, sizeof(version), "%ld", m->version);
	if (exec_ok(db, "BEGIN", "begin", EX_UNAVAILABLE, err) == -1)
		return -1;
	if (exec_ok(db, m->sql, m->name, EX_DATAERR, err) == -1)
		goto fail;
	res = PQexecParams(db, "INSERT INTO jobq_migrations (version, name, "
	    "checksum) VALUES ($1, $2, $3)", 3, NULL, vals, NULL, NULL, 0);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	if (!ok) {
		jobq_errf(err, EX_UNAVAILABLE, "%s: record: %s", m->name,
		    PQerrorMessage(db));
		goto fail;
	}
	return exec_ok(db, "COMMIT", m->name, EX_DATAERR, err);
fail:
	PQclear(PQexec(db, "ROLLBACK"));
	return -1;
}

/* Check every applied file, then apply the pending ones in order. */
static int
migrate(PGconn *db, struct migration *ms, size_t n, struct jobq_err *err)
{
	size_t	 i, applied = 0;

	for (i = 0; i < n; i++)
		if (changed(&ms[i]))
			return jobq_errf(err, EX_DATAERR, "%s: changed since "
			    "it was applied at %s", ms[i].name,
			    ms[i].applied_at);
	for (i = 0; i < n; i++) {
		if (ms[i].applied_at[0] != '\0')
			continue;
		if (apply(db, &ms[i], err) == -1)
			return -1;
		fprintf(stderr, "%s: applied %s\n", progname, ms[i].name);
		applied++;
	}
	if (applied == 0)
		fprintf(stderr, "%s: nothing to do: all %zu migrations are "
		    "applied\n", progname, n);
	return 0;
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "database",	required_argument,	NULL, 'd' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "status",	no_argument,		NULL, 'l' },
		{ "migrations",	required_argument,	NULL, 'm' },
		{ "version",	no_argument,		NULL, 'V' },
		{ NULL,		0,			NULL, 0 }
	};
	struct jobq_config	 cfg;
	struct jobq_err		 err;
	struct migration	*ms;
	const char		*dir;
	PGconn			*db;
	size_t			 n = 0, i;
	int			 c, status = 0, rc;

	jobq_config_init(&cfg);
	if ((dir = getenv("JOBQ_SQL_DIR")) == NULL || *dir == '\0')
		dir = JOBQ_SQLDIR;
	while ((c = getopt_long(argc, argv, "d:hlm:V", longopts, NULL)) != -1)
		switch (c) {
		case 'd':
			jobq_config_option(&cfg, c, optarg, &err);
			break;
		case 'l':
			status = 1;
			break;
		case 'm':
			dir = optarg;
			break;
		case 'V':
			printf("%s %s\n", progname, JOBQ_VERSION);
			return 0;
		case 'h':
			usage(0);
			break;
		default:
			usage(EX_USAGE);
		}
	if (optind != argc)
		usage(EX_USAGE);

	memset(&err, 0, sizeof(err));
	ms = load(dir, &n, &err);
	if (err.code != 0)
		die(&err);
	if (n == 0) {
		jobq_errf(&err, EX_NOINPUT, "%s: no NNN_name.sql files", dir);
		die(&err);
	}
	if ((db = jobq_db_open(cfg.db_conninfo, &err)) == NULL)
		die(&err);
	/* Listing only reads: no lock, and no table is made. */
	if (!status && (exec_ok(db, "SELECT pg_advisory_lock(" LOCK_KEY ")",
	    "lock", EX_UNAVAILABLE, &err) == -1 || exec_ok(db, create_sql,
	    "create jobq_migrations", EX_UNAVAILABLE, &err) == -1))
		die(&err);
	if (read_applied(db, ms, n, &err) == -1)
		die(&err);
	for (i = 0; i < n; i++)
		if (checksum(db, &ms[i], &err) == -1)
			die(&err);
	if (status)
		rc = print_status(ms, n);
	else if ((rc = migrate(db, ms, n, &err)) == -1)
		die(&err);
	PQfinish(db);
	free_migrations(ms, n);
	return rc;
}
