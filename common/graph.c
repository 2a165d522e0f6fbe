/*
 * graph — ComfyUI API-format workflow validation. See graph.h.
 *
 * Messages follow ComfyUI's execution.py (validate_inputs / validate_prompt).
 * Departures: every node is checked (ComfyUI checks only nodes reachable from
 * an output), any node error fails the whole prompt (ComfyUI drops only the
 * failing outputs), cycles are reported at validation time (ComfyUI finds them
 * when executing), and a literal on an IMAGE/MASK input is an error here.
 */
#define _GNU_SOURCE
#include "graph.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRAPH_MAX_NODES 1000

static const char *const type_names[] = {
    [GRAPH_T_INT] = "INT",         [GRAPH_T_FLOAT] = "FLOAT", [GRAPH_T_STRING] = "STRING",
    [GRAPH_T_BOOLEAN] = "BOOLEAN", [GRAPH_T_COMBO] = "COMBO", [GRAPH_T_IMAGE] = "IMAGE",
    [GRAPH_T_MASK] = "MASK",
};

typedef struct {
    const char *id;
    const cJSON *node;
    const cJSON *inputs;
    const graph_class_t *cls;
    cJSON *errors; /* array, NULL until the first error */
    int color;     /* cycle search: 0 white, 1 on stack, 2 done */
    bool in_cycle;
    bool reached; /* dependent_outputs search */
} gnode_t;

typedef struct {
    gnode_t *nodes;
    size_t n;
} gstate_t;

const graph_class_t *graph_registry_find(const graph_registry_t *reg, const char *class_type)
{
    if (reg == NULL || class_type == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < reg->nclasses; i++) {
        if (strcmp(reg->classes[i].class_type, class_type) == 0) {
            return &reg->classes[i];
        }
    }
    return NULL;
}

bool graph_is_link(const cJSON *v)
{
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2) {
        return false;
    }
    const cJSON *id = cJSON_GetArrayItem(v, 0);
    const cJSON *idx = cJSON_GetArrayItem(v, 1);
    return cJSON_IsString(id) && cJSON_IsNumber(idx) && idx->valuedouble >= 0 &&
           idx->valuedouble == floor(idx->valuedouble);
}

static cJSON *prompt_error(const char *type, const char *message, const char *details)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "type", type);
    cJSON_AddStringToObject(err, "message", message);
    cJSON_AddStringToObject(err, "details", details != NULL ? details : "");
    cJSON_AddObjectToObject(err, "extra_info");
    cJSON_AddObjectToObject(root, "node_errors");
    return root;
}

/* Adds one error to a node; returns its extra_info for more fields. */
static cJSON *node_error(gnode_t *gn, const char *type, const char *input_name, const char *message,
                         const char *details)
{
    if (gn->errors == NULL) {
        gn->errors = cJSON_CreateArray();
    }
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "details", details != NULL ? details : "");
    cJSON *extra = cJSON_AddObjectToObject(e, "extra_info");
    if (input_name != NULL) {
        cJSON_AddStringToObject(extra, "input_name", input_name);
    }
    cJSON_AddItemToArray(gn->errors, e);
    return extra;
}

static void add_received(cJSON *extra, const cJSON *val)
{
    cJSON *copy = cJSON_Duplicate(val, true);
    if (copy != NULL) {
        cJSON_AddItemToObject(extra, "received_value", copy);
    }
}

static gnode_t *find_node(gstate_t *st, const char *id)
{
    for (size_t i = 0; i < st->n; i++) {
        if (strcmp(st->nodes[i].id, id) == 0) {
            return &st->nodes[i];
        }
    }
    return NULL;
}

/* Python-like numeric coercion. Returns false when int()/float() would raise. */
static bool coerce_number(const cJSON *v, bool to_int, double *out)
{
    if (cJSON_IsBool(v)) {
        *out = cJSON_IsTrue(v) ? 1.0 : 0.0;
        return true;
    }
    if (cJSON_IsNumber(v)) {
        *out = to_int ? trunc(v->valuedouble) : v->valuedouble;
        return true;
    }
    if (!cJSON_IsString(v)) {
        return false;
    }
    const char *s = v->valuestring;
    while (isspace((unsigned char)*s)) {
        s++;
    }
    if (*s == '\0') {
        return false;
    }
    char *end = NULL;
    errno = 0;
    double d;
    if (to_int) {
        long long ll = strtoll(s, &end, 10);
        d = (double)ll;
    } else {
        d = strtod(s, &end);
    }
    if (errno != 0 || end == s) {
        return false;
    }
    while (isspace((unsigned char)*end)) {
        end++;
    }
    if (*end != '\0') {
        return false;
    }
    *out = d;
    return true;
}

