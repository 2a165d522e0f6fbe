/*
 * billing-webhook against real PostgreSQL and the Stripe fake. Events are
 * signed by npm stripe (tests/fakes/stripe-send-event.js, or
 * webhooks.generateTestHeaderString for raw bodies), never by our code.
 *
 * Covers: signatures (valid, forged, stale, future, wrong secret, rotated
 * list), malformed bodies, a 2 MiB body, duplicates, an apply failure, unknown
 * types, out-of-order pairs, the Checkout → creator → studio → cancel at period
 * end → payment failure → renew → creator → deleted (free) path through the
 * fake, the Stripe client (checkout, portal, meter duplicate), group commit
 * (a batch whose statement fails; a batch of mixed outcomes, with an apply
 * failure answered 500 for its event only), overage at the limit edge under
 * concurrency, and the meter outbox across Stripe faults.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backoff.h"
#include "fake_admin.h"
#include "stripe.h"
#include "support.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SECRET_OLD "whsec_old_secret_1"
#define SECRET_NEW "whsec_new_secret_2"
#define PRICE_CREATOR "price_basic_monthly"
#define PRICE_STUDIO "price_pro_monthly"

static proc_t fake;
static proc_t daemon_p;
static char webhook_url[192];

/* ---- helpers ---- */

/* Runs a shell command, returns its stdout (caller frees). */
static char *run_capture(const char *cmd)
{
    FILE *f = popen(cmd, "r");
    if (f == NULL) {
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    size_t n;
    while ((n = fread(out + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            cap *= 2;
            out = realloc(out, cap);
        }
    }
    out[len] = '\0';
    pclose(f);
    return out;
}

/* stripe-send-event.js with `args`; returns the HTTP status; *body gets the
 * answer (may be NULL). */
static long send_event(const char *secret, const char *args, char **body)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "node %s/tests/fakes/stripe-send-event.js --url %s --secret %s %s",
             getenv("CA_ROOT"), webhook_url, secret, args);
    char *out = run_capture(cmd);
    long status = -1;
    if (out != NULL && sscanf(out, "status %ld", &status) != 1) {
        fprintf(stderr, "send_event: %s\n", out);
    }
    if (body != NULL) {
        *body = out;
    } else {
        free(out);
    }
    return status;
}

/* POSTs `payload` signed by npm stripe with `secret` at time t (0: now). */
static long post_signed_raw(const char *payload, const char *secret, long long t, char **resp)
{
    char tmp[] = "/tmp/billing_payload_XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0 || write(fd, payload, strlen(payload)) != (ssize_t)strlen(payload)) {
        return -1;
    }
    close(fd);
    char cmd[1024];
    snprintf(
        cmd, sizeof cmd,
        "cd %s/tests/fakes && node -e 'const S=require(\"stripe\");"
        "const p=require(\"fs\").readFileSync(process.argv[1],\"utf8\");"
        "const o={payload:p,secret:process.argv[2]};if(+process.argv[3])o.timestamp=+process.argv[3];"
        "process.stdout.write(S.webhooks.generateTestHeaderString(o))' %s %s %lld",
        getenv("CA_ROOT"), tmp, secret, t);
    char *sig = run_capture(cmd);
    unlink(tmp);
    char header[512];
    snprintf(header, sizeof header, "Stripe-Signature: %s", sig != NULL ? sig : "");
    free(sig);
    const char *headers[] = {header, "Content-Type: application/json", NULL};
    return http_call_h("POST", webhook_url, headers, payload, resp, NULL);
}

static char *sqlv(const char *sql, const char *a)
{
    const char *p[1] = {a};
    return sql_value(sql, a != NULL ? 1 : 0, p);
}

static void assert_sql(const char *sql, const char *a, const char *want)
{
    char *v = sqlv(sql, a);
    if (v == NULL || strcmp(v, want) != 0) {
        fprintf(stderr, "%s [%s] = %s, want %s\n", sql, a != NULL ? a : "", v ? v : "NULL", want);
        proc_print_log(&daemon_p);
    }
    assert_non_null(v);
    assert_string_equal(v, want);
    free(v);
}

static void make_user(const char *id, const char *email)
{
    const char *p[2] = {id, email};
    assert_int_equal(sql_exec("INSERT INTO users (id, email, name, google_id)"
                              " VALUES ($1, $2, 'T', $2)",
                              2, p),
                     0);
}

static char *sub_field(const char *field, const char *user_id)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT %s::text FROM subscriptions WHERE user_id = $1", field);
    return sqlv(sql, user_id);
}

static void assert_sub(const char *user_id, const char *tier, const char *status, const char *limit)
{
    char *t = sub_field("tier", user_id);
    char *s = sub_field("status", user_id);
    char *l = sub_field("monthly_limit", user_id);
    if (t == NULL || s == NULL || l == NULL || strcmp(t, tier) != 0 || strcmp(s, status) != 0 ||
        strcmp(l, limit) != 0) {
        fprintf(stderr, "subscription of %s: %s/%s/%s, want %s/%s/%s\n", user_id, t ? t : "-",
                s ? s : "-", l ? l : "-", tier, status, limit);
    }
    assert_non_null(t);
    assert_string_equal(t, tier);
    assert_string_equal(s, status);
    assert_string_equal(l, limit);
    free(t);
    free(s);
    free(l);
}

static stripe_client_t *client(void)
{
    stripe_config_t cfg = {
        .secret_key = "sk_test_billing", .api_url = fake.base_url, .max_retries = 0};
    return stripe_client_new(&cfg);
}

/* ---- setup ---- */

