#include "CAccountCrypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

int ferry_scrypt(const uint8_t *password, size_t password_len, const uint8_t *salt, size_t salt_len, uint64_t n,
                 uint64_t r, uint64_t p, uint64_t max_memory_bytes, uint8_t *key, size_t key_len) {
    /* EVP_PBE_scrypt reads no byte of an empty input, but wants a pointer for it. */
    static const uint8_t empty[1] = {0};
    return EVP_PBE_scrypt((const char *)(password_len > 0 ? password : empty), password_len,
                          salt_len > 0 ? salt : empty, salt_len, n, r, p, max_memory_bytes, key, key_len) == 1;
}

int ferry_sha256(const uint8_t *data, size_t len, uint8_t digest[32]) {
    static const uint8_t empty[1] = {0};
    unsigned int written = 0;
    return EVP_Digest(len > 0 ? data : empty, len, digest, &written, EVP_sha256(), NULL) == 1 && written == 32;
}

int ferry_equal_in_constant_time(const uint8_t *a, const uint8_t *b, size_t len) {
    return len == 0 || CRYPTO_memcmp(a, b, len) == 0;
}
