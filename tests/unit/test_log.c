/*
 * Unit tests for common/log: output goes to a temporary file through
 * log_set_fd(); every line is parsed with cJSON.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "log.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static FILE *g_capture;

/* Everything logged since the last call (caller frees); resets the file. */
static char *drain(void)
{
    int fd = fileno(g_capture);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char *buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    buf[st.st_size] = '\0';
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return buf;
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == '\n') {
            n++;
        }
    }
    return n;
}

/* Strict UTF-8 check of raw output bytes. */
static bool valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return false;
        }
        if (i + len > n || s[i + 1] < lo || s[i + 1] > hi) {
            return false;
        }
        for (size_t k = 2; k < len; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) {
                return false;
            }
        }
        i += len;
    }
    return true;
}

/* Parses the single line in `text`; asserts it is one valid JSON object
 * whose raw bytes are valid UTF-8 with no raw control characters. */
static cJSON *parse_one(const char *text)
{
    size_t len = strlen(text);
    assert_true(len > 0);
    assert_int_equal(count_lines(text), 1);
    assert_int_equal(text[len - 1], '\n');
    assert_true(valid_utf8((const unsigned char *)text, len));
    for (size_t i = 0; i + 1 < len; i++) {
        assert_true((unsigned char)text[i] >= 0x20);
    }
    cJSON *obj = cJSON_ParseWithLengthOpts(text, len, NULL, 0);
    assert_non_null(obj);
    assert_true(cJSON_IsObject(obj));
    return obj;
}

static const char *field(const cJSON *obj, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (item == NULL) {
        return NULL;
    }
    assert_true(cJSON_IsString(item));
    return item->valuestring;
}

static int setup(void **state)
{
    g_capture = tmpfile();
    assert_non_null(g_capture);
    log_set_fd(fileno(g_capture));
    log_init("test-svc", CA_LOG_DEBUG);
    return 0;
}

static int teardown(void **state)
{
    log_set_fd(-1);
    log_shutdown();
    fclose(g_capture);
    g_capture = NULL;
    return 0;
}

/* ---------------------------------------------------------------- fields */

static void test_fields(void **state)
{
    time_t before = time(NULL);
    int line = __LINE__ + 1;
    log_info("hello %d %s", 42, "world");
    time_t after = time(NULL);
    char *out = drain();
    cJSON *obj = parse_one(out);

    assert_string_equal(field(obj, "level"), "info");
    assert_string_equal(field(obj, "service"), "test-svc");
    assert_string_equal(field(obj, "msg"), "hello 42 world");
    char src[64];
    snprintf(src, sizeof(src), "test_log.c:%d", line);
    assert_string_equal(field(obj, "src"), src);

    /* ts: RFC 3339 UTC with milliseconds, and the current time. */
    const char *ts = field(obj, "ts");
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24);
    struct tm tm = {0};
    int ms = -1;
    char z = 0;
    assert_int_equal(sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &tm.tm_year, &tm.tm_mon,
                            &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &z),
                     8);
    assert_int_equal(z, 'Z');
    assert_true(ms >= 0 && ms <= 999);
    assert_int_equal(ts[4], '-');
    assert_int_equal(ts[10], 'T');
    assert_int_equal(ts[19], '.');
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t when = timegm(&tm);
    assert_true(when >= before && when <= after);

    /* Field order as documented: ts, level, service, ..., msg, src. */
    assert_true(strncmp(out, "{\"ts\":", 6) == 0);
    assert_true(strstr(out, "\"level\"") < strstr(out, "\"service\""));
    assert_true(strstr(out, "\"msg\"") < strstr(out, "\"src\""));
    cJSON_Delete(obj);
    free(out);
}