static int group_setup(void **state)
{
    (void)state;
    if (fake_start(&fake, "stripe", NULL) != 0) {
        return -1;
    }
    char db[512], redis[256], api[256];
    snprintf(db, sizeof db, "DATABASE_URL=%s", db_url_as("ca_billing_webhook"));
    snprintf(redis, sizeof redis, "REDIS_URL=%s", getenv("TEST_REDIS_URL"));
    snprintf(api, sizeof api, "STRIPE_API_URL=%s", fake.base_url);
    const char *env[] = {db,
                         redis,
                         api,
                         "STRIPE_WEBHOOK_SECRET=" SECRET_OLD "," SECRET_NEW,
                         "STRIPE_SECRET_KEY=sk_test_billing",
                         "STRIPE_PRICE_CREATOR=" PRICE_CREATOR,
                         "STRIPE_PRICE_STUDIO=" PRICE_STUDIO,
                         "METER_POLL_MS=100",
                         "METER_BACKOFF_BASE_MS=100",
                         "METER_BACKOFF_MAX_MS=400",
                         "METER_MAX_ATTEMPTS=8",
                         "LOG_LEVEL=info",
                         "WEBHOOK_BATCH_INFLIGHT=2",
                         NULL};
    if (daemon_start(&daemon_p, "billing-webhook", env) != 0) {
        proc_stop(&fake);
        return -1;
    }
    snprintf(webhook_url, sizeof webhook_url, "%s/webhooks/stripe", daemon_p.base_url);
    char body[512];
    snprintf(body, sizeof body, "{\"url\":\"%s\",\"secret\":\"%s\"}", webhook_url, SECRET_NEW);
    if (fake_admin_call(fake.base_url, "POST", "/__admin/webhook", body, NULL) != 200) {
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    int rc = daemon_stop(&daemon_p); /* already 0 unless a test left it running */
    proc_stop(&fake);
    return rc == 0 ? 0 : -1;
}

/* ---- signatures and bodies ---- */

static void test_signatures(void **state)
{
    (void)state;
    char *out = NULL;
    /* valid with each secret of the rotated list */
    assert_int_equal(send_event(SECRET_OLD, "--type customer.subscription.trial_will_end", NULL),
                     200);
    assert_int_equal(send_event(SECRET_NEW, "--type customer.subscription.trial_will_end", &out),
                     200);
    assert_non_null(strstr(out, "\"outcome\":\"recorded\""));
    free(out);
    /* forged: signed with another secret by the tool */
    assert_int_equal(send_event(SECRET_NEW, "--type invoice.paid --wrong-secret", NULL), 400);
    /* wrong secret */
    assert_int_equal(send_event("whsec_not_ours", "--type invoice.paid", &out), 400);
    assert_non_null(strstr(out, "invalid_signature"));
    free(out);
    /* stale and future, beyond 300 s */
    char args[128];
    snprintf(args, sizeof args, "--type invoice.paid --timestamp %lld",
             (long long)time(NULL) - 400);
    assert_int_equal(send_event(SECRET_NEW, args, NULL), 400);
    snprintf(args, sizeof args, "--type invoice.paid --timestamp %lld",
             (long long)time(NULL) + 400);
    assert_int_equal(send_event(SECRET_NEW, args, NULL), 400);
    /* within tolerance */
    snprintf(args, sizeof args, "--type invoice.paid --timestamp %lld",
             (long long)time(NULL) - 200);
    assert_int_equal(send_event(SECRET_NEW, args, NULL), 200);
    /* no header at all */
    assert_int_equal(http_call("POST", webhook_url, "{\"id\":\"evt_x\"}", NULL), 400);
    /* a forged event recorded nothing */
    assert_sql("SELECT count(*) FROM webhook_events WHERE event_type = 'invoice.paid'", NULL, "1");
    char *metrics = NULL;
    char url[256];
    snprintf(url, sizeof url, "%s/metrics", daemon_p.base_url);
    assert_int_equal(http_call("GET", url, NULL, &metrics), 200);
    assert_non_null(
        strstr(metrics, "ca_billing_webhook_signature_failures_total{reason=\"mismatch\"} 2"));
    assert_non_null(
        strstr(metrics, "ca_billing_webhook_signature_failures_total{reason=\"stale\"} 1"));
    assert_non_null(
        strstr(metrics, "ca_billing_webhook_signature_failures_total{reason=\"future\"} 1"));
    free(metrics);
}

static void test_malformed_and_big(void **state)
{
    (void)state;
    char *resp = NULL;
    assert_int_equal(post_signed_raw("{\"id\":\"evt_1\",", SECRET_NEW, 0, &resp), 400);
    assert_non_null(strstr(resp, "invalid_payload"));
    free(resp);
    assert_int_equal(post_signed_raw("[1,2]", SECRET_NEW, 0, NULL), 400);
    assert_int_equal(post_signed_raw("{} trailing", SECRET_NEW, 0, NULL), 400);
    assert_int_equal(
        post_signed_raw("{\"id\":\"evt_nodata\",\"type\":\"invoice.paid\"}", SECRET_NEW, 0, NULL),
        400);
    /* a stale signature on a valid body: 400 */
    assert_int_equal(post_signed_raw("{\"id\":\"evt_st\",\"type\":\"x\",\"created\":1,"
                                     "\"data\":{\"object\":{}}}",
                                     SECRET_NEW, (long long)time(NULL) - 1000, NULL),
                     400);
    /* 2 MiB: refused before anything is read as an event */
    size_t big = 2 * 1024 * 1024;
    char *body = malloc(big + 1);
    memset(body, ' ', big);
    body[0] = '{';
    body[big - 1] = '}';
    body[big] = '\0';
    const char *headers[] = {"Stripe-Signature: t=1,v1=00", NULL};
    long st = http_call_h("POST", webhook_url, headers, body, &resp, NULL);
    free(body);
    assert_int_equal(st, 413);
    free(resp);
    assert_sql("SELECT count(*) FROM webhook_events WHERE event_id IN"
               " ('evt_1','evt_nodata','evt_st')",
               NULL, "0");
}

static void test_duplicates_and_unknown(void **state)
{
    (void)state;
    const char *uid = "a0000000-0000-4000-8000-000000000001";
    make_user(uid, "dup@example.com");
    char args[512];
    snprintf(args, sizeof args,
             "--type customer.subscription.created --id evt_dup_1"
             " --set data.object.id=sub_dup --set data.object.customer=cus_dup"
             " --set data.object.metadata.user_id=%s"
             " --set data.object.items.data.0.price.id=" PRICE_CREATOR,
             uid);
    char *out = NULL;
    assert_int_equal(send_event(SECRET_NEW, args, &out), 200);
    assert_non_null(strstr(out, "\"applied\""));
    free(out);
    assert_sub(uid, "creator", "active", "100");
    /* the same event again (re-signed): 200, duplicate, nothing changes */
    assert_int_equal(sql_exec("UPDATE subscriptions SET monthly_limit = 99 WHERE user_id = $1", 1,
                              (const char *const[]){uid}),
                     0);
    assert_int_equal(send_event(SECRET_NEW, args, &out), 200);
    assert_non_null(strstr(out, "\"duplicate\""));
    free(out);
    assert_sql("SELECT monthly_limit FROM subscriptions WHERE user_id = $1", uid, "99");
    assert_sql("SELECT count(*) FROM webhook_events WHERE event_id = 'evt_dup_1'", NULL, "1");
    /* unknown type: recorded, 200 */
    assert_int_equal(
        send_event(SECRET_NEW,
                   "--type invoice.paid --id evt_unknown_1 --set type=customer.tax_id.created",
                   &out),
        200);
    assert_non_null(strstr(out, "\"ignored\""));
    free(out);
    assert_sql("SELECT processed::text || ' ' || event_type FROM webhook_events"
               " WHERE event_id = 'evt_unknown_1'",
               NULL, "true customer.tax_id.created");
}

/* Checkout for a user whose customer id belongs to another user: the apply
 * fails, the event stays unprocessed with its error, and Stripe gets a 500. */
static void test_apply_failure(void **state)
{
    (void)state;
    const char *uid = "a0000000-0000-4000-8000-000000000002";
    make_user(uid, "fail@example.com");
    char args[512];
    snprintf(args, sizeof args,
             "--type checkout.session.completed --id evt_fail_1"
             " --set data.object.client_reference_id=%s --set data.object.customer=cus_dup"
             " --set data.object.subscription=sub_other",
             uid);
    assert_int_equal(send_event(SECRET_NEW, args, NULL), 500);
    assert_sql("SELECT processed::text FROM webhook_events WHERE event_id = 'evt_fail_1'", NULL,
               "false");
    char *msg =
        sqlv("SELECT error_message FROM webhook_events WHERE event_id = 'evt_fail_1'", NULL);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "23505"));
    free(msg);
    /* the retry fails the same way (not answered as a duplicate) */
    assert_int_equal(send_event(SECRET_NEW, args, NULL), 500);
    /* after the conflict is gone the retry applies */
    assert_int_equal(sql_exec("UPDATE subscriptions SET stripe_customer_id = 'cus_dup_moved'"
                              " WHERE stripe_customer_id = 'cus_dup'",
                              0, NULL),
                     0);
    assert_int_equal(send_event(SECRET_NEW, args, NULL), 200);
    assert_sql("SELECT processed::text || ' ' || coalesce(error_message, '-') FROM webhook_events"
               " WHERE event_id = 'evt_fail_1'",
               NULL, "true -");
    assert_sql("SELECT stripe_customer_id FROM subscriptions WHERE user_id = $1", uid, "cus_dup");
}

/* ---- ordering ---- */

static long send_sub(const char *type, const char *evt, long long created, const char *sub,
                     const char *uid, const char *price, const char *status)
{
    char args[1024];
    snprintf(args, sizeof args,
             "--type %s --id %s --set created=%lld --set data.object.id=%s"
             " --set data.object.customer=cus_%s --set data.object.metadata.user_id=%s"
             " --set data.object.items.data.0.price.id=%s --set data.object.status=%s",
             type, evt, created, sub, sub, uid, price, status);
    return send_event(SECRET_NEW, args, NULL);
}

