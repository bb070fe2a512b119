/*
 * The engine's allocator: malloc with live-byte accounting.
 *
 * Every allocation the engine makes goes through these functions, so that a
 * test or the soak tool can ask "how many bytes are live right now" and prove
 * that memory returns to its level after disconnect cycles or reloads. The
 * counters are atomic (relaxed): the resolver and logger threads allocate too.
 * ami_free(NULL) is a no-op; ami_realloc(p, 0) frees and returns NULL.
 *
 * Accounts: each block is charged to the account current on the allocating
 * thread when it was made (AMI_ALLOC_ENGINE unless switched), and credited
 * back to that same account when freed, whichever thread or account frees
 * it (the account is recorded in the block's header). The simulator switches
 * to AMI_ALLOC_SIMULATOR at each of its entry points, so a test that runs it
 * in-process on the engine's loop still reads the engine's bytes alone.
 */
#ifndef AMI_UTIL_ALLOC_H
#define AMI_UTIL_ALLOC_H

#include <stddef.h>
#include <stdint.h>

typedef enum ami_alloc_account {
    AMI_ALLOC_ENGINE = 0,
    AMI_ALLOC_SIMULATOR,
    AMI_ALLOC_ACCOUNTS
} ami_alloc_account_t;

void *ami_malloc(size_t size);
void *ami_calloc(size_t n, size_t size);
void *ami_realloc(void *ptr, size_t size);
void ami_free(void *ptr);
char *ami_strdup(const char *s);
char *ami_strndup(const char *s, size_t n);

/* Make `to` the calling thread's current account; returns the previous one,
 * to be restored with ami_alloc_use(previous) when the caller is done. */
ami_alloc_account_t ami_alloc_use(ami_alloc_account_t to);

/* Memory obtained by another allocator the engine drives (the Lua states
 * use LuaJIT's own, much faster for their many small objects): reported
 * here so live bytes stay the engine's whole footprint. Counted per thread:
 * report and read it from the thread that runs the Lua runtime (the loop). */
void ami_alloc_note_external(int64_t delta);

/* The engine's account: bytes requested and not yet freed (headers
 * excluded), plus the external bytes the calling thread reported. */
int64_t ami_alloc_live_bytes(void);
/* The engine's account: blocks allocated and not yet freed. */
int64_t ami_alloc_live_blocks(void);

/* The same for any account (external bytes belong to AMI_ALLOC_ENGINE). */
int64_t ami_alloc_account_live_bytes(ami_alloc_account_t a);
int64_t ami_alloc_account_live_blocks(ami_alloc_account_t a);

#endif