static void format_number(char *buf, size_t len, double d, bool is_int)
{
    if (is_int) {
        snprintf(buf, len, "%.0f", d);
    } else {
        snprintf(buf, len, "%g", d);
    }
}

static void check_literal(gnode_t *gn, const graph_input_t *in, const cJSON *val)
{
    char *value_text = cJSON_PrintUnformatted(val);
    const char *vt = value_text != NULL ? value_text : "?";
    char *msg = NULL;
    char *det = NULL;
    switch (in->type) {
    case GRAPH_T_INT:
    case GRAPH_T_FLOAT: {
        bool is_int = in->type == GRAPH_T_INT;
        double d = 0;
        if (!coerce_number(val, is_int, &d)) {
            if (asprintf(&msg, "Failed to convert an input value to a %s value",
                         type_names[in->type]) < 0 ||
                asprintf(&det, "%s, %s, invalid literal", in->name, vt) < 0) {
                break;
            }
            add_received(node_error(gn, "invalid_input_type", in->name, msg, det), val);
            break;
        }
        char vbuf[64];
        char lbuf[64];
        format_number(vbuf, sizeof(vbuf), d, is_int);
        if (in->has_min && d < in->min) {
            format_number(lbuf, sizeof(lbuf), in->min, is_int);
            if (asprintf(&msg, "Value %s smaller than min of %s", vbuf, lbuf) < 0) {
                break;
            }
            add_received(node_error(gn, "value_smaller_than_min", in->name, msg, in->name), val);
        } else if (in->has_max && d > in->max) {
            format_number(lbuf, sizeof(lbuf), in->max, is_int);
            if (asprintf(&msg, "Value %s bigger than max of %s", vbuf, lbuf) < 0) {
                break;
            }
            add_received(node_error(gn, "value_bigger_than_max", in->name, msg, in->name), val);
        }
        break;
    }
    case GRAPH_T_STRING:
    case GRAPH_T_BOOLEAN:
        break; /* str() and bool() accept anything */
    case GRAPH_T_COMBO: {
        bool ok = false;
        if (cJSON_IsString(val)) {
            ok = in->choices == NULL;
            for (size_t i = 0; !ok && in->choices[i] != NULL; i++) {
                ok = strcmp(in->choices[i], val->valuestring) == 0;
            }
        }
        if (ok) {
            break;
        }
        /* details: "name: 'x' not in ['a', 'b']" (abbreviated past 20 entries) */
        size_t cap = 64 + strlen(in->name) + strlen(vt);
        size_t n = 0;
        for (; in->choices != NULL && in->choices[n] != NULL; n++) {
            cap += strlen(in->choices[n]) + 4;
        }
        det = malloc(cap + 16);
        if (det == NULL) {
            break;
        }
        const char *shown = cJSON_IsString(val) ? val->valuestring : vt;
        size_t pos = (size_t)snprintf(det, cap, "%s: '%s' not in [", in->name, shown);
        for (size_t i = 0; i < n; i++) {
            if (n > 20 && i == 10) {
                pos += (size_t)snprintf(det + pos, cap - pos, "..., ");
                i = n - 10;
            }
            pos += (size_t)snprintf(det + pos, cap - pos, "%s'%s'", i > 0 ? ", " : "",
                                    in->choices[i]);
        }
        snprintf(det + pos, cap - pos, "]");
        add_received(node_error(gn, "value_not_in_list", in->name, "Value not in list", det), val);
        break;
    }
    case GRAPH_T_IMAGE:
    case GRAPH_T_MASK:
        if (asprintf(&msg, "Input must be a link to a %s output", type_names[in->type]) < 0 ||
            asprintf(&det, "%s, %s", in->name, vt) < 0) {
            break;
        }
        add_received(node_error(gn, "invalid_input_type", in->name, msg, det), val);
        break;
    }
    free(msg);
    free(det);
    free(value_text);
}

