/*
 * ceiling: what the broker and the system manage alone, without jobq's
 * tools, for scripts/jobq-bench to hold jobq up against.
 *
 *	ceiling publish N SIZE	publish N persistent messages of SIZE
 *				bytes to queue A, up to 256 unconfirmed
 *	ceiling consume N	take N messages from queue A, prefetch
 *				1000, acks batched every 100
 *	ceiling relay N		take N messages from A and publish each to
 *				queue B, acking A once B has confirmed
 *	ceiling drain N		take N messages from queue B, as consume
 *	ceiling one		publish one persistent message to A and
 *				wait for its confirm, from connecting on
 *	ceiling spawn N CMD ...	run CMD N times, 8 at once, each with a
 *				line on its standard input, as jobq-work
 *				runs a handler
 *	ceiling pace RATE	copy standard input to standard output at
 *				RATE lines a second
 *	ceiling each N		publish N messages to A, each waiting for
 *				its confirm before the next
 *	ceiling post PORT N	POST N jobs to jobq-httpd on PORT of
 *				127.0.0.1, one after another on one
 *				kept-alive connection; each must get 202
 *
 * A is JOBQ_JOB_QUEUE and B JOBQ_RESULT_QUEUE, both declared as jobq
 * declares its queues; the broker is the one JOBQ_AMQP_URL names.
 * Prints the seconds that the work took on stdout.  Exits 0, or 2 on
 * any failure, with a message on stderr.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jobq.h"

#define WINDOW		256
#define PREFETCH	1000
#define ACK_EVERY	100
#define SPAWN_AT_ONCE	8

extern char **environ;

static struct jobq_config	 cfg;

static void
fail(const char *what, const struct jobq_err *err)
{
	fprintf(stderr, "ceiling: %s: %s\n", what, err->msg);
	exit(2);
}

static double
now(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long
count(const char *s)
{
	long	 n;

	if (jobq_parse_long(s, 1, 100000000, &n) == -1) {
		fprintf(stderr, "ceiling: %s: not a count\n", s);
		exit(2);
	}
	return n;
}

static amqp_connection_state_t
open_broker(int confirms)
{
	amqp_connection_state_t	 conn;
	struct jobq_err		 err;

	if ((conn = jobq_amqp_connect(&cfg, "ceiling", &err)) == NULL ||
	    jobq_amqp_declare(conn, &cfg, &err) == -1 ||
	    (confirms && jobq_amqp_confirms(conn, &err) == -1))
		fail("broker", &err);
	return conn;
}

/* Read events until the confirms reach seq; the highest confirmed. */
static uint64_t
confirms(amqp_connection_state_t conn, uint64_t confirmed, uint64_t want,
    int wait)
{
	struct jobq_event	 ev = { 0 };
	struct jobq_err		 err;

	while (confirmed < want) {
		if (jobq_amqp_next(conn, wait ? 5000 : 0, &ev, &err) == -1)
			fail("confirm", &err);
		if (ev.kind == JOBQ_EV_NACK || ev.kind == JOBQ_EV_RETURN) {
			jobq_errf(&err, EX_UNAVAILABLE,
			    "refused or unroutable");
			fail("publish", &err);
		}
		if (ev.kind == JOBQ_EV_ACK)
			confirmed = ev.multiple || ev.tag > confirmed ?
			    ev.tag : confirmed;
		else if (ev.kind == JOBQ_EV_NONE && !wait)
			break;
		else if (ev.kind == JOBQ_EV_NONE) {
			jobq_errf(&err, EX_UNAVAILABLE, "no confirm in 5 s");
			fail("publish", &err);
		}
	}
	jobq_event_clear(&ev);
	return confirmed;
}

static void
publish(const char *queue, long n, long size)
{
	amqp_connection_state_t	 conn = open_broker(1);
	struct jobq_err		 err;
	uint64_t		 sent = 0, confirmed = 0;
	char			*body;

	if ((body = malloc((size_t)size)) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		fail("publish", &err);
	}
	memset(body, 'x', (size_t)size);
	while (sent < (uint64_t)n) {
		if (sent - confirmed >= WINDOW)
			confirmed = confirms(conn, confirmed,
			    confirmed + 1, 1);
		if (jobq_amqp_publish(conn, "", queue, 1, NULL, NULL, NULL,
		    body, (size_t)size, &err) == -1)
			fail("publish", &err);
		sent++;
		confirmed = confirms(conn, confirmed, sent, 0);
	}
	confirms(conn, confirmed, sent, 1);
	free(body);
	jobq_amqp_close(conn);
}