static void test_out_of_order(void **state)
{
    (void)state;
    long long t = (long long)time(NULL) - 100;
    /* updated (studio, T+10) before created (creator, T): studio stays */
    const char *u1 = "a0000000-0000-4000-8000-000000000003";
    make_user(u1, "ooo1@example.com");
    assert_int_equal(send_sub("customer.subscription.updated", "evt_o1_upd", t + 10, "sub_o1", u1,
                              PRICE_STUDIO, "active"),
                     200);
    assert_int_equal(send_sub("customer.subscription.created", "evt_o1_cre", t, "sub_o1", u1,
                              PRICE_CREATOR, "incomplete"),
                     200);
    assert_sub(u1, "studio", "active", "500");
    assert_sql("SELECT outcome FROM webhook_events WHERE event_id = 'evt_o1_cre'", NULL, "stale");
    assert_sql("SELECT processed::text FROM webhook_events WHERE event_id = 'evt_o1_cre'", NULL,
               "true");

    /* deleted (T+20) before updated (T+15): stays free and cancelled */
    const char *u2 = "a0000000-0000-4000-8000-000000000004";
    make_user(u2, "ooo2@example.com");
    assert_int_equal(send_sub("customer.subscription.created", "evt_o2_cre", t, "sub_o2", u2,
                              PRICE_CREATOR, "active"),
                     200);
    assert_sub(u2, "creator", "active", "100");
    assert_int_equal(send_sub("customer.subscription.deleted", "evt_o2_del", t + 20, "sub_o2", u2,
                              PRICE_CREATOR, "canceled"),
                     200);
    assert_int_equal(send_sub("customer.subscription.updated", "evt_o2_upd", t + 15, "sub_o2", u2,
                              PRICE_STUDIO, "active"),
                     200);
    assert_sub(u2, "free", "cancelled", "10");
    assert_sql("SELECT stripe_customer_id FROM subscriptions WHERE user_id = $1", u2, "cus_sub_o2");
    /* not even an "updated" stamped later (same subscription) resurrects it */
    assert_int_equal(send_sub("customer.subscription.updated", "evt_o2_late", t + 30, "sub_o2", u2,
                              PRICE_STUDIO, "active"),
                     200);
    assert_sub(u2, "free", "cancelled", "10");
    /* a deletion of an old subscription does not cancel a newer one */
    assert_int_equal(send_sub("customer.subscription.created", "evt_o2_new", t + 40, "sub_o2b", u2,
                              PRICE_CREATOR, "active"),
                     200);
    assert_sub(u2, "creator", "active", "100");
    assert_int_equal(send_sub("customer.subscription.deleted", "evt_o2_olddel", t + 50, "sub_o2",
                              u2, PRICE_CREATOR, "canceled"),
                     200);
    assert_sub(u2, "creator", "active", "100");

    /* legacy shape: periods at the top of the subscription */
    const char *u3 = "a0000000-0000-4000-8000-000000000005";
    make_user(u3, "legacy@example.com");
    char args[512];
    snprintf(args, sizeof args,
             "--type customer.subscription.created --legacy --id evt_legacy"
             " --set data.object.id=sub_legacy --set data.object.customer=cus_legacy"
             " --set data.object.metadata.user_id=%s"
             " --set data.object.items.data.0.price.id=" PRICE_STUDIO
             " --set data.object.current_period_start=1767225600"
             " --set data.object.current_period_end=1769904000",
             u3);
    assert_int_equal(send_event(SECRET_NEW, args, NULL), 200);
    assert_sub(u3, "studio", "active", "500");
    assert_sql("SELECT current_period_start::text || ' ' || current_period_end::text"
               " FROM subscriptions WHERE user_id = $1",
               u3, "2026-01-01 00:00:00 2026-02-01 00:00:00");
}

/* invoice.payment_failed applied → one payment_failed notice per invoice (its
 * e-mail queued): Stripe's next failure of the same invoice, a duplicate
 * delivery and a stale event add none; another invoice is a new notice. */
static long send_invoice_failed(const char *evt, long long created, const char *invoice,
                                const char *sub)
{
    char args[1024];
    snprintf(args, sizeof args,
             "--type invoice.payment_failed --id %s --set created=%lld --set data.object.id=%s"
             " --set data.object.customer=cus_%s"
             " --set data.object.parent.subscription_details.subscription=%s",
             evt, created, invoice, sub, sub);
    return send_event(SECRET_NEW, args, NULL);
}

static void test_payment_failed_notice(void **state)
{
    (void)state;
    long long t = (long long)time(NULL) - 100;
    const char *u = "a0000000-0000-4000-8000-0000000000f1";
    make_user(u, "payfail@example.com");
    assert_int_equal(send_sub("customer.subscription.created", "evt_pf_cre", t, "sub_pf", u,
                              PRICE_CREATOR, "active"),
                     200);
    assert_sub(u, "creator", "active", "100");
    assert_sql("SELECT count(*) FROM notices WHERE user_id = $1", u, "0");
    assert_int_equal(send_invoice_failed("evt_pf_1", t + 10, "in_pf_1", "sub_pf"), 200);
    assert_sub(u, "creator", "past_due", "100");
    assert_sql("SELECT count(*) || '|' || min(cause_key) || '|' || min(data->>'invoice_id')"
               " || '|' || min(data->>'amount_due') || '|' || min(data->>'tier')"
               " FROM notices WHERE user_id = $1 AND kind = 'payment_failed'",
               u, "1|invoice:in_pf_1|in_pf_1|900|creator");
    assert_sql("SELECT count(*) FROM email_outbox o JOIN notices n ON n.id = o.notice_id"
               " WHERE n.user_id = $1 AND n.kind = 'payment_failed' AND o.status = 'pending'",
               u, "1");
    /* the same event again, and Stripe's retry of the same invoice: no new notice */
    assert_int_equal(send_invoice_failed("evt_pf_1", t + 10, "in_pf_1", "sub_pf"), 200);
    assert_int_equal(send_invoice_failed("evt_pf_2", t + 20, "in_pf_1", "sub_pf"), 200);
    assert_sql("SELECT count(*) FROM notices WHERE user_id = $1 AND kind = 'payment_failed'", u,
               "1");
    assert_sql("SELECT count(*) FROM email_outbox WHERE user_id = $1", u, "1");
    /* a stale failure (older than what was applied) raises nothing */
    assert_int_equal(send_invoice_failed("evt_pf_old", t + 5, "in_pf_0", "sub_pf"), 200);
    assert_sql("SELECT count(*) FROM notices WHERE user_id = $1 AND kind = 'payment_failed'", u,
               "1");
    /* the next invoice that fails is a new cause */
    assert_int_equal(send_invoice_failed("evt_pf_3", t + 30, "in_pf_2", "sub_pf"), 200);
    assert_sql("SELECT count(*) FROM notices WHERE user_id = $1 AND kind = 'payment_failed'", u,
               "2");
}

/* ---- the whole path through the fake ---- */

static void sub_action(const char *sub, const char *action, const char *body)
{
    char path[256];
    snprintf(path, sizeof path, "/__admin/subscriptions/%s/%s", sub, action);
    cJSON_Delete(fake_admin(fake.base_url, "POST", path, body != NULL ? body : "{}"));
    /* deliveries waits for queued sends */
    cJSON_Delete(fake_admin(fake.base_url, "GET", "/__admin/deliveries", NULL));
}

