/*
 * err.c: errors, log lines, numbers, timestamps, configuration and
 * the health files of consumers.
 *
 * Log lines are logfmt, one per event, on stderr:
 *	ts=... level=info tool=jobq-work msg="job done" id=... ms=12
 * Only programs call jobq_log(); the rest of the library reports
 * through struct jobq_err.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uuid.h>

#include "jobq.h"

static const char	*log_tool = "jobq";
static enum jobq_level	 log_level = JOBQ_INFO;
static FILE		*log_file;	/* NULL: stderr */
static int		 log_where;	/* 0 stream, 1 syslog, 2 nowhere */
static const char	*level_names[] = { "error", "warn", "info", "debug" };

/*
 * Fill an error with a sysexits code and a message; return -1 so that
 * a caller can write "return jobq_errf(...)".
 */
int
jobq_errf(struct jobq_err *err, int code, const char *fmt, ...)
{
	va_list	 ap;

	if (err == NULL)
		return -1;
	err->code = code;
	err->sqlstate[0] = '\0';
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return -1;
}

/* Name the tool in log lines and read the level from JOBQ_LOG. */
void
jobq_log_init(const char *tool)
{
	const char	*s;
	size_t		 i;

	log_tool = tool;
	if ((s = getenv("JOBQ_LOG")) == NULL || *s == '\0')
		return;
	for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcmp(s, level_names[i]) == 0)
			log_level = (enum jobq_level)i;
}

/*
 * Send log lines somewhere other than stderr: "syslog", "none", or the
 * path of a file to append to.  NULL or "stderr" keeps stderr.
 */
int
jobq_log_open(const char *where, struct jobq_err *err)
{
	if (where == NULL || strcmp(where, "stderr") == 0)
		log_where = 0;
	else if (strcmp(where, "syslog") == 0) {
		openlog(log_tool, LOG_PID, LOG_DAEMON);
		log_where = 1;
	} else if (strcmp(where, "none") == 0)
		log_where = 2;
	else if ((log_file = fopen(where, "a")) == NULL)
		return jobq_errf(err, EX_CANTCREAT, "%s: %s", where,
		    strerror(errno));
	return 0;
}

int
jobq_log_enabled(enum jobq_level level)
{
	return level <= log_level && log_where != 2;
}

/*
 * Write one logfmt line: the time, the level, the tool, the message and
 * then the key=value pairs that fmt formats.  Values that may hold
 * spaces or quotes go through jobq_q().
 */
void
jobq_log(enum jobq_level level, const char *msg, const char *fmt, ...)
{
	char	 ts[JOBQ_TIME_LEN + 1], line[4096];
	int	 n;
	va_list	 ap;

	if (!jobq_log_enabled(level))
		return;
	jobq_now(ts);
	n = snprintf(line, sizeof(line), "ts=%s level=%s tool=%s msg=%s",
	    ts, level_names[level], log_tool, jobq_q(msg));
	if (n > 0 && (size_t)n < sizeof(line) && fmt != NULL &&
	    *fmt != '\0') {
		line[n++] = ' ';
		va_start(ap, fmt);
		vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		va_end(ap);
	}
	if (log_where == 1) {
		static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO,
		    LOG_DEBUG };

		/* syslog stamps the time itself. */
		syslog(prio[level], "%s", strchr(line, ' ') + 1);
		return;
	}
	fprintf(log_file != NULL ? log_file : stderr, "%s\n", line);
	if (log_file != NULL)
		fflush(log_file);
}

/*
 * Quote a string as a logfmt value.  The result lives in one of a few
 * static buffers, so that several values fit in one jobq_log() call.
 */
const char *
jobq_q(const char *s)
{
	static char	 bufs[4][1024];
	static int	 next;
	char		*b = bufs[next++ % 4];
	size_t		 i = 0;

	if (s == NULL)
		s = "";
	b[i++] = '"';
	for (; *s != '\0' && i < sizeof(bufs[0]) - 3; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			b[i++] = '\\';
			b[i++] = c;
		} else if (c == '\n' || c == '\t' || c == '\r')
			b[i++] = ' ';
		else if (c < 0x20 || c == 0x7f)
			b[i++] = '?';
		else
			b[i++] = c;
	}
	b[i++] = '"';
	b[i] = '\0';
	return b;
}

