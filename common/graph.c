/*
 * graph — ComfyUI API-format workflow validation. See graph.h.
 *
 * Messages follow ComfyUI's execution.py (validate_inputs / validate_prompt).
 * Departures: every node is checked (ComfyUI checks only nodes reachable from
 * an output), any node error fails the whole prompt (ComfyUI drops only the
 * failing outputs), cycles are reported at validation time (ComfyUI finds them
 * when executing), and a literal on an IMAGE/MASK input is an error here.
 *
 * Work is linear in the prompt: node ids are looked up in an open-addressing
 * hash index; the links are resolved once into an edge list; one iterative
 * Tarjan pass finds the cycles and orders the nodes (producers before their
 * consumers), which the dependent_outputs lists (bounded) and the work budget
 * follow. Nothing recurses on the graph's depth.
 */
#define _GNU_SOURCE
#include "graph.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
    cJSON *errors;     /* array, NULL until the first error */
    size_t first_edge; /* its links to existing nodes: st->edges[first_edge..+nedges] */
    size_t nedges;
    size_t component; /* strongly connected component, numbered producers first */
    bool in_cycle;
    bool has_size; /* work budget: it makes an image of `size` */
    graph_size_t size;
} gnode_t;

typedef struct {
    gnode_t *nodes;
    size_t n;
    size_t *slots; /* hash index: node index + 1, 0 = empty; nslots a power of two */
    size_t nslots;
    size_t *edges; /* node indices */
    size_t nedges;
    size_t *order;           /* node indices grouped by component, in component order */
    size_t *component_first; /* ncomponents + 1 offsets into order */
    size_t ncomponents;
    unsigned long steps;
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

/* FNV-1a. */
static size_t hash_id(const char *id)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return (size_t)h;
}

static gnode_t *find_node(gstate_t *st, const char *id)
{
    size_t mask = st->nslots - 1;
    for (size_t s = hash_id(id) & mask;; s = (s + 1) & mask) {
        st->steps++;
        if (st->slots[s] == 0) {
            return NULL;
        }
        gnode_t *gn = &st->nodes[st->slots[s] - 1];
        if (strcmp(gn->id, id) == 0) {
            return gn;
        }
    }
}

/* Indexes the nodes by id; a repeated id keeps its first node (as cJSON's lookup does). */
static int index_nodes(gstate_t *st)
{
    st->nslots = 16;
    while (st->nslots < 2 * st->n) {
        st->nslots *= 2;
    }
    st->slots = calloc(st->nslots, sizeof(*st->slots));
    if (st->slots == NULL) {
        return -1;
    }
    size_t mask = st->nslots - 1;
    for (size_t i = 0; i < st->n; i++) {
        for (size_t s = hash_id(st->nodes[i].id) & mask;; s = (s + 1) & mask) {
            st->steps++;
            if (st->slots[s] == 0) {
                st->slots[s] = i + 1;
                break;
            }
            if (strcmp(st->nodes[st->slots[s] - 1].id, st->nodes[i].id) == 0) {
                break;
            }
        }
    }
    return 0;
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

/* The value as compact JSON, for an error message; "?" when out of memory. */
static const char *value_text(const cJSON *val, char **text)
{
    if (*text == NULL) {
        *text = cJSON_PrintUnformatted(val);
    }
    return *text != NULL ? *text : "?";
}

static void check_literal(gnode_t *gn, const graph_input_t *in, const cJSON *val)
{
    char *text = NULL; /* made only for an error */
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
                asprintf(&det, "%s, %s, invalid literal", in->name, value_text(val, &text)) < 0) {
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
        const char *vt = value_text(val, &text);
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
            pos +=
                (size_t)snprintf(det + pos, cap - pos, "%s'%s'", i > 0 ? ", " : "", in->choices[i]);
        }
        snprintf(det + pos, cap - pos, "]");
        add_received(node_error(gn, "value_not_in_list", in->name, "Value not in list", det), val);
        break;
    }
    case GRAPH_T_IMAGE:
    case GRAPH_T_MASK:
        if (asprintf(&msg, "Input must be a link to a %s output", type_names[in->type]) < 0 ||
            asprintf(&det, "%s, %s", in->name, value_text(val, &text)) < 0) {
            break;
        }
        add_received(node_error(gn, "invalid_input_type", in->name, msg, det), val);
        break;
    }
    free(msg);
    free(det);
    free(text);
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
        st->steps++;
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

