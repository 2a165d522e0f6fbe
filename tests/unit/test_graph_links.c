/*
 * Regression tests for common/graph's link check, found by tests/fuzz/fuzz_graph:
 * a link index that is a whole number past INT_MAX (["1", 3e94]) was converted
 * to int (undefined; INT_MIN on x86-64) and then used to index the source
 * class's outputs — a read far outside the table, on the gateway's event loop
 * for any signed-in user's POST /api/presets. It is "Linked output does not
 * exist", like any other index past the outputs.
 */
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

static void test_huge_link_index_is_a_missing_output(void **state)
{
    static const char *const indexes[] = {"2",          "2147483647", "2147483648",
                                          "4294967296", "1e19",       "3e94"};
    for (size_t i = 0; i < sizeof(indexes) / sizeof(indexes[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text),
                 "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
                 "\"2\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"1\",%s]}}}",
                 indexes[i]);
        cJSON *prompt = cJSON_Parse(text);
        assert_non_null(prompt);
        cJSON *error = NULL;
        assert_int_equal(graph_validate(prompt, cpu_nodes_registry(), &error), GRAPH_INVALID);
        char *summary = graph_error_summary(error);
        assert_non_null(summary);
        if (strstr(summary, "Linked output does not exist") == NULL) {
            fail_msg("index %s: %s", indexes[i], summary);
        }
        free(summary);
        cJSON_Delete(error);
        cJSON_Delete(prompt);
    }
}

/* The details still name the index as a whole number. */
static void test_missing_output_details(void **state)
{
    cJSON *prompt = cJSON_Parse(
        "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"x\"}},"
        "\"2\":{\"class_type\":\"SaveImage\",\"inputs\":{\"images\":[\"1\",2147483648]}}}");
    cJSON *error = NULL;
    assert_int_equal(graph_validate(prompt, cpu_nodes_registry(), &error), GRAPH_INVALID);
    char *summary = graph_error_summary(error);
    assert_non_null(strstr(summary, "has no output 2147483648"));
    free(summary);
    cJSON_Delete(error);
    cJSON_Delete(prompt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_huge_link_index_is_a_missing_output),
        cmocka_unit_test(test_missing_output_details),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
