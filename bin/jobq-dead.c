/*
 * jobq-dead: list the dead letters, or replay the jobs among them.
 *
 * The dead-letter queue is read with basic.get, and every message is
 * held unacknowledged until the end: the broker then gives none twice,
 * and whatever is not replayed goes back where it was when the hold is
 * released.  A job is replayed as its next attempt, published to the
 * exchange as jobq-submit publishes, and its dead copies are acked only
 * once the broker has confirmed that publish: a crash at any point
 * leaves the job on the job queue, on the dead-letter queue or on both,
 * never on neither.  Copies of one job are replayed once.  Nothing is
 * written on stdout before the connection is closed, so that a slow
 * reader cannot keep the connection from its heartbeats.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq.h"

#define WINDOW		256	/* replays in flight at once */
#define HEADER_MAX	8192	/* bytes of a header value kept */

enum mode { LIST, REPLAY_SOME, REPLAY_ALL };

enum { HELD, PENDING, CONFIRMED, REFUSED, UNROUTED };

/* A message taken from the dead-letter queue. */
struct letter {
	uint64_t	 tag;
	char		 id[JOBQ_UUID_LEN + 1];	/* "" when it has none */
	int		 is_job;	/* the body is a job message */
	int		 last;		/* its last attempt, for a job */
	struct letter	*head;		/* the copy replayed; NULL: none */
	struct jobq_job	*job;		/* of a head, until it is sent */
	int		 state;		/* of a head */
	int		 unrouted;	/* the broker returned it */
	uint64_t	 seq;		/* of its publish */
	int		 acked;
};

/* An id given to -P, and what the dead-letter queue had for it. */
struct wanted {
	char		 id[JOBQ_UUID_LEN + 1];
	size_t		 pos;		/* among the operands */
	int		 found;		/* 1: a job; 2: only other messages */
};

struct dead {
	struct jobq_config	 cfg;
	amqp_connection_state_t	 conn;
	enum mode		 mode;
	int			 attempts;	/* -a */
	int			 attempts_given;
	struct wanted		*want;
	size_t			 nwant;
	struct letter		*l;
	size_t			 n, size;
	struct letter		**sent;		/* by publish sequence */
	size_t			 nsent, pending;
	size_t			 first;		/* of sent, maybe pending */
	FILE			*out;		/* the listing, until the end */
	int			 status;	/* the exit status so far */
};

static const char	*progname = "jobq-dead";

static void
usage(int status)
{
	/* Asked for with -h, it is output; after a mistake, a diagnostic. */
	FILE	*f = status == 0 ? stdout : stderr;

	fprintf(f, "usage: %s [-hlV] [-E queue] [-q queue] [-u url] "
	    "[-x exchange]\n"
	    "       %s -A [-a attempts] [-E queue] [-q queue] [-u url] "
	    "[-x exchange]\n"
	    "       %s -P [-a attempts] [-E queue] [-q queue] [-u url] "
	    "[-x exchange]\n"
	    "                 id ...\n",
	    progname, progname, progname);
	exit(status);
}

static void
bad_option(const struct jobq_err *err)
{
	fprintf(stderr, "%s: %s\n", progname, err->msg);
	usage(EX_USAGE);
}

/*
 * Exit at once.  What is still held goes back to the dead-letter queue
 * when the connection ends with the process.
 */
static void
die(const struct jobq_err *err)
{
	fflush(stdout);
	fprintf(stderr, "%s: %s\n", progname, err->msg);
	exit(err->code);
}

static void
die_nomem(void)
{
	struct jobq_err	 err;

	jobq_errf(&err, EX_OSERR, "out of memory");
	die(&err);
}

