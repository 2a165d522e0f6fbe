/* worker_user — see worker_user.h. */
#define _GNU_SOURCE
#include "worker_user.h"

#include "fake_admin.h"
#include "http_client.h"
#include "support.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

void wu_drive_folder(const char *google_url, const char *email, const char *name,
                     const char *parent, char *out, size_t outlen)
{
    char body[512];
    snprintf(body, sizeof(body),
             "{\"email\":\"%s\",\"name\":\"%s\",\"folder\":true,\"parents\":[\"%s\"]}", email, name,
             parent);
    fake_google_file(google_url, body, out, outlen);
}

wu_user_t wu_make_user(const char *google_url, const crypto_keyring_t *keys, const char *client_id,
                       const char *email, const char *scope)
{
    wu_user_t u;
    memset(&u, 0, sizeof(u));
    snprintf(u.email, sizeof(u.email), "%s", email);
    fake_google_user_t g;
    if (scope != NULL) {
        fake_google_user_scoped(google_url, email, client_id, scope, &g);
    } else {
        fake_google_user(google_url, email, client_id, &g);
    }
    snprintf(u.access, sizeof(u.access), "%s", g.access_token);
    char *sa = crypto_envelope_seal(keys, g.access_token);
    char *sr = crypto_envelope_seal(keys, g.refresh_token);
    wu_drive_folder(google_url, email, "Inbox", g.root_id, u.inbox, sizeof(u.inbox));
    wu_drive_folder(google_url, email, "Processed", u.inbox, u.processed, sizeof(u.processed));
    const char *params[] = {g.sub, email, sa, sr, u.inbox, u.processed};
    char *id = sql_value(
        "INSERT INTO users (google_id, email, name, drive_access_token, drive_refresh_token,"
        " drive_token_expires_at, watched_folder_id, output_folder_id)"
        " VALUES ($1, $2, 'Test User', $3, $4, timezone('UTC', now()) + interval '1 hour', $5, $6)"
        " RETURNING id::text",
        6, params);
    assert_non_null(id);
    snprintf(u.id, sizeof(u.id), "%s", id);
    free(id);
    free(sa);
    free(sr);
    return u;
}

void wu_drive_file(const char *google_url, const wu_user_t *u, const char *name, const char *mime,
                   const char *b64, char *out, size_t outlen)
{
    size_t n = strlen(b64) + 1024;
    char *body = malloc(n);
    assert_non_null(body);
    snprintf(body, n,
             "{\"email\":\"%s\",\"name\":\"%s\",\"mimeType\":\"%s\",\"parents\":[\"%s\"],"
             "\"content_base64\":\"%s\"}",
             u->email, name, mime, u->inbox, b64);
    fake_google_file(google_url, body, out, outlen);
    free(body);
}

cJSON *wu_list_folder(const char *google_url, const wu_user_t *u, const char *folder)
{
    char q[256];
    snprintf(q, sizeof(q), "'%s' in parents and trashed = false", folder);
    char *eq = http_url_escape(q);
    char url[1024];
    snprintf(url, sizeof(url),
             "%s/drive/v3/files?q=%s&fields=files(id,name,md5Checksum,size,appProperties,"
             "webViewLink,mimeType)",
             google_url, eq);
    free(eq);
    char auth[600];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", u->access);
    const char *hdr[] = {auth, NULL};
    char *resp = NULL;
    assert_int_equal(http_call_h("GET", url, hdr, NULL, &resp, NULL), 200);
    cJSON *j = cJSON_Parse(resp);
    free(resp);
    cJSON *files = cJSON_DetachItemFromObject(j, "files");
    cJSON_Delete(j);
    return files;
}

int wu_outputs_for(const char *google_url, const wu_user_t *u, const char *job)
{
    cJSON *files = wu_list_folder(google_url, u, u->processed);
    int n = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, files)
    {
        const cJSON *id = cJSON_GetObjectItem(cJSON_GetObjectItem(f, "appProperties"), "ca_job_id");
        if (job == NULL || (cJSON_IsString(id) && strcmp(id->valuestring, job) == 0)) {
            n++;
        }
    }
    cJSON_Delete(files);
    return n;
}

char *wu_job_col(const char *job, const char *col)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT COALESCE((%s)::text, '') FROM jobs WHERE id = $1::uuid",
             col);
    const char *params[] = {job};
    return sql_value(sql, 1, params);
}

void wu_assert_usage(const wu_user_t *u, const char *col, const char *want)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT COALESCE(sum(%s), 0)::text FROM usage_tracking WHERE user_id = $1::uuid", col);
    const char *params[] = {u->id};
    char *v = sql_value(sql, 1, params);
    assert_non_null(v);
    if (strcmp(v, want) != 0) {
        fprintf(stderr, "usage %s: %s, want %s\n", col, v, want);
    }
    assert_string_equal(v, want);
    free(v);
}

void wu_user_preset(const wu_user_t *u, const char *name, const char *graph)
{
    const char *params[] = {u->id, name, graph};
    assert_int_equal(sql_exec("INSERT INTO presets (created_by_user_id, name, workflow_json)"
                              " VALUES ($1::uuid, $2, $3::jsonb)",
                              3, params),
                     0);
}

int wu_start_worker(proc_t *worker, const char *google_url, const char *key_b64,
                    const char *client_id, const char *const *extra)
{
    enum { NBASE = 8, NMAX = 40 };
    char base[NBASE][600];
    snprintf(base[0], sizeof(base[0]), "DATABASE_URL=%s", db_url_as("ca_job_worker"));
    snprintf(base[1], sizeof(base[1]), "REDIS_URL=%s", getenv("TEST_REDIS_URL"));
    snprintf(base[2], sizeof(base[2]), "ENCRYPTION_KEY=%s", key_b64);
    snprintf(base[3], sizeof(base[3]), "GOOGLE_CLIENT_ID=%s", client_id);
    snprintf(base[4], sizeof(base[4]), "GOOGLE_CLIENT_SECRET=secret-for-tests");
    snprintf(base[5], sizeof(base[5]), "GOOGLE_TOKEN_URL=%s/token", google_url);
    snprintf(base[6], sizeof(base[6]), "DRIVE_API_URL=%s/drive/v3", google_url);
    snprintf(base[7], sizeof(base[7]), "DRIVE_UPLOAD_URL=%s/upload/drive/v3", google_url);
    const char *envp[NMAX + 1];
    size_t n = 0;
    for (; n < NBASE; n++) {
        envp[n] = base[n];
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL && n < NMAX; i++) {
        envp[n++] = extra[i];
    }
    envp[n] = NULL;
    return daemon_start(worker, "job-worker", envp); /* copies the strings */
}
