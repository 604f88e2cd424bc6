/*
 * jobq.h: the library shared by the jobq tools.
 *
 * The library parses and validates job documents, encodes and decodes
 * the messages that travel on the queues, talks to RabbitMQ and
 * PostgreSQL, and formats log lines.  It never exits and never prints
 * on its own: a function that fails fills a struct jobq_err with a
 * sysexits(3) code and a message, and the calling program decides what
 * to do with them.  jobq_log() writes only when a program calls it.
 */
#ifndef JOBQ_H
#define JOBQ_H

#include <stddef.h>
#include <stdint.h>
#include <sysexits.h>
#include <time.h>

#include <amqp.h>
#include <json.h>
#include <libpq-fe.h>

#define JOBQ_VERSION		"0.1.0"

/* Defaults of the topology and of the limits, described in jobq(7). */
#define JOBQ_DEFAULT_AMQP_URL	"amqp://guest:guest@localhost:5672/"
#define JOBQ_DEFAULT_EXCHANGE	"jobq.jobs"
#define JOBQ_DEFAULT_JOB_QUEUE	"job-added"
#define JOBQ_DEFAULT_RES_QUEUE	"job-result"
#define JOBQ_DEFAULT_DEAD_QUEUE	"job-dead"
#define JOBQ_MAX_URLS		16
#define JOBQ_DEFAULT_MAX_SIZE	(1024 * 1024)
#define JOBQ_MAX_SIZE_LIMIT	(64 * 1024 * 1024)
#define JOBQ_JSON_DEPTH		64
#define JOBQ_NOTIFY_CHANNEL	"jobq_stored"
#define JOBQ_MSG_VERSION	1

#define JOBQ_UUID_LEN		36
#define JOBQ_TYPE_MAX		64
#define JOBQ_TIME_LEN		27	/* 2006-01-02T15:04:05.000000Z */
#define JOBQ_TRACE_LEN		55	/* a traceparent: 00-{32}-{16}-01 */
#define JOBQ_TIME_MAX		40	/* the longest time read */
#define JOBQ_MAX_ATTEMPTS	1000
#define JOBQ_DEFAULT_ATTEMPTS	5	/* of a job that names none */
#define JOBQ_MAX_TIMEOUT	86400
#define JOBQ_HEALTH_EVERY	5	/* seconds between touches */

struct jobq_err {
	int	 code;		/* a sysexits(3) value */
	char	 msg[512];
	char	 sqlstate[6];	/* of a failed statement, or "" */
};

/* Settings that every tool shares; see jobq(7), CONFIGURATION. */
struct jobq_config {
	const char	*amqp_url;	/* the first of amqp_urls */
	const char	*amqp_urls[JOBQ_MAX_URLS];
	int		 n_urls;
	int		 url_turn;	/* the one to try first */
	int		 urls_given;	/* -u replaced JOBQ_AMQP_URL */
	const char	*db_conninfo;
	const char	*exchange;
	const char	*job_queue;
	const char	*result_queue;
	const char	*dead_queue;
	size_t		 max_size;
};

/* How a message is published; see jobq_amqp_send(). */
struct jobq_pub {
	const char	*exchange;
	const char	*key;		/* the routing key */
	int		 mandatory;
	const char	*id;		/* message_id, or NULL */
	const char	*type;		/* type, or NULL */
	const char	*content_type;	/* NULL: application/json */
	amqp_table_t	 headers;	/* no entries: no headers */
	const char	*trace;		/* the traceparent header, or NULL */
};

/* The headers of a message being built; see jobq_header_str(). */
#define JOBQ_MAX_HEADERS	8
struct jobq_headers {
	amqp_table_entry_t	 e[JOBQ_MAX_HEADERS];
	int			 n;
};

