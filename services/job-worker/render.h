/*
 * render — the job-worker's extra command, `job-worker render GRAPH_OR_PRESET
 * INPUT OUTPUT`: the CPU executor on local files (render.c).
 */
#ifndef CA_RENDER_H
#define CA_RENDER_H

/* service_t.command: runs `render`; -1 when `cmd` is not one of its commands,
 * else the exit code (0 ok, 1 validation or image error, 2 usage). */
int render_command(const char *cmd, int argc, char **argv);

#endif
