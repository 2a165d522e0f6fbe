/*
 * paging — keyset pages for the list routes (see paging.h).
 */
#include "paging.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct paging {
    const char *array_name;
    long limit;
    int ncols;
    const paging_field_t *fields; /* NULL: column 0 holds the row as JSON text */
    int nfields;
    const int *key_cols; /* NULL: the ncols columns after the row's (paging_key_timestamp_cols) */
};

void paging_reply(http_req_t *req, jbuf_t *b)
{
    if (b->oom) {
        http_reply_error(req, 503, "unavailable", "out of memory");
    } else {
        http_reply_header(req, "Cache-Control", "no-store");
        http_reply_data(req, 200, "application/json", b->p, b->len);
    }
    jbuf_free(b);
}

size_t paging_ts_rfc3339(const char *s, size_t n, int frac_digits, const char *suffix, char *out,
                         size_t out_len)
{
    /* "YYYY-MM-DD HH:MM:SS" */
    static const char shape[] = "dddd-dd-dd dd:dd:dd";
    size_t sl = strlen(suffix);
    if (n < 19 || frac_digits < 0 || frac_digits > 6 || out_len < 27 + sl) {
        return 0;
    }
    for (size_t i = 0; i < 19; i++) {
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i]) {
            return 0;
        }
    }
    size_t nf = 0; /* fraction digits present */
    if (n > 19) {
        if (s[19] != '.' || n - 20 < 1 || n - 20 > 6) {
            return 0;
        }
        nf = n - 20;
        for (size_t i = 20; i < n; i++) {
            if (s[i] < '0' || s[i] > '9') {
                return 0;
            }
        }
    }
    memcpy(out, s, 19);
    out[10] = 'T';
    size_t o = 19;
    if (frac_digits > 0) {
        out[o++] = '.';
        for (size_t i = 0; i < (size_t)frac_digits; i++) {
            out[o++] = i < nf ? s[20 + i] : '0';
        }
    }
    memcpy(out + o, suffix, sl);
    o += sl;
    out[o] = '\0';
    return o;
}

/* The row's worst-case size is reserved once, then written without checks. */
void paging_write_row(jbuf_t *b, const PGresult *res, int row, int first_col,
                      const paging_field_t *fields, int nfields)
{
    size_t need = 2;
    for (int f = 0; f < nfields; f++) {
        need += strlen(fields[f].name) + 4 + 6 * (size_t)PQgetlength(res, row, first_col + f) + 6;
    }
    if (!jbuf_reserve(b, need)) {
        return;
    }
    char *o = b->p + b->len;
    *o++ = '{';
    for (int f = 0; f < nfields; f++) {
        int col = first_col + f;
        if (f > 0) {
            *o++ = ',';
        }
        size_t nl = strlen(fields[f].name);
        *o++ = '"';
        memcpy(o, fields[f].name, nl);
        o += nl;
        *o++ = '"';
        *o++ = ':';
        size_t vl = (size_t)PQgetlength(res, row, col);
        if (PQgetisnull(res, row, col)) {
            memcpy(o, "null", 4);
            o += 4;
        } else if (fields[f].kind == PAGING_INT) {
            memcpy(o, PQgetvalue(res, row, col), vl);
            o += vl;
        } else if (fields[f].kind == PAGING_TS) {
            char ts[40];
            size_t tl = paging_ts_rfc3339(PQgetvalue(res, row, col), vl, 3, "Z", ts, sizeof ts);
            o = tl > 0 ? jbuf_put_json_string(o, ts, tl) /* else as it came */
                       : jbuf_put_json_string(o, PQgetvalue(res, row, col), vl);
        } else {
            o = jbuf_put_json_string(o, PQgetvalue(res, row, col), vl);
        }
    }
    *o++ = '}';
    b->len = (size_t)(o - b->p);
    b->p[b->len] = '\0';
}

/* ---- pages ---- */

paging_t *paging_new(const char *array_name, long limit, int ncols)
{
    return paging_new_fields(array_name, limit, ncols, NULL, 0);
}

