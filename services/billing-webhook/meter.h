/*
 * meter — the billing-webhook's meter outbox drainer (meter.c): one thread
 * with its own PostgreSQL connection and Stripe client sends the overage rows
 * of meter_outbox to Stripe as Billing Meter events, each job once. See
 * docs/billing.md.
 *
 *   meter_config_t cfg = {...};
 *   meter_t *m = meter_start(&cfg);   // the thread runs
 *   ... meter_request_stop(m); while (!meter_stopped(m)) wait; ...
 *   meter_free(m);                    // joins, frees
 */
#ifndef CA_METER_H
#define CA_METER_H

#include "pg.h"
#include "stripe.h"

#include <stdbool.h>

typedef struct {
    const char *database_url;
    stripe_config_t stripe; /* secret_key NULL: the drainer does not start */
    const char *event_name; /* STRIPE_METER_EVENT */
    int max_attempts;       /* then status failed */
    long backoff_base_ms;   /* first retry delay (backoff_delay_ms: doubling, equal jitter) */
    long backoff_max_ms;
    long poll_ms; /* idle poll period */
    int lease_s;  /* a claimed row is retried after this if we crash */
    int batch;    /* rows per claim */
} meter_config_t;

typedef struct meter meter_t;

/* Starts the drainer thread. Copies the strings. NULL on error. */
meter_t *meter_start(const meter_config_t *cfg);
/* Asks the thread to stop after its current call (does not wait). */
void meter_request_stop(meter_t *m);
/* True once the thread has left its loop. */
bool meter_stopped(const meter_t *m);
/* Stops, joins, frees. NULL is fine. */
void meter_free(meter_t *m);

/* The outbox gauges (depth, oldest pending age, failed rows), for a periodic
 * task on the maintenance connection. */
void meter_update_gauges(pg_conn_t *pg);

#endif
