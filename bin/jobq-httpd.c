/*
 * jobq-httpd: jobq over HTTP, for one connection on stdin and stdout.
 *
 * A super-server (inetd, systemd with Accept=yes, tcpserver, socat)
 * accepts the connection and runs jobq-httpd on it; or a web server
 * runs it as a CGI program, which it tells from GATEWAY_INTERFACE.  It
 * never listens itself.  A job is published and confirmed by the broker
 * before the client hears its id; nothing is published for a request
 * that was not read whole and valid.  The broker and the database are
 * reached only when a request needs them, once per connection.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "jobq.h"

/* The dashboard: lib/dashboard.html, made a string by the Makefile. */
static const char dashboard_html[] =
#include "dashboard.inc"
;

#define CONFIRM_WAIT	10000	/* ms to wait for the broker's confirm */
#define LATENCY_WINDOW	300	/* seconds of jobs in the latency metric */
#define RATE_WINDOW	60	/* seconds of "last minute" */
#define SERIES_WINDOW	600	/* seconds of the dashboard's chart */
#define SERIES_STEP	10	/* seconds of each of its bars */
#define FAILURES_SHOWN	10	/* recent failures on the dashboard */

/* What a route answers. */
struct response {
	int		 status;
	const char	*type;		/* Content-Type */
	char		*body;		/* malloc'd */
	char		 extra[512];	/* more header lines, CRLF-ended */
	int		 close;		/* the connection must end */
};

struct server {
	struct jobq_config	 cfg;
	amqp_connection_state_t	 amqp;
	uint64_t		 next_seq;
	PGconn			*db;
	char			*token;		/* NULL: no auth */
	size_t			 max_head;
	int			 max_headers;
	int			 idle_s, read_s;
	int			 cgi;
	int			 queued;	/* -Q: say each job is queued */
	char			 base[256];	/* CGI: where it is mounted */
	char			 remote[INET6_ADDRSTRLEN + 8];
	char			*in;		/* bytes read, not yet used */
	size_t			 in_len, in_cap;
	long			 req_start;	/* ms; when the request began */
};

static const char	*progname = "jobq-httpd";

static void
usage(int status)
{
	/* Asked for with -h, it is output; after a mistake, a diagnostic. */
	FILE	*f = status == 0 ? stdout : stderr;

	fprintf(f, "usage: %s [-hQV] [-d conninfo] [-H bytes] [-i seconds] "
	    "[-L log]\n\t[-n headers] [-q queue] [-r queue] [-S bytes] "
	    "[-T file] [-t seconds]\n\t[-u url] [-x exchange]\n", progname);
	exit(status);
}

static void
bad_option(const struct jobq_err *err)
{
	fprintf(stderr, "%s: %s\n", progname, err->msg);
	usage(EX_USAGE);
}

static const char *
reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 202: return "Accepted";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 417: return "Expectation Failed";
	case 431: return "Request Header Fields Too Large";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Internal Server Error";
	}
}

/* A body holding one JSON value and a newline. */
static char *
json_body(json_object *obj)
{
	const char	*s = jobq_json_str(obj);
	char		*b;

	if ((b = malloc(strlen(s) + 2)) != NULL)
		sprintf(b, "%s\n", s);
	json_object_put(obj);
	return b;
}

