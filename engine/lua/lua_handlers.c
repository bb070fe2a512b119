/*
 * ami.on / ami.off / ami.wait_for / ami.pattern, and event dispatch
 * (filters themselves: lua_filter.c).
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
#include <stdio.h>
#include <string.h>

#include "lua/lua_internal.h"
#include "protocol/message.h"
#include "lua/lua_strpat.h"
#include "util/alloc.h"
#include "util/clock.h"

/* ---- ami.on / ami.off --------------------------------------------------------------- */

static handler_t **list_for(script_t *sc, const filter_t *f)
{
    return f->event ? &sc->buckets[f->event_hash % HANDLER_BUCKETS] : &sc->every;
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

static void link_handler(handler_t **list, handler_t *h)
{
    while (*list)
        list = &(*list)->next;
    *list = h;
}

/* Both kinds of registration: filter at 1 (or nothing for on_server), fn at fn_idx. */
MAY_RAISE static int register_handler(lua_State *L, int fn_idx, bool server_state)
{
    script_t *sc = script_of(L);
    ami_lua_runtime_t *rt = sc->gen->rt;
    luaL_checktype(L, fn_idx, LUA_TFUNCTION);
    if (sc->nhandlers >= rt->cfg.max_handlers) {
        ami_counter_inc(rt->m_handlers_refused);
        return luaL_error(L, "too many handlers (max_handlers = %d)", (int)rt->cfg.max_handlers);
    }
    /* The function's ref before the filter (C memory): if anything raises,
     * what stays behind is a registry slot of the script's own state. */
    lua_pushvalue(L, fn_idx);
    int fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    filter_t f;
    if (server_state) {
        lua_pushliteral(L, "ServerState");
        filter_from_lua(L, -1, &f);
        lua_pop(L, 1);
    } else {
        filter_from_lua(L, 1, &f);
    }
    handler_t *h = ami_calloc(1, sizeof *h);
    if (!h) {
        filter_free(&f);
        luaL_unref(L, LUA_REGISTRYINDEX, fn_ref);
        return luaL_error(L, "out of memory registering a handler");
    }
    h->filter = f;
    h->fn_ref = fn_ref;
    h->id = ++sc->next_handler_id;
    h->order = h->id;
    h->since = rt->event_seq;
    label_handler(L, h);
    link_handler(server_state ? &sc->server_handlers : list_for(sc, &h->filter), h);
    sc->nhandlers++;
    lua_pushinteger(L, h->id);
    return 1;
}

static int l_on(lua_State *L)
{
    return register_handler(L, 2, false);
}

MAY_RAISE int handlers_on_server(lua_State *L)
{
    return register_handler(L, 1, true);
}

static void free_handler(script_t *sc, handler_t *h)
{
    luaL_unref(sc->L, LUA_REGISTRYINDEX, h->fn_ref);
    filter_free(&h->filter);
    ami_free(h);
}

static void sweep_list(script_t *sc, handler_t **list)
{
    while (*list) {
        handler_t *h = *list;
        if (h->dead) {
            *list = h->next;
            free_handler(sc, h);
            sc->nhandlers--;
        } else {
            list = &h->next;
        }
    }
}

static void sweep(script_t *sc)
{
    for (unsigned b = 0; b < HANDLER_BUCKETS; b++)
        sweep_list(sc, &sc->buckets[b]);
    sweep_list(sc, &sc->every);
    sweep_list(sc, &sc->server_handlers);
}

/* Bucket b of sc's handler lists: HANDLER_BUCKETS is "*", +1 the server handlers. */
static handler_t *list_at(script_t *sc, unsigned b)
{
    return b < HANDLER_BUCKETS ? sc->buckets[b] : b == HANDLER_BUCKETS ? sc->every : sc->server_handlers;
}

/* Every script of the runtime: ami.off inside a dispatch marks, the
 * outermost dispatch sweeps. */
static void sweep_all(ami_lua_runtime_t *rt)
{
    for (script_t *sc = rt->current ? rt->current->scripts : NULL; sc; sc = sc->next)
        sweep(sc);
    for (gen_t *g = rt->draining; g; g = g->next)
        for (script_t *sc = g->scripts; sc; sc = sc->next)
            sweep(sc);
    rt->handlers_dead = false;
}

static handler_t *find_handler(script_t *sc, uint32_t id)
{
    for (unsigned b = 0; b <= HANDLER_BUCKETS + 1; b++)
        for (handler_t *h = list_at(sc, b); h; h = h->next)
            if (h->id == id && !h->dead)
                return h;
    return NULL;
}

static void mark_dead(script_t *sc, handler_t *h)
{
    h->dead = true;
    sc->gen->rt->handlers_dead = true;
    if (sc->gen->rt->dispatch_depth == 0)
        sweep(sc);
}

static int l_off(lua_State *L)
{
    script_t *sc = script_of(L);
    static const num_range_t ids = {1, UINT32_MAX, true, "handler id"};
    double id;
    char why[160];
    if (!arg_number(L, 1, "ami.off", "the id ami.on returned", &ids, &id, why, sizeof why))
        return push_invalid(L, why);
    handler_t *h = find_handler(sc, (uint32_t)id);
    lua_pushboolean(L, h != NULL);
    if (h)
        mark_dead(sc, h);
    return 1;
}

void handlers_remove_all(script_t *sc)
{
    for (unsigned b = 0; b <= HANDLER_BUCKETS + 1; b++)
        for (handler_t *h = list_at(sc, b); h; h = h->next)
            h->dead = true;
    sc->gen->rt->handlers_dead = true;
    if (sc->gen->rt->dispatch_depth == 0)
        sweep(sc);
}

void handlers_free_all(script_t *sc)
{
    for (unsigned b = 0; b <= HANDLER_BUCKETS + 1; b++)
        for (handler_t *h = list_at(sc, b), *next; h; h = next) {
            next = h->next;
            free_handler(sc, h);
        }
    memset(sc->buckets, 0, sizeof sc->buckets);
    sc->every = NULL;
    sc->server_handlers = NULL;
    sc->nhandlers = 0;
}

/* ---- ami.pattern ------------------------------------------------------------------------ */

static int l_pattern(lua_State *L)
{
    script_t *sc = script_of(L);
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    /* Check it now, where the script can see the error (as LuaJIT does, an
     * error deeper in the pattern shows only when a value reaches it). */
    const char *why = NULL;
    if (ami_strpat_match_budget("", 0, p, n, 100000, &why) == AMI_STRPAT_BADPATTERN)
        return luaL_error(L, "ami.pattern(%s): %s", p, why ? why : "malformed pattern");
    lua_createtable(L, 1, 0);
    lua_pushlstring(L, p, n);
    lua_rawseti(L, -2, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->pattern_mt_ref);
    lua_setmetatable(L, -2);
    return 1;
}

/* ---- ami.wait_for ------------------------------------------------------------------------ */

static void waiter_link(script_t *sc, wait_t *w)
{
    w->wnext = NULL;
    w->wprev = sc->waiters_tail;
    if (sc->waiters_tail)
        sc->waiters_tail->wnext = w;
    else
        sc->waiters = w;
    sc->waiters_tail = w;
    w->linked = true;
    sc->nwaiters++;
}

void waiter_unlink(script_t *sc, wait_t *w)
{
    if (!w->linked)
        return;
    if (w->wprev)
        w->wprev->wnext = w->wnext;
    else
        sc->waiters = w->wnext;
    if (w->wnext)
        w->wnext->wprev = w->wprev;
    else
        sc->waiters_tail = w->wprev;
    w->wprev = w->wnext = NULL;
    w->linked = false;
    sc->nwaiters--;
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
    script_t *sc = co->sc;
    ami_lua_runtime_t *rt = sc->gen->rt;
    double ms = 30000;
    char why[200];
    if (!lua_isnoneornil(L, 2) &&
        !arg_number(L, 2, "ami.wait_for", "the timeout", &RANGE_TIMEOUT_MS, &ms, why, sizeof why))
        return push_invalid(L, why);
    if (sc->nwaiters >= rt->cfg.max_waiters) {
        ami_counter_inc(rt->m_waiters_refused);
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
    w->since = rt->event_seq;
    waiter_link(sc, w);
    ev_timer_init(&w->timer, on_wait_timeout, ms / 1000.0, 0.);
    w->timer.data = w;
    w->timeout_ms = (uint32_t)ms;
    ev_now_update(rt->loop); /* not from the loop's cached time: see ami.sleep */
    ev_timer_start(rt->loop, &w->timer);
    return sched_yield_for(L, w);
}

/* ---- dispatch ------------------------------------------------------------------------------- */

typedef struct dispatch {
    script_t *sc;
    const ami_msg_t *msg;
    const char *server_key;
    const char *name;
    size_t name_len;
    uint32_t hash;
    int ev_idx;    /* stack index of the shared event object in sc->L, 0 until made */
    uint64_t seq;
    bool engine;   /* the engine's ServerState event, not one from Asterisk */
    bool handlers; /* false: waiters only */
} dispatch_t;

static int event_index_in(dispatch_t *d)
{
    if (!d->ev_idx) {
        event_push(d->sc, d->sc->L, d->msg, d->server_key);
        d->ev_idx = lua_gettop(d->sc->L);
    }
    return d->ev_idx;
}

static void run_handler(dispatch_t *d, handler_t *h)
{
    script_t *sc = d->sc;
    ami_lua_runtime_t *rt = sc->gen->rt;
    int ev = event_index_in(d);
    co_t *co = sched_co_get(sc);
    if (!co) {
        rt->stats.refused++;
        ami_counter_inc(rt->m_refused);
        return;
    }
    co->label = h->label;
    lua_rawgeti(co->L, LUA_REGISTRYINDEX, h->fn_ref);
    lua_pushvalue(sc->L, ev);
    lua_xmove(sc->L, co->L, 1);
    sched_start(co, 1);
}

static bool wants(dispatch_t *d, handler_t *h)
{
    return !h->dead && h->since != d->seq &&
           filter_match(d->sc, &h->filter, d->msg, d->hash, d->name, d->name_len);
}

/* The named handlers and the "*" handlers, merged in registration order. */
static bool run_handlers(dispatch_t *d)
{
    handler_t *named = d->sc->buckets[d->hash % HANDLER_BUCKETS], *any = d->sc->every;
    if (d->engine) {
        named = d->sc->server_handlers;
        any = NULL;
    }
    bool matched = false;
    while (named || any) {
        handler_t **pick = !any || (named && named->order < any->order) ? &named : &any;
        handler_t *h = *pick;
        *pick = h->next;
        if (!wants(d, h))
            continue;
        matched = true;
        run_handler(d, h);
    }
    return matched;
}

static void wake_waiters(dispatch_t *d)
{
    script_t *sc = d->sc;
    for (wait_t *w = sc->waiters, *next; w; w = next) {
        next = w->wnext;
        if (w->since == d->seq || w->state != WAIT_ARMED || (d->engine && !w->filter.event))
            continue;
        if (!filter_match(sc, &w->filter, d->msg, d->hash, d->name, d->name_len))
            continue;
        waiter_unlink(sc, w);
        next = sc->waiters; /* waking runs Lua, which may unlink others: restart safely */
        lua_pushvalue(sc->L, event_index_in(d));
        lua_xmove(sc->L, w->co->L, 1);
        sched_wake(w, 1);
    }
}

static int dispatch_protected(lua_State *L)
{
    dispatch_t *d = lua_touserdata(L, 1);
    script_t *sc = d->sc;
    ami_lua_runtime_t *rt = sc->gen->rt;
    bool matched = false;
    if (d->handlers && sc->gen->state == GEN_ACTIVE && !rt->drained)
        matched = run_handlers(d);
    if (sc->waiters)
        wake_waiters(d);
    if (matched)
        rt->stats.events_dispatched++;
    return 0;
}

static void dispatch_failed(script_t *sc, int status)
{
    ami_counter_inc(sc->m_events_refused);
    int64_t now = ami_now_coarse_ns();
    if (now - sc->refusal_log_ns < 1000000000LL)
        return; /* one line a second is enough to say it goes on */
    sc->refusal_log_ns = now;
    AMI_LOG(sc->gen->rt->log, AMI_LOG_ERROR, "event not given to a script's handlers",
            AMI_F_STR("script", sc->name),
            AMI_F_STR("reason", status == LUA_ERRMEM ? "the script is at its memory_limit" : lua_tostring(sc->L, -1)));
}

static void dispatch(script_t *sc, const ami_msg_t *msg, const char *server_key, bool engine, bool handlers)
{
    ami_lua_runtime_t *rt = sc->gen->rt;
    if (!handlers && !sc->waiters)
        return;
    dispatch_t d = {.sc = sc, .msg = msg, .server_key = server_key, .seq = rt->event_seq, .engine = engine,
                    .handlers = handlers};
    d.name = ami_msg_name(msg);
    d.name_len = msg->nhdrs ? msg->hdrs[0].val_len : 0;
    d.hash = msg->name_hash;
    rt->dispatch_depth++;
    if (!handlers || !direct_dispatch(sc, msg, server_key, engine, d.seq)) {
        /* Everything dispatch_protected pushes goes with its frame: on
         * success the stack is as it was, on failure only the error is left. */
        int rc = script_pcall_ref(sc, sc->dispatch_ref, &d);
        if (rc != 0) {
            dispatch_failed(sc, rc);
            lua_pop(sc->L, 1);
        }
    }
    if (--rt->dispatch_depth == 0 && rt->handlers_dead)
        sweep_all(rt);
}

void handlers_dispatch(script_t *sc, const ami_msg_t *msg, const char *server_key, bool handlers_too)
{
    dispatch(sc, msg, server_key, false, handlers_too);
}

void handlers_dispatch_server_state(script_t *sc, const ami_msg_t *msg, const char *server_key,
                                    bool handlers_too)
{
    dispatch(sc, msg, server_key, true, handlers_too);
}

static int pattern_tostring(lua_State *L)
{
    if (!lua_istable(L, 1))
        return luaL_argerror(L, 1, "ami.pattern object expected");
    lua_rawgeti(L, 1, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
        return luaL_argerror(L, 1, "ami.pattern object expected");
    lua_pushfstring(L, "ami.pattern(%s)", lua_tostring(L, -1));
    return 1;
}

void ami_lua_inject_handlers(lua_State *L, script_t *sc)
{
    lua_pushcfunction(L, dispatch_protected);
    sc->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    lua_pushcfunction(L, pattern_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "ami.pattern");
    lua_setfield(L, -2, "__metatable");
    sc->pattern_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    static const luaL_Reg fns[] = {
        {"on", l_on}, {"off", l_off}, {"wait_for", l_wait_for}, {"pattern", l_pattern}, {NULL, NULL},
    };
    luaL_register(L, NULL, fns);
}
