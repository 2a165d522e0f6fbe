/*
 * push — Drive push notifications for the drive-poller (push.c; issue 18,
 * docs/drive-poller.md "Push notifications"). When DRIVE_WEBHOOK_URL is set,
 * each watched row gets a changes.watch channel (one live channel per row,
 * drive_push_channels); Google then POSTs to /webhooks/drive on a change and
 * the row becomes due at once, on whichever replica claims it next. Polling
 * stays as it is: it is the safety net for a lost notification, and the only
 * path when the variable is unset.
 *
 *   - push_channel_ensure: after a successful poll (poll thread, lease held):
 *     registers the row's channel when it has none for the current address,
 *     or renews it when its end is near (the new one first, then the old one
 *     is marked to stop).
 *   - push_sweep: a maintenance task: stops (channels.stop) the channels whose
 *     watch stopped, whose folder changed, whose user left or was deactivated,
 *     that a newer one replaced, or whose address is no longer the configured
 *     one (all of them when push is off); forgets expired ones.
 *   - the webhook (push_webhook_new): POST /webhooks/drive on the poller's
 *     PORT; checks X-Goog-Channel-ID and X-Goog-Channel-Token (hash compared
 *     in constant time), ignores "sync", marks the row due now and wakes the
 *     local poll threads.
 */
#ifndef CA_PUSH_H
#define CA_PUSH_H

#include "crypto.h"
#include "google_oauth.h"
#include "http_server.h"
#include "lease.h"
#include "pg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

/* What the poll threads need (read-only, shared). url NULL: push is off. */
typedef struct {
    const char *url; /* DRIVE_WEBHOOK_URL */
    int channel_s;   /* DRIVE_WEBHOOK_CHANNEL_SECONDS: requested channel lifetime */
} push_settings_t;

/* Poll thread, after a successful poll of `row` (leased by `owner`): makes
 * sure the row has a live channel for ps->url (see above). Never fails the
 * poll: a failed registration is logged and counted, and tried again at the
 * row's next poll. */
void push_channel_ensure(const push_settings_t *ps, pg_conn_t *pg, google_client_t *gc,
                         const crypto_keyring_t *keys, const char *owner, const lease_row_t *row,
                         const char *access_token, const char *page_token);

/* ---- the stopper (a maintenance task) ---- */
typedef struct push_sweeper push_sweeper_t;
/* url may be NULL (push off: every channel is stopped). Copies what it needs. */
push_sweeper_t *push_sweeper_new(const google_config_t *google, const crypto_keyring_t *keys,
                                 const char *url);
/* One round: stops up to a batch of channels; sets the channels-active gauge. */
void push_sweep(push_sweeper_t *s, pg_conn_t *pg);
void push_sweeper_free(push_sweeper_t *s);

/* ---- the webhook ---- */
typedef struct push_webhook push_webhook_t;
/* Registers POST /webhooks/drive. rate_per_s: notifications accepted per
 * second (a token bucket with a burst of the same size; past it 429).
 * nudge(arg) wakes the local poll threads after an accepted change. */
push_webhook_t *push_webhook_new(struct event_base *base, http_server_t *http,
                                 const char *database_url, int rate_per_s, void (*nudge)(void *),
                                 void *nudge_arg);
void push_webhook_free(push_webhook_t *w);

/* ---- pure rules (exported for the tests) ---- */

/* DRIVE_WEBHOOK_URL's rule: https://host/..., or http:// to a loopback host
 * (127.0.0.1, localhost, [::1]) for local runs and tests. false: why filled. */
bool push_url_ok(const char *url, char *why, size_t whylen);
/* How long before its end a channel of `lifetime_s` is renewed: a fifth of
 * its life, at most one hour, at least one second. */
int64_t push_renew_margin_s(int64_t lifetime_s);

/* Registers the metrics (idempotent). */
void push_metrics_init(void);

#endif
