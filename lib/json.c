/*
 * json.c: strict JSON reading and UTF-8 checks.
 *
 * Documents from clients must be RFC 8259 JSON in valid UTF-8.  json-c
 * is lenient by default (comments, single quotes, trailing commas), so
 * every parse in jobq goes through a reader made here, with the strict
 * flags, a nesting limit, a size limit and a refusal of NUL bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "jobq.h"

struct jobq_reader {
	json_tokener	*tok;
	size_t		 max;		/* bytes allowed in one document */
	size_t		 size;		/* bytes of the current document */
	int		 in_doc;	/* a document has begun */
	long		 line;		/* line of the next byte */
	long		 doc_line;	/* line where the document began */
};

static int
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* The number of newlines in s[0..n). */
static long
newlines(const char *s, size_t n)
{
	const char	*end = s + n, *p;
	long		 lines = 0;

	while (s < end && (p = memchr(s, '\n', end - s)) != NULL) {
		lines++;
		s = p + 1;
	}
	return lines;
}

/* A reader of documents of at most max bytes each. */
struct jobq_reader *
jobq_reader_new(size_t max)
{
	struct jobq_reader	*r;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	if ((r->tok = json_tokener_new_ex(JOBQ_JSON_DEPTH)) == NULL) {
		free(r);
		return NULL;
	}
	json_tokener_set_flags(r->tok, JSON_TOKENER_STRICT |
	    JSON_TOKENER_ALLOW_TRAILING_CHARS | JSON_TOKENER_VALIDATE_UTF8);
	r->max = max;
	r->line = 1;
	return r;
}

void
jobq_reader_free(struct jobq_reader *r)
{
	if (r == NULL)
		return;
	json_tokener_free(r->tok);
	free(r);
}

/* The line on which the last document began. */
long
jobq_reader_line(const struct jobq_reader *r)
{
	return r->doc_line;
}

static int
parse_error(struct jobq_reader *r, struct jobq_err *err)
{
	enum json_tokener_error	 e = json_tokener_get_error(r->tok);

	if (e == json_tokener_error_depth)
		return jobq_errf(err, EX_DATAERR, "line %ld: nesting deeper "
		    "than %d levels", r->doc_line, JOBQ_JSON_DEPTH);
	return jobq_errf(err, EX_DATAERR, "line %ld: invalid JSON: %s",
	    r->doc_line, json_tokener_error_desc(e));
}

/*
 * Feed len bytes of a stream.  Returns 1 with *obj set when a document
 * ended (the first *used bytes were taken; feed the rest again), 0 when
 * all bytes were taken and no document ended yet, -1 on an error.  A
 * document that is JSON null comes back as 1 with *obj NULL.
 */
int
jobq_reader_feed(struct jobq_reader *r, const char *buf, size_t len,
    size_t *used, json_object **obj, struct jobq_err *err)
{
	enum json_tokener_error	 e;
	size_t			 i = 0, n, room, end;

	*obj = NULL;
	*used = 0;
	if (!r->in_doc) {
		for (; i < len && is_space(buf[i]); i++)
			if (buf[i] == '\n')
				r->line++;
		if (i == len) {
			*used = len;
			return 0;
		}
		r->in_doc = 1;
		r->doc_line = r->line;
		r->size = 0;
	}
	n = len - i;
	room = r->max - r->size;
	if (n > room)
		n = room;
	if (memchr(buf + i, '\0', n) != NULL)
		return jobq_errf(err, EX_DATAERR, "line %ld: NUL byte in "
		    "input", r->doc_line);
	*obj = json_tokener_parse_ex(r->tok, buf + i, (int)n);
	e = json_tokener_get_error(r->tok);
	if (e == json_tokener_continue) {
		r->line += newlines(buf + i, n);
		r->size += n;
		*used = i + n;
		if (r->size >= r->max)
			return jobq_errf(err, EX_DATAERR, "line %ld: document "
			    "larger than %zu bytes", r->doc_line, r->max);
		return 0;
	}
	if (e != json_tokener_success)
		return parse_error(r, err);
	end = json_tokener_get_parse_end(r->tok);
	r->line += newlines(buf + i, end);
	*used = i + end;
	r->in_doc = 0;
	json_tokener_reset(r->tok);
	return 1;
}

/*
 * Call at the end of the stream.  Returns 1 with *obj when the input
 * ended with a document that needed no more bytes (a bare number), 0
 * when nothing was pending, -1 when a document was cut short.
 */
