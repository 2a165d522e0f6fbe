/*
 * drive-poller, exact detection (issue 5): one job per image that appears in
 * the watched folder — new, moved in, old modifiedTime, appearing during a
 * poll, thousands at once — and none for what must never be a job. Real
 * PostgreSQL and Redis, the Google fake, the real binary (one poller for the
 * whole file, POLL_INTERVAL_SECONDS=1, each test its own user).
 */
#include "test_poller_common.h"

#include "poll.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

/* A watched user whose first poll (full listing) is done. */
static void watched_user(tp_user_t *u)
{
    assert_int_equal(tp_new_user(u, "det"), 0);
    assert_int_equal(tp_watch(u), 0);
    TP_CHECK(tp_wait_scanned(u, 10000));
}

/* ---- pure helpers, table-driven ---- */

static void test_candidate_table(void **state)
{
    (void)state;
    char *in_folder[] = {"F"};
    char *in_sub[] = {"SUB"};
    char *two[] = {"X", "F"};
    struct {
        const char *name, *mime;
        char **parents;
        size_t nparents;
        bool trashed, want;
    } cases[] = {
        {"a.jpg", "image/jpeg", in_folder, 1, false, true},
        {"a.png", "image/png", in_folder, 1, false, true},
        {"a.heic", "image/heic", in_folder, 1, false, true},
        {"a.webp", "application/octet-stream", in_folder, 1, false, true},
        {"a.jpg", "image/jpeg", in_sub, 1, false, false},        /* Processed / subfolder */
        {"a.jpg", "image/jpeg", in_folder, 1, true, false},      /* trashed */
        {"notes.txt", "text/plain", in_folder, 1, false, false}, /* not an image */
        {"doc", "application/vnd.google-apps.document", in_folder, 1, false, false},
        {"Processed", "application/vnd.google-apps.folder", in_folder, 1, false, false},
        {"a.gif", "image/gif", in_folder, 1, false, false}, /* not a format we process */
        {"a.jpg", "image/jpeg", NULL, 0, false, false},     /* no parents */
        {"a.jpg", "image/jpeg", two, 2, false, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        drive_file_t f;
        memset(&f, 0, sizeof(f));
        f.id = "id1";
        f.name = (char *)cases[i].name;
        f.mime_type = (char *)cases[i].mime;
        f.parents = cases[i].parents;
        f.nparents = cases[i].nparents;
        f.trashed = cases[i].trashed;
        f.size = 10;
        if (poll_file_is_candidate(&f, "F") != cases[i].want) {
            fail_msg("case %zu (%s %s): want %d", i, cases[i].name, cases[i].mime, cases[i].want);
        }
    }
    assert_false(poll_file_is_candidate(NULL, "F"));
}

static void test_backoff_table(void **state)
{
    (void)state;
    /* backoff_delay_ms(n, 4 s, 15 min): [2^n s, 2^(n+1) s], at most 15 min;
     * a longer Retry-After wins, up to one hour */
    struct {
        int n;
        long retry_after, lo, hi;
    } cases[] = {
        {1, -1, 2000, 4000},      {2, -1, 4000, 8000},
        {3, -1, 8000, 16000},     {0, -1, 2000, 4000},
        {8, -1, 256000, 512000},  {10, -1, 450000, 900000},
        {30, -1, 450000, 900000}, {1, 5000, 5000, 5000},
        {1, 1000, 2000, 4000},    {1, 7200000, 3600000, 3600000},
    };
    for (int round = 0; round < 20; round++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            long got = poll_backoff_ms(cases[i].n, cases[i].retry_after);
            if (got < cases[i].lo || got > cases[i].hi) {
                fail_msg("case %zu: n=%d ra=%ld: got %ld want %ld..%ld", i, cases[i].n,
                         cases[i].retry_after, got, cases[i].lo, cases[i].hi);
            }
        }
    }
}

static void test_query_escaping(void **state)
{
    (void)state;
    char *q = poll_children_query("abc");
    assert_string_equal(q, "'abc' in parents and trashed = false");
    free(q);
    q = poll_children_query("a'b\\c");
    assert_string_equal(q, "'a\\'b\\\\c' in parents and trashed = false");
    free(q);
}

/* ---- detection, one by one ---- */

