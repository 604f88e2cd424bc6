/*
 * amqp.c: the broker side of jobq.
 *
 * A connection uses channel 1 only; most tools need one connection.
 * The topology is declared by every tool that connects, so that no
 * start-up order can lose a message to a missing queue.
 * jobq_amqp_next() is the one place that reads frames: consumers and
 * publishers with confirms share it, so that deliveries and confirms
 * can arrive interleaved on one channel.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/ssl.h>

#include "jobq.h"

#define CHANNEL		1
#define HEARTBEAT	30
#define CONNECT_TIMEOUT	10
#define MOVE_BATCH	256	/* jobs handed back per confirm */
#define MOVE_WAIT_MS	10000	/* for confirms, and for RPC replies */

static char	consumer_tag[64];

/* Turn a failed RPC reply into an error that says what was being done. */
static int
reply_err(amqp_rpc_reply_t r, const char *what, struct jobq_err *err)
{
	switch (r.reply_type) {
	case AMQP_RESPONSE_NORMAL:
		return 0;
	case AMQP_RESPONSE_NONE:
		return jobq_errf(err, EX_UNAVAILABLE, "%s: no reply from "
		    "the broker", what);
	case AMQP_RESPONSE_LIBRARY_EXCEPTION:
		return jobq_errf(err, EX_UNAVAILABLE, "%s: %s", what,
		    amqp_error_string2(r.library_error));
	case AMQP_RESPONSE_SERVER_EXCEPTION:
		break;
	}
	if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
		amqp_connection_close_t *c = r.reply.decoded;

		return jobq_errf(err, EX_UNAVAILABLE, "%s: broker closed the "
		    "connection: %u %.*s", what, c->reply_code,
		    (int)c->reply_text.len, (char *)c->reply_text.bytes);
	}
	if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
		amqp_channel_close_t *c = r.reply.decoded;

		return jobq_errf(err, EX_UNAVAILABLE, "%s: broker closed the "
		    "channel: %u %.*s", what, c->reply_code,
		    (int)c->reply_text.len, (char *)c->reply_text.bytes);
	}
	return jobq_errf(err, EX_UNAVAILABLE, "%s: unexpected reply 0x%08x "
	    "from the broker", what, r.reply.id);
}

/*
 * Parse url into ci, whose strings point into *copy (free() it, also
 * on failure); refuse what this library cannot use.  masked is the URL
 * without its password, for messages.
 */
static int
parse_url(const char *url, const char *masked, char **copy,
    struct amqp_connection_info *ci, struct jobq_err *err)
{
	if ((*copy = strdup(url)) == NULL)
		return jobq_errf(err, EX_OSERR, "out of memory");
	amqp_default_connection_info(ci);
	if (amqp_parse_url(*copy, ci) != AMQP_STATUS_OK)
		return jobq_errf(err, EX_USAGE, "%s: not an amqp:// or "
		    "amqps:// URL", masked);
	/* "amqp://host/" names the vhost "", which no broker has. */
	if (*ci->vhost == '\0')
		ci->vhost = "/";
	return 0;
}

/*
 * Check that url is an amqp:// URL this library can use, without
 * connecting, so that a tool can refuse a bad one at start.
 */
int
jobq_amqp_url_check(const char *url, struct jobq_err *err)
{
	struct amqp_connection_info	 ci;
	char				*copy, masked[512];
	int				 rc;

	jobq_mask_secret(url, masked, sizeof(masked));
	rc = parse_url(url, masked, &copy, &ci, err);
	free(copy);
	return rc;
}

/* Check every broker URL of a configuration; see jobq_amqp_url_check(). */
int
jobq_amqp_urls_check(const struct jobq_config *cfg, struct jobq_err *err)
{
	int	 i;

	for (i = 0; i < cfg->n_urls; i++)
		if (jobq_amqp_url_check(cfg->amqp_urls[i], err) == -1)
			return -1;
	return 0;
}

/*
 * Connect to the first broker of the configuration that answers,
 * trying each once, from the one that answered last time.  On failure
 * the error is that of the last URL tried, or EX_USAGE or EX_CONFIG
 * at once for a URL or a TLS file that can never work.
 */
amqp_connection_state_t
jobq_amqp_connect(struct jobq_config *cfg, const char *name,
    struct jobq_err *err)
{
	amqp_connection_state_t	 conn;
	int			 i, k;

	for (i = 0; i < cfg->n_urls; i++) {
		k = (cfg->url_turn + i) % cfg->n_urls;
		if ((conn = jobq_amqp_open(cfg->amqp_urls[k], name,
		    err)) != NULL) {
			cfg->url_turn = k;
			return conn;
		}
		if (err != NULL && (err->code == EX_USAGE ||
		    err->code == EX_CONFIG))
			return NULL;
	}
	return NULL;
}

