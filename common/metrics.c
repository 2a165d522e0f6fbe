/*
 * metrics — see metrics.h.
 *
 * One process-wide registry guarded by one mutex. Metrics are kept in
 * registration order and their series in first-use order, so the rendered
 * text is stable (tests compare it exactly).
 */
#include "metrics.h"

#include "jbuf.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_MAX_SERIES 1000
#define METRICS_MAX_LABELS 16
#define METRICS_DROPPED_NAME "ca_metrics_dropped_total"

typedef enum {
    METRIC_COUNTER,
    METRIC_GAUGE,
    METRIC_HISTOGRAM,
} metric_type_t;

typedef struct series {
    uint64_t hash;
    char **values;           /* nlabels copies */
    double value;            /* counter, gauge */
    uint64_t *bucket_counts; /* histogram: per bucket, not cumulative */
    uint64_t count;          /* histogram */
    double sum;              /* histogram */
} series_t;

struct metric {
    char *name;
    char *help;
    metric_type_t type;
    char **label_names;
    size_t nlabels;
    double *buckets;
    size_t nbuckets;
    series_t *series;
    size_t nseries;
    size_t cap_series;
    struct metric *next;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static metric_t *registry_head;
static metric_t *registry_tail;

static const double default_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,   1.0,  2.5,   5.0,  10.0};

/* ---- small helpers ---- */

static bool valid_metric_name(const char *name)
{
    if (name == NULL || name[0] == '\0') {
        return false;
    }
    for (size_t i = 0; name[i] != '\0'; i++) {
        char c = name[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        bool digit = c >= '0' && c <= '9';
        if (!alpha && !(digit && i > 0)) {
            return false;
        }
    }
    return true;
}

static bool valid_label_name(const char *name, size_t len)
{
    if (len == 0) {
        return false;
    }
    if (len >= 2 && name[0] == '_' && name[1] == '_') {
        return false; /* reserved */
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        bool digit = c >= '0' && c <= '9';
        if (!alpha && !(digit && i > 0)) {
            return false;
        }
    }
    return true;
}

static void free_strings(char **v, size_t n)
{
    if (v == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

/* Splits "a,b,c" into copies. Returns 0 or -1 (invalid name, too many). */
static int parse_label_names(const char *labels, char ***out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (labels == NULL || labels[0] == '\0') {
        return 0;
    }
    char **names = calloc(METRICS_MAX_LABELS, sizeof(*names));
    if (names == NULL) {
        return -1;
    }
    size_t n = 0;
    const char *p = labels;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        if (n == METRICS_MAX_LABELS || !valid_label_name(p, len)) {
            free_strings(names, n);
            return -1;
        }
        names[n] = strndup(p, len);
        if (names[n] == NULL) {
            free_strings(names, n);
            return -1;
        }
        n++;
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n; j++) {
            if (strcmp(names[i], names[j]) == 0) {
                free_strings(names, n);
                return -1;
            }
        }
    }
    *out = names;
    *nout = n;
    return 0;
}

static void metric_free(metric_t *m)
{
    for (size_t i = 0; i < m->nseries; i++) {
        free_strings(m->series[i].values, m->nlabels);
        free(m->series[i].bucket_counts);
    }
    free(m->series);
    free_strings(m->label_names, m->nlabels);
    free(m->buckets);
    free(m->name);
    free(m->help);
    free(m);
}

static metric_t *find_locked(const char *name)
{
    for (metric_t *m = registry_head; m != NULL; m = m->next) {
        if (strcmp(m->name, name) == 0) {
            return m;
        }
    }
    return NULL;
}

static uint64_t hash_values(const char *const *values, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p != '\0'; p++) {
            h ^= *p;
            h *= 1099511628211ULL;
        }
        h ^= 0xff; /* separator: ("ab","") differs from ("a","b") */
        h *= 1099511628211ULL;
    }
    return h;
}

static metric_t *dropped_metric_locked(void);

/* Finds or creates the series for `values`. NULL when the metric is full
 * (the drop is counted) or memory ran out. */