static void test_existing_images_found_by_first_listing(void **state)
{
    (void)state;
    tp_user_t u;
    assert_int_equal(tp_new_user(&u, "exist"), 0);
    char a[128], b[128], txt[128];
    assert_int_equal(tp_image(&u, "before1.jpg", u.folder_id, a, sizeof(a)), 0);
    assert_int_equal(tp_file(&u, "before2.png", "image/png", u.folder_id,
                             "\"modifiedTime\":\"2014-03-01T10:00:00Z\"", b, sizeof(b)),
                     0);
    assert_int_equal(tp_file(&u, "readme.txt", "text/plain", u.folder_id, "", txt, sizeof(txt)), 0);
    assert_int_equal(tp_watch(&u), 0);
    TP_CHECK(tp_wait_jobs(&u, 2, 10000));
    TP_CHECK(tp_wait_scanned(&u, 5000));
    assert_int_equal(tp_jobs_for_file(&u, a), 1);
    assert_int_equal(tp_jobs_for_file(&u, b), 1);
    assert_int_equal(tp_jobs_for_file(&u, txt), 0);
    /* the job carries the user's default preset, the folder, name, size and type */
    const char *p[] = {u.user_id, a};
    char v[256];
    tp_sql_str(v, sizeof(v),
               "SELECT preset_name || '|' || drive_folder_id || '|' || drive_file_name || '|' ||"
               " file_size_bytes || '|' || file_mime_type || '|' || status FROM jobs"
               " WHERE user_id = $1::uuid AND drive_file_id = $2",
               2, p);
    char want[256];
    snprintf(want, sizeof(want), "portrait_pro|%s|before1.jpg|1|image/jpeg|queued", u.folder_id);
    assert_string_equal(v, want);
    long dups = 0;
    assert_int_equal(tp_queue_check(&u, &dups), 2);
    assert_int_equal(dups, 0);
    /* files_found counts the jobs this watch made; last_modified_time the newest seen */
    tp_poll_field(&u, "files_found", v, sizeof(v));
    assert_string_equal(v, "2");
    tp_poll_field(&u, "poll_status", v, sizeof(v));
    assert_string_equal(v, "success");
}

static void test_new_upload(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u);
    sql_exec("UPDATE users SET default_preset = 'landscape_vivid' WHERE id = $1::uuid", 1,
             (const char *[]){u.user_id});
    char id[128];
    assert_int_equal(tp_image(&u, "new.jpg", u.folder_id, id, sizeof(id)), 0);
    TP_CHECK(tp_wait_jobs(&u, 1, 5000));
    assert_int_equal(tp_jobs_for_file(&u, id), 1);
    const char *p[] = {u.user_id};
    char v[64];
    tp_sql_str(v, sizeof(v), "SELECT preset_name FROM jobs WHERE user_id = $1::uuid", 1, p);
    assert_string_equal(v, "landscape_vivid");
    long dups = 0;
    assert_int_equal(tp_queue_check(&u, &dups), 1);
    assert_int_equal(dups, 0);
}

static void test_moved_in_from_elsewhere(void **state)
{
    (void)state;
    tp_user_t u;
    char other[128], id[128];
    assert_int_equal(tp_new_user(&u, "move"), 0);
    assert_int_equal(tp_file(&u, "Elsewhere", NULL, u.root_id, "", other, sizeof(other)), 0);
    assert_int_equal(tp_image(&u, "moved.jpg", other, id, sizeof(id)), 0);
    assert_int_equal(tp_watch(&u), 0);
    TP_CHECK(tp_wait_scanned(&u, 10000));
    TP_CHECK(tp_wait_polls(&u, 1, 5000));
    assert_int_equal(tp_jobs_of(&u), 0); /* not in the folder yet */
    char path[512];
    snprintf(path, sizeof(path), "/drive/v3/files/%s?addParents=%s&removeParents=%s", id,
             u.folder_id, other);
    assert_int_equal(tp_drive(&u, "PATCH", path, "{}", NULL), 200);
    TP_CHECK(tp_wait_jobs(&u, 1, 5000));
    assert_int_equal(tp_jobs_for_file(&u, id), 1);
}

static void test_old_modified_time(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u);
    TP_CHECK(tp_wait_polls(&u, 1, 5000));
    char id[128];
    assert_int_equal(tp_file(&u, "from-camera.jpg", "image/jpeg", u.folder_id,
                             "\"modifiedTime\":\"2009-06-15T08:30:00Z\"", id, sizeof(id)),
                     0);
    TP_CHECK(tp_wait_jobs(&u, 1, 5000));
    assert_int_equal(tp_jobs_for_file(&u, id), 1);
}

