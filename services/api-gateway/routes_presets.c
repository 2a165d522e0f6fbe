/*
 * routes_presets — the presets marketplace.
 *
 *   GET   /api/presets?category=&scope=&limit=&cursor=
 *         system, own and public active presets, best rated first (then most
 *         downloaded); no workflow_json in the list
 *   POST  /api/presets            {name, description?, category?, workflow_json}
 *                                 409 preset_limit_reached when the user owns
 *                                 PRESETS_MAX_PER_USER presets (inactive ones
 *                                 count; there is no DELETE: change one)
 *   GET   /api/presets/{id}       one visible preset, with workflow_json
 *   PATCH /api/presets/{id}       own only: name, description, category,
 *                                 workflow_json, is_public, is_active
 *   POST  /api/presets/{id}/rating {"rating": 1..5}, once per user, not own
 *   POST  /api/presets/{id}/adopt  make it the default preset (counts a
 *                                  download of someone else's public preset
 *                                  and pins the version adopted)
 *   POST  /api/presets/{id}/accept-update  move the adoption of someone
 *                                  else's preset to its current version
 *
 * Versions (sql/api-gateway/082_preset_versions.sql): every change of a
 * preset's workflow_json makes a new version; an adopter's jobs run the
 * version they adopted until they accept the update. Each preset in JSON
 * carries version, adopted_version (null unless the user adopted it) and
 * update_available.
 *
 * Workflows are checked with the worker's validator (common/graph.h against
 * common/cpu_nodes.h) on the offload pool (never on the loop): an invalid
 * graph is 400 invalid_workflow with ComfyUI's error object in error.details
 * (workflow_too_large over GRAPH_MAX_NODES nodes, workflow_too_expensive over
 * the work budget). A user's graph may use only the CPU registry's classes
 * (workflow_node_not_allowed) and no string that addresses ComfyUI's folders
 * (workflow_input_not_allowed): graph_validate_user. System presets (seeded by
 * operators) may need ComfyUI and show "executor": "comfyui".
 * The SQL side is sql/api-gateway/020_presets_marketplace.sql (presets_create:
 * 085_presets_per_user_cap.sql).
 * The list cursor is base64url("<rating_avg>|<downloads>|<id>") of the last row.
 */
#include "gateway.h"
#include "paging.h"

#include "cpu_nodes.h"
#include "graph.h"
#include "log.h"
#include "uuid.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRESET_NAME_MAX 50 /* users.default_preset and jobs.preset_name are VARCHAR(50) */
#define PRESET_DESCRIPTION_MAX 2000
#define PRESET_WORKFLOW_MAX (256 * 1024)

/* $1 is the signed-in user. */
#define PRESET_JSON                                                                                \
    "json_build_object('id', p.id, 'name', p.name, 'description', p.description,"                  \
    " 'category', p.category, 'thumbnail_url', p.thumbnail_url,"                                   \
    " 'is_system', p.created_by_user_id IS NULL,"                                                  \
    " 'is_own', COALESCE(p.created_by_user_id = $1::uuid, FALSE),"                                 \
    " 'is_public', COALESCE(p.is_public, FALSE), 'is_active', COALESCE(p.is_active, TRUE),"        \
    " 'is_premium', COALESCE(p.is_premium, FALSE), 'price_cents', COALESCE(p.price_cents, 0),"     \
    " 'downloads', COALESCE(p.downloads, 0), 'rating_avg', COALESCE(p.rating_avg, 0),"             \
    " 'rating_count', COALESCE(p.rating_count, 0), 'my_rating', r.rating,"                         \
    " 'version', p.version, 'adopted_version', a.version,"                                         \
    " 'update_available', COALESCE(a.version < p.version, FALSE),"                                 \
    " 'created_at', " GW_SQL_TS("p.created_at") ", 'updated_at', " GW_SQL_TS(                      \
        "p.updated_at") ")::text"

/* What a user may see: own presets (any state), active system and public ones. */
#define PRESET_VISIBLE                                                                             \
    "(p.created_by_user_id = $1::uuid OR (COALESCE(p.is_active, TRUE)"                             \
    " AND (p.created_by_user_id IS NULL OR COALESCE(p.is_public, FALSE))))"

