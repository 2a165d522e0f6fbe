/*
 * Unit tests for common/graph: a table of workflows against a small registry,
 * each with the expected status, prompt-level error type and first node error.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cpu_nodes.h"
#include "graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const graph_type_t out_image[] = {GRAPH_T_IMAGE};
static const graph_type_t out_image_mask[] = {GRAPH_T_IMAGE, GRAPH_T_MASK};
static const char *const blend_modes[] = {"normal", "multiply", "screen", NULL};

static const graph_input_t load_in[] = {
    {"image", GRAPH_T_COMBO, true, false, false, 0, 0, NULL},
};
static const graph_input_t blur_in[] = {
    {"image", GRAPH_T_IMAGE, true, false, false, 0, 0, NULL},
    {"blur_radius", GRAPH_T_INT, true, true, true, 1, 31, NULL},
    {"sigma", GRAPH_T_FLOAT, true, true, true, 0.1, 10.0, NULL},
};
static const graph_input_t blend_in[] = {
    {"image1", GRAPH_T_IMAGE, true, false, false, 0, 0, NULL},
    {"image2", GRAPH_T_IMAGE, true, false, false, 0, 0, NULL},
    {"blend_factor", GRAPH_T_FLOAT, true, true, true, 0, 1, NULL},
    {"blend_mode", GRAPH_T_COMBO, true, false, false, 0, 0, blend_modes},
    {"note", GRAPH_T_STRING, false, false, false, 0, 0, NULL},
    {"flag", GRAPH_T_BOOLEAN, false, false, false, 0, 0, NULL},
};
static const graph_input_t save_in[] = {
    {"images", GRAPH_T_IMAGE, true, false, false, 0, 0, NULL},
    {"filename_prefix", GRAPH_T_STRING, false, false, false, 0, 0, NULL},
};
static const graph_class_t classes[] = {
    {"LoadImage", load_in, 1, out_image_mask, 2, false},
    {"ImageBlur", blur_in, 3, out_image, 1, false},
    {"ImageBlend", blend_in, 6, out_image, 1, false},
    {"SaveImage", save_in, 2, NULL, 0, true},
};
static const graph_registry_t reg = {classes, sizeof(classes) / sizeof(classes[0]), NULL};

#define LOAD "\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"in.png\"}}"
#define SAVE(src) ",\"9\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"" src "\",0]}}"
#define BLUR(id, src, r, s)                                                                        \
    ",\"" id "\":{\"class_type\":\"ImageBlur\",\"inputs\":{\"image\":" src ",\"blur_radius\":" r   \
    ",\"sigma\":" s "}}"

typedef struct {
    const char *name;
    const char *json;
    graph_status_t status;
    const char *prompt_type; /* NULL when status is GRAPH_OK */
    const char *node_id;     /* first node error, or NULL */
    const char *node_type;
    const char *input_name;
    const char *message; /* substring of the node error message (or prompt message) */
} case_t;

