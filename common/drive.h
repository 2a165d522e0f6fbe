/*
 * drive — the Drive v3 calls the product makes: files (list, get, download,
 * create a folder, upload, share, delete), changes (start token, list).
 *
 * Every call runs on a google_client_t (google_oauth.h: its URLs, timeouts,
 * retries) with the caller's access token, and answers a google_status_t with
 * the details in a google_error_t (may be NULL), as the OAuth calls do.
 * Blocking; one google_client_t per thread. Query values and file ids are
 * URL-escaped here; quoting inside a Drive query is the caller's job.
 * See docs/common/drive.md.
 */
#ifndef CA_DRIVE_H
#define CA_DRIVE_H

#include "google_oauth.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* The fields every call asks for (files(...) in lists). */
#define DRIVE_FILE_FIELDS                                                                          \
    "id,name,mimeType,parents,modifiedTime,createdTime,size,md5Checksum,trashed,appProperties,"    \
    "webViewLink,webContentLink,capabilities(canAddChildren,canEdit)"
#define DRIVE_FOLDER_MIME "application/vnd.google-apps.folder"

typedef struct {
    char *id;
    char *name;
    char *mime_type;
    char *modified_time; /* RFC 3339 as Drive sent it */
    char *created_time;
    char *md5;
    char **parents;
    size_t nparents;
    long long size; /* -1 when Drive gave none (folders, Google-native documents) */
    bool trashed;
    bool can_add_children;
    bool can_edit;
    char *web_view_link;
    char *web_content_link;
    cJSON *app_properties; /* owned; NULL when none */
} drive_file_t;
void drive_file_free(drive_file_t *f);
/* True when the file is an image we process (by mimeType image/jpeg, png, webp,
 * tiff, heic/heif, or by extension when the type is generic). */
bool drive_file_is_image(const drive_file_t *f);
/* A Drive id as Drive makes them: 1-255 of [A-Za-z0-9_-]. Anything else never
 * goes into a URL or a query. */
bool drive_id_valid(const char *s);

typedef struct {
    drive_file_t *files;
    size_t n;
    char *next_page_token; /* NULL on the last page */
} drive_file_list_t;
void drive_file_list_free(drive_file_list_t *l);

/* files.list. q and order_by may be NULL; page_size 1..1000; page_token NULL
 * for the first page. */
google_status_t drive_files_list(google_client_t *gc, const char *access_token, const char *q,
                                 const char *order_by, int page_size, const char *page_token,
                                 drive_file_list_t *out, google_error_t *err);
google_status_t drive_files_get(google_client_t *gc, const char *access_token, const char *file_id,
                                drive_file_t *out, google_error_t *err);
/* alt=media streamed into sink (a file opened for writing, positioned where
 * the body goes; a retry truncates it back there), at most max_bytes, else
 * GOOGLE_ERR_TOO_LARGE as soon as Content-Length or the bytes received say so
 * (nothing more is read). timeout_ms bounds each attempt (0: the client's).
 * *len gets the body's length. The body is never held in memory. */
google_status_t drive_download_to(google_client_t *gc, const char *access_token,
                                  const char *file_id, size_t max_bytes, long timeout_ms,
                                  FILE *sink, size_t *len, google_error_t *err);
/* app_properties may be NULL (not consumed). */
google_status_t drive_create_folder(google_client_t *gc, const char *access_token, const char *name,
                                    const char *parent_id, const cJSON *app_properties,
                                    drive_file_t *out, google_error_t *err);
/* Drive documents uploadType=multipart (and media) for files of at most 5 MB;
 * bigger ones go through the resumable protocol (drive_upload_resumable). */
#define DRIVE_MULTIPART_MAX_BYTES ((size_t)5 * 1024 * 1024)
/* A resumable upload's chunk: Drive wants multiples of 256 KiB (but the last). */
#define DRIVE_RESUMABLE_CHUNK_BYTES ((size_t)8 * 1024 * 1024)
#define DRIVE_RESUMABLE_CHUNK_UNIT ((size_t)256 * 1024)

