/*
 * sysres — usable CPUs and memory from the affinity mask and the cgroup
 * (v2 unified or v1 controllers). See sysres.h.
 */
#define _GNU_SOURCE
#include "sysres.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Above this a v1 limit means "none" (the kernel's unlimited is about 2^63
 * rounded down to a page). */
#define UNLIMITED_BYTES (UINT64_C(1) << 60)

/* Reads the first line of DIR/NAME into BUF; false when it is missing. */
static bool read_line(const char *dir, const char *name, char *buf, size_t size)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
        return false;
    }
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return false;
    }
    bool ok = fgets(buf, (int)size, f) != NULL;
    fclose(f);
    if (ok) {
        buf[strcspn(buf, "\n")] = '\0';
    }
    return ok;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* v2 "cpu.max": "max 100000" or "<quota> <period>"; 0 when unlimited. */
static double v2_cpu(const char *dir)
{
    char line[128];
    long long quota, period;
    if (!read_line(dir, "cpu.max", line, sizeof(line)) || strncmp(line, "max", 3) == 0) {
        return 0;
    }
    if (sscanf(line, "%lld %lld", &quota, &period) != 2 || quota <= 0 || period <= 0) {
        return 0;
    }
    return (double)quota / (double)period;
}

/* v1 "cpu.cfs_quota_us" (-1: unlimited) over "cpu.cfs_period_us". */
static double v1_cpu(const char *dir)
{
    char q[64], p[64];
    if (!read_line(dir, "cpu.cfs_quota_us", q, sizeof(q)) ||
        !read_line(dir, "cpu.cfs_period_us", p, sizeof(p))) {
        return 0;
    }
    long long quota = strtoll(q, NULL, 10), period = strtoll(p, NULL, 10);
    if (quota <= 0 || period <= 0) {
        return 0;
    }
    return (double)quota / (double)period;
}

/* A byte count in DIR/NAME ("max" or huge: none). */
static uint64_t mem_file(const char *dir, const char *name)
{
    char line[64];
    if (!read_line(dir, name, line, sizeof(line)) || strncmp(line, "max", 3) == 0) {
        return 0;
    }
    errno = 0;
    char *end;
    unsigned long long v = strtoull(line, &end, 10);
    if (errno != 0 || end == line || v == 0 || v >= UNLIMITED_BYTES) {
        return 0;
    }
    return (uint64_t)v;
}

/* Smallest nonzero of A and B. */
static double min_pos(double a, double b)
{
    return a <= 0 ? b : (b <= 0 || a < b ? a : b);
}

static uint64_t min_pos_u(uint64_t a, uint64_t b)
{
    return a == 0 ? b : (b == 0 || a < b ? a : b);
}

/* Walks from MOUNT+PATH up to MOUNT (limits are hierarchical: the smallest
 * counts); when MOUNT+PATH does not exist (a cgroup namespace shows the
 * process's own cgroup at the mount) only MOUNT is read. */
static void walk(const char *mount, const char *path, bool v2, sysres_t *out, bool want_cpu,
                 bool want_mem)
{
    char dir[PATH_MAX];
    if ((size_t)snprintf(dir, sizeof(dir), "%s%s", mount, path) >= sizeof(dir) || !is_dir(dir)) {
        snprintf(dir, sizeof(dir), "%s", mount);
    }
    size_t floor_len = strlen(mount);
    for (;;) {
        if (want_cpu) {
            out->cpu_quota = min_pos(out->cpu_quota, v2 ? v2_cpu(dir) : v1_cpu(dir));
        }
        if (want_mem) {
            out->memory_limit = min_pos_u(
                out->memory_limit, mem_file(dir, v2 ? "memory.max" : "memory.limit_in_bytes"));
        }
        char *slash = strrchr(dir, '/');
        if (strlen(dir) <= floor_len || slash == NULL || (size_t)(slash - dir) < floor_len) {
            break;
        }
        *slash = '\0';
    }
}

/* Does the comma list CONTROLLERS name C? */
static bool has_controller(const char *controllers, const char *c)
{
    size_t n = strlen(c);
    for (const char *p = controllers; *p != '\0';) {
        size_t len = strcspn(p, ",");
        if (len == n && strncmp(p, c, n) == 0) {
            return true;
        }
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    return false;
}

void sysres_read_at(const char *root, const char *proc_cgroup, int online, sysres_t *out)
{
    memset(out, 0, sizeof(*out));
    out->cpus_online = online > 0 ? online : 1;
    char unified_path[PATH_MAX] = "";
    bool v1_cpu_seen = false, v1_mem_seen = false;
    FILE *f = fopen(proc_cgroup, "re");
    char line[PATH_MAX + 128];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
        if (c2 == NULL) {
            continue;
        }
        *c1 = '\0';
        *c2 = '\0';
        const char *controllers = c1 + 1, *path = c2 + 1;
        if (strcmp(path, "/") == 0) {
            path = "";
        }
        if (*controllers == '\0') { /* "0::/path": the unified hierarchy */
            snprintf(unified_path, sizeof(unified_path), "%s", path);
            continue;
        }
        char mount[PATH_MAX];
        bool cpu = has_controller(controllers, "cpu"), mem = has_controller(controllers, "memory");
        if (!cpu && !mem) {
            continue;
        }
        /* v1: mounted under ROOT by the controller list ("cpu,cpuacct"),
         * often with a link by each name ("cpu"); try both. */
        snprintf(mount, sizeof(mount), "%s/%s", root, controllers);
        if (!is_dir(mount)) {
            snprintf(mount, sizeof(mount), "%s/%s", root, cpu ? "cpu" : "memory");
        }
        if (!is_dir(mount)) {
            continue;
        }
        walk(mount, path, false, out, cpu, mem);
        v1_cpu_seen |= cpu;
        v1_mem_seen |= mem;
    }
    if (f != NULL) {
        fclose(f);
    }
    /* v2: the unified hierarchy at ROOT (pure v2) holds the controllers. */
    char probe[PATH_MAX];
    snprintf(probe, sizeof(probe), "%s/cgroup.controllers", root);
    if ((!v1_cpu_seen || !v1_mem_seen) && access(probe, R_OK) == 0) {
        walk(root, unified_path, true, out, !v1_cpu_seen, !v1_mem_seen);
    }
    out->cpus = out->cpus_online;
    if (out->cpu_quota > 0) {
        int q = (int)ceil(out->cpu_quota - 1e-9);
        if (q < 1) {
            q = 1;
        }
        if (q < out->cpus) {
            out->cpus = q;
        }
    }
}

void sysres_read(sysres_t *out)
{
    int online = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        online = CPU_COUNT(&set);
    }
    if (online < 1) {
        online = (int)sysconf(_SC_NPROCESSORS_ONLN);
    }
    sysres_read_at("/sys/fs/cgroup", "/proc/self/cgroup", online, out);
}
