#include <xxhash.h>
/* Exported by libxxhash >= 0.8 (runtime SSE2/AVX2/AVX-512 selection) but declared only in
   xxh_x86dispatch.h, which Debian does not ship. */
XXH64_hash_t XXH3_64bits_dispatch(const void *input, size_t len);
