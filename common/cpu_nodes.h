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

/* The registry computes the size of the images the nodes make, for
 * graph_validate()'s work budget; it takes a loaded photo to be this size
 * (24 MP: the validator runs before the photo is known). */
#define CPU_NODES_PLAN_PHOTO_WIDTH 6000
#define CPU_NODES_PLAN_PHOTO_HEIGHT 4000

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