#define PRESET_FROM                                                                                \
    " FROM presets p LEFT JOIN preset_ratings r ON r.preset_id = p.id AND r.user_id = $1::uuid"    \
    " LEFT JOIN preset_adoptions a ON a.preset_id = p.id AND a.user_id = $1::uuid"

static const char *const CATEGORIES[] = {"portrait", "product", "landscape", "other", NULL};
static const char *const SCOPES[] = {"all", "own", "system", "public", NULL};

static bool in_list(const char *s, const char *const *list)
{
    for (size_t i = 0; list[i] != NULL; i++) {
        if (strcmp(s, list[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* A preset name: 1..50 of [A-Za-z0-9 _.-], starting with a letter or digit and
 * not ending with a space (it becomes part of output file names). */
static bool valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PRESET_NAME_MAX || !isalnum((unsigned char)s[0]) || s[n - 1] == ' ') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != ' ' && c != '_' && c != '-' && c != '.') {
            return false;
        }
    }
    return true;
}

/* ---- cursor ---- */

static bool all_digits(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

static bool cursor_decode(const char *cursor, char *rating, size_t rlen, char *downloads,
                          size_t dlen, char *id, size_t idlen)
{
    char text[PAGING_CURSOR_TEXT_MAX];
    char *key[3];
    if (!paging_cursor_split(cursor, text, key, 3)) {
        return false;
    }
    /* rating: d or d.dd (numeric(3,2)) */
    const char *r = key[0];
    bool rating_ok =
        isdigit((unsigned char)r[0]) && (r[1] == '\0' || (r[1] == '.' && all_digits(r + 2, 1, 2)));
    if (!rating_ok || !all_digits(key[1], 1, 10) || !uuid_is_valid(key[2]) || strlen(r) >= rlen ||
        strlen(key[1]) >= dlen || strlen(key[2]) >= idlen) {
        return false;
    }
    snprintf(rating, rlen, "%s", r);
    snprintf(downloads, dlen, "%s", key[1]);
    snprintf(id, idlen, "%s", key[2]);
    return true;
}

/* ---- list ---- */

static void list_presets(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *category = http_req_query(req, "category");
    const char *scope = http_req_query(req, "scope");
    const char *limit_s = http_req_query(req, "limit");
    const char *cursor = http_req_query(req, "cursor");
    if (category != NULL && category[0] == '\0') {
        category = NULL;
    }
    if (category != NULL && !in_list(category, CATEGORIES)) {
        gw_reply_invalid(req, "category", "must be one of portrait, product, landscape, other");
        return;
    }
    if (scope != NULL && (scope[0] == '\0' || strcmp(scope, "all") == 0)) {
        scope = NULL;
    }
    if (scope != NULL && !in_list(scope, SCOPES)) {
        gw_reply_invalid(req, "scope", "must be one of all, own, system, public");
        return;
    }
    long limit = 20;
    if (limit_s != NULL && !paging_parse_limit(limit_s, &limit)) {
        gw_reply_invalid(req, "limit", "must be an integer from 1 to 100");
        return;
    }
    char rating[16] = "", downloads[16] = "", id[GW_UUID_LEN + 1] = "";
    bool have_cursor = cursor != NULL && cursor[0] != '\0';
    if (have_cursor && !cursor_decode(cursor, rating, sizeof(rating), downloads, sizeof(downloads),
                                      id, sizeof(id))) {
        gw_reply_invalid(req, "cursor", "is not a cursor this API returned");
        return;
    }
    paging_t *page = paging_new("presets", limit, 3);
    if (page == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return;
    }
    char fetch[24];
    snprintf(fetch, sizeof(fetch), "%ld", limit + 1);
    const char *p[] = {user->id,
                       category,
                       scope,
                       have_cursor ? rating : NULL,
                       have_cursor ? downloads : NULL,
                       have_cursor ? id : NULL,
                       fetch};
    gw_query_ex(
        gw, req, user->id,
        "SELECT " PRESET_JSON ", COALESCE(p.rating_avg, 0)::text,"
        " COALESCE(p.downloads, 0)::text, p.id" PRESET_FROM " WHERE " PRESET_VISIBLE
        "   AND ($2::text IS NULL OR p.category = $2)"
        "   AND ($3::text IS NULL"
        "        OR ($3 = 'own' AND p.created_by_user_id = $1::uuid)"
        "        OR ($3 = 'system' AND p.created_by_user_id IS NULL)"
        "        OR ($3 = 'public' AND p.created_by_user_id IS NOT NULL"
        "            AND COALESCE(p.is_public, FALSE)))"
        "   AND ($4::numeric IS NULL OR (COALESCE(p.rating_avg, 0), COALESCE(p.downloads, 0),"
        "        p.id) < ($4::numeric, $5::int, $6::uuid))"
        " ORDER BY COALESCE(p.rating_avg, 0) DESC, COALESCE(p.downloads, 0) DESC, p.id DESC"
        " LIMIT $7::int",
        7, p, paging_on_page, page, free);
}

/* ---- one preset ---- */

typedef struct {
    int status; /* 200, or 201 after a create */
} one_t;

static void on_preset(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)gw;
    one_t *o = arg;
    int status = o != NULL ? o->status : 200;
    free(o);
    if (PQntuples(res) != 1) {
        gw_reply_not_found(req);
        return;
    }
    cJSON *doc = cJSON_Parse(PQgetvalue(res, 0, 0));
    cJSON *wf = cJSON_Parse(PQgetvalue(res, 0, 1));
    if (doc == NULL || wf == NULL) {
        cJSON_Delete(doc);
        cJSON_Delete(wf);
        http_reply_error(req, 500, "internal", "could not build the response");
        return;
    }
    cJSON *gerr = NULL;
    graph_status_t st = graph_validate(wf, cpu_nodes_registry(), &gerr);
    cJSON_Delete(gerr);
    cJSON_AddStringToObject(doc, "executor",
                            st == GRAPH_OK              ? "cpu"
                            : st == GRAPH_UNKNOWN_CLASS ? "comfyui"
                                                        : "invalid");
    cJSON_AddItemToObject(doc, "workflow_json", wf);
    http_reply_header(req, "Cache-Control", "no-store");
    http_reply_json(req, status, doc);
}

static void send_preset(gw_t *gw, http_req_t *req, const char *user_id, const char *preset_id,
                        int status)
{
    one_t *o = NULL;
    if (status != 200) {
        o = malloc(sizeof(*o));
        if (o == NULL) {
            http_reply_error(req, 503, "unavailable", "out of memory");
            return;
        }
        o->status = status;
    }
    const char *p[] = {user_id, preset_id};
    gw_query_ex(gw, req, user_id,
                "SELECT " PRESET_JSON ", p.workflow_json::text" PRESET_FROM
                " WHERE p.id = $2::uuid AND " PRESET_VISIBLE,
                2, p, on_preset, o, free);
}

static bool preset_id_param(http_req_t *req, const char **id)
{
    *id = http_req_param(req, "id");
    if (!uuid_is_valid(*id)) {
        gw_reply_invalid(req, "id", "must be a UUID");
        return false;
    }
    return true;
}

static void get_preset(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *id = NULL;
    if (preset_id_param(req, &id)) {
        send_preset(gw, req, user->id, id, 200);
    }
}

/* ---- input ---- */

typedef struct {
    const char *name;
    const char *description;
    const char *category;
    const cJSON *workflow; /* in the request's body; NULL when absent */
} preset_input_t;

/* The fields POST and PATCH share (the workflow only checked to be an object:
 * the graph is checked off the loop). Replies 400 and returns false on bad input. */
static bool read_fields(http_req_t *req, const cJSON *body, bool create, preset_input_t *in)
{
    memset(in, 0, sizeof(*in));
    if (!gw_json_string(req, body, "name", 1, 200, &in->name) ||
        !gw_json_string(req, body, "description", 0, PRESET_DESCRIPTION_MAX, &in->description) ||
        !gw_json_string(req, body, "category", 1, 20, &in->category)) {
        return false;
    }
    if (create && in->name == NULL) {
        gw_reply_invalid(req, "name", "is required");
        return false;
    }
    if (in->name != NULL && !valid_name(in->name)) {
        gw_reply_invalid(req, "name",
                         "must be 1 to %d characters of letters, digits, space, _ - . (starting "
                         "with a letter or digit)",
                         PRESET_NAME_MAX);
        return false;
    }
    if (in->category != NULL && !in_list(in->category, CATEGORIES)) {
        gw_reply_invalid(req, "category", "must be one of portrait, product, landscape, other");
        return false;
    }
    in->workflow = cJSON_GetObjectItemCaseSensitive(body, "workflow_json");
    if (create && in->workflow == NULL) {
        gw_reply_invalid(req, "workflow_json", "is required");
        return false;
    }
    if (in->workflow != NULL && !cJSON_IsObject(in->workflow)) {
        gw_reply_invalid(req, "workflow_json",
                         "must be an object (a ComfyUI workflow in API format)");
        return false;
    }
    return true;
}

/*
 * A POST or PATCH in flight: its fields point into the request's body, which
 * lives until the reply. The workflow (up to GRAPH_MAX_NODES nodes, a few
 * milliseconds at worst) is printed and validated on the offload pool, never
 * on the loop; the database call follows on the loop.
 */
typedef struct {
    gw_t *gw;
    http_req_t *req;
    bool create;
    char user_id[GW_UUID_LEN + 1];
    char preset_id[GW_UUID_LEN + 1]; /* PATCH */
    const char *is_public;           /* PATCH: "true", "false" or NULL */
    const char *is_active;
    preset_input_t in;
    /* set by the pool thread */
    char *compact; /* the workflow as compact JSON */
    bool too_big;
    graph_status_t graph_status;
    cJSON *graph_error;
} write_t;

static void write_free(write_t *w)
{
    free(w->compact);
    cJSON_Delete(w->graph_error);
    free(w);
}

static void validate_work(void *arg)
{
    write_t *w = arg;
    w->compact = cJSON_PrintUnformatted(w->in.workflow);
    if (w->compact == NULL) {
        return;
    }
    if (strlen(w->compact) > PRESET_WORKFLOW_MAX) {
        w->too_big = true;
        return;
    }
    /* User presets: only the CPU registry's classes, no file-addressing strings. */
    w->graph_status = graph_validate_user(w->in.workflow, cpu_nodes_registry(), &w->graph_error);
}

/* 400 for a graph the validator refused: invalid_workflow, workflow_too_large /
 * workflow_too_expensive for a graph over the limits, workflow_node_not_allowed /
 * workflow_input_not_allowed for the user-preset rules; ComfyUI's error body in details. */
static void reply_bad_workflow(http_req_t *req, cJSON *gerr)
{
    const char *type = cJSON_GetStringValue(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(gerr, "error"), "type"));
    const char *code = "invalid_workflow";
    if (type != NULL && strcmp(type, "graph_too_large") == 0) {
        code = "workflow_too_large";
    } else if (type != NULL && strcmp(type, "graph_too_expensive") == 0) {
        code = "workflow_too_expensive";
    } else if (type != NULL && strcmp(type, "node_not_allowed") == 0) {
        code = "workflow_node_not_allowed";
    } else if (type != NULL && strcmp(type, "input_not_allowed") == 0) {
        code = "workflow_input_not_allowed";
    }
    char *summary = graph_error_summary(gerr);
    cJSON *doc = cJSON_CreateObject();
    cJSON *e = cJSON_AddObjectToObject(doc, "error");
    cJSON_AddStringToObject(e, "code", code);
    char msg[600];
    snprintf(msg, sizeof(msg), "workflow_json: %s",
             summary != NULL ? summary : "the workflow is not valid");
    cJSON_AddStringToObject(e, "message", msg);
    if (gerr != NULL) {
        cJSON_AddItemToObject(e, "details", gerr);
    } else {
        cJSON_AddNullToObject(e, "details");
    }
    free(summary);
    http_reply_json(req, 400, doc);
}

