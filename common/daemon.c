/*
 * daemon — the boot sequence, the main loop, signals, the maintenance thread,
 * the daily retention thread and the `migrate` / `cleanup` commands every
 * service shares (see daemon.h).
 */
#include "daemon.h"

#include "config_vars.h"
#include "http_client.h"
#include "log.h"
#include "metrics.h"
#include "now.h"
#include "stopwait.h"
#include "trusted_proxies.h"

#include <errno.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DAEMON_MAX_TASKS 16
#define DAEMON_DRAIN_LIMIT_MS 25000
#define READY_PING_PERIOD_MS 1000
/* The daily retention: its Redis key lives two days (longer than the day it
 * marks, shorter than a clutter); a failed try is retried a minute later. */
#define RETENTION_KEY_TTL_S 172800
#define RETENTION_RETRY_S 60

typedef struct {
    char name[48];
    int period_ms;
    daemon_task_fn fn;
    void *arg;
    int64_t next_run_ms;
} daemon_task_t;

struct daemon {
    const service_t *svc;
    config_var_t *vars; /* the common variables, then the service's (owned) */
    size_t nvars;
    char port_default[16];
    config_t cfg;
    bool cfg_loaded;
    char instance_id[128];

    struct event_base *base;
    http_server_t *http;
    struct event *sig_term;
    struct event *sig_int;
    struct event *drain_timer;
    int64_t drain_started_ms;

    atomic_int stopping;
    atomic_int privileged_role; /* serve connected as a superuser or BYPASSRLS role */
    atomic_int pg_ready;
    atomic_int redis_ready;

    pthread_t maint_thread;
    bool maint_started;
    stopwait_t maint_wait;      /* stopped when the loop has ended */
    pthread_mutex_t maint_lock; /* guards tasks and ntasks */
    daemon_task_t tasks[DAEMON_MAX_TASKS];
    size_t ntasks;

    int retention_at_s;         /* RETENTION_AT as seconds after 00:00 UTC; -1: off */
    trusted_proxies_t *trusted; /* TRUSTED_PROXIES */
    pthread_t retention_thread;
    bool retention_started;

    void *data;
};

/* The variables every service has; PORT's default is the service's. */
static const config_var_t common_vars[] = {
    {"DATABASE_URL", CFG_URL, "postgresql:///creator_automation", false, true, 0, 0,
     "PostgreSQL connection URL (the service's own role)"},
    {"MIGRATION_DATABASE_URL", CFG_URL, NULL, false, true, 0, 0,
     "URL `migrate` uses instead of DATABASE_URL (a role allowed to create the slice)"},
    {"REDIS_URL", CFG_URL, "redis://127.0.0.1:6379/0", false, true, 0, 0, "Redis URL"},
    {"PORT", CFG_INT, NULL, false, false, 1, 65535, "HTTP port"},
    {"LISTEN_ADDR", CFG_STRING, "0.0.0.0", false, false, 0, 0, "address the HTTP server binds"},
    {"LOG_LEVEL", CFG_STRING, "info", false, false, 0, 0, "debug, info, warn or error"},
    {"HTTP_MAX_BODY_BYTES", CFG_INT, "1048576", false, false, 1024, 67108864,
     "request body cap (413 body_too_large), enforced while reading"},
    {"HTTP_MAX_CONNECTIONS", CFG_INT, "512", false, false, 0, 1000000,
     "open HTTP connections per process (0: no cap)"},
    {"HTTP_MAX_CONNECTIONS_PER_PEER", CFG_INT, "128", false, false, 0, 1000000,
     "open HTTP connections per client address (0: no cap; raise behind a proxy)"},
    {"HTTP_HEADER_TIMEOUT_SECONDS", CFG_INT, "10", false, false, 1, 600,
     "a request's line and headers must arrive within this"},
    {"HTTP_IDLE_TIMEOUT_SECONDS", CFG_INT, "60", false, false, 1, 3600,
     "a connection with no I/O for this long is closed"},
    {"TRUSTED_PROXIES", CFG_LIST, "", false, false, 0, 0,
     "CIDRs of the load balancers/ingress whose X-Forwarded-For names the client (rate limits, "
     "audit log, access log); empty: the header is ignored"},
    {"WAIT_SCHEMA_SECONDS", CFG_INT, "600", false, false, 1, 86400,
     "`wait-schema` gives up (exit 1) when the schema is not current after this long"},
    {"RETENTION_AT", CFG_STRING, "02:00", false, false, 0, 0,
     "UTC time of day (HH:MM or HH:MM:SS) serve applies the retention rules, once a day "
     "across replicas (Redis key ca:retention:<service>:<date>); off: never (run `cleanup`)"},
};
#define N_COMMON_VARS (sizeof(common_vars) / sizeof(common_vars[0]))

