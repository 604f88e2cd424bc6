/*
 * jobq-submit: publish the job documents read from stdin.
 *
 * Each document becomes one job on the exchange, routed by its type.
 * Its id is printed on stdout only after the broker has confirmed the
 * job, in the order of the input.  Up to WINDOW jobs are in flight at
 * once, so a stream goes at the broker's pace rather than one round
 * trip per job.  The first bad document stops the stream: the jobs
 * before it stay submitted and their ids are printed, nothing after it
 * is sent.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobq.h"

#define WINDOW		256
#define CHUNK		65536

enum { PENDING, CONFIRMED, REFUSED, UNROUTED };

struct inflight {
	char		 id[JOBQ_UUID_LEN + 1];
	uint64_t	 seq;
	int		 state;
};

struct submit {
	amqp_connection_state_t	 conn;
	struct jobq_config	 cfg;
	struct jobq_reader	*reader;
	struct inflight		 ring[WINDOW];
	size_t			 head, count;
	uint64_t		 next_seq;
	char			 buf[CHUNK];
	size_t			 off, len;
	int			 eof;
	int			 stopped;	/* no more input is taken */
	int			 queued;	/* -Q: say each job is queued */
	struct jobq_err		 err;		/* why it stopped */
};

static const char	*progname = "jobq-submit";

static void
usage(int status)
{
	/* Asked for with -h, it is output; after a mistake, a diagnostic. */
	FILE	*f = status == 0 ? stdout : stderr;

	fprintf(f, "usage: %s [-hQV] [-q queue] [-r queue] [-S bytes] "
	    "[-u url] [-x exchange]\n", progname);
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
	fprintf(stderr, "%s: %s\n", progname, err->msg);
	exit(err->code);
}

/* Stop taking input, keeping the first reason. */
static void
stop(struct submit *s, const struct jobq_err *err)
{
	if (s->stopped)
		return;
	s->stopped = 1;
	s->err = *err;
}

static struct inflight *
slot(struct submit *s, size_t i)
{
	return &s->ring[(s->head + i) % WINDOW];
}

static int
publish(struct submit *s, json_object *doc)
{
	struct jobq_job	 job;
	struct jobq_err	 err;
	char		*body;
	int		 rc;

	if (jobq_job_from_doc(doc, &job, &err) == -1) {
		jobq_errf(&s->err, EX_DATAERR, "line %ld: %s",
		    jobq_reader_line(s->reader), err.msg);
		s->stopped = 1;
		return -1;
	}
	jobq_trace_new(job.trace, getenv("TRACEPARENT"));
	if ((body = jobq_job_encode(&job)) == NULL) {
		jobq_job_clear(&job);
		jobq_errf(&err, EX_OSERR, "out of memory");
		stop(s, &err);
		return -1;
	}
	rc = jobq_amqp_publish(s->conn, s->cfg.exchange, job.type, 1, job.id,
	    job.type, job.trace, body, strlen(body), &err);
	free(body);
	if (rc == -1) {
		jobq_job_clear(&job);
		die(&err);
	}
	strcpy(slot(s, s->count)->id, job.id);
	slot(s, s->count)->seq = s->next_seq++;
	/*
	 * Its confirm, numbered after the job's, is no slot's: settle()
	 * passes it by, and a multiple one covers the job's too.
	 */
	if (s->queued) {
		if (jobq_amqp_say_queued(s->conn, &s->cfg, &job, &err) == -1) {
			jobq_job_clear(&job);
			die(&err);
		}
		s->next_seq++;
	}
	slot(s, s->count)->state = PENDING;
	s->count++;
	jobq_job_clear(&job);
	return 0;
}

/* Take documents from the buffered input while the window has room. */
static void
take_input(struct submit *s)
{
	json_object	*doc;
	struct jobq_err	 err;
	size_t		 used;
	int		 rc;

	while (!s->stopped && s->count < WINDOW && s->off < s->len) {
		rc = jobq_reader_feed(s->reader, s->buf + s->off,
		    s->len - s->off, &used, &doc, &err);
		s->off += used;
		if (rc == -1)
			stop(s, &err);
		else if (rc == 1) {
			publish(s, doc);
			json_object_put(doc);
		}
	}
	if (!s->stopped && s->eof && s->off == s->len) {
		rc = jobq_reader_end(s->reader, &doc, &err);
		if (rc == -1)
			stop(s, &err);
		else if (rc == 1) {
			publish(s, doc);
			json_object_put(doc);
		}
		s->stopped = 1;
	}
}

static void
read_input(struct submit *s)
{
	ssize_t		 n;
	struct jobq_err	 err;

	n = read(STDIN_FILENO, s->buf, sizeof(s->buf));
	if (n == -1 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n == -1) {
		jobq_errf(&err, EX_IOERR, "stdin: %s", strerror(errno));
		stop(s, &err);
		return;
	}
	s->off = 0;
	s->len = (size_t)n;
	if (n == 0)
		s->eof = 1;
}

