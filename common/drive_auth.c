/*
 * drive_auth — the Drive token manager: users' sealed tokens in PostgreSQL,
 * refreshed with Google under a per-user advisory lock. See drive_auth.h and
 * docs/common/drive_auth.md.
 */
#define _GNU_SOURCE
#include "drive_auth.h"

#include "crypto.h"
#include "errbuf.h"
#include "google_oauth.h"
#include "pg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One user's stored token state. Strings are copies (sealed values). */
typedef struct {
    bool found;
    bool connected;
    bool fresh; /* drive_token_expires_at is more than the margin away */
    char *access_enc;
    char *refresh_enc;
} stored_tokens_t;

static void stored_free(stored_tokens_t *s)
{
    free(s->access_enc);
    free(s->refresh_enc);
    memset(s, 0, sizeof(*s));
}

static int dup_field(PGresult *res, int col, char **slot)
{
    *slot = NULL;
    if (PQgetisnull(res, 0, col))
        return 0;
    *slot = strdup(PQgetvalue(res, 0, col));
    return *slot == NULL ? -1 : 0;
}

/* Reads the user's row. 0 (s->found says whether the user exists) or -1 on a
 * database error (message in err). A malformed user id is "not found". */
static int stored_read(pg_conn_t *pg, const char *user_id, stored_tokens_t *s, char *err,
                       size_t errlen)
{
    static const char sql[] =
        "SELECT drive_access_token, drive_refresh_token, drive_connected,"
        "       COALESCE(drive_token_expires_at > timezone('UTC', now())"
        "                + interval '" DRIVE_AUTH_MARGIN_SECONDS " seconds', false)"
        "  FROM users WHERE id = $1";
    const char *params[] = {user_id};
    memset(s, 0, sizeof(*s));
    PGresult *res = pg_exec(pg, sql, 1, params, err, errlen);
    if (res == NULL)
        return strcmp(pg_last_sqlstate(pg), "22P02") == 0 ? 0 : -1; /* invalid uuid */
    int rc = 0;
    if (PQntuples(res) == 1) {
        s->found = true;
        s->connected = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
        s->fresh = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
        if (dup_field(res, 0, &s->access_enc) != 0 || dup_field(res, 1, &s->refresh_enc) != 0) {
            errbuf_set(err, errlen, "out of memory");
            stored_free(s);
            rc = -1;
        }
    }
    PQclear(res);
    return rc;
}