static bool delayed_request_in_flight(void *arg)
{
    (void)arg;
    cJSON *j = fake_requests(tp_google.base_url, 0);
    bool found = false;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(j, "requests"))
    {
        const cJSON *fault = cJSON_GetObjectItemCaseSensitive(r, "fault");
        const cJSON *status = cJSON_GetObjectItemCaseSensitive(r, "status");
        if (cJSON_IsString(fault) && strcmp(fault->valuestring, "delay") == 0 &&
            cJSON_IsNull(status)) {
            found = true;
        }
    }
    cJSON_Delete(j);
    return found;
}

static void test_appears_while_a_poll_runs(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u);
    /* only this user is watched now, so the delayed changes.list is this user's */
    sql_exec("UPDATE drive_polls SET active = FALSE, stopped_reason = 'test'"
             " WHERE active AND user_id <> $1::uuid",
             1, (const char *[]){u.user_id});
    fake_clear_requests(tp_google.base_url);
    fake_add_fault(tp_google.base_url,
                   "{\"match\":{\"method\":\"GET\",\"path\":\"/drive/v3/changes\"},"
                   "\"count\":1,\"action\":\"delay\",\"delay_ms\":1500}");
    TP_CHECK(wait_until(delayed_request_in_flight, NULL, 5000));
    char id[128];
    assert_int_equal(tp_image(&u, "during.jpg", u.folder_id, id, sizeof(id)), 0);
    TP_CHECK(tp_wait_jobs(&u, 1, 8000));
    TP_CHECK(tp_wait_polls(&u, 2, 8000));
    assert_int_equal(tp_jobs_for_file(&u, id), 1);
    assert_int_equal(tp_jobs_of(&u), 1);
}

static void test_many_files_at_once(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u);
    /* Created faster than one interval: the next changes.list has 2,500 + pages. */
    for (int i = 0; i < 2500; i++) {
        char name[64];
        snprintf(name, sizeof(name), "burst-%04d.jpg", i);
        assert_int_equal(tp_image(&u, name, u.folder_id, NULL, 0), 0);
    }
    TP_CHECK(tp_wait_jobs(&u, 2500, 30000));
    TP_CHECK(tp_wait_polls(&u, 2, 10000));
    assert_int_equal(tp_jobs_of(&u), 2500);
    long dups = 0;
    assert_int_equal(tp_queue_check(&u, &dups), 2500);
    assert_int_equal(dups, 0);
}

/* What must never become a job, and what must not become a second one. */
static void test_never_jobs(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u);
    char processed[128], sub[128], seen[128], id[128];
    assert_int_equal(tp_file(&u, "Processed", NULL, u.folder_id, "", processed, sizeof(processed)),
                     0);
    assert_int_equal(tp_file(&u, "Holiday", NULL, u.folder_id, "", sub, sizeof(sub)), 0);
    assert_int_equal(tp_image(&u, "seen.jpg", u.folder_id, seen, sizeof(seen)), 0);
    TP_CHECK(tp_wait_jobs(&u, 1, 5000));
    assert_int_equal(tp_image(&u, "out_portrait_pro.jpg", processed, id, sizeof(id)), 0);
    assert_int_equal(tp_image(&u, "in-sub.jpg", sub, id, sizeof(id)), 0);
    assert_int_equal(tp_file(&u, "notes.txt", "text/plain", u.folder_id, "", id, sizeof(id)), 0);
    assert_int_equal(tp_file(&u, "clip.mp4", "video/mp4", u.folder_id, "", id, sizeof(id)), 0);
    assert_int_equal(
        tp_file(&u, "binned.jpg", "image/jpeg", u.folder_id, "\"trashed\":true", id, sizeof(id)),
        0);
    assert_int_equal(
        tp_file(&u, "Doc", "application/vnd.google-apps.document", u.folder_id, "", id, sizeof(id)),
        0);
    assert_int_equal(tp_file(&u, "Sheet.png", "application/vnd.google-apps.spreadsheet",
                             u.folder_id, "", id, sizeof(id)),
                     0);
    /* the seen file renamed and edited: same id, no second job */
    char path[512];
    snprintf(path, sizeof(path), "/drive/v3/files/%s", seen);
    assert_int_equal(tp_drive(&u, "PATCH", path, "{\"name\":\"seen-renamed.jpg\"}", NULL), 200);
    snprintf(path, sizeof(path), "/upload/drive/v3/files/%s?uploadType=media", seen);
    assert_int_equal(tp_drive(&u, "PATCH", path, "new bytes", NULL), 200);
    /* moved out to the subfolder and back in: still the same file */
    snprintf(path, sizeof(path), "/drive/v3/files/%s?addParents=%s&removeParents=%s", seen, sub,
             u.folder_id);
    assert_int_equal(tp_drive(&u, "PATCH", path, "{}", NULL), 200);
    TP_CHECK(tp_wait_polls(&u, 2, 8000));
    snprintf(path, sizeof(path), "/drive/v3/files/%s?addParents=%s&removeParents=%s", seen,
             u.folder_id, sub);
    assert_int_equal(tp_drive(&u, "PATCH", path, "{}", NULL), 200);
    TP_CHECK(tp_wait_polls(&u, 3, 8000));
    assert_int_equal(tp_jobs_of(&u), 1);
    assert_int_equal(tp_jobs_for_file(&u, seen), 1);
    long dups = 0;
    assert_int_equal(tp_queue_check(&u, &dups), 1);
    assert_int_equal(dups, 0);
    /* a full listing (reconciliation) agrees */
    sql_exec("UPDATE drive_polls SET last_full_scan_at = now() - interval '2 days'"
             " WHERE user_id = $1::uuid",
             1, (const char *[]){u.user_id});
    TP_CHECK(tp_wait_scanned(&u, 5000));
    TP_CHECK(tp_wait_polls(&u, 2, 8000));
    assert_int_equal(tp_jobs_of(&u), 1);
}

