/* Test support: fakes, daemons, HTTP, SQL. See support.h. */
#include "support.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

extern char **environ;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *root_dir(void)
{
    const char *r = getenv("CA_ROOT");
    return r != NULL ? r : ".";
}

int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
        port = ntohs(a.sin_port);
    }
    close(fd);
    return port;
}

static int make_log_path(proc_t *p, const char *name)
{
    const char *dir = getenv("CA_TEST_DIR");
    static int counter;
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->log_path, sizeof(p->log_path), "%s/proc-%s-%d-%d.log", dir != NULL ? dir : "/tmp",
             name, (int)getpid(), ++counter);
    return 0;
}

static pid_t spawn(const char *path, char *const argv[], char *const envp[], const char *log_path)
{
    pid_t pid = fork();
    if (pid != 0) {
        return pid;
    }
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) {
        dup2(devnull, 0);
        close(devnull);
    }
    setpgid(0, 0);
    execve(path, argv, envp);
    fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
    _exit(127);
}

int fake_start(proc_t *p, const char *name, const char *const *extra_args)
{
    memset(p, 0, sizeof(*p));
    make_log_path(p, name);
    char runner[512];
    snprintf(runner, sizeof(runner), "%s/tests/fakes/run", root_dir());
    const char *argv[32] = {runner, name, "--port", "0"};
    int argc = 4;
    for (int i = 0; extra_args != NULL && extra_args[i] != NULL && argc < 31; i++) {
        argv[argc++] = extra_args[i];
    }
    argv[argc] = NULL;
    p->pid = spawn(runner, (char *const *)argv, environ, p->log_path);
    if (p->pid < 0) {
        return -1;
    }
    long long deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        FILE *f = fopen(p->log_path, "r");
        if (f != NULL) {
            char line[512];
            while (fgets(line, sizeof(line), f) != NULL) {
                const char *at = strstr(line, "listening on 127.0.0.1:");
                if (at != NULL && strncmp(line, "admin ", 6) != 0) {
                    p->port = atoi(at + strlen("listening on 127.0.0.1:"));
                    break;
                }
            }
            fclose(f);
        }
        if (p->port > 0) {
            snprintf(p->base_url, sizeof(p->base_url), "http://127.0.0.1:%d", p->port);
            return 0;
        }
        int status;
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            p->pid = 0;
            break;
        }
        sleep_ms(20);
    }
    fprintf(stderr, "fake %s did not start\n", name);
    proc_print_log(p);
    proc_kill9(p);
    return -1;
}

int daemon_start(proc_t *p, const char *service, const char *const *env)
{
    memset(p, 0, sizeof(*p));
    make_log_path(p, service);
    const char *bin_dir = getenv("CA_BIN");
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", bin_dir != NULL ? bin_dir : "build/bin", service);

    /* environ + overrides */
    size_t n_env = 0;
    while (environ[n_env] != NULL) {
        n_env++;
    }
    size_t n_extra = 0;
    while (env != NULL && env[n_extra] != NULL) {
        n_extra++;
    }
    char **envp = calloc(n_env + n_extra + 4, sizeof(char *));
    size_t k = 0;
    bool port_set = false;
    bool addr_set = false;
    for (size_t i = 0; i < n_extra; i++) {
        port_set = port_set || strncmp(env[i], "PORT=", 5) == 0;
        addr_set = addr_set || strncmp(env[i], "LISTEN_ADDR=", 12) == 0;
    }
    for (size_t i = 0; i < n_env; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t nlen = eq != NULL ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool overridden = false;
        for (size_t j = 0; j < n_extra; j++) {
            if (strncmp(env[j], environ[i], nlen + 1) == 0) {
                overridden = true;
            }
        }
        /* PORT and LISTEN_ADDR always come from here, never from the test's env. */
        if (strncmp(environ[i], "PORT=", 5) == 0 || strncmp(environ[i], "LISTEN_ADDR=", 12) == 0) {
            overridden = true;
        }
        if (!overridden) {
            envp[k++] = environ[i];
        }
    }
    for (size_t i = 0; i < n_extra; i++) {
        envp[k++] = (char *)env[i];
    }
    char port_env[32];
    if (!port_set) {
        p->port = free_port();
        snprintf(port_env, sizeof(port_env), "PORT=%d", p->port);
        envp[k++] = port_env;
    } else {
        for (size_t i = 0; i < n_extra; i++) {
            if (strncmp(env[i], "PORT=", 5) == 0) {
                p->port = atoi(env[i] + 5);
            }
        }
    }
    char addr_env[] = "LISTEN_ADDR=127.0.0.1";
    if (!addr_set) {
        envp[k++] = addr_env;
    }
    envp[k] = NULL;
    char *const argv[] = {path, "serve", NULL};
    p->pid = spawn(path, argv, envp, p->log_path);
    free(envp);
    if (p->pid < 0) {
        return -1;
    }
    snprintf(p->base_url, sizeof(p->base_url), "http://127.0.0.1:%d", p->port);
    char url[192];
    snprintf(url, sizeof(url), "%s/readyz", p->base_url);
    if (!wait_http_status(url, 200, 15000)) {
        fprintf(stderr, "%s did not become ready\n", service);
        proc_print_log(p);
        proc_kill9(p);
        return -1;
    }
    return 0;
}

int proc_wait(proc_t *p, int timeout_ms)
{
    if (p->pid <= 0) {
        return -1;
    }
    long long deadline = now_ms() + timeout_ms;
    int status = 0;
    while (now_ms() < deadline) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            if (WIFEXITED(status)) {
                return WEXITSTATUS(status);
            }
            return 128 + WTERMSIG(status);
        }
        sleep_ms(20);
    }
    return -1;
}