/* ---- accessors ---- */

const service_t *daemon_service(const daemon_t *d)
{
    return d->svc;
}

const config_t *daemon_config(const daemon_t *d)
{
    return &d->cfg;
}

const char *daemon_get(const daemon_t *d, const char *name)
{
    return config_get(&d->cfg, name);
}

struct event_base *daemon_base(const daemon_t *d)
{
    return d->base;
}

http_server_t *daemon_http(const daemon_t *d)
{
    return d->http;
}

bool daemon_stopping(const daemon_t *d)
{
    return atomic_load(&((daemon_t *)d)->stopping) != 0;
}

void daemon_set_data(daemon_t *d, void *data)
{
    d->data = data;
}

void *daemon_data(const daemon_t *d)
{
    return d->data;
}

const char *daemon_instance_id(const daemon_t *d)
{
    return d->instance_id;
}

int daemon_add_task(daemon_t *d, const char *name, int period_ms, daemon_task_fn fn, void *arg)
{
    int rc = -1;
    pthread_mutex_lock(&d->maint_lock);
    if (d->ntasks < DAEMON_MAX_TASKS && period_ms > 0 && fn != NULL) {
        daemon_task_t *t = &d->tasks[d->ntasks];
        snprintf(t->name, sizeof(t->name), "%s", name);
        t->period_ms = period_ms;
        t->fn = fn;
        t->arg = arg;
        t->next_run_ms = now_mono_ms() + period_ms / 4;
        d->ntasks++;
        rc = 0;
    }
    pthread_mutex_unlock(&d->maint_lock);
    return rc;
}

/* ---- configuration ---- */

int daemon_parse_time_of_day(const char *s, int *secs)
{
    if (s == NULL || strcmp(s, "off") == 0) {
        *secs = -1;
        return 0;
    }
    size_t n = strlen(s);
    if (n != 5 && n != 8) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        bool colon = i == 2 || i == 5;
        if (colon ? s[i] != ':' : (s[i] < '0' || s[i] > '9')) {
            return -1;
        }
    }
    int h = (s[0] - '0') * 10 + (s[1] - '0');
    int m = (s[3] - '0') * 10 + (s[4] - '0');
    int sec = n == 8 ? (s[6] - '0') * 10 + (s[7] - '0') : 0;
    if (h > 23 || m > 59 || sec > 59) {
        return -1;
    }
    *secs = h * 3600 + m * 60 + sec;
    return 0;
}

int64_t daemon_next_time_of_day(int64_t now, int secs)
{
    int64_t day = now - (((now % 86400) + 86400) % 86400);
    int64_t t = day + secs;
    return t > now ? t : t + 86400;
}

/* The common variables, then the service's: as many as there are. Returns 0,
 * or -1 (message on stderr) when out of memory. */
static const config_var_t rekey_vars[] = {CONFIG_VARS_ENCRYPTION};
#define N_REKEY_VARS (sizeof(rekey_vars) / sizeof(rekey_vars[0]))

static int build_var_table(daemon_t *d, bool common_only)
{
    const service_t *svc = d->svc;
    size_t n = N_COMMON_VARS + N_REKEY_VARS + (common_only ? 0 : svc->nvars);
    free(d->vars);
    d->nvars = 0;
    d->vars = calloc(n, sizeof(*d->vars));
    if (d->vars == NULL) {
        fprintf(stderr, "%s: out of memory\n", svc->name);
        return -1;
    }
    snprintf(d->port_default, sizeof(d->port_default), "%d", svc->default_port);
    for (size_t i = 0; i < N_COMMON_VARS; i++) {
        d->vars[d->nvars] = common_vars[i];
        if (strcmp(common_vars[i].name, "PORT") == 0) {
            d->vars[d->nvars].def = d->port_default;
        }
        d->nvars++;
    }
    for (size_t i = 0; !common_only && i < svc->nvars; i++) {
        d->vars[d->nvars++] = svc->vars[i];
    }
    return 0;
}