/*
 * A TLS socket for an amqps:// URL.  The broker's certificate must name
 * the host of the URL and be signed by a CA of the file that
 * JOBQ_AMQP_CACERT names, or else of the system's store;
 * JOBQ_AMQP_CERT and JOBQ_AMQP_KEY name a client certificate and its
 * key, for a broker that asks for one.  NULL with EX_CONFIG when a file
 * is unusable.
 */
static amqp_socket_t *
tls_socket(amqp_connection_state_t conn, struct jobq_err *err)
{
	amqp_socket_t	*sock;
	const char	*ca = getenv("JOBQ_AMQP_CACERT");
	const char	*cert = getenv("JOBQ_AMQP_CERT");
	const char	*key = getenv("JOBQ_AMQP_KEY");

	if (ca != NULL && *ca == '\0')
		ca = NULL;
	if (cert != NULL && *cert == '\0')
		cert = NULL;
	if (key != NULL && *key == '\0')
		key = NULL;
	if ((cert == NULL) != (key == NULL)) {
		jobq_errf(err, EX_CONFIG, "JOBQ_AMQP_CERT and JOBQ_AMQP_KEY "
		    "go together: set both or neither");
		return NULL;
	}
	if ((sock = amqp_ssl_socket_new(conn)) == NULL) {
		jobq_errf(err, EX_OSERR, "out of memory");
		return NULL;
	}
	amqp_ssl_socket_set_verify_peer(sock, 1);
	amqp_ssl_socket_set_verify_hostname(sock, 1);
	if (ca != NULL ? amqp_ssl_socket_set_cacert(sock, ca) !=
	    AMQP_STATUS_OK : SSL_CTX_set_default_verify_paths(
	    amqp_ssl_socket_get_context(sock)) != 1) {
		jobq_errf(err, EX_CONFIG, "JOBQ_AMQP_CACERT %s: cannot read "
		    "CA certificates from it", ca != NULL ? ca :
		    "(unset)");
		return NULL;
	}
	if (cert != NULL && amqp_ssl_socket_set_key(sock, cert, key) !=
	    AMQP_STATUS_OK) {
		jobq_errf(err, EX_CONFIG, "JOBQ_AMQP_CERT %s, JOBQ_AMQP_KEY "
		    "%s: not a certificate and its key", cert, key);
		return NULL;
	}
	return sock;
}

/*
 * Connect to the broker at url, log in and open channel 1.  name shows
 * in the broker's list of connections.  NULL on failure.
 */
amqp_connection_state_t
jobq_amqp_open(const char *url, const char *name, struct jobq_err *err)
{
	struct amqp_connection_info	 ci;
	amqp_connection_state_t		 conn = NULL;
	amqp_socket_t			*sock;
	amqp_table_entry_t		 prop;
	amqp_table_t			 props = { 1, &prop };
	struct timeval			 tv = { CONNECT_TIMEOUT, 0 };
	char				*copy, masked[512];
	int				 rc, fd;

	jobq_mask_secret(url, masked, sizeof(masked));
	if (parse_url(url, masked, &copy, &ci, err) == -1)
		goto fail;
	if ((conn = amqp_new_connection()) == NULL) {
		jobq_errf(err, EX_OSERR, "out of memory");
		goto fail;
	}
	if (ci.ssl)
		sock = tls_socket(conn, err);
	else if ((sock = amqp_tcp_socket_new(conn)) == NULL)
		jobq_errf(err, EX_OSERR, "out of memory");
	if (sock == NULL)
		goto fail;
	if ((rc = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv)) !=
	    AMQP_STATUS_OK) {
		jobq_errf(err, EX_UNAVAILABLE, "broker %s: cannot connect: "
		    "%s", masked, amqp_error_string2(rc));
		goto fail;
	}
	prop.key = amqp_cstring_bytes("connection_name");
	prop.value.kind = AMQP_FIELD_KIND_UTF8;
	prop.value.value.bytes = amqp_cstring_bytes(name);
	if (reply_err(amqp_login_with_properties(conn, ci.vhost, 0,
	    AMQP_DEFAULT_FRAME_SIZE, HEARTBEAT, &props,
	    AMQP_SASL_METHOD_PLAIN, ci.user, ci.password), "log in",
	    err) == -1)
		goto fail;
	amqp_channel_open(conn, CHANNEL);
	if (reply_err(amqp_get_rpc_reply(conn), "open channel", err) == -1)
		goto fail;
	if ((fd = amqp_get_sockfd(conn)) >= 0)
		fcntl(fd, F_SETFD, FD_CLOEXEC);
	free(copy);
	return conn;
fail:
	if (err != NULL && err->code == EX_UNAVAILABLE &&
	    strstr(err->msg, masked) == NULL) {
		char msg[sizeof(err->msg)];

		snprintf(msg, sizeof(msg), "%s", err->msg);
		jobq_errf(err, EX_UNAVAILABLE, "broker %s: %s", masked, msg);
	}
	if (conn != NULL)
		amqp_destroy_connection(conn);
	free(copy);
	return NULL;
}

