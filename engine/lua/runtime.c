/*
 * The runtime: generations of scripts, their loading, switching and
 * draining, and the bridge from the client's events into them.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <luajit.h>
#include <lualib.h>

#include "lua/lua_internal.h"
#include "util/alloc.h"

#define DEFAULT_BUDGET_MS 20u
#define DEFAULT_LOAD_BUDGET_MS 2000u
#define DEFAULT_GRACE_MS 30000u
#define DEFAULT_MAX_COROUTINES 100000u
#define DEFAULT_MAX_HANDLERS 10000u
#define DEFAULT_MAX_WAITERS 100000u
#define DEFAULT_MEMORY_LIMIT ((size_t)512 << 20)
#define DEFAULT_DEBOUNCE_MS 300u
#define MAX_SCRIPTS 256

static char gen_key; /* registry key: the generation owning a state */

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
    cfg->watch_scripts = true;
}

gen_t *gen_of(lua_State *L)
{
    lua_pushlightuserdata(L, &gen_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    gen_t *g = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return g;
}

int gen_pcall_ref(lua_State *L, int fn_ref, void *ud)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    lua_pushlightuserdata(L, ud);
    return lua_pcall(L, 1, 0, 0);
}

void push_error(lua_State *L, ami_status_t code, const char *msg)
{
    lua_pushfstring(L, "%s: %s", ami_status_name(code), msg ? msg : "");
}

void log_lua_error(ami_lua_runtime_t *rt, const char *what, const char *label, lua_State *co,
                   const char *msg)
{
    if (!ami_log_enabled(rt->log, AMI_LOG_ERROR))
        return;
    gen_t *g = gen_of(co);
    const char *trace = "";
    int top = lua_gettop(g->L);
    if (co != g->L) {
        luaL_traceback(g->L, co, NULL, 0);
        trace = lua_tostring(g->L, -1);
    }
    AMI_LOG(rt->log, AMI_LOG_ERROR, what, AMI_F_STR("where", label ? label : "?"),
            AMI_F_STR("error", msg ? msg : "?"), AMI_F_UINT("gen", g->id),
            AMI_F_STR("traceback", trace ? trace : ""));
    lua_settop(g->L, top);
}

/* ---- generations ------------------------------------------------------------------ */

/* Lua memory comes from LuaJIT's own allocator (fast for the many small
 * objects a script makes); this wrapper counts it per generation and in the
 * engine's live bytes, and enforces memory_limit. The limit applies to
 * script code only: the engine's own pushes (event objects, results) may
 * pass it, so they never fail unprotected. */
static void *gen_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    gen_t *g = ud;
    size_t old = ptr ? osize : 0;
    if (nsize > old && g->mem_bytes + (int64_t)(nsize - old) > (int64_t)g->mem_limit &&
        (g->state == GEN_LOADING || (g->rt->running && g->rt->running->gen == g))) {
        g->mem_refused = true;
        ami_counter_inc(g->rt->m_memory_refused);
        return NULL;
    }
    void *p = g->base_alloc(g->base_ud, ptr, osize, nsize);
    if (p || nsize == 0) {
        int64_t delta = (int64_t)nsize - (int64_t)old;
        g->mem_bytes += delta;
        ami_alloc_note_external(delta);
    }
    return p;
}

static void wrap_allocator(gen_t *g)
{
    g->base_alloc = lua_getallocf(g->L, &g->base_ud);
    /* What the new state holds already, so its frees balance later. */
    g->mem_bytes = (int64_t)lua_gc(g->L, LUA_GCCOUNT, 0) * 1024 + lua_gc(g->L, LUA_GCCOUNTB, 0);
    ami_alloc_note_external(g->mem_bytes);
    lua_setallocf(g->L, gen_alloc, g);
}

static int build_module(lua_State *L)
{
    gen_t *g = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_newtable(L);
    ami_lua_inject_event(L, g);
    ami_lua_inject_handlers(L, g);
    ami_lua_inject_action(L, g);
    ami_lua_inject_log(L, g);
    ami_lua_inject_timer(L, g);
    ami_lua_inject_metrics(L, g);
    ami_lua_inject_servers(L, g);
    lua_pushnumber(L, (lua_Number)g->id);
    lua_setfield(L, -2, "generation");
    lua_pushliteral(L, AMI_VERSION);
    lua_setfield(L, -2, "version");
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "ami");
    lua_pop(L, 2);
    if (g->rt->cfg.testing)
        ami_lua_inject_testing(L, g);
    sandbox_push_env(L, g);
    return 0;
}

