/*
 * jbuf.h — a growing text buffer, with JSON string literals.
 *
 * Used where text (JSON, the metrics exposition) is written in pieces:
 *   jbuf_t b = {0};
 *   jbuf_puts(&b, "{\"name\":");
 *   jbuf_json_string(&b, name);          // quoted and escaped
 *   jbuf_append(&b, "}", 1);
 *   if (b.oom) { jbuf_free(&b); ... }    // every append after a failed
 *                                        // allocation is a no-op
 *   use b.p (NUL-terminated, b.len bytes); jbuf_free(&b) or keep b.p.
 *
 * A writer that knows its worst case reserves it once (jbuf_reserve) and
 * writes at b.p + b.len itself, e.g. with jbuf_put_json_string.
 */
#ifndef CA_JBUF_H
#define CA_JBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    char *p;    /* NUL-terminated once anything was appended; NULL before */
    size_t len; /* bytes, without the NUL */
    size_t cap;
    bool oom; /* an allocation failed: the text is incomplete */
} jbuf_t;

/* Room for `more` bytes and a NUL after len. False (oom set) when it failed. */
bool jbuf_reserve(jbuf_t *b, size_t more);
void jbuf_append(jbuf_t *b, const char *s, size_t n);
void jbuf_puts(jbuf_t *b, const char *s);
/* s as a JSON string literal: quotes added, '"', '\\' and control characters
 * escaped (UTF-8 passes through). */
void jbuf_json_string(jbuf_t *b, const char *s);
/* The same for n bytes at o, which has room for n * 6 + 2 (every byte as
 * \u00XX, and the quotes); returns the end. */
char *jbuf_put_json_string(char *o, const char *s, size_t n);
void jbuf_free(jbuf_t *b);

#endif
