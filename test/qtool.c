/*
 * qtool: look at and poke the broker's queues from the tests.
 *
 *	qtool depth QUEUE	print "MESSAGES CONSUMERS" of a queue
 *	qtool get QUEUE		take one message: a line of properties and
 *				headers, then the body; exit 1 when the
 *				queue is empty
 *	qtool put QUEUE BODY [TYPE [TRACE]]
 *				publish BODY as is, persistent, confirmed,
 *				with content type TYPE (application/json)
 *				and the header traceparent TRACE
 *	qtool delete QUEUE	delete a queue
 *
 * The broker is the one JOBQ_AMQP_URL names.  Queues are looked at
 * passively: qtool never creates one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobq.h"

static void
fail(const char *what, const struct jobq_err *err)
{
	fprintf(stderr, "qtool: %s: %s\n", what, err->msg);
	exit(2);
}

static void
check_reply(amqp_connection_state_t conn, const char *what)
{
	amqp_rpc_reply_t	 r = amqp_get_rpc_reply(conn);

	if (r.reply_type != AMQP_RESPONSE_NORMAL) {
		fprintf(stderr, "qtool: %s failed\n", what);
		exit(2);
	}
}

static void
depth(amqp_connection_state_t conn, const char *queue)
{
	amqp_queue_declare_ok_t	*ok;

	ok = amqp_queue_declare(conn, 1, amqp_cstring_bytes(queue), 1, 0, 0, 0,
	    amqp_empty_table);
	check_reply(conn, "declare");
	printf("%u %u\n", ok->message_count, ok->consumer_count);
}

static void
print_bytes(const char *name, amqp_bytes_t b)
{
	printf(" %s=%.*s", name, (int)b.len, (char *)b.bytes);
}

/* Headers as " key=value", for the string and integer kinds. */
static void
print_headers(const amqp_table_t *t)
{
	int	 i;

	for (i = 0; i < t->num_entries; i++) {
		const amqp_table_entry_t *e = &t->entries[i];

		if (e->value.kind == AMQP_FIELD_KIND_UTF8 ||
		    e->value.kind == AMQP_FIELD_KIND_BYTES)
			printf(" %.*s=%.*s", (int)e->key.len,
			    (char *)e->key.bytes,
			    (int)e->value.value.bytes.len,
			    (char *)e->value.value.bytes.bytes);
		else if (e->value.kind == AMQP_FIELD_KIND_I64)
			printf(" %.*s=%lld", (int)e->key.len,
			    (char *)e->key.bytes,
			    (long long)e->value.value.i64);
		else if (e->value.kind == AMQP_FIELD_KIND_I32)
			printf(" %.*s=%d", (int)e->key.len,
			    (char *)e->key.bytes, e->value.value.i32);
	}
}

static int
get(amqp_connection_state_t conn, const char *queue)
{
	amqp_rpc_reply_t		 r;
	amqp_basic_get_ok_t		*ok;
	amqp_message_t			 m;
	amqp_basic_properties_t		*p;

	r = amqp_basic_get(conn, 1, amqp_cstring_bytes(queue), 1);
	check_reply(conn, "get");
	if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
		return 1;
	ok = r.reply.decoded;
	printf("routing_key=%.*s", (int)ok->routing_key.len,
	    (char *)ok->routing_key.bytes);
	if (amqp_read_message(conn, 1, &m, 0).reply_type !=
	    AMQP_RESPONSE_NORMAL) {
		fprintf(stderr, "qtool: read failed\n");
		exit(2);
	}
	p = &m.properties;
	if (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
		print_bytes("message_id", p->message_id);
	if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
		print_bytes("content_type", p->content_type);
	if (p->_flags & AMQP_BASIC_TYPE_FLAG)
		print_bytes("type", p->type);
	if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
		printf(" delivery_mode=%u", p->delivery_mode);
	if (p->_flags & AMQP_BASIC_HEADERS_FLAG)
		print_headers(&p->headers);
	printf("\n%.*s\n", (int)m.body.len, (char *)m.body.bytes);
	amqp_destroy_message(&m);
	return 0;
}

static void
put(amqp_connection_state_t conn, const char *queue, const char *body,
    const char *content_type, const char *trace)
{
	struct jobq_event	 ev = { 0 };
	struct jobq_err		 err;
	struct jobq_pub		 pub = { 0 };

	pub.exchange = "";
	pub.key = queue;
	pub.mandatory = 1;
	pub.id = pub.type = "qtool";
	pub.content_type = content_type;
	pub.trace = trace;
	if (jobq_amqp_confirms(conn, &err) == -1)
		fail("confirms", &err);
	if (jobq_amqp_send(conn, &pub, body, strlen(body), &err) == -1)
		fail("publish", &err);
	do {
		if (jobq_amqp_next(conn, 5000, &ev, &err) == -1)
			fail("confirm", &err);
		if (ev.kind == JOBQ_EV_NONE || ev.kind == JOBQ_EV_NACK ||
		    ev.kind == JOBQ_EV_RETURN) {
			fprintf(stderr, "qtool: not confirmed\n");
			exit(2);
		}
	} while (ev.kind != JOBQ_EV_ACK);
	jobq_event_clear(&ev);
}

static void
delete(amqp_connection_state_t conn, const char *queue)
{
	amqp_queue_delete(conn, 1, amqp_cstring_bytes(queue), 0, 0);
	check_reply(conn, "delete");
}

int
main(int argc, char *argv[])
{
	amqp_connection_state_t	 conn;
	struct jobq_config	 cfg;
	struct jobq_err		 err;
	int			 rc = 0;

	if (argc < 3 || (strcmp(argv[1], "put") == 0) != (argc >= 4 &&
	    argc <= 6)) {
		fprintf(stderr, "usage: qtool depth|get|delete QUEUE | "
		    "qtool put QUEUE BODY [TYPE [TRACE]]\n");
		return 64;
	}
	jobq_config_init(&cfg);
	if ((conn = jobq_amqp_connect(&cfg, "qtool", &err)) == NULL)
		fail("connect", &err);
	if (strcmp(argv[1], "depth") == 0)
		depth(conn, argv[2]);
	else if (strcmp(argv[1], "get") == 0)
		rc = get(conn, argv[2]);
	else if (strcmp(argv[1], "put") == 0)
		put(conn, argv[2], argv[3], argc >= 5 ? argv[4] : NULL,
		    argc == 6 ? argv[5] : NULL);
	else if (strcmp(argv[1], "delete") == 0)
		delete(conn, argv[2]);
	else {
		fprintf(stderr, "qtool: %s: unknown command\n", argv[1]);
		rc = 64;
	}
	jobq_amqp_close(conn);
	return rc;
}