static const case_t cases[] = {
    {"valid", "{" LOAD BLUR("2", "[\"1\",0]", "2", "1.5") SAVE("2") "}", GRAPH_OK, NULL, NULL, NULL,
     NULL, NULL},
    {"valid_coerced_strings", "{" LOAD BLUR("2", "[\"1\",0]", "\"3\"", "\" 0.5 \"") SAVE("2") "}",
     GRAPH_OK, NULL, NULL, NULL, NULL, NULL},
    {"valid_int_truncates", "{" LOAD BLUR("2", "[\"1\",0]", "1.9", "true") SAVE("2") "}", GRAPH_OK,
     NULL, NULL, NULL, NULL, NULL},
    {"unknown_class", "{" LOAD ",\"2\":{\"class_type\":\"KSampler\",\"inputs\":{}}" SAVE("1") "}",
     GRAPH_UNKNOWN_CLASS, "invalid_prompt", NULL, NULL, NULL,
     "Cannot execute because node KSampler does not exist."},
    {"missing_class_type", "{" LOAD ",\"2\":{\"inputs\":{}}" SAVE("1") "}", GRAPH_INVALID,
     "invalid_prompt", NULL, NULL, NULL, "missing the class_type property"},
    {"not_object", "[1,2]", GRAPH_INVALID, "invalid_prompt", NULL, NULL, NULL, NULL},
    {"empty", "{}", GRAPH_INVALID, "invalid_prompt", NULL, NULL, NULL, NULL},
    {"missing_input",
     "{" LOAD
     ",\"2\":{\"class_type\":\"ImageBlur\",\"inputs\":{\"image\":[\"1\",0],\"sigma\":1}}" SAVE(
         "2") "}",
     GRAPH_INVALID, "prompt_outputs_failed_validation", "2", "required_input_missing",
     "blur_radius", "Required input is missing"},
    {"wrong_type", "{" LOAD BLUR("2", "[\"1\",0]", "\"big\"", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "invalid_input_type", "blur_radius",
     "Failed to convert an input value to a INT value"},
    {"wrong_type_object", "{" LOAD BLUR("2", "[\"1\",0]", "1", "{}") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "invalid_input_type", "sigma", "to a FLOAT value"},
    {"too_small", "{" LOAD BLUR("2", "[\"1\",0]", "0", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "value_smaller_than_min", "blur_radius",
     "Value 0 smaller than min of 1"},
    {"too_big", "{" LOAD BLUR("2", "[\"1\",0]", "1", "10.5") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "value_bigger_than_max", "sigma",
     "Value 10.5 bigger than max of 10"},
    {"not_in_list",
     "{" LOAD ",\"2\":{\"class_type\":\"ImageBlend\",\"inputs\":{\"image1\":[\"1\",0],\"image2\":["
     "\"1\",0],\"blend_factor\":0.5,\"blend_mode\":\"dodge\"}}" SAVE("2") "}",
     GRAPH_INVALID, "prompt_outputs_failed_validation", "2", "value_not_in_list", "blend_mode",
     "Value not in list"},
    {"combo_number",
     "{" LOAD ",\"2\":{\"class_type\":\"ImageBlend\",\"inputs\":{\"image1\":[\"1\",0],\"image2\":["
     "\"1\",0],\"blend_factor\":0.5,\"blend_mode\":3}}" SAVE("2") "}",
     GRAPH_INVALID, "prompt_outputs_failed_validation", "2", "value_not_in_list", "blend_mode",
     NULL},
    {"link_missing_node", "{" LOAD BLUR("2", "[\"7\",0]", "1", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "bad_linked_input", "image",
     "Linked node does not exist"},
    {"link_malformed", "{" LOAD BLUR("2", "[\"1\"]", "1", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "bad_linked_input", "image", "length-2 list"},
    {"link_bad_index", "{" LOAD BLUR("2", "[\"1\",5]", "1", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "bad_linked_input", "image",
     "Linked output does not exist"},
    {"link_type_mismatch", "{" LOAD BLUR("2", "[\"1\",1]", "1", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "return_type_mismatch", "image",
     "Return type mismatch between linked nodes"},
    {"literal_on_image", "{" LOAD BLUR("2", "\"x.png\"", "1", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "invalid_input_type", "image", "must be a link"},
    {"cycle",
     "{" LOAD BLUR("2", "[\"3\",0]", "1", "1") BLUR("3", "[\"2\",0]", "1", "1") SAVE("3") "}",
     GRAPH_INVALID, "prompt_outputs_failed_validation", "2", "dependency_cycle", NULL,
     "Dependency cycle detected"},
    {"self_cycle", "{" LOAD BLUR("2", "[\"2\",0]", "1", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "dependency_cycle", NULL, NULL},
    {"no_output", "{" LOAD BLUR("2", "[\"1\",0]", "1", "1") "}", GRAPH_INVALID, "prompt_no_outputs",
     NULL, NULL, NULL, "Prompt has no outputs"},
};

static void run_case(const case_t *c)
{
    cJSON *prompt = cJSON_Parse(c->json);
    assert_non_null(prompt);
    cJSON *error = (cJSON *)1;
    graph_status_t st = graph_validate(prompt, &reg, &error);
    if (st != c->status) {
        char *s = error != NULL ? cJSON_Print(error) : NULL;
        fail_msg("%s: status %d, want %d: %s", c->name, st, c->status, s != NULL ? s : "");
    }
    if (c->status == GRAPH_OK) {
        assert_null(error);
        cJSON_Delete(prompt);
        return;
    }
    assert_non_null(error);
    const cJSON *pe = cJSON_GetObjectItem(error, "error");
    assert_string_equal(cJSON_GetObjectItem(pe, "type")->valuestring, c->prompt_type);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(pe, "details")));
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(pe, "extra_info")));
    const cJSON *ne = cJSON_GetObjectItem(error, "node_errors");
    assert_true(cJSON_IsObject(ne));
    if (c->node_id == NULL) {
        assert_null(ne->child);
        if (c->message != NULL) {
            assert_non_null(strstr(cJSON_GetObjectItem(pe, "message")->valuestring, c->message));
        }
    } else {
        const cJSON *node = cJSON_GetObjectItem(ne, c->node_id);
        assert_non_null(node);
        assert_true(cJSON_IsString(cJSON_GetObjectItem(node, "class_type")));
        const cJSON *deps = cJSON_GetObjectItem(node, "dependent_outputs");
        assert_true(cJSON_IsArray(deps));
        assert_string_equal(cJSON_GetArrayItem(deps, 0)->valuestring, "9");
        const cJSON *e = cJSON_GetArrayItem(cJSON_GetObjectItem(node, "errors"), 0);
        assert_non_null(e);
        assert_string_equal(cJSON_GetObjectItem(e, "type")->valuestring, c->node_type);
        if (c->input_name != NULL) {
            const cJSON *extra = cJSON_GetObjectItem(e, "extra_info");
            assert_string_equal(cJSON_GetObjectItem(extra, "input_name")->valuestring,
                                c->input_name);
        }
        if (c->message != NULL) {
            const char *m = cJSON_GetObjectItem(e, "message")->valuestring;
            if (strstr(m, c->message) == NULL) {
                fail_msg("%s: message '%s' lacks '%s'", c->name, m, c->message);
            }
        }
        /* The prompt-level details carry "message: details" lines. */
        assert_non_null(strstr(cJSON_GetObjectItem(pe, "details")->valuestring,
                               cJSON_GetObjectItem(e, "message")->valuestring));
    }
    char *summary = graph_error_summary(error);
    assert_non_null(summary);
    assert_true(strlen(summary) > 5);
    free(summary);
    cJSON_Delete(error);
    cJSON_Delete(prompt);
}

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run_case(&cases[i]);
    }
}

static void test_not_in_list_details(void **state)
{
    (void)state;
    cJSON *prompt = cJSON_Parse(
        "{" LOAD ",\"2\":{\"class_type\":\"ImageBlend\",\"inputs\":{\"image1\":[\"1\",0],"
        "\"image2\":[\"1\",0],\"blend_factor\":0.5,\"blend_mode\":\"dodge\"}}" SAVE("2") "}");
    cJSON *error = NULL;
    assert_int_equal(graph_validate(prompt, &reg, &error), GRAPH_INVALID);
    const cJSON *e = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(error, "node_errors"), "2"),
                            "errors"),
        0);
    assert_string_equal(cJSON_GetObjectItem(e, "details")->valuestring,
                        "blend_mode: 'dodge' not in ['normal', 'multiply', 'screen']");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(e, "extra_info"), "received_value")->valuestring,
        "dodge");
    char *summary = graph_error_summary(error);
    assert_string_equal(summary, "Prompt outputs failed validation: node 2 (ImageBlend): Value "
                                 "not in list: blend_mode: 'dodge' not in ['normal', 'multiply', "
                                 "'screen']");
    free(summary);
    cJSON_Delete(error);
    cJSON_Delete(prompt);
}

