/*
 * Unit tests for common/config: one table of cases per type, driven through
 * setenv/unsetenv and config_load(); and the daemon's whole table (the common
 * variables and as many of a service's as it has) through daemon_main.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "config.h"
#include "crypto.h"
#include "daemon.h"
#include "log.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VAR "CA_TEST_VAR"

/* base64 of 32 bytes / 31 bytes / 33 bytes. */
#define KEY_A "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
#define KEY_B "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="
#define KEY_31 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg=="
#define KEY_33 "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g"

typedef struct {
    const char *label;
    config_type_t type;
    const char *def;
    bool required;
    long min, max;
    const char *env; /* NULL: unset */
    int rc;
    const char *want;     /* expected value when rc == 0 (NULL: unset) */
    const char *err_part; /* expected substring of err when rc == -1 */
} case_t;

static const case_t CASES[] = {
    /* string */
    {"string set", CFG_STRING, NULL, false, 0, 0, "hello world", 0, "hello world", NULL},
    {"string unset optional", CFG_STRING, NULL, false, 0, 0, NULL, 0, NULL, NULL},
    {"string empty optional", CFG_STRING, NULL, false, 0, 0, "", 0, NULL, NULL},
    {"string default", CFG_STRING, "dflt", false, 0, 0, NULL, 0, "dflt", NULL},
    {"string empty takes default", CFG_STRING, "dflt", true, 0, 0, "", 0, "dflt", NULL},
    {"string required missing", CFG_STRING, NULL, true, 0, 0, NULL, -1, NULL, "is required"},
    {"string required empty", CFG_STRING, NULL, true, 0, 0, "", -1, NULL, "is required"},
    {"string bad default", CFG_STRING, "", false, 0, 0, NULL, -1, NULL,
     "must not be empty (default)"},
    /* int */
    {"int ok", CFG_INT, NULL, false, 1, 65535, "8080", 0, "8080", NULL},
    {"int lower bound", CFG_INT, NULL, false, 1, 65535, "1", 0, "1", NULL},
    {"int upper bound", CFG_INT, NULL, false, 1, 65535, "65535", 0, "65535", NULL},
    {"int below", CFG_INT, NULL, false, 1, 65535, "0", -1, NULL,
     "must be an integer between 1 and 65535"},
    {"int above", CFG_INT, NULL, false, 1, 65535, "65536", -1, NULL, "between 1 and 65535"},
    {"int negative in range", CFG_INT, NULL, false, -10, 10, "-5", 0, "-5", NULL},
    {"int letters", CFG_INT, NULL, false, 1, 65535, "abc", -1, NULL, "must be an integer"},
    {"int trailing junk", CFG_INT, NULL, false, 1, 65535, "12abc", -1, NULL, "must be an integer"},
    {"int leading space", CFG_INT, NULL, false, 1, 65535, " 12", -1, NULL, "must be an integer"},
    {"int float", CFG_INT, NULL, false, 1, 65535, "1.5", -1, NULL, "must be an integer"},
    {"int hex", CFG_INT, NULL, false, 1, 65535, "0x10", -1, NULL, "must be an integer"},
    {"int sign only", CFG_INT, NULL, false, 0, 0, "-", -1, NULL, "must be an integer"},
    {"int overflow", CFG_INT, NULL, false, 0, 0, "99999999999999999999999", -1, NULL,
     "must be an integer"},
    {"int unbounded", CFG_INT, NULL, false, 0, 0, "-123456", 0, "-123456", NULL},
    {"int default", CFG_INT, "60", false, 1, 86400, NULL, 0, "60", NULL},
    {"int default out of range", CFG_INT, "0", false, 1, 10, NULL, -1, NULL, "(default)"},
    {"int required missing", CFG_INT, NULL, true, 1, 10, NULL, -1, NULL, "is required"},
    /* bool */
    {"bool true", CFG_BOOL, NULL, false, 0, 0, "true", 0, "true", NULL},
    {"bool TRUE", CFG_BOOL, NULL, false, 0, 0, "TRUE", 0, "true", NULL},
    {"bool 1", CFG_BOOL, NULL, false, 0, 0, "1", 0, "true", NULL},
    {"bool yes", CFG_BOOL, NULL, false, 0, 0, "yes", 0, "true", NULL},
    {"bool On", CFG_BOOL, NULL, false, 0, 0, "On", 0, "true", NULL},
    {"bool false", CFG_BOOL, NULL, false, 0, 0, "false", 0, "false", NULL},
    {"bool 0", CFG_BOOL, NULL, false, 0, 0, "0", 0, "false", NULL},
    {"bool No", CFG_BOOL, NULL, false, 0, 0, "No", 0, "false", NULL},
    {"bool off", CFG_BOOL, NULL, false, 0, 0, "off", 0, "false", NULL},
    {"bool maybe", CFG_BOOL, NULL, false, 0, 0, "maybe", -1, NULL, "must be true/false"},
    {"bool 2", CFG_BOOL, NULL, false, 0, 0, "2", -1, NULL, "must be true/false"},
    {"bool default", CFG_BOOL, "yes", false, 0, 0, NULL, 0, "true", NULL},
    /* url */
    {"url https", CFG_URL, NULL, false, 0, 0, "https://example.com/x?y=1", 0,
     "https://example.com/x?y=1", NULL},
    {"url postgresql no host", CFG_URL, NULL, false, 0, 0, "postgresql:///creator_automation", 0,
     "postgresql:///creator_automation", NULL},
    {"url postgres", CFG_URL, NULL, false, 0, 0, "postgres://u@h:5432/db", 0,
     "postgres://u@h:5432/db", NULL},
    {"url redis", CFG_URL, NULL, false, 0, 0, "redis://127.0.0.1:6379/0", 0,
     "redis://127.0.0.1:6379/0", NULL},
    {"url rediss upper", CFG_URL, NULL, false, 0, 0, "REDISS://h:1", 0, "REDISS://h:1", NULL},
    {"url smtp", CFG_URL, NULL, false, 0, 0, "smtp://mail:25", 0, "smtp://mail:25", NULL},
    {"url smtps", CFG_URL, NULL, false, 0, 0, "smtps://mail:465", 0, "smtps://mail:465", NULL},
    {"url http", CFG_URL, NULL, false, 0, 0, "http://localhost:8080", 0, "http://localhost:8080",
     NULL},
    {"url ftp", CFG_URL, NULL, false, 0, 0, "ftp://x", -1, NULL, "must be a URL"},
    {"url no scheme", CFG_URL, NULL, false, 0, 0, "localhost:6379", -1, NULL, "must be a URL"},
    {"url nothing after", CFG_URL, NULL, false, 0, 0, "http://", -1, NULL, "must be a URL"},
    {"url space", CFG_URL, NULL, false, 0, 0, "http://a b", -1, NULL, "must be a URL"},
    {"url empty scheme", CFG_URL, NULL, false, 0, 0, "://x", -1, NULL, "must be a URL"},
    {"url default", CFG_URL, "redis://127.0.0.1:6379/0", false, 0, 0, NULL, 0,
     "redis://127.0.0.1:6379/0", NULL},
    /* key32 */
    {"key32 ok", CFG_KEY32, NULL, true, 0, 0, KEY_A, 0, KEY_A, NULL},
    {"key32 trailing newline", CFG_KEY32, NULL, true, 0, 0, KEY_A "\n", 0, KEY_A "\n", NULL},
    {"key32 31 bytes", CFG_KEY32, NULL, true, 0, 0, KEY_31, -1, NULL, "exactly 32 bytes"},
    {"key32 33 bytes", CFG_KEY32, NULL, true, 0, 0, KEY_33, -1, NULL, "exactly 32 bytes"},
    {"key32 not base64", CFG_KEY32, NULL, true, 0, 0, "this is not base64 at all!!!!!!!!!!!!!!!!!",
     -1, NULL, "standard base64"},
    {"key32 base64url", CFG_KEY32, NULL, true, 0, 0, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
     -1, NULL, "standard base64"},
    {"key32 missing", CFG_KEY32, NULL, true, 0, 0, NULL, -1, NULL, "is required"},
    /* keylist */
    {"keylist empty", CFG_KEYLIST, NULL, false, 0, 0, "", 0, "", NULL},
    {"keylist unset", CFG_KEYLIST, NULL, false, 0, 0, NULL, 0, NULL, NULL},
    {"keylist one", CFG_KEYLIST, NULL, false, 0, 0, KEY_A, 0, KEY_A, NULL},
    {"keylist two spaced", CFG_KEYLIST, NULL, false, 0, 0, KEY_A ", " KEY_B, 0, KEY_A ", " KEY_B,
     NULL},
    {"keylist trailing comma", CFG_KEYLIST, NULL, false, 0, 0, KEY_A ",", 0, KEY_A ",", NULL},
    {"keylist bad second", CFG_KEYLIST, NULL, false, 0, 0, KEY_A "," KEY_31, -1, NULL, "item 2"},
    {"keylist bad first", CFG_KEYLIST, NULL, false, 0, 0, "nope," KEY_A, -1, NULL, "item 1"},
    /* list */
    {"list", CFG_LIST, NULL, false, 0, 0, "a@x.com,b@y.com", 0, "a@x.com,b@y.com", NULL},
    {"list empty", CFG_LIST, "x", false, 0, 0, "", 0, "", NULL},
    {"list default", CFG_LIST, "a,b", false, 0, 0, NULL, 0, "a,b", NULL},
};

