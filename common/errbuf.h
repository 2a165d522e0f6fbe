/*
 * errbuf.h — filling a caller's error buffer (the `char *err, size_t errlen`
 * convention of every module).
 *
 *   if (port < 1) { errbuf_set(err, errlen, "port %d out of range", port); return -1; }
 *
 * NULL or zero-length buffers are ignored. The message is made one line:
 * line breaks and tabs become spaces and trailing white space is dropped
 * (libpq's and libcurl's messages end with a newline), so it fits a JSON log
 * line and an HTTP error body as it is.
 */
#ifndef CA_ERRBUF_H
#define CA_ERRBUF_H

#include <stddef.h>

void errbuf_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
