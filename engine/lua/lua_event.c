/*
 * Event objects: the table-like view scripts get of an AMI message.
 *
 * One userdata per event holds a private copy of the message (its header
 * slices and bytes), so an event kept past a yield or stored in a global
 * stays valid and unchanged after the parser's buffer moves on. No Lua
 * table is built: ev.Channel scans the copied headers (case-insensitive)
 * and pushes one string. The same object is handed to every handler of
 * the event.
 *
 *   ev.Channel, ev.channel   first header of that name, or nil
 *   ev.server                the server_key it came from
 *   ev:get(key)              same as ev[key], for keys that clash with methods
 *   ev:all(key)              every value of a repeated key, as an array
 *   ev:headers()             iterator over key, value in arrival order
 *   ev:totable()             {Key = value or {v1, v2, ...}}
 *   ev:name()                the Event (or Response) value
 *   ev:is_response()
 *   #ev                      number of headers
 */
#include <stddef.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "lua/lua_internal.h"
#include "protocol/message.h"

/* Most messages are small: their header slices fit in 8 bytes instead of
 * 16, a third less to allocate (and for the GC to pay for) per event. */
typedef struct hdr_small {
    uint16_t key_off; /* UINT16_MAX: synthetic "Output", UINT16_MAX - 1: "Banner" */
    uint16_t key_len;
    uint16_t val_off;
    uint16_t val_len;
} hdr_small_t;

#define EVENT_MAGIC 0x45564e54u /* "EVNT": engine userdata are told apart by a tag */

typedef struct event_obj {
    uint32_t magic;
    uint32_t nhdrs;
    uint32_t text_len;
    uint8_t kind;
    uint8_t server_len;
    bool small;
    union {
        ami_hdr_t wide[1];
        hdr_small_t narrow[1];
    } h;
    /* the header slices, then text_len bytes of message text, then the server key */
} event_obj_t;

#define OBJ_HEAD offsetof(event_obj_t, h)

static size_t slice_size(bool small)
{
    return small ? sizeof(hdr_small_t) : sizeof(ami_hdr_t);
}

static const char *text_of(const event_obj_t *e)
{
    return (const char *)e + OBJ_HEAD + e->nhdrs * slice_size(e->small);
}

static const char *server_of(const event_obj_t *e)
{
    return text_of(e) + e->text_len;
}

/* One header's key and value, whichever the layout. */
static void slice_of(const event_obj_t *e, uint32_t i, const char **k, size_t *klen, const char **v,
                     size_t *vlen)
{
    const char *text = text_of(e);
    uint32_t koff, kl;
    if (e->small) {
        const hdr_small_t *h = &e->h.narrow[i];
        koff = h->key_off >= UINT16_MAX - 1 ? (h->key_off == UINT16_MAX ? AMI_HDR_KEY_OUTPUT : AMI_HDR_KEY_BANNER)
                                            : h->key_off;
        kl = h->key_len;
        *v = text + h->val_off;
        *vlen = h->val_len;
    } else {
        const ami_hdr_t *h = &e->h.wide[i];
        koff = h->key_off;
        kl = h->key_len;
        *v = text + h->val_off;
        *vlen = h->val_len;
    }
    if (koff >= AMI_HDR_KEY_BANNER) {
        *k = koff == AMI_HDR_KEY_OUTPUT ? "Output" : "Banner";
        *klen = 6;
    } else {
        *k = text + koff;
        *klen = kl;
    }
}

static void key_of(const event_obj_t *e, uint32_t i, const char **k, size_t *klen)
{
    const char *v;
    size_t vlen;
    slice_of(e, i, k, klen, &v, &vlen);
}

static void push_value(lua_State *L, const event_obj_t *e, uint32_t i)
{
    const char *k, *v;
    size_t klen, vlen;
    slice_of(e, i, &k, &klen, &v, &vlen);
    lua_pushlstring(L, v, vlen);
}

/* ASCII case-insensitive equality of two keys of length n, a word at a time
 * (the byte loop of ami_str_ieq was the most of a field read's search). */
