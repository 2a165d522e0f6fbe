/*
 * api-gateway presets marketplace end to end (real binary, PostgreSQL, Redis,
 * the Google fake for sign-in): list/create/get/patch/rating/adopt, their
 * validation errors (ComfyUI-shaped graph errors), visibility (another user's
 * private preset is 404), publishing and its audit row, rating once, exact
 * averages under concurrent ratings, download counting, keyset paging,
 * 401 without a session and CSRF on every state-changing route; graph size:
 * the node cap (while /healthz keeps answering), the work budget; versions:
 * an adopter's jobs (what jobs_worker_claim returns) keep the version adopted
 * until they accept the update; the per-user cap (PRESETS_MAX_PER_USER): the
 * 409 past it, concurrent creates never past it, the SQL function's lock.
 */
#include "gw_session.h"
#include "support.h"

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static proc_t google, gw;
static proc_t capped; /* test_preset_cap*: a second gateway, PRESETS_MAX_PER_USER=3 */
static char GW[160], CAPPED[160];
static gwt_session_t alice, bob, carol;

#define CPU_GRAPH                                                                                  \
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"input.png\"}},"                  \
    "\"2\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"1\",0],"                        \
    "\"filename_prefix\":\"x\"}}}"

/* Needs ComfyUI: a class the CPU executor does not have, otherwise well-formed
 * (refused in a user preset: workflow_node_not_allowed). */
#define COMFY_GRAPH                                                                                \
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"input.png\"}},"                  \
    "\"2\":{\"class_type\":\"ImageUpscaleWithModel\",\"inputs\":{\"image\":[\"1\",0],"             \
    "\"upscale_model\":[\"3\",0]}},"                                                               \
    "\"3\":{\"class_type\":\"UpscaleModelLoader\",\"inputs\":{\"model_name\":\"4x.pth\"}},"        \
    "\"4\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0],"                        \
    "\"filename_prefix\":\"x\"}}}"

static gwt_resp_t call(const char *method, const char *path, const gwt_session_t *s,
                       const char *body)
{
    return gwt_request(GW, method, path, s, s != NULL, body);
}

static void expect(gwt_resp_t r, long status, const char *code)
{
    if (r.status != status ||
        (code != NULL && (gwt_error_code(&r) == NULL || strcmp(gwt_error_code(&r), code) != 0))) {
        fprintf(stderr, "want %ld %s, got %ld: %s\n", status, code ? code : "", r.status,
                r.body ? r.body : "");
    }
    assert_int_equal(r.status, status);
    if (code != NULL) {
        assert_non_null(gwt_error_code(&r));
        assert_string_equal(gwt_error_code(&r), code);
    }
    gwt_resp_free(&r);
}

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

static bool jbool(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    assert_true(cJSON_IsBool(v));
    return cJSON_IsTrue(v);
}

static long long sql_ll(const char *sql, int n, const char *const *p)
{
    char *v = sql_value(sql, n, p);
    long long x = v != NULL ? atoll(v) : -1;
    free(v);
    return x;
}

/* Creates a preset; returns its id (static buffer per call site is the caller's). */
static void create(const gwt_session_t *s, const char *name, const char *category,
                   const char *graph, char id[40])
{
    char body[4096];
    snprintf(body, sizeof(body),
             "{\"name\":\"%s\",\"description\":\"d\",\"category\":\"%s\",\"workflow_json\":%s}",
             name, category, graph);
    gwt_resp_t r = call("POST", "/api/presets", s, body);
    if (r.status != 201) {
        fprintf(stderr, "create %s: %ld %s\n", name, r.status, r.body);
    }
    assert_int_equal(r.status, 201);
    snprintf(id, 40, "%s", gwt_str(r.json, "id"));
    gwt_resp_free(&r);
}

static void path_of(char *out, size_t n, const char *id, const char *suffix)
{
    snprintf(out, n, "/api/presets/%s%s", id, suffix);
}

static int setup(void **state)
{
    (void)state;
    if (fake_start(&google, "google", NULL) != 0 || gwt_start(&gw, google.base_url, NULL) != 0) {
        return -1;
    }
    snprintf(GW, sizeof(GW), "%s", gw.base_url);
    if (gwt_sign_in(GW, "alice@example.com", &alice) != 0 ||
        gwt_sign_in(GW, "bob@example.com", &bob) != 0 ||
        gwt_sign_in(GW, "carol@example.com", &carol) != 0) {
        proc_print_log(&gw);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (capped.pid != 0) {
        proc_stop(&capped);
    }
    proc_stop(&gw);
    proc_stop(&google);
    return 0;
}

static void test_list_system_presets(void **state)
{
    (void)state;
    gwt_resp_t r = call("GET", "/api/presets", &alice, NULL);
    assert_int_equal(r.status, 200);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(r.json, "presets");
    assert_int_equal(cJSON_GetArraySize(list), 3);
    const cJSON *p = NULL;
    cJSON_ArrayForEach(p, list)
    {
        assert_true(jbool(p, "is_system"));
        assert_false(jbool(p, "is_own"));
        assert_null(cJSON_GetObjectItemCaseSensitive(p, "workflow_json"));
        assert_non_null(gwt_str(p, "id"));
        assert_non_null(gwt_str(p, "created_at"));
    }
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r.json, "next_cursor")));
    gwt_resp_free(&r);

    r = call("GET", "/api/presets?category=portrait", &alice, NULL);
    assert_int_equal(r.status, 200);
    list = cJSON_GetObjectItemCaseSensitive(r.json, "presets");
    assert_int_equal(cJSON_GetArraySize(list), 1);
    assert_string_equal(gwt_str(cJSON_GetArrayItem(list, 0), "name"), "portrait_pro");
    gwt_resp_free(&r);

    expect(call("GET", "/api/presets?category=nature", &alice, NULL), 400, "invalid_request");
    expect(call("GET", "/api/presets?scope=mine", &alice, NULL), 400, "invalid_request");
    expect(call("GET", "/api/presets?limit=0", &alice, NULL), 400, "invalid_request");
    expect(call("GET", "/api/presets?limit=101", &alice, NULL), 400, "invalid_request");
    expect(call("GET", "/api/presets?cursor=bm9wZQ", &alice, NULL), 400, "invalid_request");
}

