/*
 * render — `job-worker render GRAPH_OR_PRESET INPUT OUTPUT`: runs the CPU
 * executor on local files, for preset authors, the docs and benchmarks.
 *
 * GRAPH_OR_PRESET is a path to an API-format JSON graph, or a preset name
 * looked up as services/job-worker/presets/<name>.json under $CA_ROOT, the
 * current directory, or the binary's ../../ (build/bin → repo root).
 * Exit 0 with one summary line; 1 with the validation or image error; 2 usage.
 */
#define _GNU_SOURCE
#include "render.h"

#include "cpu_exec.h"
#include "now.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RENDER_MAX_BYTES (512L * 1024 * 1024)

/* Reads a whole file (malloc'd, NUL-terminated). NULL on error. */
static char *read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size > RENDER_MAX_BYTES) {
        fclose(f);
        errno = EFBIG;
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    if (n != (size_t)st.st_size) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[n] = '\0';
    *len_out = n;
    return buf;
}

static char *find_preset(const char *name)
{
    for (const char *p = name; *p != '\0'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-')) {
            return NULL;
        }
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash != NULL) {
        *slash = '\0';
    }
    /* Read directly, not through the table: `render` runs before any
     * configuration is read (service_t.command), and CA_ROOT only says where
     * the checkout is. */
    const char *root = getenv("CA_ROOT");
    char *candidates[3] = {NULL, NULL, NULL};
    if (root != NULL &&
        asprintf(&candidates[0], "%s/services/job-worker/presets/%s.json", root, name) < 0) {
        candidates[0] = NULL;
    }
    if (asprintf(&candidates[1], "services/job-worker/presets/%s.json", name) < 0) {
        candidates[1] = NULL;
    }
    if (asprintf(&candidates[2], "%s/../../services/job-worker/presets/%s.json", exe, name) < 0) {
        candidates[2] = NULL;
    }
    char *found = NULL;
    for (int i = 0; i < 3; i++) {
        if (found == NULL && candidates[i] != NULL && access(candidates[i], R_OK) == 0) {
            found = candidates[i];
        } else {
            free(candidates[i]);
        }
    }
    return found;
}

static int render(const char *graph_arg, const char *input, const char *output, const char *argv0)
{
    int rc = 1;
    char *graph_path = NULL;
    char *graph_text = NULL;
    char *image = NULL;
    cJSON *graph = NULL;
    cpu_exec_job_t job = {0};
    int64_t t0 = now_mono_ms();

    struct stat st;
    if (stat(graph_arg, &st) == 0 && S_ISREG(st.st_mode)) {
        graph_path = strdup(graph_arg);
    } else {
        graph_path = find_preset(graph_arg);
    }
    if (graph_path == NULL) {
        fprintf(stderr, "render: no graph file or preset named %s\n", graph_arg);
        goto out;
    }
    size_t len = 0;
    graph_text = read_file(graph_path, &len);
    if (graph_text == NULL) {
        fprintf(stderr, "render: %s: %s\n", graph_path, strerror(errno));
        goto out;
    }
    graph = cJSON_Parse(graph_text);
    if (graph == NULL) {
        fprintf(stderr, "render: %s: invalid_prompt: not valid JSON\n", graph_path);
        goto out;
    }
    image = read_file(input, &len);
    if (image == NULL) {
        fprintf(stderr, "render: %s: %s\n", input, strerror(errno));
        goto out;
    }
    if (cpu_exec_init(argv0) != 0) {
        fprintf(stderr, "render: libvips failed to start\n");
        goto out;
    }
    job.input = image;
    job.input_len = len;
    char err[1024];
    cpu_exec_status_t status = cpu_exec_run(graph, &job, err, sizeof(err));
    if (status != CPU_EXEC_OK) {
        if (status == CPU_EXEC_UNSUPPORTED_IMAGE && strncmp(err, "unsupported_image", 17) != 0) {
            fprintf(stderr, "render: unsupported_image: %s\n", err);
        } else {
            fprintf(stderr, "render: %s\n", err);
        }
        goto out;
    }
    FILE *f = fopen(output, "wb");
    if (f == NULL || fwrite(job.output, 1, job.output_len, f) != job.output_len) {
        fprintf(stderr, "render: %s: %s\n", output, strerror(errno));
        if (f != NULL) {
            fclose(f);
        }
        goto out;
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "render: %s: %s\n", output, strerror(errno));
        goto out;
    }
    printf("render: %s %dx%d (%zu bytes) -> %s %dx%d %s (%zu bytes) in %ld ms\n", input,
           job.in_width, job.in_height, len, output, job.out_width, job.out_height, job.ext,
           job.output_len, (long)(now_mono_ms() - t0));
    rc = 0;
out:
    cpu_exec_job_free(&job);
    cJSON_Delete(graph);
    free(image);
    free(graph_text);
    free(graph_path);
    cpu_exec_shutdown();
    return rc;
}

int render_command(const char *cmd, int argc, char **argv)
{
    if (strcmp(cmd, "render") != 0) {
        return -1;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: job-worker render GRAPH_OR_PRESET INPUT OUTPUT\n");
        return 2;
    }
    return render(argv[1], argv[2], argv[3], "job-worker");
}