/*
 * Take n messages from a queue.  With relay set, publish each to that
 * queue and ack a message once its copy is confirmed: the n-th
 * delivery of the channel is its n-th publish.
 */
static void
consume(const char *queue, long n, const char *relay)
{
	amqp_connection_state_t	 conn = open_broker(relay != NULL);
	struct jobq_event	 ev = { 0 };
	struct jobq_err		 err;
	uint64_t		*tags, got = 0, acked = 0, confirmed = 0;

	if ((tags = calloc((size_t)n + 1, sizeof(*tags))) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		fail("consume", &err);
	}
	if (jobq_amqp_consume(conn, queue, PREFETCH, &err) == -1)
		fail("consume", &err);
	while (acked < (uint64_t)n) {
		if (jobq_amqp_next(conn, 10000, &ev, &err) == -1)
			fail("consume", &err);
		if (ev.kind == JOBQ_EV_NONE) {
			jobq_errf(&err, EX_UNAVAILABLE, "nothing in 10 s");
			fail("consume", &err);
		} else if (ev.kind == JOBQ_EV_DELIVERY) {
			tags[++got] = ev.tag;
			if (relay != NULL && jobq_amqp_publish(conn, "", relay,
			    1, NULL, NULL, NULL, ev.body.bytes, ev.body.len,
			    &err) == -1)
				fail("relay", &err);
			if (relay == NULL && (got % ACK_EVERY == 0 ||
			    got == (uint64_t)n)) {
				if (jobq_amqp_ack(conn, ev.tag, 1, &err) == -1)
					fail("ack", &err);
				acked = got;
			}
		} else if (ev.kind == JOBQ_EV_ACK && relay != NULL) {
			confirmed = ev.tag;
			if (confirmed - acked >= ACK_EVERY ||
			    confirmed == (uint64_t)n) {
				if (jobq_amqp_ack(conn, tags[confirmed], 1,
				    &err) == -1)
					fail("ack", &err);
				acked = confirmed;
			}
		} else if (ev.kind == JOBQ_EV_NACK ||
		    ev.kind == JOBQ_EV_RETURN) {
			jobq_errf(&err, EX_UNAVAILABLE,
			    "refused or unroutable");
			fail("relay", &err);
		}
	}
	jobq_event_clear(&ev);
	free(tags);
	jobq_amqp_close(conn);
}

/* Start cmd with a line on its stdin and its output thrown away. */
static pid_t
start(char **cmd)
{
	posix_spawn_file_actions_t	 fa;
	pid_t				 pid;
	int				 in[2];

	if (pipe(in) == -1) {
		perror("ceiling: pipe");
		exit(2);
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
	posix_spawn_file_actions_addclose(&fa, in[1]);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null",
	    O_WRONLY, 0);
	if (posix_spawnp(&pid, cmd[0], &fa, NULL, cmd, environ) != 0) {
		perror("ceiling: spawn");
		exit(2);
	}
	posix_spawn_file_actions_destroy(&fa);
	close(in[0]);
	if (write(in[1], "{\"n\":1}\n", 8) != 8) {
		/* A command that does not read its input is fine. */
	}
	close(in[1]);
	return pid;
}

static void
spawn(long n, char **cmd)
{
	long	 started = 0, running = 0;
	int	 st;

	signal(SIGPIPE, SIG_IGN);
	while (started < n || running > 0) {
		while (started < n && running < SPAWN_AT_ONCE) {
			start(cmd);
			started++;
			running++;
		}
		if (wait(&st) == -1) {
			perror("ceiling: wait");
			exit(2);
		}
		running--;
	}
}

/* Publish n messages, one confirm at a time, as a careful client does. */
static void
each(const char *queue, long n)
{
	amqp_connection_state_t	 conn = open_broker(1);
	struct jobq_err		 err;
	uint64_t		 i;

	for (i = 1; i <= (uint64_t)n; i++) {
		if (jobq_amqp_publish(conn, "", queue, 1, NULL, NULL, NULL,
		    "{\"type\":\"x\"}", 12, &err) == -1)
			fail("publish", &err);
		confirms(conn, i - 1, i, 1);
	}
	jobq_amqp_close(conn);
}