/* Several errors on one node, and an error in a node that only one of two outputs needs. */
static void test_multiple_errors_and_dependents(void **state)
{
    (void)state;
    cJSON *prompt = cJSON_Parse("{" LOAD BLUR("2", "[\"1\",0]", "0", "99") SAVE(
        "2") ",\"8\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"1\",0]}}}");
    cJSON *error = NULL;
    assert_int_equal(graph_validate(prompt, &reg, &error), GRAPH_INVALID);
    const cJSON *node = cJSON_GetObjectItem(cJSON_GetObjectItem(error, "node_errors"), "2");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(node, "errors")), 2);
    const cJSON *deps = cJSON_GetObjectItem(node, "dependent_outputs");
    assert_int_equal(cJSON_GetArraySize(deps), 1);
    assert_string_equal(cJSON_GetArrayItem(deps, 0)->valuestring, "9");
    assert_string_equal(cJSON_GetObjectItem(node, "class_type")->valuestring, "ImageBlur");
    const char *details =
        cJSON_GetObjectItem(cJSON_GetObjectItem(error, "error"), "details")->valuestring;
    assert_string_equal(details, "Value 0 smaller than min of 1: blur_radius\n"
                                 "Value 99 bigger than max of 10: sigma");
    cJSON_Delete(error);
    cJSON_Delete(prompt);
}