static void test_checkout_and_transitions(void **state)
{
    (void)state;
    const char *uid = "b0000000-0000-4000-8000-000000000001";
    make_user(uid, "journey@example.com");
    stripe_client_t *sc = client();
    assert_non_null(sc);

    /* free → creator through Checkout */
    stripe_checkout_params_t p = {
        .price_id = PRICE_CREATOR,
        .client_reference_id = uid,
        .customer_email = "journey@example.com",
        .success_url = "http://app.test/billing?session_id={CHECKOUT_SESSION_ID}",
        .cancel_url = "http://app.test/billing",
        .idempotency_key = "checkout-journey-1",
    };
    stripe_session_t s = {0};
    stripe_error_t err;
    assert_int_equal(stripe_create_checkout_session(sc, &p, &s, &err), STRIPE_OK);
    assert_non_null(strstr(s.id, "cs_"));
    assert_non_null(strstr(s.url, "/checkout/"));
    /* the same idempotency key replays the same session */
    stripe_session_t again = {0};
    assert_int_equal(stripe_create_checkout_session(sc, &p, &again, &err), STRIPE_OK);
    assert_string_equal(again.id, s.id);
    stripe_session_free(&again);
    /* a bad price: a permanent error with Stripe's shape parsed */
    stripe_checkout_params_t bad = p;
    bad.price_id = "price_nope";
    bad.idempotency_key = "checkout-journey-bad";
    stripe_status_t st = stripe_create_checkout_session(sc, &bad, &again, &err);
    assert_true(st == STRIPE_ERR_INVALID || st == STRIPE_ERR_NOT_FOUND);
    assert_false(stripe_status_transient(st));
    assert_true(err.message[0] != '\0');

    char path[256];
    snprintf(path, sizeof path, "/__admin/checkout/%s/complete", s.id);
    cJSON_Delete(fake_admin(fake.base_url, "POST", path, "{}"));
    stripe_session_free(&s);
    assert_sub(uid, "creator", "active", "100");
    char *cus = sub_field("stripe_customer_id", uid);
    char *sub = sub_field("stripe_subscription_id", uid);
    assert_non_null(cus);
    assert_non_null(sub);
    assert_non_null(strstr(cus, "cus_"));
    assert_non_null(strstr(sub, "sub_"));
    char *period = sub_field("(current_period_end > current_period_start"
                             " AND current_period_start <= timezone('UTC', now()))",
                             uid);
    assert_string_equal(period, "true");
    free(period);
    assert_sql("SELECT count(*) FROM webhook_events WHERE processed AND stripe_customer_id = $1",
               cus, "3"); /* checkout.session.completed, subscription.created, invoice.paid */

    /* the portal */
    stripe_session_t portal = {0};
    assert_int_equal(
        stripe_create_portal_session(sc, cus, "http://app.test/billing", NULL, &portal, &err),
        STRIPE_OK);
    assert_non_null(strstr(portal.url, "/billing_portal/"));
    stripe_session_free(&portal);
    assert_int_equal(stripe_create_portal_session(sc, "cus_missing", NULL, NULL, &portal, &err),
                     STRIPE_ERR_NOT_FOUND);
    cJSON *obj = NULL;
    assert_int_equal(stripe_retrieve_subscription(sc, sub, &obj, &err), STRIPE_OK);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(obj, "id")), sub);
    cJSON_Delete(obj);

    /* creator → studio */
    sub_action(sub, "update", "{\"price\":\"" PRICE_STUDIO "\"}");
    assert_sub(uid, "studio", "active", "500");
    /* cancel at period end: still studio until the period ends */
    sub_action(sub, "update", "{\"cancel_at_period_end\":true}");
    assert_sub(uid, "studio", "active", "500");
    char *cape = sub_field("cancel_at_period_end", uid);
    assert_string_equal(cape, "true");
    free(cape);
    sub_action(sub, "update", "{\"cancel_at_period_end\":false}");
    /* payment failure → past_due (still the paid plan while Stripe retries) */
    sub_action(sub, "payment_failed", NULL);
    assert_sub(uid, "studio", "past_due", "500");
    /* the next period is paid → active again */
    sub_action(sub, "renew", NULL);
    assert_sub(uid, "studio", "active", "500");
    /* studio → creator */
    sub_action(sub, "update", "{\"price\":\"" PRICE_CREATOR "\"}");
    assert_sub(uid, "creator", "active", "100");
    /* deleted → free, limit 10, cancelled, customer kept */
    sub_action(sub, "cancel", NULL);
    assert_sub(uid, "free", "cancelled", "10");
    char *cus_after = sub_field("stripe_customer_id", uid);
    assert_string_equal(cus_after, cus);
    free(cus_after);
    /* free → studio with a new Checkout reusing the customer */
    stripe_checkout_params_t p2 = p;
    p2.price_id = PRICE_STUDIO;
    p2.customer = cus;
    p2.customer_email = NULL;
    p2.idempotency_key = "checkout-journey-2";
    assert_int_equal(stripe_create_checkout_session(sc, &p2, &s, &err), STRIPE_OK);
    snprintf(path, sizeof path, "/__admin/checkout/%s/complete", s.id);
    cJSON_Delete(fake_admin(fake.base_url, "POST", path, "{}"));
    stripe_session_free(&s);
    assert_sub(uid, "studio", "active", "500");
    char *sub2 = sub_field("stripe_subscription_id", uid);
    assert_string_not_equal(sub2, sub);
    /* every delivery was answered 2xx */
    cJSON *reply = fake_admin(fake.base_url, "GET", "/__admin/deliveries", NULL);
    char *deliveries = cJSON_PrintUnformatted(reply);
    cJSON_Delete(reply);
    assert_null(strstr(deliveries, "\"status\":5"));
    assert_null(strstr(deliveries, "\"status\":4"));
    free(deliveries);
    free(sub2);
    free(cus);
    free(sub);
    stripe_client_free(sc);
}

/* The subscription event can arrive before checkout.session.completed for a
 * session made elsewhere (no metadata): it waits, then is applied at the link. */
static void test_unlinked_then_checkout(void **state)
{
    (void)state;
    const char *uid = "b0000000-0000-4000-8000-000000000002";
    make_user(uid, "late@example.com");
    long long t = (long long)time(NULL) - 50;
    char args[1024];
    snprintf(
        args, sizeof args,
        "--type customer.subscription.created --id evt_late_sub --set created=%lld"
        " --set data.object.id=sub_late --set data.object.customer=cus_late"
        " --set data.object.metadata={} --set data.object.items.data.0.price.id=" PRICE_CREATOR,
        t);
    char *out = NULL;
    assert_int_equal(send_event(SECRET_NEW, args, &out), 200);
    assert_non_null(strstr(out, "\"unlinked\""));
    free(out);
    snprintf(args, sizeof args,
             "--type checkout.session.completed --id evt_late_cs --set created=%lld"
             " --set data.object.client_reference_id=%s --set data.object.customer=cus_late"
             " --set data.object.subscription=sub_late --set data.object.metadata={}",
             t, uid);
    assert_int_equal(send_event(SECRET_NEW, args, NULL), 200);
    assert_sub(uid, "creator", "active", "100");
    assert_sql("SELECT outcome || ' ' || processed::text FROM webhook_events"
               " WHERE event_id = 'evt_late_sub'",
               NULL, "applied true");
}

/* The lean paths of webhook.c: record-only types, unlinked events, and an odd
 * shape (a numeric id) that falls back to the general SQL function. */
static void test_fast_paths(void **state)
{
    (void)state;
    char *out = NULL;
    /* record-only type, twice: recorded, then duplicate; one row */
    const char *unknown =
        "--type invoice.paid --id evt_fast_unknown --set type=customer.tax_id.updated";
    assert_int_equal(send_event(SECRET_NEW, unknown, &out), 200);
    assert_null(strstr(out, "\"duplicate\""));
    free(out);
    assert_int_equal(send_event(SECRET_NEW, unknown, &out), 200);
    assert_non_null(strstr(out, "\"duplicate\""));
    free(out);
    assert_sql("SELECT count(*) FROM webhook_events WHERE event_id = 'evt_fast_unknown'", NULL,
               "1");

    /* trial_will_end is recorded, processed */
    assert_int_equal(send_event(SECRET_NEW,
                                "--type customer.subscription.trial_will_end --id evt_fast_trial"
                                " --set data.object.customer=cus_fast_nobody",
                                &out),
                     200);
    free(out);
    assert_sql("SELECT processed::text FROM webhook_events WHERE event_id = 'evt_fast_trial'", NULL,
               "true");

    /* an unlinked subscription event, twice: one row, still waiting for checkout */
    const char *unlinked =
        "--type customer.subscription.updated --id evt_fast_unlinked"
        " --set data.object.id=sub_fast_nobody --set data.object.customer=cus_fast_nobody"
        " --set data.object.metadata={} --set data.object.items.data.0.price.id=" PRICE_CREATOR;
    assert_int_equal(send_event(SECRET_NEW, unlinked, &out), 200);
    assert_non_null(strstr(out, "\"unlinked\""));
    free(out);
    assert_int_equal(send_event(SECRET_NEW, unlinked, &out), 200);
    free(out);
    assert_sql("SELECT count(*) || ' ' || bool_or(processed)::text FROM webhook_events"
               " WHERE event_id = 'evt_fast_unlinked'",
               NULL, "1 false");

    /* a numeric event id is an unusual shape: the general path answers 200
     * and records it once */
    const char *numeric =
        "{\"id\": 4242, \"object\": \"event\", \"type\": \"customer.tax_id.created\","
        " \"created\": 1700000000, \"data\": {\"object\": {}}}";
    char *resp = NULL;
    assert_int_equal(post_signed_raw(numeric, SECRET_NEW, 0, &resp), 200);
    free(resp);
    assert_sql("SELECT count(*) FROM webhook_events WHERE event_id = '4242'", NULL, "1");
}

