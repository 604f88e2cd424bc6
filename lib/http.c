/*
 * http.c: parsing HTTP/1.1 requests, without any I/O.
 *
 * The functions here take bytes a client sent and say what they mean,
 * or which status code refuses them.  They are strict where leniency
 * lets two parties read one message two ways (request smuggling): one
 * framing header at most, Content-Length of digits only, no folded
 * header lines, no whitespace before a colon.  Errors carry an HTTP
 * status in err->code rather than a sysexits value.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jobq.h"

/* The end of the head (after its empty line), or NULL when not there. */
const char *
jobq_http_head_end(const char *buf, size_t len)
{
	const char	*p = buf, *end, *nl;

	if (len == 0)
		return NULL;	/* buf may be NULL then */
	end = buf + len;
	while (p < end && (nl = memchr(p, '\n', end - p)) != NULL) {
		if (nl + 1 < end && nl[1] == '\n')
			return nl + 2;
		if (nl + 2 < end && nl[1] == '\r' && nl[2] == '\n')
			return nl + 3;
		p = nl + 1;
	}
	return NULL;
}

static int
is_tchar(int c)
{
	return isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Copy a line of the head, without its end of line; NULL at the end. */
static const char *
next_line(const char *p, const char *end, const char **line, size_t *n)
{
	const char	*nl;

	if (p >= end || (nl = memchr(p, '\n', end - p)) == NULL)
		return NULL;
	*line = p;
	*n = (size_t)(nl - p);
	if (*n > 0 && p[*n - 1] == '\r')
		(*n)--;
	return nl + 1;
}

static int
request_line(const char *s, size_t n, struct jobq_http_req *req,
    struct jobq_err *err)
{
	const char	*sp1, *sp2;
	size_t		 i;

	if ((sp1 = memchr(s, ' ', n)) == NULL ||
	    (sp2 = memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - s))) == NULL)
		return jobq_errf(err, 400, "malformed request line");
	if (sp1 == s || (size_t)(sp1 - s) >= sizeof(req->method))
		return jobq_errf(err, 400, "malformed method");
	for (i = 0; s + i < sp1; i++)
		if (!is_tchar((unsigned char)s[i]))
			return jobq_errf(err, 400, "malformed method");
	memcpy(req->method, s, (size_t)(sp1 - s));
	req->method[sp1 - s] = '\0';
	if (sp2 == sp1 + 1)
		return jobq_errf(err, 400, "malformed request target");
	if ((size_t)(sp2 - sp1 - 1) >= sizeof(req->target))
		return jobq_errf(err, 414, "request target too long");
	memcpy(req->target, sp1 + 1, (size_t)(sp2 - sp1 - 1));
	req->target[sp2 - sp1 - 1] = '\0';
	for (i = 0; req->target[i] != '\0'; i++)
		if ((unsigned char)req->target[i] <= ' ' ||
		    (unsigned char)req->target[i] >= 0x7f)
			return jobq_errf(err, 400, "malformed request target");
	if (req->target[0] != '/')
		return jobq_errf(err, 400, "request target must be a path");
	if ((size_t)(s + n - sp2 - 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) ||
	    (sp2[8] != '0' && sp2[8] != '1')) {
		if ((size_t)(s + n - sp2 - 1) == 8 &&
		    memcmp(sp2 + 1, "HTTP/", 5) == 0)
			return jobq_errf(err, 505, "HTTP version not "
			    "supported");
		return jobq_errf(err, 400, "malformed HTTP version");
	}
	req->minor = sp2[8] - '0';
	req->keep_alive = req->minor == 1;
	return 0;
}

static int
token_is(const char *v, size_t n, const char *word)
{
	return strlen(word) == n && strncasecmp(v, word, n) == 0;
}