/* The headers that jobq puts on the messages it moves; see jobq(7). */
#define JOBQ_H_REASON		"x-jobq-reason"
#define JOBQ_H_QUEUE		"x-jobq-queue"
#define JOBQ_H_WORKER		"x-jobq-worker"
#define JOBQ_H_FAILED_AT	"x-jobq-failed-at"
#define JOBQ_H_ATTEMPTS		"x-jobq-attempts"
#define JOBQ_H_DELIVERIES	"x-jobq-deliveries"
#define JOBQ_H_DUE		"x-jobq-due"

/* A job as it travels on the job queue. */
struct jobq_job {
	char		 id[JOBQ_UUID_LEN + 1];
	char		 type[JOBQ_TYPE_MAX + 1];
	json_object	*payload;	/* owned; NULL is JSON null */
	int		 attempt;
	int		 max_attempts;	/* 0: not given */
	int		 timeout;	/* seconds; 0: not given */
	char		 submitted_at[JOBQ_TIME_MAX + 1];
	char		 trace[JOBQ_TRACE_LEN + 1];	/* "": none */
};

/* A result as it travels on the result queue. */
struct jobq_result {
	char		 id[JOBQ_UUID_LEN + 1];
	char		 type[JOBQ_TYPE_MAX + 1];
	char		 status[16];
	json_object	*result;	/* owned; NULL is JSON null */
	char		*error;	/* owned; NULL is JSON null */
	int		 attempts;
	char		*worker;	/* owned */
	char		 submitted_at[JOBQ_TIME_MAX + 1];
	char		 started_at[JOBQ_TIME_MAX + 1];
	char		 finished_at[JOBQ_TIME_MAX + 1];
	char		 trace[JOBQ_TRACE_LEN + 1];	/* "": none */
	char		*dead_queue;	/* owned; where it was dead-lettered */
};

/* A reader of a stream of JSON documents; see jobq_reader_next(). */
struct jobq_reader;

/* What jobq_amqp_next() found on a connection. */
enum jobq_event_kind {
	JOBQ_EV_NONE,		/* nothing within the timeout */
	JOBQ_EV_DELIVERY,	/* a message from a consumer */
	JOBQ_EV_ACK,		/* a publisher confirm */
	JOBQ_EV_NACK,		/* a negative publisher confirm */
	JOBQ_EV_RETURN,		/* an unroutable mandatory publish */
	JOBQ_EV_CANCEL_OK,	/* our own basic.cancel took effect */
	JOBQ_EV_CANCELLED	/* the broker cancelled the consumer */
};

struct jobq_event {
	enum jobq_event_kind	 kind;
	uint64_t		 tag;	/* delivery tag or sequence */
	int			 multiple;	/* ack and nack */
	int			 redelivered;
	amqp_bytes_t		 body;	/* until the next call */
	char			 message_id[JOBQ_UUID_LEN + 1];
	char			 routing_key[256];	/* returns */
	char			 content_type[256];	/* or "" */
	amqp_message_t		 message;	/* internal */
	int			 has_message;	/* internal */
};

/* What jobq_http_parse_head() read of a request head. */
struct jobq_http_req {
	char		 method[16];
	char		 target[2048];
	int		 minor;		/* HTTP/1.minor */
	int		 keep_alive;
	int		 headers;
	int		 chunked;
	int		 expect_continue;
	long long	 content_length;	/* -1: none */
	char		 authorization[1100];
	char		 content_type[128];
	char		 trace[JOBQ_TRACE_LEN + 1];	/* "": none valid */
	int		 traces;	/* traceparent headers seen */
};

/* Counts from the jobs table; see jobq_db_rates() and jobq_db_stats(). */
#define JOBQ_STATUSES		5
#define JOBQ_BUCKETS		14
extern const char *const jobq_statuses[JOBQ_STATUSES];
extern const double jobq_buckets[JOBQ_BUCKETS];	/* seconds */

/* Latencies of the jobs that ended in a recent window. */
struct jobq_stats {
	long long	 le[JOBQ_BUCKETS];	/* latencies <= each bucket */
	long long	 count;			/* latencies in the window */
	double		 sum;			/* seconds */
};