void gw_reply_bad_workflow(http_req_t *req, cJSON *gerr)
{
    reply_bad_workflow(req, gerr);
}

static void write_query(write_t *w);

static void validate_done(void *arg)
{
    write_t *w = arg;
    if (w->compact == NULL) {
        http_reply_error(w->req, 503, "unavailable", "out of memory");
    } else if (w->too_big) {
        gw_reply_invalid(w->req, "workflow_json", "must be at most 256 KiB");
    } else if (w->graph_status == GRAPH_INVALID) {
        reply_bad_workflow(w->req, w->graph_error);
        w->graph_error = NULL;
    } else {
        write_query(w);
    }
    write_free(w);
}

/* Validates the workflow off the loop (when there is one), then writes. Takes w. */
static void write_start(write_t *w)
{
    if (w->in.workflow == NULL) {
        write_query(w);
        write_free(w);
        return;
    }
    if (gw_offload(w->gw, validate_work, validate_done, w) != 0) {
        http_reply_header(w->req, "Retry-After", "1");
        http_reply_error(w->req, 503, "unavailable", "too busy; try again");
        write_free(w);
    }
}

static write_t *write_new(gw_t *gw, http_req_t *req, const gw_user_t *user, bool create)
{
    write_t *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return NULL;
    }
    w->gw = gw;
    w->req = req;
    w->create = create;
    snprintf(w->user_id, sizeof(w->user_id), "%s", user->id);
    return w;
}

