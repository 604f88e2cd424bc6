/*
 * jobq-work: run a handler for each job on the job queue.
 *
 * One process, one broker connection, one poll(2) loop.  Up to N
 * handlers run at once as child processes, each in a process group of
 * its own, with the payload on stdin.  When a handler ends, its result
 * is published with a confirm, and only when the broker has confirmed
 * the result is the job acknowledged: a crash at any point leaves the
 * job on its queue, to be run again, never lost.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "jobq.h"

#define MAX_JOBS	1000
#define ERR_TAIL	2048	/* bytes of a handler's stderr kept */
#define KILL_GRACE	5	/* seconds from SIGTERM to SIGKILL */

extern char **environ;

/* A job taken from the queue and not yet started. */
struct waiting {
	uint64_t	 tag;
	struct jobq_job	 job;
};

/* A handler process and what it has written so far. */
struct run {
	int		 busy;
	uint64_t	 tag;
	struct jobq_job	 job;
	pid_t		 pid;		/* 0 once reaped */
	int		 wstatus;
	int		 in, out, err;	/* pipe ends; -1 once closed */
	char		*input;
	size_t		 input_len, input_off;
	char		*output;
	size_t		 output_len;
	int		 output_over;
	char		 tail[ERR_TAIL];
	size_t		 tail_len;
	char		 started_at[JOBQ_TIME_LEN + 1];
	struct timespec	 t0;
	time_t		 deadline;	/* 0: none */
	int		 killed;	/* 1: SIGTERM sent, 2: SIGKILL */
	int		 timed_out;
};

/* A published result that the broker has not confirmed yet. */
struct unconfirmed {
	uint64_t	 seq;
	uint64_t	 tag;
};

struct worker {
	struct jobq_config	 cfg;
	amqp_connection_state_t	 conn;
	char			**argv;	/* the handler command */
	const char		*dir;	/* or the handlers folder */
	int			 njobs;
	int			 timeout;
	char			 name[300];
	struct run		*runs;
	int			 running;
	struct waiting		*queue;	/* a ring of prefetch */
	int			 qhead, qlen, prefetch;
	struct unconfirmed	*unconf; /* a ring of prefetch */
	int			 uhead, ulen;
	uint64_t		 next_seq;
	int			 draining;
	long			 done;
};

static const char	*progname = "jobq-work";
static int		 sigpipe_fds[2] = { -1, -1 };
static struct worker	*the_worker;	/* for die() */

static void
usage(int status)
{
	/* Asked for with -h, it is output; after a mistake, a diagnostic. */
	FILE	*f = status == 0 ? stdout : stderr;

	fprintf(f, "usage: %s [-hV] [-j jobs] [-q queue] [-r queue] "
	    "[-S bytes] [-t seconds]\n\t[-u url] [-x exchange] "
	    "{-D dir | [--] command [arg ...]}\n", progname);
	exit(status);
}

static void
bad_option(const struct jobq_err *err)
{
	fprintf(stderr, "%s: %s\n", progname, err->msg);
	usage(EX_USAGE);
}

/*
 * Log the error and exit.  Handlers still running are killed: their
 * jobs were not acked, so the broker gives them to another worker.
 */
static void
die(const struct jobq_err *err)
{
	int	 i;

	jobq_log(JOBQ_ERROR, "exiting", "err=%s", jobq_q(err->msg));
	for (i = 0; the_worker != NULL && the_worker->runs != NULL &&
	    i < the_worker->njobs; i++)
		if (the_worker->runs[i].busy && the_worker->runs[i].pid > 0)
			kill(-the_worker->runs[i].pid, SIGKILL);
	exit(err->code);
}

static void
on_signal(int sig)
{
	char	 c = sig == SIGCHLD ? 'c' : 't';
	int	 saved = errno;

	(void)write(sigpipe_fds[1], &c, 1);
	errno = saved;
}