static void test_is_link(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        bool link;
    } t[] = {
        {"[\"1\",0]", true},   {"[\"1\",2]", true},    {"[1,0]", false}, {"[\"1\"]", false},
        {"[\"1\",-1]", false}, {"[\"1\",0.5]", false}, {"\"1\"", false}, {"[\"1\",0,0]", false},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        cJSON *v = cJSON_Parse(t[i].json);
        assert_non_null(v);
        assert_int_equal(graph_is_link(v), t[i].link);
        cJSON_Delete(v);
    }
    assert_non_null(graph_registry_find(&reg, "ImageBlur"));
    assert_null(graph_registry_find(&reg, "imageblur"));
}

/* ---- size: the work is linear in the graph, the node count is capped ---- */

static void add_node(cJSON *prompt, int id, const char *class_type, cJSON *inputs)
{
    char key[16];
    snprintf(key, sizeof(key), "%d", id);
    cJSON *node = cJSON_AddObjectToObject(prompt, key);
    cJSON_AddStringToObject(node, "class_type", class_type);
    cJSON_AddItemToObject(node, "inputs", inputs);
}

static cJSON *link_to(int id, int index)
{
    char key[16];
    snprintf(key, sizeof(key), "%d", id);
    cJSON *l = cJSON_CreateArray();
    cJSON_AddItemToArray(l, cJSON_CreateString(key));
    cJSON_AddItemToArray(l, cJSON_CreateNumber(index));
    return l;
}

static cJSON *blur_inputs(int src, int radius)
{
    cJSON *in = cJSON_CreateObject();
    cJSON_AddItemToObject(in, "image", link_to(src, 0));
    cJSON_AddNumberToObject(in, "blur_radius", radius);
    cJSON_AddNumberToObject(in, "sigma", 1);
    return in;
}

static cJSON *save_inputs(int src)
{
    cJSON *in = cJSON_CreateObject();
    cJSON_AddItemToObject(in, "images", link_to(src, 0));
    return in;
}

/* LoadImage → (nodes − 2) ImageBlur → SaveImage, ids 1..nodes. */
static cJSON *chain(int nodes)
{
    cJSON *prompt = cJSON_CreateObject();
    cJSON *in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "image", "in.png");
    add_node(prompt, 1, "LoadImage", in);
    for (int i = 2; i < nodes; i++) {
        add_node(prompt, i, "ImageBlur", blur_inputs(i - 1, 2));
    }
    add_node(prompt, nodes, "SaveImage", save_inputs(nodes - 1));
    return prompt;
}

/* The worst shape for dependent_outputs: LoadImage, then `k` chained
 * ImageBlur nodes that each fail (blur_radius 0), each feeding a SaveImage. */
static cJSON *failing_fan(int k)
{
    cJSON *prompt = cJSON_CreateObject();
    cJSON *in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "image", "in.png");
    add_node(prompt, 1, "LoadImage", in);
    for (int i = 0; i < k; i++) {
        int blur = 2 + 2 * i;
        add_node(prompt, blur, "ImageBlur", blur_inputs(i == 0 ? 1 : blur - 2, 0));
        add_node(prompt, blur + 1, "SaveImage", save_inputs(blur));
    }
    return prompt;
}

static unsigned long steps_of(cJSON *prompt, graph_status_t want)
{
    graph_stats_t stats = {0};
    cJSON *error = NULL;
    graph_status_t st = graph_validate_stats(prompt, &reg, &stats, &error);
    assert_int_equal(st, want);
    cJSON_Delete(error);
    cJSON_Delete(prompt);
    assert_true(stats.steps > 0);
    return stats.steps;
}

