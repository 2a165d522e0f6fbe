/*
 * static — the dashboard's files from WEB_ROOT (default services/api-gateway/web
 * of the checkout the binary was built in).
 *
 * GET/HEAD only; "/" and directories serve index.html. No path traversal: a
 * segment starting with "." is refused and the resolved real path must stay
 * under the root (symlinks out of it are refused too). HTML is served with
 * Cache-Control: no-cache (always revalidated), other assets public for an
 * hour; every file carries an ETag and If-None-Match answers 304. HTML carries
 * a strict Content-Security-Policy (GW_WEB_CSP: this origin only, no inline
 * script or style, no framing). Paths under
 * /api/ and /auth/ that no route matched answer the JSON 404. Files are small
 * and local, read with one read(2) each: the loop does not wait on the network.
 */
#include "gateway.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATIC_MAX_BYTES (16u * 1024u * 1024u)
#define GW_WEB_CSP                                                                                 \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "                    \
    "form-action 'self'; frame-ancestors 'none'"

static const struct {
    const char *ext;
    const char *type;
} TYPES[] = {
    {".html", "text/html; charset=utf-8"},
    {".htm", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".json", "application/json"},
    {".map", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".jpg", "image/jpeg"},
    {".jpeg", "image/jpeg"},
    {".webp", "image/webp"},
    {".gif", "image/gif"},
    {".ico", "image/x-icon"},
    {".txt", "text/plain; charset=utf-8"},
    {".woff2", "font/woff2"},
    {".woff", "font/woff"},
    {".webmanifest", "application/manifest+json"},
};

static const char *content_type(const char *path)
{
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (dot != NULL && (slash == NULL || dot > slash)) {
        for (size_t i = 0; i < sizeof(TYPES) / sizeof(TYPES[0]); i++) {
            if (strcasecmp(dot, TYPES[i].ext) == 0) {
                return TYPES[i].type;
            }
        }
    }
    return "application/octet-stream";
}

/* True when no segment of rel starts with '.' and it holds no backslash. */
static bool safe_relative(const char *rel)
{
    if (strchr(rel, '\\') != NULL) {
        return false;
    }
    const char *p = rel;
    while (*p != '\0') {
        while (*p == '/') {
            p++;
        }
        if (*p == '.') {
            return false;
        }
        const char *slash = strchr(p, '/');
        if (slash == NULL) {
            break;
        }
        p = slash + 1;
    }
    return true;
}

static bool under_prefix(const char *prefix, const char *path)
{
    size_t n = strlen(prefix);
    return strncmp(prefix, path, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static void serve_static(http_req_t *req, void *arg)
{
    gw_t *gw = arg;
    const char *rel = http_req_param(req, "path");
    if (rel == NULL) {
        rel = "";
    }
    while (*rel == '/') {
        rel++;
    }
    if (strcmp(rel, "api") == 0 || strncmp(rel, "api/", 4) == 0 || strcmp(rel, "auth") == 0 ||
        strncmp(rel, "auth/", 5) == 0) {
        /* an API path no route took: a known path with another method is 405 */
        char allow[128];
        if (gw_allowed_methods(http_req_path(req), allow, sizeof(allow)) > 0) {
            http_reply_header(req, "Allow", allow);
            http_reply_error(req, 405, "method_not_allowed", "%s is not allowed here",
                             http_req_method(req));
        } else {
            http_reply_error(req, 404, "not_found", "no such resource");
        }
        return;
    }
    const char *method = http_req_method(req);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        http_reply_header(req, "Allow", "GET, HEAD");
        http_reply_error(req, 405, "method_not_allowed", "%s is not allowed here", method);
        return;
    }
    if (!safe_relative(rel) || strlen(rel) > 1024) {
        http_reply_error(req, 404, "not_found", "no such file");
        return;
    }
    char root[PATH_MAX];
    if (realpath(gw->web_root, root) == NULL) {
        http_reply_error(req, 404, "not_found", "no such file");
        return;
    }
    char want[PATH_MAX + 1100];
    snprintf(want, sizeof(want), "%s/%s", root, rel);
    char real[PATH_MAX];
    if (realpath(want, real) == NULL || !under_prefix(root, real)) {
        http_reply_error(req, 404, "not_found", "no such file");
        return;
    }
    struct stat st;
    if (stat(real, &st) != 0) {
        http_reply_error(req, 404, "not_found", "no such file");
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        size_t l = strlen(real);
        if (l + sizeof("/index.html") > sizeof(real)) {
            http_reply_error(req, 404, "not_found", "no such file");
            return;
        }
        memcpy(real + l, "/index.html", sizeof("/index.html"));
        if (stat(real, &st) != 0) {
            http_reply_error(req, 404, "not_found", "no such file");
            return;
        }
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > STATIC_MAX_BYTES) {
        http_reply_error(req, 404, "not_found", "no such file");
        return;
    }
    const char *type = content_type(real);
    bool html = strncmp(type, "text/html", 9) == 0;
    char etag[64];
    snprintf(etag, sizeof(etag), "\"%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtime);
    http_reply_header(req, "ETag", etag);
    http_reply_header(req, "Cache-Control", html ? "no-cache" : "public, max-age=3600");
    http_reply_header(req, "X-Content-Type-Options", "nosniff");
    if (html) {
        http_reply_header(req, "X-Frame-Options", "DENY");
        /* The dashboard is plain files of this origin: no inline script or
         * style, no other host (docs/api-gateway.md, "The dashboard"). */
        http_reply_header(req, "Content-Security-Policy", GW_WEB_CSP);
        http_reply_header(req, "Referrer-Policy", "same-origin");
    }
    const char *inm = http_req_header(req, "If-None-Match");
    if (inm != NULL && strstr(inm, etag) != NULL) {
        http_reply_data(req, 304, type, "", 0);
        return;
    }
    int fd = open(real, O_RDONLY | O_CLOEXEC);
    char *buf = malloc((size_t)st.st_size + 1);
    ssize_t got = -1;
    if (fd >= 0 && buf != NULL) {
        size_t off = 0;
        while (off < (size_t)st.st_size) {
            ssize_t r = read(fd, buf + off, (size_t)st.st_size - off);
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0) {
                break;
            }
            off += (size_t)r;
        }
        got = (ssize_t)off;
    }
    if (fd >= 0) {
        close(fd);
    }
    if (got != (ssize_t)st.st_size) {
        free(buf);
        http_reply_error(req, 500, "internal", "cannot read the file");
        return;
    }
    http_reply_data(req, 200, type, buf, (size_t)got);
    free(buf);
}

int gw_routes_static(gw_t *gw)
{
    return http_server_route(gw->http, "*", "/{path*}", serve_static, gw);
}
