/*
 * The runtime: its configuration and life, the bridge from the client's
 * events into the scripts, tools' chunks, statistics and metrics.
 * Generations are in lua_gen.c, one script's state in lua_script.c, the
 * scheduler in lua_sched.c, file watching in lua_watch.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lua_internal.h"
#include "lua/lua_watch.h"
#include "util/alloc.h"

#define DEFAULT_BUDGET_MS 20u
#define DEFAULT_LOAD_BUDGET_MS 2000u
#define DEFAULT_GRACE_MS 30000u
#define DEFAULT_MAX_COROUTINES 100000u
#define DEFAULT_MAX_HANDLERS 10000u
#define DEFAULT_MAX_WAITERS 100000u
#define DEFAULT_MEMORY_LIMIT ((size_t)512 << 20)
#define DEFAULT_DEBOUNCE_MS 300u
#define DEFAULT_LOG_LINES 1000u
#define DEFAULT_LOG_BYTES (1u << 20)
#define DEFAULT_METRIC_SERIES 1000u
#define DEFAULT_FILTER_STEPS 1000000u

void ami_lua_config_default(ami_lua_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->handler_budget_ms = DEFAULT_BUDGET_MS;
    cfg->load_budget_ms = DEFAULT_LOAD_BUDGET_MS;
    cfg->reload_grace_ms = DEFAULT_GRACE_MS;
    cfg->max_coroutines = DEFAULT_MAX_COROUTINES;
    cfg->max_handlers = DEFAULT_MAX_HANDLERS;
    cfg->max_waiters = DEFAULT_MAX_WAITERS;
    cfg->memory_limit = DEFAULT_MEMORY_LIMIT;
    cfg->reload_debounce_ms = DEFAULT_DEBOUNCE_MS;
    cfg->log_lines_per_sec = DEFAULT_LOG_LINES;
    cfg->log_bytes_per_sec = DEFAULT_LOG_BYTES;
    cfg->max_metric_series = DEFAULT_METRIC_SERIES;
    cfg->filter_max_steps = DEFAULT_FILTER_STEPS;
    cfg->watch_scripts = true;
}

/* ---- loading and reloading ------------------------------------------------------ */

static int load_generation(ami_lua_runtime_t *rt, ami_err_t *err)
{
    gen_t *g = gen_new(rt, err);
    if (!g)
        return -1;
    if (gen_load_scripts(g, err) < 0) {
        gen_close(g);
        return -1;
    }
    gen_activate(rt, g);
    return 0;
}

static uint32_t handler_count(const gen_t *g)
{
    uint32_t n = 0;
    for (const script_t *sc = g->scripts; sc; sc = sc->next)
        n += sc->nhandlers;
    return n;
}

int ami_lua_runtime_load(ami_lua_runtime_t *rt, ami_err_t *err)
{
    if (rt->current)
        return ami_err_set(err, AMI_E_INVALID, "scripts are already loaded; use reload");
    if (load_generation(rt, err) < 0) {
        AMI_LOG(rt->log, AMI_LOG_ERROR, "scripts failed to load", AMI_F_STR("error", err->msg));
        return -1;
    }
    AMI_LOG(rt->log, AMI_LOG_INFO, "scripts loaded", AMI_F_UINT("gen", rt->current->id),
            AMI_F_UINT("scripts", rt->current->nscripts), AMI_F_UINT("handlers", handler_count(rt->current)),
            AMI_F_STR("dir", rt->scripts_dir ? rt->scripts_dir : ""));
    return 0;
}

int ami_lua_runtime_reload(ami_lua_runtime_t *rt, const char *why, ami_err_t *err)
{
    ami_err_t local;
    if (!err)
        err = &local;
    uint64_t old = rt->current ? rt->current->id : 0;
    if (load_generation(rt, err) < 0) {
        rt->stats.reload_failures++;
        ami_counter_inc(rt->m_reload_failures);
        AMI_LOG(rt->log, AMI_LOG_ERROR, "reload failed; the running scripts stay in place",
                AMI_F_STR("why", why ? why : ""), AMI_F_UINT("running_gen", old),
                AMI_F_STR("error", err->msg));
        return -1;
    }
    rt->stats.reloads++;
    ami_counter_inc(rt->m_reloads);
    AMI_LOG(rt->log, AMI_LOG_INFO, "scripts reloaded", AMI_F_STR("why", why ? why : ""),
            AMI_F_UINT("gen", rt->current->id), AMI_F_UINT("old_gen", old),
            AMI_F_UINT("scripts", rt->current->nscripts), AMI_F_UINT("handlers", handler_count(rt->current)));
    return 0;
}

