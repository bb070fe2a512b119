#include "protocol/scan.h"

#include <string.h>

/* "actionid" as a word, to compare 8 key bytes at once (folded to a
 * constant, in the machine's byte order). */
static inline uint64_t actionid_word(void)
{
    uint64_t w;
    memcpy(&w, "actionid", 8);
    return w;
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SCAN_X86 1
#endif

static void scan_scalar(const char *s, size_t n, uint64_t *term, uint64_t *colon)
{
    for (size_t k = 0; k < n; k++, s += AMI_SCAN_WIDTH) {
        uint64_t t = 0, c = 0;
        for (unsigned i = 0; i < AMI_SCAN_WIDTH; i++) {
            char b = s[i];
            t |= (uint64_t)(b == '\n' || b == '\r' || b == '\0') << i;
            c |= (uint64_t)(b == ':') << i;
        }
        term[k] = t;
        colon[k] = c;
    }
}

#ifdef __SSE2__
static void scan_sse2(const char *s, size_t n, uint64_t *term, uint64_t *colon)
{
    const __m128i lf = _mm_set1_epi8('\n');
    const __m128i cr = _mm_set1_epi8('\r');
    const __m128i nul = _mm_setzero_si128();
    const __m128i col = _mm_set1_epi8(':');
    for (size_t k = 0; k < n; k++, s += AMI_SCAN_WIDTH) {
        uint64_t t = 0, c = 0;
        for (unsigned i = 0; i < AMI_SCAN_WIDTH; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
            __m128i e = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, lf), _mm_cmpeq_epi8(v, cr)), _mm_cmpeq_epi8(v, nul));
            t |= (uint64_t)(unsigned)_mm_movemask_epi8(e) << i;
            c |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, col)) << i;
        }
        term[k] = t;
        colon[k] = c;
    }
}
#endif

#ifdef SCAN_X86
__attribute__((target("avx2"))) static void scan_avx2(const char *s, size_t n, uint64_t *term, uint64_t *colon)
{
    const __m256i lf = _mm256_set1_epi8('\n');
    const __m256i cr = _mm256_set1_epi8('\r');
    const __m256i nul = _mm256_setzero_si256();
    const __m256i col = _mm256_set1_epi8(':');
    for (size_t k = 0; k < n; k++, s += AMI_SCAN_WIDTH) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)s);
        __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(s + 32));
        __m256i ta = _mm256_or_si256(_mm256_or_si256(_mm256_cmpeq_epi8(a, lf), _mm256_cmpeq_epi8(a, cr)),
                                     _mm256_cmpeq_epi8(a, nul));
        __m256i tb = _mm256_or_si256(_mm256_or_si256(_mm256_cmpeq_epi8(b, lf), _mm256_cmpeq_epi8(b, cr)),
                                     _mm256_cmpeq_epi8(b, nul));
        term[k] = (uint64_t)(uint32_t)_mm256_movemask_epi8(ta) | (uint64_t)(uint32_t)_mm256_movemask_epi8(tb) << 32;
        colon[k] = (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(a, col)) |
                   (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(b, col)) << 32;
    }
}

__attribute__((target("avx512f,avx512bw"))) static void scan_avx512(const char *s, size_t n, uint64_t *term,
                                                                   uint64_t *colon)
{
    for (size_t k = 0; k < n; k++, s += AMI_SCAN_WIDTH) {
        __m512i v = _mm512_loadu_si512((const void *)s);
        term[k] = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('\n')) | _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8('\r')) |
                  _mm512_cmpeq_epi8_mask(v, _mm512_setzero_si512());
        colon[k] = _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(':'));
    }
}
#endif

static bool cpu_has(ami_scanner_t kind)
{
    switch (kind) {
    case AMI_SCANNER_SCALAR:
        return true;
#ifdef __SSE2__
    case AMI_SCANNER_SSE2:
        return true;
#endif
#ifdef SCAN_X86
    case AMI_SCANNER_AVX2:
        return __builtin_cpu_supports("avx2");
    case AMI_SCANNER_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
#endif
    default:
        return false;
    }
}

ami_scanner_t ami_scan_best(void)
{
    /* AVX-512BW measured no faster than AVX2 on the engine's line lengths
     * (and slower on some CPUs, which lower their clock for it): not picked. */
    static const ami_scanner_t order[] = {AMI_SCANNER_AVX2, AMI_SCANNER_SSE2};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (cpu_has(order[i]))
            return order[i];
    return AMI_SCANNER_SCALAR;
}

