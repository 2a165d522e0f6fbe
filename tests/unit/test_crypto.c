/*
 * Unit tests for common/crypto: published vectors (RFC 4231, the GCM spec,
 * FIPS 180-2, RFC 4648) and the envelope's contract.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decodes hex into a new buffer (test helper; asserts on bad hex). */
static uint8_t *unhex(const char *hex, size_t *len)
{
    size_t n = strlen(hex);
    assert_int_equal(n % 2, 0);
    uint8_t *out = malloc(n / 2 + 1);
    assert_non_null(out);
    for (size_t i = 0; i < n / 2; i++) {
        unsigned int byte;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &byte), 1);
        out[i] = (uint8_t)byte;
    }
    *len = n / 2;
    return out;
}

static void assert_hex_equal(const uint8_t *data, size_t len, const char *expect)
{
    char *hex = malloc(2 * len + 1);
    assert_non_null(hex);
    crypto_hex(data, len, hex);
    assert_string_equal(hex, expect);
    free(hex);
}

/* ------------------------------------------------------------ SHA-256 */

static void test_sha256_vectors(void **state)
{
    uint8_t out[32];
    crypto_sha256("abc", 3, out);
    assert_hex_equal(out, 32, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    crypto_sha256("", 0, out);
    assert_hex_equal(out, 32, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    crypto_sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, out);
    assert_hex_equal(out, 32, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

/* ------------------------------------------------- HMAC-SHA256 RFC 4231 */

typedef struct {
    const char *name;
    const char *key_hex;
    const char *data_hex;
    const char *mac_hex; /* test case 5 publishes the first 128 bits only */
} hmac_vector_t;

#define AA131                                                                                      \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static const hmac_vector_t HMAC_VECTORS[] = {
    {"4.2 case 1", "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "4869205468657265",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
    {"4.3 case 2", "4a656665", "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
    {"4.4 case 3", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
     "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
     "dddddddddd",
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
    {"4.5 case 4", "0102030405060708090a0b0c0d0e0f10111213141516171819",
     "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"
     "cdcdcdcdcd",
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
    {"4.6 case 5", "0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c",
     "546573742057697468205472756e636174696f6e", "a3b6167473100ee06e0c796c2955552b"},
    {"4.7 case 6", AA131,
     "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368"
     "204b6579204669727374",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
    {"4.8 case 7", AA131,
     "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73697a"
     "65206b657920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e20546865"
     "206b6579206e6565647320746f20626520686173686564206265666f7265206265696e672075736564206279"
     "2074686520484d414320616c676f726974686d2e",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
};

static void test_hmac_sha256_rfc4231(void **state)
{
    for (size_t i = 0; i < sizeof(HMAC_VECTORS) / sizeof(HMAC_VECTORS[0]); i++) {
        const hmac_vector_t *v = &HMAC_VECTORS[i];
        size_t keylen;
        size_t datalen;
        uint8_t *key = unhex(v->key_hex, &keylen);
        uint8_t *data = unhex(v->data_hex, &datalen);
        uint8_t mac[32];
        crypto_hmac_sha256(key, keylen, data, datalen, mac);
        size_t want = strlen(v->mac_hex) / 2;
        print_message("HMAC %s\n", v->name);
        assert_hex_equal(mac, want, v->mac_hex);
        free(key);
        free(data);
    }
    /* Data given as text gives the same MAC as case 2. */
    uint8_t mac[32];
    crypto_hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac);
    assert_hex_equal(mac, 32, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

/* --------------------------------------------- AES-256-GCM (GCM spec) */

typedef struct {
    const char *name;
    const char *key, *iv, *pt, *aad, *ct, *tag;
} gcm_vector_t;

#define GCM_K15 "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"
#define GCM_P15                                                                                    \
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6" \
    "b5"                                                                                           \
    "25b16aedf5aa0de657ba637b391aafd255"
#define GCM_P16                                                                                    \
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6" \
    "b5"                                                                                           \
    "25b16aedf5aa0de657ba637b39"
#define GCM_A16 "feedfacedeadbeeffeedfacedeadbeefabaddad2"

/* McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases
 * 13-18 (256-bit keys). 13-16 use the 96-bit IV; 17 and 18 the 64-bit and
 * 480-bit IVs that go through GHASH. */
static const gcm_vector_t GCM_VECTORS[] = {
    {"case 13", "0000000000000000000000000000000000000000000000000000000000000000",
     "000000000000000000000000", "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"},
    {"case 14", "0000000000000000000000000000000000000000000000000000000000000000",
     "000000000000000000000000", "00000000000000000000000000000000", "",
     "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
    {"case 15", GCM_K15, "cafebabefacedbaddecaf888", GCM_P15, "",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056"
     "828838c5f61e6393ba7a0abcc9f662898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"},
    {"case 16", GCM_K15, "cafebabefacedbaddecaf888", GCM_P16, GCM_A16,
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056"
     "828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
    {"case 17", GCM_K15, "cafebabefacedbad", GCM_P16, GCM_A16,
     "c3762df1ca787d32ae47c13bf19844cbaf1ae14d0b976afac52ff7d79bba9de0feb582d33934a4f0954cc2363b"
     "c73f7862ac430e64abe499f47c9b1f",
     "3a337dbf46a792c45e454913fe2ea8f2"},
    {"case 18", GCM_K15,
     "9313225df88406e555909c5aff5269aa6a7a9538534f7da1e4c303d2a318a728c3c0c95156809539fcf0e242"
     "9a6b525416aedbf5a0de6a57a637b39b",
     GCM_P16, GCM_A16,
     "5a8def2f0c9e53f1f75d7853659e2a20eeb2b22aafde6419a058ab4f6f746bf40fc0c3b780f244452da3ebf1c5"
     "d82cdea2418997200ef82e44ae7e3f",
     "a44a8266ee1c8eb0c8b5d4cf5ae9f19a"},
};

static void test_aes256gcm_vectors(void **state)
{
    for (size_t i = 0; i < sizeof(GCM_VECTORS) / sizeof(GCM_VECTORS[0]); i++) {
        const gcm_vector_t *v = &GCM_VECTORS[i];
        size_t keylen, ivlen, ptlen, aadlen, ctlen, taglen;
        uint8_t *key = unhex(v->key, &keylen);
        uint8_t *iv = unhex(v->iv, &ivlen);
        uint8_t *pt = unhex(v->pt, &ptlen);
        uint8_t *aad = unhex(v->aad, &aadlen);
        uint8_t *ct = unhex(v->ct, &ctlen);
        uint8_t *tag = unhex(v->tag, &taglen);
        uint8_t *out = malloc(ptlen + 1);
        uint8_t *back = malloc(ctlen + 1);
        uint8_t outtag[16];
        assert_non_null(out);
        assert_non_null(back);
        print_message("GCM %s\n", v->name);
        assert_int_equal(keylen, 32);
        assert_int_equal(taglen, 16);
        assert_int_equal(ptlen, ctlen);

        assert_int_equal(
            crypto_aes256gcm_encrypt(key, iv, ivlen, aad, aadlen, pt, ptlen, out, outtag), 0);
        assert_memory_equal(out, ct, ctlen);
        assert_memory_equal(outtag, tag, 16);

        assert_int_equal(
            crypto_aes256gcm_decrypt(key, iv, ivlen, aad, aadlen, ct, ctlen, tag, back), 0);
        assert_memory_equal(back, pt, ptlen);

        /* A flipped tag bit, ciphertext bit or AAD bit is refused. */
        tag[0] ^= 0x01;
        assert_int_equal(
            crypto_aes256gcm_decrypt(key, iv, ivlen, aad, aadlen, ct, ctlen, tag, back), -1);
        tag[0] ^= 0x01;
        if (ctlen > 0) {
            ct[ctlen - 1] ^= 0x80;
            assert_int_equal(
                crypto_aes256gcm_decrypt(key, iv, ivlen, aad, aadlen, ct, ctlen, tag, back), -1);
            ct[ctlen - 1] ^= 0x80;
        }
        if (aadlen > 0) {
            aad[0] ^= 0x02;
            assert_int_equal(
                crypto_aes256gcm_decrypt(key, iv, ivlen, aad, aadlen, ct, ctlen, tag, back), -1);
            aad[0] ^= 0x02;
        }
        free(key);
        free(iv);
        free(pt);
        free(aad);
        free(ct);
        free(tag);
        free(out);
        free(back);
    }
}

static void test_aes256gcm_bad_args(void **state)
{
    uint8_t key[32] = {0};
    uint8_t iv[12] = {0};
    uint8_t tag[16];
    uint8_t buf[4] = {1, 2, 3, 4};
    uint8_t out[4];
    assert_int_equal(crypto_aes256gcm_encrypt(key, iv, 0, NULL, 0, buf, 4, out, tag), -1);
    assert_int_equal(crypto_aes256gcm_encrypt(key, NULL, 12, NULL, 0, buf, 4, out, tag), -1);
    assert_int_equal(crypto_aes256gcm_decrypt(key, iv, 12, NULL, 0, buf, 4, NULL, out), -1);
}

/* ------------------------------------------------ base64 (RFC 4648 §10) */

typedef struct {
    const char *plain;
    const char *b64;
    const char *b64url;
} b64_vector_t;

static const b64_vector_t B64_VECTORS[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
};

static void test_base64_rfc4648(void **state)
{
    for (size_t i = 0; i < sizeof(B64_VECTORS) / sizeof(B64_VECTORS[0]); i++) {
        const b64_vector_t *v = &B64_VECTORS[i];
        size_t plen = strlen(v->plain);
        char *enc = crypto_base64_encode(v->plain, plen);
        assert_non_null(enc);
        assert_string_equal(enc, v->b64);
        free(enc);
        enc = crypto_base64url_encode(v->plain, plen);
        assert_non_null(enc);
        assert_string_equal(enc, v->b64url);
        free(enc);

        size_t outlen = 999;
        uint8_t *dec = crypto_base64_decode(v->b64, &outlen);
        assert_non_null(dec);
        assert_int_equal(outlen, plen);
        assert_memory_equal(dec, v->plain, plen);
        free(dec);
        /* base64url: padding optional on input */
        dec = crypto_base64url_decode(v->b64url, &outlen);
        assert_non_null(dec);
        assert_int_equal(outlen, plen);
        assert_memory_equal(dec, v->plain, plen);
        free(dec);
        dec = crypto_base64url_decode(v->b64, &outlen);
        assert_non_null(dec);
        assert_int_equal(outlen, plen);
        assert_memory_equal(dec, v->plain, plen);
        free(dec);
    }
}

static void test_base64_alphabets(void **state)
{
    static const uint8_t bytes[] = {0xfb, 0xff, 0xbf};
    char *std = crypto_base64_encode(bytes, sizeof(bytes));
    char *url = crypto_base64url_encode(bytes, sizeof(bytes));
    assert_string_equal(std, "+/+/");
    assert_string_equal(url, "-_-_");
    size_t n;
    uint8_t *dec = crypto_base64url_decode(url, &n);
    assert_non_null(dec);
    assert_int_equal(n, 3);
    assert_memory_equal(dec, bytes, 3);
    free(dec);
    /* Each alphabet refuses the other's characters. */
    assert_null(crypto_base64_decode(url, &n));
    assert_null(crypto_base64url_decode(std, &n));
    free(std);
    free(url);
}

static void test_base64_malformed(void **state)
{
    static const char *const bad_std[] = {
        "Zg",       /* missing padding (standard requires it) */
        "Zg=",      /* wrong padding length */
        "Zg===",    /* too much padding */
        "Z",        /* impossible length */
        "Zm9v!",    /* bad character */
        "Zm 9v",    /* whitespace */
        "Zm9v\n",   /* trailing newline */
        "Zg==Zg==", /* padding in the middle */
        "=Zg=",     /* padding first */
        "Zh==",     /* non-zero trailing bits */
        "Zm9vYmF",  /* length 7 */
        "====",     /* only padding */
    };
    static const char *const bad_url[] = {
        "Z", "Zm9vY", "Zg=", "Zg===", "Zm9v+", "Zm9v/", "Zh", "Zm 9v", "Zg==Zg",
    };
    size_t n;
    for (size_t i = 0; i < sizeof(bad_std) / sizeof(bad_std[0]); i++) {
        print_message("base64 bad: %s\n", bad_std[i]);
        assert_null(crypto_base64_decode(bad_std[i], &n));
    }
    for (size_t i = 0; i < sizeof(bad_url) / sizeof(bad_url[0]); i++) {
        print_message("base64url bad: %s\n", bad_url[i]);
        assert_null(crypto_base64url_decode(bad_url[i], &n));
    }
    assert_null(crypto_base64_decode(NULL, &n));
}

static void test_base64_roundtrip_binary(void **state)
{
    uint8_t data[257];
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t)(i * 7 + 3);
    }
    for (size_t len = 0; len <= sizeof(data); len += 1) {
        char *enc = crypto_base64_encode(data, len);
        char *uenc = crypto_base64url_encode(data, len);
        size_t n1, n2;
        uint8_t *d1 = crypto_base64_decode(enc, &n1);
        uint8_t *d2 = crypto_base64url_decode(uenc, &n2);
        assert_non_null(d1);
        assert_non_null(d2);
        assert_int_equal(n1, len);
        assert_int_equal(n2, len);
        assert_memory_equal(d1, data, len);
        assert_memory_equal(d2, data, len);
        assert_null(strchr(uenc, '='));
        free(enc);
        free(uenc);
        free(d1);
        free(d2);
    }
}

static void test_hex(void **state)
{
    char out[9];
    static const uint8_t bytes[] = {0x00, 0xab, 0x7f, 0xf0};
    crypto_hex(bytes, 4, out);
    assert_string_equal(out, "00ab7ff0");
    crypto_hex(bytes, 0, out);
    assert_string_equal(out, "");
}

/* ------------------------------------------------------- random, equal */

static void test_random_token(void **state)
{
    static const size_t sizes[] = {0, 1, 2, 3, 16, 32, 33, 64};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t nbytes = sizes[i];
        char *token = crypto_random_token(nbytes);
        assert_non_null(token);
        assert_int_equal(strlen(token), (nbytes * 4 + 2) / 3); /* unpadded base64 */
        assert_int_equal(
            strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
            strlen(token));
        size_t n;
        uint8_t *raw = crypto_base64url_decode(token, &n);
        assert_non_null(raw);
        assert_int_equal(n, nbytes);
        free(raw);
        free(token);
    }
    /* 200 tokens of 32 bytes: all different. */
    enum { N = 200 };
    char *tokens[N];
    for (size_t i = 0; i < N; i++) {
        tokens[i] = crypto_random_token(32);
        assert_non_null(tokens[i]);
        for (size_t j = 0; j < i; j++) {
            assert_string_not_equal(tokens[i], tokens[j]);
        }
    }
    for (size_t i = 0; i < N; i++) {
        free(tokens[i]);
    }
    uint8_t a[32] = {0};
    uint8_t b[32] = {0};
    assert_int_equal(crypto_random(a, sizeof(a)), 0);
    assert_int_equal(crypto_random(b, sizeof(b)), 0);
    assert_memory_not_equal(a, b, sizeof(a));
}

static void test_equal(void **state)
{
    uint8_t a[64];
    uint8_t b[64];
    memset(a, 0x5a, sizeof(a));
    memset(b, 0x5a, sizeof(b));
    assert_true(crypto_equal(a, b, sizeof(a)));
    assert_true(crypto_equal(a, b, 0));
    for (size_t i = 0; i < sizeof(a); i++) { /* a difference anywhere counts */
        b[i] ^= 0x01;
        assert_false(crypto_equal(a, b, sizeof(a)));
        b[i] ^= 0x01;
    }
    b[63] ^= 0x80;
    assert_true(crypto_equal(a, b, 63));
}

/* ------------------------------------------------------------- envelope */

/* Three distinct 32-byte keys, base64. */
static char *make_key_b64(uint8_t fill)
{
    uint8_t key[32];
    for (size_t i = 0; i < sizeof(key); i++) {
        key[i] = (uint8_t)(fill + i);
    }
    return crypto_base64_encode(key, sizeof(key));
}

static void test_keyring_bad_keys(void **state)
{
    char err[256];
    char *good = make_key_b64(1);
    char *short_key = crypto_base64_encode("0123456789abcdef0123456789abcde", 31);
    static const char *const bad_current[] = {"", "not base64!", "Zm9vYmFy"};
    for (size_t i = 0; i < sizeof(bad_current) / sizeof(bad_current[0]); i++) {
        err[0] = '\0';
        assert_null(crypto_keyring_new(bad_current[i], NULL, err, sizeof(err)));
        assert_true(strncmp(err, "ENCRYPTION_KEY:", 15) == 0);
    }
    assert_null(crypto_keyring_new(short_key, NULL, err, sizeof(err)));
    assert_null(crypto_keyring_new(NULL, NULL, err, sizeof(err)));

    char list[512];
    snprintf(list, sizeof(list), "%s,%s", good, short_key);
    assert_null(crypto_keyring_new(good, list, err, sizeof(err)));
    assert_true(strncmp(err, "ENCRYPTION_KEYS_OLD: item 2", 27) == 0);
    /* The error never echoes key material. */
    assert_null(strstr(err, short_key));

    /* Empty items, spaces and a trailing newline are tolerated. */
    snprintf(list, sizeof(list), " %s ,, %s\n,", good, good);
    crypto_keyring_t *kr = crypto_keyring_new(good, list, err, sizeof(err));
    assert_non_null(kr);
    crypto_keyring_free(kr);
    kr = crypto_keyring_new(good, "", err, sizeof(err));
    assert_non_null(kr);
    crypto_keyring_free(kr);
    free(good);
    free(short_key);
}

static void test_envelope_roundtrip(void **state)
{
    char err[256];
    char *key = make_key_b64(10);
    crypto_keyring_t *kr = crypto_keyring_new(key, NULL, err, sizeof(err));
    assert_non_null(kr);

    static const char *const plaintexts[] = {"", "ya29.a0AfH6SMBx-refresh", "1//0gLongRefreshToken",
                                             "unicode: \xc3\xa9t\xc3\xa9 \xe2\x9c\x93"};
    for (size_t i = 0; i < sizeof(plaintexts) / sizeof(plaintexts[0]); i++) {
        char *env = crypto_envelope_seal(kr, plaintexts[i]);
        assert_non_null(env);
        /* "v1:<8 hex>:<base64url>" and the plaintext is not visible. */
        assert_true(strncmp(env, "v1:", 3) == 0);
        assert_int_equal(strspn(env + 3, "0123456789abcdef"), 8);
        assert_int_equal(env[11], ':');
        assert_null(strchr(env + 12, '='));
        if (plaintexts[i][0] != '\0') {
            assert_null(strstr(env, plaintexts[i]));
        }
        char *back = crypto_envelope_open(kr, env);
        assert_non_null(back);
        assert_string_equal(back, plaintexts[i]);
        assert_false(crypto_envelope_needs_rotation(kr, env));
        free(back);
        free(env);
    }

    /* The kid is the first 8 hex chars of SHA-256(key). */
    size_t rawlen;
    uint8_t *raw = crypto_base64_decode(key, &rawlen);
    uint8_t digest[32];
    char hex[65];
    crypto_sha256(raw, rawlen, digest);
    crypto_hex(digest, 32, hex);
    char *env = crypto_envelope_seal(kr, "x");
    assert_memory_equal(env + 3, hex, 8);

    /* Two seals of the same plaintext differ (random IV). */
    char *env2 = crypto_envelope_seal(kr, "x");
    assert_string_not_equal(env, env2);
    free(env2);
    free(env);
    free(raw);
    crypto_keyring_free(kr);
    free(key);
}

static void test_envelope_tamper(void **state)
{
    char err[256];
    char *key = make_key_b64(20);
    crypto_keyring_t *kr = crypto_keyring_new(key, NULL, err, sizeof(err));
    assert_non_null(kr);
    char *env = crypto_envelope_seal(kr, "refresh-token-value");
    assert_non_null(env);
    size_t len = strlen(env);

    /* Flip every byte of the body in turn (keeping it base64url): never opens. */
    for (size_t i = 12; i < len; i++) {
        char *bad = strdup(env);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        char *pt = crypto_envelope_open(kr, bad);
        assert_null(pt);
        assert_false(crypto_envelope_needs_rotation(kr, bad));
        free(bad);
    }
    /* Flip one bit of the decoded ciphertext, re-encode: refused. */
    size_t bloblen;
    uint8_t *blob = crypto_base64url_decode(env + 12, &bloblen);
    assert_non_null(blob);
    blob[12] ^= 0x01;
    char *body = crypto_base64url_encode(blob, bloblen);
    char forged[512];
    snprintf(forged, sizeof(forged), "%.12s%s", env, body);
    assert_null(crypto_envelope_open(kr, forged));
    free(body);
    free(blob);

    /* A different kid in the header is refused even with the right key. */
    char *relabeled = strdup(env);
    relabeled[3] = relabeled[3] == '0' ? '1' : '0';
    assert_null(crypto_envelope_open(kr, relabeled));
    free(relabeled);

    static const char *const malformed[] = {"",
                                            "v1:",
                                            "v2:00000000:AAAA",
                                            "v1:0000000:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                            "v1:ZZZZZZZZ:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                            "v1:00000000:AAAA",
                                            "v1:00000000:!!!!",
                                            "plaintext-token"};
    for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
        assert_null(crypto_envelope_open(kr, malformed[i]));
        assert_false(crypto_envelope_needs_rotation(kr, malformed[i]));
    }
    assert_null(crypto_envelope_open(kr, NULL));
    assert_null(crypto_envelope_open(NULL, env));
    free(env);
    crypto_keyring_free(kr);
    free(key);
}

static void test_envelope_wrong_key_and_rotation(void **state)
{
    char err[256];
    char *key_a = make_key_b64(30);
    char *key_b = make_key_b64(40);
    char *key_c = make_key_b64(50);

    crypto_keyring_t *ring_a = crypto_keyring_new(key_a, NULL, err, sizeof(err));
    assert_non_null(ring_a);
    char *sealed_a = crypto_envelope_seal(ring_a, "sealed under A");
    assert_non_null(sealed_a);

    /* B alone cannot open it. */
    crypto_keyring_t *ring_b = crypto_keyring_new(key_b, NULL, err, sizeof(err));
    assert_non_null(ring_b);
    assert_null(crypto_envelope_open(ring_b, sealed_a));
    assert_false(crypto_envelope_needs_rotation(ring_b, sealed_a));

    /* Rotated: B current, A old (after C). Opens, and needs rotation. */
    char old_list[256];
    snprintf(old_list, sizeof(old_list), "%s,%s", key_c, key_a);
    crypto_keyring_t *rotated = crypto_keyring_new(key_b, old_list, err, sizeof(err));
    assert_non_null(rotated);
    char *pt = crypto_envelope_open(rotated, sealed_a);
    assert_non_null(pt);
    assert_string_equal(pt, "sealed under A");
    free(pt);
    assert_true(crypto_envelope_needs_rotation(rotated, sealed_a));

    /* Re-sealed under the rotated ring: current key, no rotation needed, and
     * A's ring cannot open it. */
    char *resealed = crypto_envelope_seal(rotated, "sealed under A");
    assert_false(crypto_envelope_needs_rotation(rotated, resealed));
    pt = crypto_envelope_open(rotated, resealed);
    assert_non_null(pt);
    free(pt);
    assert_null(crypto_envelope_open(ring_a, resealed));
    assert_false(crypto_envelope_needs_rotation(ring_a, resealed));

    free(resealed);
    free(sealed_a);
    crypto_keyring_free(ring_a);
    crypto_keyring_free(ring_b);
    crypto_keyring_free(rotated);
    free(key_a);
    free(key_b);
    free(key_c);
}

/* v2: the binding (a user id) is authenticated; v1 still opens and asks for a
 * re-seal; a v1 prefix on a v2 blob (a downgrade) does not open. */
static void test_envelope_bound(void **state)
{
    (void)state;
    char err[256];
    char *key_a = make_key_b64(60);
    char *key_b = make_key_b64(70);
    crypto_keyring_t *ring = crypto_keyring_new(key_a, NULL, err, sizeof(err));
    assert_non_null(ring);
    const char *u1 = "6f1c2a7e-0000-4000-8000-000000000001";
    const char *u2 = "6f1c2a7e-0000-4000-8000-000000000002";

    char *sealed = crypto_envelope_seal_bound(ring, "ya29.secret", u1);
    assert_non_null(sealed);
    assert_int_equal(strncmp(sealed, "v2:", 3), 0);
    assert_null(strstr(sealed, u1)); /* the binding is not stored */
    char *pt = crypto_envelope_open_bound(ring, sealed, u1);
    assert_non_null(pt);
    assert_string_equal(pt, "ya29.secret");
    free(pt);
    assert_false(crypto_envelope_needs_reseal(ring, sealed, u1));
    /* another row's id, none, the unbound API: no */
    assert_null(crypto_envelope_open_bound(ring, sealed, u2));
    assert_false(crypto_envelope_needs_reseal(ring, sealed, u2));
    assert_null(crypto_envelope_open_bound(ring, sealed, NULL));
    assert_null(crypto_envelope_open_bound(ring, sealed, ""));
    assert_null(crypto_envelope_open(ring, sealed));
    /* relabelled v1: the AAD differs, no */
    char *down = strdup(sealed);
    down[1] = '1';
    assert_null(crypto_envelope_open_bound(ring, down, u1));
    assert_null(crypto_envelope_open(ring, down));
    free(down);
    assert_null(crypto_envelope_seal_bound(ring, "x", NULL));
    assert_null(crypto_envelope_seal_bound(ring, "x", ""));

    /* legacy v1: opens for any binding, needs a re-seal */
    char *legacy = crypto_envelope_seal(ring, "1//refresh");
    pt = crypto_envelope_open_bound(ring, legacy, u2);
    assert_non_null(pt);
    assert_string_equal(pt, "1//refresh");
    free(pt);
    assert_true(crypto_envelope_needs_reseal(ring, legacy, u2));

    /* v2 under an old key: opens, needs a re-seal */
    crypto_keyring_t *rotated = crypto_keyring_new(key_b, key_a, err, sizeof(err));
    assert_non_null(rotated);
    pt = crypto_envelope_open_bound(rotated, sealed, u1);
    assert_non_null(pt);
    free(pt);
    assert_true(crypto_envelope_needs_reseal(rotated, sealed, u1));

    free(legacy);
    free(sealed);
    crypto_keyring_free(ring);
    crypto_keyring_free(rotated);
    free(key_a);
    free(key_b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_hmac_sha256_rfc4231),
        cmocka_unit_test(test_aes256gcm_vectors),
        cmocka_unit_test(test_aes256gcm_bad_args),
        cmocka_unit_test(test_base64_rfc4648),
        cmocka_unit_test(test_base64_alphabets),
        cmocka_unit_test(test_base64_malformed),
        cmocka_unit_test(test_base64_roundtrip_binary),
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_random_token),
        cmocka_unit_test(test_equal),
        cmocka_unit_test(test_keyring_bad_keys),
        cmocka_unit_test(test_envelope_roundtrip),
        cmocka_unit_test(test_envelope_tamper),
        cmocka_unit_test(test_envelope_wrong_key_and_rotation),
        cmocka_unit_test(test_envelope_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