/* A failure that is not Google's: err->status stays GOOGLE_OK, the message says why. */
__attribute__((format(printf, 2, 3))) static void auth_note(google_error_t *err, const char *fmt,
                                                            ...)
{
    if (err == NULL)
        return;
    google_error_reset(err);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

/* Copies a plaintext token into the caller's buffer. */
static drive_auth_status_t give_token(const char *plain, char *token, size_t tokenlen,
                                      google_error_t *err)
{
    size_t n = strlen(plain);
    if (token == NULL || n >= tokenlen) {
        google_error_set(err, GOOGLE_ERR_PROTOCOL, 0,
                         "access token (%zu bytes) does not fit the buffer", n);
        return DRIVE_AUTH_TRANSIENT;
    }
    memcpy(token, plain, n + 1);
    return DRIVE_AUTH_OK;
}

/* The cached token when it is usable as is: fresh, opens for this user,
 * under the current key (else a refresh re-seals it). A legacy v1 token
 * (written by the gateway's sign-in before sql/api-gateway/084: it now seals
 * v2 bound to the user id too) under the current key is used: the next
 * refresh, within the hour, stores both tokens as v2. */
static char *usable_cached(const crypto_keyring_t *keys, const char *user_id,
                           const stored_tokens_t *s, bool force)
{
    if (force || !s->found || !s->connected || !s->fresh || s->access_enc == NULL)
        return NULL;
    bool old_key = strncmp(s->access_enc, "v1:", 3) == 0
                       ? crypto_envelope_needs_rotation(keys, s->access_enc)
                       : crypto_envelope_needs_reseal(keys, s->access_enc, user_id);
    if (old_key)
        return NULL;
    return crypto_envelope_open_bound(keys, s->access_enc, user_id);
}

drive_auth_status_t drive_auth_access_token(pg_conn_t *pg, google_client_t *gc,
                                            const crypto_keyring_t *keys, const char *user_id,
                                            bool force, char *token, size_t tokenlen,
                                            google_error_t *err)
{
    return drive_auth_access_token_from(pg, gc, keys, user_id, NULL, force, token, tokenlen, err);
}

drive_auth_status_t drive_auth_access_token_from(pg_conn_t *pg, google_client_t *gc,
                                                 const crypto_keyring_t *keys, const char *user_id,
                                                 const drive_auth_stored_t *stored, bool force,
                                                 char *token, size_t tokenlen, google_error_t *err)
{
    char dberr[256];
    stored_tokens_t first = {0};
    stored_tokens_t now = {0};
    google_tokens_t fresh_tokens = {0};
    char *plain = NULL;
    char *refresh_plain = NULL;
    char *access_sealed = NULL;
    char *refresh_sealed = NULL;
    bool own_tx = false;
    drive_auth_status_t st = DRIVE_AUTH_DB;

    google_error_reset(err);
    if (token != NULL && tokenlen > 0)
        token[0] = '\0';
    if (pg == NULL || gc == NULL || keys == NULL || user_id == NULL) {
        auth_note(err, "drive_auth: missing argument");
        return DRIVE_AUTH_NO_TOKENS;
    }

    /* 1. The common case, without a lock: a fresh token under the current key. */
    if (stored != NULL) {
        first.found = stored->found;
        first.connected = stored->connected;
        first.fresh = stored->fresh;
        if ((stored->access_enc != NULL &&
             (first.access_enc = strdup(stored->access_enc)) == NULL) ||
            (stored->refresh_enc != NULL &&
             (first.refresh_enc = strdup(stored->refresh_enc)) == NULL)) {
            auth_note(err, "out of memory");
            stored_free(&first);
            return DRIVE_AUTH_DB;
        }
    } else if (stored_read(pg, user_id, &first, dberr, sizeof(dberr)) != 0) {
        auth_note(err, "database: %s", dberr);
        return DRIVE_AUTH_DB;
    }
    if (!first.found || !first.connected ||
        (first.access_enc == NULL && first.refresh_enc == NULL)) {
        auth_note(err, "%s",
                  !first.found       ? "no such user"
                  : !first.connected ? "Drive is disconnected"
                                     : "no Drive tokens stored");
        st = DRIVE_AUTH_NO_TOKENS;
        goto out;
    }
    plain = usable_cached(keys, user_id, &first, force);
    if (plain != NULL) {
        st = give_token(plain, token, tokenlen, err);
        goto out;
    }

    /* 2. Refresh under a per-user advisory lock, so that two threads (or the
     * poller and the worker) never refresh the same user at once: a rotated
     * refresh token is stored before the next one reads it. */
    if (!pg_in_transaction(pg)) {
        if (pg_begin(pg, dberr, sizeof(dberr)) != 0) {
            auth_note(err, "database: %s", dberr);
            st = DRIVE_AUTH_DB;
            goto out;
        }
        own_tx = true;
    }
    {
        const char *params[] = {user_id};
        if (pg_exec_cmd(pg,
                        "SELECT pg_advisory_xact_lock(hashtext('ca_drive_tokens'), hashtext($1))",
                        1, params, dberr, sizeof(dberr)) != 0) {
            auth_note(err, "database: %s", dberr);
            st = DRIVE_AUTH_DB;
            goto out;
        }
    }
    if (stored_read(pg, user_id, &now, dberr, sizeof(dberr)) != 0) {
        auth_note(err, "database: %s", dberr);
        st = DRIVE_AUTH_DB;
        goto out;
    }
    if (!now.found || !now.connected) {
        auth_note(err, "%s", !now.found ? "no such user" : "Drive is disconnected");
        st = DRIVE_AUTH_NO_TOKENS;
        goto out;
    }
    /* Someone refreshed while we waited for the lock: take theirs. With
     * `force`, only a token other than the one we first saw counts. */
    bool changed = now.access_enc != NULL &&
                   (first.access_enc == NULL || strcmp(now.access_enc, first.access_enc) != 0);
    plain = usable_cached(keys, user_id, &now, force && !changed);
    if (plain != NULL) {
        st = give_token(plain, token, tokenlen, err);
        goto out;
    }
    if (now.refresh_enc == NULL) {
        auth_note(err, "no refresh token stored");
        st = DRIVE_AUTH_NO_TOKENS;
        goto out;
    }
    refresh_plain = crypto_envelope_open_bound(keys, now.refresh_enc, user_id);
    if (refresh_plain == NULL) {
        /* Sealed with a key we no longer hold, for another user (copied from
         * another row) or corrupt: nothing to refresh with. */
        auth_note(err, "the stored refresh token cannot be opened with the configured keys");
        st = DRIVE_AUTH_NO_TOKENS;
        goto out;
    }

    google_status_t gs = google_refresh(gc, refresh_plain, &fresh_tokens, err);
    if (gs == GOOGLE_ERR_INVALID_GRANT) {
        st = DRIVE_AUTH_REVOKED;
        goto out;
    }
    if (gs != GOOGLE_OK) {
        st = DRIVE_AUTH_TRANSIENT;
        goto out;
    }

    bool reseal_refresh = crypto_envelope_needs_reseal(keys, now.refresh_enc, user_id);
    access_sealed = crypto_envelope_seal_bound(keys, fresh_tokens.access_token, user_id);
    if (fresh_tokens.refresh_token != NULL)
        refresh_sealed = crypto_envelope_seal_bound(keys, fresh_tokens.refresh_token, user_id);
    else if (reseal_refresh) /* re-seal: v2, current key */
        refresh_sealed = crypto_envelope_seal_bound(keys, refresh_plain, user_id);
    if (access_sealed == NULL ||
        (refresh_sealed == NULL && (fresh_tokens.refresh_token != NULL || reseal_refresh))) {
        google_error_set(err, GOOGLE_ERR_PROTOCOL, 0, "could not seal the refreshed tokens");
        st = DRIVE_AUTH_TRANSIENT;
        goto out;
    }
    {
        char expires[32];
        snprintf(expires, sizeof(expires), "%ld", fresh_tokens.expires_in);
        const char *params[] = {user_id, access_sealed, refresh_sealed, expires};
        if (pg_exec_cmd(pg,
                        "SELECT users_store_drive_tokens($1, $2, $3,"
                        " timezone('UTC', now()) + make_interval(secs => $4::double precision))",
                        4, params, dberr, sizeof(dberr)) != 0) {
            auth_note(err, "database: %s", dberr);
            st = DRIVE_AUTH_DB;
            goto out;
        }
    }
    if (own_tx) {
        own_tx = false;
        if (pg_commit(pg, dberr, sizeof(dberr)) != 0) {
            auth_note(err, "database: %s", dberr);
            st = DRIVE_AUTH_DB;
            goto out;
        }
    }
    st = give_token(fresh_tokens.access_token, token, tokenlen, err);

out:
    if (own_tx)
        pg_rollback(pg); /* nothing was written, or the write failed; ends the lock */
    stored_free(&first);
    stored_free(&now);
    google_tokens_free(&fresh_tokens);
    crypto_free_secret(plain);
    crypto_free_secret(refresh_plain);
    free(access_sealed);
    free(refresh_sealed);
    if (st != DRIVE_AUTH_OK && token != NULL && tokenlen > 0)
        token[0] = '\0';
    return st;
}

/* ---- rekey ---- */

#define REKEY_BATCH "100"

/* One value: *out is the new sealed value (caller frees) or NULL to keep it. */
static void rekey_value(const crypto_keyring_t *keys, const char *user_id, const char *sealed,
                        char **out, drive_auth_rekey_stats_t *stats)
{
    *out = NULL;
    if (sealed == NULL)
        return;
    char *plain = crypto_envelope_open_bound(keys, sealed, user_id);
    if (plain == NULL) {
        stats->unopenable++;
        return;
    }
    if (!crypto_envelope_needs_reseal(keys, sealed, user_id)) {
        stats->current++;
    } else {
        *out = crypto_envelope_seal_bound(keys, plain, user_id);
        if (*out == NULL)
            stats->unopenable++;
        else
            stats->resealed++;
    }
    crypto_free_secret(plain);
}

int drive_auth_rekey(pg_conn_t *pg, const crypto_keyring_t *keys, drive_auth_rekey_stats_t *stats,
                     char *err, size_t errlen)
{
    char last[64] = "00000000-0000-0000-0000-000000000000";
    memset(stats, 0, sizeof(*stats));
    if (pg == NULL || keys == NULL) {
        errbuf_set(err, errlen, "rekey: missing argument");
        return -1;
    }
    for (;;) {
        if (pg_begin(pg, err, errlen) != 0)
            return -1;
        /* users has FORCEd row-level security (the gateway's role owns it). */
        if (pg_exec_cmd(pg, "SELECT set_config('app.rls_system', 'on', true)", 0, NULL, err,
                        errlen) != 0)
            goto fail;
        const char *p[] = {last};
        PGresult *res = pg_exec(pg,
                                "SELECT id::text, drive_access_token, drive_refresh_token"
                                "  FROM users WHERE id > $1::uuid"
                                "   AND (drive_access_token IS NOT NULL"
                                "        OR drive_refresh_token IS NOT NULL)"
                                " ORDER BY id LIMIT " REKEY_BATCH " FOR UPDATE",
                                1, p, err, errlen);
        if (res == NULL)
            goto fail;
        int n = PQntuples(res);
        for (int i = 0; i < n; i++) {
            const char *uid = PQgetvalue(res, i, 0);
            char *access = NULL, *refresh = NULL;
            stats->users++;
            rekey_value(keys, uid, PQgetisnull(res, i, 1) ? NULL : PQgetvalue(res, i, 1), &access,
                        stats);
            rekey_value(keys, uid, PQgetisnull(res, i, 2) ? NULL : PQgetvalue(res, i, 2), &refresh,
                        stats);
            int rc = 0;
            if (access != NULL || refresh != NULL) {
                const char *up[] = {uid, access, refresh};
                rc = pg_exec_cmd(pg,
                                 "UPDATE users SET drive_access_token = COALESCE($2,"
                                 " drive_access_token), drive_refresh_token = COALESCE($3,"
                                 " drive_refresh_token) WHERE id = $1::uuid",
                                 3, up, err, errlen);
            }
            free(access);
            free(refresh);
            if (rc != 0) {
                PQclear(res);
                goto fail;
            }
        }
        if (n > 0)
            snprintf(last, sizeof(last), "%s", PQgetvalue(res, n - 1, 0));
        PQclear(res);
        if (pg_commit(pg, err, errlen) != 0)
            return -1;
        if (n < atoi(REKEY_BATCH))
            return 0;
    }
fail:
    pg_rollback(pg);
    return -1;
}
