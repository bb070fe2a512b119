/*
 * The watchdog: stops a handler that runs past its budget without yielding.
 *
 * LuaJIT runs debug hooks only in the interpreter, never inside compiled
 * traces, and a hook set from another thread is exactly what its authors
 * intend for this (see the end of lj_record.c). So the JIT engine is off in
 * script states, and a watchdog thread looks every quarter budget at the
 * handler running on the loop; past the budget it installs a count hook on
 * that state. The hook runs on the loop thread, inside the runaway code, and
 * raises an error that unwinds the handler's coroutine. The hook then fires
 * at every instruction until the resume returns, so a runaway loop that
 * catches the error with pcall is hit again at once, outside the pcall.
 *
 * Two places run script code where hooks are off, and both are closed:
 * an xpcall message handler called for the watchdog's own error runs inside
 * the hook (LuaJIT disables hooks there), so the sandbox's xpcall skips the
 * script's handler once the watchdog has fired (lua_sandbox.c); and
 * finalizers (__gc) run with hooks off, so scripts get no way to make one
 * (no newproxy, no ffi, locked engine metatables). C loops that no hook can
 * enter (pattern matching) call watchdog_check themselves.
 *
 * Cost on the normal path: two atomic stores per resume. The watchdog never
 * takes a lock the loop waits for, except when a state is closed.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lua/lua_internal.h"
#include "util/clock.h"

#define HOOK_EVERY 1000 /* instructions between checks once the hook is set */

static void runaway_hook(lua_State *L, lua_Debug *ar);

static bool over_budget(ami_lua_runtime_t *rt, int64_t *started)
{
    *started = atomic_load_explicit(&rt->wd.started_ns, memory_order_acquire);
    return *started && ami_now_coarse_ns() - *started > rt->budget_ns;
}

MAY_RAISE static void raise_stop(lua_State *L, ami_lua_runtime_t *rt, int64_t started, const char *src,
                                 int line)
{
    rt->watchdog_fired = true;
    /* From now on raise at every instruction: a pcall that catches the error
     * returns into code that raises again, until nothing catches it. */
    lua_sethook(L, runaway_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "stopped after running %d ms without yielding (budget %d ms) at %s:%d; "
                  "long work must yield (ami.sleep(0)) or be split",
               (int)((ami_now_coarse_ns() - started) / 1000000), (int)(rt->budget_ns / 1000000), src, line);
}

static void runaway_hook(lua_State *L, lua_Debug *ar)
{
    ami_lua_runtime_t *rt = script_of(L)->gen->rt;
    int64_t started;
    if (!over_budget(rt, &started)) {
        lua_sethook(L, NULL, 0, 0); /* set for a resume that has since finished */
        return;
    }
    lua_getinfo(L, "Sl", ar);
    raise_stop(L, rt, started, ar->short_src, ar->currentline);
}

MAY_RAISE void watchdog_check(lua_State *L)
{
    ami_lua_runtime_t *rt = script_of(L)->gen->rt;
    int64_t started;
    if (!over_budget(rt, &started))
        return;
    lua_Debug ar;
    const char *src = "?";
    int line = -1;
    for (int level = 1; lua_getstack(L, level, &ar); level++)
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline >= 0) {
            src = ar.short_src;
            line = ar.currentline;
            break;
        }
    char where[LUA_IDSIZE];
    snprintf(where, sizeof where, "%s", src);
    raise_stop(L, rt, started, where, line);
}

static void check_once(ami_lua_runtime_t *rt)
{
    watchdog_t *wd = &rt->wd;
    pthread_mutex_lock(&wd->lock);
    int64_t started = atomic_load_explicit(&wd->started_ns, memory_order_acquire);
    uint64_t seq = atomic_load_explicit(&wd->seq, memory_order_acquire);
    if (started && wd->target && seq != wd->fired_seq && ami_now_coarse_ns() - started > wd->budget_ns) {
        wd->fired_seq = seq;
        lua_sethook(wd->target, runaway_hook, LUA_MASKCOUNT, HOOK_EVERY);
    }
    pthread_mutex_unlock(&wd->lock);
}

static void *watchdog_main(void *arg)
{
    ami_lua_runtime_t *rt = arg;
    watchdog_t *wd = &rt->wd;
    int64_t period = wd->budget_ns / 4;
    if (period < 1000000)
        period = 1000000;
    if (period > 50000000)
        period = 50000000;
    pthread_mutex_lock(&wd->lock);
    while (!wd->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until); /* the condition variable's clock: immune to clock jumps */
        until.tv_nsec += period % 1000000000;
        until.tv_sec += period / 1000000000 + until.tv_nsec / 1000000000;
        until.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&wd->wake, &wd->lock, &until);
        if (wd->stop)
            break;
        pthread_mutex_unlock(&wd->lock);
        check_once(rt);
        pthread_mutex_lock(&wd->lock);
    }
    pthread_mutex_unlock(&wd->lock);
    return NULL;
}

int watchdog_start(ami_lua_runtime_t *rt, ami_err_t *err)
{
    watchdog_t *wd = &rt->wd;
    memset(wd, 0, sizeof *wd);
    pthread_mutex_init(&wd->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&wd->wake, &attr);
    pthread_condattr_destroy(&attr);
    wd->budget_ns = (int64_t)rt->cfg.handler_budget_ms * 1000000;
    int rc = pthread_create(&wd->thread, NULL, watchdog_main, rt);
    if (rc != 0)
        return ami_err_set(err, AMI_E_IO, "cannot start the watchdog thread: %s", strerror(rc));
    wd->running = true;
    return 0;
}

void watchdog_stop(ami_lua_runtime_t *rt)
{
    watchdog_t *wd = &rt->wd;
    if (!wd->running)
        return;
    pthread_mutex_lock(&wd->lock);
    wd->stop = true;
    pthread_cond_signal(&wd->wake);
    pthread_mutex_unlock(&wd->lock);
    pthread_join(wd->thread, NULL);
    pthread_cond_destroy(&wd->wake);
    pthread_mutex_destroy(&wd->lock);
    wd->running = false;
}

void watchdog_enter(ami_lua_runtime_t *rt, lua_State *L, int64_t budget_ns)
{
    watchdog_t *wd = &rt->wd;
    rt->budget_ns = budget_ns;
    if (wd->target != L) {
        pthread_mutex_lock(&wd->lock); /* rare: another generation runs now */
        wd->target = L;
        pthread_mutex_unlock(&wd->lock);
    }
    wd->budget_ns = budget_ns;
    /* The loop thread is the only writer: no locked add needed. */
    atomic_store_explicit(&wd->seq, atomic_load_explicit(&wd->seq, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&wd->started_ns, ami_now_coarse_ns(), memory_order_release);
}

void watchdog_leave(ami_lua_runtime_t *rt, lua_State *L)
{
    atomic_store_explicit(&rt->wd.started_ns, 0, memory_order_release);
    if (rt->watchdog_fired)
        lua_sethook(L, NULL, 0, 0);
}

void watchdog_forget(ami_lua_runtime_t *rt, lua_State *L)
{
    watchdog_t *wd = &rt->wd;
    pthread_mutex_lock(&wd->lock);
    if (wd->target == L)
        wd->target = NULL;
    pthread_mutex_unlock(&wd->lock);
}