static void test_all_together(void **state)
{
    (void)state;
    tp_user_t u;
    assert_int_equal(tp_new_user(&u, "all"), 0);
    char other[128], sub[128], processed[128], ids[6][128], id[128];
    assert_int_equal(tp_file(&u, "Elsewhere", NULL, u.root_id, "", other, sizeof(other)), 0);
    assert_int_equal(tp_file(&u, "Processed", NULL, u.folder_id, "", processed, sizeof(processed)),
                     0);
    assert_int_equal(tp_file(&u, "Sub", NULL, u.folder_id, "", sub, sizeof(sub)), 0);
    assert_int_equal(tp_image(&u, "already-there.jpg", u.folder_id, ids[0], sizeof(ids[0])), 0);
    assert_int_equal(tp_image(&u, "to-move.jpg", other, ids[1], sizeof(ids[1])), 0);
    assert_int_equal(tp_watch(&u), 0);
    TP_CHECK(tp_wait_scanned(&u, 10000));
    assert_int_equal(tp_image(&u, "fresh.jpg", u.folder_id, ids[2], sizeof(ids[2])), 0);
    assert_int_equal(tp_file(&u, "old.jpg", "image/jpeg", u.folder_id,
                             "\"modifiedTime\":\"2001-01-01T00:00:00Z\"", ids[3], sizeof(ids[3])),
                     0);
    char path[512];
    snprintf(path, sizeof(path), "/drive/v3/files/%s?addParents=%s&removeParents=%s", ids[1],
             u.folder_id, other);
    assert_int_equal(tp_drive(&u, "PATCH", path, "{}", NULL), 200);
    for (int i = 0; i < 150; i++) {
        char name[64];
        snprintf(name, sizeof(name), "batch-%03d.png", i);
        assert_int_equal(
            tp_file(&u, name, "image/png", u.folder_id, "", i == 0 ? ids[4] : id, sizeof(id)), 0);
    }
    assert_int_equal(tp_image(&u, "result.jpg", processed, id, sizeof(id)), 0);
    assert_int_equal(tp_image(&u, "deeper.jpg", sub, id, sizeof(id)), 0);
    assert_int_equal(tp_file(&u, "a.txt", "text/plain", u.folder_id, "", id, sizeof(id)), 0);
    assert_int_equal(
        tp_file(&u, "gone.jpg", "image/jpeg", u.folder_id, "\"trashed\":true", id, sizeof(id)), 0);
    assert_int_equal(tp_file(&u, "Slides", "application/vnd.google-apps.presentation", u.folder_id,
                             "", id, sizeof(id)),
                     0);
    snprintf(path, sizeof(path), "/drive/v3/files/%s", ids[0]);
    assert_int_equal(tp_drive(&u, "PATCH", path, "{\"name\":\"renamed.jpg\"}", NULL), 200);
    long want = 1 + 1 + 1 + 1 + 150;
    TP_CHECK(tp_wait_jobs(&u, want, 10000));
    TP_CHECK(tp_wait_polls(&u, 2, 8000));
    assert_int_equal(tp_jobs_of(&u), want);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(tp_jobs_for_file(&u, ids[i]), 1);
    }
    long dups = 0;
    assert_int_equal(tp_queue_check(&u, &dups), want);
    assert_int_equal(dups, 0);
    char v[64];
    tp_poll_field(&u, "files_found", v, sizeof(v));
    assert_int_equal(atol(v), want);
    /* last_modified_time is the newest modifiedTime seen, not the old camera time */
    tp_poll_field(&u, "(last_modified_time > timezone('UTC', now()) - interval '1 hour')", v,
                  sizeof(v));
    assert_string_equal(v, "true");
}

