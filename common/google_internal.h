/*
 * google_internal.h — the Google client's insides, shared by google_oauth.c
 * (the client, OAuth, userinfo) and drive.c (Drive v3). Not a public header:
 * nothing else includes it.
 *
 * Every call goes through google_call(): one http_client_do() with the
 * client's timeouts and retries (network, 408, 429, 5xx; never 403), then one
 * classification of the outcome into google_status_t. Nothing here logs, and
 * no error message is built from a URL, a header or a request body, so
 * tokens, codes and secrets cannot end up in one.
 */
#ifndef CA_GOOGLE_INTERNAL_H
#define CA_GOOGLE_INTERNAL_H

#include "google_oauth.h"
#include "http_client.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct google_client {
    http_client_t *http;
    char *client_id;
    char *client_secret;
    char *token_url;
    char *userinfo_url;
    char *revoke_url;
    char *drive_api_url;
    char *drive_upload_url;
    long timeout_ms;
    int max_retries;
};

typedef enum {
    GOOGLE_API_RESOURCE, /* Drive, userinfo: a bearer token; 401 means that token */
    GOOGLE_API_TOKEN,    /* the token endpoint: client auth in the body, grants */
} google_api_kind_t;

typedef struct {
    const char *method;
    const char *url;    /* NULL: not configured (or out of memory building it) */
    const char *bearer; /* access token or NULL */
    const char *content_type;
    const void *body;
    size_t body_len;
    size_t max_body; /* 0: 8 MiB, room for a list of 1000 files with every field */
    google_api_kind_t kind;
    const char *what;           /* "files.list": names the call in messages */
    const http_pair_t *headers; /* extra headers (Content-Range, X-Upload-*), may be NULL */
    size_t nheaders;            /* at most GOOGLE_MAX_EXTRA_HEADERS */
    bool no_retry;              /* one attempt only, on a connection of its own (a
                                 * resumable chunk: the caller asks Drive where it
                                 * stands instead of repeating it, and so must curl) */
    long timeout_ms;            /* per attempt; 0: the client's */
    FILE *sink;                 /* a 2xx body streams here (http_request_t.sink) */
} google_request_t;

#define GOOGLE_MAX_EXTRA_HEADERS 4

/* Performs the request. On GOOGLE_OK, resp holds a 2xx answer. resp must
 * always be freed with http_response_free by the caller. */
google_status_t google_call(google_client_t *gc, const google_request_t *r, http_response_t *resp,
                            google_error_t *err);
/* google_call + parse the JSON object of a 2xx answer (*root: caller deletes). */
google_status_t google_call_json(google_client_t *gc, const google_request_t *r, cJSON **root,
                                 google_error_t *err);

/* obj[name] when it is a string, else NULL. */
const char *google_json_str(const cJSON *obj, const char *name);
/* Copies obj[name] when it is a string into *slot (else NULL); -1 on OOM only. */
int google_json_dup(const cJSON *obj, const char *name, char **slot);
/* obj[name] as a bool; Google sometimes sends "true" as a string. */
bool google_json_bool(const cJSON *obj, const char *name);

#endif