/* `rekey`: the common variables and the two encryption ones. */
static int build_rekey_table(daemon_t *d)
{
    if (build_var_table(d, true) != 0) {
        return -1;
    }
    for (size_t i = 0; i < N_REKEY_VARS; i++) {
        d->vars[d->nvars++] = rekey_vars[i];
    }
    return 0;
}

static int load_config_table(daemon_t *d, bool common_only, bool rekey)
{
    char err[512];
    if ((rekey ? build_rekey_table(d) : build_var_table(d, common_only)) != 0) {
        return -1;
    }
    if (config_load(&d->cfg, d->vars, d->nvars, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", d->svc->name, err);
        return -1;
    }
    d->cfg_loaded = true;
    log_level_t level;
    if (log_level_parse(config_get(&d->cfg, "LOG_LEVEL"), &level) != 0) {
        fprintf(stderr, "%s: LOG_LEVEL: must be one of debug, info, warn, error\n", d->svc->name);
        return -1;
    }
    log_init(d->svc->name, level);
    if (daemon_parse_time_of_day(config_get(&d->cfg, "RETENTION_AT"), &d->retention_at_s) != 0) {
        fprintf(stderr, "%s: RETENTION_AT: must be HH:MM or HH:MM:SS (UTC), or off\n",
                d->svc->name);
        return -1;
    }
    return 0;
}

static int load_config(daemon_t *d, bool common_only)
{
    return load_config_table(d, common_only, false);
}

/* $HOSTNAME is read directly, not through the table: it is not
 * configuration but the name the platform gives the process (the pod name),
 * and any value is fine (unsafe characters become '_'). */
static void set_instance_id(daemon_t *d)
{
    const char *host = getenv("HOSTNAME");
    char hostbuf[64] = "";
    if (host == NULL || host[0] == '\0') {
        if (gethostname(hostbuf, sizeof(hostbuf) - 1) != 0) {
            snprintf(hostbuf, sizeof(hostbuf), "host");
        }
        host = hostbuf;
    }
    /* The pid keeps two processes on one host apart (and a restarted pod new). */
    snprintf(d->instance_id, sizeof(d->instance_id), "%.90s-%ld", host, (long)getpid());
    for (char *p = d->instance_id; *p != '\0'; p++) {
        bool ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_';
        if (!ok) {
            *p = '_';
        }
    }
}

/* ---- the database role serve runs as ---- */

/* 1 when the session's role is a superuser or has BYPASSRLS (row-level
 * security, the tenants' fence, would not apply), 0 when not, -1 when it
 * cannot tell (err filled). */
static int role_is_privileged(pg_conn_t *pg, char *role, size_t rolelen, char *err, size_t errlen)
{
    PGresult *res = pg_exec(pg,
                            "SELECT current_user::text, rolsuper OR rolbypassrls"
                            "  FROM pg_roles WHERE rolname = current_user",
                            0, NULL, err, errlen);
    if (res == NULL) {
        return -1;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        snprintf(err, errlen, "current_user is not in pg_roles");
        return -1;
    }
    snprintf(role, rolelen, "%s", PQgetvalue(res, 0, 0));
    int rc = strcmp(PQgetvalue(res, 0, 1), "t") == 0 ? 1 : 0;
    PQclear(res);
    return rc;
}

static void log_privileged(const char *role)
{
    log_error("refusing to serve as database role \"%s\": it is a superuser or has BYPASSRLS, "
              "so row-level security would not apply; set DATABASE_URL to the service's own "
              "role (see docs/operations.md)",
              role);
}

/* ---- the maintenance thread ---- */

static void *maintenance_main(void *arg)
{
    daemon_t *d = arg;
    pg_conn_t *pg = NULL;
    redis_conn_t *redis = NULL;
    int64_t next_ping = 0;
    char err[256];

    log_context_set("thread", "maintenance");
    /* Runs until the loop has ended, through the drain: a service's tasks
     * (the job-worker's heartbeats and lease extensions) keep work in flight
     * alive while it finishes. */
    while (!stopwait_stopped(&d->maint_wait)) {
        int64_t t = now_mono_ms();
        if (t >= next_ping) {
            next_ping = t + READY_PING_PERIOD_MS;
            if (pg == NULL) {
                pg = pg_connect(config_get(&d->cfg, "DATABASE_URL"), 1500, err, sizeof(err));
                if (pg == NULL) {
                    log_debug("maintenance: PostgreSQL not reachable: %s", err);
                } else {
                    /* serve could not check the role at startup (PostgreSQL was
                     * down): check it on each new connection, and stop. */
                    char role[128] = "";
                    if (role_is_privileged(pg, role, sizeof(role), err, sizeof(err)) == 1 &&
                        atomic_exchange(&d->privileged_role, 1) == 0) {
                        log_privileged(role);
                        kill(getpid(), SIGTERM);
                    }
                }
            }
            atomic_store(&d->pg_ready, pg != NULL && pg_ping(pg));
            if (redis == NULL) {
                redis = redis_connect(config_get(&d->cfg, "REDIS_URL"), 1500, err, sizeof(err));
                if (redis == NULL) {
                    log_debug("maintenance: Redis not reachable: %s", err);
                } else {
                    redis_set_retry(redis, 500);
                }
            }
            atomic_store(&d->redis_ready, redis != NULL && redis_ping(redis));
        }

        pthread_mutex_lock(&d->maint_lock);
        size_t ntasks = d->ntasks;
        pthread_mutex_unlock(&d->maint_lock);
        for (size_t i = 0; i < ntasks && !stopwait_stopped(&d->maint_wait); i++) {
            daemon_task_t *task = &d->tasks[i];
            if (now_mono_ms() < task->next_run_ms) {
                continue;
            }
            task->next_run_ms = now_mono_ms() + task->period_ms;
            task->fn(d, atomic_load(&d->pg_ready) ? pg : NULL,
                     atomic_load(&d->redis_ready) ? redis : NULL, task->arg);
        }

        stopwait_sleep(&d->maint_wait, 100);
    }
    if (pg != NULL) {
        pg_close(pg);
    }
    if (redis != NULL) {
        redis_close(redis);
    }
    log_context_clear();
    return NULL;
}

/* ---- readiness and signals (loop events) ---- */

static bool ready_check(void *arg, char *why, size_t whylen)
{
    daemon_t *d = arg;
    if (atomic_load(&d->stopping) != 0) {
        snprintf(why, whylen, "shutting down");
        return false;
    }
    if (atomic_load(&d->pg_ready) == 0) {
        snprintf(why, whylen, "PostgreSQL is not reachable");
        return false;
    }
    if (atomic_load(&d->redis_ready) == 0) {
        snprintf(why, whylen, "Redis is not reachable");
        return false;
    }
    return true;
}

static void drain_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    daemon_t *d = arg;
    bool done = d->svc->drained == NULL || d->svc->drained(d);
    if (done) {
        log_info("drained; stopping");
        event_base_loopexit(d->base, NULL);
        return;
    }
    if (now_mono_ms() - d->drain_started_ms > DAEMON_DRAIN_LIMIT_MS) {
        log_warn("drain took longer than %d ms; stopping with work in flight",
                 DAEMON_DRAIN_LIMIT_MS);
        event_base_loopexit(d->base, NULL);
        return;
    }
    struct timeval tv = {0, 100 * 1000};
    evtimer_add(d->drain_timer, &tv);
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    daemon_t *d = arg;
    if (atomic_load(&d->stopping) != 0) {
        log_warn("second %s: exiting now", sig == SIGINT ? "SIGINT" : "SIGTERM");
        _exit(1);
    }
    log_info("%s: draining (send it again to exit at once)", sig == SIGINT ? "SIGINT" : "SIGTERM");
    atomic_store(&d->stopping, 1);
    if (d->svc->drain != NULL) {
        d->svc->drain(d);
    }
    d->drain_started_ms = now_mono_ms();
    d->drain_timer = evtimer_new(d->base, drain_tick, d);
    struct timeval tv = {0, 0};
    evtimer_add(d->drain_timer, &tv);
}