static void test_levels(void **state)
{
    static const struct {
        const char *name;
        int rc;
        log_level_t level;
    } cases[] = {
        {"debug", 0, CA_LOG_DEBUG},  {"info", 0, CA_LOG_INFO},     {"warn", 0, CA_LOG_WARN},
        {"warning", 0, CA_LOG_WARN}, {"error", 0, CA_LOG_ERROR},   {"INFO", 0, CA_LOG_INFO},
        {"", -1, CA_LOG_INFO},       {"verbose", -1, CA_LOG_INFO}, {"errors", -1, CA_LOG_INFO},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        log_level_t got = CA_LOG_INFO;
        assert_int_equal(log_level_parse(cases[i].name, &got), cases[i].rc);
        if (cases[i].rc == 0) {
            assert_int_equal(got, cases[i].level);
        }
    }
    log_level_t unused;
    assert_int_equal(log_level_parse(NULL, &unused), -1);

    log_init("test-svc", CA_LOG_WARN);
    assert_false(log_enabled(CA_LOG_DEBUG));
    assert_false(log_enabled(CA_LOG_INFO));
    assert_true(log_enabled(CA_LOG_WARN));
    assert_true(log_enabled(CA_LOG_ERROR));
    log_debug("dropped debug");
    log_info("dropped info");
    log_warn("kept warn");
    log_error("kept error");
    char *out = drain();
    assert_int_equal(count_lines(out), 2);
    assert_null(strstr(out, "dropped"));
    char *second = strchr(out, '\n') + 1;
    second[-1] = '\0';
    char first[4096];
    snprintf(first, sizeof(first), "%s\n", out);
    cJSON *a = parse_one(first);
    cJSON *b = parse_one(second);
    assert_string_equal(field(a, "level"), "warn");
    assert_string_equal(field(b, "level"), "error");
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(out);

    log_init("test-svc", CA_LOG_DEBUG);
    log_debug("now kept");
    out = drain();
    a = parse_one(out);
    assert_string_equal(field(a, "level"), "debug");
    cJSON_Delete(a);
    free(out);
}

/* ------------------------------------------------------------- escaping */

typedef struct {
    const char *name;
    const char *in;
    const char *want; /* decoded msg; invalid UTF-8 becomes U+FFFD */
} escape_case_t;

static const escape_case_t ESCAPES[] = {
    {"plain", "plain text", "plain text"},
    {"quotes", "say \"hi\"", "say \"hi\""},
    {"backslash", "C:\\path\\", "C:\\path\\"},
    {"newlines", "line1\nline2\r\n", "line1\nline2\r\n"},
    {"tab bs ff", "a\tb\bc\fd", "a\tb\bc\fd"},
    {"controls", "\x01\x02\x1b[31m\x1f\x7f", "\x01\x02\x1b[31m\x1f\x7f"},
    {"valid utf8", "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x93\xb7",
     "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x93\xb7"},
    {"lone 0xff", "x\xffy", "x\xef\xbf\xbdy"},
    {"truncated 2-byte", "x\xc3", "x\xef\xbf\xbd"},
    {"overlong", "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"surrogate", "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"above U+10FFFF", "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"cut 4-byte", "a\xf0\x9f\x93", "a\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"json-looking", "\"},{\"level\":\"error", "\"},{\"level\":\"error"},
};

static void test_escaping(void **state)
{
    for (size_t i = 0; i < sizeof(ESCAPES) / sizeof(ESCAPES[0]); i++) {
        print_message("escape: %s\n", ESCAPES[i].name);
        log_info("%s", ESCAPES[i].in);
        char *out = drain();
        cJSON *obj = parse_one(out);
        assert_string_equal(field(obj, "msg"), ESCAPES[i].want);
        assert_string_equal(field(obj, "level"), "info");
        cJSON_Delete(obj);
        free(out);
    }
    /* An embedded NUL byte is escaped, not a line terminator. */
    log_info("a%cb", 0);
    char *out = drain();
    cJSON *obj = parse_one(out);
    assert_non_null(strstr(out, "\"a\\u0000b\""));
    cJSON_Delete(obj);
    free(out);

    /* Every byte value 1..255 in one message: still one valid line. */
    char all[256];
    for (int b = 1; b < 256; b++) {
        all[b - 1] = (char)b;
    }
    all[255] = '\0';
    log_warn("%s", all);
    out = drain();
    obj = parse_one(out);
    cJSON_Delete(obj);
    free(out);
}