static void gen_free_state(gen_t *g)
{
    if (g->L) {
        watchdog_forget(g->rt, g->L);
        /* LuaJIT destroys a state's whole arena at close only if the state
         * still uses LuaJIT's allocator; through our wrapper it would free
         * the objects and keep the arena's pages (a reload leaked ~170 KiB
         * of RSS, invisible to live bytes; found by the soak). */
        if (g->base_alloc)
            lua_setallocf(g->L, g->base_alloc, g->base_ud);
        lua_close(g->L);
        /* lua_close freed everything; a remainder is only the first
         * estimate's rounding, not memory still held. */
        ami_alloc_note_external(-g->mem_bytes);
    }
    ami_free(g);
}

static gen_t *gen_new(ami_lua_runtime_t *rt, ami_err_t *err)
{
    gen_t *g = ami_calloc(1, sizeof *g);
    if (!g) {
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating a script generation");
        return NULL;
    }
    g->rt = rt;
    g->id = ++rt->next_gen_id;
    g->state = GEN_LOADING;
    g->mem_limit = rt->cfg.memory_limit;
    g->env_ref = LUA_NOREF;
    g->L = luaL_newstate();
    if (!g->L) {
        ami_free(g);
        ami_err_set(err, AMI_E_NOMEM, "cannot create a Lua state");
        return NULL;
    }
    wrap_allocator(g);
    /* Every event makes one short-lived object: let the heap grow to 4x the
     * live data between collections (the default, 2x, collects twice as
     * often for the same garbage). Heaps of scripts are small. */
    lua_gc(g->L, LUA_GCSETPAUSE, 400);
    luaL_openlibs(g->L);
    if (!rt->cfg.jit)
        luaJIT_setmode(g->L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    lua_pushlightuserdata(g->L, &gen_key);
    lua_pushlightuserdata(g->L, g);
    lua_rawset(g->L, LUA_REGISTRYINDEX);
    ev_init(&g->grace_timer, NULL);
    if (lua_cpcall(g->L, build_module, g) != 0) {
        ami_err_set(err, AMI_E_NOMEM, "cannot build the ami module: %s", lua_tostring(g->L, -1));
        gen_free_state(g);
        return NULL;
    }
    return g;
}

static void gen_close(gen_t *g)
{
    ev_timer_stop(g->rt->loop, &g->grace_timer);
    sched_cancel_gen(g);
    handlers_free_all(g);
    gen_free_state(g);
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
        if (len > 4 && e->d_name[0] != '.' && strcmp(e->d_name + len - 4, ".lua") == 0)
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

static int run_script(gen_t *g, const char *path, ami_err_t *err)
{
    lua_State *L = g->L;
    int top = lua_gettop(L);
    if (sandbox_load_file(L, g, path, err) < 0)
        return -1;
    lua_pushcfunction(L, traceback_handler);
    lua_insert(L, -2);
    ami_lua_runtime_t *rt = g->rt;
    rt->watchdog_fired = false;
    watchdog_enter(rt, L, (int64_t)rt->cfg.load_budget_ms * 1000000);
    int rc = lua_pcall(L, 0, 0, top + 1);
    watchdog_leave(rt, L);
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        ami_err_set(err, AMI_E_CONFIG, "%s", msg ? msg : "error object is not a string");
        lua_settop(L, top);
        return -1;
    }
    lua_settop(L, top);
    return 0;
}

static int load_scripts(gen_t *g, ami_err_t *err)
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
        if (rc == 0) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            rc = run_script(g, path, err);
        }
        ami_free(names[i]);
    }
    return rc;
}

/* ---- switching generations -------------------------------------------------------------- */

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
    for (gen_t **p = &rt->draining; *p; p = &(*p)->next)
        if (*p == g) {
            *p = g->next;
            break;
        }
    gen_close(g);
}

static void drain_gen(ami_lua_runtime_t *rt, gen_t *g)
{
    g->state = GEN_DRAINING;
    g->next = rt->draining;
    rt->draining = g;
    ev_timer_stop(rt->loop, &g->grace_timer);
    ev_init(&g->grace_timer, on_grace_over);
    g->grace_timer.data = g;
    sched_cancel_idle(g); /* the new generation runs its own periodic functions */
    if (ev_is_active(&g->grace_timer))
        return; /* nothing left waiting: closing on the next iteration */
    double after = g->nparked ? rt->cfg.reload_grace_ms / 1000.0 : 0.;
    ev_timer_set(&g->grace_timer, after, 0.);
    ev_timer_start(rt->loop, &g->grace_timer);
}