static series_t *series_get_locked(metric_t *m, const char *const *values)
{
    uint64_t h = hash_values(values, m->nlabels);
    for (size_t i = 0; i < m->nseries; i++) {
        series_t *s = &m->series[i];
        if (s->hash != h) {
            continue;
        }
        bool same = true;
        for (size_t j = 0; j < m->nlabels; j++) {
            if (strcmp(s->values[j], values[j]) != 0) {
                same = false;
                break;
            }
        }
        if (same) {
            return s;
        }
    }
    if (m->nseries >= METRICS_MAX_SERIES) {
        metric_t *dropped = dropped_metric_locked();
        if (dropped != NULL && dropped != m) {
            const char *name = m->name;
            series_t *ds = series_get_locked(dropped, &name);
            if (ds != NULL) {
                ds->value += 1;
            }
        }
        return NULL;
    }
    if (m->nseries == m->cap_series) {
        size_t ncap = m->cap_series == 0 ? 4 : m->cap_series * 2;
        series_t *grown = realloc(m->series, ncap * sizeof(*grown));
        if (grown == NULL) {
            return NULL;
        }
        m->series = grown;
        m->cap_series = ncap;
    }
    series_t s;
    memset(&s, 0, sizeof(s));
    s.hash = h;
    if (m->nlabels > 0) {
        s.values = calloc(m->nlabels, sizeof(*s.values));
        if (s.values == NULL) {
            return NULL;
        }
        for (size_t j = 0; j < m->nlabels; j++) {
            s.values[j] = strdup(values[j]);
            if (s.values[j] == NULL) {
                free_strings(s.values, m->nlabels);
                return NULL;
            }
        }
    }
    if (m->type == METRIC_HISTOGRAM) {
        s.bucket_counts = calloc(m->nbuckets + 1, sizeof(*s.bucket_counts));
        if (s.bucket_counts == NULL) {
            free_strings(s.values, m->nlabels);
            return NULL;
        }
    }
    m->series[m->nseries] = s;
    m->nseries++;
    return &m->series[m->nseries - 1];
}

static metric_t *register_locked(const char *name, const char *help, const char *labels,
                                 metric_type_t type, const double *buckets, size_t nbuckets)
{
    metric_t *existing = find_locked(name);
    if (existing != NULL) {
        return existing->type == type ? existing : NULL;
    }
    metric_t *m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return NULL;
    }
    m->type = type;
    m->name = strdup(name);
    m->help = strdup(help != NULL ? help : "");
    if (m->name == NULL || m->help == NULL) {
        goto fail;
    }
    if (parse_label_names(labels, &m->label_names, &m->nlabels) != 0) {
        goto fail;
    }
    if (type == METRIC_HISTOGRAM) {
        for (size_t i = 0; i < m->nlabels; i++) {
            if (strcmp(m->label_names[i], "le") == 0) {
                goto fail;
            }
        }
        if (buckets == NULL) {
            buckets = default_buckets;
            nbuckets = sizeof(default_buckets) / sizeof(default_buckets[0]);
        }
        for (size_t i = 0; i < nbuckets; i++) {
            if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) {
                goto fail;
            }
        }
        if (nbuckets > 0) {
            m->buckets = malloc(nbuckets * sizeof(*m->buckets));
            if (m->buckets == NULL) {
                goto fail;
            }
            memcpy(m->buckets, buckets, nbuckets * sizeof(*m->buckets));
        }
        m->nbuckets = nbuckets;
    }
    /* A metric without labels exists from the start (renders as 0). */
    if (m->nlabels == 0 && series_get_locked(m, NULL) == NULL) {
        goto fail;
    }
    if (registry_tail == NULL) {
        registry_head = m;
    } else {
        registry_tail->next = m;
    }
    registry_tail = m;
    return m;
fail:
    metric_free(m);
    return NULL;
}

static metric_t *dropped_metric_locked(void)
{
    return register_locked(METRICS_DROPPED_NAME,
                           "Label combinations dropped by the per-metric cardinality cap", "metric",
                           METRIC_COUNTER, NULL, 0);
}

