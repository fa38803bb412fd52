#include "CAEAD.h"

#include <openssl/evp.h>

struct ferry_aead {
    EVP_CIPHER_CTX *ctx;
    int seal;
};

ferry_aead *ferry_aead_new(int cipher, const uint8_t key[32], int seal) {
    const EVP_CIPHER *kind = cipher == FERRY_AEAD_AES_256_GCM ? EVP_aes_256_gcm()
                           : cipher == FERRY_AEAD_CHACHA20_POLY1305 ? EVP_chacha20_poly1305() : NULL;
    if (kind == NULL) return NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) return NULL;
    int ok = EVP_CipherInit_ex(ctx, kind, NULL, NULL, NULL, seal)
          && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL)
          && EVP_CipherInit_ex(ctx, NULL, NULL, key, NULL, seal);
    if (!ok) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    ferry_aead *aead = OPENSSL_malloc(sizeof *aead);
    if (aead == NULL) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    aead->ctx = ctx;
    aead->seal = seal;
    return aead;
}

void ferry_aead_free(ferry_aead *aead) {
    if (aead == NULL) return;
    EVP_CIPHER_CTX_free(aead->ctx);
    OPENSSL_free(aead);
}

int ferry_aead_begin(ferry_aead *aead, const uint8_t nonce[12], const uint8_t *aad, size_t aad_len) {
    int out = 0;
    if (!EVP_CipherInit_ex(aead->ctx, NULL, NULL, NULL, nonce, aead->seal)) return 0;
    if (aad_len > 0 && !EVP_CipherUpdate(aead->ctx, NULL, &out, aad, (int)aad_len)) return 0;
    return 1;
}

int ferry_aead_update(ferry_aead *aead, uint8_t *out, const uint8_t *in, size_t len) {
    while (len > 0) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
        int written = 0;
        if (!EVP_CipherUpdate(aead->ctx, out, &written, in, chunk) || written != chunk) return 0;
        out += chunk;
        in += chunk;
        len -= (size_t)chunk;
    }
    return 1;
}

int ferry_aead_seal_end(ferry_aead *aead, uint8_t tag[16]) {
    uint8_t rest[16];
    int written = 0;
    return EVP_CipherFinal_ex(aead->ctx, rest, &written) && written == 0
        && EVP_CIPHER_CTX_ctrl(aead->ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag);
}

int ferry_aead_open_end(ferry_aead *aead, const uint8_t tag[16]) {
    uint8_t rest[16];
    int written = 0;
    if (!EVP_CIPHER_CTX_ctrl(aead->ctx, EVP_CTRL_AEAD_SET_TAG, 16, (void *)tag)) return 0;
    return EVP_CipherFinal_ex(aead->ctx, rest, &written) > 0 && written == 0;
}