/* ---- group commit ---- */

/* Signs each line of `payloads` (one JSON payload a line) with npm stripe;
 * headers[i] gets the Stripe-Signature of payloads[i] (caller frees). */
static void sign_all(const char *const *payloads, int n, char **headers)
{
    char tmp[] = "/tmp/billing_batch_XXXXXX";
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    for (int i = 0; i < n; i++) {
        size_t len = strlen(payloads[i]);
        assert_int_equal(write(fd, payloads[i], len), (ssize_t)len);
        assert_int_equal(write(fd, "\n", 1), 1);
    }
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd %s/tests/fakes && node -e 'const S=require(\"stripe\");"
             "const ls=require(\"fs\").readFileSync(process.argv[1],\"utf8\").split(\"\\n\");"
             "ls.pop();for(const p of ls)console.log(S.webhooks.generateTestHeaderString("
             "{payload:p,secret:process.argv[2]}))' %s %s",
             getenv("CA_ROOT"), tmp, SECRET_NEW);
    char *out = run_capture(cmd);
    unlink(tmp);
    assert_non_null(out);
    char *save = NULL;
    char *line = strtok_r(out, "\n", &save);
    for (int i = 0; i < n; i++) {
        assert_non_null(line);
        headers[i] = strdup(line);
        line = strtok_r(NULL, "\n", &save);
    }
    free(out);
}

typedef struct {
    const char *payload;
    const char *sig;
    long status;
    char *resp;
    pthread_t th;
} post_t;

static void *post_thread(void *arg)
{
    post_t *p = arg;
    char header[512];
    snprintf(header, sizeof header, "Stripe-Signature: %s", p->sig);
    const char *headers[] = {header, "Content-Type: application/json", NULL};
    p->status = http_call_h("POST", webhook_url, headers, p->payload, &p->resp, NULL);
    return NULL;
}

static double metric_value(const char *name)
{
    char url[256];
    snprintf(url, sizeof url, "%s/metrics", daemon_p.base_url);
    char *m = NULL;
    double v = -1;
    if (http_call("GET", url, NULL, &m) == 200 && m != NULL) {
        char key[128];
        snprintf(key, sizeof key, "\n%s ", name);
        const char *at = strstr(m, key);
        if (at != NULL) {
            v = strtod(at + strlen(key), NULL);
        }
    }
    free(m);
    return v;
}

typedef struct {
    const char *name;
    double want;
} metric_want_t;

static bool metric_reaches(void *arg)
{
    const metric_want_t *mw = arg;
    return metric_value(mw->name) == mw->want;
}

static bool lock_waiters_reach(void *arg)
{
    char *v =
        sqlv("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
             " AND (query LIKE 'INSERT INTO webhook_events%'"
             "      OR query LIKE 'SELECT event_id, outcome FROM billing_webhook_record_batch%')",
             NULL);
    bool ok = v != NULL && atoi(v) == *(const int *)arg;
    free(v);
    return ok;
}

static char *unlinked_payload(const char *evt, const char *sub, const char *cus)
{
    char *p = malloc(1024);
    snprintf(p, 1024,
             "{\"id\":\"%s\",\"object\":\"event\",\"type\":\"customer.subscription.updated\","
             "\"created\":%lld,\"data\":{\"object\":{\"id\":\"%s\",\"object\":\"subscription\","
             "\"customer\":\"%s\",\"status\":\"active\",\"metadata\":{},"
             "\"items\":{\"data\":[{\"price\":{\"id\":\"" PRICE_STUDIO "\"}}]}}}}",
             evt, (long long)time(NULL) - 5, sub, cus);
    return p;
}

static bool link_waiter(void *arg)
{
    (void)arg;
    char *v = sqlv("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                   " AND wait_event = 'advisory'"
                   " AND query LIKE 'SELECT event_id, outcome FROM billing_webhook_record_batch%'",
                   NULL);
    bool ok = v != NULL && atoi(v) == 1;
    free(v);
    return ok;
}

/* Stripe sends checkout.session.completed and the subscription's events at
 * the same moment. A subscription event whose "no user for this customer"
 * test ran before the checkout's link committed, and whose row committed
 * after the checkout had replayed the unlinked events, would stay unlinked
 * for ever (answered 200, never applied). The checkout holds the customer
 * lock (014) while it links: the event waits for it, then sees the link and
 * is applied. */
static void test_link_race(void **state)
{
    (void)state;
    const char *uid = "b0000000-0000-4000-8000-000000000031";
    make_user(uid, "race@example.com");
    PGconn *c = PQconnectdb(getenv("TEST_DATABASE_URL"));
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "BEGIN"));
    char obj[512];
    snprintf(obj, sizeof obj,
             "{\"client_reference_id\":\"%s\",\"customer\":\"cus_race\","
             "\"subscription\":\"sub_race\",\"metadata\":{}}",
             uid);
    const char *p[3] = {obj, PRICE_CREATOR, PRICE_STUDIO};
    PGresult *r = PQexecParams(c,
                               "SELECT billing_apply_event('checkout.session.completed',"
                               " extract(epoch FROM now())::bigint - 10, $1::jsonb, $2, $3)",
                               3, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_string_equal(PQgetvalue(r, 0, 0), "applied");
    PQclear(r);

    /* the checkout is linked but not committed: the event must wait */
    char *payload = unlinked_payload("evt_race_sub", "sub_race", "cus_race");
    char *sig = NULL;
    sign_all((const char *const *)&payload, 1, &sig);
    post_t post = {.payload = payload, .sig = sig};
    assert_int_equal(pthread_create(&post.th, NULL, post_thread, &post), 0);
    bool waited = wait_until(link_waiter, NULL, 10000);
    PQclear(PQexec(c, "COMMIT"));
    PQfinish(c);
    pthread_join(post.th, NULL);
    assert_true(waited);
    assert_int_equal(post.status, 200);
    assert_non_null(post.resp);
    assert_null(strstr(post.resp, "\"unlinked\""));
    assert_sql("SELECT outcome || ' ' || processed::text FROM webhook_events"
               " WHERE event_id = 'evt_race_sub'",
               NULL, "applied true");
    assert_sub(uid, "studio", "active", "500");
    free(post.resp);
    free(payload);
    free(sig);
}

/* Holds the batches in flight (WEBHOOK_BATCH_INFLIGHT = 2 in this suite) on
 * row locks, so the events posted next all wait in the queue and go out as
 * one batch when `release` is called. `blocker` is a connection of the test
 * with an open transaction. */
static PGconn *hold_batches(const char *tag, post_t *blockers, char **payloads, char **sigs)
{
    PGconn *c = PQconnectdb(getenv("TEST_DATABASE_URL"));
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PQclear(PQexec(c, "BEGIN"));
    for (int i = 0; i < 2; i++) {
        char evt[64], sub[64], cus[64];
        snprintf(evt, sizeof evt, "evt_blk_%s_%d", tag, i);
        snprintf(sub, sizeof sub, "sub_blk_%s_%d", tag, i);
        snprintf(cus, sizeof cus, "cus_blk_%s_%d", tag, i);
        const char *p[1] = {evt};
        PGresult *r = PQexecParams(c,
                                   "INSERT INTO webhook_events (event_id, event_type, payload)"
                                   " VALUES ($1, 'x', '{}')",
                                   1, NULL, p, NULL, NULL, 0);
        assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
        PQclear(r);
        payloads[i] = unlinked_payload(evt, sub, cus);
    }
    sign_all((const char *const *)payloads, 2, sigs);
    for (int i = 0; i < 2; i++) {
        blockers[i].payload = payloads[i];
        blockers[i].sig = sigs[i];
        assert_int_equal(pthread_create(&blockers[i].th, NULL, post_thread, &blockers[i]), 0);
        int want = i + 1; /* one batch each: both in flight, both waiting */
        assert_true(wait_until(lock_waiters_reach, &want, 10000));
    }
    return c;
}

