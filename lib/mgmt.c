/*
 * mgmt.c: the figures of a queue from RabbitMQ's management API.
 *
 * AMQP tells how many messages of a queue are ready, not how many its
 * consumers hold unacknowledged; the management plugin's HTTP API tells
 * both.  This is a small HTTP/1.0 client for that one request, over
 * plain TCP, with basic authentication from the URL.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "jobq.h"

#define MGMT_WAIT_MS	5000		/* for the whole answer */
#define MGMT_MAX	(1024 * 1024)	/* bytes of an answer */

/* The parts of an http://user:password@host:port/ URL. */
struct mgmt_url {
	char	 userinfo[256];
	char	 host[256];
	char	 port[16];
	char	 path[256];	/* ends with a slash */
};

static int
parse_url(const char *url, struct mgmt_url *u, struct jobq_err *err)
{
	const char	*p, *at, *slash, *colon;
	size_t		 n;

	memset(u, 0, sizeof(*u));
	if (strncmp(url, "http://", 7) != 0)
		return jobq_errf(err, EX_USAGE, "management URL: not an "
		    "http:// URL");
	p = url + 7;
	slash = p + strcspn(p, "/");
	if ((at = memchr(p, '@', (size_t)(slash - p))) != NULL) {
		if ((size_t)(at - p) >= sizeof(u->userinfo))
			return jobq_errf(err, EX_USAGE, "management URL: "
			    "user and password too long");
		memcpy(u->userinfo, p, (size_t)(at - p));
		p = at + 1;
	}
	colon = memchr(p, ':', (size_t)(slash - p));
	n = (size_t)((colon != NULL ? colon : slash) - p);
	if (n == 0 || n >= sizeof(u->host))
		return jobq_errf(err, EX_USAGE, "management URL: bad host");
	memcpy(u->host, p, n);
	if (colon != NULL) {
		n = (size_t)(slash - colon - 1);
		if (n == 0 || n >= sizeof(u->port) ||
		    strspn(colon + 1, "0123456789") != n)
			return jobq_errf(err, EX_USAGE, "management URL: bad "
			    "port");
		memcpy(u->port, colon + 1, n);
	} else
		strcpy(u->port, "15672");
	n = strlen(slash);
	if (n + 2 > sizeof(u->path))
		return jobq_errf(err, EX_USAGE, "management URL: path too "
		    "long");
	snprintf(u->path, sizeof(u->path), "%s%s", n > 0 ? slash : "/",
	    n > 0 && slash[n - 1] != '/' ? "/" : "");
	return 0;
}

/* Base64 of s into out, which must hold 4 * ((len + 2) / 3) + 1. */
static void
base64(const char *s, char *out)
{
	static const char	 abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				    "abcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 len = strlen(s), i;
	unsigned long		 v;

	for (i = 0; i + 2 < len; i += 3) {
		v = (unsigned long)p[i] << 16 | p[i + 1] << 8 | p[i + 2];
		*out++ = abc[v >> 18 & 63];
		*out++ = abc[v >> 12 & 63];
		*out++ = abc[v >> 6 & 63];
		*out++ = abc[v & 63];
	}
	if (len - i == 1) {
		v = (unsigned long)p[i] << 16;
		*out++ = abc[v >> 18 & 63];
		*out++ = abc[v >> 12 & 63];
		*out++ = '=';
		*out++ = '=';
	} else if (len - i == 2) {
		v = (unsigned long)p[i] << 16 | p[i + 1] << 8;
		*out++ = abc[v >> 18 & 63];
		*out++ = abc[v >> 12 & 63];
		*out++ = abc[v >> 6 & 63];
		*out++ = '=';
	}
	*out = '\0';
}

/* A name as a segment of a URL path: all but [A-Za-z0-9._~-] escaped. */
static void
segment(const char *s, char *out)
{
	for (; *s != '\0'; s++)
		if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || strchr("._~-", *s) != NULL)
			*out++ = *s;
		else
			out += sprintf(out, "%%%02X", (unsigned char)*s);
	*out = '\0';
}

/* Connect to the host and port of the URL. */
static int
dial(const struct mgmt_url *u, struct jobq_err *err)
{
	struct addrinfo	 hints, *res, *ai;
	int		 fd = -1, rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if ((rc = getaddrinfo(u->host, u->port, &hints, &res)) != 0)
		return jobq_errf(err, EX_UNAVAILABLE, "management API %s: %s",
		    u->host, gai_strerror(rc));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype,
		    ai->ai_protocol)) == -1)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1)
		return jobq_errf(err, EX_UNAVAILABLE, "management API %s:%s: "
		    "cannot connect", u->host, u->port);
	return fd;
}

