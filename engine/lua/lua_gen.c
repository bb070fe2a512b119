/*
 * Generations: the set of scripts loaded together, and their life.
 *
 * A generation holds one script (one Lua state) per *.lua file of the
 * scripts folder, loaded in name order. Reload builds a complete new
 * generation first; if any script fails to load, the new one is closed and
 * the running one stays. On success the new generation takes every event;
 * the old one drains: its waiting coroutines finish (or are cancelled when
 * the grace period ends), then its states are closed.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lua_internal.h"
#include "util/alloc.h"

#define MAX_SCRIPTS 256
#define CONSOLE_NAME "console"

gen_t *gen_new(ami_lua_runtime_t *rt, ami_err_t *err)
{
    gen_t *g = ami_calloc(1, sizeof *g);
    if (!g) {
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating a script generation");
        return NULL;
    }
    g->rt = rt;
    g->id = ++rt->next_gen_id;
    g->state = GEN_LOADING;
    ev_init(&g->grace_timer, NULL);
    return g;
}

static void gen_append(gen_t *g, script_t *sc)
{
    if (g->scripts_tail)
        g->scripts_tail->next = sc;
    else
        g->scripts = sc;
    g->scripts_tail = sc;
    g->nscripts++;
}

void gen_close(gen_t *g)
{
    ev_timer_stop(g->rt->loop, &g->grace_timer);
    for (script_t *sc = g->scripts, *next; sc; sc = next) {
        next = sc->next;
        script_close(sc);
    }
    ami_free(g);
}

/* ---- loading scripts ------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static size_t list_scripts(const char *dir, char **names, size_t max, ami_err_t *err)
{
    DIR *d = opendir(dir);
    if (!d) {
        ami_err_set(err, AMI_E_CONFIG, "cannot open the scripts folder %s: %s", dir, strerror(errno));
        return SIZE_MAX;
    }
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        size_t len = strlen(e->d_name);
        if (len > 4 && len < 60 && e->d_name[0] != '.' && strcmp(e->d_name + len - 4, ".lua") == 0)
            names[n++] = ami_strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    return n;
}

static int traceback_handler(lua_State *L)
{
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

/* The script's top level runs under the load budget, like a handler under
 * its own: a script cannot hang a reload. */
static int run_top_level(script_t *sc, const char *path, ami_err_t *err)
{
    lua_State *L = sc->L;
    ami_lua_runtime_t *rt = sc->gen->rt;
    int top = lua_gettop(L);
    if (sandbox_load_file(L, sc, path, err) < 0)
        return -1;
    lua_pushcfunction(L, traceback_handler);
    lua_insert(L, -2);
    rt->watchdog_fired = false;
    rt->loading = sc;
    script_strict_enter(sc);
    watchdog_enter(rt, L, (int64_t)rt->cfg.load_budget_ms * 1000000);
    int rc = lua_pcall(L, 0, 0, top + 1);
    watchdog_leave(rt, L);
    script_strict_leave(sc);
    rt->loading = NULL;
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        ami_err_set(err, AMI_E_CONFIG, "%s", msg ? msg : "error object is not a string");
        lua_settop(L, top);
        return -1;
    }
    lua_settop(L, top);
    script_after_run(sc);
    return 0;
}

static int load_one(gen_t *g, const char *dir, const char *name, ami_err_t *err)
{
    script_t *sc = script_new(g, name, err);
    if (!sc)
        return -1;
    gen_append(g, sc); /* closed with the generation, loaded or not */
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return run_top_level(sc, path, err);
}

int gen_load_scripts(gen_t *g, ami_err_t *err)
{
    const char *dir = g->rt->scripts_dir;
    if (!dir)
        return 0;
    char *names[MAX_SCRIPTS];
    size_t n = list_scripts(dir, names, MAX_SCRIPTS, err);
    if (n == SIZE_MAX)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc == 0)
            rc = load_one(g, dir, names[i], err);
        ami_free(names[i]);
    }
    return rc;
}

script_t *gen_console(gen_t *g, ami_err_t *err)
{
    for (script_t *sc = g->scripts; sc; sc = sc->next)
        if (strcmp(sc->name, CONSOLE_NAME) == 0)
            return sc;
    script_t *sc = script_new(g, CONSOLE_NAME, err);
    if (sc)
        gen_append(g, sc);
    return sc;
}

/* ---- switching generations -------------------------------------------------------------- */

static void unlink_draining(ami_lua_runtime_t *rt, gen_t *g)
{
    for (gen_t **p = &rt->draining; *p; p = &(*p)->next)
        if (*p == g) {
            *p = g->next;
            return;
        }
}

static void on_grace_over(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    gen_t *g = t->data;
    ami_lua_runtime_t *rt = g->rt;
    if (g->nparked)
        AMI_LOG(rt->log, AMI_LOG_WARN, "old script generation cancelled after the grace period",
                AMI_F_UINT("gen", g->id), AMI_F_UINT("coroutines", g->nparked));
    else
        AMI_LOG(rt->log, AMI_LOG_DEBUG, "old script generation finished", AMI_F_UINT("gen", g->id));
    unlink_draining(rt, g);
    gen_close(g);
}

void gen_maybe_finish_draining(gen_t *g)
{
    if (g->state != GEN_DRAINING || g->nparked > 0)
        return;
    ev_timer_stop(g->rt->loop, &g->grace_timer);
    ev_timer_set(&g->grace_timer, 0., 0.);
    ev_timer_start(g->rt->loop, &g->grace_timer);
}

static void drain_gen(ami_lua_runtime_t *rt, gen_t *g)
{
    g->state = GEN_DRAINING;
    g->next = rt->draining;
    rt->draining = g;
    ev_timer_stop(rt->loop, &g->grace_timer);
    ev_init(&g->grace_timer, on_grace_over);
    g->grace_timer.data = g;
    /* The new generation runs its own periodic functions. */
    for (script_t *sc = g->scripts; sc; sc = sc->next)
        sched_cancel_idle(sc);
    if (ev_is_active(&g->grace_timer))
        return; /* nothing left waiting: closing on the next iteration */
    double after = g->nparked ? rt->cfg.reload_grace_ms / 1000.0 : 0.;
    ev_timer_set(&g->grace_timer, after, 0.);
    ev_timer_start(rt->loop, &g->grace_timer);
}

void gen_activate(ami_lua_runtime_t *rt, gen_t *g)
{
    gen_t *old = rt->current;
    g->state = GEN_ACTIVE;
    rt->current = g;
    if (old)
        drain_gen(rt, old);
}