ami_scan_fn ami_scan_impl(ami_scanner_t kind)
{
    if (kind == AMI_SCANNER_AUTO)
        kind = ami_scan_best();
    if (!cpu_has(kind))
        return NULL;
    switch (kind) {
#ifdef __SSE2__
    case AMI_SCANNER_SSE2: return scan_sse2;
#endif
#ifdef SCAN_X86
    case AMI_SCANNER_AVX2: return scan_avx2;
    case AMI_SCANNER_AVX512: return scan_avx512;
#endif
    default: return scan_scalar;
    }
}

int ami_parser_use_scanner(ami_parser_t *p, ami_scanner_t kind)
{
    ami_scan_fn fn = ami_scan_impl(kind);
    if (!fn)
        return -1;
    p->scan_fn = fn;
    p->scanner = (uint8_t)(kind == AMI_SCANNER_AUTO ? ami_scan_best() : kind);
    return 0;
}

ami_scanner_t ami_parser_scanner(const ami_parser_t *p)
{
    return (ami_scanner_t)p->scanner;
}

bool ami_scanner_available(ami_scanner_t kind)
{
    return ami_scan_impl(kind) != NULL;
}

const char *ami_scanner_name(ami_scanner_t kind)
{
    static const char *const names[AMI_SCANNER_COUNT] = {"auto", "scalar", "sse2", "avx2", "avx512"};
    return (unsigned)kind < AMI_SCANNER_COUNT ? names[kind] : "unknown";
}

/* The common case, in a tight loop: complete "Key: Value" lines after a
 * message's first line. It takes the lines take_header would take, exactly
 * as it would, and stops at anything else (the blank line ending the
 * message, a partial, bad, over-long or keyless line, a full header array),
 * leaving that line to the parser's general path. The caller calls it only
 * between complete lines of a message past its first line, outside legacy
 * Command output. The parser's fields live in locals meanwhile: the NULs
 * written into the buffer could alias them and force a reload after every
 * store. */

void ami_scan_headers(ami_parser_t *p, ami_scan_win_t *w_io)
{
    char *buf = p->buf;
    const size_t start = p->start, end = p->end, max_line = p->lim.max_line;
    const size_t msg_end = start + p->lim.max_message;
    ami_hdr_t *hdrs = p->hdrs;
    size_t scan = p->scan, nh = p->nhdrs, cap = p->hdrs_cap;
    int32_t actionid_idx = p->actionid_idx;
    ami_scan_win_t *w = w_io;
    size_t base = w->base, lim = w->lim;
    while (nh < cap) {
        if (scan >= end)
            break;
        if (scan < base || (scan + AMI_SCAN_WIDTH > lim && lim < end)) {
            /* fewer than 64 classified bytes ahead: move the window here */
            ami_scan_fill(p, w, scan, end);
            base = w->base;
            lim = w->lim;
        }
        uint64_t term = ami_scan_bits(w, w->term, scan);
        uint64_t c = ami_scan_bits(w, w->colon, scan) & ((term & (0 - term)) - 1);
        if (!term || !c)
            break; /* longer than a block, or no ':' */
        size_t t = scan + (size_t)__builtin_ctzll(term);
        size_t colon = scan + (size_t)__builtin_ctzll(c);
        if (colon == scan || t - scan > max_line)
            break;
        size_t next;
        if (buf[t] == '\n')
            next = t + 1;
        else if (buf[t] == '\r' && t + 1 < end && buf[t + 1] == '\n')
            next = t + 2;
        else
            break;
        if (next > msg_end)
            break;
        size_t len = t - scan, klen = colon - scan;
        size_t voff = klen + 1;
        voff += voff < len && buf[scan + voff] == ' ';
        uint64_t word;
        memcpy(&word, buf + scan, 8); /* readable: the buffer is padded */
        if (__builtin_expect((klen == 8) & (actionid_idx < 0) & ((word | 0x2020202020202020ull) == actionid_word()), 0))
            actionid_idx = (int32_t)nh;
        uint32_t off = (uint32_t)(scan - start);
        ami_hdr_t *h = &hdrs[nh++];
        h->key_off = off;
        h->key_len = (uint32_t)klen;
        h->val_off = off + (uint32_t)voff;
        h->val_len = (uint32_t)(len - voff);
        buf[colon] = '\0';
        buf[t] = '\0';
        scan = next;
    }
    p->scan = scan;
    p->nhdrs = nh;
    p->actionid_idx = actionid_idx;
}
