/*
 * ami.on / ami.off / ami.wait_for / ami.pattern, and event dispatch.
 *
 * Filters are compiled to C when registered, so an event that matches no
 * handler costs no Lua at all: no event object, no coroutine. An event
 * object is made once, on the first match, and shared by every handler of
 * the event. Handlers are indexed by event name; filters without an Event
 * are checked for every event.
 *
 *   ami.on("Hangup", fn)
 *   ami.on({Event = "Newchannel", Context = "from-pstn"}, fn)    -- exact values
 *   ami.on({Event = "Hangup", Channel = ami.pattern("^PJSIP/")}, fn) -- Lua pattern
 *   ami.on("*", fn)                                                -- every event
 *   local ev, err = ami.wait_for({Event = "Hangup", Uniqueid = id}, 30000)
 */
#include <string.h>

#include "lua/lua_internal.h"
#include "util/alloc.h"

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* ---- filters ------------------------------------------------------------------- */

static bool is_pattern(lua_State *L, int idx)
{
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx))
        return false;
    lua_rawgeti(L, LUA_REGISTRYINDEX, gen_of(L)->pattern_mt_ref);
    bool yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

/* First pass: check every entry so that the second pass, which allocates,
 * cannot raise. */
MAY_RAISE static size_t validate_filter_table(lua_State *L, int t)
{
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "filter keys must be header names (strings)");
        int vt = lua_type(L, -1);
        if (vt != LUA_TSTRING && vt != LUA_TNUMBER && !is_pattern(L, -1))
            luaL_error(L, "filter value for %s must be a string, a number or ami.pattern(...)",
                       lua_tostring(L, -2));
        n++;
        lua_pop(L, 1);
    }
    return n;
}

static char *dup_lower(const char *s, size_t n)
{
    char *d = ami_malloc(n + 1);
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++)
        d[i] = (char)lower((unsigned char)s[i]);
    d[n] = '\0';
    return d;
}

static void set_event(filter_t *f, const char *name, size_t n)
{
    if (n == 0 || (n == 1 && name[0] == '*'))
        return;
    f->event = dup_lower(name, n);
    f->event_len = n;
    f->event_hash = ami_name_hash(name, n);
}

/* The value at the top of the stack (string, number or pattern) into c. */
static void take_cond(lua_State *L, cond_t *c, const char *key, size_t klen)
{
    size_t vlen;
    const char *v;
    c->pattern = is_pattern(L, -1);
    if (c->pattern) {
        lua_rawgeti(L, -1, 1);
        v = lua_tolstring(L, -1, &vlen);
        c->value = ami_strndup(v, vlen);
        lua_pop(L, 1);
    } else {
        lua_pushvalue(L, -1); /* tolstring on a copy: numbers convert in place */
        v = lua_tolstring(L, -1, &vlen);
        c->value = ami_strndup(v, vlen);
        lua_pop(L, 1);
    }
    c->value_len = vlen;
    c->key = ami_strndup(key, klen);
    c->key_len = klen;
}

MAY_RAISE void filter_from_lua(lua_State *L, int idx, filter_t *f)
{
    memset(f, 0, sizeof *f);
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t n;
        const char *name = lua_tolstring(L, idx, &n);
        set_event(f, name, n);
        return;
    }
    if (!lua_istable(L, idx))
        luaL_error(L, "a filter is an event name (\"Hangup\"), \"*\", or a table of header = value");
    size_t n = validate_filter_table(L, idx);
    f->conds = n ? ami_calloc(n, sizeof *f->conds) : NULL;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t klen;
        const char *key = lua_tolstring(L, -2, &klen);
        if (ami_str_ieq(key, klen, "Event", 5) && lua_type(L, -1) == LUA_TSTRING && !f->event) {
            size_t vlen;
            const char *v = lua_tolstring(L, -1, &vlen);
            set_event(f, v, vlen);
        } else if (f->conds) {
            take_cond(L, &f->conds[f->nconds++], key, klen);
        }
        lua_pop(L, 1);
    }
}

void filter_free(filter_t *f)
{
    ami_free(f->event);
    for (size_t i = 0; i < f->nconds; i++) {
        ami_free(f->conds[i].key);
        ami_free(f->conds[i].value);
    }
    ami_free(f->conds);
    memset(f, 0, sizeof *f);
}