static void check_link(gstate_t *st, gnode_t *gn, const graph_input_t *in, const cJSON *val)
{
    char *det = NULL;
    if (!graph_is_link(val)) {
        node_error(gn, "bad_linked_input", in->name,
                   "Bad linked input, must be a length-2 list of [node_id, slot_index]", in->name);
        return;
    }
    const char *src_id = cJSON_GetArrayItem(val, 0)->valuestring;
    /* Compared as a double: any whole number >= 0 is a link, and one past
     * INT_MAX would not survive a conversion to int. */
    double idx = cJSON_GetArrayItem(val, 1)->valuedouble;
    gnode_t *src = find_node(st, src_id);
    if (src == NULL) {
        if (asprintf(&det, "%s: node '%s' does not exist", in->name, src_id) >= 0) {
            node_error(gn, "bad_linked_input", in->name, "Linked node does not exist", det);
        }
        free(det);
        return;
    }
    if (idx >= (double)src->cls->noutputs) {
        if (asprintf(&det, "%s: node '%s' (%s) has no output %.0f", in->name, src_id,
                     src->cls->class_type, idx) >= 0) {
            node_error(gn, "bad_linked_input", in->name, "Linked output does not exist", det);
        }
        free(det);
        return;
    }
    graph_type_t got = src->cls->outputs[(size_t)idx];
    graph_type_t want = in->type;
    if (got != want) {
        if (asprintf(&det, "%s, received_type(%s) mismatch input_type(%s)", in->name,
                     type_names[got], type_names[want]) >= 0) {
            cJSON *extra = node_error(gn, "return_type_mismatch", in->name,
                                      "Return type mismatch between linked nodes", det);
            cJSON_AddStringToObject(extra, "received_type", type_names[got]);
            cJSON_AddStringToObject(extra, "input_type", type_names[want]);
        }
        free(det);
    }
}

static void check_inputs(gstate_t *st, gnode_t *gn)
{
    const graph_class_t *cls = gn->cls;
    for (size_t i = 0; i < cls->ninputs; i++) {
        const graph_input_t *in = &cls->inputs[i];
        const cJSON *val = cJSON_GetObjectItemCaseSensitive(gn->inputs, in->name);
        if (val == NULL || cJSON_IsNull(val)) {
            if (in->required) {
                node_error(gn, "required_input_missing", in->name, "Required input is missing",
                           in->name);
            }
            continue;
        }
        if (cJSON_IsArray(val)) {
            check_link(st, gn, in, val);
        } else {
            check_literal(gn, in, val);
        }
    }
}

/* Depth-first search along links; nodes on the stack when met again are in a cycle. */
static void find_cycles(gstate_t *st, gnode_t *gn, gnode_t **stack, size_t depth)
{
    gn->color = 1;
    stack[depth] = gn;
    const cJSON *val = NULL;
    cJSON_ArrayForEach(val, gn->inputs)
    {
        if (!graph_is_link(val)) {
            continue;
        }
        gnode_t *src = find_node(st, cJSON_GetArrayItem(val, 0)->valuestring);
        if (src == NULL) {
            continue;
        }
        if (src->color == 1) {
            for (size_t k = depth + 1; k-- > 0;) {
                stack[k]->in_cycle = true;
                if (stack[k] == src) {
                    break;
                }
            }
        } else if (src->color == 0) {
            find_cycles(st, src, stack, depth + 1);
        }
    }
    gn->color = 2;
}

static void mark_upstream(gstate_t *st, gnode_t *gn)
{
    if (gn->reached) {
        return;
    }
    gn->reached = true;
    const cJSON *val = NULL;
    cJSON_ArrayForEach(val, gn->inputs)
    {
        if (graph_is_link(val)) {
            gnode_t *src = find_node(st, cJSON_GetArrayItem(val, 0)->valuestring);
            if (src != NULL) {
                mark_upstream(st, src);
            }
        }
    }
}

static void free_state(gstate_t *st)
{
    for (size_t i = 0; i < st->n; i++) {
        cJSON_Delete(st->nodes[i].errors);
    }
    free(st->nodes);
}

