/* errbuf — one-line error messages into a caller's buffer. See errbuf.h. */
#include "errbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void errbuf_set(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    size_t n = strlen(err);
    while (n > 0 &&
           (err[n - 1] == '\n' || err[n - 1] == '\r' || err[n - 1] == ' ' || err[n - 1] == '\t')) {
        err[--n] = '\0';
    }
    for (size_t i = 0; i < n; i++) {
        if (err[i] == '\n' || err[i] == '\r' || err[i] == '\t') {
            err[i] = ' ';
        }
    }
}