/* uploadType=multipart to DRIVE_UPLOAD_URL/files. */
google_status_t drive_upload(google_client_t *gc, const char *access_token, const char *name,
                             const char *mime_type, const char *parent_id,
                             const cJSON *app_properties, const void *data, size_t len,
                             drive_file_t *out, google_error_t *err);
/* A resumable upload session. `uri` is the session URI Drive gave (it is a
 * capability: whoever holds it can write the file; never log it); NULL: none.
 * Sessions live about a week at Drive. */
typedef struct {
    char *uri;      /* in/out: a session to go on with (NULL: start one); owned */
    bool reused;    /* out: the session given was still valid and was used */
    bool restarted; /* out: Drive answered 404/410 (expired): a new one was started */
    int resumes;    /* out: times Drive was asked where it stood after a failed chunk */
} drive_upload_session_t;
void drive_upload_session_free(drive_upload_session_t *s);

/* Called with each new session URI as soon as Drive gives it (before any byte
 * is sent), e.g. to store it for a later retry. */
typedef void (*drive_session_cb_t)(void *arg, const char *uri);

/* uploadType=resumable: POST DRIVE_UPLOAD_URL/files?uploadType=resumable with
 * the metadata (X-Upload-Content-Type/-Length) → the session URI (Location);
 * then PUT the bytes in chunks of chunk_bytes (0: DRIVE_RESUMABLE_CHUNK_BYTES;
 * rounded down to a multiple of 256 KiB) with Content-Range. 308 + Range
 * "bytes=0-N": the next chunk starts at N+1. A dropped connection, 5xx or 429
 * on a chunk: after a short backoff Drive is asked where it stands (an empty
 * PUT whose Content-Range has '*' for the range, then the total) and the
 * upload goes on from there, up to 5 times in a row without progress. 404/410 on the session
 * (expired): a new session, once per call. With session->uri set, the call
 * first asks that session where it stands: a finished upload answers the file
 * (no second file), a partial one goes on from Drive's offset, an expired one
 * is replaced. On failure session->uri is kept (for a retry) unless Drive
 * said it is gone. len must be > 0. */
google_status_t drive_upload_resumable(google_client_t *gc, const char *access_token,
                                       const char *name, const char *mime_type,
                                       const char *parent_id, const cJSON *app_properties,
                                       const void *data, size_t len, size_t chunk_bytes,
                                       drive_upload_session_t *session,
                                       drive_session_cb_t on_session, void *cb_arg,
                                       drive_file_t *out, google_error_t *err);
/* permissions.create {type: anyone, role: reader}. */
google_status_t drive_share_anyone_reader(google_client_t *gc, const char *access_token,
                                          const char *file_id, google_error_t *err);

/* files.delete: permanently, without the trash (with the drive.file scope,
 * only files this app created). A 404 (already gone) is GOOGLE_OK. */
google_status_t drive_files_delete(google_client_t *gc, const char *access_token,
                                   const char *file_id, google_error_t *err);

typedef struct {
    char *file_id;
    bool removed;  /* permanently gone or no longer visible */
    bool has_file; /* `file` is filled */
    drive_file_t file;
    char *time;
} drive_change_t;

typedef struct {
    drive_change_t *changes;
    size_t n;
    char *next_page_token;      /* more pages of this batch */
    char *new_start_page_token; /* set on the last page: save it for the next poll */
} drive_change_list_t;
void drive_change_list_free(drive_change_list_t *l);

google_status_t drive_changes_start_token(google_client_t *gc, const char *access_token,
                                          char **token, google_error_t *err);
google_status_t drive_changes_list(google_client_t *gc, const char *access_token,
                                   const char *page_token, int page_size, drive_change_list_t *out,
                                   google_error_t *err);

#endif