/* Make res an error: a status and {"error":"..."}. */
static void
fail(struct response *res, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
fail(struct response *res, int status, const char *fmt, ...)
{
	json_object	*o = json_object_new_object();
	char		 msg[600];
	va_list		 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(o, "error", json_object_new_string(msg));
	free(res->body);
	res->status = status;
	res->type = "application/json";
	res->body = json_body(o);
	if (status == 400 || status == 408 || status == 413 || status == 431 ||
	    status == 414 || status == 417 || status == 501 || status == 505)
		res->close = 1;
}

/* Write all of buf to stdout; -1 when the client is gone. */
static int
write_all(const char *buf, size_t n)
{
	ssize_t	 w;

	while (n > 0) {
		if ((w = write(STDOUT_FILENO, buf, n)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Send a response; HEAD gets the headers only.  Its body's length. */
static size_t
respond(struct server *s, const struct response *res, int head_only)
{
	char		 hdr[1024], date[64], *whole;
	size_t		 blen = res->body != NULL ? strlen(res->body) : 0;
	time_t		 t = time(NULL);
	struct tm	 tm;
	int		 n;

	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (s->cgi)
		n = snprintf(hdr, sizeof(hdr), "Status: %d %s\r\n",
		    res->status, reason(res->status));
	else
		n = snprintf(hdr, sizeof(hdr), "HTTP/1.1 %d %s\r\n",
		    res->status, reason(res->status));
	n += snprintf(hdr + n, sizeof(hdr) - n, "Date: %s\r\n"
	    "Content-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n", date,
	    res->type, blen, res->extra,
	    res->close && !s->cgi ? "Connection: close\r\n" : "");
	if (head_only)
		blen = 0;
	/*
	 * One write for the whole response: a second small one would wait
	 * for the client's delayed acknowledgement of the first (Nagle).
	 */
	if ((whole = malloc((size_t)n + blen)) == NULL)
		exit(0);
	memcpy(whole, hdr, (size_t)n);
	if (blen > 0)
		memcpy(whole + n, res->body, blen);
	if (write_all(whole, (size_t)n + blen) == -1)
		exit(0);
	free(whole);
	return blen;
}

/*
 * Read more from the client, waiting until deadline (ms).  1: read
 * some; 0: end of input; -1: the deadline passed.
 */
static int
fill(struct server *s, long deadline)
{
	struct pollfd	 pfd = { STDIN_FILENO, POLLIN, 0 };
	ssize_t		 n;
	long		 wait;
	char		*grown;

	if (s->in_cap - s->in_len < 65536) {
		if ((grown = realloc(s->in, s->in_cap + 65536)) == NULL)
			return 0;
		s->in = grown;
		s->in_cap += 65536;
	}
	for (;;) {
		if ((wait = deadline - jobq_now_ms()) <= 0)
			return -1;
		if (poll(&pfd, 1, (int)wait) == -1 && errno != EINTR)
			return 0;
		if (pfd.revents == 0)
			continue;
		n = read(STDIN_FILENO, s->in + s->in_len, s->in_cap -
		    s->in_len);
		if (n == -1 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return 0;
		s->in_len += (size_t)n;
		return 1;
	}
}

/* Drop the first n bytes read: the request just answered. */
static void
consume(struct server *s, size_t n)
{
	memmove(s->in, s->in + n, s->in_len - n);
	s->in_len -= n;
}

/*
 * Read a request head.  Returns its length, 0 when the client left or
 * stayed silent between requests, -1 with res set when it failed.
 */
static long
read_head(struct server *s, struct response *res)
{
	const char	*end;
	long		 idle_end = jobq_now_ms() + s->idle_s * 1000L;
	int		 rc;

	s->req_start = s->in_len > 0 ? jobq_now_ms() : 0;
	while ((end = jobq_http_head_end(s->in, s->in_len)) == NULL) {
		if (s->in_len >= s->max_head) {
			fail(res, 431, "request head larger than %zu bytes",
			    s->max_head);
			return -1;
		}
		rc = fill(s, s->req_start == 0 ? idle_end :
		    s->req_start + s->read_s * 1000L);
		if (rc == 1 && s->req_start == 0)
			s->req_start = jobq_now_ms();
		if (rc == 0 && s->in_len == 0)
			return 0;
		if (rc == 0) {
			fail(res, 400, "request cut short");
			return -1;
		}
		if (rc == -1 && s->req_start == 0)
			return 0;
		if (rc == -1) {
			fail(res, 408, "request not received within %d s",
			    s->read_s);
			return -1;
		}
	}
	if ((size_t)(end - s->in) > s->max_head) {
		fail(res, 431, "request head larger than %zu bytes",
		    s->max_head);
		return -1;
	}
	return end - s->in;
}

/*
 * Read the body that the head announced, from offset off of the input.
 * On success *body (malloc'd, NUL-ended) and *len, and *used is where
 * the next request begins.
 */
static int
read_body(struct server *s, const struct jobq_http_req *req, size_t off,
    char **body, size_t *len, size_t *used, struct response *res)
{
	struct jobq_err	 err;
	size_t		 max = s->cfg.max_size;
	int		 rc;

	*body = NULL;
	*len = 0;
	*used = off;
	if (req->content_length > (long long)max) {
		fail(res, 413, "body larger than %zu bytes", max);
		return -1;
	}
	if ((*body = malloc(req->chunked ? max + 1 :
	    req->content_length > 0 ? (size_t)req->content_length + 1 :
	    1)) == NULL) {
		fail(res, 503, "out of memory");
		return -1;
	}
	/* A client that asked to may send its body only now. */
	if (req->expect_continue && req->minor == 1 && !s->cgi &&
	    s->in_len == off &&
	    (req->chunked || req->content_length > 0) &&
	    write_all("HTTP/1.1 100 Continue\r\n\r\n", 25) == -1)
		exit(0);
	for (;;) {
		if (req->chunked) {
			rc = jobq_http_dechunk(s->in + off, s->in_len - off,
			    max, *body, len, used, &err);
			if (rc == -1) {
				fail(res, err.code, "%s", err.msg);
				return -1;
			}
			if (rc == 1) {
				*used += off;
				break;
			}
		} else if (s->in_len - off >= (size_t)(req->content_length > 0 ?
		    req->content_length : 0)) {
			*len = req->content_length > 0 ?
			    (size_t)req->content_length : 0;
			if (*len > 0)
				memcpy(*body, s->in + off, *len);
			*used = off + *len;
			break;
		}
		rc = fill(s, s->req_start + s->read_s * 1000L);
		if (rc == 0) {
			fail(res, 400, "body cut short");
			return -1;
		}
		if (rc == -1) {
			fail(res, 408, "request not received within %d s",
			    s->read_s);
			return -1;
		}
	}
	(*body)[*len] = '\0';
	return 0;
}

/* Open the broker connection if it is not open; -1 with res set. */
static int
broker(struct server *s, struct response *res)
{
	struct jobq_err	 err;

	if (s->amqp != NULL)
		return 0;
	if ((s->amqp = jobq_amqp_connect(&s->cfg, progname,
	    &err)) == NULL || jobq_amqp_declare(s->amqp, &s->cfg,
	    &err) == -1 || jobq_amqp_confirms(s->amqp, &err) == -1) {
		jobq_log(JOBQ_ERROR, "broker unavailable", "err=%s",
		    jobq_q(err.msg));
		if (s->amqp != NULL)
			amqp_destroy_connection(s->amqp);
		s->amqp = NULL;
		fail(res, 503, "broker unavailable");
		return -1;
	}
	s->next_seq = 1;
	return 0;
}

static int
database(struct server *s, struct response *res)
{
	struct jobq_err	 err;

	if (s->db != NULL && PQstatus(s->db) == CONNECTION_OK)
		return 0;
	PQfinish(s->db);
	if ((s->db = jobq_db_open(s->cfg.db_conninfo, &err)) == NULL) {
		jobq_log(JOBQ_ERROR, "database unavailable", "err=%s",
		    jobq_q(err.msg));
		fail(res, 503, "database unavailable");
		return -1;
	}
	return 0;
}

/* The broker lost us: forget the connection so that the next retries. */
static void
broker_lost(struct server *s, const struct jobq_err *err)
{
	jobq_log(JOBQ_ERROR, "broker connection lost", "err=%s",
	    jobq_q(err->msg));
	amqp_destroy_connection(s->amqp);
	s->amqp = NULL;
}

/*
 * Wait for the broker to confirm publish number seq, of the job id.
 * -1 with res set when it did not; -2 when the connection failed,
 * which is forgotten.
 */
static int
confirm(struct server *s, uint64_t seq, const char *id,
    struct response *res)
{
	struct jobq_event	 ev = { 0 };
	struct jobq_err		 err;
	long			 deadline = jobq_now_ms() + CONFIRM_WAIT;
	int			 returned = 0, rc = -1;

	for (;;) {
		if (jobq_amqp_next(s->amqp, (int)(deadline - jobq_now_ms()),
		    &ev, &err) == -1) {
			broker_lost(s, &err);
			return -2;
		}
		/* A return for an earlier job that timed out is not ours. */
		if (ev.kind == JOBQ_EV_RETURN && strcmp(ev.message_id, id) == 0)
			returned = 1;
		else if ((ev.kind == JOBQ_EV_ACK || ev.kind == JOBQ_EV_NACK) &&
		    (ev.tag == seq || (ev.multiple && ev.tag > seq)))
			break;
		else if (ev.kind == JOBQ_EV_NONE && jobq_now_ms() >= deadline) {
			fail(res, 503, "broker did not confirm the job");
			goto out;
		}
	}
	if (ev.kind == JOBQ_EV_NACK)
		fail(res, 503, "broker refused the job; try again");
	else if (returned)
		fail(res, 503, "no queue takes jobs from exchange %s",
		    s->cfg.exchange);
	else
		rc = 0;
out:
	jobq_event_clear(&ev);
	return rc;
}

static int
type_is(const char *ct, const char *type)
{
	size_t	 n = strlen(type);

	return strncasecmp(ct, type, n) == 0 &&
	    (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/*
 * Whether a body of this Content-Type may be read as a job document:
 * none, JSON, or the form type that "curl -d" sends by default.
 */
static int
is_json_type(const char *ct)
{
	return ct[0] == '\0' || type_is(ct, "application/json") ||
	    type_is(ct, "application/x-www-form-urlencoded");
}

/*
 * Publish a job and wait for its confirm.  A connection kept from an
 * earlier request may have died since; then the job is published once
 * more on a new one, which may be to another broker of the list.  The
 * first publish may have reached the queue, but the job keeps its id,
 * so a second copy runs again and leaves one row.
 */
static int
publish(struct server *s, const struct jobq_job *job, const char *msg,
    struct response *res)
{
	struct jobq_err	 err;
	int		 kept, tries, rc;

	for (tries = 0; tries < 2; tries++) {
		kept = s->amqp != NULL;
		if (broker(s, res) == -1)
			return -1;
		if (jobq_amqp_publish(s->amqp, s->cfg.exchange, job->type, 1,
		    job->id, job->type, job->trace, msg, strlen(msg),
		    &err) == -1) {
			broker_lost(s, &err);
			rc = -2;
		} else
			rc = confirm(s, s->next_seq++, job->id, res);
		if (rc != -2)
			return rc;
		if (!kept)
			break;
	}
	fail(res, 503, "broker unavailable");
	return -1;
}

/* POST /job: check the document, publish it, and wait for the confirm. */
static void
post_job(struct server *s, const struct jobq_http_req *req,
    const char *body, size_t len, struct response *res)
{
	struct jobq_job	 job;
	struct jobq_err	 err;
	json_object	*doc, *o;
	char		*msg;
	int		 rc;

	if (!is_json_type(req->content_type)) {
		fail(res, 415, "a job must be sent as application/json, not "
		    "%.64s", req->content_type);
		return;
	}
	if (jobq_json_parse(body, len, s->cfg.max_size, &doc, &err) == -1) {
		fail(res, 400, "%s", err.msg);
		return;
	}
	rc = jobq_job_from_doc(doc, &job, &err);
	json_object_put(doc);
	if (rc == -1) {
		fail(res, 400, "%s", err.msg);
		return;
	}
	jobq_trace_new(job.trace, req->trace);
	if ((msg = jobq_job_encode(&job)) == NULL) {
		fail(res, 503, "out of memory");
		goto out;
	}
	rc = publish(s, &job, msg, res);
	free(msg);
	if (rc == -1)
		goto out;
	/* The job is in; that it is queued is news, and may be lost. */
	if (s->queued) {
		if (jobq_amqp_say_queued(s->amqp, &s->cfg, &job, &err) == -1)
			broker_lost(s, &err);
		else
			s->next_seq++;
	}
	o = json_object_new_object();
	json_object_object_add(o, "id", json_object_new_string(job.id));
	res->status = 202;
	res->body = json_body(o);
	snprintf(res->extra, sizeof(res->extra), "Location: %s/job/%s\r\n",
	    s->base, job.id);
out:
	jobq_job_clear(&job);
}

/* GET /job/ID: the stored row. */
static void
get_job(struct server *s, const char *id, struct response *res)
{
	char		 ids[1][JOBQ_UUID_LEN + 1];
	json_object	*row;
	struct jobq_err	 err;
	int		 rc;

	if (jobq_uuid_canon(id, ids[0]) == -1) {
		fail(res, 400, "not a job id (a UUID): %.64s", id);
		res->close = 0;
		return;
	}
	if (database(s, res) == -1)
		return;
	rc = jobq_db_fetch(s->db, ids, 1, &row, &err);
	/* A connection kept from an earlier request may have died since. */
	if (rc == -1 && PQstatus(s->db) != CONNECTION_OK) {
		jobq_log(JOBQ_WARN, "database connection lost", "err=%s",
		    jobq_q(err.msg));
		if (database(s, res) == -1)
			return;
		rc = jobq_db_fetch(s->db, ids, 1, &row, &err);
	}
	if (rc == -1) {
		jobq_log(JOBQ_ERROR, "database query failed", "err=%s",
		    jobq_q(err.msg));
		fail(res, 503, "database unavailable");
		return;
	}
	if (row == NULL) {
		fail(res, 404, "no result stored for job %s", ids[0]);
		return;
	}
	res->status = 200;
	res->body = json_body(row);
}

/*
 * Connections kept from an earlier request may have died since: try
 * each, and forget one that does not answer, so that it is opened
 * again on its next use.
 */
static void
revive(struct server *s)
{
	struct jobq_err	 err;
	PGresult	*r;
	long		 messages, consumers;

	if (s->amqp != NULL && jobq_amqp_depth(s->amqp, s->cfg.job_queue,
	    &messages, &consumers, &err) == -1)
		broker_lost(s, &err);
	if (s->db != NULL && PQstatus(s->db) == CONNECTION_OK) {
		r = PQexec(s->db, "SELECT 1");
		if (PQresultStatus(r) != PGRES_TUPLES_OK &&
		    PQstatus(s->db) != CONNECTION_OK)
			jobq_log(JOBQ_WARN, "database connection lost",
			    "err=%s", jobq_q(PQerrorMessage(s->db)));
		PQclear(r);
	}
}

/* GET /healthz: whether the broker and the database answer. */
static void
healthz(struct server *s, struct response *res)
{
	struct response	 probe = { 0 };
	json_object	*o = json_object_new_object();
	PGresult	*r;
	int		 broker_ok, db_ok;

	revive(s);
	broker_ok = broker(s, &probe) == 0;
	free(probe.body);
	probe.body = NULL;
	db_ok = database(s, &probe) == 0;
	free(probe.body);
	if (db_ok) {
		r = PQexec(s->db, "SELECT 1");
		db_ok = PQresultStatus(r) == PGRES_TUPLES_OK;
		PQclear(r);
	}
	json_object_object_add(o, "broker",
	    json_object_new_string(broker_ok ? "ok" : "unavailable"));
	json_object_object_add(o, "database",
	    json_object_new_string(db_ok ? "ok" : "unavailable"));
	if (!broker_ok || !db_ok)
		json_object_object_add(o, "error", json_object_new_string(
		    !broker_ok && !db_ok ? "broker and database unavailable" :
		    !broker_ok ? "broker unavailable" :
		    "database unavailable"));
	res->status = broker_ok && db_ok ? 200 : 503;
	res->body = json_body(o);
}

/* A label value, escaped as the text format wants. */
static void
put_label(FILE *f, const char *v)
{
	for (; *v != '\0'; v++)
		if (*v == '\\' || *v == '"')
			fprintf(f, "\\%c", *v);
		else if (*v == '\n')
			fputs("\\n", f);
		else
			fputc(*v, f);
}

/* The depth of a queue into f, its consumers into c. */
static void
queue_metrics(FILE *f, FILE *c, struct server *s, const char *queue,
    struct jobq_err *err, int *ok)
{
	long	 messages, consumers;

	if (!*ok || jobq_amqp_depth(s->amqp, queue, &messages, &consumers,
	    err) == -1) {
		*ok = 0;
		return;
	}
	fputs("jobq_queue_messages{queue=\"", f);
	put_label(f, queue);
	fprintf(f, "\"} %ld\n", messages);
	fputs("jobq_queue_consumers{queue=\"", c);
	put_label(c, queue);
	fprintf(c, "\"} %ld\n", consumers);
}

static void
job_metrics(FILE *f, const struct jobq_rates *rates,
    const struct jobq_stats *st)
{
	int	 i;

	fprintf(f, "# HELP jobq_jobs Rows in the jobs table by status.\n"
	    "# TYPE jobq_jobs gauge\n");
	for (i = 0; i < JOBQ_STATUSES; i++)
		fprintf(f, "jobq_jobs{status=\"%s\"} %lld\n",
		    jobq_statuses[i], rates->by_status[i]);
	fprintf(f, "# HELP jobq_job_latency_seconds From submitted to "
	    "finished, of the jobs that finished in the last %d s.\n"
	    "# TYPE jobq_job_latency_seconds histogram\n", LATENCY_WINDOW);
	for (i = 0; i < JOBQ_BUCKETS; i++)
		fprintf(f, "jobq_job_latency_seconds_bucket{le=\"%g\"} %lld\n",
		    jobq_buckets[i], st->le[i]);
	fprintf(f, "jobq_job_latency_seconds_bucket{le=\"+Inf\"} %lld\n"
	    "jobq_job_latency_seconds_sum %.6f\n"
	    "jobq_job_latency_seconds_count %lld\n", st->count, st->sum,
	    st->count);
}

/* GET /metrics: the Prometheus text format, version 0.0.4. */
static void
metrics(struct server *s, struct response *res)
{
	struct jobq_rates	 rates;
	struct jobq_stats	 st;
	struct jobq_err		 err;
	char			*text = NULL, *ctext = NULL;
	size_t			 len = 0, clen = 0;
	FILE			*f, *c;
	int			 ok = 1;

	revive(s);
	if (broker(s, res) == -1 || database(s, res) == -1)
		return;
	if (jobq_db_rates(s->db, RATE_WINDOW, &rates, &err) == -1 ||
	    jobq_db_stats(s->db, LATENCY_WINDOW, &st, &err) == -1) {
		jobq_log(JOBQ_ERROR, "database query failed", "err=%s",
		    jobq_q(err.msg));
		fail(res, 503, "database unavailable");
		return;
	}
	if ((f = open_memstream(&text, &len)) == NULL ||
	    (c = open_memstream(&ctext, &clen)) == NULL) {
		if (f != NULL)
			fclose(f);
		free(text);
		fail(res, 503, "out of memory");
		return;
	}
	fprintf(f, "# HELP jobq_queue_messages Messages ready on a queue.\n"
	    "# TYPE jobq_queue_messages gauge\n");
	fprintf(c, "# HELP jobq_queue_consumers Consumers of a queue.\n"
	    "# TYPE jobq_queue_consumers gauge\n");
	queue_metrics(f, c, s, s->cfg.job_queue, &err, &ok);
	queue_metrics(f, c, s, s->cfg.result_queue, &err, &ok);
	if (fclose(c) != 0)
		ok = 0;
	else
		fputs(ctext, f);
	free(ctext);
	job_metrics(f, &rates, &st);
	if (fclose(f) != 0 || !ok) {
		free(text);
		if (!ok)
			broker_lost(s, &err);
		fail(res, 503, "broker unavailable");
		return;
	}
	res->status = 200;
	res->type = "text/plain; version=0.0.4";
	res->body = text;
}

/* Add a row that jobq_db_list() found to an array. */
static void
add_row(json_object *row, void *array)
{
	json_object_array_add(array, row);
}

/* The queues' part of the overview; 0, or -1 when the broker failed. */
static int
overview_queues(struct server *s, json_object *o)
{
	const char	*names[] = { s->cfg.job_queue, s->cfg.result_queue,
			    s->cfg.dead_queue };
	struct jobq_err	 err;
	json_object	*qs, *q;
	long		 ready, consumers;
	size_t		 i;

	qs = json_object_new_array();
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (jobq_amqp_depth(s->amqp, names[i], &ready, &consumers,
		    &err) == -1) {
			broker_lost(s, &err);
			json_object_put(qs);
			return -1;
		}
		q = json_object_new_object();
		json_object_object_add(q, "name",
		    json_object_new_string(names[i]));
		json_object_object_add(q, "ready",
		    json_object_new_int64(ready));
		json_object_object_add(q, "consumers",
		    json_object_new_int64(consumers));
		json_object_array_add(qs, q);
	}
	json_object_object_add(o, "queues", qs);
	return 0;
}

/* The table's part of the overview; 0, or -1 when a query failed. */
static int
overview_jobs(struct server *s, json_object *o)
{
	struct jobq_rates	 rates;
	struct jobq_stats	 st;
	struct jobq_err		 err;
	json_object		*js, *j, *lat, *bs, *b, *series, *fails;
	char			 le[32];
	int			 i;

	if (jobq_db_rates(s->db, RATE_WINDOW, &rates, &err) == -1 ||
	    jobq_db_stats(s->db, LATENCY_WINDOW, &st, &err) == -1 ||
	    (series = jobq_db_series(s->db, SERIES_WINDOW, SERIES_STEP,
	    &err)) == NULL) {
		jobq_log(JOBQ_ERROR, "database query failed", "err=%s",
		    jobq_q(err.msg));
		return -1;
	}
	fails = json_object_new_array();
	if (jobq_db_list(s->db, "failed", NULL, 0, FAILURES_SHOWN, add_row,
	    fails, &err) == -1) {
		jobq_log(JOBQ_ERROR, "database query failed", "err=%s",
		    jobq_q(err.msg));
		json_object_put(series);
		json_object_put(fails);
		return -1;
	}
	js = json_object_new_object();
	for (i = 0; i < JOBQ_STATUSES; i++) {
		j = json_object_new_object();
		json_object_object_add(j, "jobs",
		    json_object_new_int64(rates.by_status[i]));
		json_object_object_add(j, "last_minute",
		    json_object_new_int64(rates.recent[i]));
		json_object_object_add(js, jobq_statuses[i], j);
	}
	lat = json_object_new_object();
	bs = json_object_new_array();
	for (i = 0; i < JOBQ_BUCKETS; i++) {
		/* As written, not 0.0050000000000000001. */
		snprintf(le, sizeof(le), "%g", jobq_buckets[i]);
		b = json_object_new_object();
		json_object_object_add(b, "le",
		    json_object_new_double_s(jobq_buckets[i], le));
		json_object_object_add(b, "count",
		    json_object_new_int64(st.le[i]));
		json_object_array_add(bs, b);
	}
	json_object_object_add(lat, "count", json_object_new_int64(st.count));
	json_object_object_add(lat, "sum", json_object_new_double(st.sum));
	json_object_object_add(lat, "buckets", bs);
	json_object_object_add(o, "jobs", js);
	json_object_object_add(o, "latency", lat);
	json_object_object_add(o, "throughput", series);
	json_object_object_add(o, "failures", fails);
	return 0;
}

/*
 * GET /api/overview: what the dashboard shows, in one answer.  A part
 * whose server is away is null, and said to be so; the rest is there.
 */
static void
overview(struct server *s, struct response *res)
{
	struct response	 probe = { 0 };
	json_object	*o = json_object_new_object();
	int		 broker_ok, db_ok;

	revive(s);
	json_object_object_add(o, "now",
	    json_object_new_int64(jobq_wall_ms() / 1000));
	broker_ok = broker(s, &probe) == 0 && overview_queues(s, o) == 0;
	free(probe.body);
	probe.body = NULL;
	db_ok = database(s, &probe) == 0 && overview_jobs(s, o) == 0;
	free(probe.body);
	json_object_object_add(o, "broker",
	    json_object_new_string(broker_ok ? "ok" : "unavailable"));
	json_object_object_add(o, "database",
	    json_object_new_string(db_ok ? "ok" : "unavailable"));
	json_object_object_add(o, "broker_error", broker_ok ? NULL :
	    json_object_new_string("broker unavailable"));
	json_object_object_add(o, "database_error", db_ok ? NULL :
	    json_object_new_string("database unavailable"));
	res->status = 200;
	res->body = json_body(o);
}

/* GET /: the dashboard, a page that carries no data of its own. */
static void
dashboard(struct response *res)
{
	res->status = 200;
	res->type = "text/html; charset=utf-8";
	strcpy(res->extra, "Cache-Control: no-cache\r\n"
	    "X-Content-Type-Options: nosniff\r\n"
	    "Content-Security-Policy: default-src 'self'; "
	    "script-src 'unsafe-inline'; style-src 'unsafe-inline'\r\n");
	if ((res->body = strdup(dashboard_html)) == NULL)
		fail(res, 503, "out of memory");
}

/* Whether a path carries data, and so needs the token when one is set. */
static int
guarded(const char *target)
{
	size_t	 n = strcspn(target, "?");

	return (n == 4 && strncmp(target, "/job", 4) == 0) ||
	    strncmp(target, "/job/", 5) == 0 ||
	    (n == 8 && strncmp(target, "/metrics", 8) == 0) ||
	    (n == 13 && strncmp(target, "/api/overview", 13) == 0);
}

static int
authorized(const struct server *s, const struct jobq_http_req *req)
{
	const char	*given = req->authorization;

	if (s->token == NULL || !guarded(req->target))
		return 1;
	if (strncasecmp(given, "Bearer ", 7) != 0)
		return 0;
	return jobq_secret_equal(given + 7, s->token);
}

static int
is_read(const char *method)
{
	return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
}

/* Send the request to its route. */
static void
route(struct server *s, const struct jobq_http_req *req, const char *body,
    size_t len, struct response *res)
{
	char	 path[sizeof(req->target)];

	snprintf(path, sizeof(path), "%s", req->target);
	path[strcspn(path, "?")] = '\0';
	if (strcmp(path, "/healthz") == 0) {
		if (!is_read(req->method)) {
			strcpy(res->extra, "Allow: GET, HEAD\r\n");
			fail(res, 405, "use GET");
		} else
			healthz(s, res);
		return;
	}
	if (strcmp(path, "/") == 0) {
		if (!is_read(req->method)) {
			strcpy(res->extra, "Allow: GET, HEAD\r\n");
			fail(res, 405, "use GET");
		} else
			dashboard(res);
		return;
	}
	if (strcmp(path, "/job") != 0 && strncmp(path, "/job/", 5) != 0 &&
	    strcmp(path, "/metrics") != 0 &&
	    strcmp(path, "/api/overview") != 0) {
		fail(res, 404, "no such resource: %.64s", path);
		return;
	}
	if (!authorized(s, req)) {
		strcpy(res->extra, "WWW-Authenticate: Bearer\r\n");
		fail(res, 401, "a valid bearer token is needed");
		return;
	}
	if (strcmp(path, "/metrics") == 0 ||
	    strcmp(path, "/api/overview") == 0) {
		if (!is_read(req->method)) {
			strcpy(res->extra, "Allow: GET, HEAD\r\n");
			fail(res, 405, "use GET");
		} else if (path[1] == 'm')
			metrics(s, res);
		else
			overview(s, res);
		return;
	}
	if (strcmp(path, "/job") == 0 && strcmp(req->method, "POST") == 0)
		post_job(s, req, body, len, res);
	else if (strcmp(path, "/job") == 0) {
		strcpy(res->extra, "Allow: POST\r\n");
		fail(res, 405, "use POST");
	} else if (!is_read(req->method)) {
		strcpy(res->extra, "Allow: GET, HEAD\r\n");
		fail(res, 405, "use GET");
	} else
		get_job(s, path + 5, res);
}

static void
access_log(const struct server *s, const struct jobq_http_req *req,
    int status, size_t bytes, long start)
{
	jobq_log(JOBQ_INFO, "request", "method=%s path=%s status=%d bytes=%zu "
	    "ms=%ld remote=%s", req->method[0] != '\0' ? req->method : "-",
	    jobq_q(req->target[0] != '\0' ? req->target : "-"), status,
	    bytes, jobq_now_ms() - start,
	    s->remote[0] != '\0' ? s->remote : "-");
}

/* Serve one request of a connection; 0 when the connection must end. */
static int
serve_one(struct server *s)
{
	struct jobq_http_req	 req;
	struct response		 res = { 0, "application/json", NULL, "", 0 };
	struct jobq_err		 err;
	char			*body = NULL;
	size_t			 len = 0, used = 0, bytes;
	long			 head;

	memset(&req, 0, sizeof(req));
	if ((head = read_head(s, &res)) == 0)
		return 0;
	if (head > 0 && jobq_http_parse_head(s->in, (size_t)head,
	    s->max_headers, &req, &err) == -1)
		fail(&res, err.code, "%s", err.msg);
	else if (head > 0 && !authorized(s, &req)) {
		/* Refused before its body is read, which then ends it. */
		strcpy(res.extra, "WWW-Authenticate: Bearer\r\n");
		fail(&res, 401, "a valid bearer token is needed");
		if (req.chunked || req.content_length > 0)
			res.close = 1;
		used = (size_t)head;
	} else if (head > 0 && read_body(s, &req, (size_t)head, &body, &len,
	    &used, &res) == 0)
		route(s, &req, body, len, &res);
	if (!req.keep_alive)
		res.close = 1;
	bytes = respond(s, &res, strcmp(req.method, "HEAD") == 0);
	access_log(s, &req, res.status, bytes, s->req_start);
	free(body);
	free(res.body);
	if (res.close)
		return 0;
	consume(s, used);
	return 1;
}

/* CGI: the web server parsed the request; the body is on stdin. */
static void
serve_cgi(struct server *s)
{
	struct jobq_http_req	 req;
	struct response		 res = { 0, "application/json", NULL, "", 1 };
	struct jobq_err		 err;
	const char		*v;
	char			*body = NULL;
	size_t			 len = 0, used;
	long			 cl = 0;

	memset(&req, 0, sizeof(req));
	req.content_length = -1;
	s->req_start = jobq_now_ms();
	snprintf(req.method, sizeof(req.method), "%s",
	    (v = getenv("REQUEST_METHOD")) != NULL ? v : "GET");
	snprintf(req.target, sizeof(req.target), "%s",
	    (v = getenv("PATH_INFO")) != NULL && *v != '\0' ? v : "/");
	snprintf(req.content_type, sizeof(req.content_type), "%s",
	    (v = getenv("CONTENT_TYPE")) != NULL ? v : "");
	snprintf(req.authorization, sizeof(req.authorization), "%s",
	    (v = getenv("HTTP_AUTHORIZATION")) != NULL ? v : "");
	if (jobq_trace_valid(v = getenv("HTTP_TRACEPARENT")))
		strcpy(req.trace, v);
	if ((v = getenv("CONTENT_LENGTH")) != NULL && *v != '\0' &&
	    jobq_parse_long(v, 0, 1L << 40, &cl) == -1)
		fail(&res, 400, "bad CONTENT_LENGTH");
	else {
		req.content_length = cl;
		if (read_body(s, &req, 0, &body, &len, &used, &res) == 0)
			route(s, &req, body, len, &res);
	}
	(void)err;
	access_log(s, &req, res.status, respond(s, &res,
	    strcmp(req.method, "HEAD") == 0), s->req_start);
	free(body);
	free(res.body);
}

/* Where the client is, as the super-server or web server tells it. */
static void
find_remote(struct server *s)
{
	struct sockaddr_storage	 ss;
	socklen_t		 n = sizeof(ss);
	const char		*v;

	if ((v = getenv("TCPREMOTEIP")) != NULL ||
	    (v = getenv("REMOTE_ADDR")) != NULL ||
	    (v = getenv("SOCAT_PEERADDR")) != NULL) {
		snprintf(s->remote, sizeof(s->remote), "%s", v);
		return;
	}
	if (getpeername(STDIN_FILENO, (struct sockaddr *)&ss, &n) == -1)
		return;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr,
		    s->remote, sizeof(s->remote));
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
		    s->remote, sizeof(s->remote));
}

/* Whether stderr is the client's socket, where no log line may go. */
static int
stderr_is_client(void)
{
	struct stat	 out, err;

	return fstat(STDOUT_FILENO, &out) == 0 &&
	    fstat(STDERR_FILENO, &err) == 0 && S_ISSOCK(out.st_mode) &&
	    out.st_dev == err.st_dev && out.st_ino == err.st_ino;
}

static char *
read_token(const char *path, struct jobq_err *err)
{
	char	 line[1024];
	FILE	*f;

	if ((f = fopen(path, "r")) == NULL) {
		jobq_errf(err, EX_NOINPUT, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fgets(line, sizeof(line), f) == NULL)
		line[0] = '\0';
	fclose(f);
	line[strcspn(line, "\r\n")] = '\0';
	if (line[0] == '\0') {
		jobq_errf(err, EX_DATAERR, "%s: no token in it", path);
		return NULL;
	}
	return strdup(line);
}

static void
options(struct server *s, int argc, char *argv[], const char **log)
{
	static const struct option longopts[] = {
		{ "database",	required_argument,	NULL, 'd' },
		{ "max-head",	required_argument,	NULL, 'H' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "idle",	required_argument,	NULL, 'i' },
		{ "log",	required_argument,	NULL, 'L' },
		{ "max-headers", required_argument,	NULL, 'n' },
		{ "queued",	no_argument,		NULL, 'Q' },
		{ "queue",	required_argument,	NULL, 'q' },
		{ "result-queue", required_argument,	NULL, 'r' },
		{ "max-size",	required_argument,	NULL, 'S' },
		{ "token-file",	required_argument,	NULL, 'T' },
		{ "timeout",	required_argument,	NULL, 't' },
		{ "amqp-url",	required_argument,	NULL, 'u' },
		{ "version",	no_argument,		NULL, 'V' },
		{ "exchange",	required_argument,	NULL, 'x' },
		{ NULL,		0,			NULL, 0 }
	};
	struct jobq_err	 err;
	const char	*tokfile = NULL;
	long		 v;
	int		 c;

	while ((c = getopt_long(argc, argv, "d:H:hi:L:n:Qq:r:S:T:t:u:Vx:",
	    longopts, NULL)) != -1)
		switch (c) {
		case 'Q':
			s->queued = 1;
			break;
		case 'H':
			if (jobq_opt_number(c, optarg, 256, 1048576, "bytes",
			    &v, &err) == -1)
				bad_option(&err);
			s->max_head = (size_t)v;
			break;
		case 'i':
			if (jobq_opt_number(c, optarg, 1, 3600, "seconds", &v,
			    &err) == -1)
				bad_option(&err);
			s->idle_s = (int)v;
			break;
		case 'L':
			*log = optarg;
			break;
		case 'n':
			if (jobq_opt_number(c, optarg, 1, 10000, NULL, &v,
			    &err) == -1)
				bad_option(&err);
			s->max_headers = (int)v;
			break;
		case 'T':
			tokfile = optarg;
			break;
		case 't':
			if (jobq_opt_number(c, optarg, 1, 3600, "seconds", &v,
			    &err) == -1)
				bad_option(&err);
			s->read_s = (int)v;
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
	if (tokfile != NULL && (s->token = read_token(tokfile, &err)) == NULL) {
		fprintf(stderr, "%s: %s\n", progname, err.msg);
		exit(err.code);
	}
}

int
main(int argc, char *argv[])
{
	static struct server	 s;
	struct jobq_err		 err;
	const char		*log = NULL, *tok;

	jobq_log_init(progname);
	jobq_config_init(&s.cfg);
	s.max_head = 8192;
	s.max_headers = 100;
	s.idle_s = 5;
	s.read_s = 10;
	if ((tok = getenv("JOBQ_HTTP_TOKEN")) != NULL && *tok != '\0')
		s.token = strdup(tok);
	options(&s, argc, argv, &log);
	if (jobq_config_check(&s.cfg, &err) == -1 ||
	    jobq_amqp_urls_check(&s.cfg, &err) == -1) {
		fprintf(stderr, "%s: %s\n", progname, err.msg);
		return err.code;
	}
	if (log == NULL && stderr_is_client())
		log = "syslog";
	if (jobq_log_open(log, &err) == -1) {
		fprintf(stderr, "%s: %s\n", progname, err.msg);
		return err.code;
	}
	signal(SIGPIPE, SIG_IGN);
	s.cgi = (tok = getenv("GATEWAY_INTERFACE")) != NULL && *tok != '\0';
	if (s.cgi && (tok = getenv("SCRIPT_NAME")) != NULL)
		snprintf(s.base, sizeof(s.base), "%s", tok);
	find_remote(&s);
	if (s.cgi)
		serve_cgi(&s);
	else
		while (serve_one(&s))
			;
	jobq_amqp_close(s.amqp);
	PQfinish(s.db);
	free(s.in);
	free(s.token);
	return 0;
}
