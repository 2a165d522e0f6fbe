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

#include "graph.h"

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
static const graph_registry_t reg = {classes, sizeof(classes) / sizeof(classes[0])};

#define LOAD "\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"in.png\"}}"
#define SAVE(src) ",\"9\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"" src "\",0]}}"
#define BLUR(id, src, r, s)                                                                        \
    ",\"" id "\":{\"class_type\":\"ImageBlur\",\"inputs\":{\"image\":" src                          \
    ",\"blur_radius\":" r ",\"sigma\":" s "}}"

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
    {"unknown_class",
     "{" LOAD ",\"2\":{\"class_type\":\"KSampler\",\"inputs\":{}}" SAVE("1") "}",
     GRAPH_UNKNOWN_CLASS, "invalid_prompt", NULL, NULL, NULL,
     "Cannot execute because node KSampler does not exist."},
    {"missing_class_type", "{" LOAD ",\"2\":{\"inputs\":{}}" SAVE("1") "}", GRAPH_INVALID,
     "invalid_prompt", NULL, NULL, NULL, "missing the class_type property"},
    {"not_object", "[1,2]", GRAPH_INVALID, "invalid_prompt", NULL, NULL, NULL, NULL},
    {"empty", "{}", GRAPH_INVALID, "invalid_prompt", NULL, NULL, NULL, NULL},
    {"missing_input",
     "{" LOAD ",\"2\":{\"class_type\":\"ImageBlur\",\"inputs\":{\"image\":[\"1\",0],\"sigma\":1}}" SAVE(
         "2") "}",
     GRAPH_INVALID, "prompt_outputs_failed_validation", "2", "required_input_missing",
     "blur_radius", "Required input is missing"},
    {"wrong_type", "{" LOAD BLUR("2", "[\"1\",0]", "\"big\"", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "invalid_input_type", "blur_radius",
     "Failed to convert an input value to a INT value"},
    {"wrong_type_object", "{" LOAD BLUR("2", "[\"1\",0]", "1", "{}") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "invalid_input_type", "sigma",
     "to a FLOAT value"},
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
     "prompt_outputs_failed_validation", "2", "bad_linked_input", "image",
     "length-2 list"},
    {"link_bad_index", "{" LOAD BLUR("2", "[\"1\",5]", "1", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "bad_linked_input", "image",
     "Linked output does not exist"},
    {"link_type_mismatch", "{" LOAD BLUR("2", "[\"1\",1]", "1", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "return_type_mismatch", "image",
     "Return type mismatch between linked nodes"},
    {"literal_on_image", "{" LOAD BLUR("2", "\"x.png\"", "1", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "invalid_input_type", "image", "must be a link"},
    {"cycle", "{" LOAD BLUR("2", "[\"3\",0]", "1", "1") BLUR("3", "[\"2\",0]", "1", "1") SAVE(
                  "3") "}",
     GRAPH_INVALID, "prompt_outputs_failed_validation", "2", "dependency_cycle", NULL,
     "Dependency cycle detected"},
    {"self_cycle", "{" LOAD BLUR("2", "[\"2\",0]", "1", "1") SAVE("2") "}", GRAPH_INVALID,
     "prompt_outputs_failed_validation", "2", "dependency_cycle", NULL, NULL},
    {"no_output", "{" LOAD BLUR("2", "[\"1\",0]", "1", "1") "}", GRAPH_INVALID,
     "prompt_no_outputs", NULL, NULL, NULL, "Prompt has no outputs"},
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
        {"[\"1\",0]", true}, {"[\"1\",2]", true},  {"[1,0]", false},    {"[\"1\"]", false},
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_not_in_list_details),
        cmocka_unit_test(test_multiple_errors_and_dependents),
        cmocka_unit_test(test_is_link),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
