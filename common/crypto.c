/*
 * crypto — OpenSSL 3 helpers (EVP only): the token envelope, AES-256-GCM,
 * HMAC-SHA256, SHA-256, random tokens and strict base64/base64url/hex.
 * See crypto.h for the contracts and docs/common/crypto.md for the notes.
 */
#include "crypto.h"

#include "errbuf.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ENVELOPE_VERSION "v1"
#define KID_LEN 8 /* hex chars of SHA-256(key) */
#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16

typedef struct {
    uint8_t key[CRYPTO_KEY_LEN];
    char kid[KID_LEN + 1];
} crypto_key_t;

struct crypto_keyring {
    crypto_key_t current;
    crypto_key_t *old;
    size_t nold;
};

/* ---------------------------------------------------------------- encodings */

static const char B64_STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64_URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static char *b64_encode(const char *alphabet, bool pad, const void *data, size_t len)
{
    const uint8_t *in = data;
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3) {
        return NULL;
    }
    size_t outcap = (len + 2) / 3 * 4 + 1;
    char *out = malloc(outcap);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        out[o++] = alphabet[v & 63];
    }
    size_t rest = len - i;
    if (rest == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        if (pad) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (rest == 2) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = alphabet[(v >> 6) & 63];
        if (pad) {
            out[o++] = '=';
        }
    }
    out[o] = '\0';
    return out;
}

static int b64_value(const char *alphabet, char c)
{
    if (c == '\0') {
        return -1;
    }
    const char *p = strchr(alphabet, c);
    if (p == NULL) {
        return -1;
    }
    return (int)(p - alphabet);
}

/* Strict decoder: only alphabet characters, '=' only as trailing padding,
 * padding mandatory when `require_pad`, unused trailing bits must be zero. */
static uint8_t *b64_decode(const char *alphabet, bool require_pad, const char *text, size_t *outlen)
{
    if (text == NULL) {
        return NULL;
    }
    size_t len = strlen(text);
    size_t npad = 0;
    while (npad < len && text[len - 1 - npad] == '=') {
        npad++;
    }
    if (npad > 2) {
        return NULL;
    }
    if (npad > 0 || require_pad) {
        if (len % 4 != 0) {
            return NULL;
        }
    }
    size_t ndata = len - npad; /* significant characters */
    if (ndata % 4 == 1) {
        return NULL;
    }
    if (npad > 0 && (ndata % 4) + npad != 4) {
        return NULL;
    }
    size_t nbytes = ndata / 4 * 3 + (ndata % 4 == 0 ? 0 : ndata % 4 - 1);
    uint8_t *out = malloc(nbytes + 1); /* +1: never malloc(0) */
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < ndata; i++) {
        int v = b64_value(alphabet, text[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) { /* non-canonical: leftover bits must be zero */
        free(out);
        return NULL;
    }
    *outlen = o;
    return out;
}

char *crypto_base64_encode(const void *data, size_t len)
{
    return b64_encode(B64_STD, true, data, len);
}

uint8_t *crypto_base64_decode(const char *text, size_t *outlen)
{
    return b64_decode(B64_STD, true, text, outlen);
}

char *crypto_base64url_encode(const void *data, size_t len)
{
    return b64_encode(B64_URL, false, data, len);
}

uint8_t *crypto_base64url_decode(const char *text, size_t *outlen)
{
    return b64_decode(B64_URL, false, text, outlen);
}

void crypto_hex(const void *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *in = data;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

/* ------------------------------------------------------ hashes, MAC, random */

void crypto_sha256(const void *data, size_t len, uint8_t out[32])
{
    static const uint8_t empty[1] = {0};
    unsigned int outlen = 0;
    if (data == NULL) {
        data = empty;
    }
    if (EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) != 1 || outlen != 32) {
        /* Only on allocation failure inside OpenSSL: never return a digest
         * that is not one. */
        fprintf(stderr, "crypto_sha256: OpenSSL failure\n");
        abort();
    }
}

void crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t datalen,
                        uint8_t out[32])
{
    static const uint8_t empty[1] = {0};
    size_t outlen = 0;
    if (key == NULL) {
        key = empty;
        keylen = 0;
    }
    if (data == NULL) {
        data = empty;
        datalen = 0;
    }
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, keylen, data, datalen, out, 32,
                  &outlen) == NULL ||
        outlen != 32) {
        /* A MAC that silently comes back as garbage would be a forgery
         * oracle; this only happens when OpenSSL cannot allocate. */
        fprintf(stderr, "crypto_hmac_sha256: OpenSSL failure\n");
        abort();
    }
}

