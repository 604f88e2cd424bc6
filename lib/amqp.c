/*
 * amqp.c: the broker side of jobq.
 *
 * Every tool uses one connection and channel 1 on it.  The topology is
 * declared by every tool that connects, so that no start-up order can
 * lose a message to a missing queue.  jobq_amqp_next() is the one place
 * that reads frames: consumers and publishers with confirms share it, so
 * that deliveries and confirms can arrive interleaved on one channel.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <amqp_tcp_socket.h>

#include "jobq.h"

#define CHANNEL		1
#define HEARTBEAT	30
#define CONNECT_TIMEOUT	10

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
		return jobq_errf(err, EX_USAGE, "%s: not an amqp:// URL",
		    masked);
	if (ci->ssl)
		return jobq_errf(err, EX_USAGE, "%s: amqps:// is not supported",
		    masked);
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
	if ((conn = amqp_new_connection()) == NULL ||
	    (sock = amqp_tcp_socket_new(conn)) == NULL) {
		jobq_errf(err, EX_OSERR, "out of memory");
		goto fail;
	}
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

/* Close the connection politely and free it; NULL is fine. */
void
jobq_amqp_close(amqp_connection_state_t conn)
{
	if (conn == NULL)
		return;
	amqp_channel_close(conn, CHANNEL, AMQP_REPLY_SUCCESS);
	amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(conn);
}

static int
declare_queue(amqp_connection_state_t conn, const char *queue,
    struct jobq_err *err)
{
	amqp_table_entry_t	 arg;
	amqp_table_t		 args = { 1, &arg };
	char			 what[300];

	arg.key = amqp_cstring_bytes("x-queue-version");
	arg.value.kind = AMQP_FIELD_KIND_I32;
	arg.value.value.i32 = 2;
	amqp_queue_declare(conn, CHANNEL, amqp_cstring_bytes(queue), 0, 1, 0,
	    0, args);
	snprintf(what, sizeof(what), "declare queue %s", queue);
	return reply_err(amqp_get_rpc_reply(conn), what, err);
}

/*
 * Declare the topology of jobq(7): a durable topic exchange bound to
 * the job queue for every routing key, and the two durable queues.
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
	    declare_queue(conn, cfg->result_queue, err) == -1)
		return -1;
	amqp_queue_bind(conn, CHANNEL, amqp_cstring_bytes(cfg->job_queue),
	    amqp_cstring_bytes(cfg->exchange), amqp_cstring_bytes("#"),
	    amqp_empty_table);
	snprintf(what, sizeof(what), "bind queue %s to exchange %s",
	    cfg->job_queue, cfg->exchange);
	return reply_err(amqp_get_rpc_reply(conn), what, err);
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
 * Publish a persistent JSON message.  id and type go into the
 * message_id and type properties.  With confirms selected, the broker
 * confirms it later under the next sequence number.
 */
int
jobq_amqp_publish(amqp_connection_state_t conn, const char *exchange,
    const char *key, int mandatory, const char *id, const char *type,
    const char *body, size_t len, struct jobq_err *err)
{
	amqp_basic_properties_t	 p;
	amqp_bytes_t		 b;
	int			 rc;

	memset(&p, 0, sizeof(p));
	p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG |
	    AMQP_BASIC_DELIVERY_MODE_FLAG |
	    AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG |
	    AMQP_BASIC_TIMESTAMP_FLAG;
	p.content_type = amqp_cstring_bytes("application/json");
	p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
	p.message_id = amqp_cstring_bytes(id);
	p.type = amqp_cstring_bytes(type);
	p.timestamp = (uint64_t)time(NULL);
	b.bytes = (void *)(uintptr_t)body;
	b.len = len;
	rc = amqp_basic_publish(conn, CHANNEL, amqp_cstring_bytes(exchange),
	    amqp_cstring_bytes(key), mandatory, 0, &p, b);
	if (rc != AMQP_STATUS_OK)
		return jobq_errf(err, EX_UNAVAILABLE, "publish: %s",
		    amqp_error_string2(rc));
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
	case AMQP_BASIC_RETURN_METHOD:
		ev->kind = JOBQ_EV_RETURN;
		return read_content(conn, ev, err);
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