/* Whether a comma-separated list of tokens holds word. */
static int
list_has(const char *v, size_t n, const char *word)
{
	const char	*end = v + n, *comma;
	size_t		 len;

	while (v < end) {
		while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
			v++;
		comma = memchr(v, ',', (size_t)(end - v));
		len = (size_t)((comma != NULL ? comma : end) - v);
		while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
			len--;
		if (len > 0 && token_is(v, len, word))
			return 1;
		v += len;
	}
	return 0;
}

/* A header's value, trimmed; the framing ones checked and kept. */
static int
header(const char *name, size_t nlen, const char *v, size_t vlen,
    struct jobq_http_req *req, struct jobq_err *err)
{
	size_t	 i;

	if (token_is(name, nlen, "content-length")) {
		if (req->content_length != -1)
			return jobq_errf(err, 400, "more than one "
			    "Content-Length");
		if (vlen == 0 || vlen > 15)
			return jobq_errf(err, 400, "bad Content-Length");
		req->content_length = 0;
		for (i = 0; i < vlen; i++) {
			if (v[i] < '0' || v[i] > '9')
				return jobq_errf(err, 400, "bad "
				    "Content-Length");
			req->content_length = req->content_length * 10 +
			    (v[i] - '0');
		}
	} else if (token_is(name, nlen, "transfer-encoding")) {
		if (req->chunked || !token_is(v, vlen, "chunked"))
			return jobq_errf(err, 501, "only one "
			    "Transfer-Encoding, chunked, is supported");
		req->chunked = 1;
	} else if (token_is(name, nlen, "connection")) {
		if (list_has(v, vlen, "close"))
			req->keep_alive = 0;
	} else if (token_is(name, nlen, "expect")) {
		if (!token_is(v, vlen, "100-continue"))
			return jobq_errf(err, 417, "only Expect: 100-continue "
			    "is supported");
		req->expect_continue = 1;
	} else if (token_is(name, nlen, "authorization")) {
		if (vlen >= sizeof(req->authorization))
			return jobq_errf(err, 431, "Authorization too long");
		memcpy(req->authorization, v, vlen);
		req->authorization[vlen] = '\0';
	} else if (token_is(name, nlen, "content-type")) {
		if (vlen >= sizeof(req->content_type))
			return jobq_errf(err, 400, "Content-Type too long");
		memcpy(req->content_type, v, vlen);
		req->content_type[vlen] = '\0';
	} else if (token_is(name, nlen, "traceparent")) {
		/*
		 * The W3C's rule: one that is not valid, or more than one,
		 * is ignored, and the request starts a trace of its own.
		 */
		*req->trace = '\0';
		if (++req->traces == 1 && vlen == JOBQ_TRACE_LEN) {
			memcpy(req->trace, v, vlen);
			req->trace[vlen] = '\0';
			if (!jobq_trace_valid(req->trace))
				*req->trace = '\0';
		}
	}
	return 0;
}

/*
 * Parse a request head: the request line and the headers, up to and
 * with the empty line that ends them.  At most max_headers headers.
 * Returns 0, or -1 with the status that refuses it in err->code.
 */
int
jobq_http_parse_head(const char *head, size_t len, int max_headers,
    struct jobq_http_req *req, struct jobq_err *err)
{
	const char	*p = head, *end = head + len, *line, *colon, *v;
	size_t		 n, nlen, vlen, i;