static void test_create_get_validation(void **state)
{
    (void)state;
    char id[40], path[128];
    create(&alice, "alice soft", "portrait", CPU_GRAPH, id);
    path_of(path, sizeof(path), id, "");
    gwt_resp_t r = call("GET", path, &alice, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "name"), "alice soft");
    assert_string_equal(gwt_str(r.json, "category"), "portrait");
    assert_string_equal(gwt_str(r.json, "executor"), "cpu");
    assert_true(jbool(r.json, "is_own"));
    assert_false(jbool(r.json, "is_public"));
    assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(r.json, "workflow_json")));
    gwt_resp_free(&r);
    /* a well-formed graph that needs ComfyUI is refused in a user preset */
    r = call("POST", "/api/presets", &alice,
             "{\"name\":\"alice upscale\",\"workflow_json\":" COMFY_GRAPH "}");
    assert_int_equal(r.status, 400);
    assert_string_equal(gwt_error_code(&r), "workflow_node_not_allowed");
    const cJSON *d0 = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(r.json, "error"), "details");
    const cJSON *pe = cJSON_GetObjectItemCaseSensitive(d0, "error");
    assert_string_equal(gwt_str(pe, "type"), "node_not_allowed");
    assert_non_null(gwt_str(cJSON_GetObjectItemCaseSensitive(pe, "extra_info"), "class_type"));
    gwt_resp_free(&r);
    /* category defaults to other */
    r = call("POST", "/api/presets", &alice,
             "{\"name\":\"alice nocat\",\"workflow_json\":" CPU_GRAPH "}");
    assert_int_equal(r.status, 201);
    assert_string_equal(gwt_str(r.json, "category"), "other");
    gwt_resp_free(&r);

    /* validation: one case per rule */
    struct {
        const char *body;
        const char *code;
        const char *field;
    } bad[] = {
        {"{\"workflow_json\":" CPU_GRAPH "}", "invalid_request", "name"},
        {"{\"name\":\"\",\"workflow_json\":" CPU_GRAPH "}", "invalid_request", "name"},
        {"{\"name\":\"has/slash\",\"workflow_json\":" CPU_GRAPH "}", "invalid_request", "name"},
        {"{\"name\":\" lead\",\"workflow_json\":" CPU_GRAPH "}", "invalid_request", "name"},
        {"{\"name\":\"123456789012345678901234567890123456789012345678901\",\"workflow_json\":" CPU_GRAPH
         "}",
         "invalid_request", "name"},
        {"{\"name\":7,\"workflow_json\":" CPU_GRAPH "}", "invalid_request", "name"},
        {"{\"name\":\"x\",\"category\":\"food\",\"workflow_json\":" CPU_GRAPH "}",
         "invalid_request", "category"},
        {"{\"name\":\"x\"}", "invalid_request", "workflow_json"},
        {"{\"name\":\"x\",\"workflow_json\":[1]}", "invalid_request", "workflow_json"},
        {"{\"name\":\"x\",\"workflow_json\":\"{}\"}", "invalid_request", "workflow_json"},
        {"{\"name\":\"x\",\"workflow_json\":{}}", "invalid_workflow", "workflow_json"},
        {"{\"name\":\"x\",\"workflow_json\":" CPU_GRAPH ",\"is_premium\":true}", "invalid_request",
         "is_premium"},
        {"{\"name\":", "invalid_json", NULL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = call("POST", "/api/presets", &alice, bad[i].body);
        if (r.status != 400 || gwt_error_code(&r) == NULL ||
            strcmp(gwt_error_code(&r), bad[i].code) != 0) {
            fail_msg("case %zu: %ld %s", i, r.status, r.body);
        }
        if (bad[i].field != NULL) {
            const char *msg = gwt_str(cJSON_GetObjectItemCaseSensitive(r.json, "error"), "message");
            assert_non_null(msg);
            if (strncmp(msg, bad[i].field, strlen(bad[i].field)) != 0) {
                fail_msg("case %zu: message %s", i, msg);
            }
        }
        gwt_resp_free(&r);
    }
    /* description over 2000 */
    char *big = malloc(2100 + 200);
    int n = snprintf(big, 200, "{\"name\":\"x\",\"workflow_json\":{},\"description\":\"");
    memset(big + n, 'a', 2001);
    strcpy(big + n + 2001, "\"}");
    expect(call("POST", "/api/presets", &alice, big), 400, "invalid_request");
    free(big);
    /* a workflow over 256 KiB */
    size_t sz = 300 * 1024;
    char *huge = malloc(sz + 400);
    n = snprintf(huge, 400,
                 "{\"name\":\"x\",\"workflow_json\":{\"1\":{\"class_type\":\"LoadImage\","
                 "\"inputs\":{\"image\":\"");
    memset(huge + n, 'a', sz);
    strcpy(huge + n + sz, "\"}}}}");
    r = call("POST", "/api/presets", &alice, huge);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "256 KiB"));
    gwt_resp_free(&r);
    free(huge);

    /* a bad graph: the details are ComfyUI's error object, per node */
    r = call("POST", "/api/presets", &alice,
             "{\"name\":\"x\",\"workflow_json\":{"
             "\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"input.png\"}},"
             "\"2\":{\"class_type\":\"ImageBlur\",\"inputs\":{\"image\":[\"1\",0],"
             "\"blur_radius\":0,\"sigma\":1.0}},"
             "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0]}}}}");
    assert_int_equal(r.status, 400);
    assert_string_equal(gwt_error_code(&r), "invalid_workflow");
    const cJSON *details = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(r.json, "error"), "details");
    assert_true(cJSON_IsObject(details));
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(details, "node_errors"), "2");
    assert_non_null(node);
    assert_string_equal(gwt_str(node, "class_type"), "ImageBlur");
    const cJSON *e0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(node, "errors"), 0);
    assert_string_equal(gwt_str(e0, "type"), "value_smaller_than_min");
    assert_non_null(gwt_str(cJSON_GetObjectItemCaseSensitive(details, "error"), "type"));
    gwt_resp_free(&r);

    /* names: own duplicates and system names are taken */
    expect(call("POST", "/api/presets", &alice,
                "{\"name\":\"alice soft\",\"workflow_json\":" CPU_GRAPH "}"),
           409, "name_taken");
    expect(call("POST", "/api/presets", &alice,
                "{\"name\":\"portrait_pro\",\"workflow_json\":" CPU_GRAPH "}"),
           409, "name_taken");
    /* another user may use the same name privately */
    char bobs[40];
    create(&bob, "alice soft", "portrait", CPU_GRAPH, bobs);
    /* ids */
    expect(call("GET", "/api/presets/not-a-uuid", &alice, NULL), 400, "invalid_request");
    expect(call("GET", "/api/presets/00000000-0000-0000-0000-000000000000", &alice, NULL), 404,
           "not_found");
}

static void test_visibility_publish_and_patch(void **state)
{
    (void)state;
    char id[40], path[128], rating[160], adopt[160];
    create(&alice, "alice private", "landscape", CPU_GRAPH, id);
    path_of(path, sizeof(path), id, "");
    path_of(rating, sizeof(rating), id, "/rating");
    path_of(adopt, sizeof(adopt), id, "/adopt");
    /* bob: a private preset of alice's does not exist for him */
    expect(call("GET", path, &bob, NULL), 404, "not_found");
    expect(call("PATCH", path, &bob, "{\"description\":\"mine now\"}"), 404, "not_found");
    expect(call("POST", rating, &bob, "{\"rating\":5}"), 404, "not_found");
    expect(call("POST", adopt, &bob, NULL), 404, "not_found");
    gwt_resp_t r = call("GET", "/api/presets?scope=public", &bob, NULL);
    assert_null(strstr(r.body, id));
    gwt_resp_free(&r);

    /* alice changes and publishes it: an audit row */
    const char *p[] = {alice.id, id};
    r = call("PATCH", path, &alice,
             "{\"description\":\"new words\",\"category\":\"portrait\",\"is_public\":true}");
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "description"), "new words");
    assert_string_equal(gwt_str(r.json, "category"), "portrait");
    assert_true(jbool(r.json, "is_public"));
    gwt_resp_free(&r);
    assert_int_equal(sql_ll("SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = "
                            "'preset.publish' AND target = 'preset:' || $2",
                            2, p),
                     1);
    /* publishing again changes nothing in the audit */
    r = call("PATCH", path, &alice, "{\"is_public\":true}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    assert_int_equal(sql_ll("SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = "
                            "'preset.publish'",
                            1, p),
                     1);

    /* bob sees it now, but cannot change it */
    r = call("GET", path, &bob, NULL);
    assert_int_equal(r.status, 200);
    assert_false(jbool(r.json, "is_own"));
    gwt_resp_free(&r);
    r = call("GET", "/api/presets?scope=public", &bob, NULL);
    assert_non_null(strstr(r.body, id));
    gwt_resp_free(&r);
    expect(call("PATCH", path, &bob, "{\"description\":\"mine now\"}"), 403, "forbidden");
    /* a system preset is nobody's to change */
    char *sys = sql_value("SELECT id FROM presets WHERE name = 'portrait_pro'", 0, NULL);
    char spath[128];
    path_of(spath, sizeof(spath), sys, "");
    expect(call("PATCH", spath, &alice, "{\"description\":\"x\"}"), 403, "forbidden");
    free(sys);

    /* a published preset keeps its name; public names are unique */
    expect(call("PATCH", path, &alice, "{\"name\":\"renamed\"}"), 409, "conflict");
    char bid[40], bpath[128];
    create(&bob, "alice private", "portrait", CPU_GRAPH, bid);
    path_of(bpath, sizeof(bpath), bid, "");
    expect(call("PATCH", bpath, &bob, "{\"is_public\":true}"), 409, "name_taken");
    expect(call("PATCH", bpath, &bob, "{\"name\":\"product_clean\"}"), 409, "name_taken");

    /* PATCH validation */
    expect(call("PATCH", path, &alice, "{}"), 400, "invalid_request");
    expect(call("PATCH", path, &alice, "{\"is_public\":\"yes\"}"), 400, "invalid_request");
    expect(call("PATCH", path, &alice, "{\"downloads\":5}"), 400, "invalid_request");
    expect(
        call("PATCH", path, &alice, "{\"workflow_json\":{\"1\":{\"class_type\":\"SaveImage\"}}}"),
        400, "invalid_workflow");
    expect(call("PATCH", "/api/presets/nope", &alice, "{\"is_public\":true}"), 400,
           "invalid_request");

    /* deactivating hides it from others, not from alice */
    r = call("PATCH", path, &alice, "{\"is_active\":false}");
    assert_int_equal(r.status, 200);
    assert_false(jbool(r.json, "is_active"));
    gwt_resp_free(&r);
    expect(call("GET", path, &bob, NULL), 404, "not_found");
    r = call("GET", path, &alice, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    /* unpublishing is audited too */
    r = call("PATCH", path, &alice, "{\"is_active\":true,\"is_public\":false}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    assert_int_equal(sql_ll("SELECT count(*) FROM audit_log WHERE user_id = $1 AND action = "
                            "'preset.unpublish'",
                            1, p),
                     1);
    /* now private again: bob's ids matrix is 404 once more */
    expect(call("GET", path, &bob, NULL), 404, "not_found");
    expect(call("POST", rating, &bob, "{\"rating\":3}"), 404, "not_found");
}