/* Rows of each status, and those written in a recent window. */
struct jobq_rates {
	long long	 by_status[JOBQ_STATUSES];
	long long	 recent[JOBQ_STATUSES];
};

enum jobq_level { JOBQ_ERROR, JOBQ_WARN, JOBQ_INFO, JOBQ_DEBUG };

/* err.c: errors, logging, numbers, time and small string helpers */
int	 jobq_errf(struct jobq_err *, int, const char *, ...)
	    __attribute__((format(printf, 3, 4)));
void	 jobq_log_init(const char *);
int	 jobq_log_open(const char *, struct jobq_err *);
int	 jobq_log_enabled(enum jobq_level);
void	 jobq_log(enum jobq_level, const char *, const char *, ...)
	    __attribute__((format(printf, 3, 4)));
const char *jobq_q(const char *);
int	 jobq_parse_long(const char *, long, long, long *);
void	 jobq_now(char [JOBQ_TIME_LEN + 1]);
long	 jobq_now_ms(void);
long	 jobq_wall_ms(void);
int	 jobq_time_valid(const char *);
int	 jobq_mask_secret(const char *, char *, size_t);
void	 jobq_config_init(struct jobq_config *);
int	 jobq_config_option(struct jobq_config *, int, const char *,
	    struct jobq_err *);
int	 jobq_opt_number(int, const char *, long, long, const char *, long *,
	    struct jobq_err *);
int	 jobq_config_check(const struct jobq_config *, struct jobq_err *);
int	 jobq_uuid_canon(const char *, char [JOBQ_UUID_LEN + 1]);
void	 jobq_uuid_new(char [JOBQ_UUID_LEN + 1]);
int	 jobq_trace_valid(const char *);
void	 jobq_trace_new(char [JOBQ_TRACE_LEN + 1], const char *);
int	 jobq_type_valid(const char *);
int	 jobq_hex_digit(int);
int	 jobq_health(const char *, int, time_t *, struct jobq_err *);

/* json.c: strict JSON reading and UTF-8 */
struct jobq_reader *jobq_reader_new(size_t);
void	 jobq_reader_free(struct jobq_reader *);
int	 jobq_reader_feed(struct jobq_reader *, const char *, size_t,
	    size_t *, json_object **, struct jobq_err *);
int	 jobq_reader_end(struct jobq_reader *, json_object **,
	    struct jobq_err *);
long	 jobq_reader_line(const struct jobq_reader *);
int	 jobq_json_parse(const char *, size_t, size_t, json_object **,
	    struct jobq_err *);
const char *jobq_json_str(json_object *);
int	 jobq_json_has_nul(json_object *);
int	 jobq_utf8_valid(const char *, size_t);
char	*jobq_utf8_clean(const char *, size_t);

/* job.c: job documents, job messages and result messages */
int	 jobq_job_from_doc(json_object *, struct jobq_job *,
	    struct jobq_err *);
char	*jobq_job_encode(const struct jobq_job *);
int	 jobq_job_decode(const void *, size_t, struct jobq_job *,
	    struct jobq_err *);
void	 jobq_job_clear(struct jobq_job *);
json_object *jobq_result_object(const struct jobq_result *);
char	*jobq_queued_encode(const struct jobq_job *);
char	*jobq_result_encode(const struct jobq_result *);
int	 jobq_result_decode(const void *, size_t, struct jobq_result *,
	    struct jobq_err *);
void	 jobq_result_clear(struct jobq_result *);
int	 jobq_status_final(const char *);

/* amqp.c: the broker */
int	 jobq_amqp_url_check(const char *, struct jobq_err *);
int	 jobq_amqp_urls_check(const struct jobq_config *, struct jobq_err *);
amqp_connection_state_t jobq_amqp_open(const char *, const char *,
	    struct jobq_err *);
amqp_connection_state_t jobq_amqp_connect(struct jobq_config *,
	    const char *, struct jobq_err *);
int	 jobq_amqp_close(amqp_connection_state_t);
int	 jobq_amqp_declare(amqp_connection_state_t,
	    const struct jobq_config *, struct jobq_err *);
