/*
 * job.c: job documents from clients, and the messages on the queues.
 *
 * A job document is checked strictly: it must be an object with only
 * the members jobq(7) lists, each of the right type and range, so that
 * a typing mistake is an error rather than a silent default.  Messages
 * on the queues are read leniently: members a reader does not know are
 * ignored, so that a newer writer does not break an older reader, but
 * the members it needs must be valid, and a format version it does not
 * know is refused.
 */
#include <stdlib.h>
#include <string.h>

#include "jobq.h"

static const char *doc_members[] = {
	"type", "payload", "id", "max_attempts", "timeout", NULL
};

static int
known_member(const char *key, const char **members)
{
	for (; *members != NULL; members++)
		if (strcmp(key, *members) == 0)
			return 1;
	return 0;
}

static const char *
type_name(json_object *v)
{
	return v == NULL ? "null" : json_type_to_name(json_object_get_type(v));
}

/* Whether a JSON string holds a NUL, which PostgreSQL text refuses. */
static int
has_nul(json_object *s)
{
	return strlen(json_object_get_string(s)) !=
	    (size_t)json_object_get_string_len(s);
}

/* Read an integer member in [min, max]; 0 when absent, 1, or -1. */
static int
int_member(json_object *obj, const char *key, long min, long max,
    int *out, struct jobq_err *err)
{
	json_object	*v;
	int64_t		 n;

	if (!json_object_object_get_ex(obj, key, &v))
		return 0;
	if (!json_object_is_type(v, json_type_int))
		return jobq_errf(err, EX_DATAERR, "member \"%s\": must be an "
		    "integer, not %s", key, type_name(v));
	n = json_object_get_int64(v);
	if (n < min || n > max)
		return jobq_errf(err, EX_DATAERR, "member \"%s\": must be "
		    "from %ld to %ld", key, min, max);
	*out = (int)n;
	return 1;
}

/* Read a string member that must be present; -1 when it is not. */
static int
str_member(json_object *obj, const char *key, json_object **out,
    struct jobq_err *err)
{
	json_object	*v;

	if (!json_object_object_get_ex(obj, key, &v))
		return jobq_errf(err, EX_DATAERR, "member \"%s\" is missing",
		    key);
	if (!json_object_is_type(v, json_type_string))
		return jobq_errf(err, EX_DATAERR, "member \"%s\": must be a "
		    "string, not %s", key, type_name(v));
	if (has_nul(v))
		return jobq_errf(err, EX_DATAERR, "member \"%s\": holds a NUL "
		    "character", key);
	*out = v;
	return 0;
}

static int
id_member(json_object *obj, char id[JOBQ_UUID_LEN + 1],
    struct jobq_err *err)
{
	json_object	*v;

	if (str_member(obj, "id", &v, err) == -1)
		return -1;
	if (jobq_uuid_canon(json_object_get_string(v), id) == -1)
		return jobq_errf(err, EX_DATAERR, "member \"id\": not a UUID "
		    "in 8-4-4-4-12 hexadecimal form");
	return 0;
}

static int
type_member(json_object *obj, char type[JOBQ_TYPE_MAX + 1],
    struct jobq_err *err)
{
	json_object	*v;
	const char	*s;

	if (str_member(obj, "type", &v, err) == -1)
		return -1;
	s = json_object_get_string(v);
	if (!jobq_type_valid(s))
		return jobq_errf(err, EX_DATAERR, "member \"type\": must be 1 "
		    "to %d characters of A-Z a-z 0-9 . _ -, the first a "
		    "letter or digit", JOBQ_TYPE_MAX);
	strcpy(type, s);
	return 0;
}

static int
time_member(json_object *obj, const char *key, char out[JOBQ_TIME_MAX + 1],
    struct jobq_err *err)
{
	json_object	*v;
	const char	*s;

	if (str_member(obj, key, &v, err) == -1)
		return -1;
	s = json_object_get_string(v);
	if (strlen(s) > JOBQ_TIME_MAX || !jobq_time_valid(s))
		return jobq_errf(err, EX_DATAERR, "member \"%s\": not an RFC "
		    "3339 time", key);
	strcpy(out, s);
	return 0;
}

/*
 * Turn a client's job document into a job ready to publish: check it,
 * take or make its id, and stamp it with the time.  On success the job
 * holds a reference to the payload; release it with jobq_job_clear().
 */