static void release_batches(PGconn *c, post_t *blockers, char **payloads, char **sigs)
{
    PQclear(PQexec(c, "ROLLBACK"));
    PQfinish(c);
    for (int i = 0; i < 2; i++) {
        pthread_join(blockers[i].th, NULL);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(blockers[i].status, 200);
        assert_non_null(strstr(blockers[i].resp, "\"unlinked\""));
        free(blockers[i].resp);
        free(payloads[i]);
        free(sigs[i]);
    }
}

/* Posts `n` events at once while two batches are held, so that they form
 * one batch; returns when every answer is in. */
static void post_as_one_batch(const char *tag, char **payloads, post_t *posts, int n)
{
    char *sigs[16];
    assert_true(n <= 16);
    sign_all((const char *const *)payloads, n, sigs);
    post_t blockers[2];
    char *bpayloads[2], *bsigs[2];
    memset(blockers, 0, sizeof blockers);
    PGconn *c = hold_batches(tag, blockers, bpayloads, bsigs);
    for (int i = 0; i < n; i++) {
        posts[i].payload = payloads[i];
        posts[i].sig = sigs[i];
        assert_int_equal(pthread_create(&posts[i].th, NULL, post_thread, &posts[i]), 0);
    }
    /* every event is read and waits for the next batch */
    metric_want_t queued = {"ca_billing_webhook_batch_queue", n};
    bool all_queued = wait_until(metric_reaches, &queued, 10000);
    release_batches(c, blockers, bpayloads, bsigs);
    for (int i = 0; i < n; i++) {
        pthread_join(posts[i].th, NULL);
        free(sigs[i]);
    }
    assert_true(all_queued);
}

/* A batch whose statement fails (one payload PostgreSQL refuses: \u0000 in a
 * string): nothing of it is committed, every event is sent again alone, the
 * bad one gets 400 and is not recorded, the others are recorded. */
static void test_batch_with_a_bad_event(void **state)
{
    (void)state;
    enum { N = 6 };
    char *payloads[N];
    for (int i = 0; i < N - 1; i++) {
        char evt[64], sub[64], cus[64];
        snprintf(evt, sizeof evt, "evt_bbad_%d", i);
        snprintf(sub, sizeof sub, "sub_bbad_%d", i);
        snprintf(cus, sizeof cus, "cus_bbad_%d", i);
        payloads[i] = unlinked_payload(evt, sub, cus);
    }
    payloads[N - 1] = strdup("{\"id\":\"evt_bbad_nul\",\"object\":\"event\","
                             "\"type\":\"customer.tax_id.created\",\"created\":1700000000,"
                             "\"data\":{\"object\":{\"id\":\"txi_1\",\"value\":\"a\\u0000b\"}}}");
    double batches0 = metric_value("ca_billing_webhook_batches_total");
    double events0 = metric_value("ca_billing_webhook_batched_events_total");
    post_t posts[N];
    memset(posts, 0, sizeof posts);
    post_as_one_batch("bad", payloads, posts, N);
    for (int i = 0; i < N; i++) {
        if (i < N - 1) {
            assert_int_equal(posts[i].status, 200);
            assert_non_null(strstr(posts[i].resp, "\"unlinked\""));
        } else {
            assert_int_equal(posts[i].status, 400);
            assert_non_null(strstr(posts[i].resp, "invalid_payload"));
        }
        free(posts[i].resp);
        free(payloads[i]);
    }
    assert_sql("SELECT count(*) || ' ' || bool_or(processed)::text FROM webhook_events"
               " WHERE event_id LIKE 'evt_bbad_%'",
               NULL, "5 false");
    assert_sql("SELECT count(*) FROM webhook_events WHERE event_id = 'evt_bbad_nul'", NULL, "0");
    /* two held batches, the batch of 6 that failed, then 6 batches of one */
    assert_true(metric_value("ca_billing_webhook_batches_total") == batches0 + 2 + 1 + N);
    assert_true(metric_value("ca_billing_webhook_batched_events_total") == events0 + 2 + N + N);
}

/* One batch of mixed events: record-only, unlinked, an earlier processed
 * delivery (duplicate), the same event twice at once, a linked event (applied
 * by billing_webhook_receive_fields) and a linked event whose apply fails
 * (recorded processed = false, 500 for that event only). */
static void test_batch_mixed_outcomes(void **state)
{
    (void)state;
    const char *u1 = "a0000000-0000-4000-8000-0000000000b1";
    const char *u2 = "a0000000-0000-4000-8000-0000000000b2";
    make_user(u1, "batch1@example.com");
    make_user(u2, "batch2@example.com");
    assert_int_equal(sql_exec("INSERT INTO subscriptions (user_id, stripe_customer_id,"
                              " stripe_subscription_id, tier, status, monthly_limit)"
                              " VALUES ($1, 'cus_bmix_1', 'sub_bmix_1', 'creator', 'active', 100),"
                              " ($2, 'cus_bmix_2', 'sub_bmix_2', 'creator', 'active', 100)",
                              2, (const char *const[]){u1, u2}),
                     0);
    /* processed before the batch: the batch answers duplicate */
    const char *dup = "--type invoice.paid --id evt_bmix_dup --set type=customer.tax_id.deleted";
    assert_int_equal(send_event(SECRET_NEW, dup, NULL), 200);

    enum { N = 8 };
    char *payloads[N];
    payloads[0] = strdup("{\"id\":\"evt_bmix_other\",\"object\":\"event\","
                         "\"type\":\"customer.tax_id.created\",\"created\":1700000000,"
                         "\"data\":{\"object\":{\"id\":\"txi_2\"}}}");
    payloads[1] = unlinked_payload("evt_bmix_unl", "sub_bmix_nobody", "cus_bmix_nobody");
    payloads[2] = strdup("{\"id\":\"evt_bmix_dup\",\"object\":\"event\","
                         "\"type\":\"customer.tax_id.deleted\",\"created\":1700000000,"
                         "\"data\":{\"object\":{\"id\":\"txi_3\"}}}");
    payloads[3] = unlinked_payload("evt_bmix_twice", "sub_bmix_twice", "cus_bmix_twice");
    payloads[4] = unlinked_payload("evt_bmix_twice", "sub_bmix_twice", "cus_bmix_twice");
    /* linked: u1's subscription moves to studio */
    payloads[5] = unlinked_payload("evt_bmix_linked", "sub_bmix_1", "cus_bmix_1");
    /* linked, fails: sub_bmix_2 (u2) would take u1's customer id (unique) */
    payloads[6] = unlinked_payload("evt_bmix_fail", "sub_bmix_2", "cus_bmix_1");
    payloads[7] = strdup("{\"id\":\"evt_bmix_trial\",\"object\":\"event\","
                         "\"type\":\"customer.subscription.trial_will_end\",\"created\":1700000000,"
                         "\"data\":{\"object\":{\"id\":\"sub_bmix_nobody\","
                         "\"customer\":\"cus_bmix_nobody\"}}}");
    double batches0 = metric_value("ca_billing_webhook_batches_total");
    post_t posts[N];
    memset(posts, 0, sizeof posts);
    post_as_one_batch("mix", payloads, posts, N);
    const long want_status[N] = {200, 200, 200, 200, 200, 200, 500, 200};
    const char *want_outcome[N] = {"ignored",  "unlinked", "duplicate", "unlinked",
                                   "unlinked", "applied",  NULL,        "recorded"};
    for (int i = 0; i < N; i++) {
        if (posts[i].status != want_status[i] ||
            (want_outcome[i] != NULL && strstr(posts[i].resp, want_outcome[i]) == NULL)) {
            fprintf(stderr, "event %d: %ld %s\n", i, posts[i].status,
                    posts[i].resp != NULL ? posts[i].resp : "");
        }
        assert_int_equal(posts[i].status, want_status[i]);
        if (want_outcome[i] != NULL) {
            assert_non_null(strstr(posts[i].resp, want_outcome[i]));
        }
        free(posts[i].resp);
        free(payloads[i]);
    }
    assert_sql("SELECT string_agg(event_id || ':' || outcome || ':' || processed::text, ','"
               " ORDER BY event_id) FROM webhook_events WHERE event_id LIKE 'evt_bmix_%'",
               NULL,
               "evt_bmix_dup:ignored:true,evt_bmix_fail:failed:false,"
               "evt_bmix_linked:applied:true,evt_bmix_other:ignored:true,"
               "evt_bmix_trial:recorded:true,evt_bmix_twice:unlinked:false,"
               "evt_bmix_unl:unlinked:false");
    char *msg =
        sqlv("SELECT error_message FROM webhook_events WHERE event_id = 'evt_bmix_fail'", NULL);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "23505"));
    free(msg);
    assert_sub(u1, "studio", "active", "500");
    assert_sql("SELECT stripe_customer_id FROM subscriptions WHERE user_id = $1", u2, "cus_bmix_2");
    /* the held two, then the batch of 7 distinct ids, then the second
     * delivery of evt_bmix_twice on its own */
    assert_true(metric_value("ca_billing_webhook_batches_total") == batches0 + 2 + 2);
}

