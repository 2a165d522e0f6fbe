/*
 * fuzz_graph — the workflow graph validator (common/graph.c: graph_validate,
 * with its cycle search and dependent-outputs walk, the part that orders the
 * graph, graph_validate_user and graph_error_summary) against the CPU registry
 * (common/cpu_nodes.h), as POST/PATCH /api/presets and the job-worker call it.
 *
 * Input: the workflow's JSON text. A graph_validate() slower than the
 * libFuzzer -timeout of tests/fuzz/run is reported as a timeout finding.
 */
#include "cpu_nodes.h"
#include "graph.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *prompt = cJSON_ParseWithLength((const char *)data, size);
    if (prompt == NULL) {
        return 0;
    }
    cJSON *error = NULL;
    graph_status_t st = graph_validate(prompt, cpu_nodes_registry(), &error);
    if (st != GRAPH_OK) {
        free(graph_error_summary(error));
    } else if (error != NULL) {
        abort(); /* the contract: no error object on GRAPH_OK */
    }
    cJSON_Delete(error);
    /* the rules of user presets on top (POST/PATCH /api/presets) */
    error = NULL;
    st = graph_validate_user(prompt, cpu_nodes_registry(), &error);
    if (st == GRAPH_UNKNOWN_CLASS || (st == GRAPH_OK) != (error == NULL)) {
        abort(); /* the contract: OK or INVALID, an error object exactly when INVALID */
    }
    free(graph_error_summary(error));
    cJSON_Delete(error);
    cJSON_Delete(prompt);
    return 0;
}
