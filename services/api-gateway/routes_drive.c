/*
 * routes_drive — watching a Drive folder, and browsing folders to pick one.
 *
 *   PUT    /api/watch {"folder_id"}   checks (Drive) that it is a folder the user
 *          can add files to, finds or makes "Processed" inside it (appProperties
 *          ca_role=processed), takes a changes start token, saves both ids on the
 *          user and starts the poller's state (drive_polls_start_watch); audited.
 *   DELETE /api/watch                  drive_polls_stop_watch + clears the ids; audited.
 *   GET    /api/drive/folders?parent=&cursor=   one page of the parent's folders.
 *
 * Drive calls run on the pool threads (gw_offload); the database writes run on
 * the loop through the pool, as the user (RLS).
 */
#include "gateway.h"

#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROCESSED_NAME "Processed"

typedef enum { OP_WATCH, OP_FOLDERS } op_kind_t;

typedef enum {
    R_OK = 0,
    R_DISCONNECTED, /* no tokens or revoked */
    R_DB,           /* PostgreSQL trouble on the thread */
    R_UNAVAILABLE,  /* Google 5xx, network, rate limits */
    R_NOT_FOUND,
    R_NOT_FOLDER,
    R_NOT_WRITABLE,
    R_FORBIDDEN,
    R_BAD_REQUEST,
} result_t;

typedef struct {
    gw_t *gw;
    http_req_t *req;
    op_kind_t kind;
    char user_id[GW_UUID_LEN + 1];
    char ip[64];
    char folder_id[256]; /* watch: the folder; folders: the parent */
    char *cursor;
    /* results */
    result_t result;
    char *folder_name;
    char *output_id;
    char *start_token;
    drive_file_list_t list;
} drive_op_t;

static void op_free(drive_op_t *op)
{
    free(op->cursor);
    free(op->folder_name);
    free(op->output_id);
    free(op->start_token);
    drive_file_list_free(&op->list);
    free(op);
}

static void op_free_cb(void *p)
{
    op_free(p);
}

static result_t from_google(google_status_t st)
{
    switch (st) {
    case GOOGLE_OK:
        return R_OK;
    case GOOGLE_ERR_NOT_FOUND:
        return R_NOT_FOUND;
    case GOOGLE_ERR_FORBIDDEN:
        return R_FORBIDDEN;
    case GOOGLE_ERR_AUTH:
    case GOOGLE_ERR_INVALID_GRANT:
        return R_DISCONNECTED;
    case GOOGLE_ERR_BAD_REQUEST:
        return R_BAD_REQUEST;
    default:
        return R_UNAVAILABLE;
    }
}

static result_t from_auth(drive_auth_status_t st)
{
    switch (st) {
    case DRIVE_AUTH_OK:
        return R_OK;
    case DRIVE_AUTH_REVOKED:
    case DRIVE_AUTH_NO_TOKENS:
        return R_DISCONNECTED;
    case DRIVE_AUTH_DB:
        return R_DB;
    default:
        return R_UNAVAILABLE;
    }
}

/* Runs one Drive step; a 401 refreshes the token once and repeats it. When the
 * refresh itself fails, auth_result says why and st stays GOOGLE_ERR_AUTH. */
#define WITH_TOKEN_RETRY(call)                                                                     \
    do {                                                                                           \
        st = (call);                                                                               \
        if (st == GOOGLE_ERR_AUTH && !refreshed) {                                                 \
            refreshed = true;                                                                      \
            drive_auth_status_t rast =                                                             \
                gw_drive_token(op->gw, op->user_id, true, token, sizeof(token), &gerr);            \
            if (rast != DRIVE_AUTH_OK) {                                                           \
                auth_result = from_auth(rast);                                                     \
            } else {                                                                               \
                st = (call);                                                                       \
            }                                                                                      \
        }                                                                                          \
    } while (0)

#define FAIL_RESULT(st) (auth_result != R_OK ? auth_result : from_google(st))