/* ---- usage at the limit edge, under concurrency ---- */

typedef struct {
    const char *user_id;
    int thread_no;
    int jobs;
    int ok, overage, blocked, errors;
} reserve_arg_t;

static void *reserve_thread(void *arg)
{
    reserve_arg_t *a = arg;
    PGconn *c = PQconnectdb(db_url_as("ca_job_worker"));
    if (PQstatus(c) != CONNECTION_OK) {
        a->errors = a->jobs;
        PQfinish(c);
        return NULL;
    }
    for (int i = 0; i < a->jobs; i++) {
        char job[64];
        snprintf(job, sizeof job, "c0000000-0000-4000-8000-%04d%08d", a->thread_no, i);
        const char *p[2] = {job, a->user_id};
        PGresult *r = PQexecParams(c, "SELECT outcome FROM billing_reserve_usage($1, $2)", 2, NULL,
                                   p, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(stderr, "reserve (thread %d, job %s): %s", a->thread_no, job,
                    PQerrorMessage(c));
            a->errors++;
        } else {
            const char *o = PQgetvalue(r, 0, 0);
            if (strcmp(o, "ok") == 0) {
                a->ok++;
            } else if (strcmp(o, "overage") == 0) {
                a->overage++;
                PGresult *f =
                    PQexecParams(c, "SELECT billing_finalize_usage($1)", 1, NULL, p, NULL, NULL, 0);
                PQclear(f);
            } else {
                a->blocked++;
            }
        }
        PQclear(r);
    }
    PQfinish(c);
    return NULL;
}

static void reserve_concurrently(const char *uid, int threads, int per_thread, int base, int *ok,
                                 int *overage, int *blocked)
{
    pthread_t th[16];
    reserve_arg_t args[16];
    memset(args, 0, sizeof args);
    assert_true(threads <= 16);
    for (int i = 0; i < threads; i++) {
        args[i].user_id = uid;
        args[i].thread_no = base + i;
        args[i].jobs = per_thread;
        assert_int_equal(pthread_create(&th[i], NULL, reserve_thread, &args[i]), 0);
    }
    *ok = *overage = *blocked = 0;
    int errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL); /* join all before any assert can jump out */
    }
    for (int i = 0; i < threads; i++) {
        errors += args[i].errors;
        *ok += args[i].ok;
        *overage += args[i].overage;
        *blocked += args[i].blocked;
    }
    assert_int_equal(errors, 0);
}

static void set_plan(const char *uid, const char *tier, const char *limit, const char *cus)
{
    const char *p[4] = {uid, tier, limit, cus};
    assert_int_equal(sql_exec("INSERT INTO subscriptions (user_id, tier, status, monthly_limit,"
                              " stripe_customer_id, current_period_start, current_period_end)"
                              " VALUES ($1, $2, 'active', $3::int, $4,"
                              "  timezone('UTC', now()) - interval '3 days',"
                              "  timezone('UTC', now()) + interval '27 days')"
                              " ON CONFLICT (user_id) DO UPDATE SET tier = $2,"
                              "  monthly_limit = $3::int, stripe_customer_id = $4",
                              4, p),
                     0);
}

static void test_usage_limit_edge_concurrency(void **state)
{
    (void)state;
    int ok, overage, blocked;
    /* creator: 100 included, then overage (+50 cents each) */
    const char *cr = "d0000000-0000-4000-8000-000000000001";
    make_user(cr, "creator@example.com");
    set_plan(cr, "creator", "100", "cus_meter_creator");
    reserve_concurrently(cr, 8, 15, 10, &ok, &overage, &blocked);
    assert_int_equal(ok, 100);
    assert_int_equal(overage, 20);
    assert_int_equal(blocked, 0);
    assert_sql("SELECT images_processed || ' ' || images_overage || ' ' || overage_charged_cents"
               " FROM usage_tracking WHERE user_id = $1",
               cr, "120 20 1000");
    /* the paid period is the subscription's, not the calendar month */
    assert_sql("SELECT (month = (SELECT current_period_start::date FROM subscriptions"
               " WHERE user_id = $1))::text FROM usage_tracking WHERE user_id = $1",
               cr, "true");
    assert_sql("SELECT count(*) FROM meter_outbox WHERE user_id = $1", cr, "20");

    /* free: blocked at 10 */
    const char *fr = "d0000000-0000-4000-8000-000000000002";
    make_user(fr, "free@example.com");
    reserve_concurrently(fr, 6, 5, 30, &ok, &overage, &blocked);
    assert_int_equal(ok, 10);
    assert_int_equal(overage, 0);
    assert_int_equal(blocked, 20);
    assert_sql("SELECT images_processed || ' ' || tier || ' ' || monthly_limit"
               " FROM usage_tracking WHERE user_id = $1",
               fr, "10 free 10");

    /* studio: blocked at 500 (start at 495) */
    const char *st = "d0000000-0000-4000-8000-000000000003";
    make_user(st, "studio@example.com");
    set_plan(st, "studio", "500", "cus_meter_studio");
    reserve_concurrently(st, 1, 1, 40, &ok, &overage, &blocked);
    assert_int_equal(sql_exec("UPDATE usage_tracking SET images_processed = 495 WHERE user_id = $1",
                              1, (const char *const[]){st}),
                     0);
    reserve_concurrently(st, 5, 4, 41, &ok, &overage, &blocked);
    assert_int_equal(ok, 5);
    assert_int_equal(blocked, 15);
    assert_sql("SELECT images_processed FROM usage_tracking WHERE user_id = $1", st, "500");

    /* the free user upgrades mid-month: the limit rises at once */
    set_plan(fr, "creator", "100", "cus_meter_upgrade");
    assert_int_equal(sql_exec("UPDATE subscriptions SET current_period_start = NULL,"
                              " current_period_end = NULL WHERE user_id = $1",
                              1, (const char *const[]){fr}),
                     0);
    reserve_concurrently(fr, 2, 5, 50, &ok, &overage, &blocked);
    assert_int_equal(ok, 10);
    assert_int_equal(blocked, 0);
    assert_sql("SELECT images_processed || ' ' || tier || ' ' || monthly_limit"
               " FROM usage_tracking WHERE user_id = $1",
               fr, "20 creator 100");
}

/* ---- the outbox across Stripe faults ---- */

static bool outbox_settled(void *arg)
{
    (void)arg;
    char *v = sqlv("SELECT count(*) FROM meter_outbox WHERE status = 'pending'", NULL);
    bool done = v != NULL && strcmp(v, "0") == 0;
    free(v);
    return done;
}

/* The outbox gauges (a task every 5 s) show the final state: one failed row,
 * none pending. */
static bool outbox_gauges_settled(void *url)
{
    char *metrics = NULL;
    bool yes = http_call("GET", url, NULL, &metrics) == 200 && metrics != NULL &&
               strstr(metrics, "ca_billing_meter_outbox_failed 1") != NULL &&
               strstr(metrics, "ca_billing_meter_outbox_depth 0") != NULL;
    free(metrics);
    return yes;
}