/* ---- create ---- */

typedef struct {
    char user_id[GW_UUID_LEN + 1];
} create_t;

static void on_created(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    create_t *c = arg;
    const char *outcome = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "";
    if (strcmp(outcome, "ok") == 0) {
        char id[GW_UUID_LEN + 1];
        snprintf(id, sizeof(id), "%s", PQgetvalue(res, 0, 1));
        send_preset(gw, req, c->user_id, id, 201);
    } else if (strcmp(outcome, "name_taken") == 0) {
        http_reply_error(req, 409, "name_taken",
                         "name: you already have a preset of that name, or it is a system "
                         "preset's name");
    } else if (strcmp(outcome, "limit_reached") == 0) {
        http_reply_error(req, 409, "preset_limit_reached",
                         "you have reached the limit of %ld presets per user (inactive ones "
                         "count); change one of your presets instead",
                         gw->presets_max);
    } else {
        http_reply_error(req, 500, "internal", "unexpected outcome");
    }
    free(c);
}

static void create_query(write_t *w)
{
    create_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        http_reply_error(w->req, 503, "unavailable", "out of memory");
        return;
    }
    snprintf(c->user_id, sizeof(c->user_id), "%s", w->user_id);
    const char *p[] = {w->user_id,        w->in.name,
                       w->in.description, w->in.category != NULL ? w->in.category : "other",
                       w->compact,        w->gw->presets_max_arg};
    gw_query_ex(w->gw, w->req, w->user_id,
                "SELECT outcome, preset_id FROM presets_create($1::uuid, $2, $3, $4, $5::jsonb,"
                " $6::int)",
                6, p, on_created, c, free);
}