static inline bool key_ieq(const char *a, const char *b, size_t n)
{
    uint64_t x = 0, y = 0;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&x, a + i, 8);
            memcpy(&y, b + i, 8);
            if (ami_lower8(x) != ami_lower8(y))
                return false;
        }
        memcpy(&x, a + n - 8, 8);
        memcpy(&y, b + n - 8, 8);
        return ami_lower8(x) == ami_lower8(y);
    }
    if (n >= 4) {
        uint32_t x0, x1, y0, y1;
        memcpy(&x0, a, 4);
        memcpy(&x1, a + n - 4, 4);
        memcpy(&y0, b, 4);
        memcpy(&y1, b + n - 4, 4);
        return ami_lower8((uint64_t)x0 | (uint64_t)x1 << 32) == ami_lower8((uint64_t)y0 | (uint64_t)y1 << 32);
    }
    for (size_t i = 0; i < n; i++) {
        x |= (uint64_t)(unsigned char)a[i] << (8 * i);
        y |= (uint64_t)(unsigned char)b[i] << (8 * i);
    }
    return ami_lower8(x) == ami_lower8(y);
}

/* Whether narrow slice i is named key (its length already matched). */
static inline bool narrow_named(const event_obj_t *e, const char *text, uint32_t i, const char *key, size_t klen,
                                unsigned char first)
{
    const hdr_small_t *h = &e->h.narrow[i];
    const char *k = h->key_off < UINT16_MAX - 1 ? text + h->key_off
                    : h->key_off == UINT16_MAX  ? "Output"
                                                : "Banner";
    return (unsigned char)(k[0] | 0x20) == first && key_ieq(k, key, klen);
}

/* The first header named key at or after `from`, or -1. Per layout, so
 * the loop over the headers (every field read walks it) carries no
 * branch on the layout. With SSE2 the key lengths of four slices are
 * compared at once (bytes 2-3 of each 8-byte slice): the walk was a chain
 * of a load, a compare and a branch per header. */
static long find_narrow(const event_obj_t *e, const char *key, size_t klen, uint32_t from)
{
    const char *text = text_of(e);
    unsigned char first = (unsigned char)(key[0] | 0x20);
    uint32_t i = from;
#ifdef __SSE2__
    const __m128i want = _mm_set1_epi16((short)(uint16_t)klen);
    for (; i + 4 <= e->nhdrs; i += 4) {
        const __m128i *at = (const __m128i *)(const void *)&e->h.narrow[i];
        unsigned lo = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi16(_mm_loadu_si128(at), want));
        unsigned hi = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi16(_mm_loadu_si128(at + 1), want));
        for (unsigned m = (lo | hi << 16) & 0x04040404u; m; m &= m - 1) {
            uint32_t j = i + ((unsigned)__builtin_ctz(m) >> 3);
            if (narrow_named(e, text, j, key, klen, first))
                return (long)j;
        }
    }
#endif
    for (; i < e->nhdrs; i++)
        if (e->h.narrow[i].key_len == klen && narrow_named(e, text, i, key, klen, first))
            return (long)i;
    return -1;
}

static long find_wide(const event_obj_t *e, const char *key, size_t klen, uint32_t from)
{
    for (uint32_t i = from; i < e->nhdrs; i++) {
        if (e->h.wide[i].key_len != klen)
            continue;
        const char *k;
        size_t n;
        key_of(e, i, &k, &n);
        if (ami_str_ieq(k, n, key, klen))
            return (long)i;
    }
    return -1;
}

static long find(const event_obj_t *e, const char *key, size_t klen, uint32_t from)
{
    if (e->small)
        return klen <= UINT16_MAX ? find_narrow(e, key, klen, from) : -1;
    return find_wide(e, key, klen, from);
}

/* Every offset and length of a message's slices is within its text (the
 * synthetic keys' are 6), so a short text is all it takes. */
static bool fits_small(const ami_msg_t *msg)
{
    return msg->wire_len < UINT16_MAX - 1;
}

/* Synthetic keys (Output, Banner) map to the two top offsets by truncation
 * (every real offset is below them: the message is shorter than
 * UINT16_MAX - 1). A narrow slice is the low halves of a wide one's four
 * fields, in the same order: with SSE2, three shuffles and one 8-byte
 * store per slice (the scalar version assembled it with shifts and masks
 * and was most of the object's cost). */
_Static_assert((uint16_t)AMI_HDR_KEY_OUTPUT == UINT16_MAX && (uint16_t)AMI_HDR_KEY_BANNER == UINT16_MAX - 1,
               "the synthetic key offsets must truncate onto the narrow layout's markers");