static void test_meter_outbox_faults(void **state)
{
    (void)state;
    /* The 20 overage rows from the previous test are being sent as we go;
     * make Stripe fail hard first, then recover. */
    fake_add_fault(fake.base_url,
                   "{\"match\":{\"method\":\"POST\",\"path\":\"/v1/billing/meter_events\"},"
                   "\"count\":4,\"action\":\"status\",\"status\":500}");
    fake_add_fault(fake.base_url,
                   "{\"match\":{\"method\":\"POST\",\"path\":\"/v1/billing/meter_events\"},"
                   "\"count\":3,\"action\":\"drop\",\"when\":\"after\"}");
    fake_add_fault(fake.base_url,
                   "{\"match\":{\"method\":\"POST\",\"path\":\"/v1/billing/meter_events\"},"
                   "\"count\":2,\"action\":\"status\",\"status\":429}");
    /* five more overage images for another creator, finalized twice (idempotent) */
    const char *cr = "d0000000-0000-4000-8000-000000000004";
    make_user(cr, "meter2@example.com");
    set_plan(cr, "creator", "0", "cus_meter_two");
    for (int i = 0; i < 5; i++) {
        char job[64];
        snprintf(job, sizeof job, "e0000000-0000-4000-8000-%012d", i);
        const char *p[2] = {job, cr};
        assert_int_equal(sql_exec("SELECT billing_reserve_usage($1, $2)", 2, p), 0);
        assert_int_equal(sql_exec("SELECT billing_finalize_usage($1)", 1, p), 0);
        assert_int_equal(sql_exec("SELECT billing_finalize_usage($1)", 1, p), 0);
    }
    assert_true(wait_until(outbox_settled, NULL, 30000));
    assert_sql("SELECT count(*) FROM meter_outbox WHERE status = 'sent'", NULL, "25");

    /* Stripe counted exactly one event per image, each with its job id */
    cJSON *root = fake_admin(fake.base_url, "GET", "/__admin/meter_events", NULL);
    const cJSON *events = cJSON_GetObjectItem(root, "events");
    const cJSON *ev;
    int mine = 0;
    cJSON_ArrayForEach(ev, events)
    {
        if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(ev, "event_name")), "image_overage") !=
            0) {
            continue; /* the client test's own event */
        }
        const char *ident = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "identifier"));
        assert_non_null(ident);
        assert_sql("SELECT count(*) FROM meter_outbox WHERE job_id::text = $1 AND status = 'sent'",
                   ident, "1");
        const cJSON *payload = cJSON_GetObjectItem(ev, "payload");
        assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(payload, "value")), "1");
        if (strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(ev, "event_name")), "image_overage") ==
            0) {
            mine++;
        }
    }
    assert_int_equal(mine, 25);
    const cJSON *totals = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "totals"), "image_overage");
    assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(totals, "cus_meter_creator")),
                     20);
    assert_int_equal((int)cJSON_GetNumberValue(cJSON_GetObjectItem(totals, "cus_meter_two")), 5);
    /* the dropped answers came back as "already exists" */
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(root, "duplicates_rejected")) >= 1);
    cJSON_Delete(root);
    assert_sql("SELECT (count(*) >= 1)::text FROM meter_outbox"
               " WHERE last_error = 'already existed at Stripe'",
               NULL, "true");
    assert_sql("SELECT (max(attempts) > 1)::text FROM meter_outbox", NULL, "true");

    /* a permanent error (400): failed with its reason, counted for alerts */
    fake_add_fault(fake.base_url,
                   "{\"match\":{\"method\":\"POST\",\"path\":\"/v1/billing/meter_events\"},"
                   "\"count\":1,\"action\":\"status\",\"status\":400}");
    const char *p[2] = {"e0000000-0000-4000-8000-000000000099", cr};
    assert_int_equal(sql_exec("SELECT billing_reserve_usage($1, $2)", 2, p), 0);
    assert_int_equal(sql_exec("SELECT billing_finalize_usage($1)", 1, p), 0);
    assert_true(wait_until(outbox_settled, NULL, 10000));
    assert_sql("SELECT status FROM meter_outbox WHERE job_id = $1", p[0], "failed");
    char *why = sqlv("SELECT last_error FROM meter_outbox WHERE job_id = $1", p[0]);
    assert_non_null(why);
    assert_non_null(strstr(why, "invalid_request"));
    free(why);
    char url[256];
    snprintf(url, sizeof url, "%s/metrics", daemon_p.base_url);
    char *metrics = NULL;
    /* the gauges refresh every 5 s */
    assert_true(wait_until(outbox_gauges_settled, url, 30000));
    assert_int_equal(http_call("GET", url, NULL, &metrics), 200);
    assert_non_null(strstr(metrics, "ca_billing_meter_failed_total 1"));
    assert_non_null(strstr(metrics, "ca_billing_meter_calls_total{status=\"sent\"}"));
    assert_non_null(strstr(metrics, "ca_billing_meter_calls_total{status=\"duplicate\"}"));
    assert_non_null(strstr(metrics, "ca_billing_meter_calls_total{status=\"transient\"}"));
    assert_non_null(strstr(metrics, "ca_billing_meter_outbox_depth 0"));
    assert_non_null(strstr(metrics, "ca_billing_meter_outbox_failed 1"));
    assert_non_null(
        strstr(metrics, "ca_billing_webhook_events_total{type=\"customer.subscription.created\""));
    free(metrics);
}

/* The meter client on its own: a repeated identifier is "already delivered". */
static void test_meter_client_duplicate(void **state)
{
    (void)state;
    stripe_client_t *sc = client();
    stripe_meter_event_t ev = {"client_test_event", "cus_client", 1,
                               "f0000000-0000-4000-8000-000000000001", (long long)time(NULL)};
    bool already = true;
    stripe_error_t err;
    assert_int_equal(stripe_create_meter_event(sc, &ev, &already, &err), STRIPE_OK);
    assert_false(already);
    assert_int_equal(stripe_create_meter_event(sc, &ev, &already, &err), STRIPE_OK);
    assert_true(already);
    /* a bad value is a permanent error, not a duplicate */
    ev.identifier = "f0000000-0000-4000-8000-000000000002";
    ev.timestamp = 1000; /* older than 35 days */
    assert_int_equal(stripe_create_meter_event(sc, &ev, &already, &err), STRIPE_ERR_INVALID);
    assert_false(already);
    assert_string_equal(err.type, "invalid_request_error");
    stripe_client_free(sc);
}

/* The meter outbox's retry policy: backoff_delay_ms with its base and max. */
static void test_backoff(void **state)
{
    (void)state;
    for (int i = 0; i < 50; i++) {
        long d1 = (long)backoff_delay_ms(1, 1000, 60000);
        long d3 = (long)backoff_delay_ms(3, 1000, 60000);
        long d20 = (long)backoff_delay_ms(20, 1000, 60000);
        assert_true(d1 >= 500 && d1 <= 1000);
        assert_true(d3 >= 2000 && d3 <= 4000);
        assert_true(d20 >= 30000 && d20 <= 60000);
    }
}

/* Last: SIGTERM, and billing-webhook exits 0 (a sanitizer's report would
 * not; a failed group teardown would go unnoticed by cmocka). */
static void test_daemon_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&daemon_p), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_signatures),
        cmocka_unit_test(test_malformed_and_big),
        cmocka_unit_test(test_duplicates_and_unknown),
        cmocka_unit_test(test_fast_paths),
        cmocka_unit_test(test_apply_failure),
        cmocka_unit_test(test_batch_with_a_bad_event),
        cmocka_unit_test(test_batch_mixed_outcomes),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_payment_failed_notice),
        cmocka_unit_test(test_checkout_and_transitions),
        cmocka_unit_test(test_unlinked_then_checkout),
        cmocka_unit_test(test_link_race),
        cmocka_unit_test(test_meter_client_duplicate),
        cmocka_unit_test(test_usage_limit_edge_concurrency),
        cmocka_unit_test(test_meter_outbox_faults),
        cmocka_unit_test(test_daemon_exits_cleanly), /* last: stops billing-webhook */
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
