/*
 * jobq-store: write the results on the result queue into the jobs table.
 *
 * Results are stored in batches: the first result that arrives starts a
 * batch, every result already waiting joins it (up to -b), and the
 * batch is written in one statement, so one commit serves many results
 * under load and a lone result is stored at once.  Deliveries are acked
 * only after the commit.  Writing is idempotent: a result delivered
 * twice leaves one row, and of two different results for one job the
 * row keeps the newer by the rule in jobq(7).
 *
 * When the broker or the database goes away, the batch in hand is
 * dropped unacknowledged, so the broker delivers it again, and both
 * connections are opened anew with a growing pause between tries.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jobq.h"

#define MAX_BATCH	10000
#define MAX_BATCH_BYTES	(16 * 1024 * 1024)	/* of messages in a batch */
#define MAX_BACKOFF	30	/* seconds between tries to reconnect */

struct item {
	uint64_t	 tag;
	json_object	*msg;		/* NULL: not a valid result */
	char		 id[JOBQ_UUID_LEN + 1];
};

struct store {
	struct jobq_config	 cfg;
	amqp_connection_state_t	 conn;
	PGconn			*db;
	int			 max_batch;
	struct item		*batch;
	int			 n;
	size_t			 bytes;		/* of the batch's messages */
	long			 stored, batches;
	const char		*health;	/* file kept fresh, or NULL */
	time_t			 health_at;
	int			 broken;	/* a connection failed */
	struct jobq_err		 lost_err;
};

static const char		*progname = "jobq-store";
static volatile sig_atomic_t	 stopping;

static void
usage(int status)
{
	/* Asked for with -h, it is output; after a mistake, a diagnostic. */
	FILE	*f = status == 0 ? stdout : stderr;

	fprintf(f, "usage: %s [-hV] [-b size] [-d conninfo] [-f file] "
	    "[-q queue]\n\t[-r queue] [-u url] [-x exchange]\n", progname);
	exit(status);
}

static void
bad_option(const struct jobq_err *err)
{
	fprintf(stderr, "%s: %s\n", progname, err->msg);
	usage(EX_USAGE);
}

static const char	*health_file;	/* for die() */

static void
die(const struct jobq_err *err)
{
	jobq_log(JOBQ_ERROR, "exiting", "err=%s", jobq_q(err->msg));
	if (health_file != NULL)
		unlink(health_file);
	exit(err->code);
}

/*
 * A connection failed: note why, to recover in the main loop.  Errors
 * other than an unavailable server are fatal, and so is a database
 * without the objects of jobq(7) (SQLSTATE class 42, such as a missing
 * table): trying again cannot mend that.
 */
static void
lost(struct store *s, const struct jobq_err *err)
{
	if (err->code != EX_UNAVAILABLE ||
	    strncmp(err->sqlstate, "42", 2) == 0)
		die(err);
	if (!s->broken) {
		s->broken = 1;
		s->lost_err = *err;
	}
}

static void
on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

