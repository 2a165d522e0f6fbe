/*
 * jbuf — a growing text buffer (see jbuf.h).
 */
#include "jbuf.h"

#include <stdlib.h>
#include <string.h>

bool jbuf_reserve(jbuf_t *b, size_t more)
{
    if (b->oom) {
        return false;
    }
    if (b->len + more + 1 <= b->cap) {
        return true;
    }
    size_t cap = b->cap == 0 ? 1024 : b->cap;
    while (cap < b->len + more + 1) {
        cap *= 2;
    }
    char *grown = realloc(b->p, cap);
    if (grown == NULL) {
        b->oom = true;
        return false;
    }
    b->p = grown;
    b->cap = cap;
    return true;
}

void jbuf_append(jbuf_t *b, const char *s, size_t n)
{
    if (!jbuf_reserve(b, n)) {
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void jbuf_puts(jbuf_t *b, const char *s)
{
    jbuf_append(b, s, strlen(s));
}

char *jbuf_put_json_string(char *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 0x0f];
            break;
        }
    }
    *o++ = '"';
    return o;
}

void jbuf_json_string(jbuf_t *b, const char *s)
{
    size_t n = strlen(s);
    if (!jbuf_reserve(b, n * 6 + 2)) {
        return;
    }
    char *o = jbuf_put_json_string(b->p + b->len, s, n);
    b->len = (size_t)(o - b->p);
    b->p[b->len] = '\0';
}

void jbuf_free(jbuf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
