/*
 * The coroutine scheduler: a pool of reusable coroutines per script,
 * resuming with the watchdog armed, parking coroutines that wait, waking
 * them, and the run queue of coroutines to start.
 *
 * A yielding ami.* call first checks it may yield (no C boundary such as a
 * table.sort comparator in between), prepares a wait (timer, action, event
 * waiter), then yields. The wait is armed only when lua_resume really comes
 * back with LUA_YIELD for it: if the yield itself failed, the error unwinds
 * the script and the prepared wait is undone here, so nothing can ever
 * resume a coroutine that is not waiting.
 *
 * The engine's coroutines are the engine's: they are registered in their
 * script's owned set, which the sandbox's coroutine.resume and
 * coroutine.yield consult, and the engine checks a thread's status before
 * every resume. A script that saves coroutine.running() can neither feed a
 * parked handler a fake result nor resume a pooled coroutine that another
 * run will use.
 *
 * The run queue (ami.spawn, ami.every, deferred resumes) is served by a
 * prepare watcher, which libev runs on every loop iteration however busy
 * the loop is; an idle watcher only keeps the loop from blocking while the
 * queue is not empty. Each iteration runs a bounded batch, so sockets are
 * served between batches and spawned work progresses under any load.
 */
#include <stdio.h>
#include <string.h>

#include "lua/lua_internal.h"
#include "util/alloc.h"
#include "util/clock.h"

#define IDLE_MAX 256u
#define RUNQ_BATCH 1024u
/* A finished action's wait is disposed of just before its coroutine runs
 * and usually sends the next: a few spares save a malloc and free each. */
#define SPARE_WAITS_MAX 16u

/* ---- the pool ------------------------------------------------------------------ */

static void list_push(co_t **head, co_t *co)
{
    co->prev = NULL;
    co->next = *head;
    if (*head)
        (*head)->prev = co;
    *head = co;
}

static void list_remove(co_t **head, co_t *co)
{
    if (co->prev)
        co->prev->next = co->next;
    else
        *head = co->next;
    if (co->next)
        co->next->prev = co->prev;
    co->prev = co->next = NULL;
}

/* MAY_RAISE (memory, in strict mode): the Lua side first, so that a raise
 * leaves nothing of ours half-made. */
