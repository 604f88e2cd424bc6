/*
 * Fuzz target: messages as jobq-work reads them from the job queue and
 * jobq-store from the result queue.
 *
 * The input's first byte picks the decoder; the rest is the message
 * body.  A message that decodes must encode again to one that decodes
 * to the same thing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jobq.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
job(const char *body, size_t len)
{
	struct jobq_job	 j, back;
	struct jobq_err	 err;
	char		*msg;

	if (jobq_job_decode(body, len, &j, &err) == -1)
		return;
	if ((msg = jobq_job_encode(&j)) == NULL)
		abort();
	if (jobq_job_decode(msg, strlen(msg), &back, &err) == -1 ||
	    strcmp(j.id, back.id) != 0 || j.attempt != back.attempt ||
	    j.max_attempts != back.max_attempts)
		abort();
	free(msg);
	jobq_job_clear(&back);
	jobq_job_clear(&j);
}

static void
result(const char *body, size_t len)
{
	struct jobq_result	 r, back;
	struct jobq_err		 err;
	char			*msg;

	if (jobq_result_decode(body, len, &r, &err) == -1)
		return;
	if ((msg = jobq_result_encode(&r)) == NULL)
		abort();
	if (jobq_result_decode(msg, strlen(msg), &back, &err) == -1 ||
	    strcmp(r.id, back.id) != 0 || strcmp(r.status,
	    back.status) != 0 || r.attempts != back.attempts)
		abort();
	free(msg);
	jobq_result_clear(&back);
	jobq_result_clear(&r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		result((const char *)data + 1, size - 1);
	else
		job((const char *)data + 1, size - 1);
	return 0;
}
