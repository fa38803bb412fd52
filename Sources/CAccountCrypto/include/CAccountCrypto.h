#ifndef FERRY_CACCOUNTCRYPTO_H
#define FERRY_CACCOUNTCRYPTO_H
#include <stddef.h>
#include <stdint.h>

/* What the control plane's accounts need from libcrypto (docs/control-plane.md, "Accounts"):
   scrypt (RFC 7914) for passwords, SHA-256 for the digests of session and API tokens, and a
   comparison whose time does not depend on where the inputs differ. */

/* scrypt through EVP_PBE_scrypt: `n` a power of two above 1, `r` and `p` at least 1, memory
   limited to `max_memory_bytes`. `password` and `salt` may be empty. 1 on success, 0 when
   libcrypto refuses the parameters or cannot allocate. */
int ferry_scrypt(const uint8_t *password, size_t password_len, const uint8_t *salt, size_t salt_len, uint64_t n,
                 uint64_t r, uint64_t p, uint64_t max_memory_bytes, uint8_t *key, size_t key_len);

/* SHA-256 of `len` bytes into `digest`. 1 on success. */
int ferry_sha256(const uint8_t *data, size_t len, uint8_t digest[32]);

/* 1 when the `len` bytes at `a` and `b` are equal, in time that depends on `len` only
   (CRYPTO_memcmp). */
int ferry_equal_in_constant_time(const uint8_t *a, const uint8_t *b, size_t len);

#endif
