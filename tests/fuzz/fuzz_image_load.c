/*
 * fuzz_image_load — the image loader front door of the job-worker: the bytes
 * are a file from a user's Drive, handed to the CPU executor exactly as
 * job.c does (cpu_exec_job_t.input), through the smallest graph that loads
 * and writes an image: LoadImage → CA.Export (JPEG). cpu_exec.h has no
 * separate "load from a buffer" function, so cpu_exec_run is the public
 * entry; LoadImage (cpu_comfy_nodes.c) and the streaming loader
 * (cpu_stream.c) call vips_image_new_from_buffer on the bytes, so whichever
 * loaders libvips picks from the content are fuzzed with it.
 *
 * libvips runs with one worker thread and no operation cache, so that a
 * finding reproduces and nothing is kept between inputs.
 *
 * The pixel limit is 4 MP here, not the product's 100 MP: a 272-byte
 * truncated JPEG may legitimately declare 96 MP, which the front door
 * accepts and which takes 1.2 s to decode natively but over 10 s under
 * ASan (a libFuzzer timeout, and no parser bug). The limit is a parameter
 * of the same check (cpu_exec_open), so the smaller value keeps the fuzzer
 * on the parsers; tests/unit/test_cpu_exec_front_door.c tests the limit.
 */
#include "cpu_exec.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char GRAPH[] =
    "{\"1\":{\"class_type\":\"LoadImage\",\"inputs\":{\"image\":\"input\"}},"
    "\"2\":{\"class_type\":\"CA.Export\",\"inputs\":{\"image\":[\"1\",0],\"format\":\"jpeg\","
    "\"quality\":50}}}";

static cJSON *graph;

#define FUZZ_MAX_PIXELS 4000000LL

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setenv("VIPS_CONCURRENCY", "1", 1);
    setenv("VIPS_WARNING", "0", 1);
    if (cpu_exec_init((*argv)[0]) != 0) {
        abort();
    }
    vips_cache_set_max(0);
    vips_concurrency_set(1);
    graph = cJSON_Parse(GRAPH);
    if (graph == NULL) {
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cpu_exec_job_t job = {.input = data, .input_len = size, .max_pixels = FUZZ_MAX_PIXELS};
    char err[256];
    cpu_exec_status_t st = cpu_exec_run(graph, &job, err, sizeof(err));
    (void)st;
    cpu_exec_job_free(&job);
    vips_error_clear();
    return 0;
}
