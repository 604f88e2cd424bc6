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
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq.h"

#define MAX_BATCH	10000

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
	long			 stored, batches;
};

static const char		*progname = "jobq-store";
static volatile sig_atomic_t	 stopping;

static void
usage(int status)
{
	/* Asked for with -h, it is output; after a mistake, a diagnostic. */
	FILE	*f = status == 0 ? stdout : stderr;

	fprintf(f, "usage: %s [-hV] [-b size] [-d conninfo] [-q queue] "
	    "[-r queue]\n\t[-u url] [-x exchange]\n", progname);
	exit(status);
}

static void
bad_option(const struct jobq_err *err)
{
	fprintf(stderr, "%s: %s\n", progname, err->msg);
	usage(EX_USAGE);
}

static void
die(const struct jobq_err *err)
{
	jobq_log(JOBQ_ERROR, "exiting", "err=%s", jobq_q(err->msg));
	exit(err->code);
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

	while (s->n < s->max_batch && !stopping) {
		if (jobq_amqp_next(s->conn, timeout, &ev, &err) == -1)
			die(&err);
		if (ev.kind == JOBQ_EV_DELIVERY) {
			add(s, &ev);
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
	if (err.code != EX_DATAERR)
		die(&err);
	jobq_log(JOBQ_WARN, "batch refused; storing one by one",
	    "size=%d err=%s", s->n, jobq_q(err.msg));
	for (i = 0; i < s->n; i++) {
		if (s->batch[i].msg == NULL)
			continue;
		if (write_items(s, i, i + 1, &n, &err) == 0) {
			s->stored += n;
			continue;
		}
		if (err.code != EX_DATAERR)
			die(&err);
		jobq_log(JOBQ_ERROR, "result refused by the database; "
		    "message dropped", "id=%s err=%s", s->batch[i].id,
		    jobq_q(err.msg));
		json_object_put(s->batch[i].msg);
		s->batch[i].msg = NULL;
	}
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
		    &err) == -1)
			die(&err);
	/* One ack for all the stored ones: they come before "last". */
	if (last != 0 && jobq_amqp_ack(s->conn, last, 1, &err) == -1)
		die(&err);
	for (i = 0; i < s->n; i++)
		json_object_put(s->batch[i].msg);
	jobq_log(JOBQ_DEBUG, "batch stored", "size=%d", s->n);
	s->batches++;
	s->n = 0;
}

static void
options(struct store *s, int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "batch",	required_argument,	NULL, 'b' },
		{ "database",	required_argument,	NULL, 'd' },
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

	while ((c = getopt_long(argc, argv, "b:d:hq:r:u:Vx:", longopts,
	    NULL)) != -1)
		switch (c) {
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

static void
setup(struct store *s)
{
	struct sigaction	 sa;
	struct jobq_err		 err;
	int			 prefetch;

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
	if ((s->db = jobq_db_open(s->cfg.db_conninfo, &err)) == NULL)
		die(&err);
	prefetch = 2 * s->max_batch > 65535 ? 65535 : 2 * s->max_batch;
	if ((s->conn = jobq_amqp_connect(&s->cfg, progname,
	    &err)) == NULL || jobq_amqp_declare(s->conn, &s->cfg, &err) == -1 ||
	    jobq_amqp_consume(s->conn, s->cfg.result_queue, prefetch,
	    &err) == -1)
		die(&err);
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
	if (jobq_config_check(&s.cfg, &err) == -1) {
		fprintf(stderr, "%s: %s\n", progname, err.msg);
		return err.code;
	}
	setup(&s);
	jobq_log(JOBQ_INFO, "started", "queue=%s batch=%d",
	    jobq_q(s.cfg.result_queue), s.max_batch);
	while (!stopping) {
		collect(&s);
		if (s.n == 0)
			continue;
		store_batch(&s);
		settle(&s);
	}
	jobq_amqp_close(s.conn);
	PQfinish(s.db);
	jobq_log(JOBQ_INFO, "stopped", "stored=%ld batches=%ld", s.stored,
	    s.batches);
	return 0;
}
