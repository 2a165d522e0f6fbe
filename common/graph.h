/*
 * graph — validation of ComfyUI API-format workflows against a node-class
 * registry, with errors shaped like ComfyUI's `POST /prompt` 400 body.
 *
 * A workflow is a cJSON object: node id → {"class_type": "...", "inputs": {...}}.
 * An input is a literal (number, string, bool) or a link [node_id, output_index].
 * The registry is data the caller passes in (the job-worker's CPU executor
 * registers its nodes; the api-gateway reuses the same table to check presets).
 *
 *   cJSON *error = NULL;
 *   graph_status_t st = graph_validate(prompt, cpu_exec_registry(), &error);
 *   if (st == GRAPH_UNKNOWN_CLASS) { ... route to ComfyUI ... }
 *   else if (st == GRAPH_INVALID) { char *msg = graph_error_summary(error); ... free(msg); }
 *   cJSON_Delete(error);
 *
 * The error object is {"error": {type, message, details, extra_info},
 * "node_errors": {node_id: {"errors": [{type, message, details,
 * extra_info: {input_name, ...}}], "class_type", "dependent_outputs": [...]}}}.
 *
 * Validation is linear in the size of the prompt (a hash index of the node
 * ids, one strongly-connected-components pass, no recursion), and the prompt
 * is bounded: at most GRAPH_MAX_NODES nodes, and, when the registry can tell
 * the size of the images its nodes make, a work budget in pixels.
 */
#ifndef CA_GRAPH_H
#define CA_GRAPH_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    GRAPH_T_INT = 0,
    GRAPH_T_FLOAT,
    GRAPH_T_STRING,
    GRAPH_T_BOOLEAN,
    GRAPH_T_COMBO, /* a string from `choices` (or any string when choices is NULL) */
    GRAPH_T_IMAGE, /* a link only */
    GRAPH_T_MASK,  /* a link only */
} graph_type_t;

typedef struct {
    const char *name;
    graph_type_t type;
    bool required;
    bool has_min, has_max; /* INT and FLOAT */
    double min, max;
    const char *const *choices; /* COMBO: NULL-terminated; NULL = any string */
} graph_input_t;

typedef struct {
    const char *class_type;
    const graph_input_t *inputs;
    size_t ninputs;
    const graph_type_t *outputs; /* RETURN_TYPES */
    size_t noutputs;
    bool output_node; /* OUTPUT_NODE */
} graph_class_t;

/* Limits. A prompt over them is GRAPH_INVALID with a prompt-level error
 * of type "graph_too_large" (nodes) or "graph_too_expensive" (pixels). */
#define GRAPH_MAX_NODES 500
/* dependent_outputs lists at most this many outputs (the first in prompt order). */
#define GRAPH_MAX_DEPENDENT_OUTPUTS 32
/* No node may make an image (batch included) larger than this... */
#define GRAPH_MAX_IMAGE_PIXELS (16384.0 * 16384.0)
/* ...and all the nodes of a prompt together at most this many pixels. */
#define GRAPH_MAX_WORK_PIXELS (64.0 * 16384.0 * 16384.0)

/* The size of the image a node makes, as far as the planner can tell. */
typedef struct {
    double width, height;
    double batch;
} graph_size_t;

/* Computes the size of the image node `class_type` makes from its (validated)
 * `inputs` and `in`, the size of the image on its first IMAGE input (NULL
 * when it has none). Returns false when the node makes no image. */
typedef bool (*graph_size_fn)(const char *class_type, const cJSON *inputs, const graph_size_t *in,
                              graph_size_t *out);

typedef struct {
    const graph_class_t *classes;
    size_t nclasses;
    graph_size_fn size; /* NULL: no pixel budget */
} graph_registry_t;

typedef enum {
    GRAPH_OK = 0,
    GRAPH_UNKNOWN_CLASS = 1, /* well-formed, but a class_type is not in the registry */
    GRAPH_INVALID = 2,       /* malformed or fails validation */
} graph_status_t;

/* NULL when absent. */
const graph_class_t *graph_registry_find(const graph_registry_t *reg, const char *class_type);

/* Validates `prompt`. On GRAPH_OK *error_out is NULL; otherwise it is a new
 * cJSON object (caller frees with cJSON_Delete) shaped as described above.
 * Checks: prompt is a non-empty object; each node has class_type (string) and
 * inputs (object); class known; required inputs present; literal types
 * (INT/FLOAT/STRING/BOOLEAN coerced like Python int()/float()/str()/bool());
 * min/max; combo choices; links are [existing_node_id, index] with the right
 * output type; no dependency cycle; at least one output node; the limits
 * above (the node count first, the work budget last). */
__attribute__((warn_unused_result)) graph_status_t
graph_validate(const cJSON *prompt, const graph_registry_t *reg, cJSON **error_out);

/*
 * Validates a graph a user wrote (POST/PATCH /api/presets): graph_validate()
 * and then the rules of user presets, so the result is GRAPH_OK or
 * GRAPH_INVALID, never GRAPH_UNKNOWN_CLASS:
 *  - every class_type is in `reg` (only system presets, which operators
 *    write, may use classes that run on ComfyUI). A class outside it is a
 *    prompt-level error of type "node_not_allowed" naming the node
 *    (extra_info: node_id, class_type).
 *  - no string literal may address ComfyUI's folders: one ending in
 *    "[input]", "[output]" or "[temp]" (ComfyUI's annotated file names, case
 *    and trailing blanks ignored) is refused on any input; an input that names
 *    a file (a COMBO without a choice list, like LoadImage's `image`, and any
 *    `filename_prefix`) must be a plain name: at most GRAPH_USER_NAME_MAX
 *    bytes of letters, digits, space, _ - ., starting with a letter or digit,
 *    no "..". A refused input is a prompt-level error of type
 *    "input_not_allowed" with the node in node_errors (error type
 *    "input_not_allowed", extra_info: input_name, received_value).
 * Linear in the prompt, like graph_validate(). *error_out as graph_validate(). */
#define GRAPH_USER_NAME_MAX 128
__attribute__((warn_unused_result)) graph_status_t
graph_validate_user(const cJSON *prompt, const graph_registry_t *reg, cJSON **error_out);

/* Whether string `s` is one of ComfyUI's annotated file names ("x [output]",
 * "x[temp]", "x [input]"; case and trailing blanks ignored): such a string
 * makes LoadImage and its kin read from that folder. */
bool graph_string_addresses_folder(const char *s);

/* Counters of one validation, for tests and benches. */
typedef struct {
    unsigned long steps; /* node, input, link and hash-probe visits */
} graph_stats_t;

/* graph_validate, also filling *stats (when not NULL). */
__attribute__((warn_unused_result)) graph_status_t graph_validate_stats(const cJSON *prompt,
                                                                        const graph_registry_t *reg,
                                                                        graph_stats_t *stats,
                                                                        cJSON **error_out);

/* Reads input `name` of a node's `inputs` as Python's float() would (a number,
 * a bool, or a numeric string). False when absent or not a number. */
bool graph_input_number(const cJSON *inputs, const char *name, double *out);

/* One line for logs and job error messages: "message: details" of the
 * prompt-level error followed by the first node errors. New string; caller frees. */
char *graph_error_summary(const cJSON *error);

/* Whether `v` is a link ([string, integer] list). */
bool graph_is_link(const cJSON *v);

#endif