/* string.find(value, pattern) in L, protected: a bad pattern is no match. */
static bool pattern_match(lua_State *L, const char *v, size_t vlen, const cond_t *c)
{
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "find");
    lua_remove(L, -2);
    lua_pushlstring(L, v, vlen);
    lua_pushlstring(L, c->value, c->value_len);
    if (lua_pcall(L, 2, 1, 0) != 0) {
        lua_pop(L, 1);
        return false;
    }
    bool hit = !lua_isnil(L, -1);
    lua_pop(L, 1);
    return hit;
}

static bool cond_match(const cond_t *c, lua_State *L, const ami_msg_t *msg)
{
    for (long i = ami_msg_next_index(msg, c->key, c->key_len, 0); i >= 0;
         i = ami_msg_next_index(msg, c->key, c->key_len, (size_t)i + 1)) {
        size_t vlen;
        const char *v = ami_msg_value(msg, (size_t)i, &vlen);
        if (c->pattern ? pattern_match(L, v, vlen, c)
                       : (vlen == c->value_len && memcmp(v, c->value, vlen) == 0))
            return true; /* a repeated header matches if any of its values does */
    }
    return false;
}

bool filter_match(const filter_t *f, lua_State *L, const ami_msg_t *msg, uint32_t name_hash,
                  const char *name, size_t name_len)
{
    if (f->event && (f->event_hash != name_hash || !ami_str_ieq(f->event, f->event_len, name, name_len)))
        return false;
    for (size_t i = 0; i < f->nconds; i++)
        if (!cond_match(&f->conds[i], L, msg))
            return false;
    return true;
}

/* ---- ami.on / ami.off --------------------------------------------------------------- */

static handler_t **list_for(gen_t *g, const filter_t *f)
{
    return f->event ? &g->buckets[f->event_hash % HANDLER_BUCKETS] : &g->every;
}

static void label_handler(lua_State *L, handler_t *h)
{
    lua_Debug ar;
    const char *what = h->filter.event ? h->filter.event : "any event";
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar))
        snprintf(h->label, sizeof h->label, "%s handler at %s:%d", what, ar.short_src, ar.currentline);
    else
        snprintf(h->label, sizeof h->label, "%s handler", what);
}