/* The source node of input value `val` when it is a link to an existing node. */
static gnode_t *link_source(gstate_t *st, const cJSON *val)
{
    if (!graph_is_link(val)) {
        return NULL;
    }
    return find_node(st, cJSON_GetArrayItem(val, 0)->valuestring);
}

/* Resolves every link (declared input or not, as ComfyUI follows them) once. */
static int build_edges(gstate_t *st)
{
    size_t total = 0;
    for (size_t i = 0; i < st->n; i++) {
        const cJSON *val = NULL;
        cJSON_ArrayForEach(val, st->nodes[i].inputs)
        {
            st->steps++;
            total += cJSON_IsArray(val) ? 1 : 0;
        }
    }
    st->edges = calloc(total + 1, sizeof(*st->edges));
    if (st->edges == NULL) {
        return -1;
    }
    for (size_t i = 0; i < st->n; i++) {
        gnode_t *gn = &st->nodes[i];
        gn->first_edge = st->nedges;
        const cJSON *val = NULL;
        cJSON_ArrayForEach(val, gn->inputs)
        {
            st->steps++;
            gnode_t *src = link_source(st, val);
            if (src != NULL) {
                st->edges[st->nedges++] = (size_t)(src - st->nodes);
            }
        }
        gn->nedges = st->nedges - gn->first_edge;
    }
    return 0;
}

/*
 * Tarjan's strongly connected components, iterative. Edges go from a node to
 * the nodes it reads, so a component is numbered after every component it
 * reads from: producers first. A node is in a cycle when its component has
 * more than one node or it links to itself.
 */
static int find_components(gstate_t *st)
{
    size_t n = st->n;
    size_t *number = calloc(n, sizeof(*number)); /* visit number + 1; 0 = unvisited */
    size_t *low = calloc(n, sizeof(*low));
    size_t *next_edge = calloc(n, sizeof(*next_edge));
    size_t *path = calloc(n, sizeof(*path));   /* the depth-first path */
    size_t *stack = calloc(n, sizeof(*stack)); /* Tarjan's stack */
    bool *on_stack = calloc(n, sizeof(*on_stack));
    st->order = calloc(n, sizeof(*st->order));
    st->component_first = calloc(n + 1, sizeof(*st->component_first));
    int rc = -1;
    if (number == NULL || low == NULL || next_edge == NULL || path == NULL || stack == NULL ||
        on_stack == NULL || st->order == NULL || st->component_first == NULL) {
        goto out;
    }
    size_t visits = 0, depth = 0, top = 0, ordered = 0;
    for (size_t root = 0; root < n; root++) {
        if (number[root] != 0) {
            continue;
        }
        number[root] = low[root] = ++visits;
        stack[top++] = root;
        on_stack[root] = true;
        path[depth++] = root;
        while (depth > 0) {
            size_t v = path[depth - 1];
            gnode_t *gv = &st->nodes[v];
            st->steps++;
            if (next_edge[v] < gv->nedges) {
                size_t w = st->edges[gv->first_edge + next_edge[v]++];
                if (w == v) {
                    gv->in_cycle = true;
                }
                if (number[w] == 0) {
                    number[w] = low[w] = ++visits;
                    stack[top++] = w;
                    on_stack[w] = true;
                    path[depth++] = w;
                } else if (on_stack[w] && number[w] < low[v]) {
                    low[v] = number[w];
                }
                continue;
            }
            depth--;
            if (depth > 0 && low[v] < low[path[depth - 1]]) {
                low[path[depth - 1]] = low[v];
            }
            if (low[v] != number[v]) {
                continue;
            }
            size_t c = st->ncomponents++;
            st->component_first[c] = ordered;
            size_t w;
            do {
                w = stack[--top];
                on_stack[w] = false;
                st->nodes[w].component = c;
                st->order[ordered++] = w;
                st->steps++;
            } while (w != v);
            if (ordered - st->component_first[c] > 1) {
                for (size_t k = st->component_first[c]; k < ordered; k++) {
                    st->nodes[st->order[k]].in_cycle = true;
                }
            }
        }
    }
    st->component_first[st->ncomponents] = ordered;
    rc = 0;
out:
    free(number);
    free(low);
    free(next_edge);
    free(path);
    free(stack);
    free(on_stack);
    return rc;
}