static void test_rating(void **state)
{
    (void)state;
    char id[40], path[128], rating[160];
    create(&alice, "alice rated", "product", CPU_GRAPH, id);
    path_of(path, sizeof(path), id, "");
    path_of(rating, sizeof(rating), id, "/rating");
    gwt_resp_t r = call("PATCH", path, &alice, "{\"is_public\":true}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);

    expect(call("POST", rating, &alice, "{\"rating\":5}"), 403, "own_preset");
    const char *bad[] = {"{\"rating\":0}",
                         "{\"rating\":6}",
                         "{\"rating\":4.5}",
                         "{\"rating\":\"4\"}",
                         "{}",
                         "{\"rating\":4,\"x\":1}",
                         "{\"rating\":1e99}",
                         "{\"rating\":-1e99}",
                         "{\"rating\":4294967300}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        expect(call("POST", rating, &bob, bad[i]), 400, "invalid_request");
    }
    r = call("POST", rating, &bob, "{\"rating\":4}");
    assert_int_equal(r.status, 200);
    assert_int_equal((int)jnum(r.json, "rating_count"), 1);
    assert_true(jnum(r.json, "rating_avg") == 4.0);
    assert_int_equal((int)jnum(r.json, "my_rating"), 4);
    gwt_resp_free(&r);
    expect(call("POST", rating, &bob, "{\"rating\":1}"), 409, "already_rated");
    r = call("POST", rating, &carol, "{\"rating\":1}");
    assert_int_equal(r.status, 200);
    assert_int_equal((int)jnum(r.json, "rating_count"), 2);
    assert_true(jnum(r.json, "rating_avg") == 2.5);
    gwt_resp_free(&r);
    /* the stored row agrees */
    const char *p[] = {id};
    assert_int_equal(sql_ll("SELECT (rating_avg * 100)::int FROM presets WHERE id = $1", 1, p),
                     250);
    /* system presets can be rated by anyone */
    char *sys = sql_value("SELECT id FROM presets WHERE name = 'landscape_vivid'", 0, NULL);
    char spath[160];
    path_of(spath, sizeof(spath), sys, "/rating");
    r = call("POST", spath, &alice, "{\"rating\":5}");
    assert_int_equal(r.status, 200);
    assert_true(jbool(r.json, "is_system"));
    gwt_resp_free(&r);
    free(sys);
}

/* ---- concurrent ratings ---- */

#define RATERS 12

typedef struct {
    gwt_session_t s;
    const char *path;
    int rating;
    long status;
} rater_t;

static void *rate_thread(void *arg)
{
    rater_t *r = arg;
    char body[32];
    snprintf(body, sizeof(body), "{\"rating\":%d}", r->rating);
    gwt_resp_t resp = gwt_request(GW, "POST", r->path, &r->s, true, body);
    r->status = resp.status;
    gwt_resp_free(&resp);
    return NULL;
}

static void test_concurrent_ratings_exact(void **state)
{
    (void)state;
    char id[40], path[128], rating[160];
    create(&alice, "alice popular", "landscape", CPU_GRAPH, id);
    path_of(path, sizeof(path), id, "");
    path_of(rating, sizeof(rating), id, "/rating");
    gwt_resp_t r = call("PATCH", path, &alice, "{\"is_public\":true}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);

    static rater_t raters[RATERS];
    int sum = 0;
    for (int i = 0; i < RATERS; i++) {
        char email[64];
        snprintf(email, sizeof(email), "rater%d@example.com", i);
        assert_int_equal(gwt_sign_in(GW, email, &raters[i].s), 0);
        raters[i].path = rating;
        raters[i].rating = 1 + (i * 7) % 5;
        sum += raters[i].rating;
    }
    /* each rater twice at once: exactly one of the two counts */
    pthread_t th[2 * RATERS];
    static rater_t twice[2 * RATERS];
    for (int i = 0; i < 2 * RATERS; i++) {
        twice[i] = raters[i % RATERS];
        assert_int_equal(pthread_create(&th[i], NULL, rate_thread, &twice[i]), 0);
    }
    int ok = 0, conflict = 0;
    for (int i = 0; i < 2 * RATERS; i++) {
        pthread_join(th[i], NULL);
        ok += twice[i].status == 200;
        conflict += twice[i].status == 409;
    }
    assert_int_equal(ok, RATERS);
    assert_int_equal(conflict, RATERS);
    const char *p[] = {id};
    assert_int_equal(sql_ll("SELECT rating_count FROM presets WHERE id = $1", 1, p), RATERS);
    assert_int_equal(sql_ll("SELECT count(*) FROM preset_ratings WHERE preset_id = $1", 1, p),
                     RATERS);
    long long want = (long long)((100.0 * sum / RATERS) + 0.5); /* round half up, 2 decimals */
    assert_int_equal(sql_ll("SELECT (rating_avg * 100)::int FROM presets WHERE id = $1", 1, p),
                     want);
    r = call("GET", path, &bob, NULL);
    assert_true(jnum(r.json, "rating_avg") * 100 > want - 0.5 &&
                jnum(r.json, "rating_avg") * 100 < want + 0.5);
    gwt_resp_free(&r);
}

static void test_adopt_counts_downloads(void **state)
{
    (void)state;
    char id[40], path[128], adopt[160];
    create(&alice, "alice moody", "portrait", CPU_GRAPH, id);
    path_of(path, sizeof(path), id, "");
    path_of(adopt, sizeof(adopt), id, "/adopt");
    /* own preset: adopted, nothing counted */
    gwt_resp_t r = call("POST", adopt, &alice, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(gwt_str(r.json, "default_preset"), "alice moody");
    assert_false(jbool(r.json, "download_counted"));
    gwt_resp_free(&r);
    /* private: others cannot adopt */
    expect(call("POST", adopt, &bob, NULL), 404, "not_found");
    r = call("PATCH", path, &alice, "{\"is_public\":true}");
    gwt_resp_free(&r);

    r = call("POST", adopt, &bob, NULL);
    assert_int_equal(r.status, 200);
    assert_true(jbool(r.json, "download_counted"));
    gwt_resp_free(&r);
    r = call("GET", "/api/me", &bob, NULL);
    assert_string_equal(gwt_str(r.json, "default_preset"), "alice moody");
    gwt_resp_free(&r);
    /* again: once per user */
    r = call("POST", adopt, &bob, "{}");
    assert_int_equal(r.status, 200);
    assert_false(jbool(r.json, "download_counted"));
    gwt_resp_free(&r);
    const char *p[] = {id};
    assert_int_equal(sql_ll("SELECT downloads FROM presets WHERE id = $1", 1, p), 1);
    /* carol has her own preset of that name: the worker would take hers → 409 */
    char cid[40];
    create(&carol, "alice moody", "portrait", CPU_GRAPH, cid);
    expect(call("POST", adopt, &carol, NULL), 409, "name_conflict");
    assert_int_equal(sql_ll("SELECT downloads FROM presets WHERE id = $1", 1, p), 1);
    /* a system preset: adopted, nothing counted */
    char *sys = sql_value("SELECT id FROM presets WHERE name = 'product_clean'", 0, NULL);
    char spath[160];
    path_of(spath, sizeof(spath), sys, "/adopt");
    r = call("POST", spath, &bob, NULL);
    assert_int_equal(r.status, 200);
    assert_false(jbool(r.json, "download_counted"));
    gwt_resp_free(&r);
    free(sys);
    expect(call("POST", adopt, &bob, "{\"x\":1}"), 400, "invalid_request");

    /* presets_count_adoption (for PATCH /api/me): counts once, resolves like the worker */
    gwt_session_t dave;
    assert_int_equal(gwt_sign_in(GW, "dave@example.com", &dave), 0);
    const char *dp[] = {dave.id};
    char *counted = sql_value("SELECT presets_count_adoption($1::uuid, 'alice moody')"
                              " FROM (SELECT set_config('app.user_id', $1, true)) s",
                              1, dp);
    assert_string_equal(counted, "t");
    free(counted);
    counted = sql_value("SELECT presets_count_adoption($1::uuid, 'alice moody')"
                        " FROM (SELECT set_config('app.user_id', $1, true)) s",
                        1, dp);
    assert_string_equal(counted, "f");
    free(counted);
    assert_int_equal(sql_ll("SELECT downloads FROM presets WHERE id = $1", 1, p), 2);
    /* a different RLS user than the one named is refused */
    const char *wrong[] = {alice.id, dave.id};
    char *v = sql_value("SELECT presets_count_adoption($2::uuid, 'alice moody')"
                        " FROM (SELECT set_config('app.user_id', $1, true)) s",
                        2, wrong);
    assert_null(v);

    /* PATCH /api/me to someone else's public preset counts a download, once */
    gwt_session_t fay;
    assert_int_equal(gwt_sign_in(GW, "fay@example.com", &fay), 0);
    r = call("PATCH", "/api/me", &fay, "{\"default_preset\":\"alice moody\"}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    assert_int_equal(sql_ll("SELECT downloads FROM presets WHERE id = $1", 1, p), 3);
    r = call("PATCH", "/api/me", &fay, "{\"default_preset\":\"alice moody\"}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    assert_int_equal(sql_ll("SELECT downloads FROM presets WHERE id = $1", 1, p), 3);
}

/* ---- versions: adopters keep the version they adopted ---- */

/* A CPU graph whose SaveImage prefix tells the versions apart. */
static void graph_v(char *out, size_t n, const char *tag)
{
    snprintf(out, n,
             "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"input.png\"}},"
             "\"2\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"1\",0],"
             "\"filename_prefix\":\"%s\"}}}",
             tag);
}

/* What the worker gets: a job for user with that preset name, claimed by
 * jobs_worker_claim as ca_job_worker. Returns the SaveImage prefix of the
 * graph it read ("" for no graph: the job would fail preset_not_found). */
static char claimed_tag[64];
static const char *worker_graph_tag(const gwt_session_t *user, const char *preset)
{
    static int n;
    char file[64];
    snprintf(file, sizeof(file), "versions-file-%d", ++n);
    const char *cp[] = {user->id, file, preset};
    char *job = sql_value("SELECT job_id::text FROM jobs_create_for_drive_file($1::uuid, $2,"
                          " 'a.jpg', 'folder', 1000, 'image/jpeg', $3)",
                          3, cp);
    assert_non_null(job);
    PGconn *c = PQconnectdb(db_url_as("ca_job_worker"));
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    const char *p[] = {job};
    PGresult *r = PQexecParams(c,
                               "SELECT workflow FROM jobs_worker_claim($1::uuid, 'versions-test',"
                               " 60, 120)",
                               1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "claim: %s", PQerrorMessage(c));
    }
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 1);
    claimed_tag[0] = '\0';
    if (!PQgetisnull(r, 0, 0)) {
        cJSON *g = cJSON_Parse(PQgetvalue(r, 0, 0));
        assert_non_null(g);
        const char *tag = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(g, "2"), "inputs"),
            "filename_prefix"));
        assert_non_null(tag);
        snprintf(claimed_tag, sizeof(claimed_tag), "%s", tag);
        cJSON_Delete(g);
    }
    PQclear(r);
    PQfinish(c);
    free(job);
    return claimed_tag;
}

