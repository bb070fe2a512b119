/*
 * The coroutine scheduler: a pool of reusable coroutines, resuming with the
 * watchdog armed, parking coroutines that wait, waking them.
 *
 * A yielding ami.* call prepares a wait (timer, action, event waiter), then
 * yields. The wait is armed only when lua_resume really comes back with
 * LUA_YIELD for it: if the yield itself failed (a C boundary that cannot
 * yield, such as a table.sort comparator), the error unwinds the script and
 * the prepared wait is undone here, so nothing can ever resume a coroutine
 * that is not waiting.
 */
#include <stdio.h>
#include <string.h>

#include "lua/lua_internal.h"
#include "util/alloc.h"
#include "util/clock.h"

#define IDLE_MAX 256u
#define RUNQ_BATCH 1024u

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

co_t *sched_co_get(gen_t *g)
{
    ami_lua_runtime_t *rt = g->rt;
    if (g->idle) {
        co_t *co = g->idle;
        list_remove(&g->idle, co);
        g->nidle--;
        co->state = CO_RUNNING;
        return co;
    }
    if (g->nparked >= rt->cfg.max_coroutines)
        return NULL;
    co_t *co = ami_calloc(1, sizeof *co);
    if (!co)
        return NULL;
    co->L = lua_newthread(g->L);
    co->ref = luaL_ref(g->L, LUA_REGISTRYINDEX);
    co->gen = g;
    co->state = CO_RUNNING;
    rt->stats.coroutines_created++;
    return co;
}

/* A coroutine that died with an error or is cancelled cannot be reused. */
static void co_discard(co_t *co)
{
    luaL_unref(co->gen->L, LUA_REGISTRYINDEX, co->ref);
    ami_free(co);
}

void sched_co_release(co_t *co)
{
    gen_t *g = co->gen;
    lua_settop(co->L, 0);
    co->label = NULL;
    co->wait = NULL;
    if (g->nidle >= IDLE_MAX || lua_status(co->L) != 0) {
        co_discard(co);
        return;
    }
    co->state = CO_IDLE;
    list_push(&g->idle, co);
    g->nidle++;
}

/* ---- parking ---------------------------------------------------------------------- */

static void update_parked_gauge(ami_lua_runtime_t *rt, int delta)
{
    rt->stats.coroutines_parked = (uint64_t)((int64_t)rt->stats.coroutines_parked + delta);
    ami_gauge_set(rt->m_parked, (double)rt->stats.coroutines_parked);
}

static void park(co_t *co, wait_t *w)
{
    gen_t *g = co->gen;
    g->nidle_waits += w->idle;
    co->state = CO_PARKED;
    co->wait = w;
    w->state = WAIT_ARMED;
    list_push(&g->parked, co);
    g->nparked++;
    update_parked_gauge(g->rt, 1);
}

static void unpark(co_t *co)
{
    gen_t *g = co->gen;
    if (co->wait)
        g->nidle_waits -= co->wait->idle;
    list_remove(&g->parked, co);
    g->nparked--;
    update_parked_gauge(g->rt, -1);
    co->wait = NULL;
    co->state = CO_RUNNING;
}

/* A draining generation is closed by its grace timer once nothing waits. */
static void maybe_finish_draining(gen_t *g)
{
    if (g->state != GEN_DRAINING || g->nparked > 0)
        return;
    ev_timer_stop(g->rt->loop, &g->grace_timer);
    ev_timer_set(&g->grace_timer, 0., 0.);
    ev_timer_start(g->rt->loop, &g->grace_timer);
}

/* ---- waits ---------------------------------------------------------------------------- */

wait_t *sched_wait_new(co_t *co, wait_kind_t kind)
{
    wait_t *w = ami_calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->kind = kind;
    w->co = co;
    w->items_ref = LUA_NOREF;
    w->response_ref = LUA_NOREF;
    w->timer.data = w;
    return w;
}

static void wait_dispose(wait_t *w)
{
    gen_t *g = w->co->gen;
    ev_timer_stop(g->rt->loop, &w->timer);
    if (w->kind == WAIT_ACTION && w->action_live)
        ami_client_cancel(g->rt->client, w->action);
    if (w->kind == WAIT_EVENT) {
        waiter_unlink(g, w);
        filter_free(&w->filter);
    }
    if (w->undo)
        w->undo(w);
    luaL_unref(g->L, LUA_REGISTRYINDEX, w->items_ref);
    luaL_unref(g->L, LUA_REGISTRYINDEX, w->response_ref);
    ami_free(w);
}

void sched_wait_cancel(wait_t *w)
{
    wait_dispose(w);
}

int sched_yield_for(lua_State *L, wait_t *w)
{
    ami_lua_runtime_t *rt = w->co->gen->rt;
    if (rt->preparing && rt->preparing != w)
        sched_wait_cancel(rt->preparing); /* an earlier yield failed and was caught */
    rt->preparing = w;
    return lua_yield(L, 0);
}

