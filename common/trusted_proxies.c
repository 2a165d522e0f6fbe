/*
 * trusted_proxies — the client behind trusted proxies (see trusted_proxies.h).
 * Addresses are compared as bytes: inet_pton for parsing, inet_ntop for the
 * canonical text, so "::FFFF:10.0.0.1" and "10.0.0.1" are the same client.
 */
#include "trusted_proxies.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int family; /* AF_INET or AF_INET6 */
    uint8_t b[16];
} addr_t;

typedef struct {
    addr_t net;
    int prefix;
} cidr_t;

struct trusted_proxies {
    size_t n;
    cidr_t c[TRUSTED_PROXIES_MAX];
};

/* A bare address; an IPv4-mapped IPv6 address becomes IPv4. */
static bool addr_parse(const char *s, addr_t *a)
{
    memset(a, 0, sizeof(*a));
    if (inet_pton(AF_INET, s, a->b) == 1) {
        a->family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, s, a->b) != 1) {
        return false;
    }
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a->b, mapped, sizeof(mapped)) == 0) {
        memmove(a->b, a->b + 12, 4);
        memset(a->b + 4, 0, 12);
        a->family = AF_INET;
    } else {
        a->family = AF_INET6;
    }
    return true;
}

static void addr_text(const addr_t *a, char *out, size_t outlen)
{
    char buf[INET6_ADDRSTRLEN];
    if (inet_ntop(a->family, a->b, buf, sizeof(buf)) == NULL) {
        buf[0] = '\0';
    }
    snprintf(out, outlen, "%s", buf);
}

static bool cidr_has(const cidr_t *c, const addr_t *a)
{
    if (c->net.family != a->family) {
        return false;
    }
    int full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->net.b, a->b, (size_t)full) != 0) {
        return false;
    }
    if (rest == 0) {
        return true;
    }
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (c->net.b[full] & mask) == (a->b[full] & mask);
}

static bool list_has(const trusted_proxies_t *l, const addr_t *a)
{
    for (size_t i = 0; l != NULL && i < l->n; i++) {
        if (cidr_has(&l->c[i], a)) {
            return true;
        }
    }
    return false;
}

/* Copies [s, s+len) without surrounding blanks into out; false if too long. */
static bool trimmed(const char *s, size_t len, char *out, size_t outlen)
{
    while (len > 0 && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)s[len - 1])) {
        len--;
    }
    if (len >= outlen) {
        return false;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

static bool cidr_parse(const char *s, cidr_t *c)
{
    char host[INET6_ADDRSTRLEN + 8];
    snprintf(host, sizeof(host), "%s", s);
    char *slash = strchr(host, '/');
    long prefix = -1;
    if (slash != NULL) {
        *slash = '\0';
        char *end = NULL;
        const char *digits = slash + 1;
        if (*digits < '0' || *digits > '9') {
            return false;
        }
        prefix = strtol(digits, &end, 10);
        if (*end != '\0') {
            return false;
        }
    }
    if (!addr_parse(host, &c->net)) {
        return false;
    }
    long max = c->net.family == AF_INET ? 32 : 128;
    if (prefix < 0) {
        prefix = max;
    } else if (strchr(host, ':') != NULL && c->net.family == AF_INET) {
        prefix -= 96; /* ::ffff:a.b.c.d/120 is a.b.c.d/24 */
        if (prefix < 0) {
            return false;
        }
    }
    if (prefix > max) {
        return false;
    }
    c->prefix = (int)prefix;
    return true;
}

trusted_proxies_t *trusted_proxies_parse(const char *spec, char *err, size_t errlen)
{
    trusted_proxies_t *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *p = spec != NULL ? spec : "";
    while (*p != '\0') {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char item[INET6_ADDRSTRLEN + 8];
        if (!trimmed(p, len, item, sizeof(item))) {
            snprintf(err, errlen, "TRUSTED_PROXIES: an entry is too long");
            free(l);
            return NULL;
        }
        if (item[0] != '\0') {
            if (l->n == TRUSTED_PROXIES_MAX) {
                snprintf(err, errlen, "TRUSTED_PROXIES: more than %d entries", TRUSTED_PROXIES_MAX);
                free(l);
                return NULL;
            }
            if (!cidr_parse(item, &l->c[l->n])) {
                snprintf(err, errlen, "TRUSTED_PROXIES: '%s' is not an address or CIDR", item);
                free(l);
                return NULL;
            }
            l->n++;
        }
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    return l;
}

void trusted_proxies_free(trusted_proxies_t *l)
{
    free(l);
}

size_t trusted_proxies_count(const trusted_proxies_t *l)
{
    return l != NULL ? l->n : 0;
}

bool trusted_proxies_match(const trusted_proxies_t *l, const char *addr)
{
    addr_t a;
    return addr != NULL && addr_parse(addr, &a) && list_has(l, &a);
}

/* One X-Forwarded-For entry: an address, "[v6]", "[v6]:port" or "v4:port". */
static bool hop_parse(const char *entry, addr_t *a)
{
    char host[INET6_ADDRSTRLEN + 8];
    snprintf(host, sizeof(host), "%s", entry);
    if (host[0] == '[') {
        char *close = strchr(host, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
            return false;
        }
        *close = '\0';
        return addr_parse(host + 1, a) && a->family == AF_INET6;
    }
    char *colon = strchr(host, ':');
    if (colon != NULL && strchr(colon + 1, ':') == NULL) {
        *colon = '\0'; /* v4:port */
    }
    return addr_parse(host, a);
}

void trusted_proxies_client(const trusted_proxies_t *l, const char *peer, const char *const *xff,
                            size_t n, char *out, size_t outlen)
{
    addr_t cur;
    if (peer == NULL || !addr_parse(peer, &cur)) {
        snprintf(out, outlen, "%s", peer != NULL ? peer : "");
        return;
    }
    if (list_has(l, &cur)) {
        /* the last TRUSTED_PROXIES_MAX_HOPS entries, oldest first */
        char hops[TRUSTED_PROXIES_MAX_HOPS][INET6_ADDRSTRLEN + 8];
        size_t total = 0;
        for (size_t i = 0; i < n; i++) {
            const char *p = xff[i] != NULL ? xff[i] : "";
            for (;;) {
                const char *comma = strchr(p, ',');
                size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
                char *slot = hops[total % TRUSTED_PROXIES_MAX_HOPS];
                if (!trimmed(p, len, slot, sizeof(hops[0]))) {
                    snprintf(slot, sizeof(hops[0]), "-"); /* too long: not an address */
                }
                total++;
                if (comma == NULL) {
                    break;
                }
                p = comma + 1;
            }
        }
        size_t kept = total < TRUSTED_PROXIES_MAX_HOPS ? total : TRUSTED_PROXIES_MAX_HOPS;
        for (size_t k = 0; k < kept; k++) {
            addr_t hop;
            if (!hop_parse(hops[(total - 1 - k) % TRUSTED_PROXIES_MAX_HOPS], &hop)) {
                break; /* the last trusted hop stands */
            }
            cur = hop;
            if (!list_has(l, &hop)) {
                break;
            }
        }
    }
    addr_text(&cur, out, outlen);
}
