/*
 * config — environment variables from one declarative table.
 * See config.h for the contract and docs/common/config.md for the notes.
 */
#include "config.h"

#include "crypto.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const TYPE_NAMES[] = {"string", "int",     "bool", "url",
                                         "key32",  "keylist", "list"};

static const char *const URL_SCHEMES[] = {"http",  "https",  "postgresql", "postgres",
                                          "redis", "rediss", "smtp",       "smtps"};

#define URL_SCHEMES_TEXT "http, https, postgresql, postgres, redis, rediss, smtp, smtps"
#define KEY32_TEXT "must be standard base64 of exactly 32 bytes"

static const char *type_name(config_type_t type)
{
    if ((size_t)type < sizeof(TYPE_NAMES) / sizeof(TYPE_NAMES[0])) {
        return TYPE_NAMES[type];
    }
    return "?";
}

static bool is_list_type(config_type_t type)
{
    return type == CFG_KEYLIST || type == CFG_LIST;
}

/* INT bounds: min == max == 0 means "any long". */
static void int_bounds(const config_var_t *var, long *min, long *max)
{
    if (var->min == 0 && var->max == 0) {
        *min = LONG_MIN;
        *max = LONG_MAX;
    } else {
        *min = var->min;
        *max = var->max;
    }
}

/* Strict decimal: optional sign, digits, nothing else. */
static int parse_long(const char *text, long *out)
{
    const char *p = text;
    if (*p == '+' || *p == '-') {
        p++;
    }
    if (*p == '\0') {
        return -1;
    }
    for (const char *q = p; *q != '\0'; q++) {
        if (*q < '0' || *q > '9') {
            return -1;
        }
    }
    errno = 0;
    char *end = NULL;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == NULL || *end != '\0') {
        return -1;
    }
    *out = value;
    return 0;
}

static int parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static bool url_ok(const char *text)
{
    const char *sep = strstr(text, "://");
    if (sep == NULL || sep == text || sep[3] == '\0') {
        return false;
    }
    size_t schemelen = (size_t)(sep - text);
    bool known = false;
    for (size_t i = 0; i < sizeof(URL_SCHEMES) / sizeof(URL_SCHEMES[0]); i++) {
        if (strlen(URL_SCHEMES[i]) == schemelen &&
            strncasecmp(text, URL_SCHEMES[i], schemelen) == 0) {
            known = true;
        }
    }
    if (!known) {
        return false;
    }
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
        if (*p <= ' ' || *p == 0x7f) {
            return false;
        }
    }
    return true;
}

/* One base64 key, surrounding whitespace ignored (as crypto_keyring_new does). */
static bool key32_ok(const char *text, size_t len)
{
    while (len > 0 && isspace((unsigned char)*text)) {
        text++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)text[len - 1])) {
        len--;
    }
    char *copy = strndup(text, len);
    if (copy == NULL) {
        return false;
    }
    size_t rawlen = 0;
    uint8_t *raw = crypto_base64_decode(copy, &rawlen);
    bool ok = raw != NULL && rawlen == CRYPTO_KEY_LEN;
    if (raw != NULL) {
        memset(raw, 0, rawlen);
        free(raw);
    }
    memset(copy, 0, len);
    free(copy);
    return ok;
}

/* Calls fn(item, len, index, arg) for each non-blank comma-separated item;
 * stops and returns the failing 1-based index, or 0 when all pass. */
static size_t each_item(const char *list, bool (*fn)(const char *, size_t, void *), void *arg)
{
    const char *item = list;
    size_t index = 0;
    for (;;) {
        const char *comma = strchr(item, ',');
        size_t len = comma != NULL ? (size_t)(comma - item) : strlen(item);
        index++;
        size_t blank = 0;
        while (blank < len && isspace((unsigned char)item[blank])) {
            blank++;
        }
        if (blank < len && !fn(item, len, arg)) {
            return index;
        }
        if (comma == NULL) {
            return 0;
        }
        item = comma + 1;
    }
}

static bool key_item_ok(const char *item, size_t len, void *arg)
{
    return key32_ok(item, len);
}

static bool redact_item(const char *item, size_t len, void *arg)
{
    while (len > 0 && isspace((unsigned char)*item)) {
        item++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)item[len - 1])) {
        len--;
    }
    char *copy = strndup(item, len);
    if (copy != NULL) {
        log_redact_add(copy);
        memset(copy, 0, len);
        free(copy);
    }
    return true;
}

/* Checks `value` against the variable's type. Returns a new normalised copy
 * or NULL with err filled ("NAME: …"). `origin` says "" or " (default)". */
