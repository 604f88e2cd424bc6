/*
 * Fuzz target: job documents as jobq-submit and POST /job read them.
 *
 * The input is a stream of documents, fed to the reader in pieces whose
 * sizes come from the input's first byte, so that documents cut at
 * every point are tried.  Each document that parses is checked as a job
 * document; a job that passes must encode to a message that decodes
 * back to the same job.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jobq.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define MAX_DOC	4096

static void
check_job(json_object *doc)
{
	struct jobq_job	 job, back;
	struct jobq_err	 err;
	char		*msg;

	if (jobq_job_from_doc(doc, &job, &err) == -1)
		return;
	if ((msg = jobq_job_encode(&job)) == NULL)
		abort();
	if (jobq_job_decode(msg, strlen(msg), &back, &err) == -1)
		abort();	/* what jobq wrote, jobq must read */
	if (strcmp(job.id, back.id) != 0 || strcmp(job.type,
	    back.type) != 0 || job.attempt != back.attempt)
		abort();
	free(msg);
	jobq_job_clear(&back);
	jobq_job_clear(&job);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct jobq_reader	*r;
	struct jobq_err		 err;
	json_object		*doc;
	const char		*p;
	size_t			 left, piece, used;
	int			 rc;

	if (size == 0)
		return 0;
	piece = 1 + data[0] % 64;
	p = (const char *)data + 1;
	left = size - 1;
	if ((r = jobq_reader_new(MAX_DOC)) == NULL)
		abort();
	while (left > 0) {
		size_t	 n = left < piece ? left : piece;

		rc = jobq_reader_feed(r, p, n, &used, &doc, &err);
		if (rc == -1)
			goto out;	/* the reader stops at an error */
		if (rc == 0)
			used = n;
		else {
			check_job(doc);
			json_object_put(doc);
		}
		p += used;
		left -= used;
	}
	if (jobq_reader_end(r, &doc, &err) == 1) {
		check_job(doc);
		json_object_put(doc);
	}
out:
	jobq_reader_free(r);
	return 0;
}
