/*
 * Unit tests for common/drive's reading of Drive answers, without a server:
 * this test is linked with -Wl,--wrap=http_client_do (Makefile), so every
 * request the Google client makes is answered by __wrap_http_client_do below
 * with the body the test sets. Regression tests for what fuzzing found
 * (tests/fuzz/fuzz_drive_response.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "drive.h"
#include "google_oauth.h"
#include "http_client.h"

#include <stdlib.h>
#include <string.h>

http_result_t __wrap_http_client_do(http_client_t *c, const http_request_t *req,
                                    http_response_t *resp);

static const char *answer_body;

http_result_t __wrap_http_client_do(http_client_t *c, const http_request_t *req,
                                    http_response_t *resp)
{
    memset(resp, 0, sizeof(*resp));
    resp->attempts = 1;
    resp->status = 200;
    resp->body = strdup(answer_body);
    resp->body_len = strlen(answer_body);
    return HTTP_RESULT_OK;
}

static google_client_t *new_client(void)
{
    google_config_t cfg = {
        .client_id = "id",
        .client_secret = "secret",
        .token_url = "http://drive.invalid/token",
        .drive_api_url = "http://drive.invalid/drive/v3",
        .max_retries = 0,
    };
    google_client_t *gc = google_client_new(&cfg);
    assert_non_null(gc);
    return gc;
}

/* Found by fuzz_drive_response: a size sent as a JSON number beyond long long
 * was converted anyway (undefined behaviour; LLONG_MIN on x86-64). It is
 * "no size" (-1), like a negative or malformed one. */
static void test_size_out_of_range_is_none(void **state)
{
    google_client_t *gc = new_client();
    answer_body = "{\"files\":["
                  "{\"id\":\"a\",\"size\":1e19},"
                  "{\"id\":\"b\",\"size\":9223372036854775808},"
                  "{\"id\":\"c\",\"size\":\"99999999999999999999\"},"
                  "{\"id\":\"d\",\"size\":-5},"
                  "{\"id\":\"e\",\"size\":12},"
                  "{\"id\":\"f\",\"size\":\"4096\"}]}";
    drive_file_list_t l;
    google_error_t err;
    assert_int_equal(drive_files_list(gc, "tok", NULL, NULL, 10, NULL, &l, &err), GOOGLE_OK);
    assert_int_equal(l.n, 6);
    assert_int_equal(l.files[0].size, -1);
    assert_int_equal(l.files[1].size, -1);
    assert_int_equal(l.files[2].size, -1);
    assert_int_equal(l.files[3].size, -1);
    assert_int_equal(l.files[4].size, 12);
    assert_int_equal(l.files[5].size, 4096);
    drive_file_list_free(&l);

    answer_body = "{\"id\":\"g\",\"name\":\"g.jpg\",\"size\":1.8446744073709552e19}";
    drive_file_t f;
    assert_int_equal(drive_files_get(gc, "tok", "g", &f, &err), GOOGLE_OK);
    assert_int_equal(f.size, -1);
    drive_file_free(&f);
    google_client_free(gc);
}

/* drive_id_valid: what may go into a Drive URL or query. */
static void test_drive_id_valid(void **state)
{
    (void)state;
    char longest[257];
    memset(longest, 'a', 255);
    longest[255] = '\0';
    assert_true(drive_id_valid("1AbC_-z9"));
    assert_true(drive_id_valid(longest));
    longest[255] = 'a';
    longest[256] = '\0';
    assert_false(drive_id_valid(longest)); /* 256 */
    static const char *const bad[] = {"", "a b", "a/b", "a?q=1", "a'b", "..", "a%20", "\xc3\xa9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(drive_id_valid(bad[i]));
    }
    assert_false(drive_id_valid(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_out_of_range_is_none),
        cmocka_unit_test(test_drive_id_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