static void test_types_table(void **state)
{
    for (size_t i = 0; i < sizeof(CASES) / sizeof(CASES[0]); i++) {
        const case_t *c = &CASES[i];
        print_message("config case: %s\n", c->label);
        const config_var_t vars[] = {
            {"CA_TEST_OTHER", CFG_STRING, "x", false, false, 0, 0, "another var"},
            {VAR, c->type, c->def, c->required, false, c->min, c->max, "the variable under test"},
        };
        if (c->env != NULL) {
            assert_int_equal(setenv(VAR, c->env, 1), 0);
        } else {
            assert_int_equal(unsetenv(VAR), 0);
        }
        config_t cfg;
        char err[256];
        memset(err, 'Z', sizeof(err));
        err[sizeof(err) - 1] = '\0';
        int rc = config_load(&cfg, vars, 2, err, sizeof(err));
        assert_int_equal(rc, c->rc);
        if (rc == 0) {
            const char *got = config_get(&cfg, VAR);
            if (c->want == NULL) {
                assert_null(got);
            } else {
                assert_non_null(got);
                assert_string_equal(got, c->want);
            }
            assert_string_equal(config_get(&cfg, "CA_TEST_OTHER"), "x");
            config_free(&cfg);
            assert_null(cfg.values);
        } else {
            /* One line, starting with the variable's name. */
            assert_true(strncmp(err, VAR ": ", strlen(VAR) + 2) == 0);
            assert_null(strchr(err, '\n'));
            assert_non_null(strstr(err, c->err_part));
            assert_null(cfg.values); /* freed on error */
            config_free(&cfg);       /* harmless after a failed load */
        }
    }
    unsetenv(VAR);
}