_Static_assert(sizeof(ami_hdr_t) == 16 && offsetof(ami_hdr_t, key_len) == 4 && offsetof(ami_hdr_t, val_off) == 8 &&
                   sizeof(hdr_small_t) == 8 && offsetof(hdr_small_t, key_len) == 2 &&
                   offsetof(hdr_small_t, val_off) == 4,
               "a narrow slice is a wide one's fields, halved, in the same order");

static void copy_narrow(hdr_small_t *dst, const ami_hdr_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
#ifdef __SSE2__
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)&src[i]);
        v = _mm_shufflelo_epi16(v, _MM_SHUFFLE(3, 3, 2, 0));
        v = _mm_shufflehi_epi16(v, _MM_SHUFFLE(3, 3, 2, 0));
        v = _mm_shuffle_epi32(v, _MM_SHUFFLE(3, 3, 2, 0));
        _mm_storel_epi64((__m128i *)(void *)&dst[i], v);
#else
        dst[i] = (hdr_small_t){
            .key_off = (uint16_t)src[i].key_off,
            .key_len = (uint16_t)src[i].key_len,
            .val_off = (uint16_t)src[i].val_off,
            .val_len = (uint16_t)src[i].val_len,
        };
#endif
    }
}

void event_push(script_t *sc, lua_State *L, const ami_msg_t *msg, const char *server_key)
{
    size_t slen = server_key ? strlen(server_key) : 0;
    if (slen > 255)
        slen = 255;
    bool small = fits_small(msg);
    size_t slices = msg->nhdrs * slice_size(small);
    event_obj_t *e = lua_newuserdata(L, OBJ_HEAD + slices + msg->wire_len + slen);
    e->magic = EVENT_MAGIC;
    e->nhdrs = (uint32_t)msg->nhdrs;
    e->text_len = (uint32_t)msg->wire_len;
    e->kind = (uint8_t)msg->kind;
    e->server_len = (uint8_t)slen;
    e->small = small;
    if (small)
        copy_narrow(e->h.narrow, msg->hdrs, msg->nhdrs);
    else
        memcpy(e->h.wide, msg->hdrs, msg->nhdrs * sizeof(ami_hdr_t));
    char *text = (char *)e + OBJ_HEAD + slices;
    memcpy(text, msg->base, msg->wire_len);
    memcpy(text + msg->wire_len, server_key, slen);
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->event_mt_ref);
    lua_setmetatable(L, -2);
}

/* The event object at idx, or NULL: a full userdata of at least our
 * header's size with our tag (only the engine makes userdata, and no other
 * kind of ours carries this tag). Cheap enough for every field read. */
static event_obj_t *to_event(lua_State *L, int idx)
{
    event_obj_t *e = lua_touserdata(L, idx);
    /* A light userdata has no length (0): only a full one of our size gets
     * its tag read. */
    if (!e || lua_objlen(L, idx) < OBJ_HEAD)
        return NULL;
    return e->magic == EVENT_MAGIC ? e : NULL;
}

MAY_RAISE static event_obj_t *check_event(lua_State *L, int idx)
{
    event_obj_t *e = to_event(L, idx);
    if (!e)
        luaL_argerror(L, idx, "event object expected");
    return e;
}

/* __index: methods and "server" first (exact names), then headers
 * (case-insensitive). The methods table is upvalue 1. */
static int event_index(lua_State *L)
{
    const event_obj_t *e = to_event(L, 1);
    if (!e || lua_type(L, 2) != LUA_TSTRING)
        return 0;
    size_t klen;
    const char *key = lua_tolstring(L, 2, &klen);
    if (klen == 6 && memcmp(key, "server", 6) == 0) {
        lua_pushlstring(L, server_of(e), e->server_len);
        return 1;
    }
    if (key[0] >= 'a' && key[0] <= 'z') {
        lua_pushvalue(L, 2);
        lua_rawget(L, lua_upvalueindex(1));
        if (!lua_isnil(L, -1))
            return 1;
        lua_pop(L, 1);
    }
    long i = find(e, key, klen, 0);
    if (i < 0)
        return 0;
    push_value(L, e, (uint32_t)i);
    return 1;
}

static int event_newindex(lua_State *L)
{
    return luaL_error(L, "events are read-only: copy what you need with ev:totable()");
}