/* dst := the first GRAPH_MAX_DEPENDENT_OUTPUTS of dst ∪ src (sorted node indices). */
static void merge_outputs(size_t *dst, size_t *ndst, const size_t *src, size_t nsrc)
{
    size_t merged[GRAPH_MAX_DEPENDENT_OUTPUTS];
    size_t i = 0, j = 0, m = 0;
    while (m < GRAPH_MAX_DEPENDENT_OUTPUTS && (i < *ndst || j < nsrc)) {
        size_t next;
        if (j >= nsrc || (i < *ndst && dst[i] <= src[j])) {
            next = dst[i++];
        } else {
            next = src[j++];
        }
        if (m == 0 || merged[m - 1] != next) {
            merged[m++] = next;
        }
    }
    memcpy(dst, merged, m * sizeof(*dst));
    *ndst = m;
}

/*
 * The outputs each component feeds (the first GRAPH_MAX_DEPENDENT_OUTPUTS,
 * in prompt order): consumers before producers, each component passes its
 * list to the components it reads from. O(edges × the list bound).
 * Returns ncomponents lists of GRAPH_MAX_DEPENDENT_OUTPUTS (caller frees both).
 */
static int dependent_outputs(gstate_t *st, size_t **lists_out, size_t **counts_out)
{
    size_t *lists = calloc(st->ncomponents * GRAPH_MAX_DEPENDENT_OUTPUTS + 1, sizeof(*lists));
    size_t *counts = calloc(st->ncomponents + 1, sizeof(*counts));
    if (lists == NULL || counts == NULL) {
        free(lists);
        free(counts);
        return -1;
    }
    for (size_t c = st->ncomponents; c-- > 0;) {
        size_t *list = &lists[c * GRAPH_MAX_DEPENDENT_OUTPUTS];
        for (size_t k = st->component_first[c]; k < st->component_first[c + 1]; k++) {
            size_t v = st->order[k];
            st->steps++;
            if (st->nodes[v].cls->output_node) {
                merge_outputs(list, &counts[c], &v, 1);
            }
        }
        for (size_t k = st->component_first[c]; k < st->component_first[c + 1]; k++) {
            const gnode_t *gv = &st->nodes[st->order[k]];
            for (size_t e = 0; e < gv->nedges; e++) {
                size_t p = st->nodes[st->edges[gv->first_edge + e]].component;
                st->steps++;
                if (p != c) {
                    merge_outputs(&lists[p * GRAPH_MAX_DEPENDENT_OUTPUTS], &counts[p], list,
                                  counts[c]);
                }
            }
        }
    }
    *lists_out = lists;
    *counts_out = counts;
    return 0;
}

static void free_state(gstate_t *st)
{
    for (size_t i = 0; i < st->n; i++) {
        cJSON_Delete(st->nodes[i].errors);
    }
    free(st->nodes);
    free(st->slots);
    free(st->edges);
    free(st->order);
    free(st->component_first);
}