/* Twice the nodes, at most about twice the steps (quadratic work would be 4×). */
static void assert_linear(unsigned long small, unsigned long big)
{
    if (big > small * 5 / 2) {
        fail_msg("steps %lu for twice the nodes of %lu steps: not linear", big, small);
    }
}

static void test_chain_is_linear(void **state)
{
    (void)state;
    unsigned long s125 = steps_of(chain(125), GRAPH_OK);
    unsigned long s250 = steps_of(chain(250), GRAPH_OK);
    unsigned long s500 = steps_of(chain(GRAPH_MAX_NODES), GRAPH_OK);
    assert_linear(s125, s250);
    assert_linear(s250, s500);
}

static void test_failing_fan_is_linear(void **state)
{
    (void)state;
    unsigned long s60 = steps_of(failing_fan(60), GRAPH_INVALID);
    unsigned long s120 = steps_of(failing_fan(120), GRAPH_INVALID);
    unsigned long s240 = steps_of(failing_fan(240), GRAPH_INVALID);
    assert_linear(s60, s120);
    assert_linear(s120, s240);

    /* The first blur feeds every output: its list is capped, in prompt order. */
    cJSON *prompt = failing_fan(240);
    cJSON *error = NULL;
    assert_int_equal(graph_validate(prompt, &reg, &error), GRAPH_INVALID);
    const cJSON *node = cJSON_GetObjectItem(cJSON_GetObjectItem(error, "node_errors"), "2");
    const cJSON *deps = cJSON_GetObjectItem(node, "dependent_outputs");
    assert_int_equal(cJSON_GetArraySize(deps), GRAPH_MAX_DEPENDENT_OUTPUTS);
    assert_string_equal(cJSON_GetArrayItem(deps, 0)->valuestring, "3");
    assert_string_equal(cJSON_GetArrayItem(deps, 1)->valuestring, "5");
    /* The last blur feeds only its own output. */
    node = cJSON_GetObjectItem(cJSON_GetObjectItem(error, "node_errors"), "480");
    deps = cJSON_GetObjectItem(node, "dependent_outputs");
    assert_int_equal(cJSON_GetArraySize(deps), 1);
    assert_string_equal(cJSON_GetArrayItem(deps, 0)->valuestring, "481");
    cJSON_Delete(error);
    cJSON_Delete(prompt);
}

static void test_node_cap(void **state)
{
    (void)state;
    cJSON *error = NULL;
    graph_stats_t stats = {0};
    cJSON *prompt = chain(1000);
    assert_int_equal(graph_validate_stats(prompt, &reg, &stats, &error), GRAPH_INVALID);
    const cJSON *pe = cJSON_GetObjectItem(error, "error");
    assert_string_equal(cJSON_GetObjectItem(pe, "type")->valuestring, "graph_too_large");
    assert_non_null(strstr(cJSON_GetObjectItem(pe, "details")->valuestring, "at most 500"));
    /* Refused after counting the nodes, before looking at them. */
    assert_true(stats.steps <= 1000);
    cJSON_Delete(error);
    cJSON_Delete(prompt);
    steps_of(chain(GRAPH_MAX_NODES), GRAPH_OK);
    steps_of(chain(GRAPH_MAX_NODES + 1), GRAPH_INVALID);
}

/* ---- work budget (the CPU executor's registry knows the output sizes) ---- */

static cJSON *empty_image(int w, int h, int batch)
{
    cJSON *in = cJSON_CreateObject();
    cJSON_AddNumberToObject(in, "width", w);
    cJSON_AddNumberToObject(in, "height", h);
    if (batch > 0) {
        cJSON_AddNumberToObject(in, "batch_size", batch);
    }
    return in;
}

/* A factor in JSON: a number, or a string (as Python's float() reads it). */
static cJSON *scale_by(int src, const char *factor_json)
{
    cJSON *in = cJSON_CreateObject();
    cJSON_AddItemToObject(in, "image", link_to(src, 0));
    cJSON_AddStringToObject(in, "upscale_method", "bilinear");
    cJSON_AddItemToObject(in, "scale_by", cJSON_Parse(factor_json));
    return in;
}

