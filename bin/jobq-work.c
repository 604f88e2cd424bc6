/*
 * jobq-work: run a handler for each job on the job queue.
 *
 * One process, one broker connection, one poll(2) loop.  Up to N
 * handlers run at once as child processes, each in a process group of
 * its own, with the payload on stdin.  When a handler ends, what its
 * outcome calls for is published with confirms: the result, and for a
 * failure either a copy of the job on a retry queue, marked with when
 * it is due, or a copy on the dead-letter queue.  Only when the broker
 * has confirmed all of it is the job acknowledged: a crash at any point
 * leaves the job on its queue, never lost.  A second connection hands
 * the retries that are due back to the job queue, in the same way.
 *
 * A job delivered again after a worker died with it is counted in a
 * header of a copy put back on the job queue, so that a job that keeps
 * killing its worker ends on the dead-letter queue.  A lost broker
 * connection is opened again with a growing pause between tries.
 */
/* For posix_spawn_file_actions_addchdir_np(), which -c needs. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
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
#define MAX_STEPS	32
#define ERR_TAIL	2048	/* bytes of a handler's stderr kept */
#define KILL_GRACE	5	/* seconds from SIGTERM to SIGKILL */
#define MAX_BACKOFF	30	/* seconds between tries to reconnect */
#define DEFAULT_STEPS	"5,30,120,600"
#define PERSISTENT_PREFETCH 256	/* jobs in hand at least, with -p */
#define MAX_ENV		64	/* -e options */
#define MAX_GROUPS	256	/* of the user of -U */
#define MESSAGE_OVERHEAD 4096	/* bytes of a job message beyond its document */
#define MOVE_EVERY_MS	1000	/* between looks at the retry queues */
#define RUNNING_AFTER_MS 100	/* of a job, before it is said to run */
#define MOVE_PAUSE_MS	5000	/* after the retries' connection failed */

extern char **environ;

/* A job taken from the queue and not yet started. */
struct waiting {
	uint64_t	 tag;
	struct jobq_job	 job;
	long		 deliveries;	/* ended without an outcome before */
	time_t		 at;		/* when it was delivered */
};

/* A handler process and what it has written so far. */
struct run {
	int		 busy;
	uint64_t	 tag;
	struct jobq_job	 job;
	long		 deliveries;
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
	long		 deadline;	/* of jobq_now_ms(); 0: none */
	long		 report_at;	/* of jobq_now_ms(); 0: said or never */
	int		 killed;	/* 1: SIGTERM sent, 2: SIGKILL */
	int		 timed_out;
	time_t		 reaped_at;
	int		 permanent;	/* failed for good, not retried */
	int		 abandoned;	/* stopped by a shutdown: requeue */
	int		 replied;	/* a persistent handler answered */
	int		 eof;		/* it closed its output instead */
	int		 handed;	/* given to a persistent handler */
	int		 retire;	/* its persistent handler must go */
};

/*
 * A persistent handler (-p): one process that takes the jobs of its
 * slot one after another, a line each way per job.
 */
struct proc {
	pid_t		 pid;		/* 0: none running */
	int		 in, out;	/* -1 once closed */
};

/* The user that handlers run as (-U), looked up at the start. */
struct user {
	char		*home, *user, *logname;	/* NAME=VALUE */
	uid_t		 uid;
	gid_t		 gid;
	gid_t		 groups[MAX_GROUPS];
	int		 ngroups;
};

/*
 * A publish that the broker has not confirmed yet, and the delivery it
 * settles: a delivery is acked once all its publishes are confirmed.
 */
struct unconfirmed {
	uint64_t	 seq;
	uint64_t	 tag;
};

struct worker {
	struct jobq_config	 cfg;
	amqp_connection_state_t	 conn;
	char			**argv;	/* the handler command */
	const char		*dir;	/* or the handlers folder */
	const char		*env_opts[MAX_ENV];	/* of -e */
	int			 nenv_opts;
	char			**env;	/* what handlers start from */
	size_t			 nenv;
	const char		*workdir;	/* of handlers (-c), or NULL */
	struct user		*as;		/* of handlers (-U), or NULL */
	const char		*as_name;	/* the -U given */
	int			 persistent;	/* -p */
	struct proc		*procs;	/* of -p, one per slot */
	int			 njobs;
	int			 timeout;
	int			 max_attempts;
	int			 max_deliveries;
	int			 consumer_timeout;
	int			 grace;
	long			 running_after;	/* -s, in ms */
	int			 jitter;
	int			 steps[MAX_STEPS];
	int			 nsteps;
	char			 retry_queue[MAX_STEPS][300];
	amqp_connection_state_t	 mover;	/* hands due retries back */
	uint64_t		 mover_seq;	/* its publishes */
	long			 move_at;	/* of jobq_now_ms() */
	char			 mover_err[sizeof(((struct jobq_err *)0)->msg)];
	const char		*health;	/* file kept fresh, or NULL */
	time_t			 health_at;
	char			 name[300];
	struct run		*runs;
	int			 running;
	struct waiting		*queue;	/* a ring of prefetch */
	int			 qhead, qlen, prefetch;
	struct unconfirmed	*unconf;
	int			 nunconf, unconf_size;
	uint64_t		 next_seq;
	int			 draining;
	int			 cancelled;	/* the broker took the cancel */
	time_t			 stop_at;	/* when a shutdown abandons */
	int			 broken;	/* the connection failed */
	struct jobq_err		 lost_err;
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