/* The size of the image on the first IMAGE input of `gn` (NULL when none). */
static const graph_size_t *first_image_size(gstate_t *st, const gnode_t *gn)
{
    for (size_t i = 0; i < gn->cls->ninputs; i++) {
        const graph_input_t *in = &gn->cls->inputs[i];
        st->steps++;
        if (in->type != GRAPH_T_IMAGE) {
            continue;
        }
        const gnode_t *src =
            link_source(st, cJSON_GetObjectItemCaseSensitive(gn->inputs, in->name));
        return src != NULL && src->has_size ? &src->size : NULL;
    }
    return NULL;
}

/* The work budget of a valid prompt without cycles. Returns the error, or NULL. */
static cJSON *check_budget(gstate_t *st, const graph_registry_t *reg)
{
    double total = 0;
    char *det = NULL;
    cJSON *error = NULL;
    for (size_t k = 0; k < st->n; k++) {
        gnode_t *gn = &st->nodes[st->order[k]];
        const graph_size_t *in = first_image_size(st, gn);
        graph_size_t out = {0, 0, 1};
        if (!reg->size(gn->cls->class_type, gn->inputs, in, &out)) {
            continue;
        }
        gn->has_size = true;
        gn->size = out;
        double pixels = out.width * out.height * out.batch;
        total += pixels;
        int rc = 0;
        if (!(pixels <= GRAPH_MAX_IMAGE_PIXELS)) {
            rc = asprintf(&det,
                          "Node ID '#%s' (%s) makes %.0fx%.0f images (batch %.0f): at most %.0f "
                          "pixels an image",
                          gn->id, gn->cls->class_type, out.width, out.height, out.batch,
                          GRAPH_MAX_IMAGE_PIXELS);
        } else if (!(total <= GRAPH_MAX_WORK_PIXELS)) {
            rc = asprintf(&det,
                          "Node ID '#%s' (%s) brings the pixels the prompt makes over %.0f, the "
                          "most it may make",
                          gn->id, gn->cls->class_type, GRAPH_MAX_WORK_PIXELS);
        } else {
            continue;
        }
        if (rc >= 0) {
            error = prompt_error("graph_too_expensive", "Prompt is over the work budget", det);
            cJSON *extra = cJSON_GetObjectItem(cJSON_GetObjectItem(error, "error"), "extra_info");
            cJSON_AddStringToObject(extra, "node_id", gn->id);
            cJSON_AddStringToObject(extra, "class_type", gn->cls->class_type);
        } else {
            error = prompt_error("graph_too_expensive", "Prompt is over the work budget", "");
        }
        free(det);
        return error;
    }
    return NULL;
}

/* The ComfyUI-shaped failure from the nodes' errors (takes them). */
static cJSON *node_errors_body(gstate_t *st)
{
    size_t *lists = NULL;
    size_t *counts = NULL;
    if (dependent_outputs(st, &lists, &counts) != 0) {
        return NULL;
    }
    cJSON *root =
        prompt_error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "");
    cJSON *node_errors = cJSON_GetObjectItem(root, "node_errors");
    size_t dcap = 1;
    for (size_t i = 0; i < st->n; i++) {
        gnode_t *gn = &st->nodes[i];
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
        const size_t *list = &lists[gn->component * GRAPH_MAX_DEPENDENT_OUTPUTS];
        for (size_t k = 0; k < counts[gn->component]; k++) {
            st->steps++;
            cJSON_AddItemToArray(deps, cJSON_CreateString(st->nodes[list[k]].id));
        }
        cJSON_AddStringToObject(ne, "class_type", gn->cls->class_type);
    }
    free(lists);
    free(counts);
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
    return root;
}

graph_status_t graph_validate(const cJSON *prompt, const graph_registry_t *reg, cJSON **error_out)
{
    return graph_validate_stats(prompt, reg, NULL, error_out);
}

