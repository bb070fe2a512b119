/*
 * The engine's allocator: malloc with live-byte accounting.
 *
 * Every allocation the engine makes goes through these functions, so that a
 * test or the soak tool can ask "how many bytes are live right now" and prove
 * that memory returns to its level after disconnect cycles or reloads. The
 * counters are atomic (relaxed): the resolver and logger threads allocate too.
 * ami_free(NULL) is a no-op; ami_realloc(p, 0) frees and returns NULL.
 */
#ifndef AMI_UTIL_ALLOC_H
#define AMI_UTIL_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *ami_malloc(size_t size);
void *ami_calloc(size_t n, size_t size);
void *ami_realloc(void *ptr, size_t size);
void ami_free(void *ptr);
char *ami_strdup(const char *s);
char *ami_strndup(const char *s, size_t n);

/* Memory obtained by another allocator the engine drives (the Lua states
 * use LuaJIT's own, much faster for their many small objects): reported
 * here so live bytes stay the engine's whole footprint. Counted per thread:
 * report and read it from the thread that runs the Lua runtime (the loop). */
void ami_alloc_note_external(int64_t delta);

/* Bytes requested and not yet freed (headers excluded), plus the external
 * bytes the calling thread reported. */
int64_t ami_alloc_live_bytes(void);
/* Blocks allocated and not yet freed. */
int64_t ami_alloc_live_blocks(void);

#endif