/* Send a request and read the whole answer; the answer is malloc'd. */
static char *
exchange(int fd, const char *req, size_t *len, struct jobq_err *err)
{
	struct pollfd	 pfd = { .fd = fd, .events = POLLIN };
	long		 deadline = jobq_now_ms() + MGMT_WAIT_MS;
	size_t		 off = 0, n = strlen(req);
	ssize_t		 r;
	char		*buf;

	while (off < n) {
		r = write(fd, req + off, n - off);
		if (r == -1 && errno != EINTR) {
			jobq_errf(err, EX_UNAVAILABLE, "management API: %s",
			    strerror(errno));
			return NULL;
		}
		off += r > 0 ? (size_t)r : 0;
	}
	if ((buf = malloc(MGMT_MAX + 1)) == NULL) {
		jobq_errf(err, EX_OSERR, "out of memory");
		return NULL;
	}
	for (off = 0;;) {
		long left = deadline - jobq_now_ms();

		if (left <= 0 || poll(&pfd, 1, (int)left) == 0) {
			jobq_errf(err, EX_UNAVAILABLE, "management API: no "
			    "answer within %d s", MGMT_WAIT_MS / 1000);
			break;
		}
		r = read(fd, buf + off, MGMT_MAX - off);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			jobq_errf(err, EX_UNAVAILABLE, "management API: %s",
			    strerror(errno));
			break;
		}
		if (r == 0) {
			buf[off] = '\0';
			*len = off;
			return buf;
		}
		off += (size_t)r;
		if (off == MGMT_MAX) {
			jobq_errf(err, EX_UNAVAILABLE, "management API: answer "
			    "too long");
			break;
		}
	}
	free(buf);
	return NULL;
}

/*
 * The messages ready and unacknowledged of a queue of a virtual host,
 * as the management API at url tells them.
 */
int
jobq_mgmt_queue(const char *url, const char *vhost, const char *queue,
    long *ready, long *unacked, struct jobq_err *err)
{
	struct mgmt_url	 u;
	json_object	*o, *v;
	char		 req[4096], auth[400], vh[3 * 256 + 1], q[3 * 256 + 1];
	char		*ans, *body;
	size_t		 len;
	int		 fd, status = 0, rc = -1;

	if (parse_url(url, &u, err) == -1)
		return -1;
	if (strlen(vhost) > 255 || strlen(queue) > 255)
		return jobq_errf(err, EX_USAGE, "name too long");
	segment(vhost, vh);
	segment(queue, q);
	base64(u.userinfo, auth);
	snprintf(req, sizeof(req), "GET %sapi/queues/%s/%s HTTP/1.0\r\n"
	    "Host: %s:%s\r\n%s%s%s\r\n", u.path, vh, q, u.host, u.port,
	    *u.userinfo != '\0' ? "Authorization: Basic " : "",
	    *u.userinfo != '\0' ? auth : "", *u.userinfo != '\0' ? "\r\n" : "");
	if ((fd = dial(&u, err)) == -1)
		return -1;
	ans = exchange(fd, req, &len, err);
	close(fd);
	if (ans == NULL)
		return -1;
	if (sscanf(ans, "HTTP/1.%*d %d", &status) != 1 ||
	    (body = strstr(ans, "\r\n\r\n")) == NULL) {
		jobq_errf(err, EX_UNAVAILABLE, "management API: not an HTTP "
		    "answer");
		goto out;
	}
	if (status != 200) {
		jobq_errf(err, EX_UNAVAILABLE, "management API: status %d "
		    "for queue %s", status, queue);
		goto out;
	}
	if ((o = json_tokener_parse(body + 4)) == NULL) {
		jobq_errf(err, EX_UNAVAILABLE, "management API: not JSON");
		goto out;
	}
	if (json_object_object_get_ex(o, "messages_ready", &v) &&
	    json_object_is_type(v, json_type_int) &&
	    (*ready = json_object_get_int64(v), 1) &&
	    json_object_object_get_ex(o, "messages_unacknowledged", &v) &&
	    json_object_is_type(v, json_type_int)) {
		*unacked = json_object_get_int64(v);
		rc = 0;
	} else
		jobq_errf(err, EX_UNAVAILABLE, "management API: no figures "
		    "for queue %s yet", queue);
	json_object_put(o);
out:
	free(ans);
	return rc;
}