int	 jobq_amqp_confirms(amqp_connection_state_t, struct jobq_err *);
int	 jobq_amqp_consume(amqp_connection_state_t, const char *, int,
	    struct jobq_err *);
int	 jobq_amqp_cancel(amqp_connection_state_t, struct jobq_err *);
int	 jobq_amqp_declare_retry(amqp_connection_state_t,
	    const struct jobq_config *, int, char *, size_t,
	    struct jobq_err *);
int	 jobq_amqp_publish(amqp_connection_state_t, const char *,
	    const char *, int, const char *, const char *, const char *,
	    const char *, size_t, struct jobq_err *);
int	 jobq_amqp_say_queued(amqp_connection_state_t,
	    const struct jobq_config *, const struct jobq_job *,
	    struct jobq_err *);
int	 jobq_amqp_send(amqp_connection_state_t, const struct jobq_pub *,
	    const void *, size_t, struct jobq_err *);
void	 jobq_header_str(struct jobq_headers *, const char *, const char *);
void	 jobq_header_int(struct jobq_headers *, const char *, long);
amqp_table_t jobq_headers_table(struct jobq_headers *);
int	 jobq_event_header_int(const struct jobq_event *, const char *,
	    long *);
int	 jobq_event_header_str(const struct jobq_event *, const char *,
	    char *, size_t);
int	 jobq_amqp_get(amqp_connection_state_t, const char *,
	    struct jobq_event *, struct jobq_err *);
int	 jobq_amqp_next(amqp_connection_state_t, int, struct jobq_event *,
	    struct jobq_err *);
void	 jobq_event_clear(struct jobq_event *);
int	 jobq_amqp_ack(amqp_connection_state_t, uint64_t, int,
	    struct jobq_err *);
int	 jobq_amqp_nack(amqp_connection_state_t, uint64_t, int,
	    struct jobq_err *);
int	 jobq_amqp_pending(amqp_connection_state_t);
int	 jobq_event_is_json(const struct jobq_event *);
int	 jobq_amqp_depth(amqp_connection_state_t, const char *, long *,
	    long *, struct jobq_err *);
int	 jobq_amqp_move_due(amqp_connection_state_t, const char *,
	    const char *, long, uint64_t *, long *, struct jobq_err *);

/* mgmt.c: RabbitMQ's management API */
int	 jobq_mgmt_queue(const char *, const char *, const char *, long *,
	    long *, struct jobq_err *);

/* http.c: HTTP requests */
const char *jobq_http_head_end(const char *, size_t);
int	 jobq_http_parse_head(const char *, size_t, int,
	    struct jobq_http_req *, struct jobq_err *);
int	 jobq_http_dechunk(const char *, size_t, size_t, char *, size_t *,
	    size_t *, struct jobq_err *);
int	 jobq_secret_equal(const char *, const char *);

/* db.c: the database */
PGconn	*jobq_db_open(const char *, struct jobq_err *);
int	 jobq_db_fetch(PGconn *, char (*)[JOBQ_UUID_LEN + 1], size_t,
	    json_object **, struct jobq_err *);
int	 jobq_db_list(PGconn *, const char *, const char *, long, long,
	    void (*)(json_object *, void *), void *, struct jobq_err *);
int	 jobq_db_expire(PGconn *, long, long, long long *, struct jobq_err *);
int	 jobq_db_prepare_store(PGconn *, struct jobq_err *);
int	 jobq_db_store_send(PGconn *, const char *, struct jobq_err *);
int	 jobq_db_store_done(PGconn *);
int	 jobq_db_store_wait(PGconn *, long *, struct jobq_err *);
int	 jobq_db_store(PGconn *, const char *, long *, struct jobq_err *);
int	 jobq_db_stats(PGconn *, int, struct jobq_stats *, struct jobq_err *);
int	 jobq_db_rates(PGconn *, int, struct jobq_rates *, struct jobq_err *);
json_object *jobq_db_series(PGconn *, int, int, struct jobq_err *);

#endif