/* ---- the daily retention ---- */

/* One try at the run scheduled at `when` (UTC seconds): claim the day in Redis
 * (SET NX: the first replica wins, the others see the key and skip), then run
 * svc->cleanup on a connection of its own. Returns 0 when the day is done (by
 * this replica or another one), -1 to try again later (Redis or PostgreSQL
 * unreachable, or the rules failed: the claim is given back). */
static int retention_try(daemon_t *d, int64_t when, redis_conn_t **redis)
{
    char err[1024] = "";
    time_t tw = (time_t)when;
    struct tm tm;
    gmtime_r(&tw, &tm);
    char day[16];
    strftime(day, sizeof(day), "%Y-%m-%d", &tm);
    char key[160];
    snprintf(key, sizeof(key), "ca:retention:%s:%s", d->svc->name, day);

    if (*redis == NULL) {
        *redis = redis_connect(config_get(&d->cfg, "REDIS_URL"), 1500, err, sizeof(err));
        if (*redis == NULL) {
            log_warn("retention %s: Redis not reachable (%s); trying again in %d s", day, err,
                     RETENTION_RETRY_S);
            return -1;
        }
        redis_set_retry(*redis, 1000);
    }
    redisReply *r = redis_command(*redis, err, sizeof(err), "SET %s %s NX EX %d", key,
                                  d->instance_id, RETENTION_KEY_TTL_S);
    if (r == NULL) {
        log_warn("retention %s: cannot claim the day in Redis (%s); trying again in %d s", day, err,
                 RETENTION_RETRY_S);
        redis_close(*redis);
        *redis = NULL;
        return -1;
    }
    bool claimed = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    if (!claimed) {
        r = redis_command(*redis, err, sizeof(err), "GET %s", key);
        log_info("retention %s: already claimed by %s", day,
                 r != NULL && r->type == REDIS_REPLY_STRING ? r->str : "another replica");
        if (r != NULL) {
            freeReplyObject(r);
        }
        return 0;
    }

    log_info("retention %s: running the %s rules (instance %s)", day, d->svc->name, d->instance_id);
    int64_t t0 = now_mono_ms();
    int rc = -1;
    pg_conn_t *pg = pg_connect(config_get(&d->cfg, "DATABASE_URL"), 10000, err, sizeof(err));
    if (pg != NULL) {
        rc = d->svc->cleanup(d, pg, err, sizeof(err));
        pg_close(pg);
    }
    if (rc != 0) {
        log_error("retention %s: failed (%s); claim given back, trying again in %d s", day, err,
                  RETENTION_RETRY_S);
        /* Give the day back only while it is still ours. */
        r = redis_command(*redis, err, sizeof(err), "EVAL %s 1 %s %s",
                          "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                          "return redis.call('DEL', KEYS[1]) end return 0",
                          key, d->instance_id);
        if (r != NULL) {
            freeReplyObject(r);
        }
        return -1;
    }
    log_info("retention %s: done in %lld ms", day, (long long)(now_mono_ms() - t0));
    return 0;
}