static int l_on(lua_State *L)
{
    gen_t *g = gen_of(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (g->nhandlers >= g->rt->cfg.max_handlers) {
        ami_counter_inc(g->rt->m_handlers_refused);
        return luaL_error(L, "too many handlers (max_handlers = %d)", (int)g->rt->cfg.max_handlers);
    }
    filter_t f;
    filter_from_lua(L, 1, &f);
    handler_t *h = ami_calloc(1, sizeof *h);
    if (!h) {
        filter_free(&f);
        return luaL_error(L, "out of memory registering a handler");
    }
    h->filter = f;
    h->id = ++g->next_handler_id;
    h->since = g->rt->event_seq;
    label_handler(L, h);
    lua_pushvalue(L, 2);
    h->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    handler_t **list = list_for(g, &h->filter);
    while (*list)
        list = &(*list)->next;
    *list = h;
    g->nhandlers++;
    lua_pushinteger(L, h->id);
    return 1;
}

static void free_handler(gen_t *g, handler_t *h)
{
    luaL_unref(g->L, LUA_REGISTRYINDEX, h->fn_ref);
    filter_free(&h->filter);
    ami_free(h);
}

static void sweep_list(gen_t *g, handler_t **list)
{
    while (*list) {
        handler_t *h = *list;
        if (h->dead) {
            *list = h->next;
            free_handler(g, h);
            g->nhandlers--;
        } else {
            list = &h->next;
        }
    }
}

static void sweep(gen_t *g)
{
    for (unsigned b = 0; b < HANDLER_BUCKETS; b++)
        sweep_list(g, &g->buckets[b]);
    sweep_list(g, &g->every);
    g->rt->handlers_dead = false;
}

static handler_t *find_handler(gen_t *g, uint32_t id)
{
    for (unsigned b = 0; b <= HANDLER_BUCKETS; b++)
        for (handler_t *h = b < HANDLER_BUCKETS ? g->buckets[b] : g->every; h; h = h->next)
            if (h->id == id && !h->dead)
                return h;
    return NULL;
}

static int l_off(lua_State *L)
{
    gen_t *g = gen_of(L);
    handler_t *h = find_handler(g, (uint32_t)luaL_checkinteger(L, 1));
    lua_pushboolean(L, h != NULL);
    if (!h)
        return 1;
    h->dead = true;
    g->rt->handlers_dead = true;
    if (g->rt->dispatch_depth == 0)
        sweep(g);
    return 1;
}

void handlers_remove_all(gen_t *g)
{
    for (unsigned b = 0; b <= HANDLER_BUCKETS; b++)
        for (handler_t *h = b < HANDLER_BUCKETS ? g->buckets[b] : g->every; h; h = h->next)
            h->dead = true;
    g->rt->handlers_dead = true;
    if (g->rt->dispatch_depth == 0)
        sweep(g);
}

void handlers_free_all(gen_t *g)
{
    for (unsigned b = 0; b < HANDLER_BUCKETS; b++)
        for (handler_t *h = g->buckets[b], *next; h; h = next) {
            next = h->next;
            free_handler(g, h);
        }
    for (handler_t *h = g->every, *next; h; h = next) {
        next = h->next;
        free_handler(g, h);
    }
    memset(g->buckets, 0, sizeof g->buckets);
    g->every = NULL;
    g->nhandlers = 0;
}

/* ---- ami.pattern ------------------------------------------------------------------------ */

static int l_pattern(lua_State *L)
{
    gen_t *g = gen_of(L);
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    /* Check it compiles now, where the script can see the error. */
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "find");
    lua_pushliteral(L, "");
    lua_pushlstring(L, p, n);
    if (lua_pcall(L, 2, 0, 0) != 0)
        return luaL_error(L, "ami.pattern(%s): %s", p, lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_createtable(L, 1, 0);
    lua_pushlstring(L, p, n);
    lua_rawseti(L, -2, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, g->pattern_mt_ref);
    lua_setmetatable(L, -2);
    return 1;
}

/* ---- ami.wait_for ------------------------------------------------------------------------ */

static void waiter_link(gen_t *g, wait_t *w)
{
    w->wnext = NULL;
    w->wprev = g->waiters_tail;
    if (g->waiters_tail)
        g->waiters_tail->wnext = w;
    else
        g->waiters = w;
    g->waiters_tail = w;
    w->linked = true;
    g->nwaiters++;
}

void waiter_unlink(gen_t *g, wait_t *w)
{
    if (!w->linked)
        return;
    if (w->wprev)
        w->wprev->wnext = w->wnext;
    else
        g->waiters = w->wnext;
    if (w->wnext)
        w->wnext->wprev = w->wprev;
    else
        g->waiters_tail = w->wprev;
    w->wprev = w->wnext = NULL;
    w->linked = false;
    g->nwaiters--;
}

static void on_wait_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    wait_t *w = t->data;
    lua_State *L = w->co->L;
    lua_pushnil(L);
    lua_pushfstring(L, "timeout: no matching event within %d ms", (int)w->timeout_ms);
    sched_wake(w, 2);
}

static int l_wait_for(lua_State *L)
{
    co_t *co = sched_require_co(L, "ami.wait_for");
    gen_t *g = co->gen;
    lua_Number ms = luaL_optnumber(L, 2, 30000);
    if (ms <= 0)
        return luaL_argerror(L, 2, "timeout must be positive milliseconds");
    if (g->nwaiters >= g->rt->cfg.max_waiters) {
        ami_counter_inc(g->rt->m_waiters_refused);
        lua_pushnil(L);
        push_error(L, AMI_E_LIMIT, "too many ami.wait_for waiting at once (max_waiters)");
        return 2;
    }
    filter_t f;
    filter_from_lua(L, 1, &f);
    wait_t *w = sched_wait_new(co, WAIT_EVENT);
    if (!w) {
        filter_free(&f);
        return luaL_error(L, "out of memory in ami.wait_for");
    }
    w->filter = f;
    w->since = g->rt->event_seq;
    waiter_link(g, w);
    ev_timer_init(&w->timer, on_wait_timeout, ms / 1000.0, 0.);
    w->timer.data = w;
    w->timeout_ms = (uint32_t)ms;
    ev_now_update(g->rt->loop); /* not from the loop's cached time: see ami.sleep */
    ev_timer_start(g->rt->loop, &w->timer);
    return sched_yield_for(L, w);
}

/* ---- dispatch ------------------------------------------------------------------------------- */