graph_status_t graph_validate(const cJSON *prompt, const graph_registry_t *reg, cJSON **error_out)
{
    *error_out = NULL;
    char *det = NULL;
    char *msg = NULL;
    if (!cJSON_IsObject(prompt) || prompt->child == NULL) {
        *error_out = prompt_error("invalid_prompt", "Prompt is not a non-empty object of nodes", "");
        return GRAPH_INVALID;
    }
    gstate_t st = {0};
    size_t count = (size_t)cJSON_GetArraySize(prompt);
    if (count > GRAPH_MAX_NODES) {
        *error_out = prompt_error("invalid_prompt", "Prompt has too many nodes", "");
        return GRAPH_INVALID;
    }
    st.nodes = calloc(count, sizeof(*st.nodes));
    if (st.nodes == NULL) {
        *error_out = prompt_error("invalid_prompt", "Out of memory", "");
        return GRAPH_INVALID;
    }
    graph_status_t status = GRAPH_INVALID;
    const cJSON *node = NULL;
    cJSON_ArrayForEach(node, prompt)
    {
        gnode_t *gn = &st.nodes[st.n++];
        gn->id = node->string;
        gn->node = node;
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(node, "class_type");
        if (!cJSON_IsObject(node) || !cJSON_IsString(ct)) {
            if (asprintf(&det, "Node ID '#%s'", gn->id) >= 0) {
                *error_out = prompt_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.", det);
            }
            goto out;
        }
        gn->inputs = cJSON_GetObjectItemCaseSensitive(node, "inputs");
        if (gn->inputs != NULL && !cJSON_IsObject(gn->inputs)) {
            if (asprintf(&det, "Node ID '#%s': inputs must be an object", gn->id) >= 0) {
                *error_out = prompt_error("invalid_prompt", "Node inputs are malformed.", det);
            }
            goto out;
        }
        gn->cls = graph_registry_find(reg, ct->valuestring);
        if (gn->cls == NULL) {
            if (asprintf(&msg, "Cannot execute because node %s does not exist.", ct->valuestring) <
                    0 ||
                asprintf(&det, "Node ID '#%s'", gn->id) < 0) {
                goto out;
            }
            *error_out = prompt_error("invalid_prompt", msg, det);
            cJSON *extra = cJSON_GetObjectItem(cJSON_GetObjectItem(*error_out, "error"), "extra_info");
            cJSON_AddStringToObject(extra, "node_id", gn->id);
            cJSON_AddStringToObject(extra, "class_type", ct->valuestring);
            status = GRAPH_UNKNOWN_CLASS;
            goto out;
        }
    }
    bool has_output = false;
    for (size_t i = 0; i < st.n; i++) {
        has_output = has_output || st.nodes[i].cls->output_node;
    }
    if (!has_output) {
        *error_out = prompt_error("prompt_no_outputs", "Prompt has no outputs", "");
        goto out;
    }
    for (size_t i = 0; i < st.n; i++) {
        check_inputs(&st, &st.nodes[i]);
    }
    gnode_t **stack = calloc(st.n + 1, sizeof(*stack));
    if (stack == NULL) {
        goto out;
    }
    for (size_t i = 0; i < st.n; i++) {
        if (st.nodes[i].color == 0) {
            find_cycles(&st, &st.nodes[i], stack, 0);
        }
    }
    free(stack);
    bool failed = false;
    for (size_t i = 0; i < st.n; i++) {
        if (st.nodes[i].in_cycle) {
            node_error(&st.nodes[i], "dependency_cycle", NULL, "Dependency cycle detected",
                       st.nodes[i].id);
        }
        failed = failed || st.nodes[i].errors != NULL;
    }
    if (!failed) {
        status = GRAPH_OK;
        goto out;
    }

    /* Build the ComfyUI-shaped failure. */
    cJSON *root = prompt_error("prompt_outputs_failed_validation", "Prompt outputs failed validation",
                               "");
    cJSON *node_errors = cJSON_GetObjectItem(root, "node_errors");
    size_t dcap = 1;
    for (size_t i = 0; i < st.n; i++) {
        gnode_t *gn = &st.nodes[i];
        if (gn->errors == NULL) {
            continue;
        }
        cJSON *ne = cJSON_AddObjectToObject(node_errors, gn->id);
        cJSON *e = NULL;
        cJSON_ArrayForEach(e, gn->errors)
        {
            dcap += strlen(cJSON_GetObjectItem(e, "message")->valuestring) +
                    strlen(cJSON_GetObjectItem(e, "details")->valuestring) + 4;
        }
        cJSON_AddItemToObject(ne, "errors", gn->errors);
        gn->errors = NULL;
        cJSON *deps = cJSON_AddArrayToObject(ne, "dependent_outputs");
        for (size_t o = 0; o < st.n; o++) {
            if (!st.nodes[o].cls->output_node) {
                continue;
            }
            for (size_t k = 0; k < st.n; k++) {
                st.nodes[k].reached = false;
            }
            mark_upstream(&st, &st.nodes[o]);
            if (gn->reached) {
                cJSON_AddItemToArray(deps, cJSON_CreateString(st.nodes[o].id));
            }
        }
        cJSON_AddStringToObject(ne, "class_type", gn->cls->class_type);
    }
    /* details: newline-joined "message: details" lines, as ComfyUI does. */
    char *details = calloc(1, dcap);
    if (details != NULL) {
        size_t pos = 0;
        cJSON *ne = NULL;
        cJSON_ArrayForEach(ne, node_errors)
        {
            cJSON *e = NULL;
            cJSON_ArrayForEach(e, cJSON_GetObjectItem(ne, "errors"))
            {
                pos += (size_t)snprintf(details + pos, dcap - pos, "%s%s: %s", pos > 0 ? "\n" : "",
                                        cJSON_GetObjectItem(e, "message")->valuestring,
                                        cJSON_GetObjectItem(e, "details")->valuestring);
            }
        }
        cJSON_ReplaceItemInObject(cJSON_GetObjectItem(root, "error"), "details",
                                  cJSON_CreateString(details));
        free(details);
    }
    *error_out = root;
    status = GRAPH_INVALID;
out:
    if (status != GRAPH_OK && *error_out == NULL) {
        *error_out = prompt_error("invalid_prompt", "Out of memory", "");
    }
    free(msg);
    free(det);
    free_state(&st);
    return status;
}