graph_status_t graph_validate_stats(const cJSON *prompt, const graph_registry_t *reg,
                                    graph_stats_t *stats, cJSON **error_out)
{
    *error_out = NULL;
    char *det = NULL;
    char *msg = NULL;
    gstate_t st = {0};
    graph_status_t status = GRAPH_INVALID;
    if (!cJSON_IsObject(prompt) || prompt->child == NULL) {
        *error_out =
            prompt_error("invalid_prompt", "Prompt is not a non-empty object of nodes", "");
        goto out;
    }
    size_t count = 0;
    const cJSON *node = NULL;
    cJSON_ArrayForEach(node, prompt)
    {
        st.steps++;
        if (++count > GRAPH_MAX_NODES) {
            break;
        }
    }
    if (count > GRAPH_MAX_NODES) {
        if (asprintf(&det, "at most %d nodes", GRAPH_MAX_NODES) >= 0) {
            *error_out = prompt_error("graph_too_large", "Prompt has too many nodes", det);
        }
        goto out;
    }
    st.nodes = calloc(count, sizeof(*st.nodes));
    if (st.nodes == NULL) {
        goto out;
    }
    cJSON_ArrayForEach(node, prompt)
    {
        st.steps++;
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
            cJSON *extra =
                cJSON_GetObjectItem(cJSON_GetObjectItem(*error_out, "error"), "extra_info");
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
    if (index_nodes(&st) != 0) {
        goto out;
    }
    for (size_t i = 0; i < st.n; i++) {
        check_inputs(&st, &st.nodes[i]);
    }
    if (build_edges(&st) != 0 || find_components(&st) != 0) {
        goto out;
    }
    bool failed = false;
    for (size_t i = 0; i < st.n; i++) {
        if (st.nodes[i].in_cycle) {
            node_error(&st.nodes[i], "dependency_cycle", NULL, "Dependency cycle detected",
                       st.nodes[i].id);
        }
        failed = failed || st.nodes[i].errors != NULL;
    }
    if (failed) {
        *error_out = node_errors_body(&st);
        goto out;
    }
    if (reg->size != NULL) {
        *error_out = check_budget(&st, reg);
        if (*error_out != NULL) {
            goto out;
        }
    }
    status = GRAPH_OK;
out:
    if (status != GRAPH_OK && *error_out == NULL) {
        *error_out = prompt_error("invalid_prompt", "Out of memory", "");
    }
    if (stats != NULL) {
        stats->steps = st.steps;
    }
    free(msg);
    free(det);
    free_state(&st);
    return status;
}

/* ---- user presets ---- */

bool graph_string_addresses_folder(const char *s)
{
    static const char *const tags[] = {"[input]", "[output]", "[temp]"};
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) {
        n--;
    }
    for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
        size_t t = strlen(tags[i]);
        if (n >= t && strncasecmp(s + n - t, tags[i], t) == 0) {
            return true;
        }
    }
    return false;
}

/* A plain file name: GRAPH_USER_NAME_MAX bytes at most of [A-Za-z0-9 _.-],
 * starting with a letter or digit, no "..". Empty is allowed (it names nothing). */