typedef struct dispatch {
    gen_t *g;
    const ami_msg_t *msg;
    const char *server_key;
    const char *name;
    size_t name_len;
    uint32_t hash;
    int ev_idx;    /* stack index of the shared event object in g->L, 0 until made */
    uint64_t seq;
    bool handlers; /* false: waiters only (another instance owns the server) */
} dispatch_t;

static int event_index_in(dispatch_t *d)
{
    if (!d->ev_idx) {
        event_push(d->g, d->g->L, d->msg, d->server_key);
        d->ev_idx = lua_gettop(d->g->L);
    }
    return d->ev_idx;
}

static void run_handler(dispatch_t *d, handler_t *h)
{
    gen_t *g = d->g;
    co_t *co = sched_co_get(g);
    if (!co) {
        g->rt->stats.refused++;
        ami_counter_inc(g->rt->m_refused);
        return;
    }
    int ev = event_index_in(d);
    co->label = h->label;
    lua_rawgeti(co->L, LUA_REGISTRYINDEX, h->fn_ref);
    lua_pushvalue(g->L, ev);
    lua_xmove(g->L, co->L, 1);
    sched_resume(co, 1);
}

static void run_list(dispatch_t *d, handler_t *h, bool *matched)
{
    for (; h; h = h->next) {
        if (h->dead || h->since == d->seq)
            continue;
        if (!filter_match(&h->filter, d->g->L, d->msg, d->hash, d->name, d->name_len))
            continue;
        *matched = true;
        run_handler(d, h);
    }
}

static void wake_waiters(dispatch_t *d)
{
    gen_t *g = d->g;
    for (wait_t *w = g->waiters, *next; w; w = next) {
        next = w->wnext;
        if (w->since == d->seq || w->state != WAIT_ARMED)
            continue;
        if (!filter_match(&w->filter, g->L, d->msg, d->hash, d->name, d->name_len))
            continue;
        waiter_unlink(g, w);
        next = g->waiters; /* waking runs Lua, which may unlink others: restart safely */
        lua_pushvalue(g->L, event_index_in(d));
        lua_xmove(g->L, w->co->L, 1);
        sched_wake(w, 1);
    }
}

static int dispatch_protected(lua_State *L)
{
    dispatch_t *d = lua_touserdata(L, 1);
    lua_pop(L, 1);
    bool matched = false;
    if (d->handlers && d->g->state == GEN_ACTIVE && !d->g->rt->drained) {
        run_list(d, d->g->buckets[d->hash % HANDLER_BUCKETS], &matched);
        run_list(d, d->g->every, &matched);
    }
    if (d->g->waiters)
        wake_waiters(d);
    if (matched)
        d->g->rt->stats.events_dispatched++;
    return 0;
}

void handlers_dispatch(gen_t *g, const ami_msg_t *msg, const char *server_key, bool handlers_too)
{
    if (!handlers_too && !g->waiters)
        return;
    ami_lua_runtime_t *rt = g->rt;
    dispatch_t d = {.g = g, .msg = msg, .server_key = server_key, .seq = rt->event_seq,
                    .handlers = handlers_too};
    d.name = ami_msg_name(msg);
    d.name_len = msg->nhdrs ? msg->hdrs[0].val_len : 0;
    d.hash = msg->name_hash;
    int top = lua_gettop(g->L);
    rt->dispatch_depth++;
    if (gen_pcall_ref(g->L, g->dispatch_ref, &d) != 0) {
        log_lua_error(rt, "event dispatch failed", "dispatch", g->L, lua_tostring(g->L, -1));
    }
    lua_settop(g->L, top);
    if (--rt->dispatch_depth == 0 && rt->handlers_dead)
        sweep(g);
}

static int pattern_tostring(lua_State *L)
{
    lua_rawgeti(L, 1, 1);
    lua_pushfstring(L, "ami.pattern(%s)", lua_tostring(L, -1));
    return 1;
}

void ami_lua_inject_handlers(lua_State *L, gen_t *g)
{
    lua_pushcfunction(L, dispatch_protected);
    g->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    lua_pushcfunction(L, pattern_tostring);
    lua_setfield(L, -2, "__tostring");
    g->pattern_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    static const luaL_Reg fns[] = {
        {"on", l_on}, {"off", l_off}, {"wait_for", l_wait_for}, {"pattern", l_pattern}, {NULL, NULL},
    };
    luaL_register(L, NULL, fns);
}
