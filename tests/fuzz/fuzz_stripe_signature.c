/*
 * fuzz_stripe_signature — the Stripe-Signature parser and check
 * (stripe_verify_signature in common/stripe.c), as billing-webhook calls it
 * on every POST /webhooks/stripe.
 *
 * Input: "<Stripe-Signature header>\n<secrets, a comma list>\n<payload>";
 * a missing part is empty. Then, so that the matching and time branches are
 * reached too, the same payload is checked again with a header that starts
 * with t= and a correct v1 for the first secret, followed by the fuzzed
 * header's entries, at a clock skewed by up to 350 s either way.
 */
#include "stripe.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOW 1700000000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A NUL-terminated copy of data[0..n). */
static char *dup_part(const uint8_t *data, size_t n)
{
    char *s = malloc(n + 1);
    memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *end = data + size;
    const uint8_t *nl1 = memchr(data, '\n', size);
    const uint8_t *header_end = nl1 != NULL ? nl1 : end;
    const uint8_t *secrets_start = nl1 != NULL ? nl1 + 1 : end;
    const uint8_t *nl2 = memchr(secrets_start, '\n', (size_t)(end - secrets_start));
    const uint8_t *secrets_end = nl2 != NULL ? nl2 : end;
    const uint8_t *payload = nl2 != NULL ? nl2 + 1 : end;
    size_t payload_len = (size_t)(end - payload);

    char *header = dup_part(data, (size_t)(header_end - data));
    char *secrets = dup_part(secrets_start, (size_t)(secrets_end - secrets_start));
    char err[256];
    stripe_sig_result_t r =
        stripe_verify_signature(payload, payload_len, header, secrets, 300, NOW, err, sizeof(err));
    (void)stripe_sig_result_name(r);

    /* The same header with a correct v1 appended. */
    char secret[128];
    size_t sl = strcspn(secrets, ",");
    if (sl >= sizeof(secret)) {
        sl = sizeof(secret) - 1;
    }
    memcpy(secret, secrets, sl);
    secret[sl] = '\0';
    char sig[65];
    stripe_compute_signature(secret, NOW, payload, payload_len, sig);
    size_t hl = strlen(header) + 128;
    char *signed_header = malloc(hl);
    snprintf(signed_header, hl, "t=%lld,v1=%s,%s", NOW, sig, header);
    long long skew = (long long)(payload_len % 701) - 350; /* reaches stale and future */
    r = stripe_verify_signature(payload, payload_len, signed_header, secrets, 300, NOW + skew, err,
                                sizeof(err));
    (void)stripe_sig_result_name(r);
    r = stripe_verify_signature(payload, payload_len, header, NULL, 0, NOW, NULL, 0);
    (void)r;

    free(signed_header);
    free(header);
    free(secrets);
    return 0;
}