static char *check_value(const config_var_t *var, const char *value, const char *origin, char *err,
                         size_t errlen)
{
    switch (var->type) {
    case CFG_STRING:
        if (value[0] == '\0') {
            snprintf(err, errlen, "%s: must not be empty%s", var->name, origin);
            return NULL;
        }
        break;
    case CFG_INT: {
        long min;
        long max;
        long parsed;
        int_bounds(var, &min, &max);
        if (parse_long(value, &parsed) != 0 || parsed < min || parsed > max) {
            if (var->min == 0 && var->max == 0) {
                snprintf(err, errlen, "%s: must be an integer%s", var->name, origin);
            } else {
                snprintf(err, errlen, "%s: must be an integer between %ld and %ld%s", var->name,
                         min, max, origin);
            }
            return NULL;
        }
        break;
    }
    case CFG_BOOL: {
        bool parsed;
        if (parse_bool(value, &parsed) != 0) {
            snprintf(err, errlen, "%s: must be true/false/1/0/yes/no/on/off%s", var->name, origin);
            return NULL;
        }
        return strdup(parsed ? "true" : "false");
    }
    case CFG_URL:
        if (!url_ok(value)) {
            snprintf(err, errlen, "%s: must be a URL scheme://... (" URL_SCHEMES_TEXT ")%s",
                     var->name, origin);
            return NULL;
        }
        break;
    case CFG_KEY32:
        if (!key32_ok(value, strlen(value))) {
            snprintf(err, errlen, "%s: " KEY32_TEXT "%s", var->name, origin);
            return NULL;
        }
        break;
    case CFG_KEYLIST: {
        size_t bad = each_item(value, key_item_ok, NULL);
        if (bad != 0) {
            snprintf(err, errlen, "%s: item %zu " KEY32_TEXT "%s", var->name, bad, origin);
            return NULL;
        }
        break;
    }
    case CFG_LIST:
        break;
    default:
        snprintf(err, errlen, "%s: unknown type in the configuration table", var->name);
        return NULL;
    }
    return strdup(value);
}

static void free_value(const config_var_t *var, char *value)
{
    if (value == NULL) {
        return;
    }
    if (var->secret) {
        memset(value, 0, strlen(value));
    }
    free(value);
}

void config_free(config_t *cfg)
{
    if (cfg == NULL) {
        return;
    }
    if (cfg->values != NULL) {
        for (size_t i = 0; i < cfg->nvars; i++) {
            free_value(&cfg->vars[i], cfg->values[i]);
        }
        free(cfg->values);
    }
    cfg->values = NULL;
    cfg->vars = NULL;
    cfg->nvars = 0;
}

int config_load(config_t *cfg, const config_var_t *vars, size_t nvars, char *err, size_t errlen)
{
    if (errlen > 0) {
        err[0] = '\0';
    }
    cfg->vars = vars;
    cfg->nvars = nvars;
    cfg->values = calloc(nvars > 0 ? nvars : 1, sizeof(char *));
    if (cfg->values == NULL) {
        snprintf(err, errlen, "config: out of memory");
        cfg->vars = NULL;
        cfg->nvars = 0;
        return -1;
    }
    for (size_t i = 0; i < nvars; i++) {
        const config_var_t *var = &vars[i];
        const char *env = getenv(var->name);
        const char *value = NULL;
        const char *origin = "";
        /* Set but empty counts as unset, except for lists (empty list). */
        if (env != NULL && (env[0] != '\0' || is_list_type(var->type))) {
            value = env;
        } else if (var->def != NULL) {
            value = var->def;
            origin = " (default)";
        }
        if (value == NULL) {
            if (var->required) {
                if (var->help != NULL && var->help[0] != '\0') {
                    snprintf(err, errlen, "%s: is required (%s)", var->name, var->help);
                } else {
                    snprintf(err, errlen, "%s: is required", var->name);
                }
                goto fail;
            }
            continue;
        }
        char *checked = check_value(var, value, origin, err, errlen);
        if (checked == NULL) {
            if (errlen == 0 || err[0] == '\0' || strncmp(err, var->name, strlen(var->name)) != 0) {
                snprintf(err, errlen, "%s: out of memory", var->name);
            }
            goto fail;
        }
        cfg->values[i] = checked;
        if (var->secret) {
            log_redact_add(checked);
            if (is_list_type(var->type)) {
                (void)each_item(checked, redact_item, NULL);
            }
        }
    }
    return 0;
fail:
    config_free(cfg);
    return -1;
}

static size_t find_index(const config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nvars; i++) {
        if (strcmp(cfg->vars[i].name, name) == 0) {
            return i;
        }
    }
    fprintf(stderr, "config: \"%s\" is not in the configuration table\n", name);
    abort();
}

const char *config_get(const config_t *cfg, const char *name)
{
    return cfg->values[find_index(cfg, name)];
}

long config_get_int(const config_t *cfg, const char *name)
{
    const char *value = config_get(cfg, name);
    long parsed = 0;
    if (value == NULL || parse_long(value, &parsed) != 0) {
        return 0;
    }
    return parsed;
}

bool config_get_bool(const config_t *cfg, const char *name)
{
    const char *value = config_get(cfg, name);
    bool parsed = false;
    if (value == NULL || parse_bool(value, &parsed) != 0) {
        return false;
    }
    return parsed;
}

void config_print_help(FILE *out, const char *prog, const config_var_t *vars, size_t nvars)
{
    if (prog != NULL) {
        fprintf(out, "Usage: %s [serve|migrate|cleanup|--help|--version]\n\n", prog);
    }
    fprintf(out, "Configuration (environment variables):\n");
    for (size_t i = 0; i < nvars; i++) {
        const config_var_t *var = &vars[i];
        fprintf(out, "  %-24s %-7s", var->name, type_name(var->type));
        if (var->type == CFG_INT && !(var->min == 0 && var->max == 0)) {
            fprintf(out, " [%ld..%ld]", var->min, var->max);
        }
        if (var->def != NULL) {
            if (var->secret) {
                fprintf(out, " default: (secret, not shown)");
            } else {
                fprintf(out, " default: %s", var->def[0] != '\0' ? var->def : "\"\"");
            }
        } else if (var->required) {
            fprintf(out, " required");
        } else {
            fprintf(out, " optional");
        }
        if (var->secret) {
            fprintf(out, " secret");
        }
        fprintf(out, "\n");
        if (var->help != NULL && var->help[0] != '\0') {
            fprintf(out, "      %s\n", var->help);
        }
    }
}
