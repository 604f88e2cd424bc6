/*
 * jobq-stat: print the state of the queues and of the jobs table.
 *
 * One look, or one every N seconds like vmstat(8): the ready messages
 * and consumers of the job, result and dead-letter queues, as the
 * broker reports them to a passive declare, the unacknowledged ones
 * too when the broker's management API is given, and the rows of each
 * status with those that reached it in the last minute.  A part whose
 * server cannot be reached says so; the other part is still shown.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jobq.h"

#define WINDOW		60	/* seconds of the rates */
#define MAX_INTERVAL	86400

/* The three queues every stack has, in the order shown. */
#define NQUEUES		3

struct queue_stat {
	const char	*name;
	long		 ready, consumers;
	long		 unacked;	/* -1: not known */
};

#define ERR_LEN		sizeof(((struct jobq_err *)0)->msg)

struct stat_look {
	char			 at[JOBQ_TIME_LEN + 1];
	struct queue_stat	 q[NQUEUES];
	int			 broker_ok;
	char			 broker_err[ERR_LEN];
	struct jobq_rates	 rates;
	int			 db_ok;
	char			 db_err[ERR_LEN];
	char			 mgmt_err[ERR_LEN];	/* "": none */
};

struct monitor {
	struct jobq_config	 cfg;
	amqp_connection_state_t	 amqp;	/* kept between looks; or NULL */
	PGconn			*db;	/* the same */
	const char		*mgmt;	/* the management API's URL, or NULL */
	char			 vhost[256];
	int			 json;
	int			 redraw;	/* on a terminal, in place */
};

static const char		*progname = "jobq-stat";
static volatile sig_atomic_t	 stopping;

static void
usage(int status)
{
	/* Asked for with -h, it is output; after a mistake, a diagnostic. */
	FILE	*f = status == 0 ? stdout : stderr;

	fprintf(f, "usage: %s [-hV] [-d conninfo] [-E queue] [-F format] "
	    "[-q queue]\n\t[-r queue] [-u url] [-W url] [-x exchange] "
	    "[seconds]\n", progname);
	exit(status);
}

/* The virtual host of the first broker URL, for the management API. */
static void
vhost(struct monitor *s)
{
	struct amqp_connection_info	 info;
	char				*url;

	strcpy(s->vhost, "/");
	if (s->cfg.amqp_url == NULL || (url = strdup(s->cfg.amqp_url)) == NULL)
		return;
	/* "amqp://host/" names no virtual host, which means "/". */
	if (amqp_parse_url(url, &info) == AMQP_STATUS_OK &&
	    *info.vhost != '\0')
		snprintf(s->vhost, sizeof(s->vhost), "%s", info.vhost);
	free(url);
}

static void
on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

/*
 * Ask the management API for the messages that consumers hold; a
 * failure is said once for the look, and leaves them unknown.
 */
static void
look_mgmt(struct monitor *s, struct stat_look *l)
{
	struct jobq_err	 err;
	long		 ready;
	int		 i;

	for (i = 0; i < NQUEUES && s->mgmt != NULL; i++)
		if (jobq_mgmt_queue(s->mgmt, s->vhost, l->q[i].name, &ready,
		    &l->q[i].unacked, &err) == -1) {
			if (err.code == EX_USAGE) {
				fprintf(stderr, "%s: %s\n", progname, err.msg);
				exit(EX_USAGE);
			}
			snprintf(l->mgmt_err, sizeof(l->mgmt_err), "%s",
			    err.msg);
			l->q[i].unacked = -1;
		}
}

/* Look at the broker, connecting first when need be. */
static void
look_broker(struct monitor *s, struct stat_look *l)
{
	struct jobq_err	 err;
	int		 i;

	if (s->amqp == NULL) {
		if ((s->amqp = jobq_amqp_connect(&s->cfg, progname,
		    &err)) == NULL)
			goto fail;
		if (jobq_amqp_declare(s->amqp, &s->cfg, &err) == -1)
			goto fail;
	}
	for (i = 0; i < NQUEUES; i++)
		if (jobq_amqp_depth(s->amqp, l->q[i].name, &l->q[i].ready,
		    &l->q[i].consumers, &err) == -1)
			goto fail;
	l->broker_ok = 1;
	look_mgmt(s, l);
	return;
fail:
	if (err.code == EX_USAGE || err.code == EX_CONFIG) {
		fprintf(stderr, "%s: %s\n", progname, err.msg);
		exit(err.code);
	}
	snprintf(l->broker_err, sizeof(l->broker_err), "%s", err.msg);
	if (s->amqp != NULL)
		amqp_destroy_connection(s->amqp);
	s->amqp = NULL;
}