static void test_getters(void **state)
{
    const config_var_t vars[] = {
        {"CA_T_PORT", CFG_INT, "9103", false, false, 1, 65535, "port"},
        {"CA_T_NEG", CFG_INT, NULL, false, false, -100, 100, "negative"},
        {"CA_T_FLAG", CFG_BOOL, "off", false, false, 0, 0, "flag"},
        {"CA_T_ON", CFG_BOOL, NULL, false, false, 0, 0, "flag"},
        {"CA_T_UNSET", CFG_INT, NULL, false, false, 0, 0, "unset int"},
        {"CA_T_UNSETB", CFG_BOOL, NULL, false, false, 0, 0, "unset bool"},
    };
    unsetenv("CA_T_PORT");
    setenv("CA_T_NEG", "-42", 1);
    unsetenv("CA_T_FLAG");
    setenv("CA_T_ON", "Yes", 1);
    unsetenv("CA_T_UNSET");
    unsetenv("CA_T_UNSETB");
    config_t cfg;
    char err[256];
    assert_int_equal(config_load(&cfg, vars, 6, err, sizeof(err)), 0);
    assert_int_equal(config_get_int(&cfg, "CA_T_PORT"), 9103);
    assert_int_equal(config_get_int(&cfg, "CA_T_NEG"), -42);
    assert_false(config_get_bool(&cfg, "CA_T_FLAG"));
    assert_true(config_get_bool(&cfg, "CA_T_ON"));
    assert_string_equal(config_get(&cfg, "CA_T_ON"), "true");
    assert_null(config_get(&cfg, "CA_T_UNSET"));
    assert_int_equal(config_get_int(&cfg, "CA_T_UNSET"), 0);
    assert_false(config_get_bool(&cfg, "CA_T_UNSETB"));
    config_free(&cfg);
    unsetenv("CA_T_NEG");
    unsetenv("CA_T_ON");
}