/*
 * Close the connection politely and free it; NULL is fine.  -1 when the
 * broker did not answer the close of the channel, and so may not have
 * taken the acks sent before it.
 */
int
jobq_amqp_close(amqp_connection_state_t conn)
{
	amqp_rpc_reply_t	 r;

	if (conn == NULL)
		return 0;
	r = amqp_channel_close(conn, CHANNEL, AMQP_REPLY_SUCCESS);
	amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
	return r.reply_type == AMQP_RESPONSE_NORMAL ? 0 : -1;
}

/* Declare a durable classic queue of version 2. */
static int
declare_queue(amqp_connection_state_t conn, const char *queue,
    struct jobq_err *err)
{
	struct jobq_headers	 args = { .n = 0 };
	char			 what[300];

	jobq_header_int(&args, "x-queue-version", 2);
	amqp_queue_declare(conn, CHANNEL, amqp_cstring_bytes(queue), 0, 1, 0,
	    0, jobq_headers_table(&args));
	snprintf(what, sizeof(what), "declare queue %s", queue);
	return reply_err(amqp_get_rpc_reply(conn), what, err);
}

/*
 * Declare the topology of jobq(7): a durable topic exchange bound to
 * the job queue for every routing key, and the durable job, result and
 * dead-letter queues.
 * Declaring what exists with the same arguments is harmless.
 */
int
jobq_amqp_declare(amqp_connection_state_t conn, const struct jobq_config *cfg,
    struct jobq_err *err)
{
	char	 what[600];

	amqp_exchange_declare(conn, CHANNEL, amqp_cstring_bytes(cfg->exchange),
	    amqp_cstring_bytes("topic"), 0, 1, 0, 0, amqp_empty_table);
	snprintf(what, sizeof(what), "declare exchange %s", cfg->exchange);
	if (reply_err(amqp_get_rpc_reply(conn), what, err) == -1)
		return -1;
	if (declare_queue(conn, cfg->job_queue, err) == -1 ||
	    declare_queue(conn, cfg->result_queue, err) == -1 ||
	    declare_queue(conn, cfg->dead_queue, err) == -1)
		return -1;
	amqp_queue_bind(conn, CHANNEL, amqp_cstring_bytes(cfg->job_queue),
	    amqp_cstring_bytes(cfg->exchange), amqp_cstring_bytes("#"),
	    amqp_empty_table);
	snprintf(what, sizeof(what), "bind queue %s to exchange %s",
	    cfg->job_queue, cfg->exchange);
	return reply_err(amqp_get_rpc_reply(conn), what, err);
}

/*
 * Declare the retry queue where failed jobs wait the given seconds
 * before they go back to the job queue, and put its name in name.  It
 * is a plain durable queue: jobq_amqp_move_due() hands its jobs back.
 */
int
jobq_amqp_declare_retry(amqp_connection_state_t conn,
    const struct jobq_config *cfg, int seconds, char *name, size_t size,
    struct jobq_err *err)
{
	int	 n;

	n = snprintf(name, size, "%s.delay.%ds", cfg->job_queue, seconds);
	if (n < 0 || (size_t)n >= size || n > 255)
		return jobq_errf(err, EX_USAGE, "queue %s: name too long for "
		    "a retry queue", cfg->job_queue);
	return declare_queue(conn, name, err);
}

/* Put the channel in confirm mode: publishes are numbered from 1. */
int
jobq_amqp_confirms(amqp_connection_state_t conn, struct jobq_err *err)
{
	amqp_confirm_select(conn, CHANNEL);
	return reply_err(amqp_get_rpc_reply(conn), "select confirms", err);
}

/* Consume a queue with manual acks and at most prefetch unacked. */
int
jobq_amqp_consume(amqp_connection_state_t conn, const char *queue,
    int prefetch, struct jobq_err *err)
{
	char	 what[300];

	amqp_basic_qos(conn, CHANNEL, 0, (uint16_t)prefetch, 0);
	if (reply_err(amqp_get_rpc_reply(conn), "set prefetch", err) == -1)
		return -1;
	snprintf(consumer_tag, sizeof(consumer_tag), "jobq-%ld",
	    (long)getpid());
	amqp_basic_consume(conn, CHANNEL, amqp_cstring_bytes(queue),
	    amqp_cstring_bytes(consumer_tag), 0, 0, 0, amqp_empty_table);
	snprintf(what, sizeof(what), "consume queue %s", queue);
	return reply_err(amqp_get_rpc_reply(conn), what, err);
}

/*
 * Ask the broker to stop deliveries without waiting for its answer,
 * which arrives as JOBQ_EV_CANCEL_OK after any deliveries in flight.
 */
