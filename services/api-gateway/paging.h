/*
 * paging.h — keyset pages for the gateway's list routes (GET /api/jobs,
 * GET /api/presets).
 *
 * A list statement selects the row as JSON text in column 0 (copied into the
 * reply as it is: PostgreSQL made it) and the row's sort key in columns
 * 1..ncols, or (paging_new_fields) the row's plain columns, written as a JSON
 * object here, then the sort key; it fetches limit + 1 rows. The reply is
 *   {"<array>": [row, ...], "next_cursor": "<opaque>" | null}
 * where the cursor is base64url("<key1>|<key2>|...") of the last row shown,
 * present only when there was a row past the page.
 *
 *   paging_t *pg = paging_new("jobs", limit, 2);
 *   if (pg == NULL) { http_reply_error(req, 503, "unavailable", "out of memory"); return; }
 *   gw_query(gw, req, user->id, "SELECT json, key1, key2 ... LIMIT $n", n, p, paging_on_page, pg);
 *
 * Decoding a cursor a client sent back:
 *   char text[PAGING_CURSOR_TEXT_MAX];
 *   char *key[2];
 *   if (!paging_cursor_split(cursor, text, key, 2)) ... 400
 *   then check each key[i] (the last one holds the rest of the text).
 */
#ifndef CA_PAGING_H
#define CA_PAGING_H

#include "gateway.h"
#include "jbuf.h"

#include <stdbool.h>
#include <stddef.h>

/* The longest cursor accepted and the longest text inside one. */
#define PAGING_CURSOR_MAX 200
#define PAGING_CURSOR_TEXT_MAX 128

typedef struct paging paging_t;

/* A list route's ?limit=: digits only, 1..100. False when it is anything else
 * (the caller answers 400 invalid_request naming "limit"). */
bool paging_parse_limit(const char *s, long *out);

/* Answers 200 with b as JSON (Cache-Control: no-store), or 503 when building
 * it ran out of memory; frees b either way. */
void paging_reply(http_req_t *req, jbuf_t *b);

/* One field of a row written as a JSON object member. */
typedef enum {
    PAGING_STRING, /* text column → JSON string, SQL NULL → null */
    PAGING_INT,    /* integer column (text form is a JSON number) → number, NULL → null */
    PAGING_TS,     /* TIMESTAMP (UTC) column in PostgreSQL's ISO text → RFC 3339 string
                      "YYYY-MM-DDTHH:MM:SS.mmmZ" (as GW_SQL_TS writes it, without to_char
                      in the query); NULL → null */
} paging_kind_t;

/* PostgreSQL's ISO text of a TIMESTAMP ("YYYY-MM-DD HH:MM:SS" and up to six
 * fraction digits, trailing zeros dropped; the pool's connections use
 * DateStyle ISO) as "YYYY-MM-DDTHH:MM:SS" plus frac_digits (0..6) fraction
 * digits, truncated as to_char's MS and US do, then suffix. Returns the length
 * written to out (out_len >= 27 + strlen(suffix)), 0 when s is not that form
 * (years past 9999, BC, infinity). */
size_t paging_ts_rfc3339(const char *s, size_t n, int frac_digits, const char *suffix, char *out,
                         size_t out_len);

typedef struct {
    const char *name; /* JSON member name (a plain identifier: not escaped) */
    paging_kind_t kind;
} paging_field_t;

/* Writes {"name": value, ...} from columns first_col .. first_col + nfields - 1
 * of the row: no JSON is built in SQL and none is parsed here. */
void paging_write_row(jbuf_t *b, const PGresult *res, int row, int first_col,
                      const paging_field_t *fields, int nfields);

/* array_name must outlive the query (a string literal). NULL when out of
 * memory. paging_on_page frees it. */
paging_t *paging_new(const char *array_name, long limit, int ncols);
/* Like paging_new for a statement that selects plain columns: the row object is
 * written from columns 0 .. nfields - 1 (fields must outlive the query), the
 * sort key follows in columns nfields .. nfields + ncols - 1. */
paging_t *paging_new_fields(const char *array_name, long limit, int ncols,
                            const paging_field_t *fields, int nfields);

/* A gw_query_cb: replies 200 with the page (Cache-Control: no-store) and
 * frees arg (a paging_t). */
void paging_on_page(gw_t *gw, http_req_t *req, const PGresult *res, void *arg);
/* The sort key is ncols columns of the row itself, cols[0..ncols-1] (cols
 * must outlive the query; nothing follows the fields in the statement), the
 * first a TIMESTAMP in ISO text: the cursor holds it as
 * "YYYY-MM-DDTHH:MM:SS.ffffff" (microseconds, no zone). */
void paging_key_timestamp_cols(paging_t *pg, const int *cols);

/* Decodes a cursor into text (NUL-terminated, no NUL inside) and splits it at
 * the first nkeys - 1 '|' into keys[0..nkeys-1], pointers into text; the last
 * key is the rest of the text. False when it is not base64url, too long,
 * empty or has fewer than nkeys - 1 '|'. */
bool paging_cursor_split(const char *cursor, char text[PAGING_CURSOR_TEXT_MAX], char **keys,
                         size_t nkeys);

#endif