static void
vnote(const char *fmt, va_list ap)
{
	/* Keep the order of the two streams on a shared terminal. */
	fflush(stdout);
	fprintf(stderr, "%s: ", progname);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

/* Say on stderr what was left alone, without failing for it. */
static void
note(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void
note(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vnote(fmt, ap);
	va_end(ap);
}

/*
 * Say what went wrong with one job and go on.  The first failure of
 * the broker's sets the exit status; an id not found makes it 1 unless
 * something worse happened.
 */
static void
complain(struct dead *d, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
complain(struct dead *d, int code, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vnote(fmt, ap);
	va_end(ap);
	if (d->status == 0 || (d->status == 1 && code != 1))
		d->status = code;
}

static int
by_id(const void *a, const void *b)
{
	return strcmp(((const struct wanted *)a)->id,
	    ((const struct wanted *)b)->id);
}

static int
by_pos(const void *a, const void *b)
{
	size_t	 x = ((const struct wanted *)a)->pos;
	size_t	 y = ((const struct wanted *)b)->pos;

	return x < y ? -1 : x > y;
}

/*
 * Read the ids of -P, each once, sorted for lookups.  One that is not
 * a UUID ends the program before anything is touched.
 */
static void
read_ids(struct dead *d, int argc, char *argv[])
{
	struct jobq_err	 err;
	size_t		 i, k;

	if (argc == 0)
		return;
	if ((d->want = calloc((size_t)argc, sizeof(*d->want))) == NULL)
		die_nomem();
	for (i = 0; i < (size_t)argc; i++) {
		if (jobq_uuid_canon(argv[i], d->want[i].id) == -1) {
			jobq_errf(&err, EX_DATAERR, "%s: not a job id (a "
			    "UUID)", argv[i]);
			die(&err);
		}
		d->want[i].pos = i;
	}
	/* Sorting by id, then by position, keeps the first of a twin. */
	qsort(d->want, (size_t)argc, sizeof(*d->want), by_pos);
	qsort(d->want, (size_t)argc, sizeof(*d->want), by_id);
	for (i = k = 0; i < (size_t)argc; i++)
		if (k == 0 || strcmp(d->want[k - 1].id, d->want[i].id) != 0)
			d->want[k++] = d->want[i];
		else if (d->want[i].pos < d->want[k - 1].pos)
			d->want[k - 1].pos = d->want[i].pos;
	d->nwant = k;
}

static struct wanted *
wanted(struct dead *d, const char *id)
{
	struct wanted	 key;

	if (*id == '\0' || d->nwant == 0)
		return NULL;
	strcpy(key.id, id);
	return bsearch(&key, d->want, d->nwant, sizeof(*d->want), by_id);
}

static int
number(int c, long min, long max)
{
	struct jobq_err	 err;
	long		 v;

	if (jobq_opt_number(c, optarg, min, max, NULL, &v, &err) == -1)
		bad_option(&err);
	return (int)v;
}

static void
set_mode(struct dead *d, enum mode m, int *given)
{
	if (*given && d->mode != m)
		usage(EX_USAGE);
	d->mode = m;
	*given = 1;
}

static void
options(struct dead *d, int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "all",	no_argument,		NULL, 'A' },
		{ "max-attempts", required_argument,	NULL, 'a' },
		{ "dead-queue",	required_argument,	NULL, 'E' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "list",	no_argument,		NULL, 'l' },
		{ "queue",	required_argument,	NULL, 'q' },
		{ "replay",	no_argument,		NULL, 'P' },
		{ "amqp-url",	required_argument,	NULL, 'u' },
		{ "version",	no_argument,		NULL, 'V' },
		{ "exchange",	required_argument,	NULL, 'x' },
		{ NULL,		0,			NULL, 0 }
	};
	struct jobq_err	 err;
	int		 c, given = 0;

	while ((c = getopt_long(argc, argv, "Aa:E:hlPq:u:Vx:", longopts,
	    NULL)) != -1)
		switch (c) {
		case 'A':
			set_mode(d, REPLAY_ALL, &given);
			break;
		case 'a':
			d->attempts = number(c, 1, JOBQ_MAX_ATTEMPTS);
			d->attempts_given = 1;
			break;
		case 'l':
			set_mode(d, LIST, &given);
			break;
		case 'P':
			set_mode(d, REPLAY_SOME, &given);
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
			if (jobq_config_option(&d->cfg, c, optarg, &err) == -1)
				bad_option(&err);
		}
	if ((d->mode == REPLAY_SOME) != (optind < argc) ||
	    (d->mode == LIST && d->attempts_given))
		usage(EX_USAGE);
}

static void
connect_broker(struct dead *d)
{
	struct jobq_err	 err;

	if ((d->conn = jobq_amqp_connect(&d->cfg, progname, &err)) == NULL ||
	    jobq_amqp_declare(d->conn, &d->cfg, &err) == -1 ||
	    (d->mode != LIST && jobq_amqp_confirms(d->conn, &err) == -1))
		die(&err);
}

static void
add_str(json_object *o, const char *key, const char *s)
{
	json_object_object_add(o, key, s == NULL ? NULL :
	    json_object_new_string(s));
}

/* A string header as valid UTF-8, or NULL when it is missing. */
static char *
header(const struct jobq_event *ev, const char *key)
{
	char	 buf[HEADER_MAX], *s;

	if (jobq_event_header_str(ev, key, buf, sizeof(buf)) == -1)
		return NULL;
	if ((s = jobq_utf8_clean(buf, strlen(buf))) == NULL)
		die_nomem();
	return s;
}

static void
add_header(json_object *o, const char *member, const struct jobq_event *ev,
    const char *key)
{
	char	*s = header(ev, key);

	add_str(o, member, s);
	free(s);
}

/* Write a letter as one line of JSON; job is NULL for what is not one. */
static void
print_letter(FILE *out, const struct jobq_event *ev,
    const struct jobq_job *job)
{
	json_object	*o;
	char		*id = NULL;
	long		 n;

	if ((o = json_object_new_object()) == NULL)
		die_nomem();
	if (job == NULL && *ev->message_id != '\0' &&
	    (id = jobq_utf8_clean(ev->message_id,
	    strlen(ev->message_id))) == NULL)
		die_nomem();
	add_str(o, "id", job != NULL ? job->id : id);
	add_str(o, "type", job != NULL ? job->type : NULL);
	add_header(o, "reason", ev, JOBQ_H_REASON);
	add_header(o, "queue", ev, JOBQ_H_QUEUE);
	add_header(o, "worker", ev, JOBQ_H_WORKER);
	add_header(o, "failed_at", ev, JOBQ_H_FAILED_AT);
	json_object_object_add(o, "attempts",
	    jobq_event_header_int(ev, JOBQ_H_ATTEMPTS, &n) == 0 ?
	    json_object_new_int64(n) : NULL);
	json_object_object_add(o, "job", json_object_new_boolean(job != NULL));
	fprintf(out, "%s\n", jobq_json_str(o));
	json_object_put(o);
	free(id);
}

static struct letter *
new_letter(struct dead *d, uint64_t tag)
{
	struct letter	*l;
	size_t		 size;

	if (d->n == d->size) {
		size = d->size == 0 ? 64 : d->size * 2;
		if ((l = realloc(d->l, size * sizeof(*l))) == NULL)
			die_nomem();
		d->l = l;
		d->size = size;
	}
	l = &d->l[d->n++];
	memset(l, 0, sizeof(*l));
	l->tag = tag;
	return l;
}

/*
 * Note one message of the queue: print it when listing, else keep what
 * a replay of it needs.
 */
static void
take(struct dead *d, const struct jobq_event *ev)
{
	struct letter	*l = new_letter(d, ev->tag);
	struct jobq_job	 job;
	struct jobq_err	 err;
	long		 n;

	l->is_job = jobq_job_decode(ev->body.bytes, ev->body.len, &job,
	    &err) == 0;
	if (d->mode == LIST)
		print_letter(d->out, ev, l->is_job ? &job : NULL);
	if (!l->is_job) {
		if (jobq_uuid_canon(ev->message_id, l->id) == -1)
			*l->id = '\0';
		if (d->mode == REPLAY_ALL)
			note("dead letter %zu: not a job: %s; left on the "
			    "queue", d->n, err.msg);
		return;
	}
	strcpy(l->id, job.id);
	l->last = job.attempt;
	if (jobq_event_header_int(ev, JOBQ_H_ATTEMPTS, &n) == 0 &&
	    n > l->last && n <= JOBQ_MAX_ATTEMPTS)
		l->last = (int)n;
	if (d->mode == REPLAY_ALL || wanted(d, l->id) != NULL) {
		if ((l->job = malloc(sizeof(*l->job))) == NULL)
			die_nomem();
		*l->job = job;
	} else
		jobq_job_clear(&job);
}

static void
drop_job(struct letter *l)
{
	if (l->job == NULL)
		return;
	jobq_job_clear(l->job);
	free(l->job);
	l->job = NULL;
}

/* Take every message of the queue, holding each unacknowledged. */
static void
take_all(struct dead *d)
{
	struct jobq_event	 ev = { 0 };
	struct jobq_err		 err;
	int			 rc;

	while ((rc = jobq_amqp_get(d->conn, d->cfg.dead_queue, &ev,
	    &err)) == 1)
		take(d, &ev);
	jobq_event_clear(&ev);
	if (rc == -1)
		die(&err);
}

static int
by_id_then_tag(const void *a, const void *b)
{
	const struct letter	*x = *(struct letter *const *)a;
	const struct letter	*y = *(struct letter *const *)b;
	int			 c = strcmp(x->id, y->id);

	if (c != 0)
		return c;
	return x->tag < y->tag ? -1 : x->tag > y->tag;
}

/* Whether a letter is a job that was asked for. */
static int
chosen(struct dead *d, const struct letter *l)
{
	return l->is_job && (d->mode == REPLAY_ALL || wanted(d, l->id));
}

/*
 * Group the copies of each job to replay: the first in the queue is
 * the head, replayed with the highest attempt of them all, and the
 * others go with it.  Note which ids of -P were found.
 */
static void
group(struct dead *d)
{
	struct letter	**v, *head = NULL;
	struct wanted	 *w;
	size_t		  i, k = 0;

	if ((v = calloc(d->n + 1, sizeof(*v))) == NULL)
		die_nomem();
	for (i = 0; i < d->n; i++) {
		if ((w = wanted(d, d->l[i].id)) != NULL &&
		    (w->found == 0 || d->l[i].is_job))
			w->found = d->l[i].is_job ? 1 : 2;
		if (chosen(d, &d->l[i]))
			v[k++] = &d->l[i];
	}
	qsort(v, k, sizeof(*v), by_id_then_tag);
	for (i = 0; i < k; i++) {
		if (head == NULL || strcmp(head->id, v[i]->id) != 0)
			head = v[i];
		else {
			if (v[i]->last > head->last)
				head->last = v[i]->last;
			drop_job(v[i]);
		}
		v[i]->head = head;
	}
	free(v);
	if ((d->sent = calloc(d->n + 1, sizeof(*d->sent))) == NULL)
		die_nomem();
}

/* Find the replay that the broker returned, by its message_id. */
static void
returned(struct dead *d, const char *id)
{
	size_t	 i;

	for (i = d->first; i < d->nsent; i++)
		if (d->sent[i]->state == PENDING &&
		    strcmp(d->sent[i]->id, id) == 0)
			d->sent[i]->unrouted = 1;
}

/* Note a confirm of the publish seq, or of all up to it. */
static void
settle(struct dead *d, uint64_t seq, int multiple, int state)
{
	struct letter	*l;
	size_t		 i;

	for (i = d->first; i < d->nsent && d->sent[i]->seq <= seq; i++) {
		l = d->sent[i];
		if (l->state != PENDING || (!multiple && l->seq != seq))
			continue;
		l->state = state == CONFIRMED && l->unrouted ? UNROUTED :
		    state;
		d->pending--;
	}
	while (d->first < d->nsent && d->sent[d->first]->state != PENDING)
		d->first++;
}

/* Read the confirms that have come, waiting up to timeout_ms first. */
static void
read_events(struct dead *d, int timeout_ms)
{
	struct jobq_event	 ev = { 0 };
	struct jobq_err		 err;

	do {
		if (jobq_amqp_next(d->conn, timeout_ms, &ev, &err) == -1)
			die(&err);
		if (ev.kind == JOBQ_EV_ACK)
			settle(d, ev.tag, ev.multiple, CONFIRMED);
		else if (ev.kind == JOBQ_EV_NACK)
			settle(d, ev.tag, ev.multiple, REFUSED);
		else if (ev.kind == JOBQ_EV_RETURN)
			returned(d, ev.message_id);
		timeout_ms = 0;
	} while (ev.kind != JOBQ_EV_NONE);
	jobq_event_clear(&ev);
}

/*
 * Publish a head as its next attempt, with as many attempts again as
 * it had, or as -a gives when it set none, up to the limit.
 */
static void
publish(struct dead *d, struct letter *l)
{
	struct jobq_job	*job = l->job;
	struct jobq_err	 err;
	char		*body;
	int		 n, rc;

	if (l->last >= JOBQ_MAX_ATTEMPTS) {
		complain(d, 1, "%s: already tried %d times, the most a job "
		    "may be; left on the queue", l->id, l->last);
		return;
	}
	n = job->max_attempts > 0 ? job->max_attempts : d->attempts;
	job->attempt = l->last + 1;
	job->max_attempts = n > JOBQ_MAX_ATTEMPTS - l->last ?
	    JOBQ_MAX_ATTEMPTS : l->last + n;
	if ((body = jobq_job_encode(job)) == NULL)
		die_nomem();
	rc = jobq_amqp_publish(d->conn, d->cfg.exchange, job->type, 1,
	    job->id, job->type, job->trace, body, strlen(body), &err);
	free(body);
	if (rc == -1)
		die(&err);
	l->state = PENDING;
	l->seq = d->nsent + 1;
	d->sent[d->nsent++] = l;
	d->pending++;
}

/* Publish every head in queue order, and wait for all the confirms. */
static void
replay(struct dead *d)
{
	size_t	 i;

	for (i = 0; i < d->n; i++) {
		struct letter *l = &d->l[i];

		if (l->head != l)
			continue;
		while (d->pending >= WINDOW)
			read_events(d, 1000);
		publish(d, l);
		drop_job(l);
		read_events(d, 0);
	}
	while (d->pending > 0)
		read_events(d, 1000);
}

/*
 * Ack the dead copies of each job whose replay was confirmed; say what
 * became of the others.
 */
static void
ack_replayed(struct dead *d)
{
	struct jobq_err	 err;
	struct letter	*l;
	size_t		 i;

	for (i = 0; i < d->n; i++) {
		l = &d->l[i];
		if (l->head == NULL)
			continue;
		if (l->head->state == CONFIRMED) {
			if (jobq_amqp_ack(d->conn, l->tag, 0, &err) == -1)
				die(&err);
			l->acked = 1;
		} else if (l->head == l && l->state == REFUSED)
			complain(d, EX_TEMPFAIL, "%s: the broker refused the "
			    "replay; try again", l->id);
		else if (l->head == l && l->state == UNROUTED)
			complain(d, EX_UNAVAILABLE, "%s: no queue is bound to "
			    "exchange %s", l->id, d->cfg.exchange);
	}
}

/* Put back what is still held, in queue order. */
static void
release(struct dead *d)
{
	struct jobq_err	 err;
	size_t		 i;

	for (i = 0; i < d->n; i++)
		if (!d->l[i].acked &&
		    jobq_amqp_nack(d->conn, d->l[i].tag, 1, &err) == -1)
			die(&err);
}

static void
check_stdout(void)
{
	struct jobq_err	 err;

	if (fflush(stdout) == EOF || ferror(stdout)) {
		jobq_errf(&err, EX_IOERR, "stdout: %s", strerror(errno));
		die(&err);
	}
}

/*
 * Copy the listing to stdout.  It waited in a temporary file so that a
 * slow reader cannot hold up the broker connection past its heartbeat.
 */
static void
copy_out(struct dead *d)
{
	struct jobq_err	 err;
	char		 buf[65536];
	size_t		 n;

	if (fflush(d->out) == EOF || ferror(d->out) ||
	    fseek(d->out, 0, SEEK_SET) == -1) {
		jobq_errf(&err, EX_IOERR, "temporary file: %s",
		    strerror(errno));
		die(&err);
	}
	while ((n = fread(buf, 1, sizeof(buf), d->out)) > 0)
		if (fwrite(buf, 1, n, stdout) != n)
			break;
	if (ferror(d->out)) {
		jobq_errf(&err, EX_IOERR, "temporary file: %s",
		    strerror(errno));
		die(&err);
	}
	check_stdout();
	fclose(d->out);
}

/* Print the ids of the jobs replayed, once their dead copies are gone. */
static void
print_replayed(struct dead *d)
{
	size_t	 i;

	for (i = 0; i < d->n; i++)
		if (d->l[i].head == &d->l[i] && d->l[i].acked)
			printf("%s\n", d->l[i].id);
	check_stdout();
}

/* Name the ids of -P that had no job to replay, in the order given. */
static void
report_missing(struct dead *d)
{
	size_t	 i;

	if (d->nwant == 0)
		return;
	qsort(d->want, d->nwant, sizeof(*d->want), by_pos);
	for (i = 0; i < d->nwant; i++)
		if (d->want[i].found == 0)
			complain(d, 1, "%s: not in the dead-letter queue",
			    d->want[i].id);
		else if (d->want[i].found == 2)
			complain(d, 1, "%s: not a job message; left on the "
			    "queue", d->want[i].id);
}

int
main(int argc, char *argv[])
{
	static struct dead	 d;
	struct jobq_err		 err;

	jobq_config_init(&d.cfg);
	d.attempts = JOBQ_DEFAULT_ATTEMPTS;
	options(&d, argc, argv);
	if (jobq_config_check(&d.cfg, &err) == -1 ||
	    jobq_amqp_urls_check(&d.cfg, &err) == -1)
		die(&err);
	read_ids(&d, argc - optind, argv + optind);
	if (d.mode == LIST && (d.out = tmpfile()) == NULL) {
		jobq_errf(&err, EX_IOERR, "temporary file: %s",
		    strerror(errno));
		die(&err);
	}

	connect_broker(&d);
	take_all(&d);
	if (d.mode != LIST) {
		group(&d);
		replay(&d);
		ack_replayed(&d);
	}
	release(&d);
	/* Closing waits for the broker to have taken every ack and nack. */
	if (jobq_amqp_close(d.conn) == -1 && d.mode != LIST) {
		jobq_errf(&err, EX_TEMPFAIL, "the broker did not answer the "
		    "close: the dead copies of the jobs replayed may still be "
		    "there; list them before replaying again");
		die(&err);
	}
	if (d.mode == LIST)
		copy_out(&d);
	else
		print_replayed(&d);
	report_missing(&d);
	return d.status;
}
