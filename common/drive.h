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
/* alt=media into a new buffer (caller frees) of at most max_bytes, else
 * GOOGLE_ERR_TOO_LARGE. */
google_status_t drive_download(google_client_t *gc, const char *access_token, const char *file_id,
                               size_t max_bytes, void **data, size_t *len, google_error_t *err);
/* app_properties may be NULL (not consumed). */
google_status_t drive_create_folder(google_client_t *gc, const char *access_token, const char *name,
                                    const char *parent_id, const cJSON *app_properties,
                                    drive_file_t *out, google_error_t *err);
/* uploadType=multipart to DRIVE_UPLOAD_URL/files. */
google_status_t drive_upload(google_client_t *gc, const char *access_token, const char *name,
                             const char *mime_type, const char *parent_id,
                             const cJSON *app_properties, const void *data, size_t len,
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
