/*
 * sysres — the CPU and memory this process may really use: its CPU affinity
 * and its cgroup's limits (v2 cpu.max / memory.max, v1 cpu.cfs_quota_us /
 * memory.limit_in_bytes, the smallest along the path to the root), not the
 * node's core count. In a Kubernetes pod with `limits: {cpu: 2}` on a 64-core
 * node sysconf(_SC_NPROCESSORS_ONLN) says 64; sysres says 2.
 *
 *   sysres_t r;
 *   sysres_read(&r);
 *   // r.cpus: usable CPUs (>= 1), r.memory_limit: bytes or 0 (none)
 */
#ifndef CA_SYSRES_H
#define CA_SYSRES_H

#include <stdint.h>

typedef struct {
    int cpus;              /* min(affinity CPUs, ceil(cgroup quota)), at least 1 */
    int cpus_online;       /* CPUs in this process's affinity mask */
    double cpu_quota;      /* cgroup CPU quota in CPUs; 0: none */
    uint64_t memory_limit; /* cgroup memory limit in bytes; 0: none */
} sysres_t;

/* Reads /proc/self/cgroup, /sys/fs/cgroup and the affinity mask. */
void sysres_read(sysres_t *out);

/* The same from a cgroup file system mounted at ROOT, the process's cgroup
 * list in the file PROC_CGROUP (the format of /proc/self/cgroup) and ONLINE
 * CPUs; for tests. */
void sysres_read_at(const char *root, const char *proc_cgroup, int online, sysres_t *out);

#endif
