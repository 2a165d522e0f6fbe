/*
 * webhook — the billing-webhook's Stripe endpoint, POST /webhooks/stripe
 * (webhook.c): verify the signature, then record and apply the event in one
 * transaction on the non-blocking pool; events with nothing to apply are
 * written in group commits. See docs/billing.md.
 *
 *   webhook_config_t cfg = {...};
 *   webhook_t *w = webhook_new(base, http, &cfg);   // the route is live
 *   ... while (webhook_inflight(w) > 0) wait; ...
 *   webhook_free(w);
 */
#ifndef CA_WEBHOOK_H
#define CA_WEBHOOK_H

#include "http_server.h"

struct event_base;

typedef struct {
    const char *database_url;
    const char *secrets;       /* STRIPE_WEBHOOK_SECRET: comma list */
    const char *price_creator; /* may be NULL */
    const char *price_studio;  /* may be NULL */
    long tolerance_s;          /* signature tolerance (s) */
    int pool_size;             /* PostgreSQL connections on the loop */
    int batch_max;             /* events per group-commit statement */
    int batch_inflight;        /* group-commit statements in flight at once */
} webhook_config_t;

typedef struct webhook webhook_t;

/* Opens the non-blocking pool on `base` and registers POST /webhooks/stripe.
 * NULL on error (the numbers must be positive: the configuration table holds
 * their defaults). Copies the strings. Record-only and not-yet-linked events
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

#endif