int proc_stop_timeout(proc_t *p, int timeout_ms)
{
    if (p->pid <= 0) {
        return -1;
    }
    kill(p->pid, SIGTERM);
    int rc = proc_wait(p, timeout_ms);
    if (rc == -1) {
        proc_kill9(p);
    }
    return rc;
}

int proc_stop(proc_t *p)
{
    return proc_stop_timeout(p, 30000);
}

int daemon_stop(proc_t *p)
{
    if (p->pid <= 0) {
        return 0;
    }
    int rc = proc_stop(p);
    if (rc != 0) {
        fprintf(stderr, "%s exited %d after SIGTERM (want 0)\n", p->name, rc);
        proc_print_log(p);
    }
    return rc;
}

void proc_kill9(proc_t *p)
{
    if (p->pid > 0) {
        kill(-p->pid, SIGKILL);
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = 0;
    }
}

void proc_print_log(const proc_t *p)
{
    FILE *f = fopen(p->log_path, "r");
    if (f == NULL) {
        return;
    }
    fprintf(stderr, "----- log of %s (%s) -----\n", p->name, p->log_path);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        fwrite(buf, 1, n, stderr);
    }
    fprintf(stderr, "----- end of %s -----\n", p->name);
    fclose(f);
}

bool proc_log_contains(const proc_t *p, const char *needle)
{
    FILE *f = fopen(p->log_path, "r");
    if (f == NULL) {
        return false;
    }
    bool found = false;
    char line[16384];
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        found = strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

typedef struct {
    char *data;
    size_t len;
} buf_t;

static size_t collect(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    buf_t *b = userdata;
    size_t n = size * nmemb;
    char *grown = realloc(b->data, b->len + n + 1);
    if (grown == NULL) {
        return 0;
    }
    b->data = grown;
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

long http_call_h(const char *method, const char *url, const char *const *headers, const char *body,
                 char **resp, char **resp_headers)
{
    CURL *c = curl_easy_init();
    if (c == NULL) {
        return -1;
    }
    buf_t out = {0};
    buf_t hdr = {0};
    struct curl_slist *list = NULL;
    if (body != NULL && (body[0] == '{' || body[0] == '[')) {
        list = curl_slist_append(list, "Content-Type: application/json");
    }
    for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
        list = curl_slist_append(list, headers[i]);
    }
    list = curl_slist_append(list, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &hdr);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 0L);
    }
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    long status = -1;
    if (curl_easy_perform(c) == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_slist_free_all(list);
    curl_easy_cleanup(c);
    if (resp != NULL) {
        *resp = out.data != NULL ? out.data : strdup("");
    } else {
        free(out.data);
    }
    if (resp_headers != NULL) {
        *resp_headers = hdr.data != NULL ? hdr.data : strdup("");
    } else {
        free(hdr.data);
    }
    return status;
}

long http_call(const char *method, const char *url, const char *body, char **resp)
{
    return http_call_h(method, url, NULL, body, resp, NULL);
}

bool wait_http_status(const char *url, long status, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        if (http_call("GET", url, NULL, NULL) == status) {
            return true;
        }
        sleep_ms(50);
    }
    return false;
}

bool wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        if (cond(arg)) {
            return true;
        }
        sleep_ms(50);
    }
    return cond(arg);
}

static PGconn *sql_conn(void)
{
    const char *url = getenv("TEST_DATABASE_URL");
    PGconn *c = PQconnectdb(url != NULL ? url : "");
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "sql: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

char *sql_value(const char *sql, int nparams, const char *const *params)
{
    PGconn *c = sql_conn();
    if (c == NULL) {
        return NULL;
    }
    char *out = NULL;
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) {
            out = strdup(PQgetvalue(r, 0, 0));
        }
    } else if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "sql: %s: %s", sql, PQerrorMessage(c));
    }
    PQclear(r);
    PQfinish(c);
    return out;
}

int sql_exec(const char *sql, int nparams, const char *const *params)
{
    PGconn *c = sql_conn();
    if (c == NULL) {
        return -1;
    }
    PGresult *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
    int rc =
        (PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK) ? 0 : -1;
    if (rc != 0) {
        fprintf(stderr, "sql: %s: %s", sql, PQerrorMessage(c));
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

bool sql_nonzero(const char *sql, int nparams, const char *const *params)
{
    char *v = sql_value(sql, nparams, params);
    bool yes = v != NULL && strcmp(v, "0") != 0;
    free(v);
    return yes;
}

const char *db_url(void)
{
    const char *url = getenv("TEST_DATABASE_URL");
    if (url == NULL || url[0] == '\0') {
        fprintf(stderr, "TEST_DATABASE_URL is not set\n");
        exit(1);
    }
    return url;
}

pg_conn_t *db_connect_ok(void)
{
    char err[512];
    pg_conn_t *c = pg_connect(db_url(), 30000, err, sizeof err);
    if (c == NULL) {
        fail_msg("pg_connect: %s", err);
    }
    return c;
}

const char *db_url_as(const char *role)
{
    static __thread char buf[512]; /* per thread: tests call it from many threads */
    const char *port = getenv("TEST_PG_PORT");
    const char *name = getenv("TEST_DATABASE_NAME");
    snprintf(buf, sizeof(buf), "postgresql://%s@127.0.0.1:%s/%s", role,
             port != NULL ? port : "5432", name != NULL ? name : "ca_test");
    return buf;
}

int services_sh(const char *cmd)
{
    char line[1024];
    snprintf(line, sizeof(line), "\"%s/tests/lib/services.sh\" %s", root_dir(), cmd);
    return system(line);
}