static void create_preset(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    static const char *const allowed[] = {"name", "description", "category", "workflow_json", NULL};
    cJSON *body = gw_json_body(req, allowed);
    if (body == NULL) {
        return;
    }
    preset_input_t in;
    if (!read_fields(req, body, true, &in)) {
        return;
    }
    write_t *w = write_new(gw, req, user, true);
    if (w != NULL) {
        w->in = in;
        write_start(w);
    }
}

/* ---- update ---- */

typedef struct {
    char user_id[GW_UUID_LEN + 1];
    char preset_id[GW_UUID_LEN + 1];
} target_t;

static target_t *target_new(http_req_t *req, const char *user_id, const char *preset_id)
{
    target_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        http_reply_error(req, 503, "unavailable", "out of memory");
        return NULL;
    }
    snprintf(t->user_id, sizeof(t->user_id), "%s", user_id);
    snprintf(t->preset_id, sizeof(t->preset_id), "%s", preset_id);
    return t;
}

/* The error answer to an outcome of presets_update or presets_rate. */
typedef struct {
    const char *outcome;
    int status;
    const char *code;
    const char *message;
} outcome_reply_t;

/* "ok": the preset as it is now (200); "not_found": 404; an outcome in
 * replies: its error; anything else: 500. Frees t. */