/* The preset as user sees it in GET /api/presets?scope=public (or NULL). */
static cJSON *listed(const gwt_session_t *user, const char *id)
{
    gwt_resp_t r = call("GET", "/api/presets?scope=public&limit=100", user, NULL);
    assert_int_equal(r.status, 200);
    cJSON *found = NULL;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(r.json, "presets"))
    {
        if (strcmp(gwt_str(it, "id"), id) == 0) {
            found = cJSON_Duplicate(it, true);
        }
    }
    gwt_resp_free(&r);
    return found;
}

static void patch_graph(const char *id, const char *tag, int want_version)
{
    char g[512], body[640], path[128];
    graph_v(g, sizeof(g), tag);
    snprintf(body, sizeof(body), "{\"workflow_json\":%s}", g);
    path_of(path, sizeof(path), id, "");
    gwt_resp_t r = call("PATCH", path, &alice, body);
    assert_int_equal(r.status, 200);
    assert_int_equal((int)jnum(r.json, "version"), want_version);
    gwt_resp_free(&r);
}

static long long versions_kept(const char *id)
{
    const char *p[] = {id};
    return sql_ll("SELECT count(*) FROM preset_versions WHERE preset_id = $1::uuid", 1, p);
}

static void test_adopters_keep_their_version(void **state)
{
    (void)state;
    char g[512], id[40], path[128], adopt[160], accept[160];
    graph_v(g, sizeof(g), "v1");
    create(&alice, "alice versions", "portrait", g, id);
    path_of(path, sizeof(path), id, "");
    path_of(adopt, sizeof(adopt), id, "/adopt");
    path_of(accept, sizeof(accept), id, "/accept-update");
    gwt_resp_t r = call("PATCH", path, &alice, "{\"is_public\":true}");
    assert_int_equal(r.status, 200);
    assert_int_equal((int)jnum(r.json, "version"), 1); /* publishing is not a new graph */
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r.json, "adopted_version")));
    assert_false(jbool(r.json, "update_available"));
    gwt_resp_free(&r);

    gwt_session_t erin;
    assert_int_equal(gwt_sign_in(GW, "erin@example.com", &erin), 0);
    r = call("POST", adopt, &erin, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    assert_string_equal(worker_graph_tag(&erin, "alice versions"), "v1");

    /* the author rewrites the graph: a new version; the adopter's jobs keep v1 */
    patch_graph(id, "v2", 2);
    assert_string_equal(worker_graph_tag(&erin, "alice versions"), "v1");
    /* the author's own jobs run the latest */
    assert_string_equal(worker_graph_tag(&alice, "alice versions"), "v2");
    /* someone who never adopted it does not run it at all */
    assert_string_equal(worker_graph_tag(&carol, "alice versions"), "");

    /* the adopter sees the update, in the list and on the preset */
    cJSON *e = listed(&erin, id);
    assert_non_null(e);
    assert_int_equal((int)jnum(e, "version"), 2);
    assert_int_equal((int)jnum(e, "adopted_version"), 1);
    assert_true(jbool(e, "update_available"));
    cJSON_Delete(e);
    r = call("GET", path, &erin, NULL);
    assert_int_equal(r.status, 200);
    assert_true(jbool(r.json, "update_available"));
    gwt_resp_free(&r);
    e = listed(&carol, id);
    assert_non_null(e);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(e, "adopted_version")));
    assert_false(jbool(e, "update_available"));
    cJSON_Delete(e);

    /* adopting again keeps the pin */
    r = call("POST", adopt, &erin, NULL);
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    assert_string_equal(worker_graph_tag(&erin, "alice versions"), "v1");

    /* only an adopter accepts; bad ids, bodies and other users' private presets */
    expect(call("POST", accept, &carol, NULL), 409, "not_adopted");
    expect(call("POST", accept, &alice, NULL), 409, "not_adopted");
    expect(call("POST", "/api/presets/nope/accept-update", &erin, NULL), 400, "invalid_request");
    expect(call("POST", accept, &erin, "{\"version\":2}"), 400, "invalid_request");
    char pid[40], ppath[160];
    create(&carol, "carol private", "portrait", CPU_GRAPH, pid);
    path_of(ppath, sizeof(ppath), pid, "/accept-update");
    expect(call("POST", ppath, &erin, NULL), 404, "not_found");
    assert_string_equal(worker_graph_tag(&erin, "alice versions"), "v1");

    /* accepting: the adopter's jobs run the new graph */
    r = call("POST", accept, &erin, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal((int)jnum(r.json, "version"), 2);
    assert_int_equal((int)jnum(r.json, "adopted_version"), 2);
    assert_false(jbool(r.json, "update_available"));
    assert_string_equal(gwt_str(r.json, "id"), id);
    gwt_resp_free(&r);
    assert_string_equal(worker_graph_tag(&erin, "alice versions"), "v2");
    r = call("POST", accept, &erin, NULL); /* again: nothing to do */
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);

    /* kept: the current version and the adopted ones (v1 went when nobody held it) */
    assert_int_equal(versions_kept(id), 1);
    patch_graph(id, "v3", 3);
    patch_graph(id, "v4", 4);
    assert_int_equal(versions_kept(id), 2); /* v2 (erin), v4 */
    patch_graph(id, "v4", 4);               /* the same graph: no new version */
    assert_string_equal(worker_graph_tag(&erin, "alice versions"), "v2");
    assert_string_equal(worker_graph_tag(&alice, "alice versions"), "v4");

    /* PATCH /api/me adopts the current version too */
    gwt_session_t gus;
    assert_int_equal(gwt_sign_in(GW, "gus@example.com", &gus), 0);
    r = call("PATCH", "/api/me", &gus, "{\"default_preset\":\"alice versions\"}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    patch_graph(id, "v5", 5);
    assert_string_equal(worker_graph_tag(&gus, "alice versions"), "v4");

    /* the author frees the name and publishes another graph under it: the
     * adopters' jobs do not run a preset they never adopted */
    r = call("PATCH", path, &alice, "{\"is_public\":false}");
    gwt_resp_free(&r);
    r = call("PATCH", path, &alice, "{\"name\":\"alice versions old\",\"is_public\":true}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    char tid[40], tpath[128];
    graph_v(g, sizeof(g), "trojan");
    create(&alice, "alice versions", "portrait", g, tid);
    path_of(tpath, sizeof(tpath), tid, "");
    r = call("PATCH", tpath, &alice, "{\"is_public\":true}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    assert_string_equal(worker_graph_tag(&erin, "alice versions"), "");
    assert_string_equal(worker_graph_tag(&gus, "alice versions"), "");
}

static void test_paging_order(void **state)
{
    (void)state;
    gwt_session_t erin;
    assert_int_equal(gwt_sign_in(GW, "erin@example.com", &erin), 0);
    char ids[6][40];
    for (int i = 0; i < 6; i++) {
        char name[32];
        snprintf(name, sizeof(name), "erin %d", i);
        create(&erin, name, "other", CPU_GRAPH, ids[i]);
        /* known ratings and downloads (superuser): ties on rating, broken by downloads */
        char rating[16], downloads[16];
        snprintf(rating, sizeof(rating), "%d.50", i % 3);
        snprintf(downloads, sizeof(downloads), "%d", i);
        const char *p[] = {ids[i], rating, downloads};
        assert_int_equal(sql_exec("UPDATE presets SET rating_avg = $2::numeric, downloads = $3::int"
                                  " WHERE id = $1::uuid",
                                  3, p),
                         0);
    }
    /* scope=own with limit 4: pages of 4 and 2, ordered rating desc, downloads desc */
    int want[6] = {5, 2, 4, 1, 3, 0}; /* ratings 2.5,2.5,1.5,1.5,0.5,0.5 */
    char cursor[256] = "";
    int seen = 0, pages = 0;
    do {
        char path[512];
        snprintf(path, sizeof(path), "/api/presets?scope=own&limit=4%s%s",
                 cursor[0] != '\0' ? "&cursor=" : "", cursor);
        gwt_resp_t r = call("GET", path, &erin, NULL);
        assert_int_equal(r.status, 200);
        const cJSON *p = NULL;
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r.json, "presets"))
        {
            assert_true(seen < 6);
            assert_string_equal(gwt_str(p, "id"), ids[want[seen]]);
            assert_true(jbool(p, "is_own"));
            seen++;
        }
        const char *next = gwt_str(r.json, "next_cursor");
        snprintf(cursor, sizeof(cursor), "%s", next != NULL ? next : "");
        gwt_resp_free(&r);
        pages++;
    } while (cursor[0] != '\0' && pages < 5);
    assert_int_equal(seen, 6);
    assert_int_equal(pages, 2);
    /* scope=system: only the three system presets */
    gwt_resp_t r = call("GET", "/api/presets?scope=system", &erin, NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(r.json, "presets")), 3);
    gwt_resp_free(&r);
    /* the default list is ordered by rating, then downloads */
    r = call("GET", "/api/presets?limit=100", &erin, NULL);
    double prev_r = 1e9, prev_d = 1e9;
    const cJSON *p = NULL;
    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r.json, "presets"))
    {
        double rt = jnum(p, "rating_avg"), dl = jnum(p, "downloads");
        assert_true(rt < prev_r || (rt == prev_r && dl <= prev_d));
        prev_r = rt;
        prev_d = dl;
    }
    gwt_resp_free(&r);
}

