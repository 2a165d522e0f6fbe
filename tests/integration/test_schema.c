/*
 * test_schema — the migrated schema against seed/database-schema.md, the role
 * matrix (who may read and write what), and the cross-slice SQL functions,
 * including the quota functions under concurrency.
 *
 * The database (TEST_DATABASE_URL, superuser) is already migrated. Roles are
 * reached as postgresql://<role>@127.0.0.1:$TEST_PG_PORT/$TEST_DATABASE_NAME.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GATEWAY "ca_api_gateway"
#define BILLING "ca_billing_webhook"
#define WORKER "ca_job_worker"
#define POLLER "ca_drive_poller"

static const char *const all_roles[] = {GATEWAY, BILLING, WORKER, POLLER};
#define NROLES (sizeof(all_roles) / sizeof(all_roles[0]))

static char db_name[256];
static char pg_port[32];
static PGconn *super; /* superuser connection for fixtures and catalog queries */

/* ---------------------------------------------------------------- helpers */

static void role_url(const char *role, char *out, size_t outlen)
{
    snprintf(out, outlen, "postgresql://%s@127.0.0.1:%s/%s", role, pg_port, db_name);
}

/* role NULL: the superuser URL. Fails the test when the connection fails. */
static PGconn *connect_as(const char *role)
{
    char url[512];
    if (role == NULL) {
        snprintf(url, sizeof(url), "%s", getenv("TEST_DATABASE_URL"));
    } else {
        role_url(role, url, sizeof(url));
    }
    PGconn *conn = PQconnectdb(url);
    if (PQstatus(conn) != CONNECTION_OK) {
        fail_msg("connect as %s: %s", role != NULL ? role : "superuser", PQerrorMessage(conn));
    }
    /* This test checks grants and functions, not row-level security (that is
     * test_gateway_api's RLS proof): switch the policies' system mode on. */
    PGresult *res = PQexec(conn, "SELECT set_config('app.rls_system', 'on', false)");
    PQclear(res);
    return conn;
}

/* Runs a statement; returns the result whatever its status (caller PQclears). */
static PGresult *run(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
    return PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
}

static bool result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* Runs a statement that must succeed; returns the result (caller PQclears). */
static PGresult *must(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = run(conn, sql, nparams, params);
    if (!result_ok(res)) {
        fail_msg("statement failed: %s\n  %s", sql, PQresultErrorMessage(res));
    }
    return res;
}

static void must_cmd(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
    PQclear(must(conn, sql, nparams, params));
}

/* Runs a statement; copies its SQLSTATE into state ("" on success). */
static void run_state(PGconn *conn, const char *sql, int nparams, const char *const *params,
                      char *state, size_t statelen)
{
    PGresult *res = run(conn, sql, nparams, params);
    const char *code = result_ok(res) ? "" : PQresultErrorField(res, PG_DIAG_SQLSTATE);
    snprintf(state, statelen, "%s", code != NULL ? code : "?");
    PQclear(res);
}