	fprintf(f, "usage: %s [-hJpV] [-a attempts] [-B steps] "
	    "[-C seconds] [-c dir]\n\t[-E queue] [-e name[=value]] "
	    "[-f file] [-g seconds] [-j jobs]\n\t[-q queue] "
	    "[-R deliveries] [-r queue] [-S bytes] [-s ms]\n\t"
	    "[-t seconds] [-U user] [-u url] [-x exchange]\n\t"
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
	for (i = 0; the_worker != NULL && the_worker->procs != NULL &&
	    i < the_worker->njobs; i++)
		if (the_worker->procs[i].pid > 0)
			kill(-the_worker->procs[i].pid, SIGKILL);
	if (the_worker != NULL && the_worker->health != NULL)
		unlink(the_worker->health);
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

/*
 * The variables of ours that every handler gets: none of them carries a
 * secret.  Others, the broker URL and the database's among them, reach
 * a handler only when -e names them.
 */
static const char *const passed_env[] = {
	"HOME", "LANG", "LANGUAGE", "LOGNAME", "PATH", "SHELL", "TERM",
	"TMPDIR", "TZ", "USER", "JOBQ_DEAD_QUEUE", "JOBQ_EXCHANGE",
	"JOBQ_JOB_QUEUE", "JOBQ_LOG", "JOBQ_MAX_SIZE", "JOBQ_RESULT_QUEUE",
	NULL
};

/* Whether an entry NAME=VALUE of an environment has the name given. */
static int
env_named(const char *entry, const char *name, size_t len)
{
	return strncmp(entry, name, len) == 0 && entry[len] == '=';
}

/*
 * Set an entry NAME=VALUE in an environment of *n entries, replacing
 * the one of the same name; there must be room for one more.
 */
static void
env_put(char **env, size_t *n, char *entry)
{
	size_t	 len = strcspn(entry, "="), i;

	for (i = 0; i < *n; i++)
		if (env_named(env[i], entry, len)) {
			env[i] = entry;
			return;
		}
	env[(*n)++] = entry;
}

/* Whether a variable is one that jobq-work sets for each job. */
static int
job_variable(const char *entry)
{
	return strncmp(entry, "JOBQ_JOB_ID=", 12) == 0 ||
	    strncmp(entry, "JOBQ_JOB_TYPE=", 14) == 0 ||
	    strncmp(entry, "JOBQ_ATTEMPT=", 13) == 0 ||
	    strncmp(entry, "TRACEPARENT=", 12) == 0;
}

/* Whether a variable of ours goes to handlers without being asked for. */
static int
passed(const char *entry)
{
	size_t	 len = strcspn(entry, "="), i;

	if (strncmp(entry, "LC_", 3) == 0)
		return 1;
	for (i = 0; passed_env[i] != NULL; i++)
		if (strlen(passed_env[i]) == len &&
		    env_named(entry, passed_env[i], len))
			return 1;
	return 0;
}

/*
 * Make the environment that every handler starts from: the variables
 * of passed_env that we have, then those of -e, each either NAME=VALUE
 * or NAME, which copies ours when we have it, but for the job's own
 * variables, which belong to each job.  The strings are ours or the
 * command line's; only the array is allocated.
 */
static void
make_env(struct worker *w)
{
	size_t	 n = 0, k = 0, i, len;
	int	 j;

	while (environ[n] != NULL)
		n++;
	if ((w->env = calloc(n + (size_t)w->nenv_opts + 4,
	    sizeof(*w->env))) == NULL) {
		perror(progname);
		exit(EX_OSERR);
	}
	for (i = 0; i < n; i++)
		if (passed(environ[i]))
			env_put(w->env, &k, environ[i]);
	if (w->as != NULL) {
		env_put(w->env, &k, w->as->home);
		env_put(w->env, &k, w->as->user);
		env_put(w->env, &k, w->as->logname);
	}
	for (j = 0; j < w->nenv_opts; j++) {
		const char *opt = w->env_opts[j];

		if (strchr(opt, '=') != NULL) {
			if (!job_variable(opt))
				env_put(w->env, &k, (char *)(uintptr_t)opt);
			continue;
		}
		len = strlen(opt);
		for (i = 0; i < n; i++)
			if (env_named(environ[i], opt, len) &&
			    !job_variable(environ[i]))
				env_put(w->env, &k, environ[i]);
	}
	w->nenv = k;
}

/*
 * The environment of a handler: the one of make_env(), with the job's
 * variables, or without them for a persistent handler (job NULL).
 */
static char **
job_env(const struct worker *w, const struct jobq_job *job)
{
	static char	 id[64], type[128], attempt[64];
	static char	 trace[JOBQ_TRACE_LEN + 16];
	char		**env;
	size_t		 k = w->nenv;

	if ((env = calloc(w->nenv + 5, sizeof(*env))) == NULL)
		return NULL;
	memcpy(env, w->env, w->nenv * sizeof(*env));
	if (job == NULL)
		return env;
	snprintf(id, sizeof(id), "JOBQ_JOB_ID=%s", job->id);
	snprintf(type, sizeof(type), "JOBQ_JOB_TYPE=%s", job->type);
	snprintf(attempt, sizeof(attempt), "JOBQ_ATTEMPT=%d", job->attempt);
	snprintf(trace, sizeof(trace), "TRACEPARENT=%s", job->trace);
	env[k++] = id;
	env[k++] = type;
	env[k++] = attempt;
	env[k++] = trace;
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

static void
close_fd(int *fd)
{
	if (*fd != -1) {
		close(*fd);
		*fd = -1;
	}
}

/* The fds of a handler's stdin, stdout and stderr (-1: ours). */
struct stdio {
	int	 in, out, err;
};

/* Start argv with posix_spawn(): 0 or an errno. */
static int
spawn_process(const struct worker *w, char **argv, int use_path,
    char **env, const struct stdio *io, pid_t *pid)
{
	posix_spawn_file_actions_t	 fa;
	posix_spawnattr_t		 at;
	sigset_t			 none, dflt;
	int				 rc;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, io->in, STDIN_FILENO);
	posix_spawn_file_actions_adddup2(&fa, io->out, STDOUT_FILENO);
	if (io->err != -1)
		posix_spawn_file_actions_adddup2(&fa, io->err, STDERR_FILENO);
	/* In glibc since 2.29, and in musl. */
	if (w->workdir != NULL)
		posix_spawn_file_actions_addchdir_np(&fa, w->workdir);
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
	if (use_path)
		rc = posix_spawnp(pid, argv[0], &fa, &at, argv, env);
	else
		rc = posix_spawn(pid, argv[0], &fa, &at, argv, env);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	return rc;
}

/*
 * The child's side of fork_process(): become the handler, or report
 * why not through the pipe fd and exit.
 */
static void
become(const struct worker *w, char **argv, int use_path, char **env,
    const struct stdio *io, int fd)
{
	const struct user	*u = w->as;
	sigset_t		 none;
	int			 e;

	setpgid(0, 0);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/*
	 * The user changes before the folder, which it must be able to
	 * enter.  One who is not root may only name itself, and has
	 * nothing to change.
	 */
	if (dup2(io->in, STDIN_FILENO) != -1 &&
	    dup2(io->out, STDOUT_FILENO) != -1 &&
	    (io->err == -1 || dup2(io->err, STDERR_FILENO) != -1) &&
	    (geteuid() != 0 ||
	    (setgroups((size_t)u->ngroups, u->groups) == 0 &&
	    setgid(u->gid) == 0 && setuid(u->uid) == 0)) &&
	    (w->workdir == NULL || chdir(w->workdir) == 0)) {
		if (use_path)
			execvpe(argv[0], argv, env);
		else
			execve(argv[0], argv, env);
	}
	e = errno;
	(void)write(fd, &e, sizeof(e));
	_exit(127);
}

/*
 * Start argv as the user of -U, which posix_spawn() cannot do: fork,
 * and let the child take on the user's groups and ids before exec.
 * What fails in the child comes back as its errno through a pipe that
 * a successful exec closes.  0 or an errno.
 */
static int
fork_process(const struct worker *w, char **argv, int use_path,
    char **env, const struct stdio *io, pid_t *pid)
{
	sigset_t	 all, old;
	int		 fds[2], e = 0;
	ssize_t		 n;

	if (cloexec_pipe(fds) == -1)
		return errno;
	/* No handler of ours may run in the child before exec. */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	if ((*pid = fork()) == 0)
		become(w, argv, use_path, env, io, fds[1]);
	e = *pid == -1 ? errno : 0;
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(fds[1]);
	if (*pid != -1) {
		/* So that a kill of the group never misses the child. */
		setpgid(*pid, *pid);
		while ((n = read(fds[0], &e, sizeof(e))) == -1 &&
		    errno == EINTR)
			;
		if (n == (ssize_t)sizeof(e))
			waitpid(*pid, NULL, 0);
		else
			e = 0;
	}
	close(fds[0]);
	return e;
}

/*
 * Start argv in a new process group, with pipes for its stdin and
 * stdout, and for its stderr when err_fd is not NULL (else it shares
 * ours).  The command is looked up in PATH unless its path is given.
 * Returns 0, or -1 with a message in err.
 */
static int
start_process(const struct worker *w, char **argv, int use_path,
    char **env, pid_t *pid, int *in_fd, int *out_fd, int *err_fd,
    struct jobq_err *err)
{
	struct stdio	 io;
	int		 in[2], out[2], er[2] = { -1, -1 }, rc;

	if (cloexec_pipe(in) == -1)
		return jobq_errf(err, EX_OSERR, "pipe: %s", strerror(errno));
	if (cloexec_pipe(out) == -1 || (err_fd != NULL &&
	    cloexec_pipe(er) == -1)) {
		rc = errno;
		close(in[0]);
		close(in[1]);
		close_fd(&out[0]);
		close_fd(&out[1]);
		return jobq_errf(err, EX_OSERR, "pipe: %s", strerror(rc));
	}
	io.in = in[0];
	io.out = out[1];
	io.err = er[1];
	rc = w->as != NULL ? fork_process(w, argv, use_path, env, &io, pid) :
	    spawn_process(w, argv, use_path, env, &io, pid);
	close(in[0]);
	close(out[1]);
	close_fd(&er[1]);
	if (rc != 0) {
		close(in[1]);
		close(out[0]);
		close_fd(&er[0]);
		*pid = 0;
		return jobq_errf(err, EX_UNAVAILABLE, "cannot run %s: %s",
		    argv[0], strerror(rc));
	}
	*in_fd = in[1];
	*out_fd = out[0];
	fcntl(*in_fd, F_SETFL, O_NONBLOCK);
	fcntl(*out_fd, F_SETFL, O_NONBLOCK);
	if (err_fd != NULL) {
		*err_fd = er[0];
		fcntl(*err_fd, F_SETFL, O_NONBLOCK);
	}
	return 0;
}

/*
 * Start the handler of a job, with its stderr captured.  Returns 0, or
 * -1 with a message in err when it could not be started.
 */
static int
spawn(struct worker *w, struct run *r, struct jobq_err *err)
{
	char	 path[PATH_MAX], **env, *one[2];
	char	**argv = w->argv;
	int	 rc;

	if (w->dir != NULL) {
		snprintf(path, sizeof(path), "%s/%s", w->dir, r->job.type);
		if (access(path, X_OK) == -1)
			return jobq_errf(err, EX_DATAERR, "no handler for "
			    "type %s in %s", r->job.type, w->dir);
		one[0] = path;
		one[1] = NULL;
		argv = one;
	}
	if ((env = job_env(w, &r->job)) == NULL)
		return jobq_errf(err, EX_OSERR, "out of memory");
	rc = start_process(w, argv, w->dir == NULL, env, &r->pid, &r->in,
	    &r->out, &r->err, err);
	free(env);
	return rc;
}

/*
 * Give a job to the persistent handler of its slot, starting one when
 * none runs.  The run borrows the handler's pipes.
 */
static int
hand_over(struct worker *w, struct run *r, struct jobq_err *err)
{
	struct proc	*p = &w->procs[r - w->runs];
	char		**env;
	int		 rc;

	/* One that ended since the last job is not reaped yet. */
	if (p->pid > 0 && waitpid(p->pid, NULL, WNOHANG) == p->pid) {
		kill(-p->pid, SIGKILL);
		p->pid = 0;
		close_fd(&p->in);
		close_fd(&p->out);
	}
	if (p->pid == 0) {
		if ((env = job_env(w, NULL)) == NULL)
			return jobq_errf(err, EX_OSERR, "out of memory");
		rc = start_process(w, w->argv, 1, env, &p->pid, &p->in,
		    &p->out, NULL, err);
		free(env);
		if (rc == -1)
			return -1;
	}
	r->pid = p->pid;
	r->in = p->in;
	r->out = p->out;
	r->handed = 1;
	return 0;
}

static void	 put_back(struct worker *, uint64_t, const struct jobq_job *,
		    long);
static int	 send_result(struct worker *, uint64_t, const struct jobq_job *,
		    const char *, json_object *, const char *, const char *);

/*
 * The broker takes a job back once it has been unacknowledged for its
 * consumer_timeout, time in the prefetch included.  Put back the jobs
 * at the head of the prefetch that could not finish within it: their
 * next delivery starts the clock again.
 */
static void
put_back_late(struct worker *w)
{
	time_t	 now = time(NULL);
	int	 timeout;

	while (w->qlen > 0) {
		struct waiting *q = &w->queue[w->qhead];

		timeout = q->job.timeout > 0 ? q->job.timeout : w->timeout;
		if (timeout == 0 || timeout >= w->consumer_timeout ||
		    now - q->at + timeout < w->consumer_timeout)
			return;
		jobq_log(JOBQ_INFO, "job waited too long to start; put back",
		    "id=%s waited=%lld trace_id=%.32s", q->job.id,
		    (long long)(now - q->at), q->job.trace + 3);
		put_back(w, q->tag, &q->job, q->deliveries);
		jobq_job_clear(&q->job);
		w->qhead = (w->qhead + 1) % w->prefetch;
		w->qlen--;
	}
}

/*
 * The line a persistent handler reads for a job: a compact JSON object
 * of its id, type, attempt and payload.  NULL: out of memory.
 */
static char *
request_line(const struct jobq_job *job)
{
	json_object	*o;
	char		*s;

	if ((o = json_object_new_object()) == NULL)
		return NULL;
	json_object_object_add(o, "id", json_object_new_string(job->id));
	json_object_object_add(o, "type", json_object_new_string(job->type));
	json_object_object_add(o, "attempt",
	    json_object_new_int(job->attempt));
	json_object_object_add(o, "traceparent",
	    json_object_new_string(job->trace));
	json_object_object_add(o, "payload", json_object_get(job->payload));
	s = strdup(jobq_json_str(o));
	json_object_put(o);
	return s;
}

/* Start the next waiting job in a free slot. */
static void
start_job(struct worker *w, struct run *r)
{
	struct waiting	*q = &w->queue[w->qhead];
	struct jobq_err	 err;
	const char	*payload;
	char		*request;
	int		 timeout;

	memset(r, 0, sizeof(*r));
	r->busy = 1;
	r->tag = q->tag;
	r->job = q->job;
	r->deliveries = q->deliveries;
	r->in = r->out = r->err = -1;
	w->qhead = (w->qhead + 1) % w->prefetch;
	w->qlen--;
	w->running++;
	jobq_now(r->started_at);
	clock_gettime(CLOCK_MONOTONIC, &r->t0);
	timeout = r->job.timeout > 0 ? r->job.timeout : w->timeout;
	if (timeout > 0)
		r->deadline = jobq_now_ms() + timeout * 1000L;
	if ((request = w->persistent ? request_line(&r->job) : NULL) == NULL &&
	    w->persistent) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
	payload = request != NULL ? request : jobq_json_str(r->job.payload);
	r->input_len = strlen(payload) + 1;
	if ((r->input = malloc(r->input_len)) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
	memcpy(r->input, payload, r->input_len - 1);
	r->input[r->input_len - 1] = '\n';
	free(request);
	/* Past the broker's limit the job would be taken from us. */
	if (timeout >= w->consumer_timeout)
		jobq_errf(&err, EX_DATAERR, "timeout of %d s is not below the "
		    "broker's consumer_timeout of %d s", timeout,
		    w->consumer_timeout);
	if (timeout >= w->consumer_timeout || (w->persistent ?
	    hand_over(w, r, &err) : spawn(w, r, &err)) == -1) {
		snprintf(r->tail, sizeof(r->tail), "%s", err.msg);
		r->tail_len = strlen(r->tail);
		r->wstatus = -1;
		r->permanent = err.code == EX_DATAERR;
		return;
	}
	jobq_log(JOBQ_DEBUG, "job started", "id=%s type=%s attempt=%d pid=%ld "
	    "trace_id=%.32s", r->job.id, r->job.type, r->job.attempt,
	    (long)r->pid, r->job.trace + 3);
	if (w->running_after == 0)
		send_result(w, 0, &r->job, "running", NULL, NULL,
		    r->started_at);
	else
		r->report_at = jobq_now_ms() + w->running_after;
}

/*
 * Publish that the jobs started -s milliseconds ago still run (with -s
 * 0, start_job() says so itself).  Those that end sooner are never said
 * to run: their final result says all.
 * That a job runs is news, not a duty: no delivery waits for its
 * confirm, and the final result replaces it in the jobs table
 * whichever of the two comes first.
 */
static void
report_running(struct worker *w)
{
	long	 now_ms = jobq_now_ms();
	int	 i;

	for (i = 0; i < w->njobs; i++) {
		struct run *r = &w->runs[i];

		if (!r->busy || r->report_at == 0 || now_ms < r->report_at)
			continue;
		r->report_at = 0;
		if (r->pid != 0 && !r->replied && !r->eof)
			send_result(w, 0, &r->job, "running", NULL, NULL,
			    r->started_at);
	}
}

/* How long poll(2) may wait: until the next job is to be said to run. */
static int
poll_timeout(const struct worker *w)
{
	long	 now_ms = jobq_now_ms(), t = 1000;
	int	 i;

	for (i = 0; i < w->njobs; i++) {
		const struct run *r = &w->runs[i];

		if (r->busy && r->report_at != 0 && r->report_at - now_ms < t)
			t = r->report_at > now_ms ? r->report_at - now_ms : 0;
	}
	return (int)t;
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

/* Done with a pipe of a run: closed, or given back to its handler. */
static void
let_go(struct worker *w, int *fd)
{
	if (w->persistent)
		*fd = -1;
	else
		close_fd(fd);
}

/*
 * A persistent handler's reply is its first line.  Anything after it
 * would be taken for the reply to the next job: such a handler goes.
 */
static void
check_reply(struct run *r)
{
	char	*nl;

	if (r->output == NULL ||
	    (nl = memchr(r->output, '\n', r->output_len)) == NULL)
		return;
	r->replied = 1;
	r->in = r->out = -1;
	if ((size_t)(nl - r->output) + 1 != r->output_len)
		r->retire = 1;
	r->output_len = (size_t)(nl - r->output);
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
			let_go(w, &r->in);
	}
	if (r->out != -1 && out_ev != 0) {
		n = read(r->out, buf, sizeof(buf));
		if (n > 0)
			keep_output(w, r, buf, (size_t)n);
		else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			let_go(w, &r->out);
			/* A persistent handler without an output is no use. */
			if (w->persistent && r->pid > 0) {
				r->eof = 1;
				kill(-r->pid, SIGKILL);
			}
		}
		if (w->persistent)
			check_reply(r);
		/* A reply past the size limit will never end well. */
		if (w->persistent && r->output_over && r->pid > 0) {
			r->out = -1;
			kill(-r->pid, SIGKILL);
		}
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

/* A persistent handler that ended: close what is left of it. */
static void
forget_proc(struct worker *w, pid_t pid)
{
	int	 i;

	for (i = 0; w->persistent && i < w->njobs; i++)
		if (w->procs[i].pid == pid) {
			/* What it left running goes with it. */
			kill(-pid, SIGKILL);
			w->procs[i].pid = 0;
			close_fd(&w->procs[i].in);
			close_fd(&w->procs[i].out);
		}
}

/*
 * Stop a persistent handler at once, one that broke the protocol or
 * ran out of time; the next job of its slot starts another.
 */
static void
retire(struct worker *w, int slot)
{
	struct proc	*p = &w->procs[slot];

	if (p->pid > 0)
		kill(-p->pid, SIGKILL);
	p->pid = 0;
	close_fd(&p->in);
	close_fd(&p->out);
}

static void
reap(struct worker *w)
{
	struct run	*r;
	pid_t		 pid;
	int		 st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if ((r = run_of(w, pid)) != NULL) {
			r->wstatus = st;
			r->pid = 0;
			r->reaped_at = time(NULL);
			/* What the handler left running goes with it. */
			kill(-pid, SIGKILL);
			if (w->persistent)
				r->in = r->out = -1;
		}
		forget_proc(w, pid);
	}
}

/* Stop a handler's group: SIGTERM now, SIGKILL after a grace. */
static void
terminate(struct run *r, long now_ms)
{
	if (r->killed == 0) {
		r->killed = 1;
		kill(-r->pid, SIGTERM);
		r->deadline = now_ms + KILL_GRACE * 1000L;
	} else if (r->killed == 1 && now_ms >= r->deadline) {
		r->killed = 2;
		kill(-r->pid, SIGKILL);
	}
}

/*
 * Enforce the time limits of jobs, and the grace period of a shutdown,
 * after which the jobs still running are stopped and put back.  Time
 * limits count in milliseconds of the monotonic clock: in whole
 * seconds of the calendar, a limit of N could end a job after N - 1.
 */
static void
check_deadlines(struct worker *w)
{
	time_t	 now = time(NULL);
	long	 now_ms = jobq_now_ms();
	int	 i, stop = w->draining && now >= w->stop_at;

	for (i = 0; i < w->njobs; i++) {
		struct run *r = &w->runs[i];

		if (r->busy && r->pid == 0 && r->wstatus != -1 &&
		    now - r->reaped_at >= KILL_GRACE) {
			/* Whatever holds its pipes has left its group. */
			close_fd(&r->in);
			close_fd(&r->out);
			close_fd(&r->err);
		}
		if (!r->busy || r->pid == 0)
			continue;
		if (stop && !r->abandoned) {
			r->abandoned = 1;
			jobq_log(JOBQ_WARN, "grace period over; stopping job",
			    "id=%s pid=%ld trace_id=%.32s", r->job.id,
			    (long)r->pid, r->job.trace + 3);
			terminate(r, now_ms);
		} else if (r->deadline != 0 && now_ms >= r->deadline) {
			if (r->killed == 0 && !r->abandoned)
				r->timed_out = 1;
			terminate(r, now_ms);
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
	else if (r->eof && WIFSIGNALED(r->wstatus) &&
	    WTERMSIG(r->wstatus) == SIGKILL)
		snprintf(what, sizeof(what), "the handler closed its output "
		    "without a reply");
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
	if (r->wstatus == -1)
		return tail;
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

/* The broker connection failed: remember why, and recover in run(). */
static void
lost(struct worker *w, const struct jobq_err *err)
{
	if (err->code != EX_UNAVAILABLE)
		die(err);
	if (!w->broken) {
		w->broken = 1;
		w->lost_err = *err;
	}
}

/*
 * Publish a message whose confirm the delivery tag waits for.  -1 when
 * the connection failed, which lost() has noted.
 */
static int
send_for(struct worker *w, uint64_t tag, const struct jobq_pub *pub,
    const char *body, size_t len)
{
	struct jobq_err		 err;
	struct unconfirmed	*u;

	if (w->broken)
		return -1;
	if (w->nunconf == w->unconf_size) {
		int n = w->unconf_size * 2;

		u = realloc(w->unconf, (size_t)n * sizeof(*u));
		if (u == NULL) {
			jobq_errf(&err, EX_OSERR, "out of memory");
			die(&err);
		}
		w->unconf = u;
		w->unconf_size = n;
	}
	if (jobq_amqp_send(w->conn, pub, body, len, &err) == -1) {
		lost(w, &err);
		return -1;
	}
	u = &w->unconf[w->nunconf++];
	u->seq = w->next_seq++;
	u->tag = tag;
	return 0;
}

/*
 * Publish to a queue by name through the default exchange; a NULL
 * content type is JSON's.  A job's message carries its trace.
 */
static int
send_to(struct worker *w, uint64_t tag, const char *queue, const char *id,
    const char *type, const char *trace, struct jobq_headers *h,
    const char *content_type, const char *body, size_t len)
{
	struct jobq_pub	 pub;

	memset(&pub, 0, sizeof(pub));
	pub.exchange = "";
	pub.key = queue;
	pub.mandatory = 1;
	pub.id = id;
	pub.type = type;
	pub.content_type = content_type;
	pub.trace = trace;
	if (h != NULL)
		pub.headers = jobq_headers_table(h);
	return send_for(w, tag, &pub, body, len);
}

/*
 * Put a copy of a message on the dead-letter queue, with headers that
 * say why, where and when; attempts is 0 for what is not a job.
 */
static int
dead_letter(struct worker *w, uint64_t tag, const char *id,
    const char *type, const char *trace, const char *reason, int attempts,
    const char *body, size_t len, const char *content_type)
{
	struct jobq_headers	 h = { .n = 0 };
	char			 now[JOBQ_TIME_LEN + 1];

	jobq_now(now);
	jobq_header_str(&h, JOBQ_H_REASON, reason);
	jobq_header_str(&h, JOBQ_H_QUEUE, w->cfg.job_queue);
	jobq_header_str(&h, JOBQ_H_WORKER, w->name);
	jobq_header_str(&h, JOBQ_H_FAILED_AT, now);
	if (attempts > 0)
		jobq_header_int(&h, JOBQ_H_ATTEMPTS, attempts);
	return send_to(w, tag, w->cfg.dead_queue, id, type, trace, &h,
	    content_type, body, len);
}

/*
 * Publish a result message for a job: a running one has started_at and
 * no end, the others end now.
 */
static int
send_result(struct worker *w, uint64_t tag, const struct jobq_job *job,
    const char *status, json_object *result, const char *error,
    const char *started_at)
{
	struct jobq_result	 res;
	struct jobq_err		 err;
	char			*body;
	int			 rc;

	memset(&res, 0, sizeof(res));
	strcpy(res.id, job->id);
	strcpy(res.type, job->type);
	snprintf(res.status, sizeof(res.status), "%s", status);
	res.result = result;
	res.error = (char *)(uintptr_t)error;
	res.attempts = job->attempt;
	res.worker = w->name;
	strcpy(res.submitted_at, job->submitted_at);
	strcpy(res.trace, job->trace);
	/* A job that failed for good goes to the dead-letter queue too. */
	if (strcmp(status, "failed") == 0)
		res.dead_queue = (char *)(uintptr_t)w->cfg.dead_queue;
	if (strcmp(status, "running") != 0)
		jobq_now(res.finished_at);
	strcpy(res.started_at, started_at != NULL ? started_at :
	    res.finished_at);
	if ((body = jobq_result_encode(&res)) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
	rc = send_to(w, tag, w->cfg.result_queue, res.id, res.type, res.trace,
	    NULL, NULL, body, strlen(body));
	free(body);
	return rc;
}

/* A job's message again, as it came or with another attempt number. */
static char *
job_message(const struct jobq_job *job, int attempt)
{
	struct jobq_job	 copy = *job;
	struct jobq_err	 err;
	char		*s;

	copy.attempt = attempt;
	if ((s = jobq_job_encode(&copy)) == NULL) {
		jobq_errf(&err, EX_OSERR, "out of memory");
		die(&err);
	}
	return s;
}

/*
 * Put a job that a stop keeps from running back on the job queue, with
 * its count of deliveries as it was: a stop is not a worker's death,
 * and should not bring a job nearer to the limit of -R.
 */
static void
put_back(struct worker *w, uint64_t tag, const struct jobq_job *job,
    long deliveries)
{
	struct jobq_headers	 h = { .n = 0 };
	char			*body = job_message(job, job->attempt);

	if (deliveries > 0)
		jobq_header_int(&h, JOBQ_H_DELIVERIES, deliveries);
	send_to(w, tag, w->cfg.job_queue, job->id, job->type, job->trace, &h,
	    NULL, body, strlen(body));
	free(body);
}

/*
 * End a job for good: a failed result and a dead copy of the job, whose
 * reason is the error.
 */
static void
fail_job(struct worker *w, uint64_t tag, const struct jobq_job *job,
    const char *error, const char *reason, const char *started_at)
{
	char	*body = job_message(job, job->attempt);

	if (send_result(w, tag, job, "failed", NULL, error, started_at) == 0)
		dead_letter(w, tag, job->id, job->type, job->trace, reason,
		    job->attempt, body, strlen(body), NULL);
	free(body);
}

static int
attempts_of(const struct worker *w, const struct jobq_job *job)
{
	return job->max_attempts > 0 ? job->max_attempts : w->max_attempts;
}

/*
 * The retry queue for a job whose attempt failed: the step of that
 * attempt, the last one for the attempts past it, and with jitter
 * sometimes the step before, so that jobs that failed together do not
 * come back together.
 */
static int
retry_step(const struct worker *w, int attempt)
{
	int	 i = attempt - 1 < w->nsteps ? attempt - 1 : w->nsteps - 1;

	if (w->jitter && i > 0 && random() % 2 == 0)
		i--;
	return i;
}

/* Put a job on a retry queue, and publish that it is retrying. */
static void
retry_job(struct worker *w, struct run *r, const char *error)
{
	struct jobq_headers	 h = { .n = 0 };
	int			 i = retry_step(w, r->job.attempt);
	char			*body;

	body = job_message(&r->job, r->job.attempt + 1);
	jobq_header_int(&h, JOBQ_H_DUE, jobq_wall_ms() + w->steps[i] * 1000L);
	if (send_to(w, r->tag, w->retry_queue[i], r->job.id, r->job.type,
	    r->job.trace, &h, NULL, body, strlen(body)) == 0)
		send_result(w, r->tag, &r->job, "retrying", NULL, error,
		    r->started_at);
	free(body);
	jobq_log(JOBQ_INFO, "job done", "id=%s type=%s status=retrying "
	    "attempt=%d ms=%.1f retry_in=%d error=%s trace_id=%.32s",
	    r->job.id, r->job.type, r->job.attempt, ms_since(&r->t0),
	    w->steps[i], jobq_q(error), r->job.trace + 3);
}

static int
succeeded(const struct run *r)
{
	return r->wstatus != -1 && !r->timed_out && !r->output_over &&
	    WIFEXITED(r->wstatus) && WEXITSTATUS(r->wstatus) == 0;
}

/* Whether a failure is for good: exit 65, or the job cannot be run. */
static int
permanent(const struct run *r)
{
	return r->permanent || (r->wstatus != -1 && !r->timed_out &&
	    !r->output_over && WIFEXITED(r->wstatus) &&
	    WEXITSTATUS(r->wstatus) == EX_DATAERR);
}

static void
free_run(struct worker *w, struct run *r)
{
	jobq_job_clear(&r->job);
	free(r->input);
	free(r->output);
	memset(r, 0, sizeof(*r));
	w->running--;
}

/*
 * Read a persistent handler's reply into the outcome of its job, as
 * exit statuses give it for one-shot handlers: succeeded (with the
 * result), retry (exit 75), fail (exit 65) or failed (another exit).
 * Returns 1 when it succeeded with *value; 0 with *error and perhaps
 * r->permanent set when it failed.
 */
static int
read_reply(struct worker *w, struct run *r, json_object **value,
    char **error)
{
	json_object	*o = NULL, *v;
	struct jobq_err	 err;
	const char	*st, *text = NULL;
	int		 rc = 0;

	*value = NULL;
	*error = NULL;
	if (jobq_json_parse(r->output, r->output_len, w->cfg.max_size, &o,
	    &err) == -1)
		text = err.msg;
	else if (!json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "status", &v) ||
	    !json_object_is_type(v, json_type_string))
		text = "no \"status\" string";
	else if (jobq_json_has_nul(o))
		text = "a NUL character";
	if (text != NULL) {
		r->retire = 1;
		if ((*error = malloc(strlen(text) + 32)) != NULL)
			sprintf(*error, "bad reply from the handler: %s", text);
		json_object_put(o);
		return 0;
	}
	st = json_object_get_string(v);
	if (strcmp(st, "succeeded") == 0) {
		if (json_object_object_get_ex(o, "result", &v))
			*value = json_object_get(v);
		rc = 1;
	} else if (strcmp(st, "fail") == 0 || strcmp(st, "retry") == 0 ||
	    strcmp(st, "failed") == 0) {
		r->permanent = strcmp(st, "fail") == 0;
		if (json_object_object_get_ex(o, "error", &v) &&
		    json_object_is_type(v, json_type_string))
			text = json_object_get_string(v);
		else
			text = st;
		*error = strdup(text);
	} else {
		r->retire = 1;
		*error = strdup("bad reply from the handler: unknown status");
	}
	json_object_put(o);
	return rc;
}

/*
 * Publish what a finished handler's outcome calls for and free its
 * slot: a result, and for a failure a retry or a dead copy.
 */
static void
finish(struct worker *w, struct run *r)
{
	struct jobq_err	 err;
	json_object	*value;
	char		*error, reason[ERR_TAIL + 256];
	int		 ok, timeout, max = attempts_of(w, &r->job);

	timeout = r->job.timeout > 0 ? r->job.timeout : w->timeout;
	/* A reply that came after the time limit is too late. */
	ok = w->persistent && r->replied && !r->abandoned && !r->timed_out ?
	    read_reply(w, r, &value, &error) : (error = NULL, value = NULL,
	    !w->persistent && succeeded(r));
	if (r->handed && (!r->replied || r->retire || r->timed_out ||
	    r->output_over))
		retire(w, (int)(r - w->runs));
	if (r->abandoned) {
		put_back(w, r->tag, &r->job, r->deliveries);
		jobq_log(JOBQ_INFO, "job requeued", "id=%s type=%s "
		    "trace_id=%.32s", r->job.id, r->job.type, r->job.trace + 3);
		free(error);
		json_object_put(value);
	} else if (ok) {
		if (!w->persistent)
			value = output_value(w, r);
		send_result(w, r->tag, &r->job, "succeeded", value, NULL,
		    r->started_at);
		json_object_put(value);
		jobq_log(JOBQ_INFO, "job done", "id=%s type=%s "
		    "status=succeeded attempt=%d ms=%.1f trace_id=%.32s",
		    r->job.id, r->job.type, r->job.attempt, ms_since(&r->t0),
		    r->job.trace + 3);
		w->done++;
	} else {
		if (error == NULL && (error = failure_text(r,
		    timeout)) == NULL) {
			jobq_errf(&err, EX_OSERR, "out of memory");
			die(&err);
		}
		if (!permanent(r) && r->job.attempt < max)
			retry_job(w, r, error);
		else {
			if (permanent(r))
				snprintf(reason, sizeof(reason), "%s", error);
			else
				snprintf(reason, sizeof(reason), "%s (attempt "
				    "%d of %d)", error, r->job.attempt, max);
			fail_job(w, r->tag, &r->job, error, reason,
			    r->started_at);
			jobq_log(JOBQ_INFO, "job done", "id=%s type=%s "
			    "status=failed attempt=%d ms=%.1f error=%s "
			    "trace_id=%.32s", r->job.id, r->job.type,
			    r->job.attempt, ms_since(&r->t0), jobq_q(error),
			    r->job.trace + 3);
		}
		free(error);
		w->done++;
	}
	free_run(w, r);
}

/* Whether a delivery still waits for a publish of its own. */
static int
tag_pending(const struct worker *w, uint64_t tag)
{
	int	 i;

	for (i = 0; i < w->nunconf; i++)
		if (w->unconf[i].tag == tag)
			return 1;
	return 0;
}

/* Forget the publishes of a delivery once it is settled otherwise. */
static void
forget_tag(struct worker *w, uint64_t tag)
{
	int	 i;

	for (i = 0; i < w->nunconf; i++)
		if (w->unconf[i].tag == tag)
			w->unconf[i].tag = 0;
}

/*
 * Settle the deliveries whose publishes the broker confirmed: ack each
 * once all of its publishes are confirmed, and put it back on its
 * queue when the broker refused one of them.
 */
static void
confirmed(struct worker *w, uint64_t seq, int multiple, int good)
{
	struct jobq_err	 err;
	uint64_t	 tag;
	int		 i, k;

	for (i = 0; i < w->nunconf && !w->broken; i++) {
		struct unconfirmed *u = &w->unconf[i];

		if (u->tag == 0 || !(u->seq == seq ||
		    (multiple && u->seq < seq)))
			continue;
		tag = u->tag;
		u->tag = 0;
		if (!good) {
			forget_tag(w, tag);
			jobq_log(JOBQ_WARN, "publish refused by the broker; "
			    "job requeued", "tag=%llu",
			    (unsigned long long)tag);
			if (jobq_amqp_nack(w->conn, tag, 1, &err) == -1)
				lost(w, &err);
		} else if (!tag_pending(w, tag) &&
		    jobq_amqp_ack(w->conn, tag, 0, &err) == -1)
			lost(w, &err);
	}
	for (i = k = 0; i < w->nunconf; i++)
		if (w->unconf[i].tag != 0)
			w->unconf[k++] = w->unconf[i];
	w->nunconf = k;
}

/* A message that is not a job goes to the dead-letter queue as it is. */
static void
not_a_job(struct worker *w, struct jobq_event *ev, const char *why)
{
	char	 reason[sizeof(((struct jobq_err *)0)->msg) + 16];

	snprintf(reason, sizeof(reason), "not a job: %s", why);
	jobq_log(JOBQ_WARN, "not a job; dead-lettered", "message_id=%s "
	    "err=%s", jobq_q(ev->message_id), jobq_q(why));
	dead_letter(w, ev->tag, *ev->message_id != '\0' ? ev->message_id :
	    NULL, NULL, NULL, reason, 0, ev->body.bytes, ev->body.len,
	    *ev->content_type != '\0' ? ev->content_type :
	    "application/octet-stream");
}

/*
 * A job delivered again was given to a worker that stopped without an
 * outcome, perhaps killed by the job itself.  Count that in a copy put
 * back on the job queue, since the broker counts nothing that outlives
 * the worker, and fail the job once the count reaches the limit.
 * Returns 1 when the delivery is dealt with here.
 */
static int
redelivered(struct worker *w, struct jobq_event *ev, struct waiting *q)
{
	struct jobq_headers	 h = { .n = 0 };
	char			 error[256];
	long			 n = q->deliveries + 1;

	if (!ev->redelivered)
		return 0;
	if (n >= w->max_deliveries) {
		snprintf(error, sizeof(error), "delivered %ld time%s without "
		    "an outcome: the job may be killing its worker", n,
		    n == 1 ? "" : "s");
		jobq_log(JOBQ_WARN, "job done", "id=%s type=%s status=failed "
		    "attempt=%d error=%s trace_id=%.32s", q->job.id,
		    q->job.type, q->job.attempt, jobq_q(error),
		    q->job.trace + 3);
		fail_job(w, ev->tag, &q->job, error, error, NULL);
	} else {
		jobq_header_int(&h, JOBQ_H_DELIVERIES, n);
		jobq_log(JOBQ_INFO, "job delivered again; counted and "
		    "requeued", "id=%s deliveries=%ld trace_id=%.32s",
		    q->job.id, n, q->job.trace + 3);
		send_to(w, ev->tag, w->cfg.job_queue, q->job.id, q->job.type,
		    q->job.trace, &h, NULL, ev->body.bytes, ev->body.len);
	}
	jobq_job_clear(&q->job);
	return 1;
}

/* Take a delivery: queue it as a job, or deal with it at once. */
static void
delivered(struct worker *w, struct jobq_event *ev)
{
	struct jobq_err	 err, derr;
	struct waiting	*q;
	char		 why[400], trace[JOBQ_TRACE_LEN + 2];

	if (w->qlen == w->prefetch) {
		jobq_errf(&err, EX_SOFTWARE, "broker sent more than the "
		    "prefetch of %d", w->prefetch);
		die(&err);
	}
	q = &w->queue[(w->qhead + w->qlen) % w->prefetch];
	if (!jobq_event_is_json(ev)) {
		snprintf(why, sizeof(why), "content type %s, not "
		    "application/json", ev->content_type);
		not_a_job(w, ev, why);
		return;
	}
	/* A job message is its document and a few hundred bytes more. */
	if (ev->body.len > w->cfg.max_size + MESSAGE_OVERHEAD) {
		snprintf(why, sizeof(why), "%zu bytes, more than the %zu of "
		    "a job of the largest size", ev->body.len,
		    w->cfg.max_size + MESSAGE_OVERHEAD);
		not_a_job(w, ev, why);
		return;
	}
	if (jobq_job_decode(ev->body.bytes, ev->body.len, &q->job,
	    &derr) == -1) {
		not_a_job(w, ev, derr.msg);
		return;
	}
	/*
	 * A job from a client of its own may carry its trace only in the
	 * header, or none: then the job starts one.
	 */
	if (*q->job.trace == '\0') {
		if (jobq_event_header_str(ev, "traceparent", trace,
		    sizeof(trace)) == -1 || !jobq_trace_valid(trace))
			jobq_trace_new(q->job.trace, NULL);
		else
			strcpy(q->job.trace, trace);
	}
	if (jobq_event_header_int(ev, JOBQ_H_DELIVERIES,
	    &q->deliveries) == -1 || q->deliveries < 0)
		q->deliveries = 0;
	if (w->draining) {
		/* Sent before the broker saw the cancel: put it back. */
		put_back(w, ev->tag, &q->job, q->deliveries);
		jobq_job_clear(&q->job);
		return;
	}
	if (redelivered(w, ev, q))
		return;
	q->tag = ev->tag;
	q->at = time(NULL);
	w->qlen++;
}

/* Keep the health file fresh while consuming; remove it otherwise. */
static void
health(struct worker *w, int up)
{
	struct jobq_err	 err;

	if (jobq_health(w->health, up, &w->health_at, &err) == -1)
		jobq_log(JOBQ_WARN, "cannot touch the health file", "err=%s",
		    jobq_q(err.msg));
}

/* Stop taking jobs: cancel the consumer and requeue what waits. */
static void
drain(struct worker *w)
{
	struct jobq_err	 err;

	if (w->draining) {
		/* A second signal ends the grace period at once. */
		w->stop_at = time(NULL);
		return;
	}
	w->draining = 1;
	w->stop_at = time(NULL) + w->grace;
	health(w, 0);
	jobq_log(JOBQ_INFO, "stopping", "running=%d waiting=%d", w->running,
	    w->qlen);
	if (!w->broken && jobq_amqp_cancel(w->conn, &err) == -1)
		lost(w, &err);
	while (w->qlen > 0) {
		struct waiting *q = &w->queue[w->qhead];

		put_back(w, q->tag, &q->job, q->deliveries);
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
		if (w->broken)
			break;
		if (jobq_amqp_next(w->conn, 0, &ev, &err) == -1) {
			lost(w, &err);
			break;
		}
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
			jobq_errf(&err, EX_UNAVAILABLE, "message for job %s "
			    "unroutable: queue %s is gone", ev.message_id,
			    ev.routing_key);
			die(&err);
			break;
		case JOBQ_EV_CANCELLED:
			jobq_errf(&err, EX_UNAVAILABLE, "the broker cancelled "
			    "the consumer of %s", w->cfg.job_queue);
			die(&err);
			break;
		case JOBQ_EV_CANCEL_OK:
			w->cancelled = 1;
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

/*
 * Hand the retries that are due back to the job queue, over a
 * connection of their own, so that the wait for the broker's confirms
 * does not mix with the deliveries of the main one.  A failure is
 * logged once for each new reason, and the next look comes later.
 */
static void
move_retries(struct worker *w)
{
	struct jobq_err	 err;
	struct timeval	 tv = { 10, 0 };
	long		 moved;
	int		 i;

	w->move_at = jobq_now_ms() + MOVE_EVERY_MS;
	if (w->mover == NULL) {
		if ((w->mover = jobq_amqp_connect(&w->cfg, progname,
		    &err)) == NULL)
			goto fail;
		amqp_set_rpc_timeout(w->mover, &tv);
		w->mover_seq = 0;
		if (jobq_amqp_confirms(w->mover, &err) == -1)
			goto fail;
	}
	for (i = 0; i < w->nsteps; i++) {
		if (jobq_amqp_move_due(w->mover, w->retry_queue[i],
		    w->cfg.job_queue, jobq_wall_ms(), &w->mover_seq, &moved,
		    &err) == -1)
			goto fail;
		if (moved > 0)
			jobq_log(JOBQ_DEBUG, "retries due, handed back",
			    "queue=%s jobs=%ld", jobq_q(w->retry_queue[i]),
			    moved);
	}
	*w->mover_err = '\0';
	return;
fail:
	if (err.code != EX_UNAVAILABLE)
		die(&err);
	if (strcmp(err.msg, w->mover_err) != 0)
		jobq_log(JOBQ_WARN, "cannot hand retries back; trying again",
		    "err=%s", jobq_q(err.msg));
	snprintf(w->mover_err, sizeof(w->mover_err), "%s", err.msg);
	if (w->mover != NULL)
		amqp_destroy_connection(w->mover);
	w->mover = NULL;
	w->move_at = jobq_now_ms() + MOVE_PAUSE_MS;
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
	timeout = jobq_amqp_pending(w->conn) ? 0 : poll_timeout(w);
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
	/* A handler's end is reaped when its SIGCHLD wakes us, not here. */
	broker_events(w);
	check_deadlines(w);
	if (!w->broken)
		report_running(w);
	if (!w->draining && !w->broken)
		health(w, 1);
	if (w->nsteps > 0 && !w->draining && jobq_now_ms() >= w->move_at)
		move_retries(w);
}

/*
 * Open a connection to the first broker that answers, declare what the
 * worker needs and start consuming.  -1 with err when it failed.
 */
static int
connect_broker(struct worker *w, struct jobq_err *err)
{
	int	 i;

	if ((w->conn = jobq_amqp_connect(&w->cfg, progname, err)) == NULL)
		return -1;
	if (jobq_amqp_declare(w->conn, &w->cfg, err) == -1)
		goto fail;
	for (i = 0; i < w->nsteps; i++)
		if (jobq_amqp_declare_retry(w->conn, &w->cfg, w->steps[i],
		    w->retry_queue[i], sizeof(w->retry_queue[i]), err) == -1)
			goto fail;
	if (jobq_amqp_confirms(w->conn, err) == -1 ||
	    jobq_amqp_consume(w->conn, w->cfg.job_queue, w->prefetch,
	    err) == -1)
		goto fail;
	w->next_seq = 1;
	return 0;
fail:
	amqp_destroy_connection(w->conn);
	w->conn = NULL;
	return -1;
}

/*
 * Sleep for some seconds while watching for signals; 1 when a signal
 * asked us to stop.
 */
static int
pause_for(struct worker *w, int seconds)
{
	struct pollfd	 pfd = { sigpipe_fds[0], POLLIN, 0 };
	long		 until = jobq_now_ms() + seconds * 1000L, left;
	char		 c[64];
	ssize_t		 n, i;

	while ((left = until - jobq_now_ms()) > 0) {
		if (poll(&pfd, 1, (int)left) <= 0)
			continue;
		while ((n = read(sigpipe_fds[0], c, sizeof(c))) > 0)
			for (i = 0; i < n; i++)
				if (c[i] == 't')
					return 1;
		reap(w);
	}
	return 0;
}

/*
 * Kill every handler and forget every job: the deliveries of a broken
 * connection are back on their queue, and will run again.
 */
static void
abandon_all(struct worker *w)
{
	int	 i;

	for (i = 0; i < w->njobs; i++) {
		struct run *r = &w->runs[i];

		if (!r->busy)
			continue;
		if (r->pid > 0) {
			kill(-r->pid, SIGKILL);
			waitpid(r->pid, NULL, 0);
		}
		if (w->persistent)
			r->in = r->out = -1;
		close_fd(&r->in);
		close_fd(&r->out);
		close_fd(&r->err);
		free_run(w, r);
	}
	for (i = 0; w->persistent && i < w->njobs; i++)
		retire(w, i);
	for (; w->qlen > 0; w->qlen--) {
		jobq_job_clear(&w->queue[w->qhead].job);
		w->qhead = (w->qhead + 1) % w->prefetch;
	}
	w->nunconf = 0;
}

/*
 * The broker connection failed: abandon what it carried, then connect
 * again, pausing longer after each failure, until it works or a signal
 * asks us to stop.
 */
static void
recover(struct worker *w)
{
	struct jobq_err	 err, last = w->lost_err;
	char		 url[512];
	int		 delay, next;

	jobq_log(JOBQ_WARN, "broker connection lost", "err=%s running=%d",
	    jobq_q(w->lost_err.msg), w->running);
	health(w, 0);
	abandon_all(w);
	amqp_destroy_connection(w->conn);
	w->conn = NULL;
	w->broken = 0;
	for (delay = 1; !w->draining; delay = next) {
		next = delay * 2 > MAX_BACKOFF ? MAX_BACKOFF : delay * 2;
		if (pause_for(w, delay)) {
			w->draining = 1;
			break;
		}
		if (connect_broker(w, &err) == 0) {
			jobq_mask_secret(w->cfg.amqp_urls[w->cfg.url_turn],
			    url, sizeof(url));
			jobq_log(JOBQ_INFO, "broker connection restored",
			    "url=%s", jobq_q(url));
			health(w, 1);
			return;
		}
		if (err.code != EX_UNAVAILABLE)
			die(&err);
		/* Each new reason is worth a line; its repeats are not. */
		jobq_log(strcmp(err.msg, last.msg) != 0 ? JOBQ_WARN :
		    JOBQ_DEBUG, "broker still unavailable", "err=%s "
		    "retry_in=%d", jobq_q(err.msg), next);
		last = err;
	}
}

/*
 * Let the persistent handlers go: the end of their input asks them to
 * exit; those still there after a grace are killed.
 */
static void
stop_procs(struct worker *w)
{
	long	 until = jobq_now_ms() + KILL_GRACE * 1000L;
	int	 i, left;

	for (i = 0; w->persistent && i < w->njobs; i++)
		close_fd(&w->procs[i].in);
	do {
		reap(w);
		for (i = left = 0; w->persistent && i < w->njobs; i++)
			left += w->procs[i].pid > 0;
		if (left > 0)
			usleep(50000);
	} while (left > 0 && jobq_now_ms() < until);
	for (i = 0; w->persistent && i < w->njobs; i++)
		if (w->procs[i].pid > 0) {
			kill(-w->procs[i].pid, SIGKILL);
			waitpid(w->procs[i].pid, NULL, 0);
			retire(w, i);
		}
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
	/*
	 * A stop ends once the broker has taken the cancel, after which no
	 * delivery is on its way, and every job has been settled.
	 */
	while (w->conn != NULL && (!w->draining || w->running > 0 ||
	    w->nunconf > 0 || (!w->cancelled && time(NULL) < w->stop_at +
	    KILL_GRACE))) {
		for (i = 0; i < w->njobs; i++) {
			struct run *r = &w->runs[i];

			if (!r->busy && w->qlen > 0 && !w->draining)
				put_back_late(w);
			if (!r->busy && w->qlen > 0 && !w->draining)
				start_job(w, r);
			if (r->busy && (w->persistent ? r->replied ||
			    r->pid == 0 : r->pid == 0 && r->in == -1 &&
			    r->out == -1 && r->err == -1))
				finish(w, r);
		}
		if (!w->broken)
			step(w, pfd);
		if (w->broken)
			recover(w);
	}
	free(pfd);
}

/* Read a list of retry delays such as "5,30,120" into w->steps. */
static void
parse_steps(struct worker *w, const char *arg)
{
	const char	*p = arg;
	char		 one[32];
	long		 v;
	size_t		 n;

	w->nsteps = 0;
	for (;;) {
		n = strcspn(p, ",");
		snprintf(one, sizeof(one), "%.*s", (int)n, p);
		if (n >= sizeof(one) || w->nsteps == MAX_STEPS ||
		    jobq_parse_long(one, 1, JOBQ_MAX_TIMEOUT, &v) == -1) {
			fprintf(stderr, "%s: -B %s: not a list of at most %d "
			    "numbers of seconds from 1 to %d\n", progname, arg,
			    MAX_STEPS, JOBQ_MAX_TIMEOUT);
			usage(EX_USAGE);
		}
		w->steps[w->nsteps++] = (int)v;
		if (p[n] == '\0')
			break;
		p += n + 1;
	}
}

/* Take -e NAME or -e NAME=VALUE. */
static void
env_option(struct worker *w, const char *arg)
{
	size_t	 len = strcspn(arg, "=");

	if (len == 0 || strspn(arg, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789_") != len ||
	    (arg[0] >= '0' && arg[0] <= '9')) {
		fprintf(stderr, "%s: -e %s: not a variable name, nor one "
		    "with =value\n", progname, arg);
		usage(EX_USAGE);
	}
	if (w->nenv_opts == MAX_ENV) {
		fprintf(stderr, "%s: -e: at most %d variables\n", progname,
		    MAX_ENV);
		usage(EX_USAGE);
	}
	w->env_opts[w->nenv_opts++] = arg;
}

static int
number(int c, long min, long max, const char *unit)
{
	struct jobq_err	 err;
	long		 v;

	if (jobq_opt_number(c, optarg, min, max, unit, &v, &err) == -1)
		bad_option(&err);
	return (int)v;
}

static void
options(struct worker *w, int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "max-attempts", required_argument,	NULL, 'a' },
		{ "backoff",	required_argument,	NULL, 'B' },
		{ "consumer-timeout", required_argument, NULL, 'C' },
		{ "chdir",	required_argument,	NULL, 'c' },
		{ "handlers",	required_argument,	NULL, 'D' },
		{ "dead-queue",	required_argument,	NULL, 'E' },
		{ "env",	required_argument,	NULL, 'e' },
		{ "health-file", required_argument,	NULL, 'f' },
		{ "grace",	required_argument,	NULL, 'g' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "no-jitter",	no_argument,		NULL, 'J' },
		{ "persistent",	no_argument,		NULL, 'p' },
		{ "jobs",	required_argument,	NULL, 'j' },
		{ "queue",	required_argument,	NULL, 'q' },
		{ "max-deliveries", required_argument,	NULL, 'R' },
		{ "result-queue", required_argument,	NULL, 'r' },
		{ "running-after", required_argument,	NULL, 's' },
		{ "max-size",	required_argument,	NULL, 'S' },
		{ "timeout",	required_argument,	NULL, 't' },
		{ "amqp-url",	required_argument,	NULL, 'u' },
		{ "user",	required_argument,	NULL, 'U' },
		{ "version",	no_argument,		NULL, 'V' },
		{ "exchange",	required_argument,	NULL, 'x' },
		{ NULL,		0,			NULL, 0 }
	};
	struct jobq_err	 err;
	int		 c;

	while ((c = getopt_long(argc, argv,
	    "+a:B:C:c:D:E:e:f:g:hJj:pq:R:r:S:s:t:U:u:Vx:", longopts,
	    NULL)) != -1)
		switch (c) {
		case 'a':
			w->max_attempts = number(c, 1, JOBQ_MAX_ATTEMPTS, NULL);
			break;
		case 'B':
			parse_steps(w, optarg);
			break;
		case 'C':
			w->consumer_timeout = number(c, 2, INT_MAX / 1000,
			    "seconds");
			break;
		case 'c':
			w->workdir = optarg;
			break;
		case 'D':
			w->dir = optarg;
			break;
		case 'e':
			env_option(w, optarg);
			break;
		case 'f':
			w->health = optarg;
			break;
		case 'g':
			w->grace = number(c, 0, JOBQ_MAX_TIMEOUT, "seconds");
			break;
		case 'J':
			w->jitter = 0;
			break;
		case 'p':
			w->persistent = 1;
			break;
		case 'j':
			w->njobs = number(c, 1, MAX_JOBS, NULL);
			break;
		case 'R':
			w->max_deliveries = number(c, 1, JOBQ_MAX_ATTEMPTS,
			    NULL);
			break;
		case 's':
			w->running_after = number(c, 0, 3600000,
			    "milliseconds");
			break;
		case 't':
			w->timeout = number(c, 1, JOBQ_MAX_TIMEOUT, "seconds");
			break;
		case 'U':
			w->as_name = optarg;
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
	if (w->persistent && w->dir != NULL) {
		fprintf(stderr, "%s: -p runs a command, not -D\n", progname);
		usage(EX_USAGE);
	}
	if (w->timeout >= w->consumer_timeout) {
		fprintf(stderr, "%s: -t %d: must be below the broker's "
		    "consumer_timeout of %d s (-C)\n", progname, w->timeout,
		    w->consumer_timeout);
		usage(EX_USAGE);
	}
	w->argv = argv + optind;
}

/*
 * A path that stays good once a handler has changed its directory:
 * absolute, made from ours without resolving links, so that a handler
 * that looks at its name sees the one it was given.  Exits when our
 * directory has no name.
 */
static const char *
absolute(const char *path)
{
	char	 cwd[PATH_MAX], *abs;
	size_t	 size;

	if (path[0] == '/')
		return path;
	if (getcwd(cwd, sizeof(cwd)) == NULL) {
		fprintf(stderr, "%s: the current folder: %s\n", progname,
		    strerror(errno));
		exit(EX_NOINPUT);
	}
	size = strlen(cwd) + strlen(path) + 2;
	if ((abs = malloc(size)) == NULL) {
		perror(progname);
		exit(EX_OSERR);
	}
	snprintf(abs, size, "%s/%s", cwd, path);
	return abs;
}

/* A NAME=VALUE string, allocated. */
static char *
env_entry(const char *name, const char *value)
{
	size_t	 size = strlen(name) + strlen(value) + 2;
	char	*s;

	if ((s = malloc(size)) == NULL) {
		perror(progname);
		exit(EX_OSERR);
	}
	snprintf(s, size, "%s=%s", name, value);
	return s;
}

/*
 * Look up the user of -U, by name or else by number, with its groups,
 * and the variables that say who a handler is.  Only root may run
 * handlers as another user.
 */
static void
check_user(struct worker *w)
{
	static struct user	 u;
	struct passwd		*pw;
	long			 uid;
	int			 n = MAX_GROUPS;

	if (w->as_name == NULL)
		return;
	if ((pw = getpwnam(w->as_name)) == NULL && jobq_parse_long(w->as_name,
	    0, INT_MAX, &uid) == 0)
		pw = getpwuid((uid_t)uid);
	if (pw == NULL) {
		fprintf(stderr, "%s: -U %s: no such user\n", progname,
		    w->as_name);
		exit(EX_NOUSER);
	}
	if (geteuid() != 0 && pw->pw_uid != geteuid()) {
		fprintf(stderr, "%s: -U %s: only root can run handlers as "
		    "another user\n", progname, w->as_name);
		exit(EX_NOPERM);
	}
	if (getgrouplist(pw->pw_name, pw->pw_gid, u.groups, &n) == -1) {
		fprintf(stderr, "%s: -U %s: in more than %d groups\n",
		    progname, w->as_name, MAX_GROUPS);
		exit(EX_NOUSER);
	}
	u.ngroups = n;
	u.uid = pw->pw_uid;
	u.gid = pw->pw_gid;
	u.home = env_entry("HOME", pw->pw_dir);
	u.user = env_entry("USER", pw->pw_name);
	u.logname = env_entry("LOGNAME", pw->pw_name);
	w->as = &u;
}

/* Check what can be checked before taking any job. */
static void
check_handlers(struct worker *w)
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
	if (w->workdir == NULL)
		return;
	if (stat(w->workdir, &st) == -1 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "%s: -c %s: not a folder\n", progname,
		    w->workdir);
		exit(EX_NOINPUT);
	}
	/* Handlers are found before they change directory. */
	if (w->dir != NULL)
		w->dir = absolute(w->dir);
	else if (strchr(w->argv[0], '/') != NULL)
		w->argv[0] = (char *)(uintptr_t)absolute(w->argv[0]);
}

static void
setup(struct worker *w)
{
	struct jobq_err	 err;
	char		 host[256];
	long		 cpus;
	int		 i;

	if (w->njobs == 0) {
		cpus = sysconf(_SC_NPROCESSORS_ONLN);
		w->njobs = cpus < 1 ? 1 : cpus > MAX_JOBS ? MAX_JOBS :
		    (int)cpus;
	}
	/* Persistent handlers are quick: more jobs in hand keep them fed. */
	w->prefetch = w->persistent ? (w->njobs * 16 > PERSISTENT_PREFETCH ?
	    w->njobs * 16 : PERSISTENT_PREFETCH) : 2 * w->njobs;
	if (w->prefetch > 65535)
		w->prefetch = 65535;
	w->unconf_size = 2 * w->prefetch;
	w->runs = calloc((size_t)w->njobs, sizeof(*w->runs));
	w->procs = calloc((size_t)w->njobs, sizeof(*w->procs));
	w->queue = calloc((size_t)w->prefetch, sizeof(*w->queue));
	w->unconf = calloc((size_t)w->unconf_size, sizeof(*w->unconf));
	if (w->runs == NULL || w->queue == NULL || w->unconf == NULL ||
	    w->procs == NULL) {
		perror(progname);
		exit(EX_OSERR);
	}
	for (i = 0; i < w->njobs; i++)
		w->procs[i].in = w->procs[i].out = -1;
	if (gethostname(host, sizeof(host)) == -1)
		strcpy(host, "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(w->name, sizeof(w->name), "%s:%ld", host, (long)getpid());
	srandom((unsigned)getpid() ^ (unsigned)time(NULL));
	setup_signals();
	if (connect_broker(w, &err) == -1)
		die(&err);
	health(w, 1);
}

static void
defaults(struct worker *w)
{
	jobq_config_init(&w->cfg);
	w->max_attempts = JOBQ_DEFAULT_ATTEMPTS;
	w->max_deliveries = 5;
	w->consumer_timeout = 1800;
	w->grace = 30;
	w->running_after = RUNNING_AFTER_MS;
	w->jitter = 1;
	parse_steps(w, DEFAULT_STEPS);
}

int
main(int argc, char *argv[])
{
	static struct worker	 w;
	struct jobq_err		 err;

	jobq_log_init(progname);
	defaults(&w);
	the_worker = &w;
	options(&w, argc, argv);
	if (jobq_config_check(&w.cfg, &err) == -1 ||
	    jobq_amqp_urls_check(&w.cfg, &err) == -1) {
		fprintf(stderr, "%s: %s\n", progname, err.msg);
		return err.code;
	}
	check_handlers(&w);
	check_user(&w);
	make_env(&w);
	setup(&w);
	jobq_log(JOBQ_INFO, "started", "queue=%s jobs=%d prefetch=%d",
	    jobq_q(w.cfg.job_queue), w.njobs, w.prefetch);
	run(&w);
	stop_procs(&w);
	health(&w, 0);
	if (w.mover != NULL)
		jobq_amqp_close(w.mover);
	jobq_amqp_close(w.conn);
	jobq_log(JOBQ_INFO, "stopped", "jobs_done=%ld", w.done);
	return 0;
}