/* ---- token loss and reconciliation ---- */

static bool token_replaced(void *arg)
{
    char tok[64];
    tp_poll_field(arg, "changes_page_token", tok, sizeof(tok));
    return strcmp(tok, "987654321") != 0;
}

static void test_invalid_token_recovers_with_a_listing(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u);
    sql_exec("UPDATE drive_polls SET changes_page_token = '987654321' WHERE user_id = $1::uuid", 1,
             (const char *[]){u.user_id});
    char id[128];
    assert_int_equal(tp_image(&u, "while-lost.jpg", u.folder_id, id, sizeof(id)), 0);
    TP_CHECK(tp_wait_jobs(&u, 1, 8000));
    assert_int_equal(tp_jobs_for_file(&u, id), 1);
    /* the new token is stored when the poll ends, a moment after its jobs */
    TP_CHECK(wait_until(token_replaced, &u, 8000));
    TP_CHECK(tp_wait_polls(&u, 1, 5000));
    assert_int_equal(tp_jobs_of(&u), 1);
}

static void test_reconciliation_finds_what_the_feed_skipped(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u);
    /* Stop the watch, add a file, then move the saved token past its change:
     * the feed can no longer see it; only a listing can. */
    sql_exec("SELECT drive_polls_stop_watch($1::uuid, 'test')", 1, (const char *[]){u.user_id});
    char id[128];
    assert_int_equal(tp_image(&u, "skipped.jpg", u.folder_id, id, sizeof(id)), 0);
    cJSON *j = NULL;
    assert_int_equal(tp_drive(&u, "GET", "/drive/v3/changes/startPageToken", NULL, &j), 200);
    char tok[64];
    tp_copy_str(tok, sizeof(tok), j, "startPageToken");
    cJSON_Delete(j);
    sql_exec("UPDATE drive_polls SET active = TRUE, stopped_reason = NULL, changes_page_token = $2,"
             " last_full_scan_at = timezone('UTC', now()), next_poll_at = timezone('UTC', now())"
             " WHERE user_id = $1::uuid",
             2, (const char *[]){u.user_id, tok});
    TP_CHECK(tp_wait_polls(&u, 2, 8000));
    assert_int_equal(tp_jobs_of(&u), 0); /* the changes feed alone missed it */
    sql_exec("UPDATE drive_polls SET last_full_scan_at = timezone('UTC', now()) - interval '2 days'"
             " WHERE user_id = $1::uuid",
             1, (const char *[]){u.user_id});
    TP_CHECK(tp_wait_jobs(&u, 1, 8000));
    assert_int_equal(tp_jobs_for_file(&u, id), 1);
}

/* An idle cycle is one changes.list per folder: no listing, no files.get. */
static void test_idle_cycle_is_one_changes_call(void **state)
{
    (void)state;
    tp_user_t u;
    watched_user(&u);
    TP_CHECK(tp_wait_polls(&u, 1, 5000));
    /* this file's other users are idle too: every Drive GET must be changes.list */
    long since = tp_requests_next();
    long polls_before = tp_polls_total(&tp_poller);
    TP_CHECK(tp_wait_polls(&u, 3, 30000));
    long polls = tp_polls_total(&tp_poller) - polls_before;
    long other = 0;
    long changes = tp_requests_count(since, "/drive/v3/changes", &other);
    assert_int_equal(other, 0);
    assert_true(changes >= 3);
    /* and one per poll, not more (the counts differ by at most the polls in
     * flight when each was read: 4 threads, twice) */
    if (changes > polls + 8) {
        fail_msg("%ld changes.list for %ld polls", changes, polls);
    }
}