static void test_no_session_and_csrf(void **state)
{
    (void)state;
    const char *z = "/api/presets/00000000-0000-0000-0000-000000000000";
    struct {
        const char *method, *path, *body;
    } routes[] = {
        {"GET", "/api/presets", NULL},
        {"POST", "/api/presets", "{\"name\":\"x\",\"workflow_json\":" CPU_GRAPH "}"},
        {"GET", z, NULL},
        {"PATCH", z, "{\"is_public\":true}"},
        {"POST", "/api/presets/00000000-0000-0000-0000-000000000000/rating", "{\"rating\":3}"},
        {"POST", "/api/presets/00000000-0000-0000-0000-000000000000/adopt", NULL},
        {"POST", "/api/presets/00000000-0000-0000-0000-000000000000/accept-update", NULL},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        expect(gwt_request(GW, routes[i].method, routes[i].path, NULL, false, routes[i].body), 401,
               "unauthorized");
        if (strcmp(routes[i].method, "GET") != 0) {
            /* signed in, but no token and no same-origin header */
            expect(gwt_request(GW, routes[i].method, routes[i].path, &alice, false, routes[i].body),
                   403, "csrf_failed");
        }
    }
    const char *p[] = {alice.id};
    assert_int_equal(
        sql_ll("SELECT count(*) FROM presets WHERE created_by_user_id = $1 AND name = 'x'", 1, p),
        0);
}