	memset(req, 0, sizeof(*req));
	req->content_length = -1;
	if ((p = next_line(p, end, &line, &n)) == NULL)
		return jobq_errf(err, 400, "no request line");
	if (memchr(line, '\0', n) != NULL)
		return jobq_errf(err, 400, "NUL byte in request line");
	if (request_line(line, n, req, err) == -1)
		return -1;
	while ((p = next_line(p, end, &line, &n)) != NULL && n > 0) {
		if (++req->headers > max_headers)
			return jobq_errf(err, 431, "more than %d headers",
			    max_headers);
		if (line[0] == ' ' || line[0] == '\t')
			return jobq_errf(err, 400, "folded header line");
		if ((colon = memchr(line, ':', n)) == NULL || colon == line)
			return jobq_errf(err, 400, "malformed header line");
		nlen = (size_t)(colon - line);
		for (i = 0; i < nlen; i++)
			if (!is_tchar((unsigned char)line[i]))
				return jobq_errf(err, 400, "malformed header "
				    "name");
		v = colon + 1;
		vlen = n - nlen - 1;
		for (i = 0; i < vlen; i++)
			if ((v[i] < ' ' && v[i] != '\t') || v[i] == 0x7f)
				return jobq_errf(err, 400, "control character "
				    "in a header");
		while (vlen > 0 && (*v == ' ' || *v == '\t'))
			v++, vlen--;
		while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		if (header(line, nlen, v, vlen, req, err) == -1)
			return -1;
	}
	if (req->chunked && req->content_length != -1)
		return jobq_errf(err, 400, "both Content-Length and "
		    "Transfer-Encoding");
	return 0;
}


/* A line ending in CRLF (or LF) at p; its length, or -1 for "more". */
static long
chunk_line(const char *p, const char *end, const char **next)
{
	const char	*nl;

	if ((nl = memchr(p, '\n', end - p)) == NULL)
		return -1;
	*next = nl + 1;
	return nl > p && nl[-1] == '\r' ? nl - p - 1 : nl - p;
}

/*
 * Decode a chunked body from buf.  Returns 1 when it is whole (*used
 * bytes of buf were the body; the decoded bytes are in out, *out_len of
 * them), 0 when more bytes are needed, -1 when it is malformed (400)
 * or longer than max decoded bytes (413).  out must hold max bytes.
 */
int
jobq_http_dechunk(const char *buf, size_t len, size_t max, char *out,
    size_t *out_len, size_t *used, struct jobq_err *err)
{
	const char	*p = buf, *end = buf + len, *next;
	size_t		 size, i;
	long		 n;
	int		 d;

	*out_len = 0;
	for (;;) {
		if ((n = chunk_line(p, end, &next)) < 0)
			return len > max + 4096 ? jobq_errf(err, 400,
			    "malformed chunk") : 0;
		size = 0;
		for (i = 0; i < (size_t)n &&
		    (d = jobq_hex_digit(p[i])) >= 0; i++) {
			if (i >= 8)
				return jobq_errf(err, 400, "chunk size too "
				    "long");
			size = size * 16 + (size_t)d;
		}
		if (i == 0 || (i < (size_t)n && p[i] != ';'))
			return jobq_errf(err, 400, "malformed chunk size");
		p = next;
		if (size == 0)
			break;
		if (*out_len + size > max)
			return jobq_errf(err, 413, "body larger than %zu bytes",
			    max);
		if ((size_t)(end - p) < size + 1)
			return 0;
		memcpy(out + *out_len, p, size);
		*out_len += size;
		p += size;
		if (*p == '\r') {
			if (end - p < 2)
				return 0;
			p++;
		}
		if (*p != '\n')
			return jobq_errf(err, 400, "malformed chunk end");
		p++;
	}
	/* Trailer lines, ignored, up to the empty line. */
	for (;;) {
		if ((n = chunk_line(p, end, &next)) < 0)
			return len > max + 8192 ? jobq_errf(err, 431,
			    "trailers too long") : 0;
		p = next;
		if (n == 0)
			break;
	}
	*used = (size_t)(p - buf);
	return 1;
}

/* Whether two strings are equal, in a time that does not tell where. */
int
jobq_secret_equal(const char *a, const char *b)
{
	size_t		 na = strlen(a), nb = strlen(b), i;
	unsigned char	 diff = na != nb;

	for (i = 0; i < na; i++)
		diff |= (unsigned char)a[i] ^ (unsigned char)b[i % (nb + 1)];
	return diff == 0;
}