int
jobq_job_from_doc(json_object *doc, struct jobq_job *job,
    struct jobq_err *err)
{
	json_object	*payload;

	memset(job, 0, sizeof(*job));
	if (!json_object_is_type(doc, json_type_object))
		return jobq_errf(err, EX_DATAERR, "a job must be a JSON "
		    "object, not %s", type_name(doc));
	json_object_object_foreach(doc, key, val) {
		(void)val;
		if (!known_member(key, doc_members))
			return jobq_errf(err, EX_DATAERR, "unknown member "
			    "\"%.64s\"", key);
	}
	if (type_member(doc, job->type, err) == -1)
		return -1;
	if (json_object_object_get_ex(doc, "id", NULL)) {
		if (id_member(doc, job->id, err) == -1)
			return -1;
	} else
		jobq_uuid_new(job->id);
	if (int_member(doc, "max_attempts", 1, JOBQ_MAX_ATTEMPTS,
	    &job->max_attempts, err) == -1 ||
	    int_member(doc, "timeout", 1, JOBQ_MAX_TIMEOUT, &job->timeout,
	    err) == -1)
		return -1;
	if (json_object_object_get_ex(doc, "payload", &payload))
		job->payload = json_object_get(payload);
	job->attempt = 1;
	jobq_now(job->submitted_at);
	return 0;
}

static void
add_str(json_object *obj, const char *key, const char *s)
{
	json_object_object_add(obj, key,
	    s == NULL ? NULL : json_object_new_string(s));
}

/* The job as the JSON text of a job message; free() it.  NULL: no memory. */
char *
jobq_job_encode(const struct jobq_job *job)
{
	json_object	*m;
	char		*s;

	if ((m = json_object_new_object()) == NULL)
		return NULL;
	json_object_object_add(m, "v", json_object_new_int(JOBQ_MSG_VERSION));
	add_str(m, "id", job->id);
	add_str(m, "type", job->type);
	json_object_object_add(m, "payload", json_object_get(job->payload));
	json_object_object_add(m, "attempt", json_object_new_int(job->attempt));
	if (job->max_attempts > 0)
		json_object_object_add(m, "max_attempts",
		    json_object_new_int(job->max_attempts));
	if (job->timeout > 0)
		json_object_object_add(m, "timeout",
		    json_object_new_int(job->timeout));
	add_str(m, "submitted_at", job->submitted_at);
	if (*job->trace != '\0')
		add_str(m, "traceparent", job->trace);
	s = strdup(jobq_json_str(m));
	json_object_put(m);
	return s;
}

/* Parse a message body and check its format version. */
static int
parse_message(const void *body, size_t len, json_object **obj,
    struct jobq_err *err)
{
	json_object	*v;
	int		 version = 0;

	if (jobq_json_parse(body, len, JOBQ_MAX_SIZE_LIMIT * 2, obj,
	    err) == -1)
		return -1;
	if (!json_object_is_type(*obj, json_type_object)) {
		jobq_errf(err, EX_DATAERR, "message is %s, not an object",
		    type_name(*obj));
		goto fail;
	}
	if (!json_object_object_get_ex(*obj, "v", &v)) {
		jobq_errf(err, EX_DATAERR, "member \"v\" is missing");
		goto fail;
	}
	if (int_member(*obj, "v", 1, 1000000, &version, err) == -1)
		goto fail;
	if (version != JOBQ_MSG_VERSION) {
		jobq_errf(err, EX_DATAERR, "message format version %d is "
		    "not known here", version);
		goto fail;
	}
	return 0;
fail:
	json_object_put(*obj);
	*obj = NULL;
	return -1;
}

/*
 * Read a job message.  On success the job holds a reference to the
 * payload; release it with jobq_job_clear().
 */
int
jobq_job_decode(const void *body, size_t len, struct jobq_job *job,
    struct jobq_err *err)
{
	json_object	*m, *payload, *trace;
	int		 rc = -1;