/* ---- graph size: a node cap, a work budget, and the loop stays free ---- */

static void add_node(cJSON *g, int id, const char *class_type, cJSON *inputs)
{
    char key[16];
    snprintf(key, sizeof(key), "%d", id);
    cJSON *node = cJSON_AddObjectToObject(g, key);
    cJSON_AddStringToObject(node, "class_type", class_type);
    cJSON_AddItemToObject(node, "inputs", inputs);
}

static cJSON *link_to(int id)
{
    char key[16];
    snprintf(key, sizeof(key), "%d", id);
    cJSON *l = cJSON_CreateArray();
    cJSON_AddItemToArray(l, cJSON_CreateString(key));
    cJSON_AddItemToArray(l, cJSON_CreateNumber(0));
    return l;
}

/* LoadImage, then ImageBlur nodes each feeding the next and a SaveImage, `nodes`
 * in all; with `failing`, every blur has an invalid radius: the shape that made
 * the old validator's work grow as n⁴. Returns a POST body (caller frees). */
static char *graph_body(const char *name, int nodes, bool failing)
{
    cJSON *g = cJSON_CreateObject();
    cJSON *in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "image", "input.png");
    add_node(g, 1, "LoadImage", in);
    int id = 2, prev = 1;
    while (id < nodes) {
        in = cJSON_CreateObject();
        cJSON_AddItemToObject(in, "image", link_to(prev));
        cJSON_AddNumberToObject(in, "blur_radius", failing ? 0 : 2);
        cJSON_AddNumberToObject(in, "sigma", 1);
        add_node(g, id, "ImageBlur", in);
        prev = id++;
        if (failing && id < nodes) {
            in = cJSON_CreateObject();
            cJSON_AddItemToObject(in, "images", link_to(prev));
            add_node(g, id++, "SaveImage", in);
        }
    }
    in = cJSON_CreateObject();
    cJSON_AddItemToObject(in, "images", link_to(prev));
    add_node(g, id, "SaveImage", in);
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", name);
    cJSON_AddItemToObject(body, "workflow_json", g);
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    assert_non_null(text);
    return text;
}

typedef struct {
    const char *body;
    long status;
    char code[64];
    volatile int done;
} big_post_t;

static void *big_post_thread(void *arg)
{
    big_post_t *b = arg;
    gwt_resp_t r = gwt_request(GW, "POST", "/api/presets", &alice, true, b->body);
    b->status = r.status;
    snprintf(b->code, sizeof(b->code), "%s", gwt_error_code(&r) ? gwt_error_code(&r) : "");
    gwt_resp_free(&r);
    __atomic_store_n(&b->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void test_graph_node_cap_and_loop_free(void **state)
{
    (void)state;
    char url[200];
    snprintf(url, sizeof(url), "%s/healthz", GW);
    char *body = graph_body("alice huge", 1000, true);
    big_post_t post = {.body = body};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, big_post_thread, &post), 0);
    /* While the POST is in flight (and once after), /healthz answers. */
    int probes = 0;
    do {
        char *resp = NULL;
        long st = http_call("GET", url, NULL, &resp);
        free(resp);
        assert_int_equal(st, 200);
        probes++;
    } while (!__atomic_load_n(&post.done, __ATOMIC_SEQ_CST));
    pthread_join(th, NULL);
    assert_true(probes >= 1);
    assert_int_equal(post.status, 400);
    assert_string_equal(post.code, "workflow_too_large");
    free(body);

    /* The error names the limit; a valid chain over it is refused the same way. */
    body = graph_body("alice long", 1000, false);
    gwt_resp_t r = call("POST", "/api/presets", &alice, body);
    free(body);
    assert_int_equal(r.status, 400);
    assert_string_equal(gwt_error_code(&r), "workflow_too_large");
    const cJSON *e = cJSON_GetObjectItem(r.json, "error");
    assert_non_null(strstr(gwt_str(e, "message"), "at most 500 nodes"));
    const cJSON *pe = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "details"), "error");
    assert_string_equal(gwt_str(pe, "type"), "graph_too_large");
    gwt_resp_free(&r);

    /* At the cap: accepted. */
    body = graph_body("alice longest", 500, false);
    r = call("POST", "/api/presets", &alice, body);
    free(body);
    assert_int_equal(r.status, 201);
    char path[128];
    path_of(path, sizeof(path), gwt_str(r.json, "id"), "");
    assert_string_equal(gwt_str(r.json, "executor"), "cpu");
    gwt_resp_free(&r);

    /* PATCH goes through the same check; the preset keeps its graph. */
    body = graph_body("alice longest", 501, false);
    expect(call("PATCH", path, &alice, body), 400, "workflow_too_large");
    free(body);
    r = call("GET", path, &alice, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "workflow_json")), 500);
    gwt_resp_free(&r);

    /* A failing graph under the cap: every error reported, dependent_outputs bounded. */
    body = graph_body("alice failing", 499, true);
    r = call("POST", "/api/presets", &alice, body);
    free(body);
    assert_int_equal(r.status, 400);
    assert_string_equal(gwt_error_code(&r), "invalid_workflow");
    const cJSON *ne = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(r.json, "error"), "details"), "node_errors");
    assert_int_equal(cJSON_GetArraySize(ne), 249);
    assert_int_equal(
        cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(ne, "2"), "dependent_outputs")),
        32);
    gwt_resp_free(&r);
}

static void test_graph_work_budget(void **state)
{
    (void)state;
    /* EmptyImage 16384², ImageScaleBy 8: a 17-gigapixel image. */
    expect(
        call("POST", "/api/presets", &alice,
             "{\"name\":\"alice bomb\",\"workflow_json\":{"
             "\"1\":{\"class_type\":\"EmptyImage\",\"inputs\":{\"width\":16384,\"height\":16384}},"
             "\"2\":{\"class_type\":\"ImageScaleBy\",\"inputs\":{\"image\":[\"1\",0],"
             "\"upscale_method\":\"bilinear\",\"scale_by\":8}},"
             "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0]}}}}"),
        400, "workflow_too_expensive");
    /* A photo chained through ImageScaleBy 8 twice. */
    expect(call("POST", "/api/presets", &alice,
                "{\"name\":\"alice bomb\",\"workflow_json\":{"
                "\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"input.png\"}},"
                "\"2\":{\"class_type\":\"ImageScaleBy\",\"inputs\":{\"image\":[\"1\",0],"
                "\"upscale_method\":\"bilinear\",\"scale_by\":8}},"
                "\"3\":{\"class_type\":\"ImageScaleBy\",\"inputs\":{\"image\":[\"2\",0],"
                "\"upscale_method\":\"bilinear\",\"scale_by\":8}},"
                "\"4\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"3\",0]}}}}"),
           400, "workflow_too_expensive");
    /* An ordinary resize: fine. */
    char id[40];
    create(&alice, "alice half", "other",
           "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"input.png\"}},"
           "\"2\":{\"class_type\":\"ImageScaleBy\",\"inputs\":{\"image\":[\"1\",0],"
           "\"upscale_method\":\"bilinear\",\"scale_by\":0.5}},"
           "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0]}}}",
           id);
}