static int event_get(lua_State *L)
{
    const event_obj_t *e = check_event(L, 1);
    size_t klen;
    const char *key = luaL_checklstring(L, 2, &klen);
    long i = find(e, key, klen, 0);
    if (i < 0)
        return 0;
    push_value(L, e, (uint32_t)i);
    return 1;
}

static int event_all(lua_State *L)
{
    const event_obj_t *e = check_event(L, 1);
    size_t klen;
    const char *key = luaL_checklstring(L, 2, &klen);
    lua_newtable(L);
    int n = 0;
    for (long i = find(e, key, klen, 0); i >= 0; i = find(e, key, klen, (uint32_t)i + 1)) {
        push_value(L, e, (uint32_t)i);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

static int headers_iter(lua_State *L)
{
    const event_obj_t *e = check_event(L, lua_upvalueindex(1));
    uint32_t i = (uint32_t)lua_tointeger(L, lua_upvalueindex(2));
    if (i >= e->nhdrs)
        return 0;
    lua_pushinteger(L, i + 1);
    lua_replace(L, lua_upvalueindex(2));
    const char *k;
    size_t klen;
    key_of(e, i, &k, &klen);
    lua_pushlstring(L, k, klen);
    push_value(L, e, i);
    return 2;
}

static int event_headers(lua_State *L)
{
    check_event(L, 1);
    lua_pushvalue(L, 1);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, headers_iter, 2);
    return 1;
}

/* With key and value on top of the stack: t[key] = value, or, for a repeated
 * key, t[key] = {first, second, ...}. Pops both. */
static void add_to_table(lua_State *L, int t)
{
    lua_pushvalue(L, -2);
    lua_rawget(L, t);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_rawset(L, t);
        return;
    }
    if (lua_istable(L, -1)) {
        lua_insert(L, -2);
        lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
        lua_pop(L, 2);
        return;
    }
    lua_createtable(L, 2, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 1);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 2);
    lua_rawset(L, t);
}

static int event_totable(lua_State *L)
{
    const event_obj_t *e = check_event(L, 1);
    lua_createtable(L, 0, (int)e->nhdrs);
    int t = lua_gettop(L);
    for (uint32_t i = 0; i < e->nhdrs; i++) {
        const char *k;
        size_t klen;
        key_of(e, i, &k, &klen);
        lua_pushlstring(L, k, klen);
        push_value(L, e, i);
        add_to_table(L, t);
    }
    return 1;
}

static int event_name(lua_State *L)
{
    const event_obj_t *e = check_event(L, 1);
    if (e->nhdrs == 0)
        return 0;
    push_value(L, e, 0);
    return 1;
}

static int event_is_response(lua_State *L)
{
    const event_obj_t *e = check_event(L, 1);
    lua_pushboolean(L, e->kind == AMI_MSG_RESPONSE);
    return 1;
}

static int event_len(lua_State *L)
{
    const event_obj_t *e = check_event(L, 1);
    lua_pushinteger(L, (lua_Integer)e->nhdrs);
    return 1;
}

static int event_tostring(lua_State *L)
{
    const event_obj_t *e = check_event(L, 1);
    const char *kind = e->kind == AMI_MSG_RESPONSE ? "response" : "event";
    if (e->nhdrs == 0) {
        lua_pushfstring(L, "empty %s", kind);
        return 1;
    }
    push_value(L, e, 0);
    lua_pushlstring(L, server_of(e), e->server_len);
    lua_pushfstring(L, "%s %s from %s (%d headers)", lua_tostring(L, -2), kind, lua_tostring(L, -1),
                    (int)e->nhdrs);
    return 1;
}

void ami_lua_inject_event(lua_State *L, script_t *sc)
{
    static const luaL_Reg methods[] = {
        {"get", event_get},       {"all", event_all},   {"headers", event_headers},
        {"totable", event_totable}, {"name", event_name}, {"is_response", event_is_response},
        {NULL, NULL},
    };
    lua_newtable(L); /* the metatable */
    lua_newtable(L); /* methods: upvalue of __index */
    luaL_register(L, NULL, methods);
    lua_pushcclosure(L, event_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, event_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, event_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, event_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "ami.event");
    lua_setfield(L, -2, "__metatable");
    sc->event_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}