static co_t *co_new(script_t *sc)
{
    lua_State *L = sc->L;
    lua_State *thread = lua_newthread(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, sc->owned_ref);
    lua_pushvalue(L, -2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    co_t *co = ami_calloc(1, sizeof *co);
    if (!co) {
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return NULL;
    }
    co->L = thread;
    co->ref = ref;
    co->sc = sc;
    sc->gen->rt->stats.coroutines_created++;
    return co;
}

co_t *sched_co_get(script_t *sc)
{
    ami_lua_runtime_t *rt = sc->gen->rt;
    co_t *co = sc->idle;
    if (co) {
        list_remove(&sc->idle, co);
        sc->nidle--;
    } else {
        if (sc->nparked + sc->nqueued >= rt->cfg.max_coroutines)
            return NULL;
        co = co_new(sc);
        if (!co)
            return NULL;
    }
    co->state = CO_RUNNING;
    return co;
}

/* A coroutine that died with an error or is cancelled cannot be reused. */
static void co_discard(co_t *co)
{
    luaL_unref(co->sc->L, LUA_REGISTRYINDEX, co->ref);
    ami_free(co);
}

/* Back to the pool; `clean`: it returned normally (status 0), so only its
 * results need dropping. */
static void co_recycle(co_t *co, bool clean)
{
    script_t *sc = co->sc;
    lua_settop(co->L, 0);
    co->label = NULL;
    co->wait = NULL;
    if (sc->nidle >= IDLE_MAX || (!clean && lua_status(co->L) != 0)) {
        co_discard(co);
        return;
    }
    co->state = CO_IDLE;
    list_push(&sc->idle, co);
    sc->nidle++;
}

void sched_co_release(co_t *co)
{
    co_recycle(co, false);
}

/* ---- parking ---------------------------------------------------------------------- */

static void update_parked_gauge(ami_lua_runtime_t *rt, int delta)
{
    rt->stats.coroutines_parked = (uint64_t)((int64_t)rt->stats.coroutines_parked + delta);
    ami_gauge_set(rt->m_parked, (double)rt->stats.coroutines_parked);
}

static void park(co_t *co, wait_t *w)
{
    script_t *sc = co->sc;
    sc->nidle_waits += w->idle;
    sc->gen->nidle_waits += w->idle;
    co->state = CO_PARKED;
    co->wait = w;
    w->state = WAIT_ARMED;
    list_push(&sc->parked, co);
    sc->nparked++;
    sc->gen->nparked++;
    update_parked_gauge(sc->gen->rt, 1);
}

static void unpark(co_t *co)
{
    script_t *sc = co->sc;
    if (co->wait) {
        sc->nidle_waits -= co->wait->idle;
        sc->gen->nidle_waits -= co->wait->idle;
    }
    list_remove(&sc->parked, co);
    sc->nparked--;
    sc->gen->nparked--;
    update_parked_gauge(sc->gen->rt, -1);
    co->wait = NULL;
    co->state = CO_RUNNING;
}

/* ---- waits ---------------------------------------------------------------------------- */

wait_t *sched_wait_new(co_t *co, wait_kind_t kind)
{
    ami_lua_runtime_t *rt = co->sc->gen->rt;
    wait_t *w = rt->spare_waits;
    if (w) {
        rt->spare_waits = w->wnext;
        rt->nspare_waits--;
        memset(w, 0, sizeof *w);
    } else if (!(w = ami_calloc(1, sizeof *w))) {
        return NULL;
    }
    w->kind = kind;
    w->co = co;
    w->items_ref = LUA_NOREF;
    w->response_ref = LUA_NOREF;
    w->timer.data = w;
    return w;
}

static void wait_dispose(wait_t *w)
{
    script_t *sc = w->co->sc;
    ev_timer_stop(sc->gen->rt->loop, &w->timer);
    if (w->kind == WAIT_ACTION && w->action_live)
        ami_client_cancel(sc->gen->rt->client, w->action);
    if (w->kind == WAIT_EVENT) {
        waiter_unlink(sc, w);
        filter_free(&w->filter);
    }
    if (w->cancel)
        w->cancel(w);
    luaL_unref(sc->L, LUA_REGISTRYINDEX, w->items_ref);
    luaL_unref(sc->L, LUA_REGISTRYINDEX, w->response_ref);
    ami_lua_runtime_t *rt = sc->gen->rt;
    if (rt->nspare_waits >= SPARE_WAITS_MAX) {
        ami_free(w);
        return;
    }
    w->wnext = rt->spare_waits;
    rt->spare_waits = w;
    rt->nspare_waits++;
}

void sched_wait_cancel(wait_t *w)
{
    wait_dispose(w);
}

int sched_yield_for(lua_State *L, wait_t *w)
{
    ami_lua_runtime_t *rt = w->co->sc->gen->rt;
    if (rt->preparing && rt->preparing != w)
        sched_wait_cancel(rt->preparing); /* an earlier yield failed and was caught */
    rt->preparing = w;
    return lua_yield(L, 0);
}

void sched_wake(wait_t *w, int nresults)
{
    co_t *co = w->co;
    gen_t *g = co->sc->gen;
    unpark(co);
    wait_dispose(w);
    sched_resume(co, nresults);
    gen_maybe_finish_draining(g);
}

/* ---- resuming -------------------------------------------------------------------------- */

MAY_RAISE co_t *sched_require_co(lua_State *L, const char *fn_name)
{
    ami_lua_runtime_t *rt = script_of(L)->gen->rt;
    co_t *co = rt->running;
    if (!co || co->L != L)
        luaL_error(L,
                   "%s waits by yielding, so it must be called from a handler (ami.on), a "
                   "function started with ami.spawn or ami.every, or a spec; not at a script's "
                   "top level or inside coroutine.create/wrap",
                   fn_name);
    if (!lua_isyieldable(L))
        luaL_error(L,
                   "%s cannot wait here: it was called through a C function that cannot yield "
                   "(a table.sort comparator, a string.gsub callback, a metamethod, tostring...); "
                   "nothing was sent. Call it from the handler's own code.",
                   fn_name);
    return co;
}

static void count_error(ami_lua_runtime_t *rt)
{
    rt->stats.handler_errors++;
    ami_counter_inc(rt->m_handler_errors);
}

static void handle_error(co_t *co, int status)
{
    ami_lua_runtime_t *rt = co->sc->gen->rt;
    const char *msg = lua_tostring(co->L, -1);
    if (!msg)
        msg = status == LUA_ERRMEM ? "not enough memory (the script's memory_limit)" : "(error object is not a string)";
    if (status == LUA_ERRMEM && lua_tostring(co->L, -1))
        msg = "not enough memory (the script's memory_limit)";
    if (rt->watchdog_fired) {
        rt->stats.handler_kills++;
        ami_counter_inc(rt->m_handler_kills);
        log_lua_error(rt, "handler stopped by the watchdog", co->label, co->L, msg);
    } else {
        count_error(rt);
        log_lua_error(rt, "handler failed", co->label, co->L, msg);
    }
    co_discard(co);
}

static void handle_foreign_yield(co_t *co)
{
    ami_lua_runtime_t *rt = co->sc->gen->rt;
    count_error(rt);
    log_lua_error(rt, "handler failed", co->label, co->L,
                  "coroutine.yield() at a handler's top level has nobody to resume it; use "
                  "ami.sleep, ami.action or ami.wait_for to wait, or wrap your own coroutine "
                  "with coroutine.wrap");
    co_discard(co);
}

/* What the engine resumes must be in the state it left it: a fresh
 * coroutine with its function, or one suspended in a wait of ours. */
static bool resumable(co_t *co, int nargs)
{
    int st = lua_status(co->L);
    if (co->state == CO_QUEUED || lua_gettop(co->L) > nargs) {
        if (st == 0 && lua_gettop(co->L) >= nargs + 1 && lua_isfunction(co->L, -nargs - 1))
            return true;
    }
    return st == LUA_YIELD;
}

static void finish_run(co_t *co, int status, wait_t *w)
{
    ami_lua_runtime_t *rt = co->sc->gen->rt;
    if (status == LUA_YIELD && w && w->co == co) {
        park(co, w);
        return;
    }
    if (w)
        sched_wait_cancel(w);
    if (status == LUA_YIELD)
        handle_foreign_yield(co);
    else if (status != 0)
        handle_error(co, status);
    else {
        rt->stats.handler_runs++;
        ami_counter_inc(rt->m_handler_runs);
        co_recycle(co, true);
    }
}

static void resume_now(co_t *co, int nargs)
{
    script_t *sc = co->sc;
    ami_lua_runtime_t *rt = sc->gen->rt;
    rt->running = co;
    rt->preparing = NULL;
    rt->watchdog_fired = false;
    co->state = CO_RUNNING;
    script_strict_enter(sc);
    watchdog_enter(rt, sc->L, (int64_t)rt->cfg.handler_budget_ms * 1000000);
    int status = lua_resume(co->L, nargs);
    watchdog_leave(rt, sc->L);
    script_strict_leave(sc);
    rt->running = NULL;
    wait_t *w = rt->preparing;
    rt->preparing = NULL;
    finish_run(co, status, w);
    script_after_run(sc);
}

/* Never resume inside a resume: run it on the next loop iteration. */
static bool deferred(co_t *co, int nargs)
{
    ami_lua_runtime_t *rt = co->sc->gen->rt;
    if (!rt->running && !rt->loading)
        return false;
    if (!sched_enqueue(co, nargs))
        co_discard(co);
    return true;
}

void sched_resume(co_t *co, int nargs)
{
    if (deferred(co, nargs))
        return;
    if (!resumable(co, nargs)) {
        ami_lua_runtime_t *rt = co->sc->gen->rt;
        count_error(rt);
        log_lua_error(rt, "coroutine not resumed: it is not where the engine left it", co->label, co->L,
                      "its state changed behind the engine's back");
        co_discard(co);
        return;
    }
    resume_now(co, nargs);
}

void sched_start(co_t *co, int nargs)
{
    if (!deferred(co, nargs))
        resume_now(co, nargs);
}

/* ---- the run queue (ami.spawn, deferred resumes) ---------------------------------------- */

bool sched_enqueue(co_t *co, int nargs)
{
    script_t *sc = co->sc;
    ami_lua_runtime_t *rt = sc->gen->rt;
    if (sc->nqueued >= rt->cfg.max_coroutines) {
        rt->stats.refused++;
        ami_counter_inc(rt->m_refused);
        return false;
    }
    co->state = CO_QUEUED;
    co->nargs = nargs;
    co->next = NULL;
    co->prev = rt->runq_tail;
    if (rt->runq_tail)
        rt->runq_tail->next = co;
    else
        rt->runq = co;
    rt->runq_tail = co;
    rt->nrunq++;
    sc->nqueued++;
    ev_prepare_start(rt->loop, &rt->runq_prepare);
    ev_idle_start(rt->loop, &rt->runq_idle);
    return true;
}

static void runq_remove(ami_lua_runtime_t *rt, co_t *co)
{
    if (co->prev)
        co->prev->next = co->next;
    else
        rt->runq = co->next;
    if (co->next)
        co->next->prev = co->prev;
    else
        rt->runq_tail = co->prev;
    co->prev = co->next = NULL;
    rt->nrunq--;
    co->sc->nqueued--;
}

static void runq_stop(ami_lua_runtime_t *rt)
{
    ev_prepare_stop(rt->loop, &rt->runq_prepare);
    ev_idle_stop(rt->loop, &rt->runq_idle);
}

/* A bounded batch per iteration; only what was queued before the batch
 * began runs in it (a spawn loop cannot keep the loop here). Coroutines of
 * a generation still loading wait until it is live. The queue stops only
 * after an iteration that ran nothing: what a batch started from this
 * prepare phase (the transport's flush hook, itself a prepare watcher)
 * runs in the next iteration, so the loop must not block before it. */
static void on_runq(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    ami_lua_runtime_t *rt = w->data;
    co_t *last = rt->runq_tail;
    unsigned done = 0;
    for (co_t *co = rt->runq, *next; co && done < RUNQ_BATCH; co = next) {
        next = co == last ? NULL : co->next;
        if (co->sc->gen->state == GEN_LOADING)
            continue;
        runq_remove(rt, co);
        sched_resume(co, co->nargs);
        done++;
    }
    if (done == 0)
        runq_stop(rt);
}

static void on_runq_idle(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents; /* only there so that the loop polls without blocking */
}

void sched_init(ami_lua_runtime_t *rt)
{
    ev_prepare_init(&rt->runq_prepare, on_runq);
    rt->runq_prepare.data = rt;
    ev_idle_init(&rt->runq_idle, on_runq_idle);
    rt->runq_idle.data = rt;
}

void sched_deinit(ami_lua_runtime_t *rt)
{
    runq_stop(rt);
    while (rt->spare_waits) {
        wait_t *w = rt->spare_waits;
        rt->spare_waits = w->wnext;
        ami_free(w);
    }
    rt->nspare_waits = 0;
}

void sched_cancel_script(script_t *sc)
{
    ami_lua_runtime_t *rt = sc->gen->rt;
    for (co_t *co = rt->runq, *next; co; co = next) {
        next = co->next;
        if (co->sc == sc) {
            runq_remove(rt, co);
            co_discard(co);
        }
    }
    while (sc->parked) {
        co_t *co = sc->parked;
        wait_t *w = co->wait;
        unpark(co);
        if (w)
            wait_dispose(w);
        co_discard(co);
    }
    while (sc->idle) {
        co_t *co = sc->idle;
        list_remove(&sc->idle, co);
        sc->nidle--;
        co_discard(co);
    }
}

void sched_cancel_idle(script_t *sc)
{
    for (co_t *co = sc->parked, *next; co; co = next) {
        next = co->next;
        wait_t *w = co->wait;
        if (!w || !w->idle)
            continue;
        unpark(co);
        wait_dispose(w);
        co_discard(co);
    }
    gen_maybe_finish_draining(sc->gen);
}