/* A LoadImage of `image` feeding a SaveImage of `prefix` (JSON string bodies). */
static void file_graph(char *out, size_t n, const char *load_class, const char *image,
                       const char *prefix)
{
    snprintf(out, n,
             "{\"1\":{\"class_type\":\"%s\",\"inputs\":{\"image\":\"%s\"}},"
             "\"2\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"1\",0],"
             "\"filename_prefix\":\"%s\"}}}",
             load_class, image, prefix);
}

/* User presets may use only the node types the product runs (the CPU
 * registry) and no string that addresses ComfyUI's folders: another
 * tenant's "<prefix>_00042_.png [output]" is not readable through a preset. */
static void test_user_preset_nodes_and_files(void **state)
{
    (void)state;
    char graph[1024], body[1400];
    struct {
        const char *load_class;
        const char *image;
        const char *prefix;
        const char *code;
    } bad[] = {
        {"LoadImageMask", "ca_00042_.png [output]", "x", "workflow_node_not_allowed"},
        {"LoadImageOutput", "ca_00042_.png [output]", "x", "workflow_node_not_allowed"},
        {"LoadImage", "ca_00042_.png [output]", "x", "workflow_input_not_allowed"},
        {"LoadImage", "ComfyUI_00001_.png[output]", "x", "workflow_input_not_allowed"},
        {"LoadImage", "x.png [TEMP] ", "x", "workflow_input_not_allowed"},
        {"LoadImage", "in.png [input]", "x", "workflow_input_not_allowed"},
        {"LoadImage", "other/in.png", "x", "workflow_input_not_allowed"},
        {"LoadImage", "/etc/passwd", "x", "workflow_input_not_allowed"},
        {"LoadImage", "..in.png", "x", "workflow_input_not_allowed"},
        {"LoadImage", "a\\\\b.png", "x", "workflow_input_not_allowed"},
        {"LoadImage", "input.png", "../escape", "workflow_input_not_allowed"},
        {"LoadImage", "input.png", "tenant/x", "workflow_input_not_allowed"},
        {"LoadImage", "input.png", "%date:yyyy%", "workflow_input_not_allowed"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        file_graph(graph, sizeof(graph), bad[i].load_class, bad[i].image, bad[i].prefix);
        snprintf(body, sizeof(body), "{\"name\":\"alice files\",\"workflow_json\":%s}", graph);
        gwt_resp_t r = call("POST", "/api/presets", &alice, body);
        if (r.status != 400 || gwt_error_code(&r) == NULL ||
            strcmp(gwt_error_code(&r), bad[i].code) != 0) {
            fail_msg("case %zu: %ld %s", i, r.status, r.body);
        }
        const cJSON *err = cJSON_GetObjectItemCaseSensitive(r.json, "error");
        assert_non_null(strstr(gwt_str(err, "message"), "workflow_json: "));
        if (strcmp(bad[i].code, "workflow_input_not_allowed") == 0) {
            /* ComfyUI-shaped, naming the node and the input */
            const cJSON *ne = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(err, "details"),
                                                 "node_errors"),
                strcmp(bad[i].prefix, "x") != 0 ? "2" : "1");
            assert_non_null(ne);
            const cJSON *e0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ne, "errors"), 0);
            assert_string_equal(gwt_str(e0, "type"), "input_not_allowed");
        }
        gwt_resp_free(&r);
    }
    /* any string input, not only file names: a watermark text of "[output]" */
    expect(call("POST", "/api/presets", &alice,
                "{\"name\":\"alice wm\",\"workflow_json\":{"
                "\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"input.png\"}},"
                "\"2\":{\"class_type\":\"CA.Watermark\",\"inputs\":{\"image\":[\"1\",0],"
                "\"text\":\"ca_00001_.png [output]\"}},"
                "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0]}}}}"),
           400, "workflow_input_not_allowed");
    /* PATCH follows the same rules */
    char id[40], path[128];
    create(&alice, "alice plain", "other", CPU_GRAPH, id);
    path_of(path, sizeof(path), id, "");
    file_graph(graph, sizeof(graph), "LoadImage", "ca_00042_.png [output]", "x");
    snprintf(body, sizeof(body), "{\"workflow_json\":%s}", graph);
    expect(call("PATCH", path, &alice, body), 400, "workflow_input_not_allowed");
    snprintf(body, sizeof(body), "{\"workflow_json\":%s}", COMFY_GRAPH);
    expect(call("PATCH", path, &alice, body), 400, "workflow_node_not_allowed");
    /* plain names are fine; a watermark may contain a slash */
    file_graph(graph, sizeof(graph), "LoadImage", "My photo-1.jpg", "out put_1");
    char ok[40];
    create(&alice, "alice names", "other", graph, ok);
    create(&alice, "alice wm ok", "other",
           "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"input.png\"}},"
           "\"2\":{\"class_type\":\"CA.Watermark\",\"inputs\":{\"image\":[\"1\",0],"
           "\"text\":\"example.com/me [c]\"}},"
           "\"3\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"2\",0]}}}",
           ok);
}

/* ---- the per-user cap (PRESETS_MAX_PER_USER) ---- */

#define CAP 3

static void start_capped(void)
{
    if (capped.pid != 0) {
        return;
    }
    const char *extra[] = {"PRESETS_MAX_PER_USER=3", NULL};
    assert_int_equal(gwt_start(&capped, google.base_url, extra), 0);
    snprintf(CAPPED, sizeof(CAPPED), "%s", capped.base_url);
}

static gwt_resp_t capped_create(const gwt_session_t *s, const char *name)
{
    char body[1024];
    snprintf(body, sizeof(body), "{\"name\":\"%s\",\"workflow_json\":%s}", name, CPU_GRAPH);
    return gwt_request(CAPPED, "POST", "/api/presets", s, true, body);
}

static long long owned(const gwt_session_t *s)
{
    const char *p[] = {s->id};
    return sql_ll("SELECT count(*) FROM presets WHERE created_by_user_id = $1::uuid", 1, p);
}

/* With PRESETS_MAX_PER_USER=3 the 4th create is 409 preset_limit_reached
 * (the message names the limit) and nothing is written; a deactivated preset
 * still counts; another user is not affected; the default gateway (100) is. */
