/*
 * infile — an original downloaded to an anonymous temporary file and mapped
 * read-only, so that a 100 MB camera file is never held in the heap (not
 * once, let alone several times while a buffer grows): curl streams it to the
 * file (MAX_IMAGE_BYTES enforced while it arrives), and the decoders read the
 * mapping, i.e. the file's pages in the page cache, which the kernel can drop
 * and read again under memory pressure.
 *
 * The file is made in $TMPDIR (else /tmp) with O_TMPFILE, or mkstemp and an
 * unlink at once where the file system has no O_TMPFILE; mode 0600. It has no
 * name from the start, so it goes away with the descriptor and the mapping on
 * every path: success, failure, cancel, timeout, a crash. TMPDIR should be on
 * disk, not tmpfs (tmpfs pages are memory the kernel cannot drop).
 *
 *   infile_t in;
 *   if (infile_download(gc, token, file_id, max_bytes, &in, &gerr) == GOOGLE_OK)
 *       decode(in.data, in.len);
 *   infile_close(&in);           // always safe, also after a failure
 */
#ifndef CA_INFILE_H
#define CA_INFILE_H

#include "google_oauth.h"

#include <stddef.h>

/* Per attempt of a download (the Google client's 30 s is for API calls): a
 * 100 MB original needs 2.7 MB/s to make it. */
#define INFILE_DOWNLOAD_TIMEOUT_MS 300000L

typedef struct {
    const void *data; /* the mapping (NULL when len is 0) */
    size_t len;
    int fd; /* -1: none */
} infile_t;

/* drive_download_to into a new temporary file, then mapped. On failure *f is
 * closed already (infile_close stays safe). */
google_status_t infile_download(google_client_t *gc, const char *access_token, const char *file_id,
                                size_t max_bytes, infile_t *f, google_error_t *err);
void infile_close(infile_t *f);

/* The temporary file alone (tests): a new unnamed 0600 file, or -1. */
int infile_tmpfile(void);

#endif
