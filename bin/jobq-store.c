/*
 * jobq-store: write the results on the result queue into the jobs table.
 *
 * Results are stored in batches: the first result that arrives starts a
 * batch, every result already waiting joins it (up to -b), and the
 * batch is written in one statement, so one commit serves many results
 * under load and a lone result is stored at once.  While the database
 * writes one batch, the next one is taken from the broker; it goes to
 * the database when the first is committed.  Deliveries are acked only
 * after the commit.  Writing is idempotent: a result delivered
 * twice leaves one row, and of two different results for one job the
 * row keeps the newer by the rule in jobq(7).
 *
 * When the broker or the database goes away, the batches in hand are
 * dropped unacknowledged, so the broker delivers them again, and the
 * connections are opened anew with a growing pause between tries.
 * What cannot be stored goes to the dead-letter queue, over a broker
 * connection of its own for each batch that has any.
 */
#include <getopt.h>
#include <poll.h>
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
	char		*body;
	size_t		 len;
	char		*why;		/* why not stored; NULL: a result */
	char		*content_type;	/* of what is not a result */
	char		 id[JOBQ_UUID_LEN + 1];	/* or the message_id */
};

struct batch {
	struct item	*items;
	int		 n;
	size_t		 bytes;		/* of the batch's messages */
};