int
jobq_amqp_cancel(amqp_connection_state_t conn, struct jobq_err *err)
{
	amqp_basic_cancel_t	 req;
	int			 rc;

	req.consumer_tag = amqp_cstring_bytes(consumer_tag);
	req.nowait = 0;
	rc = amqp_send_method(conn, CHANNEL, AMQP_BASIC_CANCEL_METHOD, &req);
	if (rc != AMQP_STATUS_OK)
		return jobq_errf(err, EX_UNAVAILABLE, "cancel consumer: %s",
		    amqp_error_string2(rc));
	return 0;
}

/*
 * Publish a persistent message as pub says.  With confirms selected,
 * the broker confirms it later under the next sequence number.
 */
int
jobq_amqp_send(amqp_connection_state_t conn, const struct jobq_pub *pub,
    const void *body, size_t len, struct jobq_err *err)
{
	amqp_basic_properties_t	 p;
	amqp_table_entry_t	 e[JOBQ_MAX_HEADERS + 1];
	amqp_bytes_t		 b;
	int			 rc, n = pub->headers.num_entries;

	memset(&p, 0, sizeof(p));
	p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG |
	    AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
	p.content_type = amqp_cstring_bytes(pub->content_type != NULL ?
	    pub->content_type : "application/json");
	p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	p.timestamp = (uint64_t)time(NULL);
	if (pub->id != NULL) {
		p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
		p.message_id = amqp_cstring_bytes(pub->id);
	}
	if (pub->type != NULL) {
		p._flags |= AMQP_BASIC_TYPE_FLAG;
		p.type = amqp_cstring_bytes(pub->type);
	}
	if (n > 0) {
		p._flags |= AMQP_BASIC_HEADERS_FLAG;
		p.headers = pub->headers;
	}
	/* The W3C's name, which tracing tools for AMQP look for. */
	if (pub->trace != NULL && *pub->trace != '\0' &&
	    n <= JOBQ_MAX_HEADERS) {
		if (n > 0)
			memcpy(e, pub->headers.entries, (size_t)n * sizeof(*e));
		e[n].key = amqp_cstring_bytes("traceparent");
		e[n].value.kind = AMQP_FIELD_KIND_UTF8;
		e[n].value.value.bytes = amqp_cstring_bytes(pub->trace);
		p._flags |= AMQP_BASIC_HEADERS_FLAG;
		p.headers.entries = e;
		p.headers.num_entries = n + 1;
	}
	b.bytes = (void *)(uintptr_t)body;
	b.len = len;
	rc = amqp_basic_publish(conn, CHANNEL,
	    amqp_cstring_bytes(pub->exchange), amqp_cstring_bytes(pub->key),
	    pub->mandatory, 0, &p, b);
	if (rc != AMQP_STATUS_OK)
		return jobq_errf(err, EX_UNAVAILABLE, "publish: %s",
		    amqp_error_string2(rc));
	return 0;
}

/*
 * Publish a persistent JSON message.  id and type go into the
 * message_id and type properties, and trace, unless NULL or empty, into
 * the header traceparent.
 */
int
jobq_amqp_publish(amqp_connection_state_t conn, const char *exchange,
    const char *key, int mandatory, const char *id, const char *type,
    const char *trace, const char *body, size_t len, struct jobq_err *err)
{
	struct jobq_pub	 pub;

	memset(&pub, 0, sizeof(pub));
	pub.exchange = exchange;
	pub.key = key;
	pub.mandatory = mandatory;
	pub.id = id;
	pub.type = type;
	pub.trace = trace;
	return jobq_amqp_send(conn, &pub, body, len, err);
}

/*
 * Publish that a job is queued, to the result queue, where the store
 * makes it the job's first row.  It is news, not a duty: not mandatory,
 * and no one needs to wait for its confirm, though with confirms
 * selected it takes a sequence number.
 */
int
jobq_amqp_say_queued(amqp_connection_state_t conn,
    const struct jobq_config *cfg, const struct jobq_job *job,
    struct jobq_err *err)
{
	struct jobq_pub	 pub;
	char		*body;
	int		 rc;

	if ((body = jobq_queued_encode(job)) == NULL)
		return jobq_errf(err, EX_OSERR, "out of memory");
	memset(&pub, 0, sizeof(pub));
	pub.exchange = "";
	pub.key = cfg->result_queue;
	pub.id = job->id;
	pub.type = job->type;
	pub.trace = job->trace;
	rc = jobq_amqp_send(conn, &pub, body, strlen(body), err);
	free(body);
	return rc;
}

/*
 * Add a header to a set being built; the strings must outlive the
 * publish.  A set that is full takes no more.
 */
void
jobq_header_str(struct jobq_headers *h, const char *key, const char *val)
{
	amqp_table_entry_t	*e;

	if (h->n == JOBQ_MAX_HEADERS)
		return;
	e = &h->e[h->n++];
	e->key = amqp_cstring_bytes(key);
	e->value.kind = AMQP_FIELD_KIND_UTF8;
	e->value.value.bytes = amqp_cstring_bytes(val);
}