static void drive_work(void *arg)
{
    drive_op_t *op = arg;
    char token[4096];
    google_error_t gerr;
    memset(&gerr, 0, sizeof(gerr));
    bool refreshed = false;
    result_t auth_result = R_OK;
    google_status_t st = GOOGLE_OK;
    drive_auth_status_t ast =
        gw_drive_token(op->gw, op->user_id, false, token, sizeof(token), &gerr);
    if (ast != DRIVE_AUTH_OK) {
        op->result = from_auth(ast);
        return;
    }
    google_client_t *gc = gw_thread_google(op->gw);
    if (gc == NULL) {
        op->result = R_UNAVAILABLE;
        return;
    }
    char q[600];
    if (op->kind == OP_FOLDERS) {
        snprintf(q, sizeof(q),
                 "'%s' in parents and mimeType = '" DRIVE_FOLDER_MIME "' and trashed = false",
                 op->folder_id);
        WITH_TOKEN_RETRY(drive_files_list(gc, token, q, "name", 100, op->cursor, &op->list, &gerr));
        op->result = st == GOOGLE_OK ? R_OK : FAIL_RESULT(st);
        return;
    }

    drive_file_t folder;
    memset(&folder, 0, sizeof(folder));
    WITH_TOKEN_RETRY(drive_files_get(gc, token, op->folder_id, &folder, &gerr));
    if (st != GOOGLE_OK) {
        drive_file_free(&folder);
        op->result = FAIL_RESULT(st);
        return;
    }
    bool is_folder = folder.mime_type != NULL && strcmp(folder.mime_type, DRIVE_FOLDER_MIME) == 0;
    if (!is_folder || folder.trashed) {
        op->result = folder.trashed ? R_NOT_FOUND : R_NOT_FOLDER;
    } else if (!folder.can_add_children) {
        op->result = R_NOT_WRITABLE;
    }
    op->folder_name = folder.name != NULL ? strdup(folder.name) : NULL;
    drive_file_free(&folder);
    if (op->result != R_OK) {
        return;
    }

    snprintf(q, sizeof(q),
             "'%s' in parents and mimeType = '" DRIVE_FOLDER_MIME "' and trashed = false and "
             "appProperties has { key='ca_role' and value='processed' }",
             op->folder_id);
    drive_file_list_t found;
    memset(&found, 0, sizeof(found));
    WITH_TOKEN_RETRY(drive_files_list(gc, token, q, NULL, 10, NULL, &found, &gerr));
    if (st != GOOGLE_OK) {
        drive_file_list_free(&found);
        op->result = FAIL_RESULT(st);
        return;
    }
    if (found.n > 0 && found.files[0].id != NULL) {
        op->output_id = strdup(found.files[0].id);
    }
    drive_file_list_free(&found);
    if (op->output_id == NULL) {
        cJSON *props = cJSON_CreateObject();
        cJSON_AddStringToObject(props, "ca_role", "processed");
        drive_file_t made;
        memset(&made, 0, sizeof(made));
        WITH_TOKEN_RETRY(
            drive_create_folder(gc, token, PROCESSED_NAME, op->folder_id, props, &made, &gerr));
        cJSON_Delete(props);
        if (st != GOOGLE_OK || made.id == NULL) {
            drive_file_free(&made);
            op->result = st != GOOGLE_OK ? FAIL_RESULT(st) : R_UNAVAILABLE;
            return;
        }
        op->output_id = strdup(made.id);
        drive_file_free(&made);
    }
    WITH_TOKEN_RETRY(drive_changes_start_token(gc, token, &op->start_token, &gerr));
    op->result = st == GOOGLE_OK ? R_OK : FAIL_RESULT(st);
}