paging_t *paging_new_fields(const char *array_name, long limit, int ncols,
                            const paging_field_t *fields, int nfields)
{
    paging_t *pg = malloc(sizeof(*pg));
    if (pg == NULL) {
        return NULL;
    }
    pg->array_name = array_name;
    pg->limit = limit;
    pg->ncols = ncols;
    pg->fields = fields;
    pg->nfields = fields != NULL ? nfields : 0;
    pg->key_cols = NULL;
    return pg;
}

void paging_key_timestamp_cols(paging_t *pg, const int *cols)
{
    pg->key_cols = cols;
}

/* base64url("<key 1>|...|<key n>") of one row: the columns first ..
 * first + ncols - 1, or key_cols[0..ncols-1] with the first a timestamp;
 * NULL when out of memory. */
static char *cursor_encode(const PGresult *res, int row, int first, int ncols, const int *key_cols)
{
    char text[PAGING_CURSOR_TEXT_MAX];
    size_t used = 0;
    text[0] = '\0';
    for (int c = 0; c < ncols && used < sizeof(text); c++) {
        int col = key_cols != NULL ? key_cols[c] : first + c;
        const char *v = PQgetvalue(res, row, col);
        char ts[40];
        if (c == 0 && key_cols != NULL &&
            paging_ts_rfc3339(v, (size_t)PQgetlength(res, row, col), 6, "", ts, sizeof ts) > 0) {
            v = ts;
        }
        int w = snprintf(text + used, sizeof(text) - used, "%s%s", c > 0 ? "|" : "", v);
        if (w < 0) {
            return NULL;
        }
        used += (size_t)w;
    }
    return crypto_base64url_encode(text, strlen(text));
}

/* The page is written as text: PostgreSQL's JSON rows are copied as they are
 * (valid JSON by construction) or the row is written from plain columns; no
 * JSON tree is built, parsed or printed. */
void paging_on_page(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)gw;
    paging_t *pg = arg;
    int n = PQntuples(res);
    int shown = n > pg->limit ? (int)pg->limit : n;
    int key_col = pg->fields != NULL ? pg->nfields : 1;
    jbuf_t b = {0};
    (void)jbuf_reserve(&b, (size_t)shown * 512 + 256);
    jbuf_append(&b, "{\"", 2);
    jbuf_puts(&b, pg->array_name);
    jbuf_append(&b, "\":[", 3);
    for (int i = 0; i < shown; i++) {
        if (i > 0) {
            jbuf_append(&b, ",", 1);
        }
        if (pg->fields != NULL) {
            paging_write_row(&b, res, i, 0, pg->fields, pg->nfields);
        } else {
            jbuf_append(&b, PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0));
        }
    }
    jbuf_append(&b, "],\"next_cursor\":", 16);
    char *cursor = NULL;
    if (n > pg->limit && shown > 0) {
        cursor = cursor_encode(res, shown - 1, key_col, pg->ncols, pg->key_cols);
    }
    if (cursor != NULL) {
        jbuf_json_string(&b, cursor);
        free(cursor);
    } else {
        jbuf_append(&b, "null", 4);
    }
    jbuf_append(&b, "}", 1);
    free(pg);
    paging_reply(req, &b);
}

bool paging_cursor_split(const char *cursor, char text[PAGING_CURSOR_TEXT_MAX], char **keys,
                         size_t nkeys)
{
    if (nkeys == 0 || strlen(cursor) > PAGING_CURSOR_MAX) {
        return false;
    }
    size_t n = 0;
    uint8_t *raw = crypto_base64url_decode(cursor, &n);
    if (raw == NULL) {
        return false;
    }
    bool ok = n > 0 && n < PAGING_CURSOR_TEXT_MAX;
    if (ok) {
        memcpy(text, raw, n);
        text[n] = '\0';
        ok = strlen(text) == n;
    }
    free(raw);
    if (!ok) {
        return false;
    }
    keys[0] = text;
    for (size_t i = 1; i < nkeys; i++) {
        char *bar = strchr(keys[i - 1], '|');
        if (bar == NULL) {
            return false;
        }
        *bar = '\0';
        keys[i] = bar + 1;
    }
    return true;
}

bool paging_parse_limit(const char *s, long *out)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 3) {
        return false;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p)) {
            return false;
        }
    }
    long v = strtol(s, NULL, 10);
    if (v < 1 || v > 100) {
        return false;
    }
    *out = v;
    return true;
}