void
jobq_header_int(struct jobq_headers *h, const char *key, long val)
{
	amqp_table_entry_t	*e;

	if (h->n == JOBQ_MAX_HEADERS)
		return;
	e = &h->e[h->n++];
	e->key = amqp_cstring_bytes(key);
	e->value.kind = AMQP_FIELD_KIND_I64;
	e->value.value.i64 = val;
}

amqp_table_t
jobq_headers_table(struct jobq_headers *h)
{
	amqp_table_t	 t;

	t.num_entries = h->n;
	t.entries = h->n > 0 ? h->e : NULL;
	return t;
}

static const amqp_field_value_t *
find_header(const struct jobq_event *ev, const char *key)
{
	const amqp_basic_properties_t	*p = &ev->message.properties;
	size_t				 n = strlen(key);
	int				 i;

	if (!ev->has_message || !(p->_flags & AMQP_BASIC_HEADERS_FLAG))
		return NULL;
	for (i = 0; i < p->headers.num_entries; i++) {
		const amqp_table_entry_t *e = &p->headers.entries[i];

		if (e->key.len == n && memcmp(e->key.bytes, key, n) == 0)
			return &e->value;
	}
	return NULL;
}

/*
 * Read an integer header of the message of an event, of whatever
 * integer kind another client gave it.  0 with *out set, or -1 when the
 * header is missing or not an integer.
 */
int
jobq_event_header_int(const struct jobq_event *ev, const char *key,
    long *out)
{
	const amqp_field_value_t	*v = find_header(ev, key);

	if (v == NULL)
		return -1;
	switch (v->kind) {
	case AMQP_FIELD_KIND_I8:
		*out = v->value.i8;
		return 0;
	case AMQP_FIELD_KIND_U8:
		*out = v->value.u8;
		return 0;
	case AMQP_FIELD_KIND_I16:
		*out = v->value.i16;
		return 0;
	case AMQP_FIELD_KIND_U16:
		*out = v->value.u16;
		return 0;
	case AMQP_FIELD_KIND_I32:
		*out = v->value.i32;
		return 0;
	case AMQP_FIELD_KIND_U32:
		*out = (long)v->value.u32;
		return 0;
	case AMQP_FIELD_KIND_I64:
		*out = (long)v->value.i64;
		return 0;
	case AMQP_FIELD_KIND_U64:
	case AMQP_FIELD_KIND_TIMESTAMP:
		*out = v->value.u64 > LONG_MAX ? LONG_MAX :
		    (long)v->value.u64;
		return 0;
	default:
		return -1;
	}
}

/*
 * Copy a string header of the message of an event into buf, cut to
 * fit; -1 when it is missing or not a string.
 */
int
jobq_event_header_str(const struct jobq_event *ev, const char *key,
    char *buf, size_t size)
{
	const amqp_field_value_t	*v = find_header(ev, key);

	if (v == NULL || (v->kind != AMQP_FIELD_KIND_UTF8 &&
	    v->kind != AMQP_FIELD_KIND_BYTES) || size == 0)
		return -1;
	snprintf(buf, size, "%.*s", (int)v->value.bytes.len,
	    (char *)v->value.bytes.bytes);
	return 0;
}

/* Release what the last event held. */
void
jobq_event_clear(struct jobq_event *ev)
{
	if (ev->has_message)
		amqp_destroy_message(&ev->message);
	memset(ev, 0, sizeof(*ev));
}

static int
read_content(amqp_connection_state_t conn, struct jobq_event *ev,
    struct jobq_err *err)
{
	amqp_basic_properties_t	*p;

	if (reply_err(amqp_read_message(conn, CHANNEL, &ev->message, 0),
	    "read message", err) == -1)
		return -1;
	ev->has_message = 1;
	ev->body = ev->message.body;
	p = &ev->message.properties;
	if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
		snprintf(ev->content_type, sizeof(ev->content_type), "%.*s",
		    (int)p->content_type.len, (char *)p->content_type.bytes);
	if ((p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) &&
	    p->message_id.len <= JOBQ_UUID_LEN) {
		memcpy(ev->message_id, p->message_id.bytes,
		    p->message_id.len);
		ev->message_id[p->message_id.len] = '\0';
	}
	return 0;
}

/* The broker closed the channel or the connection: say why. */
static int
closed_err(amqp_connection_state_t conn, amqp_frame_t *f,
    struct jobq_err *err)
{
	amqp_channel_close_ok_t		 chok;
	amqp_connection_close_ok_t	 cnok;
	amqp_bytes_t			 text;
	unsigned			 code;
	const char			*what;

	if (f->payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
		amqp_channel_close_t *c = f->payload.method.decoded;

		code = c->reply_code;
		text = c->reply_text;
		what = "channel";
		amqp_send_method(conn, CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD,
		    &chok);
	} else {
		amqp_connection_close_t *c = f->payload.method.decoded;

		code = c->reply_code;
		text = c->reply_text;
		what = "connection";
		amqp_send_method(conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD,
		    &cnok);
	}
	return jobq_errf(err, EX_UNAVAILABLE, "broker closed the %s: %u %.*s",
	    what, code, (int)text.len, (char *)text.bytes);
}