bool crypto_equal(const void *a, const void *b, size_t len)
{
    if (len == 0) {
        return true;
    }
    return CRYPTO_memcmp(a, b, len) == 0;
}

int crypto_random(void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        int chunk = len > (size_t)INT_MAX ? INT_MAX : (int)len;
        if (RAND_bytes(p, chunk) != 1) {
            return -1;
        }
        p += chunk;
        len -= (size_t)chunk;
    }
    return 0;
}

char *crypto_random_token(size_t nbytes)
{
    uint8_t *raw = malloc(nbytes + 1);
    if (raw == NULL) {
        return NULL;
    }
    char *token = NULL;
    if (crypto_random(raw, nbytes) == 0) {
        token = crypto_base64url_encode(raw, nbytes);
    }
    OPENSSL_cleanse(raw, nbytes + 1);
    free(raw);
    return token;
}

void crypto_free_secret(char *s)
{
    if (s == NULL) {
        return;
    }
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

/* ------------------------------------------------------------- AES-256-GCM */

int crypto_aes256gcm_encrypt(const uint8_t key[32], const uint8_t *iv, size_t ivlen,
                             const uint8_t *aad, size_t aadlen, const uint8_t *pt, size_t ptlen,
                             uint8_t *ct, uint8_t tag[16])
{
    int rc = -1;
    int outl = 0;
    EVP_CIPHER_CTX *ctx = NULL;

    if (key == NULL || iv == NULL || ivlen == 0 || ivlen > INT_MAX || aadlen > INT_MAX ||
        ptlen > INT_MAX || tag == NULL || (aadlen > 0 && aad == NULL) ||
        (ptlen > 0 && (pt == NULL || ct == NULL))) {
        return -1;
    }
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        goto out;
    }
    if (EVP_EncryptInit_ex2(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1) {
        goto out;
    }
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, (int)ivlen, NULL) != 1) {
        goto out;
    }
    if (EVP_EncryptInit_ex2(ctx, NULL, key, iv, NULL) != 1) {
        goto out;
    }
    if (aadlen > 0 && EVP_EncryptUpdate(ctx, NULL, &outl, aad, (int)aadlen) != 1) {
        goto out;
    }
    if (ptlen > 0) {
        if (EVP_EncryptUpdate(ctx, ct, &outl, pt, (int)ptlen) != 1 || (size_t)outl != ptlen) {
            goto out;
        }
    }
    uint8_t final_block[16];
    if (EVP_EncryptFinal_ex(ctx, final_block, &outl) != 1 || outl != 0) {
        goto out;
    }
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, GCM_TAG_LEN, tag) != 1) {
        goto out;
    }
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int crypto_aes256gcm_decrypt(const uint8_t key[32], const uint8_t *iv, size_t ivlen,
                             const uint8_t *aad, size_t aadlen, const uint8_t *ct, size_t ctlen,
                             const uint8_t tag[16], uint8_t *pt)
{
    int rc = -1;
    int outl = 0;
    uint8_t tagcopy[GCM_TAG_LEN];
    EVP_CIPHER_CTX *ctx = NULL;

    if (key == NULL || iv == NULL || ivlen == 0 || ivlen > INT_MAX || aadlen > INT_MAX ||
        ctlen > INT_MAX || tag == NULL || (aadlen > 0 && aad == NULL) ||
        (ctlen > 0 && (ct == NULL || pt == NULL))) {
        return -1;
    }
    memcpy(tagcopy, tag, GCM_TAG_LEN);
    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        goto out;
    }
    if (EVP_DecryptInit_ex2(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1) {
        goto out;
    }
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, (int)ivlen, NULL) != 1) {
        goto out;
    }
    if (EVP_DecryptInit_ex2(ctx, NULL, key, iv, NULL) != 1) {
        goto out;
    }
    if (aadlen > 0 && EVP_DecryptUpdate(ctx, NULL, &outl, aad, (int)aadlen) != 1) {
        goto out;
    }
    if (ctlen > 0) {
        if (EVP_DecryptUpdate(ctx, pt, &outl, ct, (int)ctlen) != 1 || (size_t)outl != ctlen) {
            goto out;
        }
    }
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, GCM_TAG_LEN, tagcopy) != 1) {
        goto out;
    }
    uint8_t final_block[16];
    if (EVP_DecryptFinal_ex(ctx, final_block, &outl) != 1) {
        goto out; /* authentication failed */
    }
    rc = 0;