/* Add a delivery to the batch, decoded and checked. */
static void
add(struct store *s, struct jobq_event *ev)
{
	struct item		*it = &s->batch[s->n++];
	struct jobq_result	 r;
	struct jobq_err		 err;

	it->tag = ev->tag;
	it->msg = NULL;
	if (jobq_result_decode(ev->body.bytes, ev->body.len, &r,
	    &err) == -1) {
		jobq_log(JOBQ_ERROR, "not a result; message dropped",
		    "message_id=%s err=%s", jobq_q(ev->message_id),
		    jobq_q(err.msg));
		return;
	}
	strcpy(it->id, r.id);
	if ((it->msg = jobq_result_object(&r)) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
	jobq_result_clear(&r);
}

/*
 * Fill the batch: wait up to a second for a first result, then take
 * whatever else is already there without waiting.
 */
static void
collect(struct store *s)
{
	struct jobq_event	 ev = { 0 };
	struct jobq_err		 err;
	int			 timeout = 1000;

	/* A batch is one statement, whose parameter has a size limit. */
	while (s->n < s->max_batch && s->bytes < MAX_BATCH_BYTES &&
	    !stopping) {
		if (jobq_amqp_next(s->conn, timeout, &ev, &err) == -1) {
			lost(s, &err);
			break;
		}
		if (ev.kind == JOBQ_EV_DELIVERY) {
			add(s, &ev);
			s->bytes += ev.body.len;
			timeout = 0;
		} else if (ev.kind == JOBQ_EV_CANCELLED) {
			jobq_errf(&err, EX_UNAVAILABLE, "the broker cancelled "
			    "the consumer of %s", s->cfg.result_queue);
			die(&err);
		} else if (ev.kind == JOBQ_EV_NONE &&
		    (s->n > 0 || timeout > 0))
			break;
	}
	jobq_event_clear(&ev);
}

/* Write items [from, to) that hold results in one statement. */
static int
write_items(struct store *s, int from, int to, long *stored,
    struct jobq_err *err)
{
	json_object	*arr;
	int		 i, rc;

	*stored = 0;
	if ((arr = json_object_new_array()) == NULL)
		return jobq_errf(err, EX_OSERR, "out of memory");
	for (i = from; i < to; i++)
		if (s->batch[i].msg != NULL)
			json_object_array_add(arr,
			    json_object_get(s->batch[i].msg));
	rc = json_object_array_length(arr) == 0 ? 0 :
	    jobq_db_store(s->db, jobq_json_str(arr), stored, err);
	json_object_put(arr);
	return rc;
}

/*
 * Store the batch.  When the table refuses it for its data, store the
 * results one by one, so that only the bad ones are dropped.
 */
static void
store_batch(struct store *s)
{
	struct jobq_err	 err;
	long		 n;
	int		 i;

	if (write_items(s, 0, s->n, &n, &err) == 0) {
		s->stored += n;
		return;
	}
	/*
	 * An error that left the connection up may be the batch's own,
	 * such as a limit that its size passed: one by one tells.
	 */
	if (err.code != EX_DATAERR && (PQstatus(s->db) != CONNECTION_OK ||
	    strncmp(err.sqlstate, "42", 2) == 0 || s->n == 1)) {
		lost(s, &err);
		return;
	}
	jobq_log(JOBQ_WARN, "batch refused; storing one by one",
	    "size=%d err=%s", s->n, jobq_q(err.msg));
	for (i = 0; i < s->n; i++) {
		if (s->batch[i].msg == NULL)
			continue;
		if (write_items(s, i, i + 1, &n, &err) == 0) {
			s->stored += n;
			continue;
		}
		if (err.code != EX_DATAERR) {
			lost(s, &err);
			return;
		}
		jobq_log(JOBQ_ERROR, "result refused by the database; "
		    "message dropped", "id=%s err=%s", s->batch[i].id,
		    jobq_q(err.msg));
		json_object_put(s->batch[i].msg);
		s->batch[i].msg = NULL;
	}
}

/* Forget the batch, settled or not. */
static void
clear_batch(struct store *s)
{
	int	 i;

	for (i = 0; i < s->n; i++)
		json_object_put(s->batch[i].msg);
	s->n = 0;
	s->bytes = 0;
}

/* Settle every delivery of the batch after the commit. */
static void
settle(struct store *s)
{
	struct jobq_err	 err;
	uint64_t	 last = 0;
	int		 i;

	for (i = 0; i < s->n; i++)
		if (s->batch[i].msg != NULL)
			last = s->batch[i].tag;
		else if (jobq_amqp_nack(s->conn, s->batch[i].tag, 0,
		    &err) == -1) {
			lost(s, &err);
			break;
		}
	/* One ack for all the stored ones: they come before "last". */
	if (!s->broken && last != 0 &&
	    jobq_amqp_ack(s->conn, last, 1, &err) == -1)
		lost(s, &err);
	jobq_log(JOBQ_DEBUG, "batch stored", "size=%d", s->n);
	clear_batch(s);
	s->batches++;
}

/* Keep the health file fresh while consuming; remove it otherwise. */
static void
health(struct store *s, int up)
{
	struct jobq_err	 err;

	if (jobq_health(s->health, up, &s->health_at, &err) == -1)
		jobq_log(JOBQ_WARN, "cannot touch the health file", "err=%s",
		    jobq_q(err.msg));
}

static void
options(struct store *s, int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "batch",	required_argument,	NULL, 'b' },
		{ "database",	required_argument,	NULL, 'd' },
		{ "health-file", required_argument,	NULL, 'f' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "queue",	required_argument,	NULL, 'q' },
		{ "result-queue", required_argument,	NULL, 'r' },
		{ "amqp-url",	required_argument,	NULL, 'u' },
		{ "version",	no_argument,		NULL, 'V' },
		{ "exchange",	required_argument,	NULL, 'x' },
		{ NULL,		0,			NULL, 0 }
	};
	struct jobq_err	 err;
	long		 v;
	int		 c;

	while ((c = getopt_long(argc, argv, "b:d:f:hq:r:u:Vx:", longopts,
	    NULL)) != -1)
		switch (c) {
		case 'f':
			s->health = health_file = optarg;
			break;
		case 'b':
			if (jobq_opt_number(c, optarg, 1, MAX_BATCH, NULL, &v,
			    &err) == -1)
				bad_option(&err);
			s->max_batch = (int)v;
			break;
		case 'V':
			printf("%s %s\n", progname, JOBQ_VERSION);
			exit(0);
		case 'h':
			usage(0);
			break;
		case '?':
			usage(EX_USAGE);
			break;
		default:
			if (jobq_config_option(&s->cfg, c, optarg, &err) == -1)
				bad_option(&err);
		}
	if (optind != argc)
		usage(EX_USAGE);
}

