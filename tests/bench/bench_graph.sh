#!/usr/bin/env bash
# Workflow validation (common/graph.c, the CPU executor's registry): the time
# graph_validate takes, per node, for chains of 100 and 500 nodes (500 is the
# cap, GRAPH_MAX_NODES) and for the worst shape for its error body (every
# other node failing, each feeding an output). Linear work shows as a flat
# ns/node column. Information only: no target (the api-gateway validates on
# its event loop, so a 500-node graph should stay well under a millisecond).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=${BUILD:-build}
[ -f "$BUILD/lib/libcommon.a" ] || make -s all
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cat >"$TMP/bench.c" <<'C'
#define _GNU_SOURCE
#include "cpu_nodes.h"
#include "graph.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void add(cJSON *p, int id, const char *ct, cJSON *in)
{
    char key[16];
    snprintf(key, sizeof(key), "%d", id);
    cJSON *n = cJSON_AddObjectToObject(p, key);
    cJSON_AddStringToObject(n, "class_type", ct);
    cJSON_AddItemToObject(n, "inputs", in);
}

static cJSON *link_to(int id)
{
    char key[16];
    snprintf(key, sizeof(key), "%d", id);
    cJSON *l = cJSON_CreateArray();
    cJSON_AddItemToArray(l, cJSON_CreateString(key));
    cJSON_AddItemToArray(l, cJSON_CreateNumber(0));
    return l;
}

/* LoadImage → blurs → SaveImage; with `failing`, every blur fails and feeds a SaveImage. */
static cJSON *graph(int nodes, int failing)
{
    cJSON *p = cJSON_CreateObject();
    cJSON *in = cJSON_CreateObject();
    cJSON_AddStringToObject(in, "image", "in.png");
    add(p, 1, "LoadImage", in);
    int id = 2, prev = 1;
    while (id < nodes) {
        in = cJSON_CreateObject();
        cJSON_AddItemToObject(in, "image", link_to(prev));
        cJSON_AddNumberToObject(in, "blur_radius", failing ? 0 : 2);
        cJSON_AddNumberToObject(in, "sigma", 1);
        add(p, id, "ImageBlur", in);
        prev = id++;
        if (failing && id < nodes) {
            in = cJSON_CreateObject();
            cJSON_AddItemToObject(in, "images", link_to(prev));
            add(p, id++, "SaveImage", in);
        }
    }
    in = cJSON_CreateObject();
    cJSON_AddItemToObject(in, "images", link_to(prev));
    add(p, id, "SaveImage", in);
    return p;
}

int main(void)
{
    const int sizes[] = {100, 500};
    printf("%-8s %-8s %12s %12s %10s\n", "shape", "nodes", "us/validate", "ns/node", "steps/node");
    for (int failing = 0; failing < 2; failing++) {
        for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            cJSON *p = graph(sizes[s], failing);
            int rounds = 200;
            graph_stats_t stats = {0};
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            for (int r = 0; r < rounds; r++) {
                cJSON *err = NULL;
                if (graph_validate_stats(p, cpu_nodes_registry(), &stats, &err) ==
                    GRAPH_UNKNOWN_CLASS) {
                    return 1;
                }
                cJSON_Delete(err);
            }
            clock_gettime(CLOCK_MONOTONIC, &t1);
            double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / rounds;
            printf("%-8s %-8d %12.1f %12.0f %10.1f\n", failing ? "failing" : "chain", sizes[s],
                   ns / 1000, ns / sizes[s], (double)stats.steps / sizes[s]);
            cJSON_Delete(p);
        }
    }
    return 0;
}
C
# shellcheck disable=SC2046
cc -O2 -I"$ROOT/common" -o "$TMP/bench" "$TMP/bench.c" "$BUILD/lib/libcommon.a" \
  $(pkg-config --cflags --libs libcjson) -lm
"$TMP/bench"