out:
    if (rc != 0 && ctlen > 0 && pt != NULL) {
        OPENSSL_cleanse(pt, ctlen); /* never hand back unauthenticated plaintext */
    }
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

/* ---------------------------------------------------------------- keyring */

/* Decodes one base64 key (surrounding ASCII whitespace ignored, as Secrets
 * mounted from files often end in a newline). */
static int key_from_b64(const char *text, size_t textlen, crypto_key_t *key)
{
    while (textlen > 0 && (*text == ' ' || *text == '\t' || *text == '\n' || *text == '\r')) {
        text++;
        textlen--;
    }
    while (textlen > 0 && (text[textlen - 1] == ' ' || text[textlen - 1] == '\t' ||
                           text[textlen - 1] == '\n' || text[textlen - 1] == '\r')) {
        textlen--;
    }
    char *copy = strndup(text, textlen);
    if (copy == NULL) {
        return -1;
    }
    size_t rawlen = 0;
    uint8_t *raw = crypto_base64_decode(copy, &rawlen);
    OPENSSL_cleanse(copy, textlen);
    free(copy);
    if (raw == NULL) {
        return -1;
    }
    int rc = -1;
    if (rawlen == CRYPTO_KEY_LEN) {
        uint8_t digest[CRYPTO_SHA256_LEN];
        char hex[2 * CRYPTO_SHA256_LEN + 1];
        memcpy(key->key, raw, CRYPTO_KEY_LEN);
        crypto_sha256(key->key, CRYPTO_KEY_LEN, digest);
        crypto_hex(digest, sizeof(digest), hex);
        memcpy(key->kid, hex, KID_LEN);
        key->kid[KID_LEN] = '\0';
        rc = 0;
    }
    OPENSSL_cleanse(raw, rawlen);
    free(raw);
    return rc;
}

crypto_keyring_t *crypto_keyring_new(const char *current_b64, const char *old_b64_list, char *err,
                                     size_t errlen)
{
    crypto_keyring_t *kr = calloc(1, sizeof(*kr));
    if (kr == NULL) {
        errbuf_set(err, errlen, "out of memory");
        return NULL;
    }
    if (current_b64 == NULL || key_from_b64(current_b64, strlen(current_b64), &kr->current) != 0) {
        errbuf_set(err, errlen, "ENCRYPTION_KEY: must be standard base64 of exactly 32 bytes");
        goto fail;
    }
    if (old_b64_list != NULL && old_b64_list[0] != '\0') {
        size_t max = 1;
        for (const char *p = old_b64_list; *p != '\0'; p++) {
            if (*p == ',') {
                max++;
            }
        }
        kr->old = calloc(max, sizeof(*kr->old));
        if (kr->old == NULL) {
            errbuf_set(err, errlen, "out of memory");
            goto fail;
        }
        const char *item = old_b64_list;
        size_t index = 0;
        for (;;) {
            const char *comma = strchr(item, ',');
            size_t itemlen = comma != NULL ? (size_t)(comma - item) : strlen(item);
            size_t blank = strspn(item, " \t\r\n");
            index++;
            if (blank < itemlen) { /* skip empty items ("a,,b", trailing comma) */
                if (key_from_b64(item, itemlen, &kr->old[kr->nold]) != 0) {
                    errbuf_set(
                        err, errlen,
                        "ENCRYPTION_KEYS_OLD: item %zu must be standard base64 of exactly 32 "
                        "bytes",
                        index);
                    goto fail;
                }
                kr->nold++;
            }
            if (comma == NULL) {
                break;
            }
            item = comma + 1;
        }
    }
    return kr;
fail:
    crypto_keyring_free(kr);
    return NULL;
}