static bool reply_failure(drive_op_t *op)
{
    http_req_t *req = op->req;
    switch (op->result) {
    case R_OK:
        return false;
    case R_DISCONNECTED:
        http_reply_error(req, 409, "drive_disconnected",
                         "Google Drive access was revoked or never granted: sign in again");
        break;
    case R_DB:
        http_reply_header(req, "Retry-After", "1");
        http_reply_error(req, 503, "unavailable", "the database is not reachable");
        break;
    case R_UNAVAILABLE:
        http_reply_header(req, "Retry-After", "5");
        http_reply_error(req, 502, "drive_unavailable", "Google Drive is not answering; retry");
        break;
    case R_NOT_FOUND:
        http_reply_error(req, 404, "not_found", "no such folder in your Drive");
        break;
    case R_NOT_FOLDER:
        gw_reply_invalid(req, "folder_id", "is not a folder");
        break;
    case R_NOT_WRITABLE:
        http_reply_error(req, 403, "forbidden", "folder_id: you cannot add files to this folder");
        break;
    case R_FORBIDDEN:
        http_reply_error(req, 403, "forbidden", "Google Drive refused access to this folder");
        break;
    case R_BAD_REQUEST:
        gw_reply_invalid(req, op->kind == OP_FOLDERS ? "cursor" : "folder_id",
                         "Google Drive did not accept it");
        break;
    }
    return true;
}

/* ---- PUT /api/watch ---- */

static void on_watch_saved(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    drive_op_t *op = arg;
    if (PQntuples(res) != 1) {
        http_reply_error(req, 401, "unauthorized", "sign in first");
        op_free(op);
        return;
    }
    cJSON *details = cJSON_CreateObject();
    cJSON_AddStringToObject(details, "folder_id", op->folder_id);
    cJSON_AddStringToObject(details, "output_folder_id", op->output_id);
    char *dj = cJSON_PrintUnformatted(details);
    char target[300];
    snprintf(target, sizeof(target), "drive_folder:%s", op->folder_id);
    gw_audit(gw, op->user_id, "watch.start", target, dj, op->ip);
    free(dj);
    cJSON_Delete(details);

    cJSON *doc = cJSON_CreateObject();
    cJSON_AddBoolToObject(doc, "watching", true);
    cJSON_AddStringToObject(doc, "watched_folder_id", op->folder_id);
    cJSON_AddStringToObject(doc, "output_folder_id", op->output_id);
    if (op->folder_name != NULL) {
        cJSON_AddStringToObject(doc, "folder_name", op->folder_name);
    } else {
        cJSON_AddNullToObject(doc, "folder_name");
    }
    http_reply_json(req, 200, doc);
    op_free(op);
}

static void watch_done(void *arg)
{
    drive_op_t *op = arg;
    if (reply_failure(op)) {
        op_free(op);
        return;
    }
    const char *p[] = {op->user_id, op->folder_id, op->output_id, op->start_token};
    gw_query_ex(op->gw, op->req, op->user_id,
                "WITH u AS (UPDATE users SET watched_folder_id = $2, output_folder_id = $3"
                "            WHERE id = $1::uuid RETURNING id)"
                " SELECT drive_polls_start_watch(u.id, $2, $3, $4) FROM u",
                4, p, on_watch_saved, op, op_free_cb);
}

static drive_op_t *op_new(gw_t *gw, http_req_t *req, const gw_user_t *user, op_kind_t kind)
{
    drive_op_t *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return NULL;
    }
    op->gw = gw;
    op->req = req;
    op->kind = kind;
    snprintf(op->user_id, sizeof(op->user_id), "%s", user->id);
    snprintf(op->ip, sizeof(op->ip), "%s", gw_client_ip(req));
    return op;
}

static void start_op(drive_op_t *op, offload_done_fn done)
{
    if (gw_offload(op->gw, drive_work, done, op) != 0) {
        http_reply_header(op->req, "Retry-After", "1");
        http_reply_error(op->req, 503, "unavailable", "too many Drive requests in flight");
        op_free(op);
    }
}

static void put_watch(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    static const char *const allowed[] = {"folder_id", NULL};
    cJSON *body = gw_json_body(req, allowed);
    if (body == NULL) {
        return;
    }
    const char *folder = NULL;
    if (!gw_json_string(req, body, "folder_id", 1, 255, &folder)) {
        return;
    }
    if (folder == NULL) {
        gw_reply_invalid(req, "folder_id", "is required");
        return;
    }
    if (!drive_id_valid(folder) || strcmp(folder, "root") == 0) {
        gw_reply_invalid(req, "folder_id", "is not a Drive folder id");
        return;
    }
    drive_op_t *op = op_new(gw, req, user, OP_WATCH);
    if (op == NULL) {
        return;
    }
    snprintf(op->folder_id, sizeof(op->folder_id), "%s", folder);
    start_op(op, watch_done);
}