/* One-value query as superuser: the value as a long (NULL → -1). */
static long query_long(const char *sql, int nparams, const char *const *params)
{
    PGresult *res = must(super, sql, nparams, params);
    assert_int_equal(PQntuples(res), 1);
    long v = PQgetisnull(res, 0, 0) ? -1 : strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

/* One-value query as superuser, copied into out ("" for NULL). */
static void query_text(const char *sql, int nparams, const char *const *params, char *out,
                       size_t outlen)
{
    PGresult *res = must(super, sql, nparams, params);
    assert_int_equal(PQntuples(res), 1);
    snprintf(out, outlen, "%s", PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* Creates a user (as superuser) and returns its id in out (37 bytes). */
static void make_user(const char *tag, char *out)
{
    const char *params[] = {tag};
    query_text("INSERT INTO users (google_id, email, name) "
               "VALUES ('g_' || $1, $1 || '@example.test', $1) RETURNING id",
               1, params, out, 37);
}

/* Deterministic, distinct job ids for one test: prefix 1..9999. */
static void job_uuid(int group, int n, char *out)
{
    snprintf(out, 37, "%08d-0000-4000-8000-%012d", group, n);
}

static int group_setup(void **state)
{
    (void)state;
    const char *url = getenv("TEST_DATABASE_URL");
    if (url == NULL || *url == '\0') {
        fprintf(stderr, "TEST_DATABASE_URL is not set\n");
        return -1;
    }
    const char *name = getenv("TEST_DATABASE_NAME");
    if (name == NULL || *name == '\0') {
        const char *slash = strrchr(url, '/');
        name = slash != NULL ? slash + 1 : "";
    }
    snprintf(db_name, sizeof(db_name), "%s", name);
    char *q = strchr(db_name, '?');
    if (q != NULL) {
        *q = '\0';
    }
    const char *port = getenv("TEST_PG_PORT");
    snprintf(pg_port, sizeof(pg_port), "%s", port != NULL ? port : "5432");
    super = PQconnectdb(url);
    if (PQstatus(super) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(super));
        PQfinish(super);
        super = NULL;
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    PQfinish(super);
    super = NULL;
    return 0;
}

/* ---------------------------------------------------- columns of the seed */

typedef struct {
    const char *table;
    const char *column;
    const char *data_type;
    int max_length;             /* 0: NULL */
    const char *column_default; /* NULL: no default */
    const char *is_nullable;
} column_spec_t;

#define VC "character varying"
#define TS "timestamp without time zone"
#define NOW "now()"
#define UUIDPK(t)                                                                                  \
    {                                                                                              \
        t, "id", "uuid", 0, "gen_random_uuid()", "NO"                                              \
    }
#define STAMPS(t)                                                                                  \
    {t, "created_at", TS, 0, NOW, "YES"},                                                          \
    {                                                                                              \
        t, "updated_at", TS, 0, NOW, "YES"                                                         \
    }

/* Written from seed/database-schema.md, table by table. */
static const column_spec_t seed_columns[] = {
    UUIDPK("users"),
    {"users", "google_id", VC, 255, NULL, "NO"},
    {"users", "email", VC, 255, NULL, "NO"},
    {"users", "name", VC, 255, NULL, "YES"},
    {"users", "avatar_url", "text", 0, NULL, "YES"},
    {"users", "drive_access_token", "text", 0, NULL, "YES"},
    {"users", "drive_refresh_token", "text", 0, NULL, "YES"},
    {"users", "drive_token_expires_at", TS, 0, NULL, "YES"},
    {"users", "watched_folder_id", VC, 255, NULL, "YES"},
    {"users", "output_folder_id", VC, 255, NULL, "YES"},
    {"users", "default_preset", VC, 50, "'portrait_pro'::character varying", "YES"},
    {"users", "email_notifications", "boolean", 0, "true", "YES"},
    {"users", "is_active", "boolean", 0, "true", "YES"},
    {"users", "last_login_at", TS, 0, NULL, "YES"},
    STAMPS("users"),

    UUIDPK("subscriptions"),
    {"subscriptions", "user_id", "uuid", 0, NULL, "YES"},
    {"subscriptions", "stripe_customer_id", VC, 255, NULL, "YES"},
    {"subscriptions", "stripe_subscription_id", VC, 255, NULL, "YES"},
    {"subscriptions", "tier", VC, 20, "'free'::character varying", "NO"},
    {"subscriptions", "status", VC, 20, "'active'::character varying", "NO"},
    {"subscriptions", "monthly_limit", "integer", 0, "10", "NO"},
    {"subscriptions", "current_period_start", TS, 0, NULL, "YES"},
    {"subscriptions", "current_period_end", TS, 0, NULL, "YES"},
    {"subscriptions", "cancel_at_period_end", "boolean", 0, "false", "YES"},
    STAMPS("subscriptions"),

    UUIDPK("jobs"),
    {"jobs", "user_id", "uuid", 0, NULL, "YES"},
    {"jobs", "status", VC, 20, "'queued'::character varying", "NO"},
    {"jobs", "drive_file_id", VC, 255, NULL, "NO"},
    {"jobs", "drive_file_name", VC, 500, NULL, "NO"},
    {"jobs", "drive_folder_id", VC, 255, NULL, "NO"},
    {"jobs", "file_size_bytes", "bigint", 0, NULL, "YES"},
    {"jobs", "file_mime_type", VC, 100, NULL, "YES"},
    {"jobs", "preset_name", VC, 50, NULL, "NO"},
    {"jobs", "started_at", TS, 0, NULL, "YES"},
    {"jobs", "completed_at", TS, 0, NULL, "YES"},
    {"jobs", "processing_time_ms", "integer", 0, NULL, "YES"},
    {"jobs", "output_drive_file_id", VC, 255, NULL, "YES"},
    {"jobs", "output_file_name", VC, 500, NULL, "YES"},
    {"jobs", "output_url", "text", 0, NULL, "YES"},
    {"jobs", "error_code", VC, 50, NULL, "YES"},
    {"jobs", "error_message", "text", 0, NULL, "YES"},
    {"jobs", "retry_count", "integer", 0, "0", "YES"},
    {"jobs", "max_retries", "integer", 0, "3", "YES"},
    {"jobs", "comfyui_prompt_id", VC, 255, NULL, "YES"},
    {"jobs", "worker_id", VC, 100, NULL, "YES"},
    STAMPS("jobs"),

    UUIDPK("usage_tracking"),
    {"usage_tracking", "user_id", "uuid", 0, NULL, "YES"},
    {"usage_tracking", "month", "date", 0, NULL, "NO"},
    {"usage_tracking", "images_processed", "integer", 0, "0", "YES"},
    {"usage_tracking", "images_failed", "integer", 0, "0", "YES"},
    {"usage_tracking", "images_overage", "integer", 0, "0", "YES"},
    {"usage_tracking", "tier", VC, 20, NULL, "NO"},
    {"usage_tracking", "monthly_limit", "integer", 0, NULL, "NO"},
    {"usage_tracking", "overage_charged_cents", "integer", 0, "0", "YES"},
    STAMPS("usage_tracking"),

    UUIDPK("drive_polls"),
    {"drive_polls", "user_id", "uuid", 0, NULL, "YES"},
    {"drive_polls", "folder_id", VC, 255, NULL, "NO"},
    /* departure (docs/schema.md): NOT NULL per seed, with a default of now() */
    {"drive_polls", "last_poll_at", TS, 0, NOW, "NO"},
    {"drive_polls", "last_modified_time", TS, 0, NULL, "YES"},
    {"drive_polls", "files_found", "integer", 0, "0", "YES"},
    {"drive_polls", "poll_status", VC, 20, "'success'::character varying", "YES"},
    {"drive_polls", "error_message", "text", 0, NULL, "YES"},
    STAMPS("drive_polls"),

    UUIDPK("presets"),
    {"presets", "created_by_user_id", "uuid", 0, NULL, "YES"},
    {"presets", "name", VC, 100, NULL, "NO"},
    {"presets", "description", "text", 0, NULL, "YES"},
    {"presets", "workflow_json", "jsonb", 0, NULL, "NO"},
    {"presets", "thumbnail_url", "text", 0, NULL, "YES"},
    {"presets", "category", VC, 50, NULL, "YES"},
    {"presets", "is_public", "boolean", 0, "false", "YES"},
    {"presets", "is_premium", "boolean", 0, "false", "YES"},
    {"presets", "price_cents", "integer", 0, "0", "YES"},
    {"presets", "downloads", "integer", 0, "0", "YES"},
    {"presets", "rating_avg", "numeric", 0, "0.0", "YES"},
    {"presets", "rating_count", "integer", 0, "0", "YES"},
    {"presets", "is_active", "boolean", 0, "true", "YES"},
    STAMPS("presets"),

    UUIDPK("webhook_events"),
    {"webhook_events", "event_id", VC, 255, NULL, "NO"},
    {"webhook_events", "event_type", VC, 100, NULL, "NO"},
    {"webhook_events", "payload", "jsonb", 0, NULL, "NO"},
    {"webhook_events", "processed", "boolean", 0, "false", "YES"},
    {"webhook_events", "processed_at", TS, 0, NULL, "YES"},
    {"webhook_events", "error_message", "text", 0, NULL, "YES"},
    {"webhook_events", "created_at", TS, 0, NOW, "YES"},
};

static void check_column(const column_spec_t *c)
{
    const char *params[] = {c->table, c->column};
    PGresult *res = must(super,
                         "SELECT data_type, character_maximum_length, column_default, is_nullable "
                         "FROM information_schema.columns "
                         "WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2",
                         2, params);
    if (PQntuples(res) != 1) {
        PQclear(res);
        fail_msg("missing column %s.%s", c->table, c->column);
    }
    char got_type[64], got_default[128], got_nullable[8];
    snprintf(got_type, sizeof(got_type), "%s", PQgetvalue(res, 0, 0));
    int got_len = PQgetisnull(res, 0, 1) ? 0 : atoi(PQgetvalue(res, 0, 1));
    bool default_null = PQgetisnull(res, 0, 2);
    snprintf(got_default, sizeof(got_default), "%s", default_null ? "" : PQgetvalue(res, 0, 2));
    snprintf(got_nullable, sizeof(got_nullable), "%s", PQgetvalue(res, 0, 3));
    PQclear(res);

    if (strcmp(got_type, c->data_type) != 0) {
        fail_msg("%s.%s type %s, want %s", c->table, c->column, got_type, c->data_type);
    }
    if (got_len != c->max_length) {
        fail_msg("%s.%s length %d, want %d", c->table, c->column, got_len, c->max_length);
    }
    if (c->column_default == NULL ? !default_null
                                  : default_null || strcmp(got_default, c->column_default) != 0) {
        fail_msg("%s.%s default '%s', want '%s'", c->table, c->column, got_default,
                 c->column_default != NULL ? c->column_default : "(none)");
    }
    if (strcmp(got_nullable, c->is_nullable) != 0) {
        fail_msg("%s.%s is_nullable %s, want %s", c->table, c->column, got_nullable,
                 c->is_nullable);
    }
}

static void test_seed_columns(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(seed_columns) / sizeof(seed_columns[0]); i++) {
        check_column(&seed_columns[i]);
    }
    /* DECIMAL(3,2) */
    assert_int_equal(query_long("SELECT numeric_precision * 100 + numeric_scale "
                                "FROM information_schema.columns WHERE table_schema = 'public' "
                                "AND table_name = 'presets' AND column_name = 'rating_avg'",
                                0, NULL),
                     302);
}

/* jobs_archive has every column of jobs, same type, plus archived_at. */
static void test_jobs_archive_columns(void **state)
{
    (void)state;
    assert_int_equal(
        query_long("SELECT count(*) FROM information_schema.columns j "
                   "WHERE j.table_schema = 'public' AND j.table_name = 'jobs' "
                   "AND NOT EXISTS (SELECT 1 FROM information_schema.columns a "
                   "  WHERE a.table_schema = 'public' AND a.table_name = 'jobs_archive' "
                   "  AND a.column_name = j.column_name AND a.data_type = j.data_type "
                   "  AND a.character_maximum_length IS NOT DISTINCT FROM "
                   "      j.character_maximum_length)",
                   0, NULL),
        0);
    assert_int_equal(query_long("SELECT count(*) FROM information_schema.columns "
                                "WHERE table_schema = 'public' AND table_name = 'jobs_archive' "
                                "AND column_name = 'archived_at' AND is_nullable = 'NO'",
                                0, NULL),
                     1);
}

/* ----------------------------------------------------- indexes and keys */

typedef struct {
    const char *name;
    const char *def;
} index_spec_t;

static const index_spec_t seed_indexes[] = {
    {"idx_users_google_id",
     "CREATE INDEX idx_users_google_id ON public.users USING btree (google_id)"},
    {"idx_users_email", "CREATE INDEX idx_users_email ON public.users USING btree (email)"},
    {"idx_users_created_at",
     "CREATE INDEX idx_users_created_at ON public.users USING btree (created_at)"},
    {"idx_subscriptions_user_id",
     "CREATE INDEX idx_subscriptions_user_id ON public.subscriptions USING btree (user_id)"},
    {"idx_subscriptions_stripe_customer_id",
     "CREATE INDEX idx_subscriptions_stripe_customer_id ON public.subscriptions USING btree "
     "(stripe_customer_id)"},
    {"idx_subscriptions_one_per_user",
     "CREATE UNIQUE INDEX idx_subscriptions_one_per_user ON public.subscriptions USING btree "
     "(user_id)"},
    {"idx_jobs_user_id", "CREATE INDEX idx_jobs_user_id ON public.jobs USING btree (user_id)"},
    {"idx_jobs_status", "CREATE INDEX idx_jobs_status ON public.jobs USING btree (status)"},
    {"idx_jobs_created_at",
     "CREATE INDEX idx_jobs_created_at ON public.jobs USING btree (created_at)"},
    {"idx_jobs_user_status",
     "CREATE INDEX idx_jobs_user_status ON public.jobs USING btree (user_id, status)"},
    {"idx_jobs_drive_file_id",
     "CREATE INDEX idx_jobs_drive_file_id ON public.jobs USING btree (drive_file_id)"},
    {"idx_usage_user_month",
     "CREATE INDEX idx_usage_user_month ON public.usage_tracking USING btree (user_id, month)"},
    {"idx_usage_month",
     "CREATE INDEX idx_usage_month ON public.usage_tracking USING btree (month)"},
    {"idx_drive_polls_user_id",
     "CREATE INDEX idx_drive_polls_user_id ON public.drive_polls USING btree (user_id)"},
    {"idx_drive_polls_folder_id",
     "CREATE INDEX idx_drive_polls_folder_id ON public.drive_polls USING btree (folder_id)"},
    {"idx_drive_polls_last_poll",
     "CREATE INDEX idx_drive_polls_last_poll ON public.drive_polls USING btree (last_poll_at)"},
    {"idx_presets_created_by",
     "CREATE INDEX idx_presets_created_by ON public.presets USING btree (created_by_user_id)"},
    {"idx_presets_category",
     "CREATE INDEX idx_presets_category ON public.presets USING btree (category)"},
    {"idx_presets_public",
     "CREATE INDEX idx_presets_public ON public.presets USING btree (is_public) WHERE (is_public = true)"},
    {"idx_presets_rating",
     "CREATE INDEX idx_presets_rating ON public.presets USING btree (rating_avg DESC)"},
    {"idx_webhook_events_event_type",
     "CREATE INDEX idx_webhook_events_event_type ON public.webhook_events USING btree (event_type)"},
    {"idx_webhook_events_processed",
     "CREATE INDEX idx_webhook_events_processed ON public.webhook_events USING btree (processed)"},
    {"idx_webhook_events_created_at",
     "CREATE INDEX idx_webhook_events_created_at ON public.webhook_events USING btree (created_at)"},
    /* additions the functions rely on */
    {"idx_presets_system_name",
     "CREATE UNIQUE INDEX idx_presets_system_name ON public.presets USING btree (name) WHERE "
     "(created_by_user_id IS NULL)"},
    {"idx_drive_polls_one_active_per_user",
     "CREATE UNIQUE INDEX idx_drive_polls_one_active_per_user ON public.drive_polls USING btree "
     "(user_id) WHERE active"},
};

static void test_seed_indexes(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(seed_indexes) / sizeof(seed_indexes[0]); i++) {
        const char *params[] = {seed_indexes[i].name};
        char def[512];
        PGresult *res = must(super,
                             "SELECT indexdef FROM pg_indexes "
                             "WHERE schemaname = 'public' AND indexname = $1",
                             1, params);
        if (PQntuples(res) != 1) {
            PQclear(res);
            fail_msg("missing index %s", seed_indexes[i].name);
        }
        snprintf(def, sizeof(def), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        if (strcmp(def, seed_indexes[i].def) != 0) {
            fail_msg("index %s is\n  %s\nwant\n  %s", seed_indexes[i].name, def,
                     seed_indexes[i].def);
        }
    }
}

typedef struct {
    const char *table;
    const char *def; /* pg_get_constraintdef */
} constraint_spec_t;

static const constraint_spec_t seed_constraints[] = {
    {"users", "PRIMARY KEY (id)"},
    {"users", "UNIQUE (google_id)"},
    {"users", "UNIQUE (email)"},
    {"subscriptions", "PRIMARY KEY (id)"},
    {"subscriptions", "UNIQUE (stripe_customer_id)"},
    {"subscriptions", "UNIQUE (stripe_subscription_id)"},
    {"subscriptions", "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"},
    {"jobs", "PRIMARY KEY (id)"},
    {"jobs", "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"},
    {"jobs", "UNIQUE (user_id, drive_file_id)"},
    {"usage_tracking", "PRIMARY KEY (id)"},
    {"usage_tracking", "UNIQUE (user_id, month)"},
    {"usage_tracking", "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"},
    {"drive_polls", "PRIMARY KEY (id)"},
    {"drive_polls", "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE"},
    {"drive_polls", "UNIQUE (user_id, folder_id)"},
    {"presets", "PRIMARY KEY (id)"},
    {"presets", "FOREIGN KEY (created_by_user_id) REFERENCES users(id) ON DELETE SET NULL"},
    {"webhook_events", "PRIMARY KEY (id)"},
    {"webhook_events", "UNIQUE (event_id)"},
    {"preset_ratings", "PRIMARY KEY (user_id, preset_id)"},
    {"usage_reservations", "PRIMARY KEY (job_id)"},
    {"meter_outbox", "UNIQUE (job_id)"},
};

static void test_seed_constraints(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(seed_constraints) / sizeof(seed_constraints[0]); i++) {
        const char *params[] = {seed_constraints[i].table, seed_constraints[i].def};
        long n = query_long("SELECT count(*) FROM pg_constraint "
                            "WHERE conrelid = ('public.' || $1)::regclass "
                            "AND pg_get_constraintdef(oid) = $2",
                            2, params);
        if (n != 1) {
            fail_msg("%s: constraint '%s' found %ld times", seed_constraints[i].table,
                     seed_constraints[i].def, n);
        }
    }
}

/* Every table with updated_at keeps it current with a BEFORE UPDATE trigger. */
static void test_updated_at_triggers(void **state)
{
    (void)state;
    PGresult *res = must(super,
                         "SELECT c.table_name FROM information_schema.columns c "
                         "JOIN information_schema.tables t USING (table_schema, table_name) "
                         "WHERE c.table_schema = 'public' AND c.column_name = 'updated_at' "
                         "AND t.table_type = 'BASE TABLE' "
                         "AND NOT EXISTS (SELECT 1 FROM pg_trigger g "
                         "  WHERE g.tgrelid = ('public.' || c.table_name)::regclass "
                         "  AND NOT g.tgisinternal AND (g.tgtype & 2) <> 0 " /* BEFORE */
                         "  AND (g.tgtype & 16) <> 0)",                      /* UPDATE */
                         0, NULL);
    if (PQntuples(res) != 0) {
        char table[128];
        snprintf(table, sizeof(table), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        fail_msg("table %s has updated_at but no BEFORE UPDATE trigger", table);
    }
    PQclear(res);
    assert_true(query_long("SELECT count(*) FROM information_schema.columns "
                           "WHERE table_schema = 'public' AND column_name = 'updated_at'",
                           0, NULL) >= 12);

    /* and the trigger works, as the owner */
    char uid[37];
    make_user("touch", uid);
    PGconn *gw = connect_as(GATEWAY);
    const char *params[] = {uid};
    /* back-date it with triggers off (replica mode) */
    must_cmd(super, "SET session_replication_role = replica", 0, NULL);
    must_cmd(super, "UPDATE users SET updated_at = '2000-01-01' WHERE id = $1", 1, params);
    must_cmd(super, "RESET session_replication_role", 0, NULL);
    assert_int_equal(
        query_long("SELECT extract(year FROM updated_at)::int FROM users WHERE id = $1", 1, params),
        2000);
    must_cmd(gw, "UPDATE users SET name = 'touched' WHERE id = $1", 1, params);
    assert_int_equal(
        query_long("SELECT (updated_at > timezone('UTC', now()) - interval '1 hour' "
                   "AND updated_at < timezone('UTC', now()) + interval '1 minute')::int "
                   "FROM users WHERE id = $1",
                   1, params),
        1);
    PQfinish(gw);
}

static void test_system_presets(void **state)
{
    (void)state;
    assert_int_equal(query_long("SELECT count(*) FROM presets WHERE created_by_user_id IS NULL "
                                "AND is_public AND is_active AND category IS NOT NULL "
                                "AND description IS NOT NULL "
                                "AND name IN ('portrait_pro', 'product_clean', 'landscape_vivid') "
                                "AND EXISTS (SELECT 1 FROM jsonb_each(workflow_json) n "
                                "  WHERE n.value->>'class_type' = 'LoadImage') "
                                "AND EXISTS (SELECT 1 FROM jsonb_each(workflow_json) n "
                                "  WHERE (n.value->>'class_type' = 'SaveImage' "
                                "         AND jsonb_typeof(n.value->'inputs'->'images') = 'array') "
                                "     OR (n.value->>'class_type' = 'CA.Export' "
                                "         AND jsonb_typeof(n.value->'inputs'->'image') = 'array'))",
                                0, NULL),
                     3);
    /* a second system preset of the same name is refused; a user's is fine */
    PGconn *gw = connect_as(GATEWAY);
    char st[8];
    run_state(gw, "INSERT INTO presets (name, workflow_json) VALUES ('portrait_pro', '{}'::jsonb)",
              0, NULL, st, sizeof(st));
    assert_string_equal(st, "23505");
    char uid[37];
    make_user("presetowner", uid);
    const char *params[] = {uid};
    run_state(gw,
              "INSERT INTO presets (created_by_user_id, name, workflow_json) "
              "VALUES ($1, 'portrait_pro', '{}'::jsonb)",
              1, params, st, sizeof(st));
    assert_string_equal(st, "");
    /* ratings: 1..5, one per user and preset, aggregated onto presets */
    run_state(gw,
              "INSERT INTO preset_ratings (user_id, preset_id, rating) SELECT $1, id, 6 "
              "FROM presets WHERE name = 'product_clean' AND created_by_user_id IS NULL",
              1, params, st, sizeof(st));
    assert_string_equal(st, "23514");
    must_cmd(gw,
             "INSERT INTO preset_ratings (user_id, preset_id, rating) SELECT $1, id, 4 "
             "FROM presets WHERE name = 'product_clean' AND created_by_user_id IS NULL",
             1, params);
    run_state(gw,
              "INSERT INTO preset_ratings (user_id, preset_id, rating) SELECT $1, id, 5 "
              "FROM presets WHERE name = 'product_clean' AND created_by_user_id IS NULL",
              1, params, st, sizeof(st));
    assert_string_equal(st, "23505");
    char other[37];
    make_user("rater2", other);
    const char *params2[] = {other};
    must_cmd(gw,
             "INSERT INTO preset_ratings (user_id, preset_id, rating) SELECT $1, id, 5 "
             "FROM presets WHERE name = 'product_clean' AND created_by_user_id IS NULL",
             1, params2);
    char avg[32];
    query_text("SELECT rating_avg::text || '/' || rating_count FROM presets "
               "WHERE name = 'product_clean' AND created_by_user_id IS NULL",
               0, NULL, avg, sizeof(avg));
    assert_string_equal(avg, "4.50/2");
    PQfinish(gw);
}

/* ------------------------------------------------------------ role matrix */

typedef struct {
    const char *table;
    const char *owner;
    const char *readers[4]; /* besides the owner; NULL-terminated */
    const char *insert_sql; /* a valid INSERT as the owner; $1 = a user id */
} table_spec_t;

static const table_spec_t tables[] = {
    {"users",
     GATEWAY,
     {BILLING, WORKER, POLLER, NULL},
     "INSERT INTO users (google_id, email) VALUES ('m_' || $1::uuid::text, $1::uuid::text || '@m.test')"},
    {"presets",
     GATEWAY,
     {WORKER, NULL},
     "INSERT INTO presets (created_by_user_id, name, workflow_json) "
     "VALUES ($1, 'matrix', '{\"1\": {\"class_type\": \"LoadImage\", \"inputs\": {}}}')"},
    {"preset_versions",
     GATEWAY,
     {WORKER, NULL},
     "INSERT INTO preset_versions (preset_id, version, workflow_json) "
     "SELECT id, version + 1, workflow_json FROM presets "
     "WHERE name = 'matrix' AND created_by_user_id = $1"},
    {"preset_ratings",
     GATEWAY,
     {NULL},
     "INSERT INTO preset_ratings (user_id, preset_id, rating) "
     "SELECT $1, id, 3 FROM presets WHERE name = 'matrix' AND created_by_user_id = $1"},
    {"preset_adoptions",
     GATEWAY,
     {WORKER, NULL},
     "INSERT INTO preset_adoptions (user_id, preset_id, version) "
     "SELECT $1, id, version FROM presets WHERE name = 'matrix' AND created_by_user_id = $1"},
    {"audit_log",
     GATEWAY,
     {NULL},
     "INSERT INTO audit_log (user_id, actor, action, target, ip) "
     "VALUES ($1, 'system', 'matrix.test', 'user:' || $1::uuid::text, '127.0.0.1')"},
    {"subscriptions",
     BILLING,
     {GATEWAY, WORKER, POLLER, NULL}, /* the poller: user_id, tier, created_at only */
     "INSERT INTO subscriptions (user_id, stripe_customer_id) VALUES ($1, 'cus_' || $1::uuid::text)"},
    {"usage_tracking",
     BILLING,
     {GATEWAY, NULL},
     "INSERT INTO usage_tracking (user_id, month, tier, monthly_limit) "
     "VALUES ($1, '2020-01-01', 'free', 10)"},
    {"webhook_events",
     BILLING,
     {NULL}, /* Stripe's payloads (customer data): billing only (080_hardening.sql) */
     "INSERT INTO webhook_events (event_id, event_type, payload) "
     "VALUES ('evt_' || $1::uuid::text, 'customer.subscription.created', '{}')"},
    {"usage_reservations",
     BILLING,
     {GATEWAY, WORKER, NULL}, /* the worker: job_id and state only (billing 105) */
     "INSERT INTO usage_reservations (job_id, user_id, usage_id) "
     "SELECT gen_random_uuid(), $1, id FROM usage_tracking WHERE user_id = $1"},
    {"meter_outbox",
     BILLING,
     {GATEWAY, NULL},
     "INSERT INTO meter_outbox (job_id, user_id) VALUES (gen_random_uuid(), $1)"},
    {"jobs",
     WORKER,
     {GATEWAY, BILLING, POLLER},
     "INSERT INTO jobs (user_id, drive_file_id, drive_file_name, drive_folder_id, preset_name) "
     "VALUES ($1, 'file_matrix', 'a.jpg', 'folder', 'portrait_pro')"},
    {"jobs_archive",
     WORKER,
     {GATEWAY, NULL},
     "INSERT INTO jobs_archive (user_id, drive_file_id, drive_file_name, drive_folder_id, "
     "preset_name) VALUES ($1, 'file_old', 'b.jpg', 'folder', 'portrait_pro')"},
    {"email_outbox",
     WORKER,
     {GATEWAY, NULL},
     "INSERT INTO email_outbox (user_id, job_ids) SELECT $1, array_agg(id) FROM jobs "
     "WHERE user_id = $1"},
    {"notices",
     WORKER,
     {GATEWAY, NULL},
     "INSERT INTO notices (user_id, kind, cause_key, title, message) "
     "VALUES ($1, 'folder_gone', 'matrix', 't', 'm')"},
    {"drive_polls",
     POLLER,
     {GATEWAY, NULL},
     "INSERT INTO drive_polls (user_id, folder_id) VALUES ($1, 'folder_matrix')"},
    {"drive_push_channels",
     POLLER,
     {NULL},
     "INSERT INTO drive_push_channels (id, poll_id, user_id, token_sha256, address, expires_at) "
     "SELECT gen_random_uuid(), id, user_id, sha256('matrix'), 'https://example.test/webhooks/drive', "
     "timezone('UTC', now()) FROM drive_polls WHERE user_id = $1"},
};
#define NTABLES (sizeof(tables) / sizeof(tables[0]))

static bool may_read(const table_spec_t *t, const char *role)
{
    if (strcmp(t->owner, role) == 0) {
        return true;
    }
    for (size_t i = 0; i < 4 && t->readers[i] != NULL; i++) {
        if (strcmp(t->readers[i], role) == 0) {
            return true;
        }
    }
    return false;
}

/* Every slice table is covered by the matrix. */
static void test_matrix_covers_all_tables(void **state)
{
    (void)state;
    PGresult *res = must(super,
                         "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public' "
                         "AND tablename <> 'schema_migrations' ORDER BY 1",
                         0, NULL);
    for (int r = 0; r < PQntuples(res); r++) {
        const char *name = PQgetvalue(res, r, 0);
        const char *owner = PQgetvalue(res, r, 1);
        size_t i;
        for (i = 0; i < NTABLES; i++) {
            if (strcmp(tables[i].table, name) == 0) {
                break;
            }
        }
        if (i == NTABLES || strcmp(tables[i].owner, owner) != 0) {
            char msg[256];
            snprintf(msg, sizeof(msg), "%s owned by %s", name, owner);
            PQclear(res);
            fail_msg("table not in the matrix or wrong owner: %s", msg);
        }
    }
    assert_int_equal(PQntuples(res), (int)NTABLES);
    PQclear(res);
}

static void test_role_matrix(void **state)
{
    (void)state;
    char uid[37];
    make_user("matrix", uid);
    const char *params[] = {uid};
    PGconn *conns[NROLES];
    for (size_t r = 0; r < NROLES; r++) {
        conns[r] = connect_as(all_roles[r]);
    }

    /* owners write their own tables (dependencies are in table order) */
    for (size_t r = 0; r < NROLES; r++) {
        must_cmd(conns[r], "BEGIN", 0, NULL);
        for (size_t t = 0; t < NTABLES; t++) {
            if (strcmp(tables[t].owner, all_roles[r]) != 0) {
                continue;
            }
            PGresult *res = must(conns[r], tables[t].insert_sql, 1, params);
            if (strcmp(PQcmdTuples(res), "1") != 0) {
                PQclear(res);
                fail_msg("%s: own insert into %s inserted no row", all_roles[r], tables[t].table);
            }
            PQclear(res);
            char sql[256];
            snprintf(sql, sizeof(sql), "UPDATE %s SET created_at = created_at", tables[t].table);
            must_cmd(conns[r], sql, 0, NULL);
            snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE false", tables[t].table);
            must_cmd(conns[r], sql, 0, NULL);
        }
        /* keep the rows: later slices' inserts refer to them */
        must_cmd(conns[r], "COMMIT", 0, NULL);
    }

    /* nobody writes another slice's table; reads follow the grants */
    for (size_t r = 0; r < NROLES; r++) {
        for (size_t t = 0; t < NTABLES; t++) {
            char sql[256];
            char st[8];
            if (strcmp(tables[t].owner, all_roles[r]) != 0) {
                static const char *const forms[][2] = {
                    {"INSERT INTO ", " DEFAULT VALUES"},
                    {"UPDATE ", " SET created_at = created_at WHERE false"},
                    {"DELETE FROM ", " WHERE false"},
                    {"TRUNCATE ", ""},
                };
                for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
                    snprintf(sql, sizeof(sql), "%s%s%s", forms[f][0], tables[t].table, forms[f][1]);
                    run_state(conns[r], sql, 0, NULL, st, sizeof(st));
                    if (strcmp(st, "42501") != 0) {
                        fail_msg("%s: '%s' gave SQLSTATE '%s', want 42501", all_roles[r], sql, st);
                    }
                }
            }
            snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", tables[t].table);
            run_state(conns[r], sql, 0, NULL, st, sizeof(st));
            const char *want = may_read(&tables[t], all_roles[r]) ? "" : "42501";
            if (strcmp(st, want) != 0) {
                fail_msg("%s: SELECT on %s gave '%s', want '%s'", all_roles[r], tables[t].table, st,
                         want);
            }
        }
    }
    /* the poller reads a user's tier for the fair queue, not the Stripe ids */
    for (size_t r = 0; r < NROLES; r++) {
        if (strcmp(all_roles[r], POLLER) == 0) {
            char st[8];
            run_state(conns[r], "SELECT user_id, tier, created_at FROM subscriptions", 0, NULL, st,
                      sizeof(st));
            assert_string_equal(st, "");
            run_state(conns[r], "SELECT stripe_customer_id FROM subscriptions", 0, NULL, st,
                      sizeof(st));
            assert_string_equal(st, "42501");
        }
    }
    for (size_t r = 0; r < NROLES; r++) {
        PQfinish(conns[r]);
    }
}

/* ---------------------------------------------------- function privileges */

typedef struct {
    const char *call; /* $1 = a user id */
    const char *callers[4];
} function_spec_t;

static const function_spec_t functions[] = {
    {"SELECT users_mark_drive_disconnected($1, 'test')", {GATEWAY, POLLER, WORKER, NULL}},
    {"SELECT users_store_drive_tokens($1, 'enc-a', NULL, NULL)", {GATEWAY, POLLER, WORKER, NULL}},
    {"SELECT billing_ensure_free_subscription($1)", {BILLING, GATEWAY, NULL}},
    {"SELECT * FROM billing_reserve_usage(gen_random_uuid(), $1)", {BILLING, WORKER, NULL}},
    {"SELECT billing_finalize_usage($1)", {BILLING, WORKER, NULL}},
    {"SELECT billing_release_usage($1, true)", {BILLING, WORKER, NULL}},
    {"SELECT * FROM jobs_create_for_drive_file($1, 'f_fn', 'x.jpg', 'fo', 10, 'image/jpeg', NULL)",
     {WORKER, POLLER, NULL}},
    {"SELECT drive_polls_start_watch($1, 'folder_fn', 'out_fn', 'tok')", {POLLER, GATEWAY, NULL}},
    {"SELECT drive_polls_stop_watch($1)", {POLLER, GATEWAY, NULL}},
    {"SELECT users_sign_in_id('g-fn-' || $1)", {GATEWAY, NULL}},
    {"SELECT notice_raise($1, 'folder_gone', 'fn', '{}')", {WORKER, BILLING, POLLER, NULL}},
    {"SELECT * FROM notices_mark_read($1, gen_random_uuid())", {WORKER, GATEWAY, NULL}},
    {"SELECT notices_mark_all_read($1)", {WORKER, GATEWAY, NULL}},
    {"SELECT billing_notice($1, 'folder_gone', 'fn', '{}')", {BILLING, NULL}},
    {"SELECT users_sign_in('g-fn-' || $1, 'fn-' || $1 || '@example.com', NULL, NULL, 'v2:x', "
     "NULL, 3600, NULL, gen_random_uuid())",
     {GATEWAY, NULL}},
};

static void test_function_privileges(void **state)
{
    (void)state;
    char uid[37];
    make_user("fnpriv", uid);
    const char *params[] = {uid};
    for (size_t r = 0; r < NROLES; r++) {
        PGconn *conn = connect_as(all_roles[r]);
        for (size_t f = 0; f < sizeof(functions) / sizeof(functions[0]); f++) {
            bool allowed = false;
            for (size_t c = 0; c < 4 && functions[f].callers[c] != NULL; c++) {
                allowed = allowed || strcmp(functions[f].callers[c], all_roles[r]) == 0;
            }
            char st[8];
            must_cmd(conn, "BEGIN", 0, NULL);
            /* the gateway's pool sets the RLS user; functions that check it
             * (jobs_retry, drive_polls_start_watch) need it */
            must_cmd(conn, "SELECT set_config('app.user_id', $1, true)", 1, params);
            run_state(conn, functions[f].call, 1, params, st, sizeof(st));
            must_cmd(conn, "ROLLBACK", 0, NULL);
            const char *want = allowed ? "" : "42501";
            if (strcmp(st, want) != 0) {
                fail_msg("%s: '%s' gave '%s', want '%s'", all_roles[r], functions[f].call, st,
                         want);
            }
        }
        PQfinish(conn);
    }
    /* every non-trigger function pins its search_path; PUBLIC may execute none
     * of them; and any function another service's role may execute is SECURITY
     * DEFINER (a write into another slice goes through the owner's function) */
    assert_int_equal(
        query_long("SELECT count(*) FROM pg_proc p WHERE pronamespace = 'public'::regnamespace "
                   "AND prorettype <> 'trigger'::regtype "
                   "AND NOT ('search_path=public, pg_temp' = ANY (proconfig))",
                   0, NULL),
        0);
    assert_int_equal(
        query_long("SELECT count(*) FROM pg_proc p WHERE pronamespace = 'public'::regnamespace "
                   "AND has_function_privilege('public', p.oid, 'EXECUTE')",
                   0, NULL),
        0);
    assert_int_equal(
        query_long("SELECT count(*) FROM pg_proc p JOIN pg_roles o ON o.oid = p.proowner "
                   "CROSS JOIN unnest(ARRAY['ca_api_gateway', 'ca_drive_poller', 'ca_job_worker', "
                   "'ca_billing_webhook']) AS r(role) "
                   "WHERE p.pronamespace = 'public'::regnamespace "
                   "AND p.prorettype <> 'trigger'::regtype AND r.role <> o.rolname "
                   "AND has_function_privilege(r.role, p.oid, 'EXECUTE') AND NOT p.prosecdef",
                   0, NULL),
        0);
}

/* --------------------------------------------------------- billing: race */

typedef struct {
    char url[512];
    const char *sql;
    char params[2][40];
    int nparams;
    pthread_barrier_t *barrier;
    /* results */
    char col0[32];
    char col1[64];
    char error[256];
} call_thread_t;

static void *call_thread_main(void *arg)
{
    call_thread_t *t = arg;
    PGconn *conn = PQconnectdb(t->url);
    pthread_barrier_wait(t->barrier);
    if (PQstatus(conn) != CONNECTION_OK) {
        snprintf(t->error, sizeof(t->error), "connect: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    const char *params[2] = {t->params[0], t->params[1]};
    PGresult *res = PQexecParams(conn, t->sql, t->nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        snprintf(t->error, sizeof(t->error), "%s", PQresultErrorMessage(res));
    } else {
        snprintf(t->col0, sizeof(t->col0), "%s", PQgetvalue(res, 0, 0));
        snprintf(t->col1, sizeof(t->col1), "%s", PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    PQfinish(conn);
    return NULL;
}

/* Runs n copies of sql at once as role, each on its own connection.
 * params_of(i, slot) fills the parameters. Fails on any thread error. */
static call_thread_t *run_parallel(const char *role, int n, const char *sql, int nparams,
                                   void (*params_of)(int i, char params[2][40], const void *ctx),
                                   const void *ctx)
{
    call_thread_t *threads = calloc((size_t)n, sizeof(*threads));
    pthread_t *ids = calloc((size_t)n, sizeof(*ids));
    assert_non_null(threads);
    assert_non_null(ids);
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        role_url(role, threads[i].url, sizeof(threads[i].url));
        threads[i].sql = sql;
        threads[i].nparams = nparams;
        threads[i].barrier = &barrier;
        params_of(i, threads[i].params, ctx);
        assert_int_equal(pthread_create(&ids[i], NULL, call_thread_main, &threads[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(ids[i], NULL);
    }
    pthread_barrier_destroy(&barrier);
    free(ids);
    for (int i = 0; i < n; i++) {
        if (threads[i].error[0] != '\0') {
            char msg[256];
            snprintf(msg, sizeof(msg), "%s", threads[i].error);
            free(threads);
            fail_msg("thread %d: %s", i, msg);
        }
    }
    return threads;
}

typedef struct {
    const char *user_id;
    int group;
} reserve_ctx_t;

static void reserve_params(int i, char params[2][40], const void *ctx)
{
    const reserve_ctx_t *c = ctx;
    job_uuid(c->group, i + 1, params[0]);
    snprintf(params[1], 40, "%s", c->user_id);
}

static int count_outcome(const call_thread_t *threads, int n, const char *outcome)
{
    int count = 0;
    for (int i = 0; i < n; i++) {
        count += strcmp(threads[i].col0, outcome) == 0;
    }
    return count;
}

static const char *const reserve_sql =
    "SELECT outcome, images_used FROM billing_reserve_usage($1, $2)";

/* 30 images of a free user at once: 10 ok, 20 blocked, count 10. */
static void test_race_free_user(void **state)
{
    (void)state;
    char uid[37];
    make_user("racefree", uid);
    reserve_ctx_t ctx = {uid, 1};
    call_thread_t *threads = run_parallel(WORKER, 30, reserve_sql, 2, reserve_params, &ctx);
    int ok = count_outcome(threads, 30, "ok");
    int blocked = count_outcome(threads, 30, "blocked");
    free(threads);
    assert_int_equal(ok, 10);
    assert_int_equal(blocked, 20);
    const char *params[] = {uid};
    assert_int_equal(
        query_long("SELECT images_processed FROM usage_tracking WHERE user_id = $1", 1, params),
        10);
    assert_int_equal(
        query_long("SELECT count(*) FROM usage_tracking WHERE user_id = $1", 1, params), 1);
    assert_int_equal(query_long("SELECT count(*) FROM subscriptions WHERE user_id = $1 "
                                "AND tier = 'free' AND monthly_limit = 10",
                                1, params),
                     1);
    assert_int_equal(query_long("SELECT count(*) FROM usage_reservations WHERE user_id = $1 "
                                "AND state = 'reserved'",
                                1, params),
                     10);
    assert_int_equal(query_long("SELECT count(*) FROM usage_reservations WHERE user_id = $1 "
                                "AND state = 'blocked'",
                                1, params),
                     20);
    /* each blocked job asked again is still blocked and counts nothing */
    reserve_ctx_t again = {uid, 1};
    threads = run_parallel(WORKER, 30, reserve_sql, 2, reserve_params, &again);
    ok = count_outcome(threads, 30, "ok");
    blocked = count_outcome(threads, 30, "blocked");
    free(threads);
    assert_int_equal(ok, 10);
    assert_int_equal(blocked, 20);
    assert_int_equal(
        query_long("SELECT images_processed FROM usage_tracking WHERE user_id = $1", 1, params),
        10);
}

/* Creator at the limit: 5 extra at once are 5 overage, 250 cents; finalize
 * sends one meter event per job; release gives the overage back. */
static void test_race_creator_overage(void **state)
{
    (void)state;
    char uid[37];
    make_user("racecreator", uid);
    const char *params[] = {uid};
    must_cmd(super,
             "INSERT INTO subscriptions (user_id, stripe_customer_id, tier, status, monthly_limit) "
             "VALUES ($1, 'cus_creator_' || $1::uuid::text, 'creator', 'active', 100)",
             1, params);
    must_cmd(super,
             "INSERT INTO usage_tracking (user_id, month, tier, monthly_limit, images_processed) "
             "VALUES ($1, date_trunc('month', timezone('UTC', now()))::date, 'creator', 100, 100)",
             1, params);
    reserve_ctx_t ctx = {uid, 2};
    call_thread_t *threads = run_parallel(WORKER, 5, reserve_sql, 2, reserve_params, &ctx);
    int overage = count_outcome(threads, 5, "overage");
    free(threads);
    assert_int_equal(overage, 5);
    char row[128];
    const char *usage_sql = "SELECT images_processed || '/' || images_overage || '/' || "
                            "overage_charged_cents || '/' || images_failed "
                            "FROM usage_tracking WHERE user_id = $1";
    query_text(usage_sql, 1, params, row, sizeof(row));
    assert_string_equal(row, "105/5/250/0");

    PGconn *worker = connect_as(WORKER);
    char job1[37], job2[37];
    job_uuid(2, 1, job1);
    job_uuid(2, 2, job2);
    const char *j1[] = {job1};
    const char *j2[] = {job2};
    for (int i = 0; i < 2; i++) {
        PGresult *res = must(worker, "SELECT billing_finalize_usage($1)", 1, j1);
        assert_string_equal(PQgetvalue(res, 0, 0), "processed");
        PQclear(res);
    }
    assert_int_equal(query_long("SELECT count(*) FROM meter_outbox WHERE user_id = $1", 1, params),
                     1);
    assert_int_equal(query_long("SELECT count(*) FROM meter_outbox WHERE job_id = $1 "
                                "AND status = 'pending' AND value = 1 "
                                "AND event_name = 'image_overage' "
                                "AND stripe_customer_id LIKE 'cus_creator_%'",
                                1, j1),
                     1);
    /* release of an overage job, twice */
    for (int i = 0; i < 2; i++) {
        PGresult *res = must(worker, "SELECT billing_release_usage($1, true)", 1, j2);
        assert_string_equal(PQgetvalue(res, 0, 0), "released");
        PQclear(res);
    }
    query_text(usage_sql, 1, params, row, sizeof(row));
    assert_string_equal(row, "104/4/200/1");
    /* finalize after release, release after finalize: no effect */
    PGresult *res = must(worker, "SELECT billing_finalize_usage($1)", 1, j2);
    assert_string_equal(PQgetvalue(res, 0, 0), "released");
    PQclear(res);
    res = must(worker, "SELECT billing_release_usage($1, true)", 1, j1);
    assert_string_equal(PQgetvalue(res, 0, 0), "processed");
    PQclear(res);
    query_text(usage_sql, 1, params, row, sizeof(row));
    assert_string_equal(row, "104/4/200/1");
    assert_int_equal(query_long("SELECT count(*) FROM meter_outbox WHERE user_id = $1", 1, params),
                     1);
    PQfinish(worker);
}

/* One job reserving twice counts once; finalize and release are idempotent;
 * a released job that is retried counts again; unknown jobs are NULL. */
static void test_reserve_idempotent(void **state)
{
    (void)state;
    char uid[37];
    make_user("idem", uid);
    const char *user[] = {uid};
    PGconn *worker = connect_as(WORKER);
    char job_a[37], job_b[37];
    job_uuid(3, 1, job_a);
    job_uuid(3, 2, job_b);
    const char *a[] = {job_a, uid};
    const char *b[] = {job_b, uid};
    const char *count_sql = "SELECT images_processed FROM usage_tracking WHERE user_id = $1";

    for (int i = 0; i < 3; i++) {
        PGresult *res = must(worker, reserve_sql, 2, a);
        assert_string_equal(PQgetvalue(res, 0, 0), "ok");
        assert_string_equal(PQgetvalue(res, 0, 1), "1");
        PQclear(res);
    }
    assert_int_equal(query_long(count_sql, 1, user), 1);
    for (int i = 0; i < 2; i++) {
        PGresult *res = must(worker, "SELECT billing_finalize_usage($1)", 1, a);
        assert_string_equal(PQgetvalue(res, 0, 0), "processed");
        PQclear(res);
    }
    PGresult *res = must(worker, reserve_sql, 2, a);
    assert_string_equal(PQgetvalue(res, 0, 0), "ok");
    PQclear(res);
    assert_int_equal(query_long(count_sql, 1, user), 1);
    assert_int_equal(query_long("SELECT count(*) FROM meter_outbox WHERE user_id = $1", 1, user),
                     0);

    must_cmd(worker, reserve_sql, 2, b);
    assert_int_equal(query_long(count_sql, 1, user), 2);
    for (int i = 0; i < 2; i++) {
        res = must(worker, "SELECT billing_release_usage($1, false)", 1, b);
        assert_string_equal(PQgetvalue(res, 0, 0), "released");
        PQclear(res);
    }
    assert_int_equal(query_long(count_sql, 1, user), 1);
    assert_int_equal(
        query_long("SELECT images_failed FROM usage_tracking WHERE user_id = $1", 1, user), 0);
    /* the job is retried: it counts again, once */
    must_cmd(worker, reserve_sql, 2, b);
    must_cmd(worker, reserve_sql, 2, b);
    assert_int_equal(query_long(count_sql, 1, user), 2);

    /* another user's job id is refused */
    char other[37];
    make_user("idem2", other);
    const char *stolen[] = {job_a, other};
    char st[8];
    run_state(worker, reserve_sql, 2, stolen, st, sizeof(st));
    assert_string_equal(st, "22023");

    char unknown[37];
    job_uuid(3, 99, unknown);
    const char *u[] = {unknown};
    res = must(worker, "SELECT billing_finalize_usage($1), billing_release_usage($1, true)", 1, u);
    assert_true(PQgetisnull(res, 0, 0));
    assert_true(PQgetisnull(res, 0, 1));
    PQclear(res);
    PQfinish(worker);
}

/* A free user at the limit who upgrades passes at once; the snapshot follows. */
static void test_upgrade_raises_limit(void **state)
{
    (void)state;
    char uid[37];
    make_user("upgrade", uid);
    const char *user[] = {uid};
    PGconn *worker = connect_as(WORKER);
    char job[37];
    for (int i = 1; i <= 11; i++) {
        job_uuid(4, i, job);
        const char *p[] = {job, uid};
        PGresult *res = must(worker, reserve_sql, 2, p);
        assert_string_equal(PQgetvalue(res, 0, 0), i <= 10 ? "ok" : "blocked");
        PQclear(res);
    }
    PGconn *billing = connect_as(BILLING);
    must_cmd(billing,
             "UPDATE subscriptions SET tier = 'creator', monthly_limit = 100, status = 'active' "
             "WHERE user_id = $1",
             1, user);
    PQfinish(billing);
    job_uuid(4, 11, job); /* the blocked job, retried after the upgrade */
    const char *p[] = {job, uid};
    PGresult *res = must(worker, reserve_sql, 2, p);
    assert_string_equal(PQgetvalue(res, 0, 0), "ok");
    assert_string_equal(PQgetvalue(res, 0, 1), "11");
    PQclear(res);
    char row[64];
    query_text("SELECT tier || '/' || monthly_limit || '/' || images_processed "
               "FROM usage_tracking WHERE user_id = $1",
               1, user, row, sizeof(row));
    assert_string_equal(row, "creator/100/11");

    /* a cancelled subscription counts as free: 11 >= 10, blocked, no overage */
    must_cmd(super, "UPDATE subscriptions SET status = 'cancelled' WHERE user_id = $1", 1, user);
    job_uuid(4, 12, job);
    const char *q[] = {job, uid};
    res = must(worker, reserve_sql, 2, q);
    assert_string_equal(PQgetvalue(res, 0, 0), "blocked");
    PQclear(res);
    assert_int_equal(
        query_long("SELECT images_overage FROM usage_tracking WHERE user_id = $1", 1, user), 0);
    PQfinish(worker);
}

/* A paid period covering now is its own usage row, keyed by its start date. */
static void test_paid_period(void **state)
{
    (void)state;
    char uid[37];
    make_user("period", uid);
    const char *user[] = {uid};
    must_cmd(
        super,
        "INSERT INTO subscriptions (user_id, tier, status, monthly_limit, "
        "current_period_start, current_period_end) VALUES ($1, 'studio', 'active', 500, "
        "timezone('UTC', now()) - interval '3 days', timezone('UTC', now()) + interval '27 days')",
        1, user);
    PGconn *worker = connect_as(WORKER);
    char job[37];
    job_uuid(5, 1, job);
    const char *p[] = {job, uid};
    PGresult *res = must(worker, reserve_sql, 2, p);
    assert_string_equal(PQgetvalue(res, 0, 0), "ok");
    PQclear(res);
    PQfinish(worker);
    assert_int_equal(query_long("SELECT count(*) FROM usage_tracking WHERE user_id = $1 "
                                "AND month = (timezone('UTC', now()) - interval '3 days')::date "
                                "AND tier = 'studio' AND monthly_limit = 500",
                                1, user),
                     1);
}

/* ------------------------------------------------------------ jobs_create */

typedef struct {
    const char *user_id;
} jobs_ctx_t;

static void same_file_params(int i, char params[2][40], const void *ctx)
{
    (void)i;
    const jobs_ctx_t *c = ctx;
    snprintf(params[0], 40, "%s", c->user_id);
    snprintf(params[1], 40, "drive_file_race");
}

static void test_jobs_create_for_drive_file(void **state)
{
    (void)state;
    char uid[37];
    make_user("jobs", uid);
    const char *user[] = {uid};
    must_cmd(super, "UPDATE users SET default_preset = 'landscape_vivid' WHERE id = $1", 1, user);
    PGconn *poller = connect_as(POLLER);
    const char *create_sql = "SELECT job_id, is_new FROM jobs_create_for_drive_file($1, $2, "
                             "'IMG_1.jpg', 'folder_1', 12345, 'image/jpeg', $3)";
    const char *p1[] = {uid, "drive_file_1", NULL};
    char first[37];
    PGresult *res = must(poller, create_sql, 3, p1);
    snprintf(first, sizeof(first), "%s", PQgetvalue(res, 0, 0));
    assert_string_equal(PQgetvalue(res, 0, 1), "t");
    PQclear(res);
    res = must(poller, create_sql, 3, p1);
    assert_string_equal(PQgetvalue(res, 0, 0), first);
    assert_string_equal(PQgetvalue(res, 0, 1), "f");
    PQclear(res);
    const char *j[] = {first};
    char row[256];
    query_text(
        "SELECT status || '/' || preset_name || '/' || drive_file_name || '/' || "
        "drive_folder_id || '/' || file_size_bytes || '/' || attempt FROM jobs WHERE id = $1",
        1, j, row, sizeof(row));
    assert_string_equal(row, "queued/landscape_vivid/IMG_1.jpg/folder_1/12345/0");

    /* explicit preset */
    const char *p2[] = {uid, "drive_file_2", "product_clean"};
    res = must(poller, create_sql, 3, p2);
    const char *j2[] = {PQgetvalue(res, 0, 0)};
    query_text("SELECT preset_name FROM jobs WHERE id = $1", 1, j2, row, sizeof(row));
    PQclear(res);
    assert_string_equal(row, "product_clean");

    /* an archived file is not made again */
    must_cmd(super,
             "WITH moved AS (DELETE FROM jobs WHERE id = $1 RETURNING *) "
             "INSERT INTO jobs_archive (id, user_id, status, drive_file_id, drive_file_name,"
             " drive_folder_id, preset_name, created_at) SELECT id, user_id, status,"
             " drive_file_id, drive_file_name, drive_folder_id, preset_name, created_at"
             " FROM moved",
             1, j);
    res = must(poller, create_sql, 3, p1);
    assert_string_equal(PQgetvalue(res, 0, 0), first);
    assert_string_equal(PQgetvalue(res, 0, 1), "f");
    PQclear(res);
    assert_int_equal(query_long("SELECT count(*) FROM jobs WHERE user_id = $1 "
                                "AND drive_file_id = 'drive_file_1'",
                                1, user),
                     0);
    PQfinish(poller);

    /* 20 pollers find the same file at once: one job, one is_new */
    jobs_ctx_t ctx = {uid};
    call_thread_t *threads =
        run_parallel(POLLER, 20,
                     "SELECT job_id::text, is_new::text FROM jobs_create_for_drive_file($1, $2, "
                     "'race.jpg', 'folder_1', 1, 'image/jpeg', NULL)",
                     2, same_file_params, &ctx);
    int fresh = 0;
    bool same = true;
    for (int i = 0; i < 20; i++) {
        fresh += strcmp(threads[i].col1, "true") == 0;
        same = same && strcmp(threads[i].col0, threads[0].col0) == 0;
    }
    free(threads);
    assert_int_equal(fresh, 1);
    assert_true(same);
    assert_int_equal(query_long("SELECT count(*) FROM jobs WHERE user_id = $1 "
                                "AND drive_file_id = 'drive_file_race'",
                                1, user),
                     1);
}

/* ------------------------------------------------------- watch and users */

static void test_drive_watch(void **state)
{
    (void)state;
    char uid[37];
    make_user("watch", uid);
    const char *user[] = {uid};
    PGconn *gw = connect_as(GATEWAY);
    must_cmd(gw, "SELECT set_config('app.user_id', $1, false)", 1, user);
    const char *start_sql = "SELECT drive_polls_start_watch($1, $2, $3, $4)";
    const char *a[] = {uid, "folder_a", "out_a", "token_1"};
    const char *b[] = {uid, "folder_b", "out_b", "token_2"};
    char id_a[37];
    PGresult *res = must(gw, start_sql, 4, a);
    snprintf(id_a, sizeof(id_a), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    const char *ida[] = {id_a};
    char row[256];
    const char *row_sql =
        "SELECT active || '/' || folder_id || '/' || output_folder_id || '/' || "
        "changes_page_token || '/' || coalesce(stopped_reason, '-') || '/' || "
        "(next_poll_at <= timezone('UTC', now()) + interval '1 second') || '/' || "
        "(last_full_scan_at IS NULL) FROM drive_polls WHERE id = $1";
    query_text(row_sql, 1, ida, row, sizeof(row));
    assert_string_equal(row, "true/folder_a/out_a/token_1/-/true/true");

    must_cmd(gw, start_sql, 4, b);
    query_text(row_sql, 1, ida, row, sizeof(row));
    assert_string_equal(row, "false/folder_a/out_a/token_1/replaced/true/true");
    assert_int_equal(
        query_long("SELECT count(*) FROM drive_polls WHERE user_id = $1 AND active", 1, user), 1);

    /* back to folder a: the same row, active again, error state cleared */
    must_cmd(super,
             "UPDATE drive_polls SET consecutive_errors = 5, poll_status = 'error', "
             "last_full_scan_at = timezone('UTC', now()) WHERE id = $1",
             1, ida);
    const char *a2[] = {uid, "folder_a", NULL, NULL};
    res = must(gw, start_sql, 4, a2);
    assert_string_equal(PQgetvalue(res, 0, 0), id_a);
    PQclear(res);
    query_text(row_sql, 1, ida, row, sizeof(row));
    assert_string_equal(row, "true/folder_a/out_a/token_1/-/true/true");
    assert_int_equal(query_long("SELECT consecutive_errors FROM drive_polls WHERE id = $1", 1, ida),
                     0);

    res = must(gw, "SELECT drive_polls_stop_watch($1)", 1, user);
    assert_string_equal(PQgetvalue(res, 0, 0), "1");
    PQclear(res);
    res = must(gw, "SELECT drive_polls_stop_watch($1)", 1, user);
    assert_string_equal(PQgetvalue(res, 0, 0), "0");
    PQclear(res);
    assert_int_equal(
        query_long("SELECT count(*) FROM drive_polls WHERE user_id = $1 AND active", 1, user), 0);
    PQfinish(gw);
}

static void test_users_drive_functions(void **state)
{
    (void)state;
    char uid[37];
    make_user("tokens", uid);
    const char *user[] = {uid};
    PGconn *poller = connect_as(POLLER);
    const char *store = "SELECT users_store_drive_tokens($1, $2, $3, $4)";
    const char *p1[] = {uid, "enc-access-1", "enc-refresh-1", "2030-01-01 00:00:00"};
    const char *p2[] = {uid, "enc-access-2", NULL, "2030-01-02 00:00:00"};
    must_cmd(poller, store, 4, p1);
    PGresult *res = must(poller, store, 4, p2);
    assert_string_equal(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    char row[256];
    query_text("SELECT drive_access_token || '/' || drive_refresh_token || '/' || "
               "drive_token_expires_at FROM users WHERE id = $1",
               1, user, row, sizeof(row));
    assert_string_equal(row, "enc-access-2/enc-refresh-1/2030-01-02 00:00:00");

    const char *m[] = {uid, "invalid_grant"};
    res = must(poller, "SELECT users_mark_drive_disconnected($1, $2)", 2, m);
    assert_string_equal(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    res = must(poller, "SELECT users_mark_drive_disconnected($1, $2)", 2, m);
    assert_string_equal(PQgetvalue(res, 0, 0), "f");
    PQclear(res);
    query_text("SELECT drive_connected || '/' || drive_disconnected_reason || '/' || "
               "(drive_disconnected_at IS NOT NULL) || '/' || drive_refresh_token "
               "FROM users WHERE id = $1",
               1, user, row, sizeof(row));
    assert_string_equal(row, "false/invalid_grant/true/enc-refresh-1");
    PQfinish(poller);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_columns),
        cmocka_unit_test(test_jobs_archive_columns),
        cmocka_unit_test(test_seed_indexes),
        cmocka_unit_test(test_seed_constraints),
        cmocka_unit_test(test_updated_at_triggers),
        cmocka_unit_test(test_system_presets),
        cmocka_unit_test(test_matrix_covers_all_tables),
        cmocka_unit_test(test_role_matrix),
        cmocka_unit_test(test_function_privileges),
        cmocka_unit_test(test_race_free_user),
        cmocka_unit_test(test_race_creator_overage),
        cmocka_unit_test(test_reserve_idempotent),
        cmocka_unit_test(test_upgrade_raises_limit),
        cmocka_unit_test(test_paid_period),
        cmocka_unit_test(test_jobs_create_for_drive_file),
        cmocka_unit_test(test_drive_watch),
        cmocka_unit_test(test_users_drive_functions),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