static int
method_event(amqp_connection_state_t conn, amqp_frame_t *f,
    struct jobq_event *ev, struct jobq_err *err)
{
	void	*m = f->payload.method.decoded;

	switch (f->payload.method.id) {
	case AMQP_BASIC_DELIVER_METHOD:
		ev->kind = JOBQ_EV_DELIVERY;
		ev->tag = ((amqp_basic_deliver_t *)m)->delivery_tag;
		ev->redelivered = ((amqp_basic_deliver_t *)m)->redelivered;
		return read_content(conn, ev, err);
	case AMQP_BASIC_ACK_METHOD:
		ev->kind = JOBQ_EV_ACK;
		ev->tag = ((amqp_basic_ack_t *)m)->delivery_tag;
		ev->multiple = ((amqp_basic_ack_t *)m)->multiple;
		return 0;
	case AMQP_BASIC_NACK_METHOD:
		ev->kind = JOBQ_EV_NACK;
		ev->tag = ((amqp_basic_nack_t *)m)->delivery_tag;
		ev->multiple = ((amqp_basic_nack_t *)m)->multiple;
		return 0;
	case AMQP_BASIC_RETURN_METHOD: {
		amqp_bytes_t k = ((amqp_basic_return_t *)m)->routing_key;

		ev->kind = JOBQ_EV_RETURN;
		snprintf(ev->routing_key, sizeof(ev->routing_key), "%.*s",
		    (int)k.len, (char *)k.bytes);
		return read_content(conn, ev, err);
	}
	case AMQP_BASIC_CANCEL_OK_METHOD:
		ev->kind = JOBQ_EV_CANCEL_OK;
		return 0;
	case AMQP_BASIC_CANCEL_METHOD:
		ev->kind = JOBQ_EV_CANCELLED;
		return 0;
	case AMQP_CHANNEL_CLOSE_METHOD:
	case AMQP_CONNECTION_CLOSE_METHOD:
		return closed_err(conn, f, err);
	default:
		return 0;
	}
}

/*
 * Wait up to timeout_ms (0: do not wait; -1: forever) for the next
 * event on the connection.  Heartbeats are answered in here, so a tool
 * must call this at least every few seconds.  Returns 0 with ev filled
 * (kind JOBQ_EV_NONE when nothing came), -1 when the connection failed.
 */
int
jobq_amqp_next(amqp_connection_state_t conn, int timeout_ms,
    struct jobq_event *ev, struct jobq_err *err)
{
	amqp_frame_t	 f;
	struct timeval	 tv;
	int		 rc;

	jobq_event_clear(ev);
	amqp_maybe_release_buffers(conn);
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	rc = amqp_simple_wait_frame_noblock(conn, &f,
	    timeout_ms < 0 ? NULL : &tv);
	if (rc == AMQP_STATUS_TIMEOUT)
		return 0;
	if (rc != AMQP_STATUS_OK)
		return jobq_errf(err, EX_UNAVAILABLE, "broker connection: %s",
		    amqp_error_string2(rc));
	if (f.frame_type != AMQP_FRAME_METHOD)
		return 0;
	return method_event(conn, &f, ev, err);
}

/*
 * The number of ready messages and of consumers of a queue, from a
 * passive declare.  A queue that does not exist closes the channel, so
 * ask only for queues that jobq_amqp_declare() made.
 */
int
jobq_amqp_depth(amqp_connection_state_t conn, const char *queue,
    long *messages, long *consumers, struct jobq_err *err)
{
	amqp_queue_declare_ok_t	*ok;
	char			 what[300];

	ok = amqp_queue_declare(conn, CHANNEL, amqp_cstring_bytes(queue), 1,
	    0, 0, 0, amqp_empty_table);
	snprintf(what, sizeof(what), "queue %s", queue);
	if (reply_err(amqp_get_rpc_reply(conn), what, err) == -1)
		return -1;
	*messages = ok->message_count;
	*consumers = ok->consumer_count;
	return 0;
}

/*
 * Take one message from a queue without a consumer, to be acked or
 * nacked later.  1 with ev filled, 0 when the queue is empty.
 */
int
jobq_amqp_get(amqp_connection_state_t conn, const char *queue,
    struct jobq_event *ev, struct jobq_err *err)
{
	amqp_rpc_reply_t	 r;
	amqp_basic_get_ok_t	*ok;
	char			 what[300];

	jobq_event_clear(ev);
	amqp_maybe_release_buffers(conn);
	r = amqp_basic_get(conn, CHANNEL, amqp_cstring_bytes(queue), 0);
	snprintf(what, sizeof(what), "get from queue %s", queue);
	if (reply_err(r, what, err) == -1)
		return -1;
	if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
		return 0;
	ok = r.reply.decoded;
	ev->kind = JOBQ_EV_DELIVERY;
	ev->tag = ok->delivery_tag;
	ev->redelivered = ok->redelivered;
	if (read_content(conn, ev, err) == -1)
		return -1;
	return 1;
}