static void
settle(struct submit *s, uint64_t tag, int multiple, int state)
{
	struct inflight	*f;
	size_t		 i;

	for (i = 0; i < s->count; i++) {
		f = slot(s, i);
		if (f->seq == tag || (multiple && f->seq < tag)) {
			if (f->state == PENDING)
				f->state = state;
		} else if (f->seq > tag)
			break;
	}
}

static void
unrouted(struct submit *s, const char *id)
{
	size_t	 i;

	for (i = 0; i < s->count; i++)
		if (strcmp(slot(s, i)->id, id) == 0)
			slot(s, i)->state = UNROUTED;
}

/* Print the ids confirmed at the head of the window, in order. */
static void
print_confirmed(struct submit *s)
{
	struct inflight	*f;
	struct jobq_err	 err;
	int		 printed = 0;

	while (s->count > 0 && (f = slot(s, 0))->state != PENDING) {
		if (f->state == REFUSED) {
			jobq_errf(&err, EX_TEMPFAIL, "job %s: the broker "
			    "refused it; try again", f->id);
			die(&err);
		}
		if (f->state == UNROUTED) {
			jobq_errf(&err, EX_UNAVAILABLE, "job %s: no queue is "
			    "bound to exchange %s", f->id, s->cfg.exchange);
			die(&err);
		}
		printf("%s\n", f->id);
		printed = 1;
		s->head = (s->head + 1) % WINDOW;
		s->count--;
	}
	if (printed && fflush(stdout) == EOF) {
		jobq_errf(&err, EX_IOERR, "stdout: %s", strerror(errno));
		die(&err);
	}
}

static void
read_events(struct submit *s, int timeout_ms)
{
	struct jobq_event	 ev = { 0 };
	struct jobq_err		 err;

	do {
		if (jobq_amqp_next(s->conn, timeout_ms, &ev, &err) == -1)
			die(&err);
		if (ev.kind == JOBQ_EV_ACK)
			settle(s, ev.tag, ev.multiple, CONFIRMED);
		else if (ev.kind == JOBQ_EV_NACK)
			settle(s, ev.tag, ev.multiple, REFUSED);
		else if (ev.kind == JOBQ_EV_RETURN)
			unrouted(s, ev.message_id);
		timeout_ms = 0;
	} while (ev.kind != JOBQ_EV_NONE || jobq_amqp_pending(s->conn));
	jobq_event_clear(&ev);
}

static void
run(struct submit *s)
{
	struct pollfd	 pfd[2];
	int		 want_input, n;

	for (;;) {
		take_input(s);
		if (s->stopped && s->count == 0)
			return;
		want_input = !s->stopped && s->count < WINDOW;
		pfd[0].fd = want_input ? STDIN_FILENO : -1;
		pfd[0].events = POLLIN;
		pfd[1].fd = amqp_get_sockfd(s->conn);
		pfd[1].events = POLLIN;
		pfd[0].revents = pfd[1].revents = 0;
		n = jobq_amqp_pending(s->conn) ? 0 : 1000;
		if (poll(pfd, 2, n) == -1 && errno != EINTR) {
			jobq_errf(&s->err, EX_OSERR, "poll: %s",
			    strerror(errno));
			die(&s->err);
		}
		read_events(s, 0);
		print_confirmed(s);
		if (pfd[0].revents != 0)
			read_input(s);
	}
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "help",	no_argument,		NULL, 'h' },
		{ "queued",	no_argument,		NULL, 'Q' },
		{ "queue",	required_argument,	NULL, 'q' },
		{ "result-queue", required_argument,	NULL, 'r' },
		{ "max-size",	required_argument,	NULL, 'S' },
		{ "amqp-url",	required_argument,	NULL, 'u' },
		{ "version",	no_argument,		NULL, 'V' },
		{ "exchange",	required_argument,	NULL, 'x' },
		{ NULL,		0,			NULL, 0 }
	};
	static struct submit	 s;
	struct jobq_err		 err;
	int			 c;

	jobq_config_init(&s.cfg);
	while ((c = getopt_long(argc, argv, "hQq:r:S:u:Vx:", longopts,
	    NULL)) != -1)
		switch (c) {
		case 'Q':
			s.queued = 1;
			break;
		case 'V':
			printf("%s %s\n", progname, JOBQ_VERSION);
			return 0;
		case 'h':
			usage(0);
			break;
		case '?':
			usage(EX_USAGE);
			break;
		default:
			if (jobq_config_option(&s.cfg, c, optarg, &err) == -1)
				bad_option(&err);
		}
	if (optind != argc)
		usage(EX_USAGE);
	if (jobq_config_check(&s.cfg, &err) == -1 ||
	    jobq_amqp_urls_check(&s.cfg, &err) == -1)
		die(&err);

	if ((s.reader = jobq_reader_new(s.cfg.max_size)) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
	if ((s.conn = jobq_amqp_connect(&s.cfg, progname, &err)) == NULL ||
	    jobq_amqp_declare(s.conn, &s.cfg, &err) == -1 ||
	    jobq_amqp_confirms(s.conn, &err) == -1)
		die(&err);
	s.next_seq = 1;
	run(&s);
	jobq_amqp_close(s.conn);
	jobq_reader_free(s.reader);
	if (s.err.code != 0)
		die(&s.err);
	return 0;
}