/* ---- DELETE /api/watch ---- */

typedef struct {
    char user_id[GW_UUID_LEN + 1];
    char ip[64];
} stop_t;

static void on_watch_stopped(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    stop_t *s = arg;
    if (PQntuples(res) != 1) {
        http_reply_error(req, 401, "unauthorized", "sign in first");
        free(s);
        return;
    }
    const char *n = PQgetvalue(res, 0, 0);
    char details[64];
    snprintf(details, sizeof(details), "{\"stopped\": %s}", n[0] != '\0' ? n : "0");
    gw_audit(gw, s->user_id, "watch.stop", NULL, details, s->ip);
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddBoolToObject(doc, "watching", false);
    cJSON_AddNumberToObject(doc, "stopped", (double)atoi(n));
    http_reply_json(req, 200, doc);
    free(s);
}

static void delete_watch(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    stop_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    snprintf(s->user_id, sizeof(s->user_id), "%s", user->id);
    snprintf(s->ip, sizeof(s->ip), "%s", gw_client_ip(req));
    const char *p[] = {user->id};
    gw_query_ex(gw, req, user->id,
                "WITH u AS (UPDATE users SET watched_folder_id = NULL, output_folder_id = NULL"
                "            WHERE id = $1::uuid RETURNING id)"
                " SELECT drive_polls_stop_watch(u.id, 'user_stopped') FROM u",
                1, p, on_watch_stopped, s, free);
}

/* ---- GET /api/drive/folders ---- */

static void folders_done(void *arg)
{
    drive_op_t *op = arg;
    if (reply_failure(op)) {
        op_free(op);
        return;
    }
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "parent", op->folder_id);
    cJSON *arr = cJSON_AddArrayToObject(doc, "folders");
    for (size_t i = 0; i < op->list.n; i++) {
        const drive_file_t *f = &op->list.files[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", f->id != NULL ? f->id : "");
        cJSON_AddStringToObject(o, "name", f->name != NULL ? f->name : "");
        cJSON_AddBoolToObject(o, "can_add_children", f->can_add_children);
        cJSON_AddItemToArray(arr, o);
    }
    if (op->list.next_page_token != NULL) {
        cJSON_AddStringToObject(doc, "next_cursor", op->list.next_page_token);
    } else {
        cJSON_AddNullToObject(doc, "next_cursor");
    }
    http_reply_header(op->req, "Cache-Control", "no-store");
    http_reply_json(op->req, 200, doc);
    op_free(op);
}

static bool valid_page_token(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 2048) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f) {
            return false;
        }
    }
    return true;
}

static void get_folders(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *parent = http_req_query(req, "parent");
    const char *cursor = http_req_query(req, "cursor");
    if (parent == NULL || parent[0] == '\0') {
        parent = "root";
    }
    if (!drive_id_valid(parent)) {
        gw_reply_invalid(req, "parent", "is not a Drive folder id");
        return;
    }
    if (cursor != NULL && cursor[0] != '\0' && !valid_page_token(cursor)) {
        gw_reply_invalid(req, "cursor", "is not a cursor this API returned");
        return;
    }
    drive_op_t *op = op_new(gw, req, user, OP_FOLDERS);
    if (op == NULL) {
        return;
    }
    snprintf(op->folder_id, sizeof(op->folder_id), "%s", parent);
    if (cursor != NULL && cursor[0] != '\0') {
        op->cursor = strdup(cursor);
    }
    start_op(op, folders_done);
}

int gw_routes_drive(gw_t *gw)
{
    if (gw_route(gw, "PUT", "/api/watch", GW_AUTH, put_watch) != 0 ||
        gw_route(gw, "DELETE", "/api/watch", GW_AUTH, delete_watch) != 0 ||
        gw_route(gw, "GET", "/api/drive/folders", GW_AUTH, get_folders) != 0) {
        return -1;
    }
    return 0;
}
