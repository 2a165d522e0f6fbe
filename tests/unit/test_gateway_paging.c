/*
 * test_gateway_paging — paging_ts_rfc3339: PostgreSQL's ISO text of a
 * TIMESTAMP written as RFC 3339 (GET /api/jobs writes its timestamps and its
 * cursor key with it instead of to_char in SQL).
 */
#include "paging.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static const char *conv(const char *in, int digits, const char *suffix, char *out, size_t len)
{
    size_t n = paging_ts_rfc3339(in, strlen(in), digits, suffix, out, len);
    if (n == 0) {
        return NULL;
    }
    assert_int_equal(n, strlen(out));
    return out;
}

static void test_fractions_are_truncated_and_padded(void **state)
{
    (void)state;
    char out[40];
    static const struct {
        const char *in;
        const char *ms;
        const char *us;
    } cases[] = {
        {"2026-11-25 20:39:07", "2026-11-25T20:39:07.000Z", "2026-11-25T20:39:07.000000"},
        {"2026-11-25 20:39:07.5", "2026-11-25T20:39:07.500Z", "2026-11-25T20:39:07.500000"},
        {"2026-11-25 20:39:07.04", "2026-11-25T20:39:07.040Z", "2026-11-25T20:39:07.040000"},
        {"2026-11-25 20:39:07.0414", "2026-11-25T20:39:07.041Z", "2026-11-25T20:39:07.041400"},
        /* truncated like to_char's MS, never rounded up into the next second */
        {"1999-12-31 23:59:59.999999", "1999-12-31T23:59:59.999Z", "1999-12-31T23:59:59.999999"},
        {"0001-01-01 00:00:00.000001", "0001-01-01T00:00:00.000Z", "0001-01-01T00:00:00.000001"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_non_null(conv(cases[i].in, 3, "Z", out, sizeof out));
        assert_string_equal(out, cases[i].ms);
        assert_non_null(conv(cases[i].in, 6, "", out, sizeof out));
        assert_string_equal(out, cases[i].us);
    }
    assert_non_null(conv("2026-11-25 20:39:07.5", 0, "Z", out, sizeof out));
    assert_string_equal(out, "2026-11-25T20:39:07Z");
}

/* Anything but that exact form is refused (the caller then writes the text as
 * it came): other DateStyles, years past 9999, BC, infinity, stray bytes. */
static void test_other_forms_are_refused(void **state)
{
    (void)state;
    char out[40];
    static const char *const bad[] = {
        "",
        "2026-11-25",
        "2026-11-25T20:39:07",      /* already RFC 3339: not PostgreSQL's ISO text */
        "11/25/2026 20:39:07",      /* DateStyle SQL */
        "Wed Nov 25 20:39:07 2026", /* DateStyle Postgres */
        "25.11.2026 20:39:07",      /* DateStyle German */
        "10000-01-01 00:00:00",     /* year past 9999 */
        "2026-11-25 20:39:07 BC",   /* BC */
        "infinity",
        "-infinity",
        "2026-11-25 20:39:07.",        /* a dot without digits */
        "2026-11-25 20:39:07.1234567", /* seven digits */
        "2026-11-25 20:39:07.12a",     /* not a digit */
        "2026-11-25 20:39:07+00",      /* a zone: not a TIMESTAMP */
        "2026-1a-25 20:39:07",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (conv(bad[i], 3, "Z", out, sizeof out) != NULL) {
            fail_msg("accepted \"%s\" as \"%s\"", bad[i], out);
        }
    }
    /* out of range digits or a buffer too small */
    assert_null(conv("2026-11-25 20:39:07", 7, "", out, sizeof out));
    assert_null(conv("2026-11-25 20:39:07", -1, "", out, sizeof out));
    assert_null(conv("2026-11-25 20:39:07", 3, "Z", out, 27));
    assert_non_null(conv("2026-11-25 20:39:07", 3, "Z", out, 28));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fractions_are_truncated_and_padded),
        cmocka_unit_test(test_other_forms_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
