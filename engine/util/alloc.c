#include "util/alloc.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* The size lives in front of each block, padded so the user pointer keeps
 * malloc's alignment guarantee. */
#define HDR_SIZE (alignof(max_align_t) > sizeof(size_t) ? alignof(max_align_t) : sizeof(size_t))

static atomic_llong live_bytes;
static atomic_llong live_blocks;
/* Per thread: the Lua runtime reports from its loop thread on every Lua
 * allocation, where a locked add would cost more than the allocation. */
static _Thread_local int64_t external_bytes;

static void account(long long bytes, long long blocks)
{
    atomic_fetch_add_explicit(&live_bytes, bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&live_blocks, blocks, memory_order_relaxed);
}

void *ami_malloc(size_t size)
{
    if (size > SIZE_MAX - HDR_SIZE)
        return NULL;
    unsigned char *raw = malloc(HDR_SIZE + size);
    if (!raw)
        return NULL;
    memcpy(raw, &size, sizeof size);
    account((long long)size, 1);
    return raw + HDR_SIZE;
}

void *ami_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = ami_malloc(n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

void ami_free(void *ptr)
{
    if (!ptr)
        return;
    unsigned char *raw = (unsigned char *)ptr - HDR_SIZE;
    size_t size;
    memcpy(&size, raw, sizeof size);
    account(-(long long)size, -1);
    free(raw);
}

void *ami_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return ami_malloc(size);
    if (size == 0) {
        ami_free(ptr);
        return NULL;
    }
    if (size > SIZE_MAX - HDR_SIZE)
        return NULL;
    unsigned char *raw = (unsigned char *)ptr - HDR_SIZE;
    size_t old;
    memcpy(&old, raw, sizeof old);
    unsigned char *grown = realloc(raw, HDR_SIZE + size);
    if (!grown)
        return NULL;
    memcpy(grown, &size, sizeof size);
    account((long long)size - (long long)old, 0);
    return grown + HDR_SIZE;
}

char *ami_strndup(const char *s, size_t n)
{
    char *d = ami_malloc(n + 1);
    if (!d)
        return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *ami_strdup(const char *s)
{
    return s ? ami_strndup(s, strlen(s)) : NULL;
}

void ami_alloc_note_external(int64_t delta)
{
    external_bytes += delta;
}

int64_t ami_alloc_live_bytes(void)
{
    return atomic_load_explicit(&live_bytes, memory_order_relaxed) + external_bytes;
}

int64_t ami_alloc_live_blocks(void)
{
    return atomic_load_explicit(&live_blocks, memory_order_relaxed);
}