static void test_long_message_truncated(void **state)
{
    const char *secret = "Zq9-secret-XYZ-long";
    log_redact_add(secret);
    size_t big = 100 * 1024;
    char *msg = malloc(big + 1);
    assert_non_null(msg);
    memset(msg, 'x', big);
    msg[big] = '\0';
    /* A secret across the 16 KiB cut, and one at the very end. */
    memcpy(msg + 16 * 1024 - 5, secret, strlen(secret));
    memcpy(msg + big - strlen(secret), secret, strlen(secret));
    log_info("%s", msg);
    char *out = drain();
    cJSON *obj = parse_one(out);
    const char *got = field(obj, "msg");
    assert_true(strlen(got) < 17 * 1024);
    assert_true(strlen(got) > 15 * 1024);
    const char *suffix = " [truncated]";
    assert_string_equal(got + strlen(got) - strlen(suffix), suffix);
    assert_null(strstr(out, "Zq9-s"));
    cJSON_Delete(obj);
    free(out);
    free(msg);
}

/* ------------------------------------------------------------ redaction */

static void test_redact_registered(void **state)
{
    const char *secret = "s3cr3t-session-value";
    log_redact_add(secret);
    log_redact_add("abc12"); /* < 6 bytes: ignored */
    log_redact_add(NULL);

    log_info("login with %s and again %s.", secret, secret);
    char *out = drain();
    cJSON *obj = parse_one(out);
    assert_null(strstr(out, secret));
    assert_string_equal(field(obj, "msg"), "login with [REDACTED] and again [REDACTED].");
    cJSON_Delete(obj);
    free(out);

    log_info("short abc12 stays");
    out = drain();
    obj = parse_one(out);
    assert_string_equal(field(obj, "msg"), "short abc12 stays");
    cJSON_Delete(obj);
    free(out);

    /* A secret containing JSON specials is still found (redacted before
     * escaping). */
    const char *tricky = "p\"a\\ss\nword";
    log_redact_add(tricky);
    log_info("pw=%s;", tricky);
    out = drain();
    obj = parse_one(out);
    assert_string_equal(field(obj, "msg"), "pw=[REDACTED];");
    cJSON_Delete(obj);
    free(out);

    /* Context values are redacted too. */
    log_context_set("user_token", secret);
    log_info("ctx");
    out = drain();
    obj = parse_one(out);
    assert_null(strstr(out, secret));
    assert_string_equal(field(obj, "user_token"), "[REDACTED]");
    cJSON_Delete(obj);
    free(out);
    log_context_clear();
}

typedef struct {
    const char *in;
    const char *want; /* after log_write (full "[REDACTED]" marker) */
} shape_case_t;