int
jobq_reader_end(struct jobq_reader *r, json_object **obj,
    struct jobq_err *err)
{
	enum json_tokener_error	 e;

	*obj = NULL;
	if (!r->in_doc)
		return 0;
	*obj = json_tokener_parse_ex(r->tok, " ", 1);
	e = json_tokener_get_error(r->tok);
	r->in_doc = 0;
	json_tokener_reset(r->tok);
	if (e == json_tokener_success)
		return 1;
	if (e == json_tokener_continue)
		return jobq_errf(err, EX_DATAERR, "line %ld: document cut "
		    "short by the end of input", r->doc_line);
	return parse_error(r, err);
}

/*
 * Parse exactly one document of at most max bytes from buf; only
 * whitespace may follow it.  Returns 0 with *obj (NULL for JSON null),
 * or -1.
 */
int
jobq_json_parse(const char *buf, size_t len, size_t max, json_object **obj,
    struct jobq_err *err)
{
	struct jobq_reader	*r;
	size_t			 used, i;
	int			 rc;

	*obj = NULL;
	if (len > max)
		return jobq_errf(err, EX_DATAERR, "document larger than %zu "
		    "bytes", max);
	if ((r = jobq_reader_new(max + 1)) == NULL)
		return jobq_errf(err, EX_OSERR, "out of memory");
	rc = jobq_reader_feed(r, buf, len, &used, obj, err);
	if (rc == 0)
		rc = jobq_reader_end(r, obj, err);
	if (rc == 0)
		rc = jobq_errf(err, EX_DATAERR, "empty document");
	else if (rc == 1) {
		for (i = used; i < len && is_space(buf[i]); i++)
			;
		if (i < len) {
			json_object_put(*obj);
			*obj = NULL;
			rc = jobq_errf(err, EX_DATAERR, "more than one "
			    "document");
		}
	}
	jobq_reader_free(r);
	return rc == 1 ? 0 : -1;
}

/*
 * Whether any string in a JSON value holds a NUL character (written
 * \u0000), which PostgreSQL's jsonb refuses.
 */
int
jobq_json_has_nul(json_object *v)
{
	size_t	 i, n;

	switch (json_object_get_type(v)) {
	case json_type_string:
		return strlen(json_object_get_string(v)) !=
		    (size_t)json_object_get_string_len(v);
	case json_type_array:
		n = json_object_array_length(v);
		for (i = 0; i < n; i++)
			if (jobq_json_has_nul(json_object_array_get_idx(v, i)))
				return 1;
		return 0;
	case json_type_object: {
		json_object_object_foreach(v, key, val) {
			(void)key;
			if (jobq_json_has_nul(val))
				return 1;
		}
		return 0;
	}
	default:
		return 0;
	}
}

/* Compact JSON text of obj, owned by obj; "null" for NULL. */
const char *
jobq_json_str(json_object *obj)
{
	if (obj == NULL)
		return "null";
	return json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE);
}

/*
 * The length of the UTF-8 sequence at s (at most n bytes), or 0 when
 * it is not a valid, shortest-form encoding of a scalar value.
 */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
	uint32_t	 cp;
	size_t		 len, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* Whether s[0..n) is valid UTF-8 without NUL bytes. */
int
jobq_utf8_valid(const char *s, size_t n)
{
	const unsigned char	*p = (const unsigned char *)s;
	size_t			 i = 0, k;

	while (i < n) {
		if (p[i] == 0 || (k = utf8_seq(p + i, n - i)) == 0)
			return 0;
		i += k;
	}
	return 1;
}

/*
 * A NUL-terminated copy of s[0..n) in which every byte that is not
 * part of valid UTF-8, and every NUL, became U+FFFD.  For text from
 * handlers, which may be anything, on its way into JSON and into
 * PostgreSQL (which refuses NUL in text).  NULL when out of memory.
 */
char *
jobq_utf8_clean(const char *s, size_t n)
{
	const unsigned char	*p = (const unsigned char *)s;
	char			*out, *o;
	size_t			 i = 0, k;

	if ((out = malloc(n * 3 + 1)) == NULL)
		return NULL;
	o = out;
	while (i < n) {
		if (p[i] != 0 && (k = utf8_seq(p + i, n - i)) != 0) {
			memcpy(o, p + i, k);
			o += k;
			i += k;
		} else {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
		}
	}
	*o = '\0';
	return out;
}
