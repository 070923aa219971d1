/* hash.h - one 64-bit hash of bytes for the tables keyed by registry names (model ids, vmodel
 * names) and for rendezvous scores (place.h): FNV-1a over the bytes, then a 64-bit finalizer so
 * that the low bits, which pick a bucket, depend on every byte. Not seeded: use it for keys
 * from the registry; lru.h seeds its own hash for keys clients choose. Header-only. */
#ifndef MM_HASH_H
#define MM_HASH_H

#include <stddef.h>
#include <stdint.h>

#define MM_HASH_INIT 0xcbf29ce484222325ULL

/* Continue an FNV-1a hash h over data[0, len). */
static inline uint64_t mm_hash_more(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Spread h's bits (splitmix64's finalizer). */
static inline uint64_t mm_hash_finish(uint64_t h)
{
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

static inline uint64_t mm_hash(const void *data, size_t len)
{
    return mm_hash_finish(mm_hash_more(MM_HASH_INIT, data, len));
}

#endif