static const shape_case_t SHAPES[] = {
    {"Authorization: Bearer abc.DEF-123_~+/=", "Authorization: Bearer [REDACTED]"},
    {"authorization: bearer   eyJhbGciOi.x.y", "authorization: bearer   [REDACTED]"},
    {"token ya29.a0AfH6SMBx_Yz-9 ok", "token [REDACTED] ok"},
    {"refresh 1//0gAbCdEfGh-ij_KL ok", "refresh [REDACTED] ok"},
    {"key sk_live_51HxYzAbCdEf0123 ok", "key [REDACTED] ok"},
    {"key sk_test_abcdef123456", "key [REDACTED]"},
    {"restricted rk_live_abcdef123456.", "restricted [REDACTED]."},
    {"hook whsec_AbCdEf123456+/= ok", "hook [REDACTED] ok"},
    {"grant_type=refresh_token&refresh_token=1%2F%2Fabc&client_secret=GOCSPX-xyz&code=4/0Adeu5",
     "grant_type=refresh_token&refresh_token=[REDACTED]&client_secret=[REDACTED]&code=[REDACTED]"},
    {"url /cb?state=s1&code=4/0AX4Xf&scope=drive", "url /cb?state=s1&code=[REDACTED]&scope=drive"},
    {"body {\"access_token\":\"tok-abcdef\",\"expires_in\":3599}",
     "body {\"access_token\":\"[REDACTED]\",\"expires_in\":3599}"},
    {"{\"refresh_token\" : \"r\\\"x\",\"id_token\":\"e.y.z\"}",
     "{\"refresh_token\" : \"[REDACTED]\",\"id_token\":\"[REDACTED]\"}"},
    {"db postgresql://ca:dbpass99@localhost/db", "db postgresql://ca:[REDACTED]@localhost/db"},
    /* Things that are not secrets stay as they are. */
    {"disk_usage task_queue error_code=404 pk_live_abcdef123",
     "disk_usage task_queue error_code=404 pk_live_abcdef123"},
    {"{\"error\":{\"code\":\"not_found\"}}", "{\"error\":{\"code\":\"not_found\"}}"},
    {"see https://example.com/a/b and redis://127.0.0.1:6379/0",
     "see https://example.com/a/b and redis://127.0.0.1:6379/0"},
    {"sk_ short sk_abc", "sk_ short sk_abc"},
};

static void test_redact_shapes(void **state)
{
    for (size_t i = 0; i < sizeof(SHAPES) / sizeof(SHAPES[0]); i++) {
        print_message("shape: %s\n", SHAPES[i].in);
        log_info("%s", SHAPES[i].in);
        char *out = drain();
        cJSON *obj = parse_one(out);
        assert_string_equal(field(obj, "msg"), SHAPES[i].want);
        cJSON_Delete(obj);
        free(out);

        /* In place: never longer than the input, no secret bytes left. */
        char *copy = strdup(SHAPES[i].in);
        log_redact_inplace(copy);
        assert_true(strlen(copy) <= strlen(SHAPES[i].in));
        if (strcmp(SHAPES[i].in, SHAPES[i].want) == 0) {
            assert_string_equal(copy, SHAPES[i].in);
        } else {
            assert_string_not_equal(copy, SHAPES[i].in);
        }
        free(copy);
    }
}

static void test_redact_inplace(void **state)
{
    log_redact_add("0123456789-long-secret");
    log_redact_add("six666");
    char a[] = "x 0123456789-long-secret y";
    log_redact_inplace(a);
    assert_string_equal(a, "x [REDACTED] y");
    char b[] = "x six666 y";
    log_redact_inplace(b);
    assert_string_equal(b, "x ****** y");
    char c[] = "Bearer ab";
    log_redact_inplace(c);
    assert_string_equal(c, "Bearer **");
    char d[] = "nothing here";
    log_redact_inplace(d);
    assert_string_equal(d, "nothing here");
    log_redact_inplace(NULL);
}

/* -------------------------------------------------------------- context */

static void *thread_logs(void *arg)
{
    log_context_set("job_id", "job-in-thread");
    log_info("from thread");
    /* Exits without clearing: the thread's context is freed at exit. */
    return NULL;
}