static void reply_outcome(gw_t *gw, http_req_t *req, const PGresult *res, target_t *t,
                          const outcome_reply_t *replies, size_t nreplies)
{
    const char *outcome = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "";
    if (strcmp(outcome, "ok") == 0) {
        send_preset(gw, req, t->user_id, t->preset_id, 200);
        free(t);
        return;
    }
    free(t);
    if (strcmp(outcome, "not_found") == 0) {
        gw_reply_not_found(req);
        return;
    }
    for (size_t i = 0; i < nreplies; i++) {
        if (strcmp(outcome, replies[i].outcome) == 0) {
            http_reply_error(req, replies[i].status, replies[i].code, "%s", replies[i].message);
            return;
        }
    }
    http_reply_error(req, 500, "internal", "unexpected outcome");
}

static const outcome_reply_t update_replies[] = {
    {"forbidden", 403, "forbidden", "you can change only your own presets"},
    {"name_taken", 409, "name_taken",
     "name: taken by another of your presets, a published preset or a system preset"},
    {"published_name", 409, "conflict",
     "name: a published preset keeps its name (others may use it); unpublish it first"},
};

static void on_updated(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    reply_outcome(gw, req, res, arg, update_replies,
                  sizeof(update_replies) / sizeof(update_replies[0]));
}

static void update_query(write_t *w)
{
    target_t *t = target_new(w->req, w->user_id, w->preset_id);
    if (t == NULL) {
        return;
    }
    const char *p[] = {w->user_id, w->preset_id, w->in.name,   w->in.description,   w->in.category,
                       w->compact, w->is_public, w->is_active, gw_client_ip(w->req)};
    gw_query_ex(w->gw, w->req, w->user_id,
                "SELECT presets_update($1::uuid, $2::uuid, $3, $4, $5, $6::jsonb, $7::boolean,"
                " $8::boolean, $9)",
                9, p, on_updated, t, free);
}

static void write_query(write_t *w)
{
    if (w->create) {
        create_query(w);
    } else {
        update_query(w);
    }
}

static void patch_preset(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *id = NULL;
    if (!preset_id_param(req, &id)) {
        return;
    }
    static const char *const allowed[] = {"name",      "description", "category", "workflow_json",
                                          "is_public", "is_active",   NULL};
    cJSON *body = gw_json_body(req, allowed);
    if (body == NULL) {
        return;
    }
    if (cJSON_GetArraySize(body) == 0) {
        gw_reply_invalid(req, "body", "nothing to change: send at least one field");
        return;
    }
    bool pub_present = false, pub = false, act_present = false, act = false;
    if (!gw_json_bool(req, body, "is_public", &pub_present, &pub) ||
        !gw_json_bool(req, body, "is_active", &act_present, &act)) {
        return;
    }
    preset_input_t in;
    if (!read_fields(req, body, false, &in)) {
        return;
    }
    write_t *w = write_new(gw, req, user, false);
    if (w == NULL) {
        return;
    }
    w->in = in;
    snprintf(w->preset_id, sizeof(w->preset_id), "%s", id);
    w->is_public = pub_present ? (pub ? "true" : "false") : NULL;
    w->is_active = act_present ? (act ? "true" : "false") : NULL;
    write_start(w);
}

/* ---- rating ---- */

static const outcome_reply_t rate_replies[] = {
    {"own_preset", 403, "own_preset", "you cannot rate your own preset"},
    {"already_rated", 409, "already_rated", "you have already rated this preset"},
};

static void on_rated(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    reply_outcome(gw, req, res, arg, rate_replies, sizeof(rate_replies) / sizeof(rate_replies[0]));
}