struct store {
	struct jobq_config	 cfg;
	amqp_connection_state_t	 conn;
	amqp_connection_state_t	 dead;		/* for dead letters, or NULL */
	uint64_t		 dead_seq;	/* its last publish */
	PGconn			*db;
	int			 max_batch;
	struct batch		 batches[2];
	struct batch		*next;		/* being filled */
	struct batch		*sent;		/* being written, or NULL */
	long			 stored, written;
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

/* Mark an item as not to be stored, for the dead-letter queue. */
static void
refuse(struct item *it, const char *why)
{
	struct jobq_err	 err;

	free(it->why);
	if ((it->why = strdup(why)) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
}

/*
 * Add a delivery to the next batch once it is checked.  The database
 * reads the message's own text: what was checked is what is stored,
 * numbers and all.  What is not a result stays in the batch, to go to
 * the dead-letter queue when the batch is settled.
 */
static void
add(struct store *s, struct jobq_event *ev)
{
	struct item		*it = &s->next->items[s->next->n++];
	struct jobq_result	 r;
	struct jobq_err		 err;
	char			 why[sizeof(err.msg) + 16];

	memset(it, 0, sizeof(*it));
	it->tag = ev->tag;
	s->next->bytes += ev->body.len;
	if ((it->body = malloc(ev->body.len + 1)) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
	memcpy(it->body, ev->body.bytes, ev->body.len);
	it->len = ev->body.len;
	if (!jobq_event_is_json(ev))
		jobq_errf(&err, EX_DATAERR, "content type %s, not "
		    "application/json", ev->content_type);
	else if (jobq_result_decode(ev->body.bytes, ev->body.len, &r,
	    &err) == 0) {
		strcpy(it->id, r.id);
		jobq_result_clear(&r);
		return;
	}
	snprintf(why, sizeof(why), "not a result: %s", err.msg);
	jobq_log(JOBQ_WARN, "not a result; dead-lettered", "message_id=%s "
	    "err=%s", jobq_q(ev->message_id), jobq_q(err.msg));
	refuse(it, why);
	snprintf(it->id, sizeof(it->id), "%s", ev->message_id);
	if ((it->content_type = strdup(*ev->content_type != '\0' ?
	    ev->content_type : "application/octet-stream")) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
}

/* Whether a batch may take no more results. */
static int
full(const struct store *s, const struct batch *b)
{
	/* A batch is one statement, whose parameter has a size limit. */
	return b->n >= s->max_batch || b->bytes >= MAX_BATCH_BYTES;
}

/*
 * Wait up to a second for the broker, and for the database's answer
 * when a batch is being written.  0 when either has something, -1 when
 * neither came.
 */
static int
wait_for_input(struct store *s)
{
	struct pollfd	 fds[2];
	nfds_t		 n = 0;

	fds[n].fd = amqp_get_sockfd(s->conn);
	fds[n++].events = POLLIN;
	if (s->sent != NULL) {
		fds[n].fd = PQsocket(s->db);
		fds[n++].events = POLLIN;
	}
	return poll(fds, n, 1000) > 0 ? 0 : -1;
}

/*
 * Fill the next batch.  With no batch being written, take the first
 * result that comes within a second and all that are already waiting.
 * While a batch is being written, keep taking results until its commit
 * comes back or the next batch is full: the database is busy anyway.
 */
static void
collect(struct store *s)
{
	struct jobq_event	 ev = { 0 };
	struct jobq_err		 err;

	while (!full(s, s->next) && !stopping) {
		if (jobq_amqp_next(s->conn, 0, &ev, &err) == -1) {
			lost(s, &err);
			break;
		}
		if (ev.kind == JOBQ_EV_DELIVERY) {
			add(s, &ev);
			continue;
		}
		if (ev.kind == JOBQ_EV_CANCELLED) {
			jobq_errf(&err, EX_UNAVAILABLE, "the broker cancelled "
			    "the consumer of %s", s->cfg.result_queue);
			die(&err);
		}
		if (jobq_amqp_pending(s->conn))
			continue;
		if (s->sent == NULL ? s->next->n > 0 :
		    jobq_db_store_done(s->db))
			break;
		if (wait_for_input(s) == -1)
			break;
	}
	jobq_event_clear(&ev);
}

/* Forget a batch, settled or not. */
static void
clear_batch(struct batch *b)
{
	int	 i;

	for (i = 0; i < b->n; i++) {
		free(b->items[i].body);
		free(b->items[i].why);
		free(b->items[i].content_type);
	}
	b->n = 0;
	b->bytes = 0;
}

/*
 * Wait for the broker to confirm the dead letters sent, which the last
 * one's confirm covers.  Their connection carries nothing else, so
 * every frame on it is about them.
 */
static int
dead_confirmed(struct store *s, struct jobq_err *err)
{
	struct jobq_event	 ev = { 0 };
	long			 until = jobq_now_ms() + 30000;
	int			 rc = 1;

	while (rc == 1) {
		if (jobq_now_ms() > until)
			rc = jobq_errf(err, EX_UNAVAILABLE, "no confirm of a "
			    "dead letter in 30 s");
		else if (jobq_amqp_next(s->dead, 1000, &ev, err) == -1)
			rc = -1;
		else if (ev.kind == JOBQ_EV_ACK && ev.tag >= s->dead_seq)
			rc = 0;
		else if (ev.kind == JOBQ_EV_NACK || ev.kind ==
		    JOBQ_EV_RETURN)
			rc = jobq_errf(err, EX_UNAVAILABLE, "the broker did "
			    "not take a dead letter for %s",
			    s->cfg.dead_queue);
	}
	jobq_event_clear(&ev);
	return rc;
}

/*
 * Send what was not stored to the dead-letter queue, as it came, with
 * headers that say why, where and when; dead_confirmed() waits for it.
 * It goes over a connection of its own, opened for the batch, so that
 * waiting for the confirms does not mix with the deliveries of the
 * result queue.
 */
static int
dead_letter(struct store *s, const struct item *it, struct jobq_err *err)
{
	struct jobq_headers	 h = { .n = 0 };
	struct jobq_pub		 pub = { 0 };
	char			 now[JOBQ_TIME_LEN + 1];

	if (s->dead == NULL) {
		if ((s->dead = jobq_amqp_connect(&s->cfg, progname,
		    err)) == NULL)
			return -1;
		s->dead_seq = 0;
		if (jobq_amqp_confirms(s->dead, err) == -1)
			return -1;
	}
	jobq_now(now);
	jobq_header_str(&h, JOBQ_H_REASON, it->why);
	jobq_header_str(&h, JOBQ_H_QUEUE, s->cfg.result_queue);
	jobq_header_str(&h, JOBQ_H_FAILED_AT, now);
	pub.exchange = "";
	pub.key = s->cfg.dead_queue;
	pub.mandatory = 1;
	pub.id = *it->id != '\0' ? it->id : NULL;
	pub.content_type = it->content_type != NULL ? it->content_type :
	    "application/json";
	pub.headers = jobq_headers_table(&h);
	if (jobq_amqp_send(s->dead, &pub, it->body, it->len, err) == -1)
		return -1;
	s->dead_seq++;
	return 0;
}

/*
 * Settle every delivery of a batch after its commit, and forget it:
 * what was not stored goes to the dead-letter queue first, and then
 * one ack covers them all.
 */
static void
settle(struct store *s, struct batch *b)
{
	struct jobq_err	 err;
	int		 i;

	for (i = 0; i < b->n && !s->broken; i++)
		if (b->items[i].why != NULL &&
		    dead_letter(s, &b->items[i], &err) == -1)
			lost(s, &err);
	if (!s->broken && s->dead != NULL && dead_confirmed(s, &err) == -1)
		lost(s, &err);
	/* Idle, the broker would close it for want of heartbeats. */
	if (s->dead != NULL) {
		jobq_amqp_close(s->dead);
		s->dead = NULL;
	}
	/*
	 * The batch's deliveries come before its last one, and those of
	 * the next batch all come after it.
	 */
	if (!s->broken && b->n > 0 &&
	    jobq_amqp_ack(s->conn, b->items[b->n - 1].tag, 1, &err) == -1)
		lost(s, &err);
	jobq_log(JOBQ_DEBUG, "batch stored", "size=%d", b->n);
	clear_batch(b);
	s->written++;
}

/*
 * The JSON text of an array of the results of items [from, to) of a
 * batch, for jobq_db_store_send(), to be freed; NULL when they hold
 * none.
 */
static char *
results_text(const struct batch *b, int from, int to)
{
	struct jobq_err	 err;
	size_t		 size = 2, off = 0;
	char		*text;
	int		 i;

	for (i = from; i < to; i++)
		if (b->items[i].why == NULL)
			size += b->items[i].len + 1;
	if (size == 2)
		return NULL;
	if ((text = malloc(size)) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
	for (i = from; i < to; i++)
		if (b->items[i].why == NULL) {
			text[off] = off == 0 ? '[' : ',';
			off++;
			memcpy(text + off, b->items[i].body,
			    b->items[i].len);
			off += b->items[i].len;
		}
	text[off++] = ']';
	text[off] = '\0';
	return text;
}

/*
 * Start writing the next batch, which becomes the one being written.
 * A batch of nothing but bad messages needs no database and is settled
 * at once.
 */
static void
send_next(struct store *s)
{
	struct batch	*b = s->next;
	char		*text;
	struct jobq_err	 err;

	s->next = b == &s->batches[0] ? &s->batches[1] : &s->batches[0];
	if ((text = results_text(b, 0, b->n)) == NULL)
		settle(s, b);
	else if (jobq_db_store_send(s->db, text, &err) == -1) {
		lost(s, &err);
		clear_batch(b);
	} else
		s->sent = b;
	free(text);
}

/* Store a batch one result at a time, dropping only those refused. */
static void
store_each(struct store *s, struct batch *b)
{
	char		*text;
	struct jobq_err	 err;
	long		 n;
	int		 i, rc;

	for (i = 0; i < b->n && !s->broken; i++) {
		if ((text = results_text(b, i, i + 1)) == NULL)
			continue;
		rc = jobq_db_store(s->db, text, &n, &err);
		free(text);
		if (rc == 0)
			s->stored += n;
		else if (err.code != EX_DATAERR)
			lost(s, &err);
		else {
			char	 why[sizeof(err.msg) + 32];

			jobq_log(JOBQ_ERROR, "result refused by the "
			    "database; dead-lettered", "id=%s err=%s",
			    b->items[i].id, jobq_q(err.msg));
			snprintf(why, sizeof(why), "refused by the database: "
			    "%s", err.msg);
			refuse(&b->items[i], why);
		}
	}
}

/*
 * Wait for the commit of the batch being written, and settle it.  When
 * the table refused it for its data, store it one result at a time.
 */
static void
finish_sent(struct store *s)
{
	struct batch	*b = s->sent;
	struct jobq_err	 err;
	long		 n;

	s->sent = NULL;
	if (jobq_db_store_wait(s->db, &n, &err) == 0)
		s->stored += n;
	/*
	 * An error that left the connection up may be the batch's own,
	 * such as a limit that its size passed: one by one tells.
	 */
	else if (err.code != EX_DATAERR && (PQstatus(s->db) !=
	    CONNECTION_OK || strncmp(err.sqlstate, "42", 2) == 0 ||
	    b->n == 1))
		lost(s, &err);
	else {
		jobq_log(JOBQ_WARN, "batch refused; storing one by one",
		    "size=%d err=%s", b->n, jobq_q(err.msg));
		store_each(s, b);
	}
	if (s->broken)
		clear_batch(b);
	else
		settle(s, b);
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
	if (jobq_db_prepare_store(s->db, err) == -1)
		goto fail;
	prefetch = 4 * s->max_batch > 65535 ? 65535 : 4 * s->max_batch;
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

/* Forget both batches, unsettled. */
static void
forget_all(struct store *s)
{
	if (s->sent != NULL)
		clear_batch(s->sent);
	s->sent = NULL;
	clear_batch(s->next);
}

/*
 * A connection failed.  Drop the batches unacknowledged, so that the
 * broker delivers them again, close the connections, and open them
 * again, pausing longer after each failure.
 */
static void
recover(struct store *s)
{
	struct jobq_err	 err, last = s->lost_err;
	int		 delay;

	jobq_log(JOBQ_WARN, "connection lost", "err=%s batch=%d",
	    jobq_q(s->lost_err.msg), s->next->n +
	    (s->sent != NULL ? s->sent->n : 0));
	health(s, 0);
	forget_all(s);
	amqp_destroy_connection(s->conn);
	s->conn = NULL;
	if (s->dead != NULL)
		amqp_destroy_connection(s->dead);
	s->dead = NULL;
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
		if (err.code != EX_UNAVAILABLE ||
		    strncmp(err.sqlstate, "42", 2) == 0)
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
	int			 i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	for (i = 0; i < 2; i++)
		if ((s->batches[i].items = calloc((size_t)s->max_batch,
		    sizeof(*s->batches[i].items))) == NULL) {
			perror(progname);
			exit(EX_OSERR);
		}
	s->next = &s->batches[0];
	if (connect_all(s, &err) == -1)
		die(&err);
	health(s, 1);
}

/*
 * Take batches and store them until a signal; recover from losses.  A
 * batch is sent as soon as the one before it is committed.
 */
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
		if (!s->broken && s->sent != NULL &&
		    (full(s, s->next) || jobq_db_store_done(s->db)))
			finish_sent(s);
		if (!s->broken && s->sent == NULL && s->next->n > 0)
			send_next(s);
	}
	/* Store what is in hand before leaving. */
	if (!s->broken && s->sent != NULL)
		finish_sent(s);
	if (!s->broken && s->next->n > 0)
		send_next(s);
	if (!s->broken && s->sent != NULL)
		finish_sent(s);
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
	forget_all(&s);
	jobq_amqp_close(s.conn);
	if (s.dead != NULL)
		jobq_amqp_close(s.dead);
	PQfinish(s.db);
	jobq_log(JOBQ_INFO, "stopped", "stored=%ld batches=%ld", s.stored,
	    s.written);
	return 0;
}
