/*
 * billing-webhook internals: the Stripe webhook endpoint (webhook.c) and the
 * meter outbox drainer (meter.c). See docs/billing.md.
 */
#ifndef CA_BILLING_H
#define CA_BILLING_H

#include "http_server.h"
#include "pg.h"
#include "stripe.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct event_base;

/* ---- webhook.c ---- */

typedef struct {
    const char *database_url;
    const char *secrets;       /* STRIPE_WEBHOOK_SECRET: comma list */
    const char *price_creator; /* may be NULL */
    const char *price_studio;  /* may be NULL */
    long tolerance_s;          /* signature tolerance */
    int pool_size;             /* PostgreSQL connections on the loop */
    int batch_max;             /* events per group-commit statement (0: default) */
    int batch_inflight;        /* group-commit statements in flight at once (0: default) */
} webhook_config_t;

enum { WEBHOOK_DEFAULT_BATCH_MAX = 64, WEBHOOK_DEFAULT_BATCH_INFLIGHT = 2 };

typedef struct webhook webhook_t;

/* Opens the non-blocking pool on `base` and registers POST /webhooks/stripe.
 * NULL on error. Copies the strings. Record-only and not-yet-linked events
 * are written in group commits (see webhook.c). */
webhook_t *webhook_new(struct event_base *base, http_server_t *http, const webhook_config_t *cfg);
/* Requests whose event is being recorded. */
int webhook_inflight(const webhook_t *w);
void webhook_free(webhook_t *w);

/* Maps an outcome of billing_webhook_receive to the HTTP status to answer. */
int webhook_outcome_status(const char *outcome);
/* The metrics label for an event type: the type itself when it is one we
 * know, else "other" (bounded label values). */
const char *webhook_type_label(const char *type);

/* ---- meter.c ---- */

typedef struct {
    const char *database_url;
    stripe_config_t stripe;  /* secret_key NULL: the drainer does not start */
    const char *event_name;  /* STRIPE_METER_EVENT */
    int max_attempts;        /* then status failed */
    long backoff_base_ms;    /* first retry delay (doubling, with jitter) */
    long backoff_max_ms;
    long poll_ms;            /* idle poll period */
    int lease_s;             /* a claimed row is retried after this if we crash */
    int batch;               /* rows per claim */
} meter_config_t;

typedef struct meter meter_t;

/* Starts the drainer thread. NULL on error. */
meter_t *meter_start(const meter_config_t *cfg);
/* Asks the thread to stop after its current call (does not wait). */
void meter_request_stop(meter_t *m);
/* True once the thread has left its loop. */
bool meter_stopped(const meter_t *m);
/* Stops, joins, frees. NULL is fine. */
void meter_free(meter_t *m);

/* Delay before retry number `attempts` (1-based): base * 2^(attempts-1),
 * capped, with "equal jitter" (between half and all of it). */
long meter_backoff_ms(int attempts, long base_ms, long max_ms);

/* The outbox gauges (depth, oldest pending age, failed rows), for a periodic
 * task on the maintenance connection. */
void meter_update_gauges(pg_conn_t *pg);

#endif