static void rate_preset(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *id = NULL;
    if (!preset_id_param(req, &id)) {
        return;
    }
    static const char *const allowed[] = {"rating", NULL};
    cJSON *body = gw_json_body(req, allowed);
    if (body == NULL) {
        return;
    }
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(body, "rating");
    if (r == NULL) {
        gw_reply_invalid(req, "rating", "is required");
        return;
    }
    /* range first: converting a double beyond int is undefined */
    if (!cJSON_IsNumber(r) || !(r->valuedouble >= 1 && r->valuedouble <= 5) ||
        r->valuedouble != (double)(int)r->valuedouble) {
        gw_reply_invalid(req, "rating", "must be an integer from 1 to 5");
        return;
    }
    target_t *t = target_new(req, user->id, id);
    if (t == NULL) {
        return;
    }
    char rating[4];
    snprintf(rating, sizeof(rating), "%d", r->valueint);
    const char *p[] = {user->id, id, rating};
    gw_query_ex(gw, req, user->id, "SELECT presets_rate($1::uuid, $2::uuid, $3::int)", 3, p,
                on_rated, t, free);
}

/* ---- adopt ---- */

static void on_adopted(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    (void)gw;
    (void)arg;
    const char *outcome = PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "";
    if (strcmp(outcome, "ok") == 0) {
        cJSON *doc = cJSON_CreateObject();
        cJSON_AddStringToObject(doc, "default_preset", PQgetvalue(res, 0, 1));
        cJSON_AddBoolToObject(doc, "download_counted", strcmp(PQgetvalue(res, 0, 2), "t") == 0);
        http_reply_header(req, "Cache-Control", "no-store");
        http_reply_json(req, 200, doc);
    } else if (strcmp(outcome, "not_found") == 0) {
        gw_reply_not_found(req);
    } else if (strcmp(outcome, "name_conflict") == 0) {
        http_reply_error(req, 409, "name_conflict",
                         "you have a preset of your own named \"%s\"; rename it first",
                         PQgetvalue(res, 0, 1));
    } else {
        http_reply_error(req, 500, "internal", "unexpected outcome");
    }
}

static void adopt_preset(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *id = NULL;
    if (!preset_id_param(req, &id)) {
        return;
    }
    if (!gw_json_no_body(req)) {
        return;
    }
    const char *p[] = {user->id, id};
    gw_query(gw, req, user->id,
             "SELECT outcome, preset_name, counted FROM presets_adopt($1::uuid, $2::uuid)", 2, p,
             on_adopted, NULL);
}

/* ---- accept an update ---- */

static const outcome_reply_t accept_replies[] = {
    {"not_adopted", 409, "not_adopted",
     "you have not adopted this preset: only adopters of someone else's public preset accept "
     "its updates (your own and system presets always run their current version)"},
};

static void on_accepted(gw_t *gw, http_req_t *req, const PGresult *res, void *arg)
{
    reply_outcome(gw, req, res, arg, accept_replies,
                  sizeof(accept_replies) / sizeof(accept_replies[0]));
}

static void accept_update(gw_t *gw, http_req_t *req, const gw_user_t *user)
{
    const char *id = NULL;
    if (!preset_id_param(req, &id)) {
        return;
    }
    if (!gw_json_no_body(req)) {
        return;
    }
    target_t *t = target_new(req, user->id, id);
    if (t == NULL) {
        return;
    }
    const char *p[] = {user->id, id};
    gw_query_ex(gw, req, user->id,
                "SELECT outcome, version FROM presets_accept_update($1::uuid, $2::uuid)", 2, p,
                on_accepted, t, free);
}

int gw_routes_presets(gw_t *gw)
{
    if (gw_route(gw, "GET", "/api/presets", GW_AUTH, list_presets) != 0 ||
        gw_route(gw, "POST", "/api/presets", GW_AUTH, create_preset) != 0 ||
        gw_route(gw, "GET", "/api/presets/{id}", GW_AUTH, get_preset) != 0 ||
        gw_route(gw, "PATCH", "/api/presets/{id}", GW_AUTH, patch_preset) != 0 ||
        gw_route(gw, "POST", "/api/presets/{id}/rating", GW_AUTH, rate_preset) != 0 ||
        gw_route(gw, "POST", "/api/presets/{id}/adopt", GW_AUTH, adopt_preset) != 0 ||
        gw_route(gw, "POST", "/api/presets/{id}/accept-update", GW_AUTH, accept_update) != 0) {
        return -1;
    }
    return 0;
}