/* Look at the jobs table, connecting first when need be. */
static void
look_db(struct monitor *s, struct stat_look *l)
{
	struct jobq_err	 err;

	if (s->db == NULL &&
	    (s->db = jobq_db_open(s->cfg.db_conninfo, &err)) == NULL)
		goto fail;
	if (jobq_db_rates(s->db, WINDOW, &l->rates, &err) == -1)
		goto fail;
	l->db_ok = 1;
	return;
fail:
	snprintf(l->db_err, sizeof(l->db_err), "%s", err.msg);
	if (s->db != NULL)
		PQfinish(s->db);
	s->db = NULL;
}

static void
look(struct monitor *s, struct stat_look *l)
{
	memset(l, 0, sizeof(*l));
	jobq_now(l->at);
	l->q[0].name = s->cfg.job_queue;
	l->q[1].name = s->cfg.result_queue;
	l->q[2].name = s->cfg.dead_queue;
	l->q[0].unacked = l->q[1].unacked = l->q[2].unacked = -1;
	look_broker(s, l);
	look_db(s, l);
}

static void
print_text(const struct monitor *s, const struct stat_look *l)
{
	int	 i;

	if (s->redraw)
		fputs("\033[H\033[J", stdout);
	printf("%s\n\n", l->at);
	printf("%-32s %10s %10s %10s\n", "queue", "ready", "unacked",
	    "consumers");
	for (i = 0; i < NQUEUES; i++) {
		if (!l->broker_ok) {
			printf("%-32s %10s %10s %10s\n", l->q[i].name, "-", "-",
			    "-");
			continue;
		}
		printf("%-32s %10ld ", l->q[i].name, l->q[i].ready);
		if (l->q[i].unacked >= 0)
			printf("%10ld", l->q[i].unacked);
		else
			printf("%10s", "-");
		printf(" %10ld\n", l->q[i].consumers);
	}
	if (!l->broker_ok)
		printf("broker unavailable: %s\n", l->broker_err);
	else if (*l->mgmt_err != '\0')
		printf("%s\n", l->mgmt_err);
	printf("\n%-10s %12s %12s %10s\n", "status", "jobs", "last minute",
	    "per second");
	for (i = 0; i < JOBQ_STATUSES; i++)
		if (l->db_ok)
			printf("%-10s %12lld %12lld %10.1f\n", jobq_statuses[i],
			    l->rates.by_status[i], l->rates.recent[i],
			    (double)l->rates.recent[i] / WINDOW);
		else
			printf("%-10s %12s %12s %10s\n", jobq_statuses[i], "-",
			    "-", "-");
	if (!l->db_ok)
		printf("database unavailable: %s\n", l->db_err);
	if (!s->redraw)
		putchar('\n');
}

