/*
 * The job-worker sizes itself from its cgroup (issue 17): sysres reads the
 * CPU quota and memory limit of a cgroup v2 or v1 tree (built here in a
 * temporary folder, laid out as the kernel does), and
 * worker_default_concurrency turns them into job threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "sysres.h"
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[256];

static void put(const char *rel, const char *text)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    /* mkdir -p of the parent */
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        mkdir(path, 0700);
        *p = '/';
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    snprintf(root, sizeof(root), "/tmp/ca-sysres.XXXXXX");
    assert_non_null(mkdtemp(root));
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    return system(cmd) == 0 ? 0 : -1;
}

static sysres_t read_tree(int online)
{
    char cg[300], fs[300];
    snprintf(cg, sizeof(cg), "%s/proc-self-cgroup", root);
    snprintf(fs, sizeof(fs), "%s/fs", root);
    sysres_t r;
    sysres_read_at(fs, cg, online, &r);
    return r;
}

/* cgroup v2 as in a Kubernetes pod (cgroup namespace: "0::/"), limits cpu 2,
 * memory 1Gi, on a 64-core node. */
static void v2_pod_limits(void **state)
{
    put("proc-self-cgroup", "0::/\n");
    put("fs/cgroup.controllers", "cpuset cpu io memory pids\n");
    put("fs/cpu.max", "200000 100000\n");
    put("fs/memory.max", "1073741824\n");
    sysres_t r = read_tree(64);
    assert_int_equal(r.cpus, 2);
    assert_int_equal(r.cpus_online, 64);
    assert_true(r.cpu_quota > 1.99 && r.cpu_quota < 2.01);
    assert_int_equal(r.memory_limit, 1073741824ULL);
}

/* A fractional quota rounds up (500m: one thread), never to 0; "max": none. */
static void v2_fraction_and_max(void **state)
{
    put("proc-self-cgroup", "0::/\n");
    put("fs/cgroup.controllers", "cpu memory\n");
    put("fs/cpu.max", "50000 100000\n");
    put("fs/memory.max", "max\n");
    sysres_t r = read_tree(8);
    assert_int_equal(r.cpus, 1);
    assert_int_equal(r.memory_limit, 0);
    put("fs/cpu.max", "max 100000\n");
    r = read_tree(8);
    assert_int_equal(r.cpus, 8);
    assert_true(r.cpu_quota == 0);
    put("fs/cpu.max", "150000 100000\n");
    assert_int_equal(read_tree(8).cpus, 2);
}

/* No cgroup namespace: the process's cgroup is a path below the mount, and
 * the smallest limit along the way counts (a parent's tighter limit too). */
static void v2_nested_parent_limit(void **state)
{
    put("proc-self-cgroup", "0::/kubepods/pod1/ctr\n");
    put("fs/cgroup.controllers", "cpu memory\n");
    put("fs/kubepods/cpu.max", "max 100000\n");
    put("fs/kubepods/pod1/cpu.max", "300000 100000\n");
    put("fs/kubepods/pod1/ctr/cpu.max", "400000 100000\n");
    put("fs/kubepods/pod1/memory.max", "536870912\n");
    put("fs/kubepods/pod1/ctr/memory.max", "max\n");
    sysres_t r = read_tree(16);
    assert_int_equal(r.cpus, 3);
    assert_int_equal(r.memory_limit, 536870912ULL);
}

/* cgroup v1 (hybrid, as on this machine): cpu,cpuacct and memory
 * controllers; -1 and the kernel's huge "unlimited" mean none. */
static void v1_limits(void **state)
{
    put("proc-self-cgroup", "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n");
    put("fs/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000\n");
    put("fs/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
    put("fs/memory/docker/abc/memory.limit_in_bytes", "2147483648\n");
    put("fs/memory/memory.limit_in_bytes", "9223372036854771712\n");
    sysres_t r = read_tree(32);
    assert_int_equal(r.cpus, 3);
    assert_int_equal(r.memory_limit, 2147483648ULL);
    put("fs/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n");
    put("fs/memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n");
    r = read_tree(32);
    assert_int_equal(r.cpus, 32);
    assert_int_equal(r.memory_limit, 0);
}

/* Nothing readable: the affinity count, no memory limit. The quota never
 * raises the count above the CPUs the process may run on. */
static void no_cgroup(void **state)
{
    sysres_t r = read_tree(6);
    assert_int_equal(r.cpus, 6);
    assert_int_equal(r.memory_limit, 0);
    put("proc-self-cgroup", "0::/\n");
    put("fs/cgroup.controllers", "cpu\n");
    put("fs/cpu.max", "800000 100000\n");
    assert_int_equal(read_tree(2).cpus, 2);
}

/* The worker's default: the CPUs, lowered to what fits in memory. */
static void default_concurrency(void **state)
{
    char why[256];
    sysres_t r = {.cpus = 2, .cpus_online = 64, .cpu_quota = 2.0, .memory_limit = 1024ULL << 20};
    /* 1024 MB - 128 reserve = 896: four 200 MB jobs fit, 2 CPUs: 2 */
    assert_int_equal(worker_default_concurrency(&r, 200, why, sizeof(why)), 2);
    assert_non_null(strstr(why, "quota 2.00 of 64"));
    r.cpus = 8;
    assert_int_equal(worker_default_concurrency(&r, 200, why, sizeof(why)), 4);
    assert_non_null(strstr(why, "fits 4 job(s)"));
    r.memory_limit = 256ULL << 20; /* 128 MB room: not one 200 MB job, still 1 */
    assert_int_equal(worker_default_concurrency(&r, 200, why, sizeof(why)), 1);
    r.memory_limit = 0; /* no limit: the CPUs */
    assert_int_equal(worker_default_concurrency(&r, 200, why, sizeof(why)), 8);
    /* a tiny buffer is never overrun */
    char small[8];
    r.memory_limit = 1024ULL << 20;
    assert_int_equal(worker_default_concurrency(&r, 200, small, sizeof(small)), 4);
    assert_true(strlen(small) < sizeof(small));
}

/* On this machine: whatever the cgroup says, never more than the cores. */
static void this_machine(void **state)
{
    sysres_t r;
    sysres_read(&r);
    assert_true(r.cpus >= 1);
    assert_true(r.cpus <= sysconf(_SC_NPROCESSORS_ONLN));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(v2_pod_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(v2_fraction_and_max, setup, teardown),
        cmocka_unit_test_setup_teardown(v2_nested_parent_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(v1_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(no_cgroup, setup, teardown),
        cmocka_unit_test(default_concurrency),
        cmocka_unit_test(this_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
