/*
 * unit.c: unit tests of the parts of libjobq that need no server.
 *
 * Covers the strict JSON stream reader and UTF-8 helpers (json.c), job
 * documents and the job and result messages (job.c), and the number,
 * time, UUID, type, quoting and masking helpers (err.c).  Prints TAP:
 * one "ok N - what" or "not ok N - what" line per check, a "# " line
 * with details under a failure, and the plan at the end.  Exits 1 when
 * any check failed.  Everything it allocates is freed, so that it runs
 * clean under valgrind.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobq.h"

/* A string literal as a pointer and a length; the literal may hold NUL. */
#define LIT(s)		s, sizeof(s) - 1

#define ID		"0f8fad5b-d9cb-469f-a165-70867728950e"
#define ID_UPPER	"0F8FAD5B-D9CB-469F-A165-70867728950E"
#define TS1		"2026-01-02T03:04:05.123456Z"
#define TS2		"2026-01-02T03:04:06.000001Z"
#define TS3		"2026-01-02T03:04:07.999999Z"

/* The documents a reader found in an input, and how it ended. */
struct run {
	int		 rc;	/* 0, or -1 when the reader failed */
	int		 ndocs;
	char		 text[1024]; /* the documents, one space apart */
	struct jobq_err	 err;
};

static int	 tests, failures;

static int
check(int ok, const char *what)
{
	tests++;
	if (!ok)
		failures++;
	printf("%s %d - %s\n", ok ? "ok" : "not ok", tests, what);
	return ok;
}