static void activate(ami_lua_runtime_t *rt, gen_t *g)
{
    gen_t *old = rt->current;
    g->state = GEN_ACTIVE;
    rt->current = g;
    if (old)
        drain_gen(rt, old);
    if (rt->runq)
        ev_idle_start(rt->loop, &rt->runq_idle);
}

static int load_generation(ami_lua_runtime_t *rt, ami_err_t *err)
{
    gen_t *g = gen_new(rt, err);
    if (!g)
        return -1;
    if (load_scripts(g, err) < 0) {
        gen_close(g);
        return -1;
    }
    activate(rt, g);
    return 0;
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
            AMI_F_UINT("handlers", rt->current->nhandlers),
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
            AMI_F_UINT("handlers", rt->current->nhandlers));
    return 0;
}

/* ---- events from the client ----------------------------------------------------------------- */

static void on_client_event(void *ud, const char *server_key, const ami_msg_t *msg)
{
    ami_lua_runtime_t *rt = ud;
    rt->event_seq++;
    if (rt->current)
        handlers_dispatch(rt->current, msg, server_key, true);
    for (gen_t *g = rt->draining; g; g = g->next)
        if (g->waiters)
            handlers_dispatch(g, msg, server_key, false);
}

/* ---- script file watching ------------------------------------------------------------------- */

static void on_debounced(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    ami_lua_runtime_reload(t->data, "a script file changed", NULL);
}

static void on_inotify(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    ami_lua_runtime_t *rt = w->data;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool relevant = false;
    ssize_t n;
    while ((n = read(rt->inotify_fd, buf, sizeof buf)) > 0) {
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)(void *)p;
            size_t len = e->len ? strlen(e->name) : 0;
            if (len > 4 && e->name[0] != '.' && strcmp(e->name + len - 4, ".lua") == 0)
                relevant = true;
            p += sizeof *e + e->len;
        }
    }
    if (!relevant)
        return;
    ev_timer_stop(loop, &rt->debounce);
    ev_timer_set(&rt->debounce, rt->cfg.reload_debounce_ms / 1000.0, 0.);
    ev_timer_start(loop, &rt->debounce);
}

static void start_watching(ami_lua_runtime_t *rt)
{
    rt->inotify_fd = -1;
    ev_init(&rt->debounce, on_debounced);
    rt->debounce.data = rt;
    if (!rt->cfg.watch_scripts || !rt->scripts_dir)
        return;
    rt->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (rt->inotify_fd < 0 ||
        inotify_add_watch(rt->inotify_fd, rt->scripts_dir,
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE) < 0) {
        AMI_LOG(rt->log, AMI_LOG_WARN, "cannot watch the scripts folder; reload with SIGHUP",
                AMI_F_STR("dir", rt->scripts_dir), AMI_F_STR("error", strerror(errno)));
        if (rt->inotify_fd >= 0)
            close(rt->inotify_fd);
        rt->inotify_fd = -1;
        return;
    }
    ev_io_init(&rt->inotify_io, on_inotify, rt->inotify_fd, EV_READ);
    rt->inotify_io.data = rt;
    ev_io_start(rt->loop, &rt->inotify_io);
}

static void stop_watching(ami_lua_runtime_t *rt)
{
    ev_timer_stop(rt->loop, &rt->debounce);
    if (rt->inotify_fd < 0)
        return;
    ev_io_stop(rt->loop, &rt->inotify_io);
    close(rt->inotify_fd);
    rt->inotify_fd = -1;
}

/* ---- lifecycle --------------------------------------------------------------------------------- */

