/* infile — see infile.h. */
#define _GNU_SOURCE
#include "infile.h"

#include "drive.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *tmp_dir(void)
{
    const char *d = getenv("TMPDIR");
    return d != NULL && d[0] == '/' ? d : "/tmp";
}

int infile_tmpfile(void)
{
    const char *dir = tmp_dir();
#ifdef O_TMPFILE
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
        return fd;
    }
    /* EOPNOTSUPP / EISDIR / EINVAL: no O_TMPFILE on this file system */
#endif
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/ca-original-XXXXXX", dir) >= (int)sizeof(path)) {
        return -1;
    }
    int tfd = mkostemp(path, O_CLOEXEC); /* mode 0600 */
    if (tfd < 0) {
        return -1;
    }
    (void)unlink(path); /* nameless from now on */
    return tfd;
}

void infile_close(infile_t *f)
{
    if (f->data != NULL) {
        munmap((void *)f->data, f->len);
    }
    if (f->fd >= 0) {
        close(f->fd);
    }
    f->data = NULL;
    f->len = 0;
    f->fd = -1;
}

google_status_t infile_download(google_client_t *gc, const char *access_token, const char *file_id,
                                size_t max_bytes, infile_t *f, google_error_t *err)
{
    f->data = NULL;
    f->len = 0;
    f->fd = infile_tmpfile();
    if (f->fd < 0) {
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0,
                                "download: no temporary file in %s (%s)", tmp_dir(),
                                strerror(errno));
    }
    int wfd = dup(f->fd);
    FILE *sink = wfd >= 0 ? fdopen(wfd, "w") : NULL;
    if (sink == NULL) {
        if (wfd >= 0) {
            close(wfd);
        }
        infile_close(f);
        return google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "download: %s", strerror(errno));
    }
    size_t len = 0;
    google_status_t st = drive_download_to(gc, access_token, file_id, max_bytes,
                                           INFILE_DOWNLOAD_TIMEOUT_MS, sink, &len, err);
    if (fclose(sink) != 0 && st == GOOGLE_OK) {
        st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "download: writing the file failed");
    }
    if (st == GOOGLE_OK && len > 0) {
        void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, f->fd, 0);
        if (m == MAP_FAILED) {
            st = google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "download: mapping the file: %s",
                                  strerror(errno));
        } else {
            f->data = m;
            f->len = len;
        }
    }
    if (st != GOOGLE_OK) {
        infile_close(f);
    }
    return st;
}