	memset(job, 0, sizeof(*job));
	if (parse_message(body, len, &m, err) == -1)
		return -1;
	if (id_member(m, job->id, err) == -1 ||
	    type_member(m, job->type, err) == -1 ||
	    time_member(m, "submitted_at", job->submitted_at, err) == -1)
		goto out;
	if (int_member(m, "attempt", 1, JOBQ_MAX_ATTEMPTS, &job->attempt,
	    err) != 1) {
		if (!json_object_object_get_ex(m, "attempt", NULL))
			jobq_errf(err, EX_DATAERR, "member \"attempt\" is "
			    "missing");
		goto out;
	}
	if (int_member(m, "max_attempts", 1, JOBQ_MAX_ATTEMPTS,
	    &job->max_attempts, err) == -1 ||
	    int_member(m, "timeout", 1, JOBQ_MAX_TIMEOUT, &job->timeout,
	    err) == -1)
		goto out;
	if (json_object_object_get_ex(m, "payload", &payload))
		job->payload = json_object_get(payload);
	/* A trace that is not valid is no reason to lose a job. */
	if (json_object_object_get_ex(m, "traceparent", &trace) &&
	    json_object_is_type(trace, json_type_string) &&
	    jobq_trace_valid(json_object_get_string(trace)))
		strcpy(job->trace, json_object_get_string(trace));
	rc = 0;
out:
	json_object_put(m);
	return rc;
}

void
jobq_job_clear(struct jobq_job *job)
{
	json_object_put(job->payload);
	job->payload = NULL;
}

/* Whether a status ends a job's life: no later state replaces it. */
int
jobq_status_final(const char *status)
{
	return strcmp(status, "succeeded") == 0 ||
	    strcmp(status, "failed") == 0;
}

/* The result as a JSON object of a result message; NULL: no memory. */
json_object *
jobq_result_object(const struct jobq_result *r)
{
	json_object	*m;

	if ((m = json_object_new_object()) == NULL)
		return NULL;
	json_object_object_add(m, "v", json_object_new_int(JOBQ_MSG_VERSION));
	add_str(m, "id", r->id);
	add_str(m, "type", r->type);
	add_str(m, "status", r->status);
	json_object_object_add(m, "result", json_object_get(r->result));
	add_str(m, "error", r->error);
	json_object_object_add(m, "attempts",
	    json_object_new_int(r->attempts));
	add_str(m, "worker", r->worker);
	add_str(m, "submitted_at", r->submitted_at);
	add_str(m, "started_at", *r->started_at != '\0' ? r->started_at :
	    NULL);
	add_str(m, "finished_at", *r->finished_at != '\0' ?
	    r->finished_at : NULL);
	if (*r->trace != '\0')
		add_str(m, "traceparent", r->trace);
	if (r->dead_queue != NULL)
		add_str(m, "dead_queue", r->dead_queue);
	return m;
}

/*
 * The message that says a job is queued, as the JSON text of a result
 * message whose attempt is the one to come; free() it.
 */
char *
jobq_queued_encode(const struct jobq_job *job)
{
	struct jobq_result	 r;

	memset(&r, 0, sizeof(r));
	strcpy(r.id, job->id);
	strcpy(r.type, job->type);
	strcpy(r.status, "queued");
	r.attempts = job->attempt;
	strcpy(r.submitted_at, job->submitted_at);
	strcpy(r.trace, job->trace);
	return jobq_result_encode(&r);
}

/* The result as the JSON text of a result message; free() it. */
char *
jobq_result_encode(const struct jobq_result *r)
{
	json_object	*m;
	char		*s;

	if ((m = jobq_result_object(r)) == NULL)
		return NULL;
	s = strdup(jobq_json_str(m));
	json_object_put(m);
	return s;
}

/* Read a string or null member into a malloc'd copy. */
static int
opt_str_member(json_object *obj, const char *key, char **out,
    struct jobq_err *err)
{
	json_object	*v;

	*out = NULL;
	if (!json_object_object_get_ex(obj, key, &v) || v == NULL)
		return 0;
	if (str_member(obj, key, &v, err) == -1)
		return -1;
	if ((*out = strdup(json_object_get_string(v))) == NULL)
		return jobq_errf(err, EX_OSERR, "out of memory");
	return 0;
}

static int
status_member(json_object *m, char status[16], struct jobq_err *err)
{
	json_object	*v;
	const char	*s;

	if (str_member(m, "status", &v, err) == -1)
		return -1;
	s = json_object_get_string(v);
	if (!jobq_status_final(s) && strcmp(s, "retrying") != 0 &&
	    strcmp(s, "running") != 0 && strcmp(s, "queued") != 0)
		return jobq_errf(err, EX_DATAERR, "member \"status\": "
		    "\"%.32s\" is not a status known here", s);
	strcpy(status, s);
	return 0;
}

