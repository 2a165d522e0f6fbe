/*
 * paging — keyset pages for the list routes (see paging.h).
 */
#include "paging.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct paging {
    const char *array_name;
    long limit;
    int ncols;
};

paging_t *paging_new(const char *array_name, long limit, int ncols)
{
    paging_t *pg = malloc(sizeof(*pg));
    if (pg == NULL) {
        return NULL;
    }
    pg->array_name = array_name;
    pg->limit = limit;
    pg->ncols = ncols;
    return pg;
}

/* base64url("<col first>|...|<col first+ncols-1>") of one row; NULL when out of memory. */
static char *cursor_encode(const PGresult *res, int row, int first, int ncols)
{
    char text[PAGING_CURSOR_TEXT_MAX];
    size_t used = 0;
    text[0] = '\0';
    for (int c = 0; c < ncols && used < sizeof(text); c++) {
        int w = snprintf(text + used, sizeof(text) - used, "%s%s", c > 0 ? "|" : "",
                         PQgetvalue(res, row, first + c));
        if (w < 0) {
            return NULL;
        }
        used += (size_t)w;
    }
    return crypto_base64url_encode(text, strlen(text));
}

void paging_on_page(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)gw;
    paging_t *pg = arg;
    int n = PQntuples(res);
    int shown = n > pg->limit ? (int)pg->limit : n;
    cJSON *doc = cJSON_CreateObject();
    cJSON *rows = cJSON_AddArrayToObject(doc, pg->array_name);
    for (int i = 0; i < shown; i++) {
        cJSON *row = cJSON_Parse(PQgetvalue(res, i, 0));
        if (row != NULL) {
            cJSON_AddItemToArray(rows, row);
        }
    }
    char *cursor = NULL;
    if (n > pg->limit && shown > 0) {
        cursor = cursor_encode(res, shown - 1, 1, pg->ncols);
    }
    if (cursor != NULL) {
        cJSON_AddStringToObject(doc, "next_cursor", cursor);
        free(cursor);
    } else {
        cJSON_AddNullToObject(doc, "next_cursor");
    }
    free(pg);
    http_reply_header(req, "Cache-Control", "no-store");
    http_reply_json(req, 200, doc);
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