static void
print_json(const struct stat_look *l)
{
	json_object	*o, *qs, *q, *js, *j;
	int		 i;

	o = json_object_new_object();
	json_object_object_add(o, "at", json_object_new_string(l->at));
	qs = NULL;
	if (l->broker_ok) {
		qs = json_object_new_array();
		for (i = 0; i < NQUEUES; i++) {
			q = json_object_new_object();
			json_object_object_add(q, "name",
			    json_object_new_string(l->q[i].name));
			json_object_object_add(q, "ready",
			    json_object_new_int64(l->q[i].ready));
			json_object_object_add(q, "unacked",
			    l->q[i].unacked < 0 ? NULL :
			    json_object_new_int64(l->q[i].unacked));
			json_object_object_add(q, "consumers",
			    json_object_new_int64(l->q[i].consumers));
			json_object_array_add(qs, q);
		}
	}
	json_object_object_add(o, "queues", qs);
	json_object_object_add(o, "broker_error", l->broker_ok ? NULL :
	    json_object_new_string(l->broker_err));
	json_object_object_add(o, "management_error", *l->mgmt_err == '\0' ?
	    NULL : json_object_new_string(l->mgmt_err));
	js = NULL;
	if (l->db_ok) {
		js = json_object_new_object();
		for (i = 0; i < JOBQ_STATUSES; i++) {
			j = json_object_new_object();
			json_object_object_add(j, "jobs",
			    json_object_new_int64(l->rates.by_status[i]));
			json_object_object_add(j, "last_minute",
			    json_object_new_int64(l->rates.recent[i]));
			json_object_object_add(j, "per_second",
			    json_object_new_double((double)l->rates.recent[i] /
			    WINDOW));
			json_object_object_add(js, jobq_statuses[i], j);
		}
	}
	json_object_object_add(o, "jobs", js);
	json_object_object_add(o, "database_error", l->db_ok ? NULL :
	    json_object_new_string(l->db_err));
	printf("%s\n", jobq_json_str(o));
	json_object_put(o);
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "database",	required_argument,	NULL, 'd' },
		{ "dead-queue",	required_argument,	NULL, 'E' },
		{ "format",	required_argument,	NULL, 'F' },
		{ "help",	no_argument,		NULL, 'h' },
		{ "management-url", required_argument,	NULL, 'W' },
		{ "queue",	required_argument,	NULL, 'q' },
		{ "result-queue", required_argument,	NULL, 'r' },
		{ "amqp-url",	required_argument,	NULL, 'u' },
		{ "version",	no_argument,		NULL, 'V' },
		{ "exchange",	required_argument,	NULL, 'x' },
		{ NULL,		0,			NULL, 0 }
	};
	struct monitor		 s;
	struct stat_look	 l;
	struct jobq_err		 err;
	struct timespec		 ts;
	long			 interval = 0;
	int			 c;

	memset(&s, 0, sizeof(s));
	jobq_config_init(&s.cfg);
	while ((c = getopt_long(argc, argv, "d:E:F:hq:r:u:VW:x:", longopts,
	    NULL)) != -1)
		switch (c) {
		case 'W':
			s.mgmt = optarg;
			break;
		case 'F':
			if (strcmp(optarg, "json") == 0)
				s.json = 1;
			else if (strcmp(optarg, "text") != 0) {
				fprintf(stderr, "%s: -F %s: not text or "
				    "json\n", progname, optarg);
				usage(EX_USAGE);
			}
			break;
		case 'V':
			printf("%s %s\n", progname, JOBQ_VERSION);
			return 0;
		case 'h':
			usage(0);
			break;
		case '?':
			usage(EX_USAGE);
			break;
		default:
			if (jobq_config_option(&s.cfg, c, optarg, &err) == -1) {
				fprintf(stderr, "%s: %s\n", progname, err.msg);
				usage(EX_USAGE);
			}
		}
	argc -= optind;
	argv += optind;
	if (argc > 1)
		usage(EX_USAGE);
	if (argc == 1 && jobq_parse_long(argv[0], 1, MAX_INTERVAL,
	    &interval) == -1) {
		fprintf(stderr, "%s: %s: not a number of seconds from 1 to "
		    "%d\n", progname, argv[0], MAX_INTERVAL);
		usage(EX_USAGE);
	}
	if (s.mgmt == NULL)
		s.mgmt = getenv("JOBQ_MANAGEMENT_URL");
	if (s.mgmt != NULL && *s.mgmt == '\0')
		s.mgmt = NULL;
	vhost(&s);
	s.redraw = interval > 0 && !s.json && isatty(STDOUT_FILENO);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		look(&s, &l);
		if (s.json)
			print_json(&l);
		else
			print_text(&s, &l);
		if (fflush(stdout) == EOF) {
			if (errno != EPIPE)
				fprintf(stderr, "%s: stdout: %s\n", progname,
				    strerror(errno));
			return EX_IOERR;
		}
		if (interval == 0 || stopping)
			break;
		ts.tv_sec = interval;
		ts.tv_nsec = 0;
		while (nanosleep(&ts, &ts) == -1 && errno == EINTR &&
		    !stopping)
			;
		if (stopping)
			break;
	}
	if (s.amqp != NULL)
		jobq_amqp_close(s.amqp);
	if (s.db != NULL)
		PQfinish(s.db);
	if (interval == 0 && (!l.broker_ok || !l.db_ok)) {
		if (!l.broker_ok)
			fprintf(stderr, "%s: %s\n", progname, l.broker_err);
		if (!l.db_ok)
			fprintf(stderr, "%s: %s\n", progname, l.db_err);
		return EX_UNAVAILABLE;
	}
	return 0;
}