static bool plain_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0) {
        return true;
    }
    if (n > GRAPH_USER_NAME_MAX || !isalnum((unsigned char)s[0]) || strstr(s, "..") != NULL) {
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

static const graph_input_t *class_input(const graph_class_t *cls, const char *name)
{
    for (size_t i = 0; i < cls->ninputs; i++) {
        if (strcmp(cls->inputs[i].name, name) == 0) {
            return &cls->inputs[i];
        }
    }
    return NULL;
}

/* Whether an input's value is read as a file name by ComfyUI. */
static bool names_file(const graph_input_t *in, const char *name)
{
    return strcmp(name, "filename_prefix") == 0 ||
           (in != NULL && in->type == GRAPH_T_COMBO && in->choices == NULL);
}

/* The error of a refused input (new object). */
static cJSON *input_not_allowed(const char *node_id, const char *class_type, const char *input,
                                const cJSON *val, const char *why)
{
    char *msg = NULL;
    char *det = NULL;
    cJSON *root = NULL;
    if (asprintf(&msg, "Input %s of node %s may not name a file on the image server", input,
                 node_id) < 0) {
        msg = NULL;
        goto out;
    }
    if (asprintf(&det, "%s: %s", input, why) < 0) {
        det = NULL;
        goto out;
    }
    root = prompt_error("input_not_allowed", msg, det);
    cJSON *ne = cJSON_AddObjectToObject(cJSON_GetObjectItem(root, "node_errors"), node_id);
    cJSON *errors = cJSON_AddArrayToObject(ne, "errors");
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "type", "input_not_allowed");
    cJSON_AddStringToObject(e, "message", "Input may not name a file on the image server");
    cJSON_AddStringToObject(e, "details", det);
    cJSON *extra = cJSON_AddObjectToObject(e, "extra_info");
    cJSON_AddStringToObject(extra, "input_name", input);
    add_received(extra, val);
    cJSON_AddItemToArray(errors, e);
    cJSON_AddArrayToObject(ne, "dependent_outputs");
    cJSON_AddStringToObject(ne, "class_type", class_type);
out:
    free(msg);
    free(det);
    return root;
}

graph_status_t graph_validate_user(const cJSON *prompt, const graph_registry_t *reg,
                                   cJSON **error_out)
{
    graph_status_t st = graph_validate(prompt, reg, error_out);
    if (st == GRAPH_UNKNOWN_CLASS) {
        /* graph_validate named the first unknown node in extra_info. */
        cJSON *err = cJSON_GetObjectItem(*error_out, "error");
        const char *ct = cJSON_GetStringValue(
            cJSON_GetObjectItem(cJSON_GetObjectItem(err, "extra_info"), "class_type"));
        char *msg = NULL;
        if (asprintf(&msg, "Node type %s is not one the product runs for user presets",
                     ct != NULL ? ct : "?") >= 0) {
            cJSON_ReplaceItemInObject(err, "message", cJSON_CreateString(msg));
            free(msg);
        }
        cJSON_ReplaceItemInObject(err, "type", cJSON_CreateString("node_not_allowed"));
        return GRAPH_INVALID;
    }
    if (st != GRAPH_OK) {
        return st;
    }
    const cJSON *node = NULL;
    cJSON_ArrayForEach(node, prompt)
    {
        const char *ct = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(node, "class_type"));
        const graph_class_t *cls = graph_registry_find(reg, ct);
        const cJSON *val = NULL;
        cJSON_ArrayForEach(val, cJSON_GetObjectItemCaseSensitive(node, "inputs"))
        {
            if (!cJSON_IsString(val)) {
                continue;
            }
            const char *why = NULL;
            if (graph_string_addresses_folder(val->valuestring)) {
                why = "an [input], [output] or [temp] file name";
            } else if (names_file(class_input(cls, val->string), val->string) &&
                       !plain_name(val->valuestring)) {
                why = "must be a plain name (letters, digits, space, _ - ., no folders)";
            }
            if (why != NULL) {
                *error_out = input_not_allowed(node->string, ct, val->string, val, why);
                if (*error_out == NULL) {
                    *error_out = prompt_error("invalid_prompt", "Out of memory", "");
                }
                return GRAPH_INVALID;
            }
        }
    }
    return GRAPH_OK;
}

bool graph_input_number(const cJSON *inputs, const char *name, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(inputs, name);
    return v != NULL && coerce_number(v, false, out);
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
        /* "Prompt outputs failed validation: node 2 (ImageBlur): Value 0 smaller than min of 1:
         * blur_radius; ..." */
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
                pos +=
                    (size_t)snprintf(out + pos, cap - pos, "%snode %s (%s): %s: %s", sep,
                                     ne->string, cJSON_GetObjectItem(ne, "class_type")->valuestring,
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