/*
 * Whether a delivery says it is JSON, perhaps with parameters such as a
 * charset, or says nothing of its content type.  Media types are
 * compared without regard to case.
 */
int
jobq_event_is_json(const struct jobq_event *ev)
{
	const char	*rest = ev->content_type + strlen("application/json");

	if (*ev->content_type == '\0')
		return 1;
	if (strncasecmp(ev->content_type, "application/json",
	    strlen("application/json")) != 0)
		return 0;
	rest += strspn(rest, " \t");
	return *rest == '\0' || *rest == ';';
}

/* Whether a frame can be read without waiting on the socket. */
int
jobq_amqp_pending(amqp_connection_state_t conn)
{
	return amqp_frames_enqueued(conn) || amqp_data_in_buffer(conn);
}

int
jobq_amqp_ack(amqp_connection_state_t conn, uint64_t tag, int multiple,
    struct jobq_err *err)
{
	int	 rc;

	if ((rc = amqp_basic_ack(conn, CHANNEL, tag, multiple)) != 0)
		return jobq_errf(err, EX_UNAVAILABLE, "ack: %s",
		    amqp_error_string2(rc));
	return 0;
}

/* Settle one delivery negatively: back to the queue, or dropped. */
int
jobq_amqp_nack(amqp_connection_state_t conn, uint64_t tag, int requeue,
    struct jobq_err *err)
{
	int	 rc;

	if ((rc = amqp_basic_nack(conn, CHANNEL, tag, 0, requeue)) != 0)
		return jobq_errf(err, EX_UNAVAILABLE, "nack: %s",
		    amqp_error_string2(rc));
	return 0;
}

/* A message taken from a retry queue, kept until it is handed back. */
struct taken {
	uint64_t		 tag;
	amqp_basic_properties_t	 props;	/* strings and headers in a pool */
	amqp_bytes_t		 body;	/* in the pool too */
};

/* Copy bytes into a pool; -1 when it is out of memory. */
static int
pool_dup(amqp_pool_t *pool, amqp_bytes_t *b)
{
	amqp_bytes_t	 copy;

	if (b->len == 0)
		return 0;
	amqp_pool_alloc_bytes(pool, b->len, &copy);
	if (copy.bytes == NULL)
		return -1;
	memcpy(copy.bytes, b->bytes, b->len);
	*b = copy;
	return 0;
}

/* Keep a delivered message in t, its parts copied into pool. */
static int
keep(amqp_pool_t *pool, const struct jobq_event *ev, struct taken *t,
    struct jobq_err *err)
{
	amqp_basic_properties_t	*p = &t->props;

	t->tag = ev->tag;
	*p = ev->message.properties;
	t->body = ev->body;
	if (pool_dup(pool, &t->body) == -1 ||
	    pool_dup(pool, &p->content_type) == -1 ||
	    pool_dup(pool, &p->content_encoding) == -1 ||
	    pool_dup(pool, &p->correlation_id) == -1 ||
	    pool_dup(pool, &p->reply_to) == -1 ||
	    pool_dup(pool, &p->expiration) == -1 ||
	    pool_dup(pool, &p->message_id) == -1 ||
	    pool_dup(pool, &p->type) == -1 ||
	    pool_dup(pool, &p->user_id) == -1 ||
	    pool_dup(pool, &p->app_id) == -1 ||
	    pool_dup(pool, &p->cluster_id) == -1 ||
	    ((p->_flags & AMQP_BASIC_HEADERS_FLAG) &&
	    amqp_table_clone(&ev->message.properties.headers, &p->headers,
	    pool) != AMQP_STATUS_OK))
		return jobq_errf(err, EX_OSERR, "out of memory");
	return 0;
}

/*
 * Publish a kept message again, to a queue through the default
 * exchange, with the properties it came with but the header skip.
 */
static int
forward(amqp_connection_state_t conn, const struct taken *t,
    const char *queue, const char *skip, struct jobq_err *err)
{
	amqp_basic_properties_t	 p = t->props;
	amqp_table_entry_t	*e = NULL;
	size_t			 n = strlen(skip);
	int			 i, k = 0, rc;

	if (p._flags & AMQP_BASIC_HEADERS_FLAG) {
		if ((e = calloc((size_t)p.headers.num_entries + 1,
		    sizeof(*e))) == NULL)
			return jobq_errf(err, EX_OSERR, "out of memory");
		for (i = 0; i < p.headers.num_entries; i++)
			if (p.headers.entries[i].key.len != n ||
			    memcmp(p.headers.entries[i].key.bytes, skip,
			    n) != 0)
				e[k++] = p.headers.entries[i];
		p.headers.entries = e;
		p.headers.num_entries = k;
		if (k == 0)
			p._flags &= ~AMQP_BASIC_HEADERS_FLAG;
	}
	p._flags |= AMQP_BASIC_DELIVERY_MODE_FLAG;
	p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	rc = amqp_basic_publish(conn, CHANNEL, amqp_cstring_bytes(""),
	    amqp_cstring_bytes(queue), 1, 0, &p, t->body);
	free(e);
	if (rc != AMQP_STATUS_OK)
		return jobq_errf(err, EX_UNAVAILABLE, "publish: %s",
		    amqp_error_string2(rc));
	return 0;
}