static void
setup_signals(void)
{
	struct sigaction	 sa;

	if (pipe(sigpipe_fds) == -1) {
		perror(progname);
		exit(EX_OSERR);
	}
	fcntl(sigpipe_fds[0], F_SETFL, O_NONBLOCK);
	fcntl(sigpipe_fds[1], F_SETFL, O_NONBLOCK);
	fcntl(sigpipe_fds[0], F_SETFD, FD_CLOEXEC);
	fcntl(sigpipe_fds[1], F_SETFD, FD_CLOEXEC);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static double
ms_since(const struct timespec *t0)
{
	struct timespec	 now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - t0->tv_sec) * 1e3 +
	    (now.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Whether an executable file exists at path, or on PATH for a name. */
static int
findable(const char *cmd)
{
	const char	*path, *p, *end;
	char		 full[PATH_MAX];

	if (strchr(cmd, '/') != NULL)
		return access(cmd, X_OK) == 0;
	if ((path = getenv("PATH")) == NULL)
		path = "/usr/bin:/bin";
	for (p = path; ; p = end + 1) {
		end = strchr(p, ':');
		if (end == NULL)
			end = p + strlen(p);
		snprintf(full, sizeof(full), "%.*s/%s", (int)(end - p), p, cmd);
		if (access(full, X_OK) == 0)
			return 1;
		if (*end == '\0')
			return 0;
	}
}

/* The environment of a handler: ours, with the job's variables. */
static char **
job_env(const struct jobq_job *job)
{
	static char	 id[64], type[128], attempt[64];
	char		**env;
	size_t		 n = 0, i, k = 0;

	while (environ[n] != NULL)
		n++;
	if ((env = calloc(n + 4, sizeof(*env))) == NULL)
		return NULL;
	for (i = 0; i < n; i++)
		if (strncmp(environ[i], "JOBQ_JOB_", 9) != 0 &&
		    strncmp(environ[i], "JOBQ_ATTEMPT=", 13) != 0)
			env[k++] = environ[i];
	snprintf(id, sizeof(id), "JOBQ_JOB_ID=%s", job->id);
	snprintf(type, sizeof(type), "JOBQ_JOB_TYPE=%s", job->type);
	snprintf(attempt, sizeof(attempt), "JOBQ_ATTEMPT=%d", job->attempt);
	env[k++] = id;
	env[k++] = type;
	env[k++] = attempt;
	env[k] = NULL;
	return env;
}

/* A pipe whose ends no handler inherits but through its stdio. */
static int
cloexec_pipe(int fds[2])
{
	if (pipe(fds) == -1)
		return -1;
	fcntl(fds[0], F_SETFD, FD_CLOEXEC);
	fcntl(fds[1], F_SETFD, FD_CLOEXEC);
	return 0;
}

/*
 * Start the handler of a job with pipes for its stdin, stdout and
 * stderr, in a new process group.  Returns 0, or -1 with a message in
 * err when it could not be started.
 */
static int
spawn(struct worker *w, struct run *r, struct jobq_err *err)
{
	posix_spawn_file_actions_t	 fa;
	posix_spawnattr_t		 at;
	sigset_t			 none, dflt;
	char				 path[PATH_MAX], **env, *one[2];
	char				**argv = w->argv;
	int				 in[2], out[2], er[2], rc;

	if (w->dir != NULL) {
		snprintf(path, sizeof(path), "%s/%s", w->dir, r->job.type);
		if (access(path, X_OK) == -1)
			return jobq_errf(err, EX_DATAERR, "no handler for "
			    "type %s in %s", r->job.type, w->dir);
		one[0] = path;
		one[1] = NULL;
		argv = one;
	}
	if (cloexec_pipe(in) == -1)
		return jobq_errf(err, EX_OSERR, "pipe: %s", strerror(errno));
	if (cloexec_pipe(out) == -1) {
		close(in[0]);
		close(in[1]);
		return jobq_errf(err, EX_OSERR, "pipe: %s", strerror(errno));
	}
	if (cloexec_pipe(er) == -1) {
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		return jobq_errf(err, EX_OSERR, "pipe: %s", strerror(errno));
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
	posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, er[1], STDERR_FILENO);
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	sigemptyset(&dflt);
	sigaddset(&dflt, SIGPIPE);
	sigaddset(&dflt, SIGTERM);
	sigaddset(&dflt, SIGINT);
	sigaddset(&dflt, SIGCHLD);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &dflt);
	posix_spawnattr_setpgroup(&at, 0);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP |
	    POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	if ((env = job_env(&r->job)) == NULL)
		rc = ENOMEM;
	else if (w->dir != NULL)
		rc = posix_spawn(&r->pid, argv[0], &fa, &at, argv, env);
	else
		rc = posix_spawnp(&r->pid, argv[0], &fa, &at, argv, env);
	free(env);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(in[0]);
	close(out[1]);
	close(er[1]);
	if (rc != 0) {
		close(in[1]);
		close(out[0]);
		close(er[0]);
		r->pid = 0;
		return jobq_errf(err, EX_UNAVAILABLE, "cannot run %s: %s",
		    argv[0], strerror(rc));
	}
	r->in = in[1];
	r->out = out[0];
	r->err = er[0];
	fcntl(r->in, F_SETFL, O_NONBLOCK);
	fcntl(r->out, F_SETFL, O_NONBLOCK);
	fcntl(r->err, F_SETFL, O_NONBLOCK);
	return 0;
}

static void
close_fd(int *fd)
{
	if (*fd != -1) {
		close(*fd);
		*fd = -1;
	}
}

/* Start the next waiting job in a free slot. */
static void
start_job(struct worker *w, struct run *r)
{
	struct waiting	*q = &w->queue[w->qhead];
	struct jobq_err	 err;
	const char	*payload;
	int		 timeout;

	memset(r, 0, sizeof(*r));
	r->busy = 1;
	r->tag = q->tag;
	r->job = q->job;
	r->in = r->out = r->err = -1;
	w->qhead = (w->qhead + 1) % w->prefetch;
	w->qlen--;
	w->running++;
	jobq_now(r->started_at);
	clock_gettime(CLOCK_MONOTONIC, &r->t0);
	timeout = r->job.timeout > 0 ? r->job.timeout : w->timeout;
	if (timeout > 0)
		r->deadline = time(NULL) + timeout;
	payload = jobq_json_str(r->job.payload);
	r->input_len = strlen(payload) + 1;
	if ((r->input = malloc(r->input_len)) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
	memcpy(r->input, payload, r->input_len - 1);
	r->input[r->input_len - 1] = '\n';
	if (spawn(w, r, &err) == -1) {
		snprintf(r->tail, sizeof(r->tail), "%s", err.msg);
		r->tail_len = strlen(r->tail);
		r->wstatus = -1;
		return;
	}
	jobq_log(JOBQ_DEBUG, "job started", "id=%s type=%s attempt=%d pid=%ld",
	    r->job.id, r->job.type, r->job.attempt, (long)r->pid);
}

static void
keep_tail(struct run *r, const char *buf, size_t n)
{
	if (n >= ERR_TAIL) {
		memcpy(r->tail, buf + n - ERR_TAIL, ERR_TAIL);
		r->tail_len = ERR_TAIL;
	} else if (r->tail_len + n <= ERR_TAIL) {
		memcpy(r->tail + r->tail_len, buf, n);
		r->tail_len += n;
	} else {
		size_t keep = ERR_TAIL - n;

		memmove(r->tail, r->tail + r->tail_len - keep, keep);
		memcpy(r->tail + keep, buf, n);
		r->tail_len = ERR_TAIL;
	}
}

static void
keep_output(struct worker *w, struct run *r, const char *buf, size_t n)
{
	char	*grown;

	if (r->output_over || r->output_len + n > w->cfg.max_size) {
		r->output_over = 1;
		return;
	}
	if ((grown = realloc(r->output, r->output_len + n + 1)) == NULL) {
		r->output_over = 1;
		return;
	}
	r->output = grown;
	memcpy(r->output + r->output_len, buf, n);
	r->output_len += n;
}

/* Move bytes between a handler and its buffers as its pipes allow. */
static void
pump(struct worker *w, struct run *r, short in_ev, short out_ev,
    short err_ev)
{
	char	 buf[65536];
	ssize_t	 n;

	if (r->in != -1 && in_ev != 0) {
		n = write(r->in, r->input + r->input_off,
		    r->input_len - r->input_off);
		if (n > 0)
			r->input_off += (size_t)n;
		if ((n == -1 && errno != EAGAIN && errno != EINTR) ||
		    r->input_off == r->input_len)
			close_fd(&r->in);
	}
	if (r->out != -1 && out_ev != 0) {
		n = read(r->out, buf, sizeof(buf));
		if (n > 0)
			keep_output(w, r, buf, (size_t)n);
		else if (n == 0 || (errno != EAGAIN && errno != EINTR))
			close_fd(&r->out);
	}
	if (r->err != -1 && err_ev != 0) {
		n = read(r->err, buf, sizeof(buf));
		if (n > 0)
			keep_tail(r, buf, (size_t)n);
		else if (n == 0 || (errno != EAGAIN && errno != EINTR))
			close_fd(&r->err);
	}
}

static struct run *
run_of(struct worker *w, pid_t pid)
{
	int	 i;

	for (i = 0; i < w->njobs; i++)
		if (w->runs[i].busy && w->runs[i].pid == pid)
			return &w->runs[i];
	return NULL;
}

static void
reap(struct worker *w)
{
	struct run	*r;
	pid_t		 pid;
	int		 st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
		if ((r = run_of(w, pid)) != NULL) {
			r->wstatus = st;
			r->pid = 0;
			/* What the handler left running goes with it. */
			kill(-pid, SIGKILL);
		}
}

/* Enforce deadlines: SIGTERM to the group, then SIGKILL after a grace. */
static void
check_deadlines(struct worker *w)
{
	time_t	 now = time(NULL);
	int	 i;

	for (i = 0; i < w->njobs; i++) {
		struct run *r = &w->runs[i];

		if (!r->busy || r->pid == 0 || r->deadline == 0 ||
		    now < r->deadline)
			continue;
		if (r->killed == 0) {
			r->timed_out = 1;
			r->killed = 1;
			kill(-r->pid, SIGTERM);
			r->deadline = now + KILL_GRACE;
		} else if (r->killed == 1) {
			r->killed = 2;
			kill(-r->pid, SIGKILL);
		}
	}
}

/* The text of a failure: what happened, then the end of stderr. */
static char *
failure_text(const struct run *r, int timeout)
{
	char	 what[256], *tail, *s;
	size_t	 n = r->tail_len, start = 0;

	if (r->wstatus == -1)
		snprintf(what, sizeof(what), "not started");
	else if (r->timed_out)
		snprintf(what, sizeof(what), "timed out after %d s", timeout);
	else if (r->output_over)
		snprintf(what, sizeof(what), "output larger than the limit");
	else if (WIFSIGNALED(r->wstatus))
		snprintf(what, sizeof(what), "killed by signal %d",
		    WTERMSIG(r->wstatus));
	else
		snprintf(what, sizeof(what), "exit status %d",
		    WEXITSTATUS(r->wstatus));
	while (n > 0 && (r->tail[n - 1] == '\n' || r->tail[n - 1] == ' '))
		n--;
	/* A tail cut mid-character starts at the next whole one. */
	if (r->tail_len == ERR_TAIL)
		while (start < n && (r->tail[start] & 0xc0) == 0x80)
			start++;
	if ((tail = jobq_utf8_clean(r->tail + start, n - start)) == NULL)
		return NULL;
	if (r->wstatus == -1) {
		return tail;
	}
	if ((s = malloc(strlen(what) + strlen(tail) + 3)) != NULL)
		sprintf(s, *tail != '\0' ? "%s: %s" : "%s%s", what, tail);
	free(tail);
	return s;
}

/*
 * The result of a handler's stdout: its JSON when it is one JSON
 * document, null when empty, else the text as a JSON string.
 */
static json_object *
output_value(struct worker *w, const struct run *r)
{
	json_object	*v;
	struct jobq_err	 err;
	char		*text;
	size_t		 i;

	for (i = 0; i < r->output_len; i++)
		if (r->output[i] != ' ' && r->output[i] != '\t' &&
		    r->output[i] != '\r' && r->output[i] != '\n')
			break;
	if (i == r->output_len)
		return NULL;
	if (jobq_json_parse(r->output, r->output_len, w->cfg.max_size, &v,
	    &err) == 0) {
		if (!jobq_json_has_nul(v))
			return v;
		json_object_put(v);
	}
	if ((text = jobq_utf8_clean(r->output, r->output_len)) == NULL)
		return NULL;
	v = json_object_new_string(text);
	free(text);
	return v;
}

/* Publish the result of a finished handler and free its slot. */
static void
finish(struct worker *w, struct run *r)
{
	struct jobq_result	 res;
	struct jobq_err		 err;
	struct unconfirmed	*u;
	char			*body;
	int			 ok, timeout;

	memset(&res, 0, sizeof(res));
	timeout = r->job.timeout > 0 ? r->job.timeout : w->timeout;
	ok = r->wstatus != -1 && !r->timed_out && !r->output_over &&
	    WIFEXITED(r->wstatus) && WEXITSTATUS(r->wstatus) == 0;
	strcpy(res.id, r->job.id);
	strcpy(res.type, r->job.type);
	strcpy(res.status, ok ? "succeeded" : "failed");
	res.result = ok ? output_value(w, r) : NULL;
	res.error = ok ? NULL : failure_text(r, timeout);
	res.attempts = r->job.attempt;
	res.worker = w->name;
	strcpy(res.submitted_at, r->job.submitted_at);
	strcpy(res.started_at, r->started_at);
	jobq_now(res.finished_at);
	if ((body = jobq_result_encode(&res)) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
	if (jobq_amqp_publish(w->conn, "", w->cfg.result_queue, 1, res.id,
	    res.type, body, strlen(body), &err) == -1)
		die(&err);
	u = &w->unconf[(w->uhead + w->ulen++) % w->prefetch];
	u->seq = w->next_seq++;
	u->tag = r->tag;
	jobq_log(JOBQ_INFO, "job done", "id=%s type=%s status=%s attempt=%d "
	    "ms=%.1f", res.id, res.type, res.status, res.attempts,
	    ms_since(&r->t0));
	free(body);
	json_object_put(res.result);
	free(res.error);
	jobq_job_clear(&r->job);
	free(r->input);
	free(r->output);
	memset(r, 0, sizeof(*r));
	w->running--;
	w->done++;
}

/* Ack the jobs whose results the broker confirmed (or requeue them). */
static void
confirmed(struct worker *w, uint64_t seq, int multiple, int good)
{
	struct jobq_err	 err;
	int		 i;

	for (i = 0; i < w->ulen; i++) {
		struct unconfirmed *u = &w->unconf[(w->uhead + i) %
		    w->prefetch];

		if (u->tag == 0 || !(u->seq == seq ||
		    (multiple && u->seq < seq)))
			continue;
		if (good ? jobq_amqp_ack(w->conn, u->tag, 0, &err) :
		    jobq_amqp_nack(w->conn, u->tag, 1, &err))
			die(&err);
		if (!good)
			jobq_log(JOBQ_WARN, "result refused by the broker; "
			    "job requeued", "tag=%llu",
			    (unsigned long long)u->tag);
		u->tag = 0;
	}
	while (w->ulen > 0 && w->unconf[w->uhead].tag == 0) {
		w->uhead = (w->uhead + 1) % w->prefetch;
		w->ulen--;
	}
}

/* Take a delivery: queue it as a job, or drop it when it is not one. */
static void
delivered(struct worker *w, struct jobq_event *ev)
{
	struct jobq_err	 err, derr;
	struct waiting	*q;

	if (w->draining) {
		if (jobq_amqp_nack(w->conn, ev->tag, 1, &err) == -1)
			die(&err);
		return;
	}
	if (w->qlen == w->prefetch) {
		jobq_errf(&err, EX_SOFTWARE, "broker sent more than the "
		    "prefetch of %d", w->prefetch);
		die(&err);
	}
	q = &w->queue[(w->qhead + w->qlen) % w->prefetch];
	if (jobq_job_decode(ev->body.bytes, ev->body.len, &q->job,
	    &derr) == -1) {
		jobq_log(JOBQ_ERROR, "not a job; message dropped",
		    "message_id=%s err=%s", jobq_q(ev->message_id),
		    jobq_q(derr.msg));
		if (jobq_amqp_nack(w->conn, ev->tag, 0, &err) == -1)
			die(&err);
		return;
	}
	q->tag = ev->tag;
	w->qlen++;
}

/* Stop taking jobs: cancel the consumer and requeue what waits. */
static void
drain(struct worker *w)
{
	struct jobq_err	 err;

	if (w->draining)
		return;
	w->draining = 1;
	jobq_log(JOBQ_INFO, "stopping", "running=%d waiting=%d", w->running,
	    w->qlen);
	if (jobq_amqp_cancel(w->conn, &err) == -1)
		die(&err);
	while (w->qlen > 0) {
		struct waiting *q = &w->queue[w->qhead];

		if (jobq_amqp_nack(w->conn, q->tag, 1, &err) == -1)
			die(&err);
		jobq_job_clear(&q->job);
		w->qhead = (w->qhead + 1) % w->prefetch;
		w->qlen--;
	}
}

static void
broker_events(struct worker *w)
{
	struct jobq_event	 ev = { 0 };
	struct jobq_err		 err;

	do {
		if (jobq_amqp_next(w->conn, 0, &ev, &err) == -1)
			die(&err);
		switch (ev.kind) {
		case JOBQ_EV_DELIVERY:
			delivered(w, &ev);
			break;
		case JOBQ_EV_ACK:
		case JOBQ_EV_NACK:
			confirmed(w, ev.tag, ev.multiple,
			    ev.kind == JOBQ_EV_ACK);
			break;
		case JOBQ_EV_RETURN:
			/* The job is not acked: it stays on its queue. */
			jobq_errf(&err, EX_UNAVAILABLE, "result of job %s "
			    "unroutable: queue %s is gone", ev.message_id,
			    w->cfg.result_queue);
			die(&err);
			break;
		case JOBQ_EV_CANCELLED:
			jobq_errf(&err, EX_UNAVAILABLE, "the broker cancelled "
			    "the consumer of %s", w->cfg.job_queue);
			die(&err);
			break;
		default:
			break;
		}
	} while (ev.kind != JOBQ_EV_NONE);
	jobq_event_clear(&ev);
}

static void
signals(struct worker *w)
{
	char	 c[64];
	ssize_t	 n, i;

	while ((n = read(sigpipe_fds[0], c, sizeof(c))) > 0)
		for (i = 0; i < n; i++)
			if (c[i] == 't')
				drain(w);
	reap(w);
}

/* Wait for something to do, then do it: the body of the main loop. */
static void
step(struct worker *w, struct pollfd *pfd)
{
	int	 n = 2, i, first[MAX_JOBS], timeout;

	pfd[0].fd = sigpipe_fds[0];
	pfd[1].fd = amqp_get_sockfd(w->conn);
	pfd[0].events = pfd[1].events = POLLIN;
	for (i = 0; i < w->njobs; i++) {
		struct run *r = &w->runs[i];

		first[i] = n;
		if (!r->busy)
			continue;
		pfd[n].fd = r->in;
		pfd[n++].events = POLLOUT;
		pfd[n].fd = r->out;
		pfd[n++].events = POLLIN;
		pfd[n].fd = r->err;
		pfd[n++].events = POLLIN;
	}
	for (i = 0; i < n; i++)
		pfd[i].revents = 0;
	timeout = jobq_amqp_pending(w->conn) ? 0 : 1000;
	if (poll(pfd, n, timeout) == -1 && errno != EINTR) {
		struct jobq_err err;

		jobq_errf(&err, EX_OSERR, "poll: %s", strerror(errno));
		die(&err);
	}
	if (pfd[0].revents != 0)
		signals(w);
	for (i = 0; i < w->njobs; i++)
		if (w->runs[i].busy && w->runs[i].wstatus != -1)
			pump(w, &w->runs[i], pfd[first[i]].revents,
			    pfd[first[i] + 1].revents,
			    pfd[first[i] + 2].revents);
	reap(w);
	broker_events(w);
	check_deadlines(w);
}

static void
run(struct worker *w)
{
	struct pollfd	*pfd;
	int		 i;

	if ((pfd = calloc(2 + 3 * (size_t)w->njobs, sizeof(*pfd))) == NULL) {
		perror(progname);
		exit(EX_OSERR);
	}
	while (!w->draining || w->running > 0 || w->ulen > 0) {
		for (i = 0; i < w->njobs; i++) {
			struct run *r = &w->runs[i];

			if (!r->busy && w->qlen > 0 && !w->draining)
				start_job(w, r);
			if (r->busy && r->pid == 0 && r->in == -1 &&
			    r->out == -1 && r->err == -1)
				finish(w, r);
		}
		step(w, pfd);
	}
	free(pfd);
}

static void
options(struct worker *w, int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "handlers",	required_argument,	NULL, 'D' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "jobs",	required_argument,	NULL, 'j' },
		{ "queue",	required_argument,	NULL, 'q' },
		{ "result-queue", required_argument,	NULL, 'r' },
		{ "max-size",	required_argument,	NULL, 'S' },
		{ "timeout",	required_argument,	NULL, 't' },
		{ "amqp-url",	required_argument,	NULL, 'u' },
		{ "version",	no_argument,		NULL, 'V' },
		{ "exchange",	required_argument,	NULL, 'x' },
		{ NULL,		0,			NULL, 0 }
	};
	struct jobq_err	 err;
	long		 v;
	int		 c;

	while ((c = getopt_long(argc, argv, "+D:hj:q:r:S:t:u:Vx:", longopts,
	    NULL)) != -1)
		switch (c) {
		case 'D':
			w->dir = optarg;
			break;
		case 'j':
			if (jobq_opt_number(c, optarg, 1, MAX_JOBS, NULL, &v,
			    &err) == -1)
				bad_option(&err);
			w->njobs = (int)v;
			break;
		case 't':
			if (jobq_opt_number(c, optarg, 1, JOBQ_MAX_TIMEOUT,
			    "seconds", &v, &err) == -1)
				bad_option(&err);
			w->timeout = (int)v;
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
			if (jobq_config_option(&w->cfg, c, optarg, &err) == -1)
				bad_option(&err);
		}
	if ((w->dir == NULL) == (optind == argc)) {
		fprintf(stderr, "%s: give either -D dir or a command\n",
		    progname);
		usage(EX_USAGE);
	}
	w->argv = argv + optind;
}

/* Check what can be checked before taking any job. */
static void
check_handlers(const struct worker *w)
{
	struct stat	 st;

	if (w->dir != NULL && (stat(w->dir, &st) == -1 ||
	    !S_ISDIR(st.st_mode))) {
		fprintf(stderr, "%s: %s: not a folder\n", progname, w->dir);
		exit(EX_NOINPUT);
	}
	if (w->dir == NULL && !findable(w->argv[0])) {
		fprintf(stderr, "%s: %s: command not found\n", progname,
		    w->argv[0]);
		exit(EX_UNAVAILABLE);
	}
}

static void
setup(struct worker *w)
{
	struct jobq_err	 err;
	char		 host[256];
	long		 cpus;

	if (w->njobs == 0) {
		cpus = sysconf(_SC_NPROCESSORS_ONLN);
		w->njobs = cpus < 1 ? 1 : cpus > MAX_JOBS ? MAX_JOBS :
		    (int)cpus;
	}
	w->prefetch = 2 * w->njobs;
	w->runs = calloc((size_t)w->njobs, sizeof(*w->runs));
	w->queue = calloc((size_t)w->prefetch, sizeof(*w->queue));
	w->unconf = calloc((size_t)w->prefetch, sizeof(*w->unconf));
	if (w->runs == NULL || w->queue == NULL || w->unconf == NULL) {
		perror(progname);
		exit(EX_OSERR);
	}
	if (gethostname(host, sizeof(host)) == -1)
		strcpy(host, "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(w->name, sizeof(w->name), "%s:%ld", host, (long)getpid());
	setup_signals();
	if ((w->conn = jobq_amqp_open(w->cfg.amqp_url, progname,
	    &err)) == NULL || jobq_amqp_declare(w->conn, &w->cfg, &err) == -1 ||
	    jobq_amqp_confirms(w->conn, &err) == -1 ||
	    jobq_amqp_consume(w->conn, w->cfg.job_queue, w->prefetch,
	    &err) == -1)
		die(&err);
	w->next_seq = 1;
}

int
main(int argc, char *argv[])
{
	static struct worker	 w;
	struct jobq_err		 err;

	jobq_log_init(progname);
	jobq_config_init(&w.cfg);
	the_worker = &w;
	options(&w, argc, argv);
	if (jobq_config_check(&w.cfg, &err) == -1) {
		fprintf(stderr, "%s: %s\n", progname, err.msg);
		return err.code;
	}
	check_handlers(&w);
	setup(&w);
	jobq_log(JOBQ_INFO, "started", "queue=%s jobs=%d prefetch=%d",
	    jobq_q(w.cfg.job_queue), w.njobs, w.prefetch);
	run(&w);
	jobq_amqp_close(w.conn);
	jobq_log(JOBQ_INFO, "stopped", "jobs_done=%ld", w.done);
	return 0;
}
