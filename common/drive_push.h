/*
 * drive_push — Drive v3 push notification channels (changes.watch and
 * channels.stop) on the Google client's request path (google_internal.h),
 * beside drive.h. See docs/common/drive.md "Push channels" and
 * docs/drive-poller.md "Push notifications".
 *
 *   drive_watch_t w = {.id = uuid, .address = "https://host/webhooks/drive",
 *                      .token = secret, .expiration_ms = now_ms + 86400000};
 *   drive_channel_t ch;
 *   if (drive_changes_watch(gc, access, page_token, &w, &ch, &err) == GOOGLE_OK) {
 *       ... store ch.resource_id, ch.expiration_ms ...;  drive_channel_free(&ch);
 *   }
 *   drive_channels_stop(gc, access, id, resource_id, &err);
 *
 * Nothing here logs; the channel token is sent in the request body only.
 */
#ifndef CA_DRIVE_PUSH_H
#define CA_DRIVE_PUSH_H

#include "google_oauth.h"

#include <stdint.h>

typedef struct {
    const char *id;        /* our channel id (a UUID) */
    const char *address;   /* the https address Google posts to */
    const char *token;     /* the secret Google sends back as X-Goog-Channel-Token */
    int64_t expiration_ms; /* requested end (Unix ms); 0: Google's default (one hour) */
} drive_watch_t;

typedef struct {
    char *id;              /* as Google echoed it */
    char *resource_id;     /* Google's id of the watched resource (for channels.stop) */
    char *resource_uri;    /* may be NULL */
    int64_t expiration_ms; /* the channel's actual end (Google may shorten it); 0: none given */
} drive_channel_t;

void drive_channel_free(drive_channel_t *c);

/* POST {drive_api_url}/changes/watch?pageToken=... with {id, type: "web_hook",
 * address, token, expiration}. On GOOGLE_OK *out is filled (free it with
 * drive_channel_free); an answer without a resourceId is GOOGLE_ERR_PROTOCOL. */
google_status_t drive_changes_watch(google_client_t *gc, const char *access_token,
                                    const char *page_token, const drive_watch_t *w,
                                    drive_channel_t *out, google_error_t *err);

/* POST {drive_api_url}/channels/stop with {id, resourceId}. A channel Google
 * no longer knows (404: stopped or expired already) is GOOGLE_OK. */
google_status_t drive_channels_stop(google_client_t *gc, const char *access_token, const char *id,
                                    const char *resource_id, google_error_t *err);

#endif