static void test_preset_cap(void **state)
{
    (void)state;
    start_capped();
    gwt_session_t frank, grace;
    assert_int_equal(gwt_sign_in(CAPPED, "frank@example.com", &frank), 0);
    assert_int_equal(gwt_sign_in(CAPPED, "grace@example.com", &grace), 0);
    char ids[CAP][40];
    for (int i = 0; i < CAP; i++) {
        char name[32];
        snprintf(name, sizeof(name), "frank %d", i);
        gwt_resp_t r = capped_create(&frank, name);
        assert_int_equal(r.status, 201);
        snprintf(ids[i], sizeof(ids[i]), "%s", gwt_str(r.json, "id"));
        gwt_resp_free(&r);
    }
    gwt_resp_t r = capped_create(&frank, "frank 3");
    assert_int_equal(r.status, 409);
    assert_string_equal(gwt_error_code(&r), "preset_limit_reached");
    const char *msg = gwt_str(cJSON_GetObjectItemCaseSensitive(r.json, "error"), "message");
    assert_non_null(msg);
    assert_non_null(strstr(msg, "limit of 3 presets"));
    gwt_resp_free(&r);
    assert_int_equal(owned(&frank), CAP);
    /* a taken name at the cap: still the cap */
    expect(gwt_request(CAPPED, "POST", "/api/presets", &frank, true,
                       "{\"name\":\"portrait_pro\",\"workflow_json\":" CPU_GRAPH "}"),
           409, "preset_limit_reached");

    /* deactivating does not free a place (else the cap would be no cap) */
    char path[128];
    path_of(path, sizeof(path), ids[0], "");
    r = gwt_request(CAPPED, "PATCH", path, &frank, true, "{\"is_active\":false}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    expect(capped_create(&frank, "frank 4"), 409, "preset_limit_reached");
    /* at the cap a preset is changed instead: rename and new graph are fine */
    path_of(path, sizeof(path), ids[1], "");
    r = gwt_request(CAPPED, "PATCH", path, &frank, true, "{\"name\":\"frank renamed\"}");
    assert_int_equal(r.status, 200);
    gwt_resp_free(&r);
    assert_int_equal(owned(&frank), CAP);

    /* another user has their own allowance */
    r = capped_create(&grace, "grace 0");
    assert_int_equal(r.status, 201);
    gwt_resp_free(&r);
    assert_int_equal(owned(&grace), 1);

    /* the suite's gateway runs with the default (100): frank creates there */
    r = gwt_request(GW, "POST", "/api/presets", &frank, true,
                    "{\"name\":\"frank default\",\"workflow_json\":" CPU_GRAPH "}");
    assert_int_equal(r.status, 201);
    gwt_resp_free(&r);
    assert_int_equal(owned(&frank), CAP + 1);
}

#define RACERS 8

typedef struct {
    const gwt_session_t *s;
    char name[32];
    pthread_barrier_t *go;
    long status;
    char code[64];
} racer_t;

static void *race_thread(void *arg)
{
    racer_t *t = arg;
    pthread_barrier_wait(t->go);
    gwt_resp_t r = capped_create(t->s, t->name);
    t->status = r.status;
    snprintf(t->code, sizeof(t->code), "%s", gwt_error_code(&r) ? gwt_error_code(&r) : "");
    gwt_resp_free(&r);
    return NULL;
}

/* RACERS creates of one user at once: exactly CAP get 201, the others 409. */
static void test_preset_cap_concurrent_requests(void **state)
{
    (void)state;
    start_capped();
    gwt_session_t heidi;
    assert_int_equal(gwt_sign_in(CAPPED, "heidi@example.com", &heidi), 0);
    pthread_barrier_t go;
    assert_int_equal(pthread_barrier_init(&go, NULL, RACERS), 0);
    racer_t racers[RACERS];
    pthread_t th[RACERS];
    for (int i = 0; i < RACERS; i++) {
        racers[i] = (racer_t){.s = &heidi, .go = &go};
        snprintf(racers[i].name, sizeof(racers[i].name), "heidi %d", i);
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, &racers[i]), 0);
    }
    int created = 0, refused = 0;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(th[i], NULL);
        created += racers[i].status == 201;
        refused += racers[i].status == 409 && strcmp(racers[i].code, "preset_limit_reached") == 0;
    }
    pthread_barrier_destroy(&go);
    assert_int_equal(created, CAP);
    assert_int_equal(refused, RACERS - CAP);
    assert_int_equal(owned(&heidi), CAP);
}

static PGconn *gateway_conn_as(const char *user_id)
{
    PGconn *c = PQconnectdb(db_url_as("ca_api_gateway"));
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    const char *p[] = {user_id};
    PGresult *r =
        PQexecParams(c, "SELECT set_config('app.user_id', $1, false)", 1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    return c;
}

#define CREATE_SQL                                                                                 \
    "SELECT outcome FROM presets_create($1::uuid, $2, NULL, 'other', '{\"1\":{}}'::jsonb,"         \
    " $3::int)"

static bool waits_on_advisory_lock(void *arg)
{
    char pid[16];
    snprintf(pid, sizeof(pid), "%d", *(const int *)arg);
    const char *p[] = {pid};
    return sql_nonzero("SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int"
                       " AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
                       1, p);
}

/* presets_create serialises one user's creates: a second create waits for
 * the first's transaction and then counts its row (without the lock both
 * would count 0 and both insert). Also: the cap must be at least 1, and the
 * user must be the transaction's app.user_id. */
static void test_preset_cap_sql_serialises(void **state)
{
    (void)state;
    gwt_session_t ivan;
    assert_int_equal(gwt_sign_in(GW, "ivan@example.com", &ivan), 0);
    PGconn *a = gateway_conn_as(ivan.id);
    PGconn *b = gateway_conn_as(ivan.id);

    PGresult *r = PQexec(a, "BEGIN");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    const char *pa[] = {ivan.id, "ivan a", "1"};
    r = PQexecParams(a, CREATE_SQL, 3, NULL, pa, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "ok");
    PQclear(r);

    /* b's create (cap 1) waits for a's transaction */
    const char *pb[] = {ivan.id, "ivan b", "1"};
    assert_int_equal(PQsendQueryParams(b, CREATE_SQL, 3, NULL, pb, NULL, NULL, 0), 1);
    int bpid = PQbackendPID(b);
    if (!wait_until(waits_on_advisory_lock, &bpid, 10000)) {
        fail_msg("the second create did not wait for the first one's transaction");
    }
    r = PQexec(a, "COMMIT");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    r = PQgetResult(b);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "b: %s", PQerrorMessage(b));
    }
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "limit_reached");
    PQclear(r);
    assert_null(PQgetResult(b));
    assert_int_equal(owned(&ivan), 1);

    /* a cap below 1 is an error, not "no cap" */
    const char *zero[] = {ivan.id, "ivan c", "0"};
    r = PQexecParams(b, CREATE_SQL, 3, NULL, zero, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "22023");
    PQclear(r);
    /* another user's id than the transaction's: refused */
    const char *other[] = {alice.id, "ivan d", "100"};
    r = PQexecParams(b, CREATE_SQL, 3, NULL, other, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    assert_string_equal(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42501");
    PQclear(r);
    assert_int_equal(owned(&ivan), 1);
    PQfinish(a);
    PQfinish(b);
}

/* The capped gateway exits 0 on SIGTERM too. */
static void test_capped_gateway_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&capped), 0);
}

/* Last: SIGTERM, and the gateway exits 0 (a sanitizer's report would not). */
static void test_gateway_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&gw), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_system_presets),
        cmocka_unit_test(test_create_get_validation),
        cmocka_unit_test(test_visibility_publish_and_patch),
        cmocka_unit_test(test_rating),
        cmocka_unit_test(test_concurrent_ratings_exact),
        cmocka_unit_test(test_adopt_counts_downloads),
        cmocka_unit_test(test_adopters_keep_their_version),
        cmocka_unit_test(test_paging_order),
        cmocka_unit_test(test_no_session_and_csrf),
        cmocka_unit_test(test_graph_node_cap_and_loop_free),
        cmocka_unit_test(test_graph_work_budget),
        cmocka_unit_test(test_user_preset_nodes_and_files),
        cmocka_unit_test(test_preset_cap),
        cmocka_unit_test(test_preset_cap_concurrent_requests),
        cmocka_unit_test(test_preset_cap_sql_serialises),
        cmocka_unit_test(test_capped_gateway_exits_cleanly),
        cmocka_unit_test(test_gateway_exits_cleanly), /* last: stops the gateway */
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