/*
 * Connect to the database, then to the first broker that answers, and
 * start consuming.  -1 with err, and nothing left open, on failure.
 */
static int
connect_all(struct store *s, struct jobq_err *err)
{
	int	 prefetch;

	if ((s->db = jobq_db_open(s->cfg.db_conninfo, err)) == NULL)
		return -1;
	prefetch = 2 * s->max_batch > 65535 ? 65535 : 2 * s->max_batch;
	if ((s->conn = jobq_amqp_connect(&s->cfg, progname, err)) == NULL)
		goto fail;
	if (jobq_amqp_declare(s->conn, &s->cfg, err) == -1 ||
	    jobq_amqp_consume(s->conn, s->cfg.result_queue, prefetch,
	    err) == -1) {
		amqp_destroy_connection(s->conn);
		s->conn = NULL;
		goto fail;
	}
	return 0;
fail:
	PQfinish(s->db);
	s->db = NULL;
	return -1;
}

/* Sleep for some seconds, or less when a signal asks us to stop. */
static void
pause_for(int seconds)
{
	struct timespec	 ts = { 0, 0 };
	long		 until = jobq_now_ms() + seconds * 1000L, left;

	while (!stopping && (left = until - jobq_now_ms()) > 0) {
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (left % 1000) * 1000000L;
		nanosleep(&ts, NULL);
	}
}

/*
 * A connection failed.  Drop the batch unacknowledged, so that the
 * broker delivers it again, close both connections, and open them
 * again, pausing longer after each failure.
 */
static void
recover(struct store *s)
{
	struct jobq_err	 err, last = s->lost_err;
	int		 delay;

	jobq_log(JOBQ_WARN, "connection lost", "err=%s batch=%d",
	    jobq_q(s->lost_err.msg), s->n);
	health(s, 0);
	clear_batch(s);
	amqp_destroy_connection(s->conn);
	s->conn = NULL;
	PQfinish(s->db);
	s->db = NULL;
	s->broken = 0;
	for (delay = 1; !stopping; delay = delay * 2 > MAX_BACKOFF ?
	    MAX_BACKOFF : delay * 2) {
		pause_for(delay);
		if (stopping)
			break;
		if (connect_all(s, &err) == 0) {
			jobq_log(JOBQ_INFO, "connection restored", NULL);
			health(s, 1);
			return;
		}
		if (err.code != EX_UNAVAILABLE)
			die(&err);
		/* Each new reason is worth a line; its repeats are not. */
		jobq_log(strcmp(err.msg, last.msg) != 0 ? JOBQ_WARN :
		    JOBQ_DEBUG, "still unavailable", "err=%s",
		    jobq_q(err.msg));
		last = err;
	}
}

static void
setup(struct store *s)
{
	struct sigaction	 sa;
	struct jobq_err		 err;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if ((s->batch = calloc((size_t)s->max_batch,
	    sizeof(*s->batch))) == NULL) {
		perror(progname);
		exit(EX_OSERR);
	}
	if (connect_all(s, &err) == -1)
		die(&err);
	health(s, 1);
}

/* Take batches and store them until a signal; recover from losses. */
static void
run(struct store *s)
{
	while (!stopping) {
		if (s->broken) {
			recover(s);
			continue;
		}
		collect(s);
		if (!s->broken)
			health(s, 1);
		if (s->broken || s->n == 0)
			continue;
		store_batch(s);
		if (!s->broken)
			settle(s);
	}
}

int
main(int argc, char *argv[])
{
	static struct store	 s;
	struct jobq_err		 err;

	jobq_log_init(progname);
	jobq_config_init(&s.cfg);
	s.max_batch = 500;
	options(&s, argc, argv);
	if (jobq_config_check(&s.cfg, &err) == -1 ||
	    jobq_amqp_urls_check(&s.cfg, &err) == -1) {
		fprintf(stderr, "%s: %s\n", progname, err.msg);
		return err.code;
	}
	setup(&s);
	jobq_log(JOBQ_INFO, "started", "queue=%s batch=%d",
	    jobq_q(s.cfg.result_queue), s.max_batch);
	run(&s);
	health(&s, 0);
	clear_batch(&s);
	jobq_amqp_close(s.conn);
	PQfinish(s.db);
	jobq_log(JOBQ_INFO, "stopped", "stored=%ld batches=%ld", s.stored,
	    s.batches);
	return 0;
}
