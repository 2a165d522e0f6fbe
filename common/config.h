/*
 * config — environment variables from one declarative table per process.
 *
 *   static const config_var_t vars[] = {
 *       {"PORT", CFG_INT, "9103", false, false, 1, 65535, "HTTP port for health and metrics"},
 *       {"ENCRYPTION_KEY", CFG_KEY32, NULL, true, true, 0, 0, "base64 of 32 bytes"},
 *   };
 *
 * config_load() reads every variable, applies defaults, checks type and bounds,
 * and on the first problem fills `err` with one line naming the variable
 * (e.g. "PORT: must be an integer between 1 and 65535") and returns -1; the
 * daemon prints that line and exits 2. Secret values are registered with
 * log_redact_add() so they can never be logged.
 */
#ifndef CA_CONFIG_H
#define CA_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef enum {
    CFG_STRING,  /* any non-empty string when set */
    CFG_INT,     /* decimal integer within [min, max] */
    CFG_BOOL,    /* true/false/1/0/yes/no/on/off */
    CFG_URL,     /* scheme://… (http, https, postgresql, postgres, redis, rediss, smtp, smtps) */
    CFG_KEY32,   /* standard base64 of exactly 32 bytes */
    CFG_KEYLIST, /* comma list of CFG_KEY32 values; empty allowed */
    CFG_LIST,    /* comma list of strings; empty allowed */
} config_type_t;

typedef struct {
    const char *name;
    config_type_t type;
    const char *def; /* NULL: no default */
    bool required;   /* must be set (and non-empty) when there is no default */
    bool secret;     /* never printed; registered for log redaction */
    long min, max;   /* bounds for CFG_INT */
    const char *help;
} config_var_t;

typedef struct {
    const config_var_t *vars;
    size_t nvars;
    char **values; /* owned; NULL where unset and no default */
} config_t;

/* Loads `nvars` variables from the environment. On error fills err (one line,
 * starting with the variable's name), frees what it allocated, returns -1. */
__attribute__((warn_unused_result)) int config_load(config_t *cfg, const config_var_t *vars,
                                                    size_t nvars, char *err, size_t errlen);

/* The value, or NULL when unset. Aborts on a name not in the table (a bug). */
const char *config_get(const config_t *cfg, const char *name);
long config_get_int(const config_t *cfg, const char *name);
bool config_get_bool(const config_t *cfg, const char *name);

/* Prints a usage line (when prog is not NULL) and the table: name, type,
 * default, required, secret, help. Secret defaults are never printed. */
void config_print_help(FILE *out, const char *prog, const config_var_t *vars, size_t nvars);

void config_free(config_t *cfg);

#endif