/*
 * Wait until the broker has confirmed the publishes after *seq up to
 * last, each of them, and advance *seq.  Waiting longer than
 * MOVE_WAIT_MS, a refusal or a return is an error.
 */
static int
confirmed(amqp_connection_state_t conn, uint64_t *seq, uint64_t last,
    const char *queue, struct jobq_err *err)
{
	struct jobq_event	 ev = { 0 };
	unsigned char		 ok[MOVE_BATCH] = { 0 };
	uint64_t		 base = *seq, k;
	long			 until = jobq_now_ms() + MOVE_WAIT_MS;
	int			 rc = -1;

	while (*seq < last) {
		if (jobq_now_ms() > until) {
			jobq_errf(err, EX_UNAVAILABLE, "no confirm from the "
			    "broker within %d s", MOVE_WAIT_MS / 1000);
			goto out;
		}
		if (jobq_amqp_next(conn, 1000, &ev, err) == -1)
			goto out;
		if (ev.kind == JOBQ_EV_NACK) {
			jobq_errf(err, EX_UNAVAILABLE, "the broker refused a "
			    "job for queue %s", queue);
			goto out;
		}
		if (ev.kind == JOBQ_EV_RETURN) {
			jobq_errf(err, EX_UNAVAILABLE, "queue %s is gone",
			    queue);
			goto out;
		}
		if (ev.kind != JOBQ_EV_ACK || ev.tag <= base || ev.tag > last)
			continue;
		for (k = ev.multiple ? base + 1 : ev.tag; k <= ev.tag; k++)
			ok[k - base - 1] = 1;
		while (*seq < last && ok[*seq - base])
			(*seq)++;
	}
	rc = 0;
out:
	jobq_event_clear(&ev);
	return rc;
}

/*
 * Hand the jobs that are due at the head of a retry queue back to the
 * job queue to: each is published there as it came, without its
 * JOBQ_H_DUE header, and acked on the retry queue once the broker has
 * confirmed every publish of its batch, so that a failure at any point
 * leaves it on one queue or both, never on neither.  Every job on a
 * retry queue waited the same delay, so the head is the earliest due:
 * the first one not due by now_ms (of the wall clock) goes back where
 * it was, and ends the turn.  The connection must be in confirm mode,
 * with *seq its publishes so far, and used for nothing else.  *moved
 * counts the jobs handed back.  -1 when the connection failed; what it
 * held unacked goes back to the retry queue.
 */
int
jobq_amqp_move_due(amqp_connection_state_t conn, const char *from,
    const char *to, long now_ms, uint64_t *seq, long *moved,
    struct jobq_err *err)
{
	struct jobq_event	 ev = { 0 };
	struct taken		*t;
	amqp_pool_t		 pool;
	long			 due;
	int			 n, i, got, more = 1, rc = -1;

	*moved = 0;
	if ((t = calloc(MOVE_BATCH, sizeof(*t))) == NULL)
		return jobq_errf(err, EX_OSERR, "out of memory");
	init_amqp_pool(&pool, 65536);
	while (more) {
		recycle_amqp_pool(&pool);
		/*
		 * The whole batch is taken before any of it is published:
		 * a confirm that came while a get waited for its answer
		 * would stand where the get's content should be.
		 */
		for (n = 0; n < MOVE_BATCH; n++) {
			if ((got = jobq_amqp_get(conn, from, &ev, err)) == -1)
				goto out;
			if (got == 0)
				break;
			if (jobq_event_header_int(&ev, JOBQ_H_DUE, &due) == 0 &&
			    due > now_ms) {
				if (jobq_amqp_nack(conn, ev.tag, 1, err) == -1)
					goto out;
				break;
			}
			if (keep(&pool, &ev, &t[n], err) == -1)
				goto out;
		}
		more = n == MOVE_BATCH;
		if (n == 0)
			break;
		for (i = 0; i < n; i++)
			if (forward(conn, &t[i], to, JOBQ_H_DUE, err) == -1)
				goto out;
		if (confirmed(conn, seq, *seq + (uint64_t)n, to, err) == -1 ||
		    jobq_amqp_ack(conn, t[n - 1].tag, 1, err) == -1)
			goto out;
		*moved += n;
	}
	rc = 0;
out:
	jobq_event_clear(&ev);
	empty_amqp_pool(&pool);
	free(t);
	return rc;
}