static metric_t *metric_register(const char *name, const char *help, const char *labels,
                                 metric_type_t type, const double *buckets, size_t nbuckets)
{
    if (!valid_metric_name(name)) {
        return NULL;
    }
    pthread_mutex_lock(&registry_lock);
    metric_t *m = register_locked(name, help, labels, type, buckets, nbuckets);
    pthread_mutex_unlock(&registry_lock);
    return m;
}

metric_t *metrics_counter(const char *name, const char *help, const char *labels)
{
    return metric_register(name, help, labels, METRIC_COUNTER, NULL, 0);
}

metric_t *metrics_gauge(const char *name, const char *help, const char *labels)
{
    return metric_register(name, help, labels, METRIC_GAUGE, NULL, 0);
}

metric_t *metrics_histogram(const char *name, const char *help, const char *labels,
                            const double *buckets, size_t nbuckets)
{
    return metric_register(name, help, labels, METRIC_HISTOGRAM, buckets, nbuckets);
}

/* ---- updates ---- */

typedef enum { OP_ADD, OP_SET, OP_OBSERVE } metric_op_t;

static void metric_update(metric_t *m, metric_op_t op, double v, va_list ap)
{
    const char *values[METRICS_MAX_LABELS];
    for (size_t i = 0; i < m->nlabels; i++) {
        const char *value = va_arg(ap, const char *);
        values[i] = value != NULL ? value : "";
    }
    if (isnan(v)) {
        return;
    }
    pthread_mutex_lock(&registry_lock);
    series_t *s = series_get_locked(m, values);
    if (s != NULL) {
        if (op == OP_OBSERVE) {
            size_t i = 0;
            while (i < m->nbuckets && v > m->buckets[i]) {
                i++;
            }
            s->bucket_counts[i]++; /* index nbuckets is +Inf */
            s->count++;
            s->sum += v;
        } else if (op == OP_SET) {
            s->value = v;
        } else {
            s->value += v;
        }
    }
    pthread_mutex_unlock(&registry_lock);
}

void metric_add(metric_t *m, double v, ...)
{
    if (m == NULL || m->type == METRIC_HISTOGRAM || (m->type == METRIC_COUNTER && v < 0)) {
        return;
    }
    va_list ap;
    va_start(ap, v);
    metric_update(m, OP_ADD, v, ap);
    va_end(ap);
}

void metric_set(metric_t *m, double v, ...)
{
    if (m == NULL || m->type != METRIC_GAUGE) {
        return;
    }
    va_list ap;
    va_start(ap, v);
    metric_update(m, OP_SET, v, ap);
    va_end(ap);
}

void metric_observe(metric_t *m, double v, ...)
{
    if (m == NULL || m->type != METRIC_HISTOGRAM) {
        return;
    }
    va_list ap;
    va_start(ap, v);
    metric_update(m, OP_OBSERVE, v, ap);
    va_end(ap);
}

/* ---- rendering ---- */

/* Escapes \ and newline (HELP); also " when `quote` (label values). */
static void sb_escaped(jbuf_t *sb, const char *s, bool quote)
{
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '\\') {
            jbuf_puts(sb, "\\\\");
        } else if (*p == '\n') {
            jbuf_puts(sb, "\\n");
        } else if (quote && *p == '"') {
            jbuf_puts(sb, "\\\"");
        } else {
            jbuf_append(sb, p, 1);
        }
    }
}

/* Shortest text that reads back as the same double; Prometheus spellings for
 * infinities and NaN. */
static void format_double(char *out, size_t outlen, double v)
{
    if (isnan(v)) {
        snprintf(out, outlen, "NaN");
    } else if (isinf(v)) {
        snprintf(out, outlen, "%s", v > 0 ? "+Inf" : "-Inf");
    } else {
        for (int precision = 15; precision <= 17; precision++) {
            snprintf(out, outlen, "%.*g", precision, v);
            if (strtod(out, NULL) == v) {
                break;
            }
        }
    }
}