static void
diag(const char *fmt, ...)
{
	va_list	 ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static int
contains(const char *s, const char *part)
{
	return s != NULL && strstr(s, part) != NULL;
}

static int
same(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* A check on an error message, which is shown when the check fails. */
static void
check_msg(int ok, const char *what, const struct jobq_err *err)
{
	if (!check(ok, what))
		diag("message: %s", err->msg);
}

/* A check on a run of the reader, which is shown when the check fails. */
static void
check_run(int ok, const char *what, const struct run *run)
{
	if (!check(ok, what))
		diag("rc %d, %d documents: %s; message: %s", run->rc,
		    run->ndocs, run->text, run->rc == -1 ? run->err.msg : "");
}

static void
add_doc(struct run *run, json_object *obj)
{
	size_t	 n = strlen(run->text);

	snprintf(run->text + n, sizeof(run->text) - n, "%s%s",
	    n > 0 ? " " : "", jobq_json_str(obj));
	run->ndocs++;
	json_object_put(obj);
}

/* Feed one chunk to a reader, again and again until it is all taken. */
static int
feed_chunk(struct jobq_reader *r, const char *buf, size_t len,
    struct run *run)
{
	json_object	*obj;
	size_t		 used;
	int		 rc;

	while (len > 0) {
		rc = jobq_reader_feed(r, buf, len, &used, &obj, &run->err);
		if (rc == -1)
			return -1;
		if (rc == 1)
			add_doc(run, obj);
		buf += used;
		len -= used;
	}
	return 0;
}

/*
 * Read in[0..len) with a reader of documents of at most max bytes, chunk
 * bytes per feed (all at once when chunk is 0), then end the stream.
 */
static void
run_reader(const char *in, size_t len, size_t max, size_t chunk,
    struct run *run)
{
	struct jobq_reader	*r;
	json_object		*obj;
	size_t			 off = 0, n;
	int			 rc = 0;

	memset(run, 0, sizeof(*run));
	if ((r = jobq_reader_new(max)) == NULL) {
		run->rc = jobq_errf(&run->err, EX_OSERR, "out of memory");
		return;
	}
	while (rc != -1 && off < len) {
		n = chunk == 0 || chunk > len - off ? len - off : chunk;
		rc = feed_chunk(r, in + off, n, run);
		off += n;
	}
	if (rc != -1 && (rc = jobq_reader_end(r, &obj, &run->err)) == 1)
		add_doc(run, obj);
	run->rc = rc == -1 ? -1 : 0;
	jobq_reader_free(r);
}

/* Whether the reader refuses an input fed all at once. */
static void
check_refused(const char *in, size_t len, const char *what)
{
	struct run	 run;

	run_reader(in, len, 4096, 0, &run);
	check_run(run.rc == -1 && run.ndocs == 0, what, &run);
}

/* n opening brackets, then n closing ones. */
static size_t
nested(char *buf, size_t size, size_t n)
{
	if (2 * n + 1 > size)
		abort();
	memset(buf, '[', n);
	memset(buf + n, ']', n);
	buf[2 * n] = '\0';
	return 2 * n;
}

static void
test_reader_streams(void)
{
	struct run	 run;

	run_reader(LIT("{\"a\":1} {\"b\":2}"), 4096, 0, &run);
	check_run(run.rc == 0 && same(run.text, "{\"a\":1} {\"b\":2}"),
	    "reader: two documents on one line, separated by a space", &run);
	run_reader(LIT("{\"a\":1}\n[2,3]\n\"x y\"\nnull\ntrue\n"), 4096, 0,
	    &run);
	check_run(run.rc == 0 && run.ndocs == 5 &&
	    same(run.text, "{\"a\":1} [2,3] \"x y\" null true"),
	    "reader: JSON lines, one document per line", &run);
	run_reader(LIT("{\"key\":[1,2,3],\"s\":\"ab\"}"), 4096, 13, &run);
	check_run(run.rc == 0 &&
	    same(run.text, "{\"key\":[1,2,3],\"s\":\"ab\"}"),
	    "reader: a document split across two feeds", &run);
	run_reader(LIT("12 {\"a\":\"b c\"}\n[true,null]\n-3.5e2\n"), 4096, 1,
	    &run);
	check_run(run.rc == 0 &&
	    same(run.text, "12 {\"a\":\"b c\"} [true,null] -3.5e2"),
	    "reader: documents fed byte by byte", &run);
	run_reader(LIT(""), 4096, 0, &run);
	check_run(run.rc == 0 && run.ndocs == 0,
	    "reader: empty input yields no document", &run);
	run_reader(LIT(" \n\t\r\n  "), 4096, 0, &run);
	check_run(run.rc == 0 && run.ndocs == 0,
	    "reader: whitespace-only input yields no document", &run);
	run_reader(LIT("[1,2,3] [4,5,6] [7,8,9]"), 8, 0, &run);
	check_run(run.rc == 0 && run.ndocs == 3,
	    "reader: the size limit applies per document, not per stream",
	    &run);
}

static void
test_reader_lines(void)
{
	struct jobq_reader	*r;
	struct jobq_err		 err;
	struct run		 run;
	json_object		*obj;
	size_t			 used;
	int			 rc;

	run_reader(LIT("{}\n{}\n[1,]\n"), 4096, 0, &run);
	check_run(run.rc == -1 && run.ndocs == 2 &&
	    contains(run.err.msg, "line 3"),
	    "reader: an error on the 3rd line mentions line 3", &run);
	run_reader(LIT("{\n\"a\":1\n}\n\n{,}\n"), 4096, 1, &run);
	check_run(run.rc == -1 && contains(run.err.msg, "line 5"),
	    "reader: lines inside earlier documents are counted, byte by byte",
	    &run);
	if ((r = jobq_reader_new(4096)) == NULL)
		abort();
	rc = jobq_reader_feed(r, LIT("\n\n{}"), &used, &obj, &err);
	json_object_put(obj);
	check(rc == 1 && used == 4 && jobq_reader_line(r) == 3,
	    "reader: jobq_reader_line is the line where a document began");
	jobq_reader_free(r);
}

static void
test_reader_strict(void)
{
	check_refused(LIT("[1,2,]"), "reader: trailing comma in an array");
	check_refused(LIT("{\"a\":1,}"),
	    "reader: trailing comma in an object");
	check_refused(LIT("['a']"), "reader: single-quoted string");
	check_refused(LIT("{'a':1}"), "reader: single-quoted key");
	check_refused(LIT("/* c */ {}"), "reader: /* */ comment before a "
	    "document");
	check_refused(LIT("[1 /* c */]"), "reader: /* */ comment inside a "
	    "document");
	check_refused(LIT("// c\n{}"), "reader: // comment");
	check_refused(LIT("[NaN]"), "reader: NaN inside an array");
	check_refused(LIT("NaN\n"), "reader: NaN as a document");
	check_refused(LIT("[Infinity]"), "reader: Infinity");
	check_refused(LIT("[01]"), "reader: leading zero (01) in an array");
	check_refused(LIT("01\n"), "reader: leading zero (01) as a line");
	check_refused(LIT("01"), "reader: leading zero (01) at end of input");
	check_refused(LIT("[-01]"),
	    "reader: leading zero after a minus (-01)");
	check_refused(LIT("[1.]"), "reader: fraction without digits (1.)");
	check_refused(LIT("{a:1}"), "reader: unquoted key");
	check_refused(LIT("[\"a\tb\"]"), "reader: raw control character "
	    "(tab) in a string");
	check_refused(LIT("[\"a\xff" "b\"]"), "reader: invalid UTF-8 byte "
	    "0xff in a string");
}

static void
test_reader_limits(void)
{
	struct run	 run;
	char		 buf[256];
	size_t		 n;

	run_reader(LIT("[\"a\0b\"]"), 4096, 0, &run);
	check_run(run.rc == -1 && contains(run.err.msg, "NUL"),
	    "reader: a raw NUL byte is refused", &run);
	n = nested(buf, sizeof(buf), 65);
	run_reader(buf, n, 4096, 0, &run);
	check_run(run.rc == -1 && contains(run.err.msg, "nesting"),
	    "reader: nesting 65 levels deep is refused, naming nesting",
	    &run);
	n = nested(buf, sizeof(buf), 64);
	run_reader(buf, n, 4096, 0, &run);
	check_run(run.rc == 0 && run.ndocs == 1,
	    "reader: nesting 64 levels deep is accepted", &run);
	run_reader(LIT("[\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]"), 16, 0,
	    &run);
	check_run(run.rc == -1 && contains(run.err.msg, "larger than"),
	    "reader: a document larger than the maximum is refused", &run);
	run_reader(LIT("{\"a\":[1,"), 4096, 0, &run);
	check_run(run.rc == -1 && contains(run.err.msg, "cut short"),
	    "reader: a document cut short by the end of input", &run);
	run_reader(LIT("01"), 4096, 0, &run);
	check_run(run.rc == -1 && !contains(run.err.msg, "success"),
	    "reader: an error found at the end of input gives its reason",
	    &run);
}

static void
test_reader_end(void)
{
	struct jobq_reader	*r;
	struct jobq_err		 err;
	json_object		*obj;
	size_t			 used;
	int			 rc;

	if ((r = jobq_reader_new(4096)) == NULL)
		abort();
	rc = jobq_reader_feed(r, LIT("42"), &used, &obj, &err);
	check(rc == 0 && used == 2, "reader: a bare number waits for more");
	rc = jobq_reader_end(r, &obj, &err);
	check(rc == 1 && json_object_is_type(obj, json_type_int) &&
	    json_object_get_int(obj) == 42,
	    "reader: jobq_reader_end returns 1 with a bare number at the end");
	json_object_put(obj);
	rc = jobq_reader_feed(r, LIT(" \n "), &used, &obj, &err);
	check(rc == 0 && used == 3 && obj == NULL,
	    "reader: feeding whitespace yields no document");
	rc = jobq_reader_end(r, &obj, &err);
	check(rc == 0 && obj == NULL,
	    "reader: jobq_reader_end returns 0 when nothing is pending");
	jobq_reader_free(r);
}

/* jobq_json_parse() of a string; the document is freed. */
static int
parse(const char *s, size_t len, size_t max, struct jobq_err *err)
{
	json_object	*obj;
	int		 rc;

	rc = jobq_json_parse(s, len, max, &obj, err);
	json_object_put(obj);
	return rc;
}

static void
test_json_parse(void)
{
	struct jobq_err	 err;
	json_object	*obj;
	int		 rc;

	rc = jobq_json_parse(LIT("{\"a\":[1,2]}"), 4096, &obj, &err);
	check(rc == 0 && same(jobq_json_str(obj), "{\"a\":[1,2]}"),
	    "json_parse: one document");
	json_object_put(obj);
	rc = parse(LIT("{} {}"), 4096, &err);
	check_msg(rc == -1 && contains(err.msg, "more than one"),
	    "json_parse: two documents are refused", &err);
	check(parse(LIT("{\"a\":1} \n\t\r\n"), 4096, &err) == 0,
	    "json_parse: trailing whitespace is accepted");
	check(parse(LIT("\n 7"), 4096, &err) == 0,
	    "json_parse: leading whitespace and a bare number");
	rc = parse(LIT(""), 4096, &err);
	check_msg(rc == -1 && contains(err.msg, "empty"),
	    "json_parse: empty input is refused", &err);
	check(parse(LIT(" \n "), 4096, &err) == -1,
	    "json_parse: whitespace-only input is refused");
	rc = parse(LIT("[1,2,3,4]"), 8, &err);
	check_msg(rc == -1 && contains(err.msg, "larger than"),
	    "json_parse: a document over the maximum is refused", &err);
	check(parse(LIT("12345678"), 8, &err) == 0,
	    "json_parse: a document of exactly the maximum is accepted");
	rc = jobq_json_parse(LIT("null"), 4096, &obj, &err);
	check(rc == 0 && obj == NULL, "json_parse: null is a NULL document");
}

static void
test_json_has_nul(void)
{
	json_object	*obj;

	obj = json_tokener_parse("{\"a\":[1,\"x\\u0000y\"]}");
	check(obj != NULL && jobq_json_has_nul(obj),
	    "json_has_nul: finds \\u0000 in a nested string");
	json_object_put(obj);
	obj = json_tokener_parse("{\"a\":[1,\"xy\",{\"b\":null}]}");
	check(obj != NULL && !jobq_json_has_nul(obj),
	    "json_has_nul: none in a clean document");
	json_object_put(obj);
	check(!jobq_json_has_nul(NULL), "json_has_nul: none in null");
}

/* Whether jobq_utf8_clean() turns in[0..len) into want. */
static void
check_clean(const char *in, size_t len, const char *want, const char *what)
{
	char	*out;

	out = jobq_utf8_clean(in, len);
	check(same(out, want), what);
	free(out);
}

static void
test_utf8(void)
{
	char	*out;

	check_clean(LIT("a\xff" "b"), "a\xef\xbf\xbd" "b",
	    "utf8_clean: 0xff becomes U+FFFD");
	check_clean(LIT("a\0b"), "a\xef\xbf\xbd" "b",
	    "utf8_clean: NUL becomes U+FFFD");
	check_clean(LIT("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"),
	    "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
	    "utf8_clean: valid 2, 3 and 4-byte characters are kept");
	check_clean(LIT(""), "", "utf8_clean: empty input");
	out = jobq_utf8_clean(LIT("\xc0\x80\xed\xa0\x80x\xe2\x82"));
	check(out != NULL && jobq_utf8_valid(out, strlen(out)),
	    "utf8_clean: output of junk is valid UTF-8");
	free(out);
	check(jobq_utf8_valid(LIT("abc \xc3\xa9\xf4\x8f\xbf\xbf")),
	    "utf8_valid: ASCII, é and U+10FFFF are valid");
	check(!jobq_utf8_valid(LIT("\xc0\x80")),
	    "utf8_valid: overlong C0 80 is refused");
	check(!jobq_utf8_valid(LIT("\xe0\x80\xaf")),
	    "utf8_valid: overlong E0 80 AF is refused");
	check(!jobq_utf8_valid(LIT("\xed\xa0\x80")),
	    "utf8_valid: surrogate ED A0 80 is refused");
	check(!jobq_utf8_valid(LIT("\xf4\x90\x80\x80")),
	    "utf8_valid: F4 90 80 80 beyond U+10FFFF is refused");
	check(!jobq_utf8_valid(LIT("a\xe2\x82")),
	    "utf8_valid: a sequence cut short is refused");
	check(!jobq_utf8_valid(LIT("a\0b")), "utf8_valid: NUL is refused");
}

/* Make a job from a document's text; -2 when the text is not JSON. */
static int
job_from_text(const char *text, struct jobq_job *job, struct jobq_err *err)
{
	json_object	*doc;
	int		 rc;

	memset(job, 0, sizeof(*job));
	if (jobq_json_parse(text, strlen(text), 4096, &doc, err) == -1)
		return -2;
	rc = jobq_job_from_doc(doc, job, err);
	json_object_put(doc);
	return rc;
}

/* Whether a job document is refused (want -1) or accepted (want 0). */
static void
check_doc(const char *text, int want, const char *what)
{
	struct jobq_job	 job;
	struct jobq_err	 err;
	int		 rc;

	rc = job_from_text(text, &job, &err);
	if (!check(rc == want, what))
		diag("rc %d, message: %s", rc, rc != 0 ? err.msg : "");
	jobq_job_clear(&job);
}

static void
test_job_minimal(void)
{
	struct jobq_job	 job;
	struct jobq_err	 err;
	char		 canon[JOBQ_UUID_LEN + 1];
	int		 rc;

	rc = job_from_text("{\"type\":\"echo\"}", &job, &err);
	check_msg(rc == 0 && same(job.type, "echo"),
	    "job_from_doc: minimal {\"type\":\"echo\"}", &err);
	check(strlen(job.id) == JOBQ_UUID_LEN &&
	    jobq_uuid_canon(job.id, canon) == 0 && same(canon, job.id),
	    "job_from_doc: a lowercase UUID of 36 characters is generated");
	check(job.attempt == 1, "job_from_doc: attempt is 1");
	check(jobq_time_valid(job.submitted_at) &&
	    strlen(job.submitted_at) == JOBQ_TIME_LEN,
	    "job_from_doc: submitted_at is a valid time");
	check(job.payload == NULL && job.max_attempts == 0 &&
	    job.timeout == 0,
	    "job_from_doc: absent payload, max_attempts, timeout are unset");
	jobq_job_clear(&job);
	rc = job_from_text("{\"type\":\"echo\",\"id\":\"" ID_UPPER "\","
	    "\"payload\":{\"k\":[1,\"v\"]}}", &job, &err);
	check_msg(rc == 0 && same(job.id, ID),
	    "job_from_doc: an uppercase client id becomes lowercase", &err);
	check(same(jobq_json_str(job.payload), "{\"k\":[1,\"v\"]}"),
	    "job_from_doc: the payload is kept");
	jobq_job_clear(&job);
}

static void
test_job_unknown(void)
{
	struct jobq_job	 job;
	struct jobq_err	 err;
	int		 rc;

	rc = job_from_text("{\"type\":\"echo\",\"tmeout\":5}", &job, &err);
	check_msg(rc == -1 && contains(err.msg, "tmeout"),
	    "job_from_doc: an unknown member is refused and named", &err);
	jobq_job_clear(&job);
}

/* A job document {"type":"<c repeated n times>"}. */
static void
long_type(char *buf, size_t size, char c, size_t n)
{
	char	 type[256];

	if (n >= sizeof(type))
		abort();
	memset(type, c, n);
	type[n] = '\0';
	snprintf(buf, size, "{\"type\":\"%s\"}", type);
}

static void
test_job_types(void)
{
	char	 doc[512];

	check_doc("{\"type\":\"\"}", -1, "job_from_doc: type \"\" refused");
	long_type(doc, sizeof(doc), 'a', 65);
	check_doc(doc, -1, "job_from_doc: type of 65 characters refused");
	long_type(doc, sizeof(doc), 'a', 64);
	check_doc(doc, 0, "job_from_doc: type of 64 characters accepted");
	check_doc("{\"type\":\".x\"}", -1,
	    "job_from_doc: type \".x\" refused");
	check_doc("{\"type\":\"a/b\"}", -1,
	    "job_from_doc: type \"a/b\" refused");
	check_doc("{\"type\":\"\xc3\xa9\"}", -1,
	    "job_from_doc: type \"é\" refused");
	check_doc("{\"type\":\"a.b_c-9\"}", 0,
	    "job_from_doc: type \"a.b_c-9\" accepted");
	check_doc("{\"type\":5}", -1,
	    "job_from_doc: type that is not a string refused");
	check_doc("{\"type\":null}", -1, "job_from_doc: type null refused");
	check_doc("{\"payload\":1}", -1, "job_from_doc: missing type refused");
	check_doc("{\"type\":\"a\\u0000b\"}", -1,
	    "job_from_doc: type holding \\u0000 refused");
}

static void
test_job_members(void)
{
	check_doc("{\"type\":\"echo\",\"id\":\"not-a-uuid\"}", -1,
	    "job_from_doc: bad id refused");
	check_doc("{\"type\":\"echo\",\"id\":\"" ID "0\"}", -1,
	    "job_from_doc: id one character too long refused");
	check_doc("{\"type\":\"echo\",\"id\":42}", -1,
	    "job_from_doc: id that is not a string refused");
	check_doc("{\"type\":\"e\",\"max_attempts\":0}", -1,
	    "job_from_doc: max_attempts 0 refused");
	check_doc("{\"type\":\"e\",\"max_attempts\":1001}", -1,
	    "job_from_doc: max_attempts 1001 refused");
	check_doc("{\"type\":\"e\",\"max_attempts\":2.5}", -1,
	    "job_from_doc: max_attempts 2.5 refused");
	check_doc("{\"type\":\"e\",\"max_attempts\":\"3\"}", -1,
	    "job_from_doc: max_attempts \"3\" refused");
	check_doc("{\"type\":\"e\",\"max_attempts\":3}", 0,
	    "job_from_doc: max_attempts 3 accepted");
	check_doc("{\"type\":\"e\",\"max_attempts\":1000}", 0,
	    "job_from_doc: max_attempts 1000 accepted");
	check_doc("{\"type\":\"e\",\"timeout\":0}", -1,
	    "job_from_doc: timeout 0 refused");
	check_doc("{\"type\":\"e\",\"timeout\":1}", 0,
	    "job_from_doc: timeout 1 accepted");
	check_doc("{\"type\":\"e\",\"timeout\":86400}", 0,
	    "job_from_doc: timeout 86400 accepted");
	check_doc("{\"type\":\"e\",\"timeout\":86401}", -1,
	    "job_from_doc: timeout 86401 refused");
	check_doc("{\"type\":\"e\",\"timeout\":-5}", -1,
	    "job_from_doc: negative timeout refused");
}

static void
test_job_not_object(void)
{
	struct jobq_job	 job;
	struct jobq_err	 err;

	check_doc("[{\"type\":\"echo\"}]", -1,
	    "job_from_doc: an array is refused");
	check_doc("\"echo\"", -1, "job_from_doc: a string is refused");
	check_msg(jobq_job_from_doc(NULL, &job, &err) == -1 &&
	    contains(err.msg, "null"),
	    "job_from_doc: null (a NULL pointer) is refused", &err);
	jobq_job_clear(&job);
}

static void
check_job_round_trip(const struct jobq_job *in, const struct jobq_job *out)
{
	check(same(out->id, in->id), "job codec: round trip keeps the id");
	check(same(out->type, in->type),
	    "job codec: round trip keeps the type");
	check(same(jobq_json_str(out->payload),
	    "{\"u\":\"a/b\",\"n\":[1,2.5,null],\"s\":\"\xc3\xa9\"}"),
	    "job codec: round trip keeps the payload text");
	check(out->attempt == 2, "job codec: round trip keeps the attempt");
	check(same(out->submitted_at, in->submitted_at),
	    "job codec: round trip keeps submitted_at");
	check(out->max_attempts == 3,
	    "job codec: round trip keeps max_attempts");
	check(out->timeout == 30, "job codec: round trip keeps the timeout");
}

static void
test_job_codec(void)
{
	struct jobq_job	 in, out;
	struct jobq_err	 err;
	char		*text;
	int		 rc;

	rc = job_from_text("{\"type\":\"sha256\",\"payload\":{\"u\":\"a/b\","
	    "\"n\":[1,2.5,null],\"s\":\"\xc3\xa9\"},\"max_attempts\":3,"
	    "\"timeout\":30}", &in, &err);
	check_msg(rc == 0, "job codec: a full job document", &err);
	in.attempt = 2;
	text = jobq_job_encode(&in);
	check(contains(text, "\"u\":\"a/b\"") && !contains(text, "\\/"),
	    "job codec: slashes in the payload are not escaped");
	check(text != NULL && strchr(text, ' ') == NULL &&
	    strchr(text, '\n') == NULL, "job codec: the message is compact");
	memset(&out, 0, sizeof(out));
	rc = text == NULL ? -1 :
	    jobq_job_decode(text, strlen(text), &out, &err);
	check_msg(rc == 0, "job codec: the encoded message decodes", &err);
	check_job_round_trip(&in, &out);
	free(text);
	jobq_job_clear(&in);
	jobq_job_clear(&out);
}

static void
test_job_codec_optional(void)
{
	struct jobq_job	 in, out;
	struct jobq_err	 err;
	char		*text;
	int		 rc;

	job_from_text("{\"type\":\"echo\"}", &in, &err);
	text = jobq_job_encode(&in);
	check(text != NULL && !contains(text, "max_attempts") &&
	    !contains(text, "timeout") && contains(text, "\"payload\":null"),
	    "job codec: unset members are left out, payload null");
	rc = text == NULL ? -1 :
	    jobq_job_decode(text, strlen(text), &out, &err);
	check(rc == 0 && out.payload == NULL && out.max_attempts == 0 &&
	    out.timeout == 0 && same(out.id, in.id),
	    "job codec: unset members stay unset after a round trip");
	free(text);
	jobq_job_clear(&in);
	jobq_job_clear(&out);
}

/* Whether a job message decodes (want 0) or is refused (want -1). */
static void
check_job_msg(const char *text, int want, const char *what)
{
	struct jobq_job	 job;
	struct jobq_err	 err;
	int		 rc;

	rc = jobq_job_decode(text, strlen(text), &job, &err);
	if (!check(rc == want, what))
		diag("rc %d, message: %s", rc, rc != 0 ? err.msg : "");
	jobq_job_clear(&job);
}

#define JOB_ID		"\"id\":\"" ID "\",\"type\":\"echo\""
#define JOB_AT		"\"submitted_at\":\"" TS1 "\""

static void
test_job_decode(void)
{
	struct jobq_job	 job;
	struct jobq_err	 err;
	int		 rc;

	rc = jobq_job_decode(LIT("{\"v\":1," JOB_ID ",\"attempt\":4,"
	    JOB_AT ",\"extra\":{\"x\":[1]},\"priority\":9}"), &job, &err);
	check_msg(rc == 0 && job.attempt == 4 && same(job.id, ID),
	    "job decode: unknown members are ignored", &err);
	jobq_job_clear(&job);
	check_job_msg("{" JOB_ID ",\"attempt\":1," JOB_AT "}", -1,
	    "job decode: v missing is refused");
	check_job_msg("{\"v\":2," JOB_ID ",\"attempt\":1," JOB_AT "}", -1,
	    "job decode: v 2 is refused");
	check_job_msg("{\"v\":\"1\"," JOB_ID ",\"attempt\":1," JOB_AT "}", -1,
	    "job decode: v as a string is refused");
	check_job_msg("{\"v\":1,\"id\":\"x\",\"type\":\"echo\",\"attempt\":1,"
	    JOB_AT "}", -1, "job decode: a bad id is refused");
	check_job_msg("{\"v\":1," JOB_ID "," JOB_AT "}", -1,
	    "job decode: a missing attempt is refused");
	check_job_msg("{\"v\":1," JOB_ID ",\"attempt\":0," JOB_AT "}", -1,
	    "job decode: attempt 0 is refused");
	check_job_msg("{\"v\":1," JOB_ID ",\"attempt\":1,"
	    "\"submitted_at\":\"yesterday\"}", -1,
	    "job decode: a bad submitted_at is refused");
	check_job_msg("{\"v\":1," JOB_ID ",\"attempt\":1}", -1,
	    "job decode: a missing submitted_at is refused");
	check_job_msg("[1]", -1, "job decode: an array is refused");
	check_job_msg("{\"v\":1," JOB_ID ",\"attempt\":1," JOB_AT "} {}", -1,
	    "job decode: two documents are refused");
}

/* A result with every member set, as a worker would send it. */
static void
make_result(struct jobq_result *r)
{
	memset(r, 0, sizeof(*r));
	strcpy(r->id, ID);
	strcpy(r->type, "sha256");
	strcpy(r->status, "failed");
	r->result = json_tokener_parse("{\"out\":\"a/b\",\"n\":[1,2]}");
	if ((r->error = strdup("exit 3: \"x\" not found")) == NULL ||
	    (r->worker = strdup("host-1:4242")) == NULL || r->result == NULL)
		abort();
	r->attempts = 3;
	strcpy(r->submitted_at, TS1);
	strcpy(r->started_at, TS2);
	strcpy(r->finished_at, TS3);
}

static void
check_result_round_trip(const struct jobq_result *in,
    const struct jobq_result *out)
{
	check(same(out->id, in->id) && same(out->type, in->type),
	    "result codec: round trip keeps id and type");
	check(same(out->status, "failed"),
	    "result codec: round trip keeps the status");
	check(same(jobq_json_str(out->result),
	    "{\"out\":\"a/b\",\"n\":[1,2]}"),
	    "result codec: round trip keeps the result");
	check(same(out->error, in->error),
	    "result codec: round trip keeps the error");
	check(out->attempts == 3,
	    "result codec: round trip keeps the attempts");
	check(same(out->worker, in->worker),
	    "result codec: round trip keeps the worker");
	check(same(out->submitted_at, TS1) && same(out->started_at, TS2) &&
	    same(out->finished_at, TS3),
	    "result codec: round trip keeps the three times");
}

static void
test_result_codec(void)
{
	struct jobq_result	 in, out;
	struct jobq_err		 err;
	json_object		*obj, *v;
	char			*text;
	int			 rc;

	make_result(&in);
	text = jobq_result_encode(&in);
	check(contains(text, "\"out\":\"a/b\"") && !contains(text, "\\/"),
	    "result codec: slashes are not escaped");
	rc = text == NULL ? -1 :
	    jobq_result_decode(text, strlen(text), &out, &err);
	check_msg(rc == 0, "result codec: the encoded message decodes", &err);
	check_result_round_trip(&in, &out);
	free(text);
	jobq_result_clear(&out);
	free(in.error);
	in.error = NULL;
	obj = jobq_result_object(&in);
	check(obj != NULL && json_object_object_get_ex(obj, "v", &v) &&
	    json_object_get_int(v) == JOBQ_MSG_VERSION,
	    "result_object: carries the format version");
	check(obj != NULL && json_object_object_get_ex(obj, "error", &v) &&
	    v == NULL, "result_object: a NULL error is JSON null");
	json_object_put(obj);
	jobq_result_clear(&in);
}

/* Decode a result message made of the given members. */
static int
decode_result(const char *status, const char *result, const char *error,
    int attempts, struct jobq_err *err, struct jobq_result *r)
{
	char	 text[1024];

	snprintf(text, sizeof(text), "{\"v\":1,\"id\":\"%s\",\"type\":"
	    "\"echo\",\"status\":\"%s\",\"result\":%s,\"error\":%s,"
	    "\"attempts\":%d,\"worker\":\"w1\",\"submitted_at\":\"%s\","
	    "\"started_at\":\"%s\",\"finished_at\":\"%s\",\"new\":[]}", ID,
	    status, result, error, attempts, TS1, TS2, TS3);
	return jobq_result_decode(text, strlen(text), r, err);
}

/* Whether a result message decodes (want 0) or is refused (want -1). */
static void
check_result_msg(const char *status, const char *result, const char *error,
    int attempts, int want, const char *what)
{
	struct jobq_result	 r;
	struct jobq_err		 err;
	int			 rc;

	rc = decode_result(status, result, error, attempts, &err, &r);
	if (!check(rc == want, what))
		diag("rc %d, message: %s", rc, rc != 0 ? err.msg : "");
	jobq_result_clear(&r);
}

static void
test_result_decode(void)
{
	struct jobq_result	 r;
	struct jobq_err		 err;
	int			 rc;

	rc = decode_result("succeeded", "null", "null", 1, &err, &r);
	check_msg(rc == 0 && r.result == NULL && r.error == NULL &&
	    same(r.worker, "w1"),
	    "result decode: null result and null error are accepted", &err);
	jobq_result_clear(&r);
	check_result_msg("succeeded", "[1,{\"a\":\"b\"}]", "null", 1, 0,
	    "result decode: a plain message with unknown members");
	check_result_msg("done", "null", "null", 1, -1,
	    "result decode: unknown status refused");
	check_result_msg("running", "null", "null", 1, -1,
	    "result decode: a status that is not final refused");
	check_result_msg("failed", "null", "\"boom\"", 0, -1,
	    "result decode: attempts 0 refused");
	check_result_msg("succeeded", "{\"a\":[\"x\\u0000y\"]}", "null", 1, -1,
	    "result decode: \\u0000 in a string of the result refused");
	check_result_msg("failed", "null", "\"a\\u0000b\"", 1, -1,
	    "result decode: \\u0000 in the error refused");
	check_result_msg("failed", "null", "42", 1, -1,
	    "result decode: an error that is not a string refused");
	check_result_msg("succeeded", "{\"x\":NaN}", "null", 1, -1,
	    "result decode: NaN in the result (refused by jsonb) refused");
}

static void
test_status_final(void)
{
	check(jobq_status_final("succeeded") && jobq_status_final("failed"),
	    "status_final: succeeded and failed are final");
	check(!jobq_status_final("running") && !jobq_status_final("queued") &&
	    !jobq_status_final(""),
	    "status_final: running, queued and \"\" are not");
}

static void
check_mask(const char *in, const char *want, const char *what)
{
	char	 out[256];
	int	 rc;

	rc = jobq_mask_secret(in, out, sizeof(out));
	if (!check(rc == 0 && same(out, want), what))
		diag("rc %d, got: %s", rc, out);
}

static void
test_mask_secret(void)
{
	char	 out[256];
	int	 rc;

	rc = jobq_mask_secret("amqp://u:secret@h:5672/v", out, sizeof(out));
	check(rc == 0 && contains(out, "****") && !contains(out, "secret"),
	    "mask_secret: the password of an AMQP URL is masked");
	check_mask("host=x password=secret dbname=y",
	    "host=x password=**** dbname=y",
	    "mask_secret: password= in a conninfo is masked");
	check_mask("host=x password='se cret' dbname=y",
	    "host=x password=**** dbname=y",
	    "mask_secret: a quoted password in a conninfo is masked");
	check_mask("postgresql://u:secret@h/db", "postgresql://u:****@h/db",
	    "mask_secret: the password of a PostgreSQL URL is masked");
	check_mask("amqp://u@h:5672/v", "amqp://u@h:5672/v",
	    "mask_secret: a URL with a user and no password is unchanged");
	check_mask("amqp://h:5672/v", "amqp://h:5672/v",
	    "mask_secret: a URL without user is unchanged");
	check_mask("amqp://u:secret@h:5672", "amqp://u:****@h:5672",
	    "mask_secret: a URL without a path is masked");
	check_mask("host=x password = secret", "host=x password = ****",
	    "mask_secret: password = with spaces in a conninfo is masked");
	rc = jobq_mask_secret("amqp://u:secret@h:5672/v", out, 12);
	check(rc == -1 && strlen(out) < 12 && !contains(out, "secret"),
	    "mask_secret: a cut copy returns -1 and shows no secret");
}

static void
test_parse_long(void)
{
	long	 v = 0;

	check(jobq_parse_long("42", 1, 100, &v) == 0 && v == 42,
	    "parse_long: 42 in 1..100");
	check(jobq_parse_long("-7", -10, 0, &v) == 0 && v == -7,
	    "parse_long: -7 in -10..0");
	check(jobq_parse_long("1", 1, 100, &v) == 0 &&
	    jobq_parse_long("100", 1, 100, &v) == 0,
	    "parse_long: both ends of the range accepted");
	check(jobq_parse_long("0", 1, 100, &v) == -1,
	    "parse_long: below the range refused");
	check(jobq_parse_long("101", 1, 100, &v) == -1,
	    "parse_long: above the range refused");
	check(jobq_parse_long("12x", 1, 100, &v) == -1,
	    "parse_long: trailing junk refused");
	check(jobq_parse_long("12 ", 1, 100, &v) == -1,
	    "parse_long: trailing space refused");
	check(jobq_parse_long("", 1, 100, &v) == -1,
	    "parse_long: empty string refused");
	check(jobq_parse_long(NULL, 1, 100, &v) == -1,
	    "parse_long: NULL refused");
	check(jobq_parse_long(" 5", 1, 100, &v) == -1,
	    "parse_long: leading space refused");
	check(jobq_parse_long("99999999999999999999999", 1, 100, &v) == -1,
	    "parse_long: overflow refused");
	check(jobq_parse_long("-99999999999999999999999", -100, 100, &v) ==
	    -1, "parse_long: negative overflow refused");
	v = 5;
	jobq_parse_long("x", 1, 100, &v);
	check(v == 5, "parse_long: the output is untouched on failure");
}

static void
test_time_valid(void)
{
	check(jobq_time_valid("2026-01-02T03:04:05.123456Z"),
	    "time_valid: with microseconds and Z");
	check(jobq_time_valid("2026-01-02T03:04:05Z"),
	    "time_valid: without a fraction");
	check(jobq_time_valid("2026-01-02T03:04:05+01:00"),
	    "time_valid: with a +01:00 offset");
	check(jobq_time_valid("2026-01-02T03:04:05.5-05:30"),
	    "time_valid: with a fraction and a -05:30 offset");
	check(!jobq_time_valid("2026-01-02 03:04:05Z"),
	    "time_valid: missing T refused");
	check(!jobq_time_valid("2026-13-02T03:04:05Z"),
	    "time_valid: month 13 refused");
	check(!jobq_time_valid("2026-01-32T03:04:05Z"),
	    "time_valid: day 32 refused");
	check(!jobq_time_valid("2026-01-02T24:04:05Z"),
	    "time_valid: hour 24 refused");
	check(!jobq_time_valid("2026-01-02T03:04:05Zx"),
	    "time_valid: trailing junk refused");
	check(!jobq_time_valid("2026-01-02T03:04:05"),
	    "time_valid: missing zone refused");
	check(!jobq_time_valid("2026-01-02T03:04:05.Z"),
	    "time_valid: fraction without digits refused");
	check(!jobq_time_valid("2026-01-02T03:04:05+0100"),
	    "time_valid: offset without colon refused");
	check(!jobq_time_valid(""), "time_valid: empty string refused");
}

static void
test_now(void)
{
	char	 a[JOBQ_TIME_LEN + 1];

	jobq_now(a);
	check(strlen(a) == JOBQ_TIME_LEN && a[JOBQ_TIME_LEN - 1] == 'Z' &&
	    a[19] == '.', "now: 27 characters, microseconds, Z");
	check(jobq_time_valid(a), "now: is valid per time_valid");
}

static void
test_uuid_type(void)
{
	char	 out[JOBQ_UUID_LEN + 1];
	char	 type[JOBQ_TYPE_MAX + 2];

	check(jobq_uuid_canon(ID_UPPER, out) == 0 && same(out, ID),
	    "uuid_canon: uppercase becomes lowercase");
	check(jobq_uuid_canon(ID, out) == 0 && same(out, ID),
	    "uuid_canon: lowercase is kept");
	check(jobq_uuid_canon("0f8fad5bd9cb469fa16570867728950e", out) == -1,
	    "uuid_canon: without hyphens refused");
	check(jobq_uuid_canon("0f8fad5b-d9cb-469f-a165-70867728950g", out) ==
	    -1, "uuid_canon: non-hexadecimal digit refused");
	check(jobq_uuid_canon(ID "0", out) == -1 &&
	    jobq_uuid_canon("", out) == -1,
	    "uuid_canon: wrong length refused");
	memset(type, 'x', JOBQ_TYPE_MAX);
	type[JOBQ_TYPE_MAX] = '\0';
	check(jobq_type_valid(type), "type_valid: 64 characters accepted");
	type[JOBQ_TYPE_MAX] = 'x';
	type[JOBQ_TYPE_MAX + 1] = '\0';
	check(!jobq_type_valid(type), "type_valid: 65 characters refused");
	check(jobq_type_valid("9") && jobq_type_valid("A-b.c_d"),
	    "type_valid: digits, letters, . _ - accepted");
	check(!jobq_type_valid("") && !jobq_type_valid("-a") &&
	    !jobq_type_valid("_a") && !jobq_type_valid("a b"),
	    "type_valid: empty, bad first character, space refused");
}

/* Whether a string is a version 4 UUID of RFC 4122's variant. */
static int
uuid_v4(const char *s)
{
	char	 canon[JOBQ_UUID_LEN + 1];

	return jobq_uuid_canon(s, canon) == 0 && same(canon, s) &&
	    s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

static int
by_string(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void
test_uuid_new(void)
{
	static char	 ids[1000][JOBQ_UUID_LEN + 1];
	int		 i, v4 = 1, distinct = 1;

	for (i = 0; i < 1000; i++) {
		jobq_uuid_new(ids[i]);
		v4 = v4 && uuid_v4(ids[i]);
	}
	qsort(ids, 1000, sizeof(ids[0]), by_string);
	for (i = 1; i < 1000; i++)
		distinct = distinct && strcmp(ids[i - 1], ids[i]) != 0;
	check(v4, "uuid_new: version 4, RFC 4122 variant, lowercase");
	check(distinct, "uuid_new: 1000 in a row are all different");
}

#define TRACE	"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void
test_trace(void)
{
	static const char	 parent[] = TRACE;
	char			 a[JOBQ_TRACE_LEN + 1], b[JOBQ_TRACE_LEN + 1];

	check(jobq_trace_valid(TRACE), "trace_valid: a traceparent");
	check(!jobq_trace_valid(NULL) && !jobq_trace_valid("") &&
	    !jobq_trace_valid(TRACE "0") &&
	    !jobq_trace_valid("00-4BF92F3577B34DA6A3CE929D0E0E4736-"
	    "00f067aa0ba902b7-01") &&
	    !jobq_trace_valid("01-4bf92f3577b34da6a3ce929d0e0e4736-"
	    "00f067aa0ba902b7-01") &&
	    !jobq_trace_valid("00-00000000000000000000000000000000-"
	    "00f067aa0ba902b7-01") &&
	    !jobq_trace_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-"
	    "0000000000000000-01") &&
	    !jobq_trace_valid("00-4bf92f3577b34da6a3ce929d0e0e4736_"
	    "00f067aa0ba902b7-01") &&
	    !jobq_trace_valid("00-4bf92f3577b34da6a3ce929d0e0e4736-"
	    "00f067aa0ba902b7-0g"),
	    "trace_valid: uppercase, other versions, zero ids, bad "
	    "separators and lengths refused");
	jobq_trace_new(a, parent);
	check(jobq_trace_valid(a) && strncmp(a, parent, 36) == 0 &&
	    strcmp(a + 52, "-01") == 0 && strncmp(a + 36, parent + 36, 16) != 0,
	    "trace_new: under a parent, its trace and flags, an id of its own");
	jobq_trace_new(b, "00-4bf92f3577b34da6a3ce929d0e0e4736-"
	    "00f067aa0ba902b7-00");
	check(strcmp(b + 52, "-00") == 0, "trace_new: flags are kept");
	jobq_trace_new(a, "garbage");
	jobq_trace_new(b, NULL);
	check(jobq_trace_valid(a) && jobq_trace_valid(b) &&
	    strncmp(a, b, 35) != 0 && strcmp(a + 52, "-01") == 0,
	    "trace_new: without a valid parent, a new sampled trace");
}

static void
test_q(void)
{
	char	 big[2000];
	size_t	 n;

	check(same(jobq_q("job done"), "\"job done\""),
	    "q: a value with a space is quoted");
	check(same(jobq_q("a \"b\" \\c"), "\"a \\\"b\\\" \\\\c\""),
	    "q: quotes and backslashes are escaped");
	check(same(jobq_q("a\nb\tc\x01" "d"), "\"a b c?d\""),
	    "q: newline and tab become spaces, control characters ?");
	check(same(jobq_q(NULL), "\"\""), "q: NULL is an empty value");
	memset(big, '"', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	n = strlen(jobq_q(big));
	check(n < 1024 && jobq_q(big)[n - 1] == '"' && jobq_q(big)[n - 2] ==
	    '"' && jobq_q(big)[n - 3] == '\\',
	    "q: a long value is cut within the buffer, still quoted");
}

/* Parse a head given as a C string; the status, or 0. */
static int
head_status(const char *head, struct jobq_http_req *req)
{
	struct jobq_err	 err;

	if (jobq_http_parse_head(head, strlen(head), 10, req, &err) == -1)
		return err.code;
	return 0;
}

static void
test_http_head(void)
{
	struct jobq_http_req	 r;
	const char		*h;

	h = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nrest";
	check(jobq_http_head_end(h, strlen(h)) == h + strlen(h) - 4,
	    "http: the head ends after its empty line");
	check(jobq_http_head_end(h, 20) == NULL,
	    "http: no end of head in a part of it");
	check(head_status(h, &r) == 0 && strcmp(r.method, "GET") == 0 &&
	    strcmp(r.target, "/a") == 0 && r.minor == 1 && r.keep_alive &&
	    r.content_length == -1 && !r.chunked,
	    "http: a plain GET");
	check(head_status("POST /job HTTP/1.0\nContent-Length: 12\n"
	    "Authorization:  Bearer x \n\n", &r) == 0 && r.minor == 0 &&
	    !r.keep_alive && r.content_length == 12 &&
	    strcmp(r.authorization, "Bearer x") == 0,
	    "http: bare LF, HTTP/1.0, trimmed values");
	check(head_status("GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
	    &r) == 0 && !r.keep_alive, "http: Connection: close");
	check(head_status("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked"
	    "\r\n\r\n", &r) == 0 && r.chunked, "http: chunked");
	check(head_status("GET / HTTP/1.1\r\nContent-Length: 1\r\n"
	    "Content-Length: 1\r\n\r\n", &r) == 400,
	    "http: two Content-Length refused");
	check(head_status("GET / HTTP/1.1\r\nContent-Length: 1\r\n"
	    "Transfer-Encoding: chunked\r\n\r\n", &r) == 400,
	    "http: both framings refused");
	check(head_status("GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
	    &r) == 400, "http: signed Content-Length refused");
	check(head_status("GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n"
	    "\r\n", &r) == 501, "http: other codings are 501");
	check(head_status("GET / HTTP/1.1\r\nA: 1\r\n b\r\n\r\n",
	    &r) == 400, "http: folded lines refused");
	check(head_status("GET / HTTP/1.1\r\nA : 1\r\n\r\n", &r) == 400,
	    "http: space before the colon refused");
	check(head_status("GET / HTTP/2.0\r\n\r\n", &r) == 505,
	    "http: HTTP/2.0 is 505");
	check(head_status("GET x HTTP/1.1\r\n\r\n", &r) == 400,
	    "http: a target that is not a path refused");
	check(head_status("GET / HTTP/1.1\r\n1: a\r\n2: a\r\n3: a\r\n"
	    "4: a\r\n5: a\r\n6: a\r\n7: a\r\n8: a\r\n9: a\r\n"
	    "10: a\r\n11: a\r\n\r\n", &r) == 431,
	    "http: more headers than the limit are 431");
}

static void
test_http_chunked(void)
{
	struct jobq_err	 err;
	char		 out[64];
	size_t		 n, used;
	const char	*b = "3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n"
			    "\r\nNEXT";

	check(jobq_http_dechunk(b, strlen(b), sizeof(out), out, &n, &used,
	    &err) == 1 && n == 5 && memcmp(out, "abcde", 5) == 0 &&
	    strcmp(b + used, "NEXT") == 0,
	    "chunked: chunks, an extension and a trailer");
	check(jobq_http_dechunk(b, 10, sizeof(out), out, &n, &used,
	    &err) == 0, "chunked: a part asks for more");
	check(jobq_http_dechunk(b, strlen(b), 4, out, &n, &used,
	    &err) == -1 && err.code == 413, "chunked: over the limit is 413");
	check(jobq_http_dechunk("x\r\n", 3, 8, out, &n, &used,
	    &err) == -1 && err.code == 400, "chunked: a bad size is 400");
	check(jobq_http_dechunk("123456789\r\n", 11, 8, out, &n, &used,
	    &err) == -1 && err.code == 400,
	    "chunked: a size of more than 8 digits is 400");
	check(jobq_http_dechunk("1\r\nab\r\n", 7, 8, out, &n, &used,
	    &err) == -1 && err.code == 400,
	    "chunked: data longer than its size is 400");
	check(jobq_secret_equal("s3cret", "s3cret") &&
	    !jobq_secret_equal("s3cret", "s3cre") &&
	    !jobq_secret_equal("s3cre", "s3cret") &&
	    !jobq_secret_equal("", "x") && jobq_secret_equal("", ""),
	    "secret_equal: equal only when equal");
}

static void
test_broker_urls(void)
{
	struct jobq_config	 cfg;
	struct jobq_err		 err;
	int			 i, rc = 0;

	setenv("JOBQ_AMQP_URL", " amqp://a/ \tamqp://b:1/x\n", 1);
	jobq_config_init(&cfg);
	check(cfg.n_urls == 2 && same(cfg.amqp_urls[0], "amqp://a/") &&
	    same(cfg.amqp_urls[1], "amqp://b:1/x") &&
	    same(cfg.amqp_url, "amqp://a/"),
	    "config: JOBQ_AMQP_URL holds URLs apart by white space");
	jobq_config_option(&cfg, 'u', "amqp://c/", &err);
	jobq_config_option(&cfg, 'u', "amqp://d/", &err);
	check(cfg.n_urls == 2 && same(cfg.amqp_urls[0], "amqp://c/") &&
	    same(cfg.amqp_urls[1], "amqp://d/"),
	    "config: -u replaces the URLs of the variable, and adds up");
	for (i = 2; i < JOBQ_MAX_URLS && rc != -1; i++)
		rc = jobq_config_option(&cfg, 'u', "amqp://e/", &err);
	rc = jobq_config_option(&cfg, 'u', "amqp://f/", &err);
	check(rc == -1 && err.code == EX_USAGE,
	    "config: more -u than the most URLs is a usage error");
	setenv("JOBQ_AMQP_URL", "  ", 1);
	jobq_config_init(&cfg);
	check(cfg.n_urls == 1 && same(cfg.amqp_url, JOBQ_DEFAULT_AMQP_URL),
	    "config: a blank JOBQ_AMQP_URL means the default");
	setenv("JOBQ_AMQP_URL", "amqp://a/ http://b/", 1);
	jobq_config_init(&cfg);
	rc = jobq_amqp_urls_check(&cfg, &err);
	check(rc == -1 && err.code == EX_USAGE && contains(err.msg,
	    "http://b/"), "config: every URL of the list is checked");
	unsetenv("JOBQ_AMQP_URL");
	unsetenv("JOBQ_DEAD_QUEUE");
	jobq_config_init(&cfg);
	check(same(cfg.dead_queue, JOBQ_DEFAULT_DEAD_QUEUE),
	    "config: the dead-letter queue is job-dead by default");
	jobq_config_option(&cfg, 'E', "graveyard", &err);
	check(same(cfg.dead_queue, "graveyard"),
	    "config: -E names the dead-letter queue");
}

static void
test_headers(void)
{
	struct jobq_headers	 h = { .n = 0 };
	amqp_table_t		 t;
	int			 i;

	t = jobq_headers_table(&h);
	check(t.num_entries == 0 && t.entries == NULL,
	    "headers: an empty set is no table");
	jobq_header_str(&h, JOBQ_H_REASON, "exit status 65");
	jobq_header_int(&h, JOBQ_H_ATTEMPTS, 3);
	t = jobq_headers_table(&h);
	check(t.num_entries == 2 &&
	    t.entries[0].value.kind == AMQP_FIELD_KIND_UTF8 &&
	    t.entries[0].value.value.bytes.len == 14 &&
	    t.entries[1].value.kind == AMQP_FIELD_KIND_I64 &&
	    t.entries[1].value.value.i64 == 3,
	    "headers: strings and integers keep their kinds");
	for (i = 0; i < 20; i++)
		jobq_header_int(&h, "x", i);
	check(h.n == JOBQ_MAX_HEADERS, "headers: a full set takes no more");
}

static void
test_health(void)
{
	struct jobq_err	 err;
	time_t		 at = 0;
	char		 path[] = "/tmp/jobq-unit-health.XXXXXX";
	int		 fd, rc;

	if ((fd = mkstemp(path)) != -1)
		close(fd);
	unlink(path);
	rc = jobq_health(path, 1, &at, &err);
	check(rc == 0 && at != 0 && access(path, F_OK) == 0,
	    "health: a consumer attached makes the file");
	rc = jobq_health(path, 0, &at, &err);
	check(rc == 0 && at == 0 && access(path, F_OK) == -1,
	    "health: none attached removes it");
	rc = jobq_health("/nonexistent/dir/health", 1, &at, &err);
	check(rc == -1 && at != 0 && contains(err.msg, "/nonexistent/dir"),
	    "health: a file that cannot be made is an error, once a period");
	check(jobq_health(NULL, 1, &at, &err) == 0,
	    "health: no file, nothing to do");
}

int
main(void)
{
	test_reader_streams();
	test_reader_lines();
	test_reader_strict();
	test_reader_limits();
	test_reader_end();
	test_json_parse();
	test_json_has_nul();
	test_utf8();
	test_job_minimal();
	test_job_unknown();
	test_job_types();
	test_job_members();
	test_job_not_object();
	test_job_codec();
	test_job_codec_optional();
	test_job_decode();
	test_result_codec();
	test_result_decode();
	test_status_final();
	test_mask_secret();
	test_parse_long();
	test_time_valid();
	test_now();
	test_uuid_type();
	test_uuid_new();
	test_trace();
	test_q();
	test_http_head();
	test_http_chunked();
	test_broker_urls();
	test_headers();
	test_health();
	printf("1..%d\n", tests);
	return failures > 0;
}