/* ---- events from the client ----------------------------------------------------------------- */

static void on_client_event(void *ud, const char *server_key, const ami_msg_t *msg)
{
    ami_lua_runtime_t *rt = ud;
    rt->event_seq++;
    /* With high availability, handlers run only on the owner of the
     * server; waiters (coroutines already running) hear every event. */
    bool act = lua_ha_may_act(rt, server_key);
    if (rt->current)
        for (script_t *sc = rt->current->scripts; sc; sc = sc->next)
            handlers_dispatch(sc, msg, server_key, act);
    for (gen_t *g = rt->draining; g; g = g->next)
        for (script_t *sc = g->scripts; sc; sc = sc->next)
            handlers_dispatch(sc, msg, server_key, false);
}

/* ---- metrics ------------------------------------------------------------------------------------ */

static int64_t gen_memory(const gen_t *g)
{
    int64_t bytes = 0;
    for (const script_t *sc = g ? g->scripts : NULL; sc; sc = sc->next)
        bytes += sc->mem_bytes;
    return bytes;
}

static int64_t live_memory(const ami_lua_runtime_t *rt)
{
    int64_t bytes = gen_memory(rt->current);
    for (const gen_t *g = rt->draining; g; g = g->next)
        bytes += gen_memory(g);
    return bytes;
}

static void collect_metrics(void *ud, ami_metrics_t *m)
{
    (void)m;
    ami_lua_runtime_t *rt = ud;
    uint64_t gens = rt->current ? 1 : 0;
    for (const gen_t *g = rt->draining; g; g = g->next)
        gens++;
    ami_gauge_set(rt->m_memory, (double)live_memory(rt));
    ami_gauge_set(rt->m_generations, (double)gens);
}

static ami_counter_t *counter(ami_lua_runtime_t *rt, const char *name, const char *help)
{
    return ami_metrics_counter(rt->metrics, name, help, NULL, NULL);
}

static void register_metrics(ami_lua_runtime_t *rt)
{
    rt->m_handler_runs = counter(rt, "ami_lua_handler_runs_total", "Handler and spawned runs that finished");
    rt->m_handler_errors = counter(rt, "ami_lua_handler_errors_total", "Handler runs that raised an error");
    rt->m_handler_kills = counter(rt, "ami_lua_handler_kills_total",
                                  "Handlers stopped by the watchdog for running past their budget");
    rt->m_refused = counter(rt, "ami_lua_coroutines_refused_total",
                            "Handler runs refused because max_coroutines were waiting");
    rt->m_waiters_refused = counter(rt, "ami_lua_waiters_refused_total",
                                    "ami.wait_for calls refused because max_waiters were waiting");
    rt->m_handlers_refused = counter(rt, "ami_lua_handlers_refused_total",
                                     "ami.on registrations refused past max_handlers");
    rt->m_memory_refused = counter(rt, "ami_lua_memory_refused_total",
                                   "Script allocations refused at a script's memory_limit");
    rt->m_reloads = counter(rt, "ami_lua_reloads_total", "Successful script reloads");
    rt->m_reload_failures = counter(rt, "ami_lua_reload_failures_total",
                                    "Reloads refused because a script failed to load");
    rt->m_filter_budget = counter(rt, "ami_lua_filter_budget_exceeded_total",
                                  "Pattern filter matches abandoned past filter_max_steps (counted as no match)");
    rt->m_foreign_resume = counter(rt, "ami_lua_foreign_resumes_refused_total",
                                   "Attempts to resume an engine coroutine from a script, refused");
    rt->m_parked = ami_metrics_gauge(rt->metrics, "ami_lua_coroutines_waiting",
                                     "Coroutines waiting for an action, a timer or an event", NULL, NULL);
    rt->m_memory = ami_metrics_gauge(rt->metrics, "ami_lua_memory_bytes",
                                     "Memory of the live script states", NULL, NULL);
    rt->m_generations = ami_metrics_gauge(rt->metrics, "ami_lua_generations",
                                          "Script generations alive (current and draining)", NULL, NULL);
    ami_metrics_add_collector(rt->metrics, collect_metrics, rt);
}