/* Sleeps until the next RETENTION_AT (UTC, wall clock, looked at every
 * second so a clock step is followed), runs it once across replicas, and
 * again every day. A run missed while no replica was up is not caught up:
 * the rules are "older than N days", the next day's run covers it. */
static void *retention_main(void *arg)
{
    daemon_t *d = arg;
    redis_conn_t *redis = NULL;
    log_context_set("thread", "retention");
    int64_t due = daemon_next_time_of_day((int64_t)time(NULL), d->retention_at_s);
    int64_t next_try = due;
    while (!stopwait_stopped(&d->maint_wait)) {
        int64_t now = (int64_t)time(NULL);
        if (now < next_try) {
            int64_t ms = (next_try - now) * 1000;
            stopwait_sleep(&d->maint_wait, ms < 1000 ? ms : 1000);
            continue;
        }
        if (retention_try(d, due, &redis) == 0 || now >= due + 86400 - RETENTION_RETRY_S) {
            due = daemon_next_time_of_day(now, d->retention_at_s);
            next_try = due;
        } else {
            next_try = now + RETENTION_RETRY_S;
        }
    }
    if (redis != NULL) {
        redis_close(redis);
    }
    return NULL;
}

/* ---- commands ---- */

/* The commands and the whole variable table. */
static void print_usage(daemon_t *d, FILE *out)
{
    if (build_var_table(d, false) != 0) {
        return;
    }
    fprintf(out,
            "usage: %s [serve|migrate|wait-schema|cleanup|--help|--version]\n"
            "  serve     run the daemon (default)\n"
            "  migrate   apply this service's slice of the schema (safe to repeat)\n"
            "  wait-schema  wait (DATABASE_URL, polling every 2 s, at most WAIT_SCHEMA_SECONDS)\n"
            "            until every migration this binary embeds is recorded with its\n"
            "            checksum: exit 0; a checksum mismatch or the time limit: exit 1\n"
            "  cleanup   apply this service's data retention rules\n"
            "%s",
            d->svc->name,
            d->svc->rekey != NULL ? "  rekey     re-seal stored secrets under ENCRYPTION_KEY "
                                    "(then retire ENCRYPTION_KEYS_OLD)\n"
                                  : "");
    if (d->svc->command_help != NULL) {
        fprintf(out, "%s", d->svc->command_help);
    }
    fprintf(out, "\n");
    config_print_help(out, NULL, d->vars, d->nvars);
}