static void test_first_error_wins(void **state)
{
    const config_var_t vars[] = {
        {"CA_T_A", CFG_INT, NULL, false, false, 1, 10, "a"},
        {"CA_T_B", CFG_STRING, NULL, true, false, 0, 0, "b"},
    };
    setenv("CA_T_A", "11", 1);
    unsetenv("CA_T_B");
    config_t cfg;
    char err[256];
    assert_int_equal(config_load(&cfg, vars, 2, err, sizeof(err)), -1);
    assert_string_equal(err, "CA_T_A: must be an integer between 1 and 10");
    setenv("CA_T_A", "10", 1);
    assert_int_equal(config_load(&cfg, vars, 2, err, sizeof(err)), -1);
    assert_string_equal(err, "CA_T_B: is required (b)");
    unsetenv("CA_T_A");
}

static void test_unknown_name_aborts(void **state)
{
    const config_var_t vars[] = {{"CA_T_X", CFG_STRING, "x", false, false, 0, 0, "x"}};
    config_t cfg;
    char err[256];
    assert_int_equal(config_load(&cfg, vars, 1, err, sizeof(err)), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", 1);
        if (devnull >= 0) {
            dup2(devnull, 2);
        }
        (void)config_get(&cfg, "CA_T_NOT_IN_TABLE");
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    config_free(&cfg);
}

static void test_secrets_registered_for_redaction(void **state)
{
    const config_var_t vars[] = {
        {"CA_T_SESSION", CFG_STRING, NULL, true, true, 0, 0, "session secret"},
        {"CA_T_KEY", CFG_KEY32, NULL, true, true, 0, 0, "key"},
        {"CA_T_OLD", CFG_KEYLIST, NULL, false, true, 0, 0, "old keys"},
        {"CA_T_WHSEC", CFG_LIST, NULL, false, true, 0, 0, "webhook secrets"},
        {"CA_T_PUBLIC", CFG_STRING, NULL, false, false, 0, 0, "not secret"},
    };
    setenv("CA_T_SESSION", "session-secret-value-1234", 1);
    setenv("CA_T_KEY", KEY_A, 1);
    setenv("CA_T_OLD", KEY_B " , " KEY_A, 1);
    setenv("CA_T_WHSEC", "hooksecret-one,hooksecret-two", 1);
    setenv("CA_T_PUBLIC", "public-value-123456", 1);
    config_t cfg;
    char err[256];
    assert_int_equal(config_load(&cfg, vars, 5, err, sizeof(err)), 0);

    char text[512];
    snprintf(text, sizeof(text), "s=%s k=%s old=%s w=%s pub=%s", "session-secret-value-1234", KEY_A,
             KEY_B, "hooksecret-two", "public-value-123456");
    log_redact_inplace(text);
    assert_null(strstr(text, "session-secret-value-1234"));
    assert_null(strstr(text, KEY_A));
    assert_null(strstr(text, KEY_B)); /* each item of a secret list */
    assert_null(strstr(text, "hooksecret-two"));
    assert_non_null(strstr(text, "public-value-123456")); /* not a secret */
    assert_string_equal(
        text, "s=[REDACTED] k=[REDACTED] old=[REDACTED] w=[REDACTED] pub=public-value-123456");

    config_free(&cfg);
    unsetenv("CA_T_SESSION");
    unsetenv("CA_T_KEY");
    unsetenv("CA_T_OLD");
    unsetenv("CA_T_WHSEC");
    unsetenv("CA_T_PUBLIC");
    log_shutdown();
}

static void test_secret_error_does_not_echo(void **state)
{
    const config_var_t vars[] = {{"CA_T_KEY", CFG_KEY32, NULL, true, true, 0, 0, "key"}};
    setenv("CA_T_KEY", "almost-a-key-but-a-secret-nonetheless", 1);
    config_t cfg;
    char err[256];
    assert_int_equal(config_load(&cfg, vars, 1, err, sizeof(err)), -1);
    assert_null(strstr(err, "almost-a-key"));
    assert_true(strncmp(err, "CA_T_KEY: ", 10) == 0);
    unsetenv("CA_T_KEY");
}

static void test_help(void **state)
{
    const config_var_t vars[] = {
        {"PORT", CFG_INT, "9103", false, false, 1, 65535, "HTTP port for health and metrics"},
        {"ENCRYPTION_KEY", CFG_KEY32, NULL, true, true, 0, 0, "base64 of 32 bytes"},
        {"CA_T_DEFAULT_SECRET", CFG_STRING, "default-secret-never-shown", false, true, 0, 0,
         "a secret with a default"},
        {"COMFYUI_URL", CFG_URL, NULL, false, false, 0, 0, "unset: CPU executor only"},
    };
    setenv("ENCRYPTION_KEY", KEY_A, 1);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    config_print_help(out, "job-worker", vars, 4);
    fclose(out);
    assert_non_null(strstr(buf, "job-worker"));
    for (size_t i = 0; i < 4; i++) {
        assert_non_null(strstr(buf, vars[i].name));
        assert_non_null(strstr(buf, vars[i].help));
    }
    assert_non_null(strstr(buf, "9103"));
    assert_non_null(strstr(buf, "1..65535"));
    assert_non_null(strstr(buf, "required"));
    assert_non_null(strstr(buf, "secret"));
    assert_null(strstr(buf, "default-secret-never-shown"));
    assert_null(strstr(buf, KEY_A));
    free(buf);
    unsetenv("ENCRYPTION_KEY");
}

/* ---- the daemon's table: no limit on a service's variables ---- */

#define MANY_VARS 80

static char many_names[MANY_VARS][24];
static config_var_t many_vars[MANY_VARS];

static const service_t *many_service(void)
{
    static service_t svc;
    for (int i = 0; i < MANY_VARS; i++) {
        snprintf(many_names[i], sizeof(many_names[i]), "CA_T_MANY_%02d", i);
        many_vars[i] =
            (config_var_t){many_names[i], CFG_INT, "1", false, false, 1, 9, "one of many"};
    }
    svc = (service_t){.name = "many", .default_port = 9999, .vars = many_vars, .nvars = MANY_VARS};
    return &svc;
}

/* Runs daemon_main(svc, cmd) in a child with stdout and stderr in `out`
 * (a NUL-terminated malloc'd copy); returns its exit status. */
static int run_daemon(const service_t *svc, const char *cmd, char **out)
{
    char path[] = "/tmp/ca-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(10); /* a serve that started by mistake does not hang the test */
        dup2(fd, 1);
        dup2(fd, 2);
        char *argv[] = {"many", (char *)cmd, NULL};
        int rc = daemon_main(svc, 2, argv);
        fflush(NULL);
        _exit(rc);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    FILE *f = fdopen(fd, "r");
    assert_non_null(f);
    rewind(f);
    char *buf = calloc(1, 1 << 16);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(path);
    *out = buf;
    return WEXITSTATUS(status);
}

static void test_daemon_keeps_every_variable(void **state)
{
    const service_t *svc = many_service();
    char *out = NULL;
    assert_int_equal(run_daemon(svc, "--help", &out), 0);
    assert_non_null(strstr(out, "DATABASE_URL"));
    for (int i = 0; i < MANY_VARS; i++) {
        if (strstr(out, many_names[i]) == NULL) {
            fail_msg("--help lacks %s", many_names[i]);
        }
    }
    free(out);

    /* The last variable is read and checked like the first: exit 2 naming it. */
    setenv("CA_T_MANY_79", "10", 1);
    assert_int_equal(run_daemon(svc, "serve", &out), 2);
    unsetenv("CA_T_MANY_79");
    assert_non_null(strstr(out, "CA_T_MANY_79: must be an integer between 1 and 9"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_types_table),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_first_error_wins),
        cmocka_unit_test(test_unknown_name_aborts),
        cmocka_unit_test(test_secrets_registered_for_redaction),
        cmocka_unit_test(test_secret_error_does_not_echo),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_daemon_keeps_every_variable),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    log_shutdown();
    return rc;
}