void crypto_keyring_free(crypto_keyring_t *kr)
{
    if (kr == NULL) {
        return;
    }
    if (kr->old != NULL) {
        OPENSSL_cleanse(kr->old, kr->nold * sizeof(*kr->old));
        free(kr->old);
    }
    OPENSSL_cleanse(kr, sizeof(*kr));
    free(kr);
}

/* ---------------------------------------------------------------- envelope */

#define ENVELOPE_V2 "v2"
#define ENVELOPE_BINDING_MAX 256

/* The AAD binds the version, the key id and (v2) the binding to the ciphertext:
 *   v1: "v1:<kid>"            (legacy: no binding; still opens, needs a re-seal)
 *   v2: "v2:<kid>:<binding>"  (the row the value belongs to)
 * Returns a new string or NULL. */
static char *envelope_aad(int version, const char *kid, const char *binding)
{
    size_t blen = version == 2 ? strlen(binding) : 0;
    size_t n = 3 + KID_LEN + (version == 2 ? 1 + blen : 0) + 1;
    char *aad = malloc(n);
    if (aad == NULL) {
        return NULL;
    }
    if (version == 2) {
        snprintf(aad, n, ENVELOPE_V2 ":%s:%s", kid, binding);
    } else {
        snprintf(aad, n, ENVELOPE_VERSION ":%s", kid);
    }
    return aad;
}

static bool binding_ok(const char *binding)
{
    return binding != NULL && binding[0] != '\0' && strlen(binding) <= ENVELOPE_BINDING_MAX;
}

/* version 1: no binding; version 2: binding required. */
static char *envelope_seal(const crypto_keyring_t *kr, const char *plaintext, int version,
                           const char *binding)
{
    if (kr == NULL || plaintext == NULL || (version == 2 && !binding_ok(binding))) {
        return NULL;
    }
    size_t ptlen = strlen(plaintext);
    if (ptlen > (size_t)INT_MAX - GCM_IV_LEN - GCM_TAG_LEN) {
        return NULL;
    }
    size_t bloblen = GCM_IV_LEN + ptlen + GCM_TAG_LEN;
    uint8_t *blob = malloc(bloblen);
    char *b64 = NULL;
    char *envelope = NULL;
    char *aad = NULL;
    if (blob == NULL) {
        return NULL;
    }
    if (crypto_random(blob, GCM_IV_LEN) != 0) {
        goto out;
    }
    aad = envelope_aad(version, kr->current.kid, binding);
    if (aad == NULL) {
        goto out;
    }
    if (crypto_aes256gcm_encrypt(kr->current.key, blob, GCM_IV_LEN, (const uint8_t *)aad,
                                 strlen(aad), (const uint8_t *)plaintext, ptlen, blob + GCM_IV_LEN,
                                 blob + GCM_IV_LEN + ptlen) != 0) {
        goto out;
    }
    b64 = crypto_base64url_encode(blob, bloblen);
    if (b64 == NULL) {
        goto out;
    }
    /* The stored form names the version and the key, never the binding. */
    size_t envlen = 3 + KID_LEN + 1 + strlen(b64) + 1;
    envelope = malloc(envlen);
    if (envelope != NULL) {
        snprintf(envelope, envlen, "%s:%s:%s", version == 2 ? ENVELOPE_V2 : ENVELOPE_VERSION,
                 kr->current.kid, b64);
    }
out:
    free(aad);
    free(b64);
    free(blob);
    return envelope;
}

char *crypto_envelope_seal(const crypto_keyring_t *kr, const char *plaintext)
{
    return envelope_seal(kr, plaintext, 1, NULL);
}

char *crypto_envelope_seal_bound(const crypto_keyring_t *kr, const char *plaintext,
                                 const char *binding)
{
    return envelope_seal(kr, plaintext, 2, binding);
}

typedef struct {
    int version;
    char kid[KID_LEN + 1];
    uint8_t *blob; /* iv || ct || tag */
    size_t bloblen;
} parsed_envelope_t;

