/*
 * json.c: strict JSON reading and UTF-8 checks.
 *
 * Documents from clients must be RFC 8259 JSON in valid UTF-8.  json-c
 * is lenient even with its strict flag (it takes NaN, Infinity, -01,
 * 1., single-quoted keys and raw control characters in strings), so
 * every parse in jobq goes through a reader made here: json-c finds
 * where a document ends and builds it, and a scanner of our own checks
 * the document's bytes against the RFC's grammar before it is used.
 */
#include <stdlib.h>
#include <string.h>

#include "jobq.h"

struct jobq_reader {
	json_tokener	*tok;
	size_t		 max;	/* bytes allowed in one document */
	size_t		 size;	/* bytes of it kept in doc */
	char		*doc;	/* a document that spans feeds */
	int		 in_doc;	/* a document has begun */
	long		 line;	/* line of the next byte */
	long		 doc_line;	/* line where it began */
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

/* A scan of one document against the grammar of RFC 8259. */
struct scan {
	const unsigned char	*p, *start, *end;
	int			 depth;
	int			 nul;	/* last string held \u0000 */
	long			 members;	/* of all objects */
	const char		*why;
	int			 valid;	/* JSON, but jobq cannot carry it */
	int			 too_deep;
};

static size_t utf8_seq(const unsigned char *, size_t);
static int scan_value(struct scan *);

static int
scan_fail(struct scan *s, const char *why)
{
	s->why = why;
	return -1;
}

/* Valid JSON that jobq refuses, since it could not carry it unchanged. */
static int
scan_refuse(struct scan *s, const char *why)
{
	s->valid = 1;
	return scan_fail(s, why);
}

static void
scan_space(struct scan *s)
{
	while (s->p < s->end && is_space((char)*s->p))
		s->p++;
}

static int
at(struct scan *s, char c)
{
	return s->p < s->end && *s->p == (unsigned char)c;
}

static int
digit(struct scan *s)
{
	return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

static int
scan_digits(struct scan *s)
{
	if (!digit(s))
		return scan_fail(s, "malformed number");
	while (digit(s))
		s->p++;
	return 0;
}

/*
 * Whether the integer of digits [p, end) fits in 64 bits: as int64_t
 * when negative, uint64_t otherwise, as json-c holds them.  Beyond
 * that json-c would quietly clamp it.
 */
static int
fits_64_bits(const unsigned char *p, const unsigned char *end, int negative)
{
	const char	*max = negative ? "9223372036854775808" :
			    "18446744073709551615";
	size_t		 n = (size_t)(end - p), m = strlen(max);

	return n < m || (n == m && memcmp(p, max, m) <= 0);
}

static int
scan_number(struct scan *s)
{
	const unsigned char	*digits;
	int			 negative = 0;

	if (at(s, '-')) {
		negative = 1;
		s->p++;
	}
	digits = s->p;
	if (at(s, '0')) {
		s->p++;
		if (digit(s))
			return scan_fail(s, "number with a leading zero");
	} else if (scan_digits(s) == -1)
		return -1;
	if (!at(s, '.') && !at(s, 'e') && !at(s, 'E') &&
	    !fits_64_bits(digits, s->p, negative))
		return scan_refuse(s, "an integer beyond 64 bits, which "
		    "would not be carried exactly");
	if (at(s, '.')) {
		s->p++;
		if (scan_digits(s) == -1)
			return -1;
	}
	if (at(s, 'e') || at(s, 'E')) {
		s->p++;
		if (at(s, '+') || at(s, '-'))
			s->p++;
		if (scan_digits(s) == -1)
			return -1;
	}
	return 0;
}

/* The four hex digits of a \\u escape, after the u; -1 if malformed. */
static long
scan_hex4(struct scan *s)
{
	long	 v = 0;
	int	 i, d;

	for (i = 0; i < 4; i++, s->p++) {
		if (s->p == s->end || (d = jobq_hex_digit(*s->p)) == -1) {
			scan_fail(s, "invalid \\u escape in a string");
			return -1;
		}
		v = v * 16 + d;
	}
	return v;
}

static int
scan_escape(struct scan *s)
{
	long	 u;

	if (s->p == s->end)
		return scan_fail(s, "unterminated string");
	if (strchr("\"\\/bfnrt", *s->p) != NULL && *s->p != '\0') {
		s->p++;
		return 0;
	}
	if (*s->p != 'u')
		return scan_fail(s, "invalid escape in a string");
	s->p++;
	if ((u = scan_hex4(s)) == -1)
		return -1;
	if (u == 0)
		s->nul = 1;
	/*
	 * A surrogate must come in a pair, high then low; json-c would
	 * quietly turn a lone one into U+FFFD.
	 */
	if (u >= 0xdc00 && u <= 0xdfff)
		return scan_refuse(s, "a lone UTF-16 surrogate in a "
		    "string");
	if (u >= 0xd800 && u <= 0xdbff) {
		if ((size_t)(s->end - s->p) < 2 || s->p[0] != '\\' ||
		    s->p[1] != 'u')
			return scan_refuse(s, "a lone UTF-16 surrogate in a "
			    "string");
		s->p += 2;
		if ((u = scan_hex4(s)) == -1)
			return -1;
		if (u < 0xdc00 || u > 0xdfff)
			return scan_refuse(s, "a lone UTF-16 surrogate in a "
			    "string");
	}
	return 0;
}

static int
scan_string(struct scan *s)
{
	size_t	 k;

	s->nul = 0;
	s->p++;
	while (s->p < s->end) {
		if (*s->p == '"') {
			s->p++;
			return 0;
		}
		if (*s->p < 0x20)
			return scan_fail(s, "control character in a string");
		if (*s->p == '\\') {
			s->p++;
			if (scan_escape(s) == -1)
				return -1;
		} else if (*s->p < 0x80)
			s->p++;
		else if ((k = utf8_seq(s->p, (size_t)(s->end - s->p))) != 0)
			s->p += k;
		else
			return scan_fail(s, "invalid UTF-8");
	}
	return scan_fail(s, "unterminated string");
}

static int
scan_word(struct scan *s, const char *word)
{
	size_t	 n = strlen(word);

	if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
		return scan_fail(s, "unexpected characters");
	s->p += n;
	return 0;
}

/* An object or an array, after its opening bracket. */
static int
scan_members(struct scan *s, int object)
{
	char	 close = object ? '}' : ']';

	if (++s->depth > JOBQ_JSON_DEPTH) {
		s->too_deep = 1;
		return scan_refuse(s, "nesting too deep");
	}
	s->p++;
	scan_space(s);
	if (at(s, close)) {
		s->p++;
		s->depth--;
		return 0;
	}
	for (;;) {
		scan_space(s);
		if (object) {
			if (!at(s, '"'))
				return scan_fail(s, "expected a member name");
			if (scan_string(s) == -1)
				return -1;
			s->members++;
			/* json-c would cut the name at the NUL. */
			if (s->nul)
				return scan_fail(s, "NUL in a member name");
			scan_space(s);
			if (!at(s, ':'))
				return scan_fail(s, "expected ':'");
			s->p++;
		}
		if (scan_value(s) == -1)
			return -1;
		scan_space(s);
		if (at(s, ',')) {
			s->p++;
			continue;
		}
		if (!at(s, close))
			return scan_fail(s, object ? "expected ',' or '}'" :
			    "expected ',' or ']'");
		s->p++;
		s->depth--;
		return 0;
	}
}

static int
scan_value(struct scan *s)
{
	scan_space(s);
	if (s->p == s->end)
		return scan_fail(s, "unexpected end of document");
	switch (*s->p) {
	case '{':
		return scan_members(s, 1);
	case '[':
		return scan_members(s, 0);
	case '"':
		return scan_string(s);
	case 't':
		return scan_word(s, "true");
	case 'f':
		return scan_word(s, "false");
	case 'n':
		return scan_word(s, "null");
	default:
		if (at(s, '-') || digit(s))
			return scan_number(s);
		return scan_fail(s, "unexpected character");
	}
}

/* The members of all the objects in a value, however deep. */
static long
count_members(json_object *v)
{
	long	 n = 0;
	size_t	 i, len;

	if (json_object_is_type(v, json_type_object)) {
		json_object_object_foreach(v, key, member) {
			(void)key;
			n += 1 + count_members(member);
		}
	} else if (json_object_is_type(v, json_type_array)) {
		len = json_object_array_length(v);
		for (i = 0; i < len; i++)
			n += count_members(json_object_array_get_idx(v, i));
	}
	return n;
}

/*
 * Check that doc[0..len) is exactly one RFC 8259 value with optional
 * whitespace around it.  On failure, say why, naming the line on which
 * the document began, as every other error of the reader does.
 */
static int
strict_check(const char *doc, size_t len, long first_line,
    json_object *obj, struct jobq_err *err)
{
	struct scan	 s;

	s.start = s.p = (const unsigned char *)doc;
	s.end = s.p + len;
	s.depth = 0;
	s.nul = 0;
	s.members = 0;
	s.why = NULL;
	s.valid = 0;
	s.too_deep = 0;
	if (scan_value(&s) == 0) {
		scan_space(&s);
		/*
		 * json-c keeps the last of two members of one name: then
		 * its objects hold fewer members than the text has.
		 */
		if (s.p == s.end && count_members(obj) != s.members)
			return jobq_errf(err, EX_DATAERR, "line %ld: an "
			    "object has two members of the same name",
			    first_line);
		if (s.p == s.end)
			return 0;
		s.why = "unexpected characters";
	}
	if (s.too_deep)
		return jobq_errf(err, EX_DATAERR, "line %ld: nesting deeper "
		    "than %d levels", first_line, JOBQ_JSON_DEPTH);
	return jobq_errf(err, EX_DATAERR, "line %ld: %s%s", first_line,
	    s.valid ? "" : "invalid JSON: ", s.why);
}

/* A reader of documents of at most max bytes each. */
struct jobq_reader *
jobq_reader_new(size_t max)
{
	struct jobq_reader	*r;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	/* json-c counts the document itself as a level. */
	if ((r->tok = json_tokener_new_ex(JOBQ_JSON_DEPTH + 1)) == NULL) {
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
	free(r->doc);
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

/* Keep the bytes of a document that continues in the next feed. */
static int
keep(struct jobq_reader *r, const char *buf, size_t n,
    struct jobq_err *err)
{
	char	*grown;

	if ((grown = realloc(r->doc, r->size + n)) == NULL)
		return jobq_errf(err, EX_OSERR, "out of memory");
	r->doc = grown;
	memcpy(r->doc + r->size, buf, n);
	r->size += n;
	return 0;
}

/*
 * A document ended with the n bytes at buf: check all of its bytes
 * strictly, and get ready for the next one.
 */
static int
finish_doc(struct jobq_reader *r, const char *buf, size_t n,
    json_object **obj, struct jobq_err *err)
{
	int	 rc;

	r->in_doc = 0;
	json_tokener_reset(r->tok);
	if (r->size == 0)
		rc = strict_check(buf, n, r->doc_line, *obj, err);
	else if ((rc = keep(r, buf, n, err)) == 0)
		rc = strict_check(r->doc, r->size, r->doc_line, *obj, err);
	r->size = 0;
	if (rc == -1) {
		json_object_put(*obj);
		*obj = NULL;
		return -1;
	}
	return 1;
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
		*used = i + n;
		if (r->size + n >= r->max)
			return jobq_errf(err, EX_DATAERR, "line %ld: document "
			    "larger than %zu bytes", r->doc_line, r->max);
		return keep(r, buf + i, n, err);
	}
	if (e != json_tokener_success)
		return parse_error(r, err);
	end = json_tokener_get_parse_end(r->tok);
	r->line += newlines(buf + i, end);
	*used = i + end;
	return finish_doc(r, buf + i, end, obj, err);
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
	int			 rc;

	*obj = NULL;
	if (!r->in_doc)
		return 0;
	*obj = json_tokener_parse_ex(r->tok, " ", 1);
	e = json_tokener_get_error(r->tok);
	if (e == json_tokener_success)
		return finish_doc(r, " ", 1, obj, err);
	r->in_doc = 0;
	r->size = 0;
	if (e == json_tokener_continue)
		rc = jobq_errf(err, EX_DATAERR, "line %ld: document cut "
		    "short by the end of input", r->doc_line);
	else
		rc = parse_error(r, err);
	json_tokener_reset(r->tok);
	return rc;
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
