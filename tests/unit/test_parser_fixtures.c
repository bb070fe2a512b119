/*
 * The parser against every recorded Asterisk session (tests/fixtures/asterisk).
 *
 * For each fixture the whole .ami is parsed in one feed into a reference list
 * (kind, flags, wire length and every key/value, copied into test memory).
 * Then the same bytes are parsed again, cut differently, and every message
 * must be identical to the reference:
 *   - at EVERY split point into two chunks. Files under FULL_SPLIT_MAX
 *     (20 KB) are re-parsed from the banner at every split point. For bigger
 *     files that is quadratic (the 244 KB event-stream-mixed alone would be
 *     60 GB of parsing), so they get, at EVERY split point, a windowed run
 *     (a fresh parser gets the banner, then the messages around the split
 *     point cut at that point: the same parser path on a fraction of the
 *     bytes), plus full re-parses from the banner at a sample of points:
 *     every 7th point and message boundaries +-2 below 64 KB, every 499th
 *     point and message boundaries +-1 above (see split_fixture).
 *   - one byte at a time;
 *   - 200 random chunkings (sizes 1..4096, fixed seed);
 *   - the zero-copy path (ami_parser_reserve/commit) with small reads.
 * Then facts stated in the fixtures' README are checked on the parsed
 * messages (counts, empty values, duplicate keys, kinds, ActionIDs).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fixtures.h"
#include "protocol/message.h"
#include "protocol/parser.h"

/* Files below this size are re-parsed from the start at every split point. */
#define FULL_SPLIT_MAX (20u * 1024u)
#define SAMPLE_STEP 7u
#define SAMPLE_NEAR 2u
#define HUGE_SPLIT_MIN (64u * 1024u)
#define HUGE_SAMPLE_STEP 499u
#define HUGE_SAMPLE_NEAR 1u
#define RANDOM_CHUNKINGS 200
#define RANDOM_MAX_CHUNK 4096u

/* ------------------------------------------------------------------------ */
/* Reference message lists, owned by the test                                */

typedef struct ref_hdr {
    size_t koff, klen, voff, vlen; /* into ref_list.arena */
} ref_hdr_t;

typedef struct ref_msg {
    ami_msg_kind_t kind;
    bool legacy;
    int32_t actionid_idx;
    size_t wire_len;
    size_t start;  /* byte offset of the message in the stream */
    size_t h0, nh; /* headers [h0, h0 + nh) of ref_list.hdrs */
} ref_msg_t;

typedef struct ref_list {
    ref_msg_t *msgs;
    size_t n, msgs_cap;
    ref_hdr_t *hdrs;
    size_t nh, hdrs_cap;
    char *arena;
    size_t alen, arena_cap;
} ref_list_t;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    assert_non_null(q);
    return q;
}

static size_t arena_put(ref_list_t *r, const char *s, size_t n)
{
    if (r->alen + n + 1 > r->arena_cap) {
        size_t cap = r->arena_cap ? r->arena_cap : 4096;
        while (cap < r->alen + n + 1)
            cap *= 2;
        r->arena = xrealloc(r->arena, cap);
        r->arena_cap = cap;
    }
    size_t off = r->alen;
    memcpy(r->arena + off, s, n);
    r->arena[off + n] = '\0';
    r->alen += n + 1;
    return off;
}

static void ref_add(ref_list_t *r, const ami_msg_t *m, size_t stream_off)
{
    if (r->n == r->msgs_cap) {
        r->msgs_cap = r->msgs_cap ? r->msgs_cap * 2 : 64;
        r->msgs = xrealloc(r->msgs, r->msgs_cap * sizeof *r->msgs);
    }
    ref_msg_t *rm = &r->msgs[r->n++];
    rm->kind = m->kind;
    rm->legacy = m->legacy_command;
    rm->actionid_idx = m->actionid_idx;
    rm->wire_len = m->wire_len;
    rm->start = stream_off;
    rm->h0 = r->nh;
    rm->nh = m->nhdrs;
    for (size_t i = 0; i < m->nhdrs; i++) {
        if (r->nh == r->hdrs_cap) {
            r->hdrs_cap = r->hdrs_cap ? r->hdrs_cap * 2 : 256;
            r->hdrs = xrealloc(r->hdrs, r->hdrs_cap * sizeof *r->hdrs);
        }
        size_t kl, vl;
        const char *k = ami_msg_key(m, i, &kl);
        const char *v = ami_msg_value(m, i, &vl);
        ref_hdr_t *h = &r->hdrs[r->nh++];
        h->koff = arena_put(r, k, kl);
        h->klen = kl;
        h->voff = arena_put(r, v, vl);
        h->vlen = vl;
    }
}

static void ref_free(ref_list_t *r)
{
    free(r->msgs);
    free(r->hdrs);
    free(r->arena);
    memset(r, 0, sizeof *r);
}

/* Compare a live message with reference message i; describe the first
 * difference in why. Also checks the in-place NUL terminators. */