static int64_t live_memory(const ami_lua_runtime_t *rt)
{
    int64_t bytes = rt->current ? rt->current->mem_bytes : 0;
    for (const gen_t *g = rt->draining; g; g = g->next)
        bytes += g->mem_bytes;
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
                                   "Script allocations refused at the generation's memory_limit");
    rt->m_reloads = counter(rt, "ami_lua_reloads_total", "Successful script reloads");
    rt->m_reload_failures = counter(rt, "ami_lua_reload_failures_total",
                                    "Reloads refused because a script failed to load");
    rt->m_parked = ami_metrics_gauge(rt->metrics, "ami_lua_coroutines_waiting",
                                     "Coroutines waiting for an action, a timer or an event", NULL, NULL);
    rt->m_memory = ami_metrics_gauge(rt->metrics, "ami_lua_memory_bytes",
                                     "Memory of the live script generations", NULL, NULL);
    rt->m_generations = ami_metrics_gauge(rt->metrics, "ami_lua_generations",
                                          "Script generations alive (current and draining)", NULL, NULL);
    ami_metrics_add_collector(rt->metrics, collect_metrics, rt);
}

static bool copy_config(ami_lua_runtime_t *rt, const ami_lua_config_t *cfg)
{
    ami_lua_config_default(&rt->cfg);
    if (cfg)
        rt->cfg = *cfg;
    ami_lua_config_t d;
    ami_lua_config_default(&d);
    if (!rt->cfg.handler_budget_ms)
        rt->cfg.handler_budget_ms = d.handler_budget_ms;
    if (!rt->cfg.load_budget_ms)
        rt->cfg.load_budget_ms = d.load_budget_ms;
    if (!rt->cfg.max_coroutines)
        rt->cfg.max_coroutines = d.max_coroutines;
    if (!rt->cfg.max_handlers)
        rt->cfg.max_handlers = d.max_handlers;
    if (!rt->cfg.max_waiters)
        rt->cfg.max_waiters = d.max_waiters;
    if (!rt->cfg.memory_limit)
        rt->cfg.memory_limit = d.memory_limit;
    if (!rt->cfg.reload_debounce_ms)
        rt->cfg.reload_debounce_ms = d.reload_debounce_ms;
    rt->scripts_dir = cfg && cfg->scripts_dir ? ami_strdup(cfg->scripts_dir) : NULL;
    rt->lua_path = cfg && cfg->lua_path ? ami_strdup(cfg->lua_path) : NULL;
    rt->cfg.scripts_dir = rt->scripts_dir;
    rt->cfg.lua_path = rt->lua_path;
    return (!cfg || !cfg->scripts_dir || rt->scripts_dir) && (!cfg || !cfg->lua_path || rt->lua_path);
}

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
    start_watching(rt);
    if (watchdog_start(rt, err) < 0) {
        ami_lua_runtime_free(rt);
        return NULL;
    }
    rt->sub = ami_client_subscribe(client, NULL, on_client_event, rt, err);
    if (!rt->sub) {
        ami_lua_runtime_free(rt);
        return NULL;
    }
    return rt;
}

void ami_lua_runtime_drain(ami_lua_runtime_t *rt)
{
    rt->drained = true;
    /* Periodic functions between runs have nothing in progress. */
    if (rt->current)
        sched_cancel_idle(rt->current);
    for (gen_t *g = rt->draining; g; g = g->next)
        sched_cancel_idle(g);
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
        stop_watching(rt);
        sched_deinit(rt);
    }
    if (rt->sub)
        ami_client_unsubscribe(rt->client, rt->sub);
    if (rt->metrics)
        ami_metrics_remove_collector(rt->metrics, collect_metrics, rt);
    watchdog_stop(rt);
    ami_free(rt->scripts_dir);
    ami_free(rt->lua_path);
    ami_free(rt);
}

static int load_chunk(lua_State *L)
{
    const char **src = lua_touserdata(L, 1);
    if (luaL_loadbuffer(L, src[1], strlen(src[1]), src[0]) != 0)
        return lua_error(L);
    if (src[2])
        return 1; /* trusted: the real globals */
    gen_t *g = gen_of(L);
    lua_newtable(L); /* its own globals over the script environment */
    lua_newtable(L);
    sandbox_push_env(L, g);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setfenv(L, -2);
    return 1;
}

int ami_lua_runtime_spawn_string(ami_lua_runtime_t *rt, const char *name, const char *code,
                                 bool trusted, ami_err_t *err)
{
    gen_t *g = rt->current;
    if (!g)
        return ami_err_set(err, AMI_E_INVALID, "no scripts are loaded");
    const char *src[3] = {name, code, trusted ? "trusted" : NULL};
    lua_State *L = g->L;
    int top = lua_gettop(L);
    lua_pushcfunction(L, load_chunk);
    lua_pushlightuserdata(L, src);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        ami_err_set(err, AMI_E_CONFIG, "%s", lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    co_t *co = sched_co_get(g);
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
