/*
 * crypto — OpenSSL helpers: the token envelope, HMAC, hashes, encodings.
 *
 * Envelope (stored Drive tokens): "v2:<kid>:<base64url(iv12 || ciphertext || tag16)>"
 * AES-256-GCM; the key id <kid> is the first 8 hex chars of SHA-256(key). The
 * additional authenticated data is "v2:<kid>:<binding>", where the binding names
 * the row the value belongs to (drive_auth, sign-in: the user's id, users.id), so a
 * blob opens only with the key it names and only for the row it was sealed for:
 * a token copied into another user's row does not open. The legacy "v1:<kid>:..."
 * form (AAD "v1:<kid>", no binding) still opens with the *_bound functions, and
 * crypto_envelope_needs_reseal() says it must be re-sealed as v2. Decryption tries the current key
 * and then every old key (ENCRYPTION_KEYS_OLD); crypto_envelope_needs_rotation() tells a re-encrypt
 * pass which stored values to rewrite under the current key.
 */
#ifndef CA_CRYPTO_H
#define CA_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRYPTO_KEY_LEN 32
#define CRYPTO_SHA256_LEN 32

typedef struct crypto_keyring crypto_keyring_t;

/* current_b64: base64 of 32 bytes; old_b64_list: comma list of the same or
 * NULL/"" . Returns NULL and fills err on a bad key. Caller frees. */
crypto_keyring_t *crypto_keyring_new(const char *current_b64, const char *old_b64_list, char *err,
                                     size_t errlen);
void crypto_keyring_free(crypto_keyring_t *kr);

/* Returns a new NUL-terminated envelope string; caller frees. NULL on error. */
char *crypto_envelope_seal(const crypto_keyring_t *kr, const char *plaintext);
/* Returns the new plaintext (caller frees), or NULL when the envelope is
 * malformed, tampered with, or sealed with a key the ring does not hold. */
char *crypto_envelope_open(const crypto_keyring_t *kr, const char *envelope);
/* True when the envelope was sealed with an old key (re-encrypt it). */
bool crypto_envelope_needs_rotation(const crypto_keyring_t *kr, const char *envelope);

/* v2, bound to `binding` (1..256 bytes, e.g. the owner row's id): the stored
 * tokens. crypto_envelope_seal/open above are the legacy unbound v1 form. */
char *crypto_envelope_seal_bound(const crypto_keyring_t *kr, const char *plaintext,
                                 const char *binding);
/* Opens a v2 envelope sealed for `binding`, or a legacy v1 one (any binding).
 * NULL when malformed, tampered with, sealed for another binding, or under a
 * key the ring does not hold. */
char *crypto_envelope_open_bound(const crypto_keyring_t *kr, const char *envelope,
                                 const char *binding);
/* True when the envelope opens for `binding` but is v1 or under an old key:
 * re-seal it with crypto_envelope_seal_bound (drive_auth_rekey does). */
bool crypto_envelope_needs_reseal(const crypto_keyring_t *kr, const char *envelope,
                                  const char *binding);

/* Raw AES-256-GCM (for the NIST vectors and the envelope). Returns 0 or -1. */
__attribute__((warn_unused_result)) int crypto_aes256gcm_encrypt(const uint8_t key[32],
                                                                 const uint8_t *iv, size_t ivlen,
                                                                 const uint8_t *aad, size_t aadlen,
                                                                 const uint8_t *pt, size_t ptlen,
                                                                 uint8_t *ct, uint8_t tag[16]);
__attribute__((warn_unused_result)) int
crypto_aes256gcm_decrypt(const uint8_t key[32], const uint8_t *iv, size_t ivlen, const uint8_t *aad,
                         size_t aadlen, const uint8_t *ct, size_t ctlen, const uint8_t tag[16],
                         uint8_t *pt);

void crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t datalen,
                        uint8_t out[32]);
void crypto_sha256(const void *data, size_t len, uint8_t out[32]);

/* Constant-time equality of two buffers of the same length. */
bool crypto_equal(const void *a, const void *b, size_t len);

/* Fills buf with cryptographically random bytes. Returns 0 or -1. */
__attribute__((warn_unused_result)) int crypto_random(void *buf, size_t len);
/* A new random token: `nbytes` random bytes as base64url without padding.
 * Caller frees. NULL on error. */
char *crypto_random_token(size_t nbytes);
/* Overwrites a string that held a secret (a token, a code, a client secret),
 * then frees it. NULL is ignored. */
void crypto_free_secret(char *s);

/* Encodings. Encoders return a new NUL-terminated string (caller frees).
 * Decoders return a new buffer (caller frees), length in *outlen, or NULL on
 * malformed input. base64url: no padding on output, padding optional on input. */
char *crypto_base64_encode(const void *data, size_t len);
uint8_t *crypto_base64_decode(const char *text, size_t *outlen);
char *crypto_base64url_encode(const void *data, size_t len);
uint8_t *crypto_base64url_decode(const char *text, size_t *outlen);
/* Lowercase hex of len bytes into out (2*len+1 bytes). */
void crypto_hex(const void *data, size_t len, char *out);

#endif