static void test_context_per_thread(void **state)
{
    log_context_set("request_id", "req-main");
    log_context_set("user_id", "u-1");
    log_info("main before");

    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_logs, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    log_info("main after");

    char *out = drain();
    assert_int_equal(count_lines(out), 3);
    char *lines[3];
    char *save = NULL;
    char *tok = strtok_r(out, "\n", &save);
    for (int i = 0; i < 3; i++) {
        assert_non_null(tok);
        size_t len = strlen(tok);
        lines[i] = malloc(len + 2);
        memcpy(lines[i], tok, len);
        lines[i][len] = '\n';
        lines[i][len + 1] = '\0';
        tok = strtok_r(NULL, "\n", &save);
    }
    for (int i = 0; i < 3; i++) {
        cJSON *obj = parse_one(lines[i]);
        const char *msg = field(obj, "msg");
        if (strcmp(msg, "from thread") == 0) {
            assert_string_equal(field(obj, "job_id"), "job-in-thread");
            assert_null(field(obj, "request_id"));
            assert_null(field(obj, "user_id"));
        } else {
            assert_string_equal(field(obj, "request_id"), "req-main");
            assert_string_equal(field(obj, "user_id"), "u-1");
            assert_null(field(obj, "job_id"));
        }
        /* Context keys sit between service and msg. */
        assert_true(strstr(lines[i], "\"service\"") < strstr(lines[i], "\"msg\""));
        cJSON_Delete(obj);
        free(lines[i]);
    }
    free(out);

    /* Replace, remove, clear. */
    log_context_set("request_id", "req-2");
    log_context_set("user_id", NULL);
    log_info("changed");
    out = drain();
    cJSON *obj = parse_one(out);
    assert_string_equal(field(obj, "request_id"), "req-2");
    assert_null(field(obj, "user_id"));
    cJSON_Delete(obj);
    free(out);

    log_context_clear();
    log_info("cleared");
    out = drain();
    obj = parse_one(out);
    assert_null(field(obj, "request_id"));
    cJSON_Delete(obj);
    free(out);
}

static void test_context_limits(void **state)
{
    char key[16];
    char value[16];
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(value, sizeof(value), "v%d", i);
        log_context_set(key, value);
    }
    /* Reserved names never shadow the fixed fields. */
    log_context_set("msg", "spoof");
    log_context_set("level", "spoof");
    log_context_set("", "empty");
    log_context_set(NULL, "null");
    log_context_set("k\"q", "x"); /* a key needing escapes (replaces nothing: full) */
    log_info("limits");
    char *out = drain();
    cJSON *obj = parse_one(out);
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(value, sizeof(value), "v%d", i);
        if (i < 8) {
            assert_string_equal(field(obj, key), value);
        } else {
            assert_null(field(obj, key));
        }
    }
    assert_string_equal(field(obj, "msg"), "limits");
    assert_string_equal(field(obj, "level"), "info");
    assert_null(strstr(out, "spoof"));
    cJSON_Delete(obj);
    free(out);

    /* After removing one, a new key fits, and an escaped key is valid JSON. */
    log_context_set("k0", NULL);
    log_context_set("k\"q", "v\n");
    log_info("escaped key");
    out = drain();
    obj = parse_one(out);
    assert_string_equal(field(obj, "k\"q"), "v\n");
    assert_null(field(obj, "k0"));
    cJSON_Delete(obj);
    free(out);
    log_context_clear();
}

/* ---------------------------------------------------------- concurrency */

enum { THREADS = 4, LINES_PER_THREAD = 250 };

static void *thread_spam(void *arg)
{
    char id[16];
    snprintf(id, sizeof(id), "t%d", (int)(intptr_t)arg);
    log_context_set("worker", id);
    for (int i = 0; i < LINES_PER_THREAD; i++) {
        log_info("line %d from %s with some padding to make it longer %0200d", i, id, 0);
    }
    log_context_clear();
    return NULL;
}

static void test_threads_whole_lines(void **state)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, thread_spam, (void *)(intptr_t)i), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
    }
    char *out = drain();
    assert_int_equal(count_lines(out), THREADS * LINES_PER_THREAD);
    int per_thread[THREADS] = {0};
    char *save = NULL;
    for (char *tok = strtok_r(out, "\n", &save); tok != NULL; tok = strtok_r(NULL, "\n", &save)) {
        cJSON *obj = cJSON_Parse(tok);
        assert_non_null(obj);
        const char *worker = field(obj, "worker");
        const char *msg = field(obj, "msg");
        assert_non_null(worker);
        int n = worker[1] - '0';
        assert_true(n >= 0 && n < THREADS);
        /* The context belongs to the thread that wrote the message. */
        assert_non_null(strstr(msg, worker));
        per_thread[n]++;
        cJSON_Delete(obj);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(per_thread[i], LINES_PER_THREAD);
    }
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_message_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redact_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redact_shapes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redact_inplace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_context_per_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_context_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_whole_lines, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