/* Validates against the CPU executor's registry; returns the prompt-level error type or "ok". */
static const char *budget_verdict(cJSON *prompt, char *buf, size_t len)
{
    cJSON *error = NULL;
    graph_status_t st = graph_validate(prompt, cpu_nodes_registry(), &error);
    if (st == GRAPH_OK) {
        snprintf(buf, len, "ok");
    } else {
        const cJSON *pe = cJSON_GetObjectItem(error, "error");
        snprintf(buf, len, "%s", cJSON_GetObjectItem(pe, "type")->valuestring);
    }
    cJSON_Delete(error);
    cJSON_Delete(prompt);
    return buf;
}

static void test_work_budget(void **state)
{
    (void)state;
    char buf[64];
    cJSON *p;

    /* EmptyImage 16384², saved: within the budget. */
    p = cJSON_CreateObject();
    add_node(p, 1, "EmptyImage", empty_image(16384, 16384, 0));
    add_node(p, 2, "SaveImage", save_inputs(1));
    assert_string_equal(budget_verdict(p, buf, sizeof(buf)), "ok");

    /* ... scaled by 8: one image of 17 gigapixels. */
    p = cJSON_CreateObject();
    add_node(p, 1, "EmptyImage", empty_image(16384, 16384, 0));
    add_node(p, 2, "ImageScaleBy", scale_by(1, "8"));
    add_node(p, 3, "SaveImage", save_inputs(2));
    assert_string_equal(budget_verdict(p, buf, sizeof(buf)), "graph_too_expensive");

    /* A small image, chained ImageScaleBy 8 (a string factor, as Python's float() reads it). */
    p = cJSON_CreateObject();
    add_node(p, 1, "EmptyImage", empty_image(512, 512, 0));
    add_node(p, 2, "ImageScaleBy", scale_by(1, "\"8\""));
    add_node(p, 3, "ImageScaleBy", scale_by(2, "8"));
    add_node(p, 4, "SaveImage", save_inputs(3));
    assert_string_equal(budget_verdict(p, buf, sizeof(buf)), "graph_too_expensive");

    /* A batch of 4096 full-size images. */
    p = cJSON_CreateObject();
    add_node(p, 1, "EmptyImage", empty_image(16384, 16384, 4096));
    add_node(p, 2, "SaveImage", save_inputs(1));
    assert_string_equal(budget_verdict(p, buf, sizeof(buf)), "graph_too_expensive");

    /* Many full-size images, each within the limit: the total is over. */
    p = cJSON_CreateObject();
    for (int i = 0; i < 100; i++) {
        add_node(p, 1 + 2 * i, "EmptyImage", empty_image(16384, 16384, 0));
        add_node(p, 2 + 2 * i, "SaveImage", save_inputs(1 + 2 * i));
    }
    assert_string_equal(budget_verdict(p, buf, sizeof(buf)), "graph_too_expensive");

    /* A photo, chained ImageScaleBy 8: too much whatever the photo. */
    p = cJSON_CreateObject();
    cJSON *in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "image", "in.png");
    add_node(p, 1, "LoadImage", in);
    add_node(p, 2, "ImageScaleBy", scale_by(1, "8"));
    add_node(p, 3, "ImageScaleBy", scale_by(2, "8"));
    add_node(p, 4, "SaveImage", save_inputs(3));
    assert_string_equal(budget_verdict(p, buf, sizeof(buf)), "graph_too_expensive");

    /* A photo scaled by 2 then scaled back down: fine. */
    p = cJSON_CreateObject();
    in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "image", "in.png");
    add_node(p, 1, "LoadImage", in);
    add_node(p, 2, "ImageScaleBy", scale_by(1, "2"));
    add_node(p, 3, "ImageScaleBy", scale_by(2, "0.5"));
    add_node(p, 4, "SaveImage", save_inputs(3));
    assert_string_equal(budget_verdict(p, buf, sizeof(buf)), "ok");

    /* A long chain of per-pixel nodes on a photo, at the node cap: fine. */
    p = cJSON_CreateObject();
    in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "image", "in.png");
    add_node(p, 1, "LoadImage", in);
    for (int i = 2; i < GRAPH_MAX_NODES; i++) {
        cJSON *ex = cJSON_CreateObject();
        cJSON_AddItemToObject(ex, "image", link_to(i - 1, 0));
        cJSON_AddNumberToObject(ex, "stops", 0.1);
        add_node(p, i, "CA.Exposure", ex);
    }
    add_node(p, GRAPH_MAX_NODES, "SaveImage", save_inputs(GRAPH_MAX_NODES - 1));
    assert_string_equal(budget_verdict(p, buf, sizeof(buf)), "ok");
}