/* ---- configuration ----------------------------------------------------------------------------- */

static char **copy_list(const char *const *src, size_t *n, bool *ok)
{
    *n = 0;
    if (!src)
        return NULL;
    while (src[*n])
        (*n)++;
    char **dst = ami_calloc(*n + 1, sizeof *dst);
    *ok = *ok && dst;
    for (size_t i = 0; dst && i < *n; i++) {
        dst[i] = ami_strdup(src[i]);
        *ok = *ok && dst[i];
    }
    return dst;
}

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        ami_free(list[i]);
    ami_free(list);
}

static void apply_defaults(ami_lua_config_t *c)
{
    ami_lua_config_t d;
    ami_lua_config_default(&d);
    uint32_t *fields[] = {&c->handler_budget_ms, &c->load_budget_ms, &c->max_coroutines, &c->max_handlers,
                          &c->max_waiters, &c->reload_debounce_ms, &c->log_lines_per_sec,
                          &c->log_bytes_per_sec, &c->max_metric_series, &c->filter_max_steps};
    const uint32_t *defaults[] = {&d.handler_budget_ms, &d.load_budget_ms, &d.max_coroutines, &d.max_handlers,
                                  &d.max_waiters, &d.reload_debounce_ms, &d.log_lines_per_sec,
                                  &d.log_bytes_per_sec, &d.max_metric_series, &d.filter_max_steps};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!*fields[i])
            *fields[i] = *defaults[i];
    if (!c->memory_limit)
        c->memory_limit = d.memory_limit;
}

static bool copy_config(ami_lua_runtime_t *rt, const ami_lua_config_t *cfg)
{
    ami_lua_config_default(&rt->cfg);
    if (cfg)
        rt->cfg = *cfg;
    apply_defaults(&rt->cfg);
    bool ok = true;
    rt->scripts_dir = cfg && cfg->scripts_dir ? ami_strdup(cfg->scripts_dir) : NULL;
    rt->lua_path = cfg && cfg->lua_path ? ami_strdup(cfg->lua_path) : NULL;
    ok = (!cfg || !cfg->scripts_dir || rt->scripts_dir) && (!cfg || !cfg->lua_path || rt->lua_path);
    rt->getenv_allow = copy_list(cfg ? cfg->getenv_allow : NULL, &rt->ngetenv_allow, &ok);
    rt->getenv_deny = copy_list(cfg ? cfg->getenv_deny : NULL, &rt->ngetenv_deny, &ok);
    rt->cfg.scripts_dir = rt->scripts_dir;
    rt->cfg.lua_path = rt->lua_path;
    rt->cfg.getenv_allow = (const char *const *)rt->getenv_allow;
    rt->cfg.getenv_deny = (const char *const *)rt->getenv_deny;
    return ok;
}

/* ---- lifecycle --------------------------------------------------------------------------------- */

ami_lua_runtime_t *ami_lua_runtime_new(ami_client_t *client, const ami_lua_config_t *cfg, ami_err_t *err)
{
    ami_lua_runtime_t *rt = ami_calloc(1, sizeof *rt);
    if (!rt || !copy_config(rt, cfg)) {
        ami_lua_runtime_free(rt);
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating the Lua runtime");
        return NULL;
    }
    rt->client = client;
    rt->loop = ami_client_loop(client);
    rt->log = ami_client_logger(client);
    rt->metrics = ami_client_metrics(client);
    register_metrics(rt);
    sched_init(rt);
    watch_start(rt);
    if (watchdog_start(rt, err) < 0) {
        ami_lua_runtime_free(rt);
        return NULL;
    }
    rt->sub = ami_client_subscribe(client, NULL, on_client_event, rt, err);
    if (!rt->sub) {
        ami_lua_runtime_free(rt);
        return NULL;
    }
    server_events_start(rt);
    return rt;
}