/* Parse a decimal integer in [min, max]; 0 on success, -1 otherwise. */
int
jobq_parse_long(const char *s, long min, long max, long *out)
{
	char	*end;
	long	 v;

	if (s == NULL || *s == '\0' || isspace((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Milliseconds on the monotonic clock, for deadlines and durations. */
long
jobq_now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/* Milliseconds since the epoch, for times that other hosts read. */
long
jobq_wall_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

/* The current time as RFC 3339 in UTC with microseconds. */
void
jobq_now(char buf[JOBQ_TIME_LEN + 1])
{
	struct timespec	 ts;
	struct tm	 tm;
	char		 date[32], full[64];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(full, sizeof(full), "%s.%06ldZ", date, ts.tv_nsec / 1000);
	memcpy(buf, full, JOBQ_TIME_LEN);
	buf[JOBQ_TIME_LEN] = '\0';
}

static int
digits(const char *s, int n)
{
	for (; n > 0; n--, s++)
		if (!isdigit((unsigned char)*s))
			return 0;
	return 1;
}

/*
 * Whether s is an RFC 3339 date-time: a date, "T", a time with optional
 * fraction, and "Z" or a numeric offset.  Ranges of fields are checked
 * loosely; PostgreSQL checks them again when the row is written.
 */
int
jobq_time_valid(const char *s)
{
	size_t	 i;

	if (strlen(s) < 20 || !digits(s, 4) || s[4] != '-' ||
	    !digits(s + 5, 2) || s[7] != '-' || !digits(s + 8, 2) ||
	    (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2) ||
	    s[13] != ':' || !digits(s + 14, 2) || s[16] != ':' ||
	    !digits(s + 17, 2))
		return 0;
	if (atoi(s + 5) < 1 || atoi(s + 5) > 12 || atoi(s + 8) < 1 ||
	    atoi(s + 8) > 31 || atoi(s + 11) > 23 || atoi(s + 14) > 59 ||
	    atoi(s + 17) > 60)
		return 0;
	i = 19;
	if (s[i] == '.') {
		if (!isdigit((unsigned char)s[++i]))
			return 0;
		while (isdigit((unsigned char)s[i]))
			i++;
	}
	if ((s[i] == 'Z' || s[i] == 'z') && s[i + 1] == '\0')
		return 1;
	if ((s[i] == '+' || s[i] == '-') && digits(s + i + 1, 2) &&
	    s[i + 3] == ':' && digits(s + i + 4, 2) && s[i + 6] == '\0')
		return 1;
	return 0;
}

/*
 * Copy a URL or a libpq conninfo with its password replaced by "****",
 * for messages and logs.  Handles "scheme://user:secret@host..." and
 * "password = secret" (quoted or not, spaces around "=" or not).
 * Returns -1 when the copy had to be cut short.
 */
int
jobq_mask_secret(const char *in, char *out, size_t size)
{
	const char	*auth, *auth_end, *at = NULL, *colon, *p, *v, *end;
	int		 n;

	if ((auth = strstr(in, "://")) != NULL) {
		auth += 3;
		auth_end = auth + strcspn(auth, "/?#");
		for (p = auth; p < auth_end; p++)
			if (*p == '@')
				at = p;
		colon = memchr(auth, ':', at != NULL ? (size_t)(at - auth) : 0);
		if (colon != NULL) {
			n = snprintf(out, size, "%.*s:****%s",
			    (int)(colon - in), in, at);
			return n >= 0 && (size_t)n < size ? 0 : -1;
		}
	}
	for (p = in; (p = strstr(p, "password")) != NULL; p += 8) {
		if (p > in && !isspace((unsigned char)p[-1]))
			continue;
		v = p + 8 + strspn(p + 8, " \t\n");
		if (*v != '=')
			continue;
		v++;
		v += strspn(v, " \t\n");
		end = v;
		if (*end == '\'') {
			for (end++; *end != '\0' && *end != '\''; end++)
				if (*end == '\\' && end[1] != '\0')
					end++;
			if (*end == '\'')
				end++;
		} else
			end += strcspn(end, " \t\n");
		n = snprintf(out, size, "%.*s****%s", (int)(v - in), in, end);
		return n >= 0 && (size_t)n < size ? 0 : -1;
	}
	n = snprintf(out, size, "%s", in);
	return n >= 0 && (size_t)n < size ? 0 : -1;
}

static const char *
env_or(const char *name, const char *def)
{
	const char	*v = getenv(name);

	return v != NULL && *v != '\0' ? v : def;
}

/*
 * Split a list of broker URLs at spaces, tabs and line ends into the
 * configuration; the list is kept for the life of the program.  URLs
 * past JOBQ_MAX_URLS are left out.
 */
static void
split_urls(struct jobq_config *cfg, const char *list)
{
	static char	*copy;
	char		*p, *save = NULL;

	free(copy);
	cfg->n_urls = 0;
	if ((copy = strdup(list)) != NULL)
		for (p = strtok_r(copy, " \t\n", &save); p != NULL &&
		    cfg->n_urls < JOBQ_MAX_URLS;
		    p = strtok_r(NULL, " \t\n", &save))
			cfg->amqp_urls[cfg->n_urls++] = p;
	if (cfg->n_urls == 0)
		cfg->amqp_urls[cfg->n_urls++] = JOBQ_DEFAULT_AMQP_URL;
	cfg->amqp_url = cfg->amqp_urls[0];
}

/* Fill a configuration from the defaults and the JOBQ_* variables. */
void
jobq_config_init(struct jobq_config *cfg)
{
	long	 size;

	memset(cfg, 0, sizeof(*cfg));
	split_urls(cfg, env_or("JOBQ_AMQP_URL", JOBQ_DEFAULT_AMQP_URL));
	cfg->db_conninfo = env_or("JOBQ_DATABASE_URL", "");
	cfg->exchange = env_or("JOBQ_EXCHANGE", JOBQ_DEFAULT_EXCHANGE);
	cfg->job_queue = env_or("JOBQ_JOB_QUEUE", JOBQ_DEFAULT_JOB_QUEUE);
	cfg->result_queue = env_or("JOBQ_RESULT_QUEUE",
	    JOBQ_DEFAULT_RES_QUEUE);
	cfg->dead_queue = env_or("JOBQ_DEAD_QUEUE", JOBQ_DEFAULT_DEAD_QUEUE);
	cfg->max_size = JOBQ_DEFAULT_MAX_SIZE;
	if (jobq_parse_long(getenv("JOBQ_MAX_SIZE"), 1, JOBQ_MAX_SIZE_LIMIT,
	    &size) == 0)
		cfg->max_size = (size_t)size;
}

/*
 * Parse the number argument of option c in [min, max]; unit names what
 * it counts in the error ("bytes"), or is NULL.
 */
int
jobq_opt_number(int c, const char *arg, long min, long max, const char *unit,
    long *out, struct jobq_err *err)
{
	if (jobq_parse_long(arg, min, max, out) == 0)
		return 0;
	return jobq_errf(err, EX_USAGE, "-%c %s: not a number%s%s from %ld "
	    "to %ld", c, arg, unit != NULL ? " of " : "",
	    unit != NULL ? unit : "", min, max);
}

/*
 * Apply an option that every tool which has it reads the same way:
 * -d conninfo, -E queue, -q queue, -r queue, -S bytes, -u url,
 * -x exchange.  -u may be given more than once: the URLs are tried in
 * turn, and together they replace those of JOBQ_AMQP_URL.
 * Returns 1 when c is one of them, 0 when it is not, -1 with err when
 * its argument is bad.
 */
int
jobq_config_option(struct jobq_config *cfg, int c, const char *arg,
    struct jobq_err *err)
{
	long	 size;

	switch (c) {
	case 'd':
		cfg->db_conninfo = arg;
		return 1;
	case 'E':
		cfg->dead_queue = arg;
		return 1;
	case 'q':
		cfg->job_queue = arg;
		return 1;
	case 'r':
		cfg->result_queue = arg;
		return 1;
	case 'S':
		if (jobq_opt_number(c, arg, 1, JOBQ_MAX_SIZE_LIMIT, "bytes",
		    &size, err) == -1)
			return -1;
		cfg->max_size = (size_t)size;
		return 1;
	case 'u':
		if (!cfg->urls_given) {
			cfg->urls_given = 1;
			cfg->n_urls = 0;
		}
		if (cfg->n_urls == JOBQ_MAX_URLS)
			return jobq_errf(err, EX_USAGE, "-u: at most %d broker "
			    "URLs", JOBQ_MAX_URLS);
		cfg->amqp_urls[cfg->n_urls++] = arg;
		cfg->amqp_url = cfg->amqp_urls[0];
		return 1;
	case 'x':
		cfg->exchange = arg;
		return 1;
	default:
		return 0;
	}
}

static int
name_valid(const char *s)
{
	size_t	 n = strlen(s);

	return n > 0 && n <= 255;
}

/*
 * Check the settings that came from the environment, where a bad value
 * could not be reported at once.
 */
int
jobq_config_check(const struct jobq_config *cfg, struct jobq_err *err)
{
	const char	*s = getenv("JOBQ_MAX_SIZE");
	long		 size;

	if (s != NULL && *s != '\0' &&
	    jobq_parse_long(s, 1, JOBQ_MAX_SIZE_LIMIT, &size) == -1)
		return jobq_errf(err, EX_USAGE, "JOBQ_MAX_SIZE: %s: not a "
		    "number of bytes from 1 to %d", s, JOBQ_MAX_SIZE_LIMIT);
	if (!name_valid(cfg->exchange))
		return jobq_errf(err, EX_USAGE, "exchange name must be 1 "
		    "to 255 bytes");
	if (!name_valid(cfg->job_queue) || !name_valid(cfg->result_queue) ||
	    !name_valid(cfg->dead_queue))
		return jobq_errf(err, EX_USAGE, "queue names must be 1 to "
		    "255 bytes");
	return 0;
}

/*
 * Copy a UUID in canonical lowercase form into out; -1 when s is not a
 * UUID in the 8-4-4-4-12 hexadecimal form.
 */
int
jobq_uuid_canon(const char *s, char out[JOBQ_UUID_LEN + 1])
{
	uuid_t	 u;

	if (strlen(s) != JOBQ_UUID_LEN || uuid_parse(s, u) == -1)
		return -1;
	uuid_unparse_lower(u, out);
	return 0;
}

/*
 * Fill out with n random bytes, n at most 16.  They come from
 * getrandom(2), a block at a time: libuuid seeds its own generator
 * again for every UUID, which costs a stream of jobs more than all the
 * rest of its parsing.  The block left over is not shared with a
 * child, since the tools fork only to exec.
 */
static void
random_bytes(unsigned char *out, size_t n)
{
	static unsigned char	 pool[256];
	static size_t		 left;
	uuid_t			 u;

	if (left < n) {
		/* Early in a boot the kernel's pool may not be ready. */
		if (getrandom(pool, sizeof(pool), GRND_NONBLOCK) !=
		    (ssize_t)sizeof(pool)) {
			uuid_generate_random(u);
			memcpy(out, u, n);
			return;
		}
		left = sizeof(pool);
	}
	left -= n;
	memcpy(out, pool + left, n);
	memset(pool + left, 0, n);
}

/* A new random (version 4) UUID in canonical lowercase form. */
void
jobq_uuid_new(char out[JOBQ_UUID_LEN + 1])
{
	uuid_t	 u;

	random_bytes(u, sizeof(u));
	u[6] = (u[6] & 0x0f) | 0x40;	/* version 4 */
	u[8] = (u[8] & 0x3f) | 0x80;	/* the variant of RFC 4122 */
	uuid_unparse_lower(u, out);
}

/* Whether s is n lowercase hex digits, not all of them zero. */
static int
hex_id(const char *s, size_t n)
{
	size_t	 i;
	int	 zero = 1;

	for (i = 0; i < n; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
		if (s[i] != '0')
			zero = 0;
	}
	return !zero;
}

/*
 * Whether s is a W3C trace context traceparent of version 00:
 * "00-" 32 hex digits of the trace id "-" 16 of the parent id "-" 2 of
 * the flags, in lowercase, with neither id all zeros.
 */
int
jobq_trace_valid(const char *s)
{
	return s != NULL && strlen(s) == JOBQ_TRACE_LEN &&
	    strncmp(s, "00-", 3) == 0 && hex_id(s + 3, 32) && s[35] == '-' &&
	    hex_id(s + 36, 16) && s[52] == '-' &&
	    strspn(s + 53, "0123456789abcdef") == 2;
}

/*
 * Make the traceparent of a new step of a trace: under parent, when it
 * is a valid traceparent, its trace id and flags with an id of our own;
 * else a new trace, sampled, as the W3C's rules say to do with one that
 * is not valid.
 */
void
jobq_trace_new(char out[JOBQ_TRACE_LEN + 1], const char *parent)
{
	static const char	 hex[] = "0123456789abcdef";
	unsigned char		 b[16];
	char			 id[17];
	size_t			 i;

	do
		random_bytes(b, 8);
	while (memcmp(b, "\0\0\0\0\0\0\0\0", 8) == 0);
	for (i = 0; i < 8; i++) {
		id[2 * i] = hex[b[i] >> 4];
		id[2 * i + 1] = hex[b[i] & 15];
	}
	id[16] = '\0';
	if (jobq_trace_valid(parent)) {
		snprintf(out, JOBQ_TRACE_LEN + 1, "00-%.32s-%s-%.2s",
		    parent + 3, id, parent + 53);
		return;
	}
	memcpy(out, "00-", 3);
	do
		random_bytes(b, 16);
	while (memcmp(b, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16) == 0);
	for (i = 0; i < 16; i++) {
		out[3 + 2 * i] = hex[b[i] >> 4];
		out[3 + 2 * i + 1] = hex[b[i] & 15];
	}
	snprintf(out + 35, JOBQ_TRACE_LEN + 1 - 35, "-%s-01", id);
}

/* Whether s matches [A-Za-z0-9][A-Za-z0-9._-]{0,63}. */
int
jobq_type_valid(const char *s)
{
	size_t	 i;

	if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') ||
	    (s[0] >= '0' && s[0] <= '9')))
		return 0;
	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (i >= JOBQ_TYPE_MAX)
			return 0;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' ||
		    c == '-'))
			return 0;
	}
	return 1;
}

/*
 * Keep a health file fresh while a consumer is attached (up), touching
 * it when JOBQ_HEALTH_EVERY seconds have passed since *at, the time of
 * the last touch; remove it when not (up is 0).  NULL path: nothing to
 * do.  -1 with err when the file cannot be touched; *at moves on all
 * the same, so that a failure is reported once a period, not per call.
 */
int
jobq_health(const char *path, int up, time_t *at, struct jobq_err *err)
{
	time_t	 now = time(NULL);
	int	 fd, rc = 0;

	if (path == NULL)
		return 0;
	if (!up) {
		if (*at != 0)
			unlink(path);
		*at = 0;
		return 0;
	}
	if (*at != 0 && now - *at < JOBQ_HEALTH_EVERY)
		return 0;
	*at = now;
	if ((fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644)) == -1 ||
	    futimens(fd, NULL) == -1)
		rc = jobq_errf(err, EX_CANTCREAT, "health file %s: %s", path,
		    strerror(errno));
	if (fd != -1)
		close(fd);
	return rc;
}

/* The value of a hexadecimal digit, or -1 for another character. */
int
jobq_hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