static void sb_double(jbuf_t *sb, double v)
{
    char num[64];
    format_double(num, sizeof(num), v);
    jbuf_puts(sb, num);
}

/* {a="x",b="y"[,le="…"]}; nothing when there are no labels at all. */
static void sb_labels(jbuf_t *sb, const metric_t *m, const series_t *s, const char *le)
{
    if (m->nlabels == 0 && le == NULL) {
        return;
    }
    jbuf_puts(sb, "{");
    for (size_t i = 0; i < m->nlabels; i++) {
        if (i > 0) {
            jbuf_puts(sb, ",");
        }
        jbuf_puts(sb, m->label_names[i]);
        jbuf_puts(sb, "=\"");
        sb_escaped(sb, s->values[i], true);
        jbuf_puts(sb, "\"");
    }
    if (le != NULL) {
        if (m->nlabels > 0) {
            jbuf_puts(sb, ",");
        }
        jbuf_puts(sb, "le=\"");
        jbuf_puts(sb, le);
        jbuf_puts(sb, "\"");
    }
    jbuf_puts(sb, "}");
}

static void render_metric(jbuf_t *sb, const metric_t *m)
{
    static const char *type_names[] = {"counter", "gauge", "histogram"};
    jbuf_puts(sb, "# HELP ");
    jbuf_puts(sb, m->name);
    jbuf_puts(sb, " ");
    sb_escaped(sb, m->help, false);
    jbuf_puts(sb, "\n# TYPE ");
    jbuf_puts(sb, m->name);
    jbuf_puts(sb, " ");
    jbuf_puts(sb, type_names[m->type]);
    jbuf_puts(sb, "\n");
    for (size_t i = 0; i < m->nseries; i++) {
        const series_t *s = &m->series[i];
        if (m->type != METRIC_HISTOGRAM) {
            jbuf_puts(sb, m->name);
            sb_labels(sb, m, s, NULL);
            jbuf_puts(sb, " ");
            sb_double(sb, s->value);
            jbuf_puts(sb, "\n");
            continue;
        }
        uint64_t cumulative = 0;
        char le[64];
        char num[32];
        for (size_t b = 0; b <= m->nbuckets; b++) {
            cumulative += s->bucket_counts[b];
            format_double(le, sizeof(le), b < m->nbuckets ? m->buckets[b] : INFINITY);
            jbuf_puts(sb, m->name);
            jbuf_puts(sb, "_bucket");
            sb_labels(sb, m, s, le);
            snprintf(num, sizeof(num), " %llu\n", (unsigned long long)cumulative);
            jbuf_puts(sb, num);
        }
        jbuf_puts(sb, m->name);
        jbuf_puts(sb, "_sum");
        sb_labels(sb, m, s, NULL);
        jbuf_puts(sb, " ");
        sb_double(sb, s->sum);
        jbuf_puts(sb, "\n");
        jbuf_puts(sb, m->name);
        jbuf_puts(sb, "_count");
        sb_labels(sb, m, s, NULL);
        snprintf(num, sizeof(num), " %llu\n", (unsigned long long)s->count);
        jbuf_puts(sb, num);
    }
}

char *metrics_render(void)
{
    jbuf_t sb = {0};
    jbuf_puts(&sb, ""); /* an empty registry still renders "" */
    pthread_mutex_lock(&registry_lock);
    for (const metric_t *m = registry_head; m != NULL; m = m->next) {
        render_metric(&sb, m);
    }
    pthread_mutex_unlock(&registry_lock);
    if (sb.oom) {
        jbuf_free(&sb);
        return NULL;
    }
    return sb.p;
}

void metrics_shutdown(void)
{
    pthread_mutex_lock(&registry_lock);
    metric_t *m = registry_head;
    registry_head = NULL;
    registry_tail = NULL;
    pthread_mutex_unlock(&registry_lock);
    while (m != NULL) {
        metric_t *next = m->next;
        metric_free(m);
        m = next;
    }
}
