/*
 * metrics — Prometheus counters, gauges and histograms in one process-wide
 * registry, rendered as the text exposition format (version 0.0.4).
 *
 *   static metric_t *jobs_total;
 *   jobs_total = metrics_counter("ca_jobs_total", "Jobs finished", "status,error_code");
 *   metric_add(jobs_total, 1, "completed", "");
 *
 * Label values are passed as const char * arguments, as many as the metric has
 * labels, and are escaped on output. Registering the same name twice returns
 * the same metric. Thread-safe. At most 1,000 label combinations per metric
 * (more are dropped and counted in ca_metrics_dropped_total).
 */
#ifndef CA_METRICS_H
#define CA_METRICS_H

#include <stddef.h>

typedef struct metric metric_t;

/* labels: comma-separated label names, or NULL/"" for none. */
metric_t *metrics_counter(const char *name, const char *help, const char *labels);
metric_t *metrics_gauge(const char *name, const char *help, const char *labels);
/* buckets: ascending upper bounds (+Inf is implied); copied. NULL uses the
 * default latency buckets in seconds (0.005 … 10). */
metric_t *metrics_histogram(const char *name, const char *help, const char *labels,
                            const double *buckets, size_t nbuckets);

void metric_add(metric_t *m, double v, ...);     /* counter or gauge */
void metric_set(metric_t *m, double v, ...);     /* gauge */
void metric_observe(metric_t *m, double v, ...); /* histogram */

/* The whole registry as text. Returns a new string; caller frees. */
char *metrics_render(void);

/* Frees the registry (clean exit). */
void metrics_shutdown(void);

#endif
