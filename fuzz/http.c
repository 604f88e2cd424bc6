/*
 * Fuzz target: HTTP requests as jobq-httpd reads them.
 *
 * The input is the bytes a client sends.  The head is found and parsed;
 * when it announces a chunked body, the rest is decoded as one.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jobq.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define MAX_HEADERS	100
#define MAX_BODY	4096

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct jobq_http_req	 req;
	struct jobq_err		 err;
	const char		*in = (const char *)data, *end;
	char			*out;
	size_t			 head, len, used;
	int			 rc;

	if ((end = jobq_http_head_end(in, size)) == NULL)
		return 0;
	head = (size_t)(end - in);
	if (head > size)
		abort();
	if (jobq_http_parse_head(in, head, MAX_HEADERS, &req, &err) == -1)
		return 0;
	/* Only a valid traceparent is ever taken from a request. */
	if (*req.trace != '\0' && (!jobq_trace_valid(req.trace) ||
	    req.traces != 1))
		abort();
	if (!req.chunked)
		return 0;
	if ((out = malloc(MAX_BODY)) == NULL)
		abort();
	rc = jobq_http_dechunk(in + head, size - head, MAX_BODY, out, &len,
	    &used, &err);
	if (rc == 1 && (len > MAX_BODY || used > size - head))
		abort();
	free(out);
	return 0;
}
