#include "util/alloc.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* In front of each block: its size and the account it is charged to, padded
 * so the user pointer keeps malloc's alignment guarantee. */
typedef struct header {
    size_t size;
    unsigned char account;
} header_t;

#define ALIGN_UP(n, a) (((n) + (a) - 1) / (a) * (a))
#define HDR_SIZE ALIGN_UP(sizeof(header_t), alignof(max_align_t))

/* One cache line per account: the engine's thread and an in-process
 * simulator's allocate all the time, and counters sharing a line would
 * bounce it between their cores on every malloc and free. */
typedef struct counters {
    alignas(64) atomic_llong bytes;
    atomic_llong blocks;
} counters_t;

static counters_t counts[AMI_ALLOC_ACCOUNTS];
/* Per thread: the Lua runtime reports from its loop thread on every Lua
 * allocation, where a locked add would cost more than the allocation. */
static _Thread_local int64_t external_bytes;
static _Thread_local unsigned char current_account = AMI_ALLOC_ENGINE;

static void account(unsigned a, long long bytes, long long blocks)
{
    atomic_fetch_add_explicit(&counts[a].bytes, bytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&counts[a].blocks, blocks, memory_order_relaxed);
}

static header_t read_header(const unsigned char *raw)
{
    header_t h;
    memcpy(&h, raw, sizeof h);
    return h;
}

static void write_header(unsigned char *raw, size_t size, unsigned char a)
{
    header_t h = {.size = size, .account = a};
    memcpy(raw, &h, sizeof h);
}

ami_alloc_account_t ami_alloc_use(ami_alloc_account_t to)
{
    ami_alloc_account_t was = (ami_alloc_account_t)current_account;
    if ((unsigned)to < AMI_ALLOC_ACCOUNTS)
        current_account = (unsigned char)to;
    return was;
}

void *ami_malloc(size_t size)
{
    if (size > SIZE_MAX - HDR_SIZE)
        return NULL;
    unsigned char *raw = malloc(HDR_SIZE + size);
    if (!raw)
        return NULL;
    write_header(raw, size, current_account);
    account(current_account, (long long)size, 1);
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
    header_t h = read_header(raw);
    account(h.account, -(long long)h.size, -1);
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
    header_t old = read_header(raw);
    unsigned char *grown = realloc(raw, HDR_SIZE + size);
    if (!grown)
        return NULL;
    /* the block stays charged to the account that made it */
    write_header(grown, size, old.account);
    account(old.account, (long long)size - (long long)old.size, 0);
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

int64_t ami_alloc_account_live_bytes(ami_alloc_account_t a)
{
    if ((unsigned)a >= AMI_ALLOC_ACCOUNTS)
        return 0;
    int64_t ext = a == AMI_ALLOC_ENGINE ? external_bytes : 0;
    return atomic_load_explicit(&counts[a].bytes, memory_order_relaxed) + ext;
}

int64_t ami_alloc_account_live_blocks(ami_alloc_account_t a)
{
    if ((unsigned)a >= AMI_ALLOC_ACCOUNTS)
        return 0;
    return atomic_load_explicit(&counts[a].blocks, memory_order_relaxed);
}

int64_t ami_alloc_live_bytes(void)
{
    return ami_alloc_account_live_bytes(AMI_ALLOC_ENGINE);
}

int64_t ami_alloc_live_blocks(void)
{
    return ami_alloc_account_live_blocks(AMI_ALLOC_ENGINE);
}
