/*
 * worker_user — a worker test's user: a Google fake account with Inbox and
 * Processed folders and a users row holding its sealed tokens; the Drive and
 * SQL look-ups the worker suites assert with (test_worker, test_worker_cancel).
 */
#ifndef CA_TEST_WORKER_USER_H
#define CA_TEST_WORKER_USER_H

#include "crypto.h"
#include "support.h"

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct {
    char id[64];
    char email[128];
    char access[512];
    char inbox[128];
    char processed[128];
} wu_user_t;

/* A fake Google account for email (scope NULL: the fake's default scopes),
 * its Inbox (watched) and Processed (output) folders, both made by the user
 * in Drive, not by the app, and its users row with tokens sealed under keys. */
wu_user_t wu_make_user(const char *google_url, const crypto_keyring_t *keys, const char *client_id,
                       const char *email, const char *scope);
/* A folder of email's Drive under parent; its id in out. */
void wu_drive_folder(const char *google_url, const char *email, const char *name,
                     const char *parent, char *out, size_t outlen);
/* A file (base64 content) in the user's Inbox; its id in out. */
void wu_drive_file(const char *google_url, const wu_user_t *u, const char *name, const char *mime,
                   const char *b64, char *out, size_t outlen);
/* Files of a folder not trashed, as the user sees them through Drive (the
 * "files" array; the caller deletes it). */
cJSON *wu_list_folder(const char *google_url, const wu_user_t *u, const char *folder);
/* Outputs of job in the user's Processed folder (by ca_job_id; NULL: all files). */
int wu_outputs_for(const char *google_url, const wu_user_t *u, const char *job);
/* One column expression of a job as text ("" for NULL); NULL without the row. */
char *wu_job_col(const char *job, const char *col);
/* Asserts sum(col) over the user's usage_tracking rows, as text. */
void wu_assert_usage(const wu_user_t *u, const char *col, const char *want);
/* A preset of the user's own. */
void wu_user_preset(const wu_user_t *u, const char *name, const char *graph);
/* Starts the job-worker binary as ca_job_worker on the test database and
 * Redis, with ENCRYPTION_KEY key_b64 and the OAuth client client_id against
 * the Google fake at google_url, plus extra "NAME=value" settings
 * (NULL-terminated, may be NULL; they must not repeat the ones above). */
int wu_start_worker(proc_t *worker, const char *google_url, const char *key_b64,
                    const char *client_id, const char *const *extra);

#endif
