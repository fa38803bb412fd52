#ifndef FERRY_CAEAD_H
#define FERRY_CAEAD_H
#include <stddef.h>
#include <stdint.h>

/* One direction's AEAD context over libcrypto's EVP interface (Protocol.md 9.3): AES-256-GCM or
   ChaCha20-Poly1305 with a 12-byte nonce and a 16-byte tag, processed in place, with no
   allocation per record (swift-crypto allocates and copies every record). */
typedef struct ferry_aead ferry_aead;

enum { FERRY_AEAD_AES_256_GCM = 1, FERRY_AEAD_CHACHA20_POLY1305 = 2 };

/* NULL if the cipher or key is refused. `seal` 1: encrypt, 0: decrypt. */
ferry_aead *ferry_aead_new(int cipher, const uint8_t key[32], int seal);
void ferry_aead_free(ferry_aead *aead);
/* Starts a record: the nonce, then the associated data. 1 on success. */
int ferry_aead_begin(ferry_aead *aead, const uint8_t nonce[12], const uint8_t *aad, size_t aad_len);
/* Encrypts or decrypts `len` bytes; `out` may equal `in`. 1 on success. */
int ferry_aead_update(ferry_aead *aead, uint8_t *out, const uint8_t *in, size_t len);
/* Ends a sealed record and writes its tag. 1 on success. */
int ferry_aead_seal_end(ferry_aead *aead, uint8_t tag[16]);
/* Ends an opened record: 1 when `tag` authenticates it, 0 when it does not. */
int ferry_aead_open_end(ferry_aead *aead, const uint8_t tag[16]);

#endif