/* Read a traceparent that may be missing or null. */
static int
trace_member(json_object *m, char out[JOBQ_TRACE_LEN + 1],
    struct jobq_err *err)
{
	json_object	*v;

	*out = '\0';
	if (!json_object_object_get_ex(m, "traceparent", &v) || v == NULL)
		return 0;
	if (!json_object_is_type(v, json_type_string) ||
	    !jobq_trace_valid(json_object_get_string(v)))
		return jobq_errf(err, EX_DATAERR, "member \"traceparent\": "
		    "not a W3C traceparent");
	strcpy(out, json_object_get_string(v));
	return 0;
}

/* Read a time that must be null or missing, as a job's status says. */
static int
no_time_member(json_object *m, const char *key, const char *status,
    char out[JOBQ_TIME_MAX + 1], struct jobq_err *err)
{
	json_object	*v;

	*out = '\0';
	if (json_object_object_get_ex(m, key, &v) && v != NULL)
		return jobq_errf(err, EX_DATAERR, "member \"%s\": not null "
		    "for a job that is %s", key, status);
	return 0;
}

/* Read when the attempt started: a time, but none while it is queued. */
static int
start_member(json_object *m, const char *status,
    char out[JOBQ_TIME_MAX + 1], struct jobq_err *err)
{
	if (strcmp(status, "queued") == 0)
		return no_time_member(m, "started_at", status, out, err);
	return time_member(m, "started_at", out, err);
}

/*
 * Read when the attempt ended: a time, but none while the job is queued
 * or running, which has no end yet.
 */
static int
finish_member(json_object *m, const char *status,
    char out[JOBQ_TIME_MAX + 1], struct jobq_err *err)
{
	if (strcmp(status, "queued") == 0 || strcmp(status, "running") == 0)
		return no_time_member(m, "finished_at", status, out, err);
	return time_member(m, "finished_at", out, err);
}

/*
 * Read a result message, checking everything the jobs table will
 * refuse, so that one bad message cannot fail a batch of good ones.
 * Release what it holds with jobq_result_clear().
 */
int
jobq_result_decode(const void *body, size_t len, struct jobq_result *r,
    struct jobq_err *err)
{
	json_object	*m, *result = NULL;
	int		 rc = -1;

	memset(r, 0, sizeof(*r));
	if (parse_message(body, len, &m, err) == -1)
		return -1;
	if (id_member(m, r->id, err) == -1 ||
	    type_member(m, r->type, err) == -1 ||
	    status_member(m, r->status, err) == -1 ||
	    time_member(m, "submitted_at", r->submitted_at, err) == -1 ||
	    start_member(m, r->status, r->started_at, err) == -1 ||
	    finish_member(m, r->status, r->finished_at, err) == -1 ||
	    opt_str_member(m, "error", &r->error, err) == -1 ||
	    opt_str_member(m, "worker", &r->worker, err) == -1 ||
	    opt_str_member(m, "dead_queue", &r->dead_queue, err) == -1)
		goto out;
	if (int_member(m, "attempts", 1, JOBQ_MAX_ATTEMPTS, &r->attempts,
	    err) != 1) {
		if (!json_object_object_get_ex(m, "attempts", NULL))
			jobq_errf(err, EX_DATAERR, "member \"attempts\" is "
			    "missing");
		goto out;
	}
	if (trace_member(m, r->trace, err) == -1)
		goto out;
	if (r->dead_queue != NULL && (*r->dead_queue == '\0' ||
	    strlen(r->dead_queue) > 255)) {
		jobq_errf(err, EX_DATAERR, "member \"dead_queue\": not a "
		    "queue name");
		goto out;
	}
	json_object_object_get_ex(m, "result", &result);
	if (jobq_json_has_nul(result)) {
		jobq_errf(err, EX_DATAERR, "member \"result\": holds a NUL "
		    "character");
		goto out;
	}
	/* The database reads the whole message, members unknown too. */
	if (jobq_json_has_nul(m)) {
		jobq_errf(err, EX_DATAERR, "a member holds a NUL character");
		goto out;
	}
	r->result = json_object_get(result);
	rc = 0;
out:
	json_object_put(m);
	if (rc == -1)
		jobq_result_clear(r);
	return rc;
}

void
jobq_result_clear(struct jobq_result *r)
{
	json_object_put(r->result);
	free(r->error);
	free(r->worker);
	free(r->dead_queue);
	r->result = NULL;
	r->error = r->worker = r->dead_queue = NULL;
}