static bool msg_equal(const ref_list_t *r, size_t i, const ami_msg_t *m, char *why, size_t why_size)
{
    const ref_msg_t *rm = &r->msgs[i];
    if (m->kind != rm->kind || m->legacy_command != rm->legacy || m->actionid_idx != rm->actionid_idx ||
        m->wire_len != rm->wire_len || m->nhdrs != rm->nh) {
        snprintf(why, why_size,
                 "message %zu: kind %d/%d legacy %d/%d actionid_idx %d/%d wire_len %zu/%zu nhdrs %zu/%zu "
                 "(got/expected)",
                 i, (int)m->kind, (int)rm->kind, m->legacy_command, rm->legacy, m->actionid_idx,
                 rm->actionid_idx, m->wire_len, rm->wire_len, m->nhdrs, rm->nh);
        return false;
    }
    for (size_t j = 0; j < m->nhdrs; j++) {
        const ref_hdr_t *h = &r->hdrs[rm->h0 + j];
        size_t kl, vl;
        const char *k = ami_msg_key(m, j, &kl);
        const char *v = ami_msg_value(m, j, &vl);
        if (kl != h->klen || vl != h->vlen || memcmp(k, r->arena + h->koff, kl) != 0 ||
            memcmp(v, r->arena + h->voff, vl) != 0 || k[kl] != '\0' || v[vl] != '\0') {
            snprintf(why, why_size, "message %zu header %zu: got \"%.*s\"=\"%.*s\", expected \"%s\"=\"%s\"", i,
                     j, (int)kl, k, (int)(vl > 60 ? 60 : vl), v, r->arena + h->koff, r->arena + h->voff);
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Checking a parse against the reference                                    */

typedef struct check {
    const ref_list_t *ref;
    size_t next;  /* index of the next expected message */
    size_t stop;  /* messages expected: [first, stop) */
    bool ok;
    char why[400];
} check_t;

static void check_init(check_t *c, const ref_list_t *ref, size_t first, size_t stop)
{
    c->ref = ref;
    c->next = first;
    c->stop = stop;
    c->ok = true;
    c->why[0] = '\0';
}

/* Drain the parser into the check. */
static void drain(ami_parser_t *p, check_t *c)
{
    ami_msg_t m;
    ami_err_t err;
    int rc;
    while (c->ok && (rc = ami_parser_next(p, &m, &err)) == 1) {
        if (c->next >= c->stop) {
            c->ok = false;
            snprintf(c->why, sizeof c->why, "an extra message %zu (\"%s\")", c->next, ami_msg_name(&m));
            return;
        }
        if (!msg_equal(c->ref, c->next, &m, c->why, sizeof c->why)) {
            c->ok = false;
            return;
        }
        c->next++;
    }
    if (c->ok && rc < 0) {
        c->ok = false;
        snprintf(c->why, sizeof c->why, "parse error after %zu messages: %s", c->next, err.msg);
    }
}

static void feed(ami_parser_t *p, const char *d, size_t n, check_t *c)
{
    ami_err_t err;
    if (!c->ok)
        return;
    if (ami_parser_feed(p, d, n, &err) != 0) {
        c->ok = false;
        snprintf(c->why, sizeof c->why, "feed of %zu bytes failed: %s", n, err.msg);
        return;
    }
    drain(p, c);
}

static void finish(ami_parser_t *p, check_t *c)
{
    if (c->ok && c->next != c->stop) {
        c->ok = false;
        snprintf(c->why, sizeof c->why, "%zu messages, expected %zu", c->next, c->stop);
    }
    if (c->ok && ami_parser_buffered(p) != 0) {
        c->ok = false;
        snprintf(c->why, sizeof c->why, "%zu bytes left buffered", ami_parser_buffered(p));
    }
}

static void parser_new(ami_parser_t *p)
{
    assert_int_equal(ami_parser_init(p, NULL), 0);
}

static void build_ref(const fixture_t *fx, ref_list_t *ref)
{
    ami_parser_t p;
    parser_new(&p);
    memset(ref, 0, sizeof *ref);
    assert_int_equal(ami_parser_feed(&p, fx->data, fx->len, NULL), 0);
    ami_msg_t m;
    ami_err_t err;
    int rc;
    size_t off = 0;
    while ((rc = ami_parser_next(&p, &m, &err)) == 1) {
        ref_add(ref, &m, off);
        off += m.wire_len;
    }
    if (rc < 0)
        fail_msg("parse error: %s", err.msg);
    /* Every recording ends on a message boundary, with no stray blank lines:
     * the messages tile the file exactly. */
    assert_int_equal(ami_parser_buffered(&p), 0);
    assert_int_equal(off, fx->len);
    assert_int_equal(ami_parser_stats(&p)->bytes, fx->len);
    assert_int_equal(ami_parser_stats(&p)->messages, ref->n);
    assert_int_equal(ami_parser_stats(&p)->errors, 0);
    ami_parser_deinit(&p);
}

/* ------------------------------------------------------------------------ */
/* Chunkings                                                                 */

/* Feed [0,k) then [k,n) into a fresh parser. */
static void run_split(const fixture_t *fx, const ref_list_t *ref, size_t k, check_t *c)
{
    ami_parser_t p;
    parser_new(&p);
    check_init(c, ref, 0, ref->n);
    feed(&p, fx->data, k, c);
    feed(&p, fx->data + k, fx->len - k, c);
    finish(&p, c);
    ami_parser_deinit(&p);
}

/* Index of the message holding byte k. */
static size_t msg_at(const ref_list_t *ref, size_t k)
{
    size_t lo = 0, hi = ref->n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (ref->msgs[mid].start <= k)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Windowed split at k: a fresh parser gets the banner, then the bytes of the
 * messages around k, cut at k. */
static void run_split_window(const fixture_t *fx, const ref_list_t *ref, size_t k, check_t *c)
{
    size_t a = msg_at(ref, k);
    size_t first = a > 1 ? a - 1 : 0;
    size_t stop = a + 2 < ref->n ? a + 2 : ref->n;
    size_t from = ref->msgs[first].start;
    size_t to = ref->msgs[stop - 1].start + ref->msgs[stop - 1].wire_len;
    ami_parser_t p;
    parser_new(&p);
    if (first > 0) {
        check_init(c, ref, 0, 1);
        feed(&p, fx->data, ref->msgs[0].wire_len, c); /* the banner */
        finish(&p, c);
        if (!c->ok) {
            ami_parser_deinit(&p);
            return;
        }
    }
    check_init(c, ref, first, stop);
    feed(&p, fx->data + from, k - from, c);
    feed(&p, fx->data + k, to - k, c);
    finish(&p, c);
    ami_parser_deinit(&p);
}

static bool near_boundary(const ref_list_t *ref, size_t k, size_t near)
{
    size_t a = msg_at(ref, k);
    size_t s = ref->msgs[a].start;
    size_t e = s + ref->msgs[a].wire_len;
    return k - s <= near || e - k <= near;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void split_fixture(const char *name, size_t *full_runs, size_t *window_runs)
{
    double t0 = now_s();
    fixture_t fx = fixture_load(name, ".ami");
    ref_list_t ref;
    build_ref(&fx, &ref);
    check_t c;
    bool all_full = fx.len < FULL_SPLIT_MAX;
    bool huge = fx.len >= HUGE_SPLIT_MIN;
    size_t step = huge ? HUGE_SAMPLE_STEP : SAMPLE_STEP;
    size_t near = huge ? HUGE_SAMPLE_NEAR : SAMPLE_NEAR;
    for (size_t k = 1; k < fx.len; k++) {
        if (all_full || k % step == 0 || near_boundary(&ref, k, near)) {
            run_split(&fx, &ref, k, &c);
            if (!c.ok)
                fail_msg("%s.ami split at byte %zu: %s", name, k, c.why);
            (*full_runs)++;
        }
        if (!all_full) {
            run_split_window(&fx, &ref, k, &c);
            if (!c.ok)
                fail_msg("%s.ami windowed split at byte %zu: %s", name, k, c.why);
            (*window_runs)++;
        }
    }
    if (getenv("AMI_TEST_VERBOSE"))
        print_message("%-28s %7zu bytes %.2f s\n", name, fx.len, now_s() - t0);
    ref_free(&ref);
    fixture_free(&fx);
}

static void test_every_split_point_gives_the_same_messages(void **state)
{
    (void)state;
    size_t full = 0, window = 0, files = 0;
    for (const char *const *n = fixture_names(); *n; n++, files++)
        split_fixture(*n, &full, &window);
    assert_true(files >= 35);
    print_message("split points: %zu full re-parses, %zu windowed, over %zu fixtures\n", full, window, files);
}

static void test_one_byte_at_a_time_gives_the_same_messages(void **state)
{
    (void)state;
    for (const char *const *n = fixture_names(); *n; n++) {
        fixture_t fx = fixture_load(*n, ".ami");
        ref_list_t ref;
        build_ref(&fx, &ref);
        ami_parser_t p;
        parser_new(&p);
        check_t c;
        check_init(&c, &ref, 0, ref.n);
        for (size_t i = 0; i < fx.len && c.ok; i++)
            feed(&p, fx.data + i, 1, &c);
        finish(&p, &c);
        if (!c.ok)
            fail_msg("%s.ami byte by byte: %s", *n, c.why);
        ami_parser_deinit(&p);
        ref_free(&ref);
        fixture_free(&fx);
    }
}

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void test_random_chunkings_give_the_same_messages(void **state)
{
    (void)state;
    uint64_t seed = 0x5EED5EED12345678ULL;
    for (const char *const *n = fixture_names(); *n; n++) {
        fixture_t fx = fixture_load(*n, ".ami");
        ref_list_t ref;
        build_ref(&fx, &ref);
        for (int run = 0; run < RANDOM_CHUNKINGS; run++) {
            ami_parser_t p;
            parser_new(&p);
            check_t c;
            check_init(&c, &ref, 0, ref.n);
            size_t off = 0;
            while (off < fx.len && c.ok) {
                size_t len = 1 + (size_t)(rng_next(&seed) % RANDOM_MAX_CHUNK);
                if (len > fx.len - off)
                    len = fx.len - off;
                feed(&p, fx.data + off, len, &c);
                off += len;
            }
            finish(&p, &c);
            if (!c.ok)
                fail_msg("%s.ami random chunking %d: %s", *n, run, c.why);
            ami_parser_deinit(&p);
        }
        ref_free(&ref);
        fixture_free(&fx);
    }
}

static void test_reserve_commit_small_reads_give_the_same_messages(void **state)
{
    (void)state;
    static const size_t reads[] = {1, 2, 7, 64, 333, 1500, 4096, 65536};
    for (const char *const *n = fixture_names(); *n; n++) {
        fixture_t fx = fixture_load(*n, ".ami");
        ref_list_t ref;
        build_ref(&fx, &ref);
        for (size_t r = 0; r < sizeof reads / sizeof reads[0]; r++) {
            ami_parser_t p;
            parser_new(&p);
            check_t c;
            check_init(&c, &ref, 0, ref.n);
            size_t off = 0;
            while (off < fx.len && c.ok) {
                size_t got = 0;
                char *dst = ami_parser_reserve(&p, reads[r], &got);
                assert_non_null(dst);
                assert_true(got >= 1 && got <= reads[r]);
                size_t len = fx.len - off < got ? fx.len - off : got;
                memcpy(dst, fx.data + off, len);
                ami_parser_commit(&p, len);
                off += len;
                drain(&p, &c);
            }
            finish(&p, &c);
            if (!c.ok)
                fail_msg("%s.ami reserve/commit with %zu-byte reads: %s", *n, reads[r], c.why);
            ami_parser_deinit(&p);
        }
        ref_free(&ref);
        fixture_free(&fx);
    }
}

/* ------------------------------------------------------------------------ */
/* Facts from the fixtures' README                                           */

/* Parsed messages are borrowed from the parser, so the fact checks below
 * work on the reference copies (view_of gives them back as ami_msg_t). */
static void load_ref(const char *name, ref_list_t *ref)
{
    fixture_t fx = fixture_load(name, ".ami");
    build_ref(&fx, ref);
    fixture_free(&fx);
}

static const char *ref_name(const ref_list_t *r, size_t i)
{
    return r->nh && r->msgs[i].nh ? r->arena + r->hdrs[r->msgs[i].h0].voff : "";
}

/* A live view of reference message i, so the library's accessors can be
 * used on it: headers are rebuilt against the arena. */
typedef struct view {
    ami_msg_t m;
    ami_hdr_t *hdrs;
} view_t;

static void view_of(const ref_list_t *r, size_t i, view_t *v)
{
    const ref_msg_t *rm = &r->msgs[i];
    v->hdrs = calloc(rm->nh ? rm->nh : 1, sizeof *v->hdrs);
    assert_non_null(v->hdrs);
    for (size_t j = 0; j < rm->nh; j++) {
        const ref_hdr_t *h = &r->hdrs[rm->h0 + j];
        v->hdrs[j].key_off = (uint32_t)h->koff;
        v->hdrs[j].key_len = (uint32_t)h->klen;
        v->hdrs[j].val_off = (uint32_t)h->voff;
        v->hdrs[j].val_len = (uint32_t)h->vlen;
    }
    v->m.kind = rm->kind;
    v->m.base = r->arena;
    v->m.hdrs = v->hdrs;
    v->m.nhdrs = rm->nh;
    v->m.wire_len = rm->wire_len;
    v->m.actionid_idx = rm->actionid_idx;
    v->m.legacy_command = rm->legacy;
}

static void view_free(view_t *v)
{
    free(v->hdrs);
    v->hdrs = NULL;
}

/* First message (from index `from`) whose header `key` has value `val`. */
static long find_msg(const ref_list_t *r, size_t from, const char *key, const char *val)
{
    for (size_t i = from; i < r->n; i++) {
        const ref_msg_t *rm = &r->msgs[i];
        for (size_t j = 0; j < rm->nh; j++) {
            const ref_hdr_t *h = &r->hdrs[rm->h0 + j];
            if (ami_str_ieq(r->arena + h->koff, h->klen, key, strlen(key)) &&
                strcmp(r->arena + h->voff, val) == 0)
                return (long)i;
        }
    }
    return -1;
}

static void test_message_counts_match_the_recordings(void **state)
{
    (void)state;
    /* Messages including the banner, counted independently from the raw
     * files (blocks separated by CRLF CRLF after the banner line). */
    static const struct {
        const char *name;
        size_t msgs;
    } counts[] = {
        {"auth-timeout", 1},          {"command-core-show-version", 6}, {"command-invalid", 7},
        {"command-multiline", 7},     {"core-show-channels-3-calls", 76}, {"core-show-channels-empty", 7},
        {"dial-bridge", 78},          {"event-stream-mixed", 683},      {"events-off", 26},
        {"filter", 13},               {"getvar-setvar", 41},            {"hangup-action", 29},
        {"hangup-cause", 21},         {"list-commands", 4},             {"login-bad-secret", 2},
        {"login-events-off", 4},      {"login-md5-challenge", 6},       {"login-plain", 5},
        {"login-unknown-user", 2},    {"logoff", 5},                    {"misc-info", 15},
        {"originate-async", 25},      {"originate-exten", 42},          {"originate-failure", 25},
        {"originate-sync", 24},       {"permission-denied", 10},        {"ping", 8},
        {"pipelined", 11},            {"queue-call", 85},               {"queue-status", 113},
        {"security-events", 8},       {"status", 62},                   {"unauthenticated-action", 7},
        {"unknown-action", 9},        {"userevent", 33},
    };
    size_t nfix = 0;
    for (const char *const *n = fixture_names(); *n; n++)
        nfix++;
    assert_int_equal(nfix, sizeof counts / sizeof counts[0]);
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        ref_list_t r;
        load_ref(counts[i].name, &r);
        if (r.n != counts[i].msgs)
            fail_msg("%s.ami: %zu messages, expected %zu", counts[i].name, r.n, counts[i].msgs);
        /* The first message is the banner; the rest are responses/events. */
        assert_int_equal(r.msgs[0].kind, AMI_MSG_BANNER);
        assert_string_equal(ref_name(&r, 0), "Asterisk Call Manager/11.0.0");
        assert_int_equal(r.msgs[0].wire_len, strlen("Asterisk Call Manager/11.0.0\r\n"));
        for (size_t j = 1; j < r.n; j++)
            assert_true(r.msgs[j].kind == AMI_MSG_RESPONSE || r.msgs[j].kind == AMI_MSG_EVENT);
        ref_free(&r);
    }
}

static void test_event_stream_mixed_has_682_messages_658_events(void **state)
{
    (void)state;
    ref_list_t r;
    load_ref("event-stream-mixed", &r);
    size_t events = 0, responses = 0, banners = 0;
    for (size_t i = 0; i < r.n; i++) {
        events += r.msgs[i].kind == AMI_MSG_EVENT;
        responses += r.msgs[i].kind == AMI_MSG_RESPONSE;
        banners += r.msgs[i].kind == AMI_MSG_BANNER;
    }
    assert_int_equal(r.n, 683);
    assert_int_equal(banners, 1);
    assert_int_equal(events, 658);
    assert_int_equal(responses, 24);
    ref_free(&r);
}

static void test_banner_is_a_banner_message(void **state)
{
    (void)state;
    ref_list_t r;
    load_ref("auth-timeout", &r);
    assert_int_equal(r.n, 1);
    view_t v;
    view_of(&r, 0, &v);
    assert_int_equal(v.m.kind, AMI_MSG_BANNER);
    assert_int_equal(v.m.nhdrs, 1);
    assert_string_equal(ami_msg_key(&v.m, 0, NULL), "Banner");
    assert_string_equal(ami_msg_get(&v.m, "Banner"), "Asterisk Call Manager/11.0.0");
    assert_string_equal(ami_msg_name(&v.m), "Asterisk Call Manager/11.0.0");
    assert_int_equal(v.m.actionid_idx, -1);
    assert_false(ami_msg_is_success(&v.m));
    view_free(&v);
    ref_free(&r);
}

static void test_ping_without_actionid_has_no_actionid(void **state)
{
    (void)state;
    ref_list_t r;
    load_ref("ping", &r);
    /* banner, login, FullyBooted, SuccessfulAuth, ping-1, (no id), ping-lc, logoff */
    assert_int_equal(r.n, 8);
    long first = find_msg(&r, 0, "ActionID", "ping-1");
    assert_int_equal(first, 4);
    view_t v;
    view_of(&r, 5, &v);
    assert_int_equal(v.m.kind, AMI_MSG_RESPONSE);
    assert_string_equal(ami_msg_get(&v.m, "Ping"), "Pong");
    assert_int_equal(v.m.actionid_idx, -1);
    assert_null(ami_msg_action_id(&v.m, NULL));
    assert_null(ami_msg_get(&v.m, "ActionID"));
    assert_true(ami_msg_is_success(&v.m));
    view_free(&v);
    ref_free(&r);
}

static void test_keys_are_looked_up_case_insensitively(void **state)
{
    (void)state;
    ref_list_t r;
    load_ref("ping", &r);
    view_t v;
    view_of(&r, 6, &v); /* the reply to "action: PING / actionid: ping-lc" */
    assert_int_equal(v.m.actionid_idx, 1);
    assert_string_equal(ami_msg_get(&v.m, "actionid"), "ping-lc");
    assert_string_equal(ami_msg_get(&v.m, "ACTIONID"), "ping-lc");
    assert_string_equal(ami_msg_get(&v.m, "ActionID"), "ping-lc");
    assert_string_equal(ami_msg_get(&v.m, "response"), "Success");
    assert_string_equal(ami_msg_get(&v.m, "pInG"), "Pong");
    size_t len = 0;
    assert_string_equal(ami_msg_action_id(&v.m, &len), "ping-lc");
    assert_int_equal(len, 7);
    view_free(&v);
    ref_free(&r);
}

/* The Output lines of the cmd-2 reply, read straight from the raw file. */
static size_t raw_output_lines(const char *data, char lines[][128], size_t max)
{
    const char *p = strstr(data, "ActionID: cmd-2\r\n");
    assert_non_null(p);
    const char *end = strstr(p, "\r\n\r\n");
    assert_non_null(end);
    size_t n = 0;
    while (p < end) {
        const char *eol = strstr(p, "\r\n");
        if (strncmp(p, "Output: ", 8) == 0) {
            assert_true(n < max);
            size_t len = (size_t)(eol - p) - 8;
            assert_true(len < 128);
            memcpy(lines[n], p + 8, len);
            lines[n][len] = '\0';
            n++;
        }
        p = eol + 2;
    }
    return n;
}

static void test_command_multiline_output_lines_in_order_with_an_empty_one(void **state)
{
    (void)state;
    fixture_t fx = fixture_load("command-multiline", ".ami");
    static char lines[64][128];
    size_t nraw = raw_output_lines(fx.data, lines, 64);
    assert_int_equal(nraw, 31);
    ref_list_t r;
    build_ref(&fx, &r);
    long i = find_msg(&r, 0, "ActionID", "cmd-2");
    assert_true(i > 0);
    view_t v;
    view_of(&r, (size_t)i, &v);
    assert_int_equal(v.m.kind, AMI_MSG_RESPONSE);
    assert_false(v.m.legacy_command);
    assert_string_equal(ami_msg_get(&v.m, "Message"), "Command output follows");
    assert_int_equal(v.m.nhdrs, 3 + 31);
    size_t k = 0, empties = 0;
    for (long at = ami_msg_next_index(&v.m, "Output", 6, 0); at >= 0;
         at = ami_msg_next_index(&v.m, "output", 6, (size_t)at + 1), k++) {
        assert_true(k < nraw);
        size_t len;
        const char *val = ami_msg_value(&v.m, (size_t)at, &len);
        assert_int_equal(at, 3 + (long)k);
        assert_string_equal(val, lines[k]);
        assert_int_equal(len, strlen(lines[k]));
        empties += len == 0;
    }
    assert_int_equal(k, 31);
    assert_int_equal(empties, 1);
    assert_string_equal(ami_msg_value(&v.m, 3 + 29, NULL), "");
    assert_string_equal(ami_msg_value(&v.m, 3 + 0, NULL), "[ Context 'test' created by 'pbx_config' ]");
    /* leading blanks of CLI output are kept */
    assert_string_equal(ami_msg_value(&v.m, 3 + 2, NULL),
                        "                    2. Wait(2)                                    [extensions.conf:12]");
    assert_string_equal(ami_msg_value(&v.m, 3 + 30, NULL), "-= 9 extensions (28 priorities) in 1 context. =-");
    assert_string_equal(ami_msg_get(&v.m, "Output"), "[ Context 'test' created by 'pbx_config' ]");
    view_free(&v);
    ref_free(&r);
    fixture_free(&fx);
}

static void test_userevent_value_keeps_colon_space(void **state)
{
    (void)state;
    ref_list_t r;
    load_ref("userevent", &r);
    long i = find_msg(&r, 0, "UserEvent", "EngineProbe");
    assert_true(i > 0);
    view_t v;
    view_of(&r, (size_t)i, &v);
    assert_int_equal(v.m.kind, AMI_MSG_EVENT);
    assert_string_equal(ami_msg_name(&v.m), "UserEvent");
    assert_string_equal(ami_msg_get(&v.m, "Header1"), "alpha");
    assert_string_equal(ami_msg_get(&v.m, "Header2"), "beta: gamma");
    /* the UserEvent action copies the ActionID into the event */
    assert_int_equal(v.m.actionid_idx, 3);
    assert_string_equal(ami_msg_action_id(&v.m, NULL), "ue-1");
    view_free(&v);
    ref_free(&r);

    load_ref("event-stream-mixed", &r);
    i = find_msg(&r, 0, "AppData", "EngineTest,Source: dialplan,Step: 1");
    assert_true(i > 0);
    assert_int_equal(r.msgs[i].kind, AMI_MSG_EVENT);
    ref_free(&r);
}

static void test_empty_values_with_trailing_space_are_empty(void **state)
{
    (void)state;
    fixture_t fx = fixture_load("event-stream-mixed", ".ami");
    size_t raw = 0;
    for (const char *p = fx.data; (p = strstr(p, "\r\nAccountCode: \r\n")) != NULL; p += 2)
        raw++;
    assert_true(raw > 100);
    ref_list_t r;
    build_ref(&fx, &r);
    size_t parsed = 0;
    for (size_t i = 0; i < r.n; i++) {
        for (size_t j = 0; j < r.msgs[i].nh; j++) {
            const ref_hdr_t *h = &r.hdrs[r.msgs[i].h0 + j];
            if (h->klen == 11 && memcmp(r.arena + h->koff, "AccountCode", 11) == 0) {
                assert_int_equal(h->vlen, 0);
                parsed++;
            }
        }
    }
    assert_int_equal(parsed, raw);
    /* and through the accessors, NUL-terminated */
    long i = find_msg(&r, 1, "AccountCode", "");
    assert_true(i > 0);
    view_t v;
    view_of(&r, (size_t)i, &v);
    size_t len = 99;
    const char *val = ami_msg_getn(&v.m, "accountcode", 11, &len);
    assert_non_null(val);
    assert_int_equal(len, 0);
    assert_int_equal(val[0], '\0');
    view_free(&v);
    ref_free(&r);
    fixture_free(&fx);

    /* Getvar of an unset variable: "Value: " */
    load_ref("getvar-setvar", &r);
    i = find_msg(&r, 1, "Value", "");
    assert_true(i > 0);
    assert_int_equal(r.msgs[i].kind, AMI_MSG_RESPONSE);
    assert_string_equal(ref_name(&r, (size_t)i), "Success");
    ref_free(&r);
}

static void test_status_event_variable_and_trailing_actionid(void **state)
{
    (void)state;
    /* The README says Variable: may repeat in Status events; this recording
     * asked for one variable (Variables: CALLTAG), so each Status event has a
     * single Variable header. The repeated-Variable case is exercised on the
     * recorded Originate request below. */
    ref_list_t r;
    load_ref("status", &r);
    long i = find_msg(&r, 1, "Variable", "CALLTAG=long-status-a2");
    assert_true(i > 0);
    view_t v;
    view_of(&r, (size_t)i, &v);
    assert_int_equal(v.m.kind, AMI_MSG_EVENT);
    assert_string_equal(ami_msg_name(&v.m), "Status");
    assert_string_equal(ami_msg_get(&v.m, "Privilege"), "Call");
    long at = ami_msg_next_index(&v.m, "Variable", 8, 0);
    assert_true(at > 0);
    assert_int_equal(ami_msg_next_index(&v.m, "variable", 8, (size_t)at + 1), -1);
    /* ActionID is the last line of a Status event */
    assert_int_equal(v.m.actionid_idx, (int32_t)v.m.nhdrs - 1);
    assert_string_equal(ami_msg_action_id(&v.m, NULL), "status-exact");
    assert_int_equal(at, (long)v.m.nhdrs - 2);
    /* empty values in the middle: "Readtrans: " */
    assert_string_equal(ami_msg_get(&v.m, "Readtrans"), "");
    view_free(&v);
    ref_free(&r);
}

static void test_duplicate_variable_keys_kept_in_order(void **state)
{
    (void)state;
    /* The client's recorded Originate request carries two Variable headers;
     * a server-side reader (no banner expected) keeps both, in order. */
    fixture_t fx = fixture_load("originate-exten", ".sent");
    ami_parser_t p;
    parser_new(&p);
    ami_parser_expect_banner(&p, false);
    assert_int_equal(ami_parser_feed(&p, fx.data, fx.len, NULL), 0);
    ami_msg_t m;
    ami_err_t err;
    int found = 0;
    while (ami_parser_next(&p, &m, &err) == 1) {
        if (strcmp(ami_msg_name(&m), "Originate") != 0)
            continue;
        found++;
        assert_int_equal(m.kind, AMI_MSG_OTHER);
        long a = ami_msg_next_index(&m, "Variable", 8, 0);
        long b = ami_msg_next_index(&m, "Variable", 8, (size_t)a + 1);
        assert_true(a > 0 && b > a);
        assert_int_equal(ami_msg_next_index(&m, "Variable", 8, (size_t)b + 1), -1);
        assert_string_equal(ami_msg_value(&m, (size_t)a, NULL), "ORIGVAR=one");
        assert_string_equal(ami_msg_value(&m, (size_t)b, NULL), "ORIGVAR2=two");
        assert_string_equal(ami_msg_get(&m, "Variable"), "ORIGVAR=one");
        assert_int_equal(b, a + 1);
        assert_string_equal(ami_msg_value(&m, (size_t)b + 1, NULL), "eng-chan-1");
        assert_string_equal(ami_msg_get(&m, "CallerID"), "\"Engine Test\" <5551234>");
    }
    assert_int_equal(found, 1);
    assert_int_equal(ami_parser_buffered(&p), 0);
    ami_parser_deinit(&p);
    fixture_free(&fx);
}

static void test_originate_response_is_an_event_despite_response_header(void **state)
{
    (void)state;
    ref_list_t r;
    load_ref("originate-async", &r);
    long i = find_msg(&r, 1, "Event", "OriginateResponse");
    assert_true(i > 0);
    view_t v;
    view_of(&r, (size_t)i, &v);
    assert_int_equal(v.m.kind, AMI_MSG_EVENT);
    assert_string_equal(ami_msg_name(&v.m), "OriginateResponse");
    assert_string_equal(ami_msg_get(&v.m, "Response"), "Success");
    assert_false(ami_msg_is_success(&v.m)); /* only responses report success */
    assert_string_equal(ami_msg_action_id(&v.m, NULL), "orig-async-1");
    assert_string_equal(ami_msg_get(&v.m, "Reason"), "4");
    view_free(&v);
    /* and the queued response before it is a response */
    long q = find_msg(&r, 1, "Message", "Originate successfully queued");
    assert_true(q > 0 && q < i);
    assert_int_equal(r.msgs[q].kind, AMI_MSG_RESPONSE);
    ref_free(&r);

    load_ref("security-events", &r);
    i = find_msg(&r, 1, "Event", "ChallengeResponseFailed");
    assert_true(i > 0);
    assert_int_equal(r.msgs[i].kind, AMI_MSG_EVENT);
    ref_free(&r);
}

static void test_eventlist_start_and_list_complete_preserved(void **state)
{
    (void)state;
    ref_list_t r;
    load_ref("core-show-channels-empty", &r);
    long i = find_msg(&r, 1, "EventList", "start");
    assert_true(i > 0);
    assert_int_equal(r.msgs[i].kind, AMI_MSG_RESPONSE);
    long c = find_msg(&r, 1, "Event", "CoreShowChannelsComplete");
    assert_true(c > i);
    view_t v;
    view_of(&r, (size_t)c, &v);
    assert_string_equal(ami_msg_get(&v.m, "EventList"), "Complete");
    assert_string_equal(ami_msg_get(&v.m, "ListItems"), "0");
    assert_int_equal(v.m.actionid_idx, 1);
    view_free(&v);
    ref_free(&r);
}

static void test_error_responses_are_not_success(void **state)
{
    (void)state;
    ref_list_t r;
    load_ref("login-bad-secret", &r);
    assert_int_equal(r.n, 2);
    view_t v;
    view_of(&r, 1, &v);
    assert_int_equal(v.m.kind, AMI_MSG_RESPONSE);
    assert_string_equal(ami_msg_name(&v.m), "Error");
    assert_string_equal(ami_msg_get(&v.m, "Message"), "Authentication failed");
    assert_false(ami_msg_is_success(&v.m));
    view_free(&v);
    ref_free(&r);

    load_ref("logoff", &r);
    long i = find_msg(&r, 1, "Response", "Goodbye");
    assert_true(i > 0);
    view_of(&r, (size_t)i, &v);
    assert_true(ami_msg_is_success(&v.m));
    assert_string_equal(ami_msg_get(&v.m, "Message"), "Thanks for all the fish.");
    view_free(&v);
    ref_free(&r);

    load_ref("filter", &r);
    i = find_msg(&r, 1, "Message", "Filter did not compile.  Check the syntax of the filter given.");
    assert_true(i > 0);
    assert_string_equal(ref_name(&r, (size_t)i), "Error");
    ref_free(&r);
}

static void test_list_commands_value_drops_exactly_one_space(void **state)
{
    (void)state;
    ref_list_t r;
    load_ref("list-commands", &r);
    long i = find_msg(&r, 1, "ActionID", "lc-1");
    assert_true(i > 0);
    view_t v;
    view_of(&r, (size_t)i, &v);
    /* "AbsoluteTimeout:  (Priv: system,call,all)": two spaces on the wire */
    assert_string_equal(ami_msg_get(&v.m, "AbsoluteTimeout"), " (Priv: system,call,all)");
    assert_string_equal(ami_msg_get(&v.m, "BridgeInfo"), " (Priv: <none>)");
    assert_int_equal(v.m.nhdrs, 2 + 88); /* Response, ActionID, one header per action */
    view_free(&v);
    ref_free(&r);
}

/* The client side of every recording, read by a server-side parser. */
static void test_sent_requests_parse_without_banner(void **state)
{
    (void)state;
    for (const char *const *n = fixture_names(); *n; n++) {
        fixture_t fx = fixture_load(*n, ".sent");
        size_t blocks = 0;
        for (size_t i = 0; i + 1 < fx.len; i++)
            if (fx.data[i] == '\n' && (fx.data[i + 1] == '\n' ||
                                       (fx.data[i + 1] == '\r' && i + 2 < fx.len && fx.data[i + 2] == '\n')))
                blocks++;
        ami_parser_t p;
        parser_new(&p);
        ami_parser_expect_banner(&p, false);
        for (size_t i = 0; i < fx.len; i++)
            assert_int_equal(ami_parser_feed(&p, fx.data + i, 1, NULL), 0);
        ami_msg_t m;
        ami_err_t err;
        size_t msgs = 0, bytes = 0;
        int rc;
        while ((rc = ami_parser_next(&p, &m, &err)) == 1) {
            assert_int_equal(m.kind, AMI_MSG_OTHER);
            msgs++;
            bytes += m.wire_len;
        }
        if (rc < 0)
            fail_msg("%s.sent: %s", *n, err.msg);
        if (msgs != blocks)
            fail_msg("%s.sent: %zu messages, expected %zu", *n, msgs, blocks);
        assert_int_equal(bytes, fx.len);
        assert_int_equal(ami_parser_buffered(&p), 0);
        ami_parser_deinit(&p);
        fixture_free(&fx);
    }
}

static void test_pipelined_lf_only_request_parses(void **state)
{
    (void)state;
    fixture_t fx = fixture_load("pipelined", ".sent");
    ami_parser_t p;
    parser_new(&p);
    ami_parser_expect_banner(&p, false);
    assert_int_equal(ami_parser_feed(&p, fx.data, fx.len, NULL), 0);
    ami_msg_t m;
    ami_err_t err;
    bool seen = false;
    while (ami_parser_next(&p, &m, &err) == 1) {
        const char *id = ami_msg_action_id(&m, NULL);
        if (id && strcmp(id, "lf-1") == 0) {
            seen = true;
            assert_string_equal(ami_msg_name(&m), "Ping");
            assert_int_equal(m.nhdrs, 2);
            assert_int_equal(m.wire_len, strlen("Action: Ping\nActionID: lf-1\n\n"));
        }
    }
    assert_true(seen);
    ami_parser_deinit(&p);
    fixture_free(&fx);
}

static void actionid_as_first_header_is_indexed(void **state)
{
    (void)state;
    fixture_t fx = fixture_load("unknown-action", ".sent");
    ami_parser_t p;
    parser_new(&p);
    ami_parser_expect_banner(&p, false);
    assert_int_equal(ami_parser_feed(&p, fx.data, fx.len, NULL), 0);
    ami_msg_t m;
    ami_err_t err;
    int seen = 0, kind = -1;
    int32_t idx = -2;
    char got_get[32] = "(null)", got_aid[32] = "(null)";
    while (ami_parser_next(&p, &m, &err) == 1) {
        if (ami_msg_get(&m, "Foo") == NULL)
            continue;
        seen++;
        kind = (int)m.kind;
        idx = m.actionid_idx;
        const char *v = ami_msg_get(&m, "ActionID");
        if (v)
            snprintf(got_get, sizeof got_get, "%s", v);
        v = ami_msg_action_id(&m, NULL);
        if (v)
            snprintf(got_aid, sizeof got_aid, "%s", v);
    }
    /* free first: the assertions below fail until the parser is fixed */
    ami_parser_deinit(&p);
    fixture_free(&fx);
    assert_int_equal(seen, 1);
    assert_int_equal(kind, AMI_MSG_OTHER);
    assert_string_equal(got_get, "noact-1");
    assert_int_equal(idx, 0);
    assert_string_equal(got_aid, "noact-1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_counts_match_the_recordings),
        cmocka_unit_test(test_event_stream_mixed_has_682_messages_658_events),
        cmocka_unit_test(test_banner_is_a_banner_message),
        cmocka_unit_test(test_every_split_point_gives_the_same_messages),
        cmocka_unit_test(test_one_byte_at_a_time_gives_the_same_messages),
        cmocka_unit_test(test_random_chunkings_give_the_same_messages),
        cmocka_unit_test(test_reserve_commit_small_reads_give_the_same_messages),
        cmocka_unit_test(test_ping_without_actionid_has_no_actionid),
        cmocka_unit_test(test_keys_are_looked_up_case_insensitively),
        cmocka_unit_test(test_command_multiline_output_lines_in_order_with_an_empty_one),
        cmocka_unit_test(test_userevent_value_keeps_colon_space),
        cmocka_unit_test(test_empty_values_with_trailing_space_are_empty),
        cmocka_unit_test(test_status_event_variable_and_trailing_actionid),
        cmocka_unit_test(test_duplicate_variable_keys_kept_in_order),
        cmocka_unit_test(test_originate_response_is_an_event_despite_response_header),
        cmocka_unit_test(test_eventlist_start_and_list_complete_preserved),
        cmocka_unit_test(test_error_responses_are_not_success),
        cmocka_unit_test(test_list_commands_value_drops_exactly_one_space),
        cmocka_unit_test(test_sent_requests_parse_without_banner),
        cmocka_unit_test(test_pipelined_lf_only_request_parses),
        cmocka_unit_test(actionid_as_first_header_is_indexed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