void sched_wake(wait_t *w, int nresults)
{
    co_t *co = w->co;
    gen_t *g = co->gen;
    unpark(co);
    wait_dispose(w);
    sched_resume(co, nresults);
    maybe_finish_draining(g);
}

/* ---- resuming -------------------------------------------------------------------------- */

MAY_RAISE co_t *sched_require_co(lua_State *L, const char *fn_name)
{
    gen_t *g = gen_of(L);
    co_t *co = g->rt->running;
    if (!co || co->L != L)
        luaL_error(L,
                   "%s waits by yielding, so it must be called from a handler (ami.on), a "
                   "function started with ami.spawn or ami.every, or a spec; not at a script's "
                   "top level or inside coroutine.create/wrap",
                   fn_name);
    return co;
}

static void handle_error(co_t *co, int status)
{
    ami_lua_runtime_t *rt = co->gen->rt;
    const char *msg = lua_tostring(co->L, -1);
    if (!msg)
        msg = status == LUA_ERRMEM ? "not enough memory (the generation's memory_limit)" : "(error object is not a string)";
    if (rt->watchdog_fired) {
        rt->stats.handler_kills++;
        ami_counter_inc(rt->m_handler_kills);
        log_lua_error(rt, "handler stopped by the watchdog", co->label, co->L, msg);
    } else {
        rt->stats.handler_errors++;
        ami_counter_inc(rt->m_handler_errors);
        log_lua_error(rt, "handler failed", co->label, co->L, msg);
    }
    co_discard(co);
}

static void handle_foreign_yield(co_t *co)
{
    ami_lua_runtime_t *rt = co->gen->rt;
    rt->stats.handler_errors++;
    ami_counter_inc(rt->m_handler_errors);
    log_lua_error(rt, "handler failed", co->label, co->L,
                  "coroutine.yield() at a handler's top level has nobody to resume it; use "
                  "ami.sleep, ami.action or ami.wait_for to wait, or wrap your own coroutine "
                  "with coroutine.wrap");
    co_discard(co);
}

void sched_resume(co_t *co, int nargs)
{
    gen_t *g = co->gen;
    ami_lua_runtime_t *rt = g->rt;
    if (rt->running) {
        /* Never resume inside a resume: run it on the next loop iteration. */
        if (!sched_enqueue(co, nargs))
            co_discard(co);
        return;
    }
    rt->running = co;
    rt->preparing = NULL;
    rt->watchdog_fired = false;
    co->state = CO_RUNNING;
    watchdog_enter(rt, g->L, (int64_t)rt->cfg.handler_budget_ms * 1000000);
    int status = lua_resume(co->L, nargs);
    watchdog_leave(rt, g->L);
    rt->running = NULL;
    wait_t *w = rt->preparing;
    rt->preparing = NULL;
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
        sched_co_release(co);
    }
}

/* ---- the run queue (ami.spawn, deferred resumes) ---------------------------------------- */

bool sched_enqueue(co_t *co, int nargs)
{
    ami_lua_runtime_t *rt = co->gen->rt;
    if (rt->nrunq >= rt->cfg.max_coroutines) {
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
}

/* Runs every loop iteration while the queue is not empty (an idle watcher
 * also keeps the loop from blocking in poll meanwhile). A bounded batch per
 * iteration keeps I/O flowing. Coroutines of a generation still loading wait
 * until it is live. */
static void on_runq(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    ami_lua_runtime_t *rt = w->data;
    unsigned done = 0;
    co_t *co = rt->runq;
    while (co && done < RUNQ_BATCH) {
        co_t *next = co->next;
        if (co->gen->state != GEN_LOADING) {
            runq_remove(rt, co);
            sched_resume(co, co->nargs);
            done++;
        }
        co = next;
    }
    if (!rt->runq || done == 0)
        ev_idle_stop(loop, w);
}

void sched_init(ami_lua_runtime_t *rt)
{
    ev_idle_init(&rt->runq_idle, on_runq);
    rt->runq_idle.data = rt;
}

void sched_deinit(ami_lua_runtime_t *rt)
{
    ev_idle_stop(rt->loop, &rt->runq_idle);
}

void sched_cancel_gen(gen_t *g)
{
    ami_lua_runtime_t *rt = g->rt;
    for (co_t *co = rt->runq, *next; co; co = next) {
        next = co->next;
        if (co->gen == g) {
            runq_remove(rt, co);
            co_discard(co);
        }
    }
    while (g->parked) {
        co_t *co = g->parked;
        wait_t *w = co->wait;
        unpark(co);
        if (w)
            wait_dispose(w);
        co_discard(co);
    }
    while (g->idle) {
        co_t *co = g->idle;
        list_remove(&g->idle, co);
        g->nidle--;
        co_discard(co);
    }
}

void sched_cancel_idle(gen_t *g)
{
    for (co_t *co = g->parked, *next; co; co = next) {
        next = co->next;
        wait_t *w = co->wait;
        if (!w || !w->idle)
            continue;
        unpark(co);
        wait_dispose(w);
        co_discard(co);
    }
    maybe_finish_draining(g);
}