/* Last: SIGTERM, and the poller exits 0 (a sanitizer's report would not;
 * cmocka does not count a failed group teardown). */
/* Requests to the fake after `since` whose path or query names `needle`. */
static long requests_naming(long since, const char *needle)
{
    cJSON *j = fake_requests(tp_google.base_url, since);
    long n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(j, "requests"))
    {
        const cJSON *pth = cJSON_GetObjectItemCaseSensitive(r, "path");
        char *query = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(r, "query"));
        n += (cJSON_IsString(pth) && strstr(pth->valuestring, needle) != NULL) ||
             (query != NULL && strstr(query, needle) != NULL);
        free(query);
    }
    cJSON_Delete(j);
    return n;
}

/* Issue 14: a deactivated user's folder is not polled (no claim, no Drive call,
 * no job); the row waits unchanged and is polled again on reactivation. */
static void test_deactivated_user_not_polled(void **state)
{
    (void)state;
    tp_user_t off, on;
    assert_int_equal(tp_new_user(&off, "inactive"), 0);
    assert_int_equal(tp_new_user(&on, "active"), 0);
    sql_exec("UPDATE users SET is_active = FALSE WHERE id = $1::uuid", 1,
             (const char *[]){off.user_id});
    char a[128], b[128];
    assert_int_equal(tp_image(&off, "hidden.jpg", off.folder_id, a, sizeof(a)), 0);
    assert_int_equal(tp_image(&on, "seen.jpg", on.folder_id, b, sizeof(b)), 0);
    long since = tp_requests_next();
    assert_int_equal(tp_watch(&off), 0);
    assert_int_equal(tp_watch(&on), 0);
    /* the active user's folder is scanned and polled twice more (POLL_INTERVAL 1 s) */
    TP_CHECK(tp_wait_jobs(&on, 1, 10000));
    TP_CHECK(tp_wait_scanned(&on, 5000));
    TP_CHECK(tp_wait_polls(&on, 2, 10000));
    assert_int_equal(tp_jobs_of(&off), 0);
    char v[64];
    /* never scanned (last_poll_at defaults to the watch's creation) */
    tp_poll_field(&off, "coalesce(last_full_scan_at::text, 'never')", v, sizeof(v));
    assert_string_equal(v, "never");
    tp_poll_field(&off, "coalesce(lease_owner, 'none')", v, sizeof(v));
    assert_string_equal(v, "none");
    /* not one Drive call listed the deactivated user's folder */
    assert_int_equal(requests_naming(since, off.folder_id), 0);
    /* reactivated: polled again, the image becomes a job */
    sql_exec("UPDATE users SET is_active = TRUE WHERE id = $1::uuid", 1,
             (const char *[]){off.user_id});
    TP_CHECK(tp_wait_jobs(&off, 1, 10000));
    assert_int_equal(tp_jobs_for_file(&off, a), 1);
}

static void test_poller_exits_cleanly(void **state)
{
    (void)state;
    assert_int_equal(daemon_stop(&tp_poller), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_candidate_table),
        cmocka_unit_test(test_backoff_table),
        cmocka_unit_test(test_query_escaping),
        cmocka_unit_test(test_existing_images_found_by_first_listing),
        cmocka_unit_test(test_new_upload),
        cmocka_unit_test(test_moved_in_from_elsewhere),
        cmocka_unit_test(test_old_modified_time),
        cmocka_unit_test(test_appears_while_a_poll_runs),
        cmocka_unit_test(test_never_jobs),
        cmocka_unit_test(test_all_together),
        cmocka_unit_test(test_invalid_token_recovers_with_a_listing),
        cmocka_unit_test(test_reconciliation_finds_what_the_feed_skipped),
        cmocka_unit_test(test_idle_cycle_is_one_changes_call),
        cmocka_unit_test(test_many_files_at_once),
        cmocka_unit_test(test_deactivated_user_not_polled),
        cmocka_unit_test(test_poller_exits_cleanly), /* last: stops the poller */
    };
    return cmocka_run_group_tests(tests, tp_group_setup, tp_group_teardown);
}