/* graph_validate_user: the rules of user presets (type of the prompt-level
 * error, or "ok"). */
static const char *user_verdict(const char *json)
{
    static char type[64];
    cJSON *p = cJSON_Parse(json);
    assert_non_null(p);
    cJSON *err = NULL;
    graph_status_t st = graph_validate_user(p, &reg, &err);
    assert_true(st == GRAPH_OK || st == GRAPH_INVALID);
    if (st == GRAPH_OK) {
        assert_null(err);
        snprintf(type, sizeof(type), "ok");
    } else {
        const char *t =
            cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(err, "error"), "type"));
        snprintf(type, sizeof(type), "%s", t != NULL ? t : "?");
        char *summary = graph_error_summary(err);
        assert_non_null(summary);
        free(summary);
    }
    cJSON_Delete(err);
    cJSON_Delete(p);
    return type;
}

static void test_user_rules(void **state)
{
    (void)state;
    struct {
        const char *json;
        const char *want;
    } user_cases[] = {
        {"{" LOAD SAVE("1") "}", "ok"},
        {"{\"1\":{\"class_type\":\"LoadImageMask\",\"inputs\":{\"image\":\"a.png\"}}" SAVE("1") "}",
         "node_not_allowed"},
        {"{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"a.png [output]\"}}" SAVE(
             "1") "}",
         "input_not_allowed"},
        {"{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"a.png[Temp]\\n\"}}" SAVE(
             "1") "}",
         "input_not_allowed"},
        {"{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"d/a.png\"}}" SAVE("1") "}",
         "input_not_allowed"},
        {"{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"a..png\"}}" SAVE("1") "}",
         "input_not_allowed"},
        {"{" LOAD ",\"9\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"1\",0],"
         "\"filename_prefix\":\"../x\"}}}",
         "input_not_allowed"},
        /* a declared STRING (not a file name) may hold a slash, not a folder tag */
        {"{" LOAD ",\"2\":{\"class_type\":\"ImageBlend\",\"inputs\":{\"image1\":[\"1\",0],"
         "\"image2\":[\"1\",0],\"blend_factor\":0.5,\"blend_mode\":\"normal\","
         "\"note\":\"a/b\"}}" SAVE("2") "}",
         "ok"},
        {"{" LOAD ",\"2\":{\"class_type\":\"ImageBlend\",\"inputs\":{\"image1\":[\"1\",0],"
         "\"image2\":[\"1\",0],\"blend_factor\":0.5,\"blend_mode\":\"normal\","
         "\"note\":\"a [input]\"}}" SAVE("2") "}",
         "input_not_allowed"},
        /* an undeclared input is checked too */
        {"{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"a.png\",\"x\":\"b "
         "[output]\"}}" SAVE("1") "}",
         "input_not_allowed"},
        /* other errors keep their type */
        {"{" LOAD BLUR("2", "[\"1\",0]", "0", "1") SAVE("2") "}",
         "prompt_outputs_failed_validation"},
    };
    for (size_t i = 0; i < sizeof(user_cases) / sizeof(user_cases[0]); i++) {
        const char *got = user_verdict(user_cases[i].json);
        if (strcmp(got, user_cases[i].want) != 0) {
            fail_msg("case %zu: want %s, got %s", i, user_cases[i].want, got);
        }
    }
    assert_true(graph_string_addresses_folder("x [output]"));
    assert_true(graph_string_addresses_folder("x[INPUT]  "));
    assert_false(graph_string_addresses_folder("[output] x"));
    assert_false(graph_string_addresses_folder(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_not_in_list_details),
        cmocka_unit_test(test_multiple_errors_and_dependents),
        cmocka_unit_test(test_is_link),
        cmocka_unit_test(test_chain_is_linear),
        cmocka_unit_test(test_failing_fan_is_linear),
        cmocka_unit_test(test_node_cap),
        cmocka_unit_test(test_work_budget),
        cmocka_unit_test(test_user_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
