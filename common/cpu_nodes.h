/*
 * cpu_nodes — the registry of node classes the built-in CPU executor runs
 * (ComfyUI's model-free core image nodes plus our "CA." nodes). Static data;
 * shared by the job-worker (which executes them) and the api-gateway (which
 * validates presets with it).
 */
#ifndef CA_CPU_NODES_H
#define CA_CPU_NODES_H

#include "graph.h"

#define CPU_NODES_MAX_RESOLUTION 16384

const graph_registry_t *cpu_nodes_registry(void);

/* Choice lists (NULL-terminated), shared with the executor's implementations. */
extern const char *const cpu_nodes_scale_methods[];
extern const char *const cpu_nodes_crop_methods[];
extern const char *const cpu_nodes_blend_modes[];
extern const char *const cpu_nodes_flip_methods[];
extern const char *const cpu_nodes_rotations[];
extern const char *const cpu_nodes_export_formats[];
extern const char *const cpu_nodes_positions[];

#endif