char *graph_error_summary(const cJSON *error)
{
    const cJSON *pe = cJSON_GetObjectItemCaseSensitive(error, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(pe, "message");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(pe, "details");
    const char *ms = cJSON_IsString(m) ? m->valuestring : "invalid graph";
    const char *ds = cJSON_IsString(d) ? d->valuestring : "";
    char *out = NULL;
    const cJSON *node_errors = cJSON_GetObjectItemCaseSensitive(error, "node_errors");
    if (node_errors != NULL && node_errors->child != NULL) {
        /* "Prompt outputs failed validation: node 2 (ImageBlur): Value 0 smaller than min of 1: blur_radius; ..." */
        size_t cap = strlen(ms) + 8;
        const cJSON *ne = NULL;
        cJSON_ArrayForEach(ne, node_errors)
        {
            const cJSON *e = NULL;
            cJSON_ArrayForEach(e, cJSON_GetObjectItem(ne, "errors"))
            {
                cap += strlen(ne->string) + 64 +
                       strlen(cJSON_GetObjectItem(ne, "class_type")->valuestring) +
                       strlen(cJSON_GetObjectItem(e, "message")->valuestring) +
                       strlen(cJSON_GetObjectItem(e, "details")->valuestring);
            }
        }
        out = malloc(cap);
        if (out == NULL) {
            return NULL;
        }
        size_t pos = (size_t)snprintf(out, cap, "%s", ms);
        const char *sep = ": ";
        cJSON_ArrayForEach(ne, node_errors)
        {
            const cJSON *e = NULL;
            cJSON_ArrayForEach(e, cJSON_GetObjectItem(ne, "errors"))
            {
                pos += (size_t)snprintf(out + pos, cap - pos, "%snode %s (%s): %s: %s", sep,
                                        ne->string,
                                        cJSON_GetObjectItem(ne, "class_type")->valuestring,
                                        cJSON_GetObjectItem(e, "message")->valuestring,
                                        cJSON_GetObjectItem(e, "details")->valuestring);
                sep = "; ";
            }
        }
        return out;
    }
    if (asprintf(&out, "%s%s%s", ms, ds[0] != '\0' ? ": " : "", ds) < 0) {
        return NULL;
    }
    return out;
}