static int envelope_parse(const char *envelope, parsed_envelope_t *pe)
{
    memset(pe, 0, sizeof(*pe));
    if (envelope == NULL) {
        return -1;
    }
    if (strncmp(envelope, ENVELOPE_VERSION ":", 3) == 0) {
        pe->version = 1;
    } else if (strncmp(envelope, ENVELOPE_V2 ":", 3) == 0) {
        pe->version = 2;
    } else {
        return -1;
    }
    const char *kid = envelope + 3;
    for (size_t i = 0; i < KID_LEN; i++) {
        char c = kid[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return -1;
        }
    }
    if (kid[KID_LEN] != ':') {
        return -1;
    }
    memcpy(pe->kid, kid, KID_LEN);
    pe->kid[KID_LEN] = '\0';
    pe->blob = crypto_base64url_decode(kid + KID_LEN + 1, &pe->bloblen);
    if (pe->blob == NULL) {
        return -1;
    }
    if (pe->bloblen < GCM_IV_LEN + GCM_TAG_LEN) {
        free(pe->blob);
        pe->blob = NULL;
        return -1;
    }
    return 0;
}

/* Plaintext (caller frees) when `key` opens the parsed envelope, else NULL. */
static char *envelope_try(const crypto_key_t *key, const parsed_envelope_t *pe, const char *binding)
{
    if (strcmp(key->kid, pe->kid) != 0) {
        return NULL;
    }
    size_t ctlen = pe->bloblen - GCM_IV_LEN - GCM_TAG_LEN;
    char *aad = envelope_aad(pe->version, pe->kid, binding);
    char *pt = malloc(ctlen + 1);
    if (pt == NULL || aad == NULL) {
        free(aad);
        free(pt);
        return NULL;
    }
    int rc = crypto_aes256gcm_decrypt(key->key, pe->blob, GCM_IV_LEN, (const uint8_t *)aad,
                                      strlen(aad), pe->blob + GCM_IV_LEN, ctlen,
                                      pe->blob + GCM_IV_LEN + ctlen, (uint8_t *)pt);
    free(aad);
    if (rc != 0) {
        free(pt);
        return NULL;
    }
    pt[ctlen] = '\0';
    if (memchr(pt, '\0', ctlen) != NULL) { /* seal() never produces this */
        OPENSSL_cleanse(pt, ctlen);
        free(pt);
        return NULL;
    }
    return pt;
}

/* Opens the envelope; *used_old tells whether an old key was needed, *version
 * the format. A v2 envelope needs the binding it was sealed with; a v1 one
 * ignores it. */
static char *envelope_open(const crypto_keyring_t *kr, const char *envelope, const char *binding,
                           bool *used_old, int *version)
{
    parsed_envelope_t pe;
    char *pt = NULL;
    *used_old = false;
    *version = 0;
    if (kr == NULL || envelope_parse(envelope, &pe) != 0) {
        return NULL;
    }
    *version = pe.version;
    if (pe.version == 2 && !binding_ok(binding)) {
        free(pe.blob);
        return NULL;
    }
    pt = envelope_try(&kr->current, &pe, binding);
    for (size_t i = 0; pt == NULL && i < kr->nold; i++) {
        pt = envelope_try(&kr->old[i], &pe, binding);
        if (pt != NULL) {
            *used_old = true;
        }
    }
    free(pe.blob);
    return pt;
}

char *crypto_envelope_open(const crypto_keyring_t *kr, const char *envelope)
{
    bool used_old = false;
    int version = 0;
    return envelope_open(kr, envelope, NULL, &used_old, &version);
}

char *crypto_envelope_open_bound(const crypto_keyring_t *kr, const char *envelope,
                                 const char *binding)
{
    bool used_old = false;
    int version = 0;
    return envelope_open(kr, envelope, binding, &used_old, &version);
}

bool crypto_envelope_needs_rotation(const crypto_keyring_t *kr, const char *envelope)
{
    bool used_old = false;
    int version = 0;
    char *pt = envelope_open(kr, envelope, NULL, &used_old, &version);
    if (pt == NULL) {
        return false; /* malformed or unknown key: nothing a re-encrypt can do */
    }
    OPENSSL_cleanse(pt, strlen(pt));
    free(pt);
    return used_old;
}

bool crypto_envelope_needs_reseal(const crypto_keyring_t *kr, const char *envelope,
                                  const char *binding)
{
    bool used_old = false;
    int version = 0;
    char *pt = envelope_open(kr, envelope, binding, &used_old, &version);
    if (pt == NULL) {
        return false; /* malformed, another row's or an unknown key: a re-seal cannot help */
    }
    OPENSSL_cleanse(pt, strlen(pt));
    free(pt);
    return used_old || version != 2;
}
