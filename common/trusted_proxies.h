/*
 * trusted_proxies — which client a request comes from behind a load balancer
 * or an ingress (TRUSTED_PROXIES, docs/common/trusted_proxies.md).
 *
 * A list of CIDRs (IPv4 and IPv6; a bare address is a /32 or /128). When the
 * connection's peer is in the list, X-Forwarded-For is read from the right:
 * each address that is itself a trusted proxy is skipped, and the first one
 * that is not is the client. Otherwise (no list, or a peer outside it) the
 * header is ignored: anyone can send it.
 */
#ifndef CA_TRUSTED_PROXIES_H
#define CA_TRUSTED_PROXIES_H

#include <stdbool.h>
#include <stddef.h>

/* At most this many CIDRs in a list, and X-Forwarded-For entries examined. */
#define TRUSTED_PROXIES_MAX 64
#define TRUSTED_PROXIES_MAX_HOPS 32

typedef struct trusted_proxies trusted_proxies_t;

/* Parses a comma list ("10.0.0.0/8, 192.168.1.7, fd00::/8"); blanks around
 * entries are ignored; NULL or "" gives an empty list. NULL on a bad entry
 * (err says which). */
trusted_proxies_t *trusted_proxies_parse(const char *spec, char *err, size_t errlen);
void trusted_proxies_free(trusted_proxies_t *l);
/* Number of CIDRs (0: X-Forwarded-For is never read). */
size_t trusted_proxies_count(const trusted_proxies_t *l);
/* addr (textual IPv4 or IPv6; an IPv4-mapped IPv6 address counts as IPv4)
 * is inside one of the CIDRs. */
bool trusted_proxies_match(const trusted_proxies_t *l, const char *addr);
/* The client of a request from peer carrying X-Forwarded-For values xff[0..n)
 * (every occurrence of the header, in order): peer itself unless trusted;
 * then the right-most entry that is not a trusted proxy. An entry that is not
 * an address (optionally with a port, "[v6]:port" or "v4:port") ends the walk
 * at the hop before it, the last address a trusted proxy vouched for. Writes
 * the canonical text form into out. */
void trusted_proxies_client(const trusted_proxies_t *l, const char *peer, const char *const *xff,
                            size_t n, char *out, size_t outlen);

#endif