/* Read one HTTP response on fd: its status, with its body skipped. */
static int
response(int fd, char *buf, size_t size, size_t *have)
{
	char	*end, *cl;
	size_t	 head, body = 0;
	ssize_t	 n;
	int	 status;

	for (;;) {
		buf[*have] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")) != NULL)
			break;
		if (*have + 1 >= size ||
		    (n = read(fd, buf + *have, size - *have - 1)) <= 0)
			return -1;
		*have += (size_t)n;
	}
	head = (size_t)(end - buf) + 4;
	if ((cl = strstr(buf, "Content-Length: ")) != NULL && cl < end)
		body = strtoul(cl + 16, NULL, 10);
	while (*have < head + body) {
		if (*have + 1 >= size ||
		    (n = read(fd, buf + *have, size - *have - 1)) <= 0)
			return -1;
		*have += (size_t)n;
	}
	status = atoi(buf + 9);
	memmove(buf, buf + head + body, *have - head - body);
	*have -= head + body;
	return status;
}

static void
post(long port, long n)
{
	static const char	 req[] = "POST /job HTTP/1.1\r\n"
				    "Host: 127.0.0.1\r\n"
				    "Content-Type: application/json\r\n"
				    "Content-Length: 12\r\n\r\n"
				    "{\"type\":\"x\"}";
	struct sockaddr_in	 sin;
	char			 buf[8192];
	size_t			 have = 0;
	long			 i;
	int			 fd;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1) {
		perror("ceiling: connect");
		exit(2);
	}
	for (i = 0; i < n; i++) {
		if (write(fd, req, sizeof(req) - 1) !=
		    (ssize_t)(sizeof(req) - 1) ||
		    response(fd, buf, sizeof(buf), &have) != 202) {
			fprintf(stderr, "ceiling: POST %ld was not accepted\n",
			    i + 1);
			exit(2);
		}
	}
	close(fd);
}

/* Copy lines from stdin to stdout, RATE a second, flushed as they go. */
static void
pace(long rate)
{
	struct timespec	 ts;
	double		 t0 = now(), due, wait;
	char		*line = NULL;
	size_t		 size = 0;
	long		 n = 0;

	while (getline(&line, &size, stdin) != -1) {
		due = t0 + (double)n++ / rate;
		if ((wait = due - now()) > 0) {
			ts.tv_sec = (time_t)wait;
			ts.tv_nsec = (long)((wait - (double)ts.tv_sec) * 1e9);
			fflush(stdout);
			nanosleep(&ts, NULL);
		}
		fputs(line, stdout);
	}
	free(line);
	if (fflush(stdout) == EOF) {
		perror("ceiling: stdout");
		exit(2);
	}
}

static void
usage(void)
{
	fprintf(stderr, "usage: ceiling publish N SIZE | consume N | relay N "
	    "| drain N | one\n       ceiling spawn N command ... | "
	    "pace RATE | each N | post PORT N\n");
	exit(2);
}

int
main(int argc, char *argv[])
{
	double	 t0;

	if (argc < 2)
		usage();
	jobq_config_init(&cfg);
	t0 = now();
	if (strcmp(argv[1], "publish") == 0 && argc == 4)
		publish(cfg.job_queue, count(argv[2]), count(argv[3]));
	else if (strcmp(argv[1], "consume") == 0 && argc == 3)
		consume(cfg.job_queue, count(argv[2]), NULL);
	else if (strcmp(argv[1], "relay") == 0 && argc == 3)
		consume(cfg.job_queue, count(argv[2]), cfg.result_queue);
	else if (strcmp(argv[1], "drain") == 0 && argc == 3)
		consume(cfg.result_queue, count(argv[2]), NULL);
	else if (strcmp(argv[1], "one") == 0 && argc == 2)
		publish(cfg.job_queue, 1, 64);
	else if (strcmp(argv[1], "spawn") == 0 && argc >= 4)
		spawn(count(argv[2]), argv + 3);
	else if (strcmp(argv[1], "each") == 0 && argc == 3)
		each(cfg.job_queue, count(argv[2]));
	else if (strcmp(argv[1], "post") == 0 && argc == 4)
		post(count(argv[2]), count(argv[3]));
	else if (strcmp(argv[1], "pace") == 0 && argc == 3) {
		pace(count(argv[2]));
		return 0;
	}
	else
		usage();
	printf("%.3f\n", now() - t0);
	return 0;
}
