/*
 * The direct run: an event that only one handler of a script may want is
 * given to it without the protected call that dispatch otherwise wraps
 * around every event (that call, its entry function and their pushes are
 * ~40-50 ns of the ~620 an event into Lua costs).
 *
 * Without a protected call nothing here may raise, and nothing does:
 *  - the coroutine comes from the pool (making one allocates), and its
 *    empty stack has LUA_MINSTACK free slots for the two pushes;
 *  - the event object is allocated with the script outside strict mode
 *    (sc->strict == 0), where the accounting allocator refuses nothing,
 *    and only when the object fits within the script's memory limit with
 *    DIRECT_SLACK to spare, so the limit holds as on the protected path
 *    (near it, that path takes the event and refuses it as it always has);
 *  - the collection step an allocation may take runs no Lua code: scripts
 *    cannot make finalizers (no newproxy, no ffi, locked metatables) and
 *    the engine's objects have none; the watchdog's hook runs only inside
 *    Lua code, i.e. inside the handler's resume, which is protected.
 * What remains is the system running out of memory under LuaJIT's own
 * allocator, as for the engine's other unprotected pushes (script_alloc).
 * The handler's run is a resume like any other: the watchdog per run, its
 * errors caught and logged, the coroutine recycled.
 *
 * A direct run needs no waiters (their order with the handlers is the
 * protected path's business), at most one handler that may want the event
 * by its name (its conditions are then checked once, here), a pooled
 * coroutine and no run in progress (a resume would be deferred past the
 * life of the message). Loop thread only.
 */
#include "lua/lua_internal.h"

/* Room an object may need besides its message's bytes and slices: its
 * header and server key (OBJECT_HEAD), a table around it (an action's
 * result), and what a collection step triggered by the allocation may
 * allocate itself (the string table shrinking). */
#define OBJECT_HEAD 256
#define DIRECT_SLACK 4096

bool direct_room_for(const script_t *sc, const ami_msg_t *msg)
{
    if (sc->strict)
        return false;
    int64_t need = OBJECT_HEAD + DIRECT_SLACK;
    if (msg)
        need += (int64_t)(msg->wire_len + msg->nhdrs * sizeof(ami_hdr_t));
    return sc->mem_bytes + need <= (int64_t)sc->mem_limit;
}

/* A run started now resumes at once (not deferred), on a pooled coroutine
 * (making one allocates, which only the protected path may do), with the
 * object well within the memory limit. */
static bool direct_ready(script_t *sc, const ami_msg_t *msg)
{
    ami_lua_runtime_t *rt = sc->gen->rt;
    return sc->idle && !rt->running && !rt->loading && direct_room_for(sc, msg);
}

static void direct_run(script_t *sc, const handler_t *h, const ami_msg_t *msg, const char *server_key)
{
    co_t *co = sched_co_get(sc);
    co->label = h->label;
    lua_rawgeti(co->L, LUA_REGISTRYINDEX, h->fn_ref);
    event_push(sc, co->L, msg, server_key);
    sched_start(co, 1);
}

/* The one handler of these lists that may want the event by its name (not
 * dead, not registered during this event), or NULL with *several set when
 * more than one may. */
static handler_t *sole_candidate(handler_t *const lists[2], uint64_t seq, const ami_msg_t *msg, bool *several)
{
    const char *name = ami_msg_name(msg);
    size_t name_len = msg->nhdrs ? msg->hdrs[0].val_len : 0;
    handler_t *found = NULL;
    *several = false;
    for (int l = 0; l < 2; l++)
        for (handler_t *h = lists[l]; h; h = h->next) {
            if (h->dead || h->since == seq || !filter_name_match(&h->filter, msg->name_hash, name, name_len))
                continue;
            if (found) {
                *several = true;
                return NULL;
            }
            found = h;
        }
    return found;
}

bool direct_dispatch(script_t *sc, const ami_msg_t *msg, const char *server_key, bool engine, uint64_t seq)
{
    ami_lua_runtime_t *rt = sc->gen->rt;
    if (sc->waiters || sc->gen->state != GEN_ACTIVE || rt->drained)
        return false;
    handler_t *lists[2] = {sc->buckets[msg->name_hash % HANDLER_BUCKETS], sc->every};
    if (engine) {
        lists[0] = sc->server_handlers;
        lists[1] = NULL;
    }
    bool several;
    handler_t *h = sole_candidate(lists, seq, msg, &several);
    if (several || (h && !direct_ready(sc, msg)))
        return false;
    if (h && filter_conds_match(sc, &h->filter, msg)) {
        direct_run(sc, h, msg, server_key);
        rt->stats.events_dispatched++;
    }
    return true;
}