void ami_lua_runtime_drain(ami_lua_runtime_t *rt)
{
    rt->drained = true;
    /* Periodic functions between runs have nothing in progress. */
    for (script_t *sc = rt->current ? rt->current->scripts : NULL; sc; sc = sc->next)
        sched_cancel_idle(sc);
    for (gen_t *g = rt->draining; g; g = g->next)
        for (script_t *sc = g->scripts; sc; sc = sc->next)
            sched_cancel_idle(sc);
}

size_t ami_lua_runtime_waiting(const ami_lua_runtime_t *rt)
{
    size_t n = rt->nrunq;
    if (rt->current)
        n += rt->current->nparked - rt->current->nidle_waits;
    for (const gen_t *g = rt->draining; g; g = g->next)
        n += g->nparked - g->nidle_waits;
    return n;
}

void ami_lua_runtime_shutdown(ami_lua_runtime_t *rt)
{
    while (rt->draining) {
        gen_t *g = rt->draining;
        rt->draining = g->next;
        gen_close(g);
    }
    if (rt->current) {
        gen_close(rt->current);
        rt->current = NULL;
    }
}

void ami_lua_runtime_free(ami_lua_runtime_t *rt)
{
    if (!rt)
        return;
    if (rt->loop) {
        ami_lua_runtime_shutdown(rt);
        watch_stop(rt);
        sched_deinit(rt);
    }
    if (rt->sub)
        ami_client_unsubscribe(rt->client, rt->sub);
    if (rt->client)
        server_events_stop(rt);
    if (rt->metrics)
        ami_metrics_remove_collector(rt->metrics, collect_metrics, rt);
    watchdog_stop(rt);
    free_list(rt->getenv_allow, rt->ngetenv_allow);
    free_list(rt->getenv_deny, rt->ngetenv_deny);
    ami_free(rt->scripts_dir);
    ami_free(rt->lua_path);
    ami_free(rt);
}

/* ---- chunks from tools ---------------------------------------------------------------------- */

static int load_chunk(lua_State *L)
{
    const char **src = lua_touserdata(L, 1);
    if (luaL_loadbuffer(L, src[1], strlen(src[1]), src[0]) != 0)
        return lua_error(L);
    if (src[2])
        return 1; /* trusted: the real globals */
    script_t *sc = script_of(L);
    lua_newtable(L); /* its own globals over the script environment */
    lua_newtable(L);
    sandbox_push_env(L, sc);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_setfenv(L, -2);
    return 1;
}

int ami_lua_runtime_spawn_string(ami_lua_runtime_t *rt, const char *name, const char *code,
                                 bool trusted, ami_err_t *err)
{
    if (!rt->current)
        return ami_err_set(err, AMI_E_INVALID, "no scripts are loaded");
    script_t *sc = gen_console(rt->current, err);
    if (!sc)
        return -1;
    const char *src[3] = {name, code, trusted ? "trusted" : NULL};
    lua_State *L = sc->L;
    int top = lua_gettop(L);
    lua_pushcfunction(L, load_chunk);
    lua_pushlightuserdata(L, src);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        ami_err_set(err, AMI_E_CONFIG, "%s", lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    co_t *co = sched_co_get(sc);
    if (!co) {
        lua_settop(L, top);
        return ami_err_set(err, AMI_E_LIMIT, "too many coroutines");
    }
    snprintf(co->label_buf, sizeof co->label_buf, "%s", name);
    co->label = co->label_buf;
    lua_xmove(L, co->L, 1);
    lua_settop(L, top);
    if (!sched_enqueue(co, 0)) {
        sched_co_release(co);
        return ami_err_set(err, AMI_E_LIMIT, "too many coroutines waiting to start");
    }
    return 0;
}

void ami_lua_runtime_stats(const ami_lua_runtime_t *rt, ami_lua_stats_t *out)
{
    *out = rt->stats;
    out->generation = rt->current ? rt->current->id : 0;
    out->generations_live = rt->current ? 1 : 0;
    for (const gen_t *g = rt->draining; g; g = g->next)
        out->generations_live++;
    out->lua_memory = live_memory(rt);
}
