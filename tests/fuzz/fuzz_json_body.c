/*
 * fuzz_json_body — JSON request bodies as the api-gateway's routes read them:
 * http_req_json (object only, nothing but whitespace after it), then the
 * gateway's gw_json_body (allowed keys), gw_json_string / gw_json_bool with
 * each route's limits, gw_json_no_body, and for presets the workflow check
 * (graph_validate with the CPU registry, graph_error_summary).
 *
 * The handlers themselves go on to PostgreSQL, so the target calls the same
 * helpers in the same order with the same limits (routes_me.c patch_me,
 * routes_billing.c checkout and portal, routes_drive.c put_watch,
 * routes_presets.c create/update/rate; read_fields and read_workflow there are
 * static). The request is a real http_req_t of a real (not listening)
 * http_server_t; a reply goes nowhere (no evhttp request), as when a client
 * has gone.
 *
 * Input: the first byte picks the route, the rest is the body.
 */
#include "cpu_nodes.h"
#include "gateway.h"
#include "graph.h"
#include "http_server.h"
#include "http_server_internal.h"
#include "log.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *base;
static http_server_t *srv;

static void patch_me(http_req_t *req)
{
    cJSON *body = http_req_json(req);
    if (body == NULL) {
        return;
    }
    static const char *const allowed[] = {"default_preset", "email_notifications", NULL};
    if (!gw_json_only_keys(req, body, allowed)) {
        return;
    }
    const char *preset = NULL;
    bool present = false, notif = false;
    if (!gw_json_string(req, body, "default_preset", 1, 50, &preset) ||
        !gw_json_bool(req, body, "email_notifications", &present, &notif)) {
        return;
    }
}

static void checkout(http_req_t *req)
{
    static const char *const allowed[] = {"tier", NULL};
    cJSON *body = gw_json_body(req, allowed);
    const char *tier = NULL;
    if (body != NULL) {
        (void)gw_json_string(req, body, "tier", 1, 20, &tier);
    }
}

static void put_watch(http_req_t *req)
{
    static const char *const allowed[] = {"folder_id", NULL};
    cJSON *body = gw_json_body(req, allowed);
    const char *folder = NULL;
    if (body != NULL && gw_json_string(req, body, "folder_id", 1, 255, &folder) && folder != NULL) {
        (void)drive_id_valid(folder);
    }
}

static void preset_write(http_req_t *req)
{
    static const char *const allowed[] = {"name",      "description", "category", "workflow_json",
                                          "is_public", "is_active",   NULL};
    cJSON *body = gw_json_body(req, allowed);
    if (body == NULL) {
        return;
    }
    const char *name = NULL, *description = NULL, *category = NULL;
    bool present = false, value = false;
    if (!gw_json_string(req, body, "name", 1, 200, &name) ||
        !gw_json_string(req, body, "description", 0, 2000, &description) ||
        !gw_json_string(req, body, "category", 1, 20, &category) ||
        !gw_json_bool(req, body, "is_public", &present, &value) ||
        !gw_json_bool(req, body, "is_active", &present, &value)) {
        return;
    }
    const cJSON *wf = cJSON_GetObjectItemCaseSensitive(body, "workflow_json");
    if (!cJSON_IsObject(wf)) {
        return;
    }
    char *compact = cJSON_PrintUnformatted(wf);
    cJSON *gerr = NULL;
    if (graph_validate(wf, cpu_nodes_registry(), &gerr) == GRAPH_INVALID) {
        free(graph_error_summary(gerr));
    }
    cJSON_Delete(gerr);
    free(compact);
}

static void no_body(http_req_t *req)
{
    (void)gw_json_no_body(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (srv == NULL) {
        log_init("fuzz", CA_LOG_ERROR);
        base = event_base_new();
        srv = http_server_new(base, 1024 * 1024);
        if (srv == NULL) {
            abort();
        }
    }
    if (size == 0) {
        return 0;
    }
    http_req_t *req = calloc(1, sizeof(*req));
    req->srv = srv;
    req->method = "POST";
    req->route = "/fuzz";
    memcpy(req->id, "fuzz", 5);
    memcpy(req->peer, "-", 2);
    req->body_len = size - 1;
    req->body = malloc(size);
    memcpy(req->body, data + 1, size - 1);
    req->body[size - 1] = '\0';
    srv->in_handler = req; /* a reply leaves the request to us, as in a handler */
    switch (data[0] % 5) {
    case 0:
        patch_me(req);
        break;
    case 1:
        checkout(req);
        break;
    case 2:
        put_watch(req);
        break;
    case 3:
        preset_write(req);
        break;
    default:
        no_body(req);
        break;
    }
    srv->in_handler = NULL;
    http_req_free(req);
    return 0;
}