static int cmd_migrate(daemon_t *d)
{
    char err[1024];
    const char *url = config_get(&d->cfg, "MIGRATION_DATABASE_URL");
    if (url == NULL) {
        url = config_get(&d->cfg, "DATABASE_URL");
    }
    pg_conn_t *pg = pg_connect(url, 60000, err, sizeof(err));
    if (pg == NULL) {
        log_error("migrate: cannot connect: %s", err);
        return 1;
    }
    int applied = 0;
    size_t n = d->svc->nmigrations != NULL ? *d->svc->nmigrations : 0;
    int rc = migrate_apply(pg, d->svc->name, d->svc->migrations, n, &applied, err, sizeof(err));
    pg_close(pg);
    if (rc != 0) {
        log_error("migrate: %s", err);
        return 1;
    }
    log_info("migrate: %d file(s) applied, schema up to date", applied);
    return 0;
}

/* wait-schema: for a Deployment's init container. Connects with DATABASE_URL
 * (the service's own role: SELECT on schema_migrations, granted by migrate)
 * and polls until every embedded file is recorded with its checksum. A state
 * is logged when it changes, not every poll. */
#define WAIT_SCHEMA_POLL_MS 2000

static int cmd_wait_schema(daemon_t *d)
{
    int64_t limit_ms = config_get_int(&d->cfg, "WAIT_SCHEMA_SECONDS") * 1000L;
    int64_t deadline = now_mono_ms() + limit_ms;
    const char *url = config_get(&d->cfg, "DATABASE_URL");
    size_t n = d->svc->nmigrations != NULL ? *d->svc->nmigrations : 0;
    char err[1024] = "";
    char last[1024] = "";
    pg_conn_t *pg = NULL;
    log_info("wait-schema: waiting up to %ld s for %zu migration file(s) of %s",
             (long)(limit_ms / 1000), n, d->svc->name);
    for (;;) {
        int64_t left = deadline - now_mono_ms();
        int rc = MIGRATE_STATUS_ERROR;
        migrate_status_t st;
        if (pg == NULL) {
            /* pg_connect retries with backoff: give it what is left (1 s at least). */
            pg = pg_connect(url, left > 1000 ? left : 1000, err, sizeof(err));
            if (pg == NULL) {
                char tmp[1024];
                snprintf(tmp, sizeof(tmp), "cannot connect: %s", err);
                snprintf(err, sizeof(err), "%s", tmp);
            }
        }
        if (pg != NULL) {
            rc = migrate_status(pg, d->svc->name, d->svc->migrations, n, &st, err, sizeof(err));
        }
        if (rc == MIGRATE_STATUS_CURRENT) {
            if (st.unknown > 0) {
                log_warn("wait-schema: %zu version(s) recorded for %s that this binary does not "
                         "embed (newest %s): a newer release migrated; fine for a rolling update",
                         st.unknown, d->svc->name, st.newest_unknown);
            }
            log_info("wait-schema: schema current (%zu file(s) of %s)", n, d->svc->name);
            pg_close(pg);
            return 0;
        }
        if (rc == MIGRATE_STATUS_MISMATCH) {
            log_error("wait-schema: %s", err);
            pg_close(pg);
            return 1;
        }
        if (strcmp(err, last) != 0) {
            log_info("wait-schema: %s", err);
            snprintf(last, sizeof(last), "%s", err);
        }
        left = deadline - now_mono_ms();
        if (left <= 0) {
            log_error("wait-schema: the schema is not current after %ld s: %s",
                      (long)(limit_ms / 1000), err);
            if (pg != NULL) {
                pg_close(pg);
            }
            return 1;
        }
        if (rc == MIGRATE_STATUS_ERROR && pg != NULL && PQstatus(pg_raw(pg)) != CONNECTION_OK) {
            pg_close(pg);
            pg = NULL;
        }
        int64_t nap = left < WAIT_SCHEMA_POLL_MS ? left : WAIT_SCHEMA_POLL_MS;
        struct timespec ts = {(time_t)(nap / 1000), (long)(nap % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
    }
}

static int cmd_cleanup(daemon_t *d)
{
    char err[1024] = "";
    if (d->svc->cleanup == NULL) {
        log_info("cleanup: nothing to do for %s", d->svc->name);
        return 0;
    }
    pg_conn_t *pg = pg_connect(config_get(&d->cfg, "DATABASE_URL"), 60000, err, sizeof(err));
    if (pg == NULL) {
        log_error("cleanup: cannot connect: %s", err);
        return 1;
    }
    int rc = d->svc->cleanup(d, pg, err, sizeof(err));
    pg_close(pg);
    if (rc != 0) {
        log_error("cleanup: %s", err);
        return 1;
    }
    return 0;
}

static int cmd_rekey(daemon_t *d)
{
    char err[1024] = "";
    const char *url = config_get(&d->cfg, "MIGRATION_DATABASE_URL");
    if (url == NULL) {
        url = config_get(&d->cfg, "DATABASE_URL");
    }
    pg_conn_t *pg = pg_connect(url, 60000, err, sizeof(err));
    if (pg == NULL) {
        log_error("rekey: cannot connect: %s", err);
        return 1;
    }
    int rc = d->svc->rekey(d, pg, err, sizeof(err));
    pg_close(pg);
    if (rc != 0) {
        log_error("rekey: %s", err);
        return 1;
    }
    return 0;
}

static int cmd_serve(daemon_t *d)
{
    int rc = 1;
    signal(SIGPIPE, SIG_IGN);
    set_instance_id(d);
    http_client_global_init();

    /* The epoll change list folds the enable/disable pairs a request makes on
     * its socket within one loop iteration into at most one epoll_ctl (none
     * when the reply is written at once: see http_server.c). */
    struct event_config *ev_cfg = event_config_new();
    if (ev_cfg != NULL) {
        (void)event_config_set_flag(ev_cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
        d->base = event_base_new_with_config(ev_cfg);
        event_config_free(ev_cfg);
    }
    if (d->base == NULL) {
        log_error("cannot create the event loop");
        goto out;
    }
    d->http = http_server_new(d->base, (size_t)config_get_int(&d->cfg, "HTTP_MAX_BODY_BYTES"));
    if (d->http == NULL) {
        log_error("cannot create the HTTP server");
        goto out;
    }
    http_limits_t limits = {
        (size_t)config_get_int(&d->cfg, "HTTP_MAX_CONNECTIONS"),
        (size_t)config_get_int(&d->cfg, "HTTP_MAX_CONNECTIONS_PER_PEER"),
        (int)config_get_int(&d->cfg, "HTTP_HEADER_TIMEOUT_SECONDS") * 1000,
        (int)config_get_int(&d->cfg, "HTTP_IDLE_TIMEOUT_SECONDS") * 1000,
    };
    http_server_set_limits(d->http, &limits);
    {
        char err[256];
        d->trusted =
            trusted_proxies_parse(config_get(&d->cfg, "TRUSTED_PROXIES"), err, sizeof(err));
        if (d->trusted == NULL) {
            log_error("%s", err);
            goto out;
        }
        http_server_set_trusted_proxies(d->http, d->trusted);
    }
    http_server_set_ready(d->http, ready_check, d);
    int port = (int)config_get_int(&d->cfg, "PORT");
    if (http_server_listen(d->http, config_get(&d->cfg, "LISTEN_ADDR"), port) != 0) {
        log_error("cannot listen on %s:%d", config_get(&d->cfg, "LISTEN_ADDR"), port);
        goto out;
    }

    d->sig_term = evsignal_new(d->base, SIGTERM, on_stop_signal, d);
    d->sig_int = evsignal_new(d->base, SIGINT, on_stop_signal, d);
    if (d->sig_term == NULL || d->sig_int == NULL || evsignal_add(d->sig_term, NULL) != 0 ||
        evsignal_add(d->sig_int, NULL) != 0) {
        log_error("cannot install signal handlers");
        goto out;
    }

    /* Never serve as a role that row-level security does not bind. */
    {
        char err[512];
        pg_conn_t *pg = pg_connect(config_get(&d->cfg, "DATABASE_URL"), 5000, err, sizeof(err));
        if (pg == NULL) {
            log_warn("cannot check the database role now (%s); checked when PostgreSQL answers",
                     err);
        } else {
            char role[128] = "";
            int priv = role_is_privileged(pg, role, sizeof(role), err, sizeof(err));
            pg_close(pg);
            if (priv == 1) {
                log_privileged(role);
                goto out;
            }
            if (priv < 0) {
                log_warn("cannot check the database role now (%s); checked again later", err);
            }
        }
    }

    if (d->svc->start != NULL && d->svc->start(d) != 0) {
        log_error("%s failed to start", d->svc->name);
        goto out;
    }
    if (pthread_create(&d->maint_thread, NULL, maintenance_main, d) != 0) {
        log_error("cannot start the maintenance thread");
        goto out_stop;
    }
    d->maint_started = true;
    if (d->svc->cleanup != NULL && d->retention_at_s >= 0) {
        if (pthread_create(&d->retention_thread, NULL, retention_main, d) != 0) {
            log_error("cannot start the retention thread");
            goto out_stop;
        }
        d->retention_started = true;
    }

    log_info("ready: %s %s listening on %s:%d (instance %s, libevent %s, libpq %d, hiredis "
             "%d.%d.%d)",
             d->svc->name, CA_VERSION, config_get(&d->cfg, "LISTEN_ADDR"),
             http_server_port(d->http), d->instance_id, event_get_version(), PQlibVersion(),
             HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);

    event_base_dispatch(d->base);
    rc = atomic_load(&d->privileged_role) != 0 ? 1 : 0;

out_stop:
    atomic_store(&d->stopping, 1);
    if (d->maint_started) {
        stopwait_stop(&d->maint_wait);
        pthread_join(d->maint_thread, NULL);
    }
    if (d->retention_started) {
        /* stopped by the same stopwait; a run in progress finishes first */
        pthread_join(d->retention_thread, NULL);
    }
    if (d->svc->stop != NULL) {
        d->svc->stop(d);
    }
    log_info("stopped");
out:
    if (d->drain_timer != NULL) {
        event_free(d->drain_timer);
    }
    if (d->sig_term != NULL) {
        event_free(d->sig_term);
    }
    if (d->sig_int != NULL) {
        event_free(d->sig_int);
    }
    if (d->http != NULL) {
        http_server_free(d->http);
    }
    trusted_proxies_free(d->trusted);
    d->trusted = NULL;
    if (d->base != NULL) {
        event_base_free(d->base);
    }
    http_client_global_cleanup();
    return rc;
}

int daemon_main(const service_t *svc, int argc, char **argv)
{
    daemon_t *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        return 1;
    }
    d->svc = svc;
    pthread_mutex_init(&d->maint_lock, NULL);
    stopwait_init(&d->maint_wait);

    const char *cmd = argc > 1 ? argv[1] : "serve";
    int rc = -1;
    if (svc->command != NULL && argc > 1) {
        rc = svc->command(cmd, argc - 1, argv + 1);
    }
    if (rc >= 0) {
        /* an extra command ran */
    } else if (argc > 2) {
        print_usage(d, stderr);
        rc = 2;
    } else if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        print_usage(d, stdout);
        rc = 0;
    } else if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("%s %s (libevent %s, libpq %d, hiredis %d.%d.%d)\n", svc->name, CA_VERSION,
               event_get_version(), PQlibVersion(), HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
        rc = 0;
    } else if (strcmp(cmd, "migrate") == 0) {
        rc = load_config(d, true) == 0 ? cmd_migrate(d) : 2;
    } else if (strcmp(cmd, "wait-schema") == 0) {
        rc = load_config(d, true) == 0 ? cmd_wait_schema(d) : 2;
    } else if (strcmp(cmd, "cleanup") == 0) {
        rc = load_config(d, true) == 0 ? cmd_cleanup(d) : 2;
    } else if (strcmp(cmd, "rekey") == 0 && svc->rekey != NULL) {
        rc = load_config_table(d, true, true) == 0 ? cmd_rekey(d) : 2;
    } else if (strcmp(cmd, "serve") == 0) {
        rc = load_config(d, false) == 0 ? cmd_serve(d) : 2;
    } else {
        fprintf(stderr, "%s: unknown command '%s'\n", svc->name, cmd);
        print_usage(d, stderr);
        rc = 2;
    }

    if (d->cfg_loaded) {
        config_free(&d->cfg);
    }
    pthread_mutex_destroy(&d->maint_lock);
    stopwait_destroy(&d->maint_wait);
    free(d->vars);
    free(d);
    metrics_shutdown();
    log_shutdown();
    return rc;
}
