/*
 * ami.metrics: scripts' own Prometheus series, in the engine's registry
 * (served on /metrics next to the engine's).
 *
 *   local calls = ami.metrics.counter("calls_total", "Calls seen", {queue = "sales"})
 *   calls:inc()
 *   local depth = ami.metrics.gauge("queue_depth", "Callers waiting")
 *   depth:set(4)
 *   local wait = ami.metrics.histogram("wait_seconds", "Time to answer", nil, {1, 5, 30})
 *   wait:observe(12.5)
 *
 * A series is registered by name and labels and lives in the C registry for
 * the engine's lifetime; the Lua object is a userdata holding its pointer,
 * so registering again (a reload, another script) gives the same series and
 * nothing needs freeing with the state.
 *
 * Label keys are sorted before registration: the registry takes label order
 * as the family's label names, and a Lua table has no order.
 *
 * Bounded per script: a script may create at most max_metric_series series,
 * and scripts together never take the last quarter of the registry, which
 * stays for the engine's own series (a script cannot make them vanish).
 * Values must be finite numbers.
 *
 * Errors: wrong argument types raise; what the registry refuses (a bad
 * name, a type or label conflict, the series limits) is returned as nil, err.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lua/lua_internal.h"

typedef enum metric_kind { MK_COUNTER = 0, MK_GAUGE, MK_HISTOGRAM } metric_kind_t;

static const char *const mt_names[] = {"ami.metrics.counter", "ami.metrics.gauge",
                                       "ami.metrics.histogram"};

typedef struct metric_ud {
    void *series;
} metric_ud_t;

typedef struct label {
    const char *k;
    const char *v;
} label_t;

/* ---- methods -------------------------------------------------------------------------- */

MAY_RAISE static void *check_series(lua_State *L, metric_kind_t kind)
{
    return ((metric_ud_t *)luaL_checkudata(L, 1, mt_names[kind]))->series;
}

MAY_RAISE static int counter_inc(lua_State *L)
{
    ami_counter_t *c = check_series(L, MK_COUNTER);
    lua_Number n = luaL_optnumber(L, 2, 1);
    if (!(n >= 0) || !isfinite(n))
        return luaL_argerror(L, 2, "a counter only goes up: give a finite number >= 0 "
                                   "(use a gauge for a value that goes down)");
    ami_counter_add(c, n);
    return 0;
}

MAY_RAISE static int counter_value(lua_State *L)
{
    lua_pushnumber(L, ((ami_counter_t *)check_series(L, MK_COUNTER))->value);
    return 1;
}

static const num_range_t ANY_FINITE = {-1.7976931348623157e308, 1.7976931348623157e308, false, "a value"};

/* A finite value at idx, or raises: a NaN in a series breaks every graph drawn from it. */
MAY_RAISE static double check_value(lua_State *L, int idx, const char *fn)
{
    double v;
    char why[200];
    if (!arg_number(L, idx, fn, "the value", &ANY_FINITE, &v, why, sizeof why))
        luaL_argerror(L, idx, why);
    return v;
}

MAY_RAISE static int gauge_set(lua_State *L)
{
    ami_gauge_t *g = check_series(L, MK_GAUGE);
    ami_gauge_set(g, check_value(L, 2, "gauge:set"));
    return 0;
}

MAY_RAISE static int gauge_add(lua_State *L)
{
    ami_gauge_t *g = check_series(L, MK_GAUGE);
    ami_gauge_add(g, check_value(L, 2, "gauge:add"));
    return 0;
}

MAY_RAISE static int gauge_inc(lua_State *L)
{
    ami_gauge_add(check_series(L, MK_GAUGE), 1);
    return 0;
}

MAY_RAISE static int gauge_dec(lua_State *L)
{
    ami_gauge_add(check_series(L, MK_GAUGE), -1);
    return 0;
}

MAY_RAISE static int gauge_value(lua_State *L)
{
    lua_pushnumber(L, ((ami_gauge_t *)check_series(L, MK_GAUGE))->value);
    return 1;
}

MAY_RAISE static int histogram_observe(lua_State *L)
{
    ami_histogram_t *h = check_series(L, MK_HISTOGRAM);
    ami_histogram_observe(h, check_value(L, 2, "histogram:observe"));
    return 0;
}

static int metric_tostring(lua_State *L)
{
    for (int k = MK_COUNTER; k <= MK_HISTOGRAM; k++)
        if (luaL_testudata(L, 1, mt_names[k])) {
            lua_pushfstring(L, "%s: %p", mt_names[k], lua_topointer(L, 1));
            return 1;
        }
    return luaL_argerror(L, 1, "metric expected");
}

static const luaL_Reg counter_methods[] = {{"inc", counter_inc}, {"value", counter_value}, {NULL, NULL}};
static const luaL_Reg gauge_methods[] = {{"set", gauge_set}, {"add", gauge_add},
                                         {"inc", gauge_inc}, {"dec", gauge_dec},
                                         {"value", gauge_value}, {NULL, NULL}};
static const luaL_Reg histogram_methods[] = {{"observe", histogram_observe}, {NULL, NULL}};

/* One metatable per kind and state, kept in the registry under its name
 * (luaL_checkudata finds it there). */
MAY_RAISE static void create_metatable(lua_State *L, metric_kind_t kind, const luaL_Reg *methods)
{
    if (!luaL_newmetatable(L, mt_names[kind])) {
        lua_pop(L, 1);
        return;
    }
    lua_pushstring(L, mt_names[kind]);
    lua_setfield(L, -2, "__name");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, metric_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

/* ---- registration --------------------------------------------------------------------- */

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const label_t *)a)->k, ((const label_t *)b)->k);
}

/* Fill out with the labels of the table at idx as a sorted, NULL-terminated
 * k, v array. The strings stay on the Lua stack until the caller returns. */
MAY_RAISE static void collect_labels(lua_State *L, int idx, const char **out)
{
    label_t labels[AMI_METRICS_MAX_LABELS];
    size_t n = 0;
    out[0] = NULL;
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    luaL_checkstack(L, 2 * AMI_METRICS_MAX_LABELS + 4, "ami.metrics: labels");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int vt = lua_type(L, -1);
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_argerror(L, idx, "label names must be strings");
        if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
            luaL_argerror(L, idx, "label values must be strings or numbers");
        if (n == AMI_METRICS_MAX_LABELS)
            luaL_argerror(L, idx, lua_pushfstring(L, "at most %d labels", AMI_METRICS_MAX_LABELS));
        lua_pushvalue(L, -2);
        labels[n].k = lua_tostring(L, -3);
        labels[n].v = lua_tostring(L, -2); /* a number becomes a string in our slot only */
        n++;
    }
    qsort(labels, n, sizeof labels[0], label_cmp);
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = labels[i].k;
        out[2 * i + 1] = labels[i].v;
    }
    out[2 * n] = NULL;
}

/* Histogram bounds from the array at idx; 0 (the registry's default
 * buckets) when absent. */
MAY_RAISE static size_t collect_bounds(lua_State *L, int idx, double *bounds)
{
    if (lua_isnoneornil(L, idx))
        return 0;
    luaL_checktype(L, idx, LUA_TTABLE);
    size_t n = lua_objlen(L, idx);
    if (n > AMI_METRICS_MAX_BUCKETS)
        luaL_argerror(L, idx, lua_pushfstring(L, "at most %d bucket bounds", AMI_METRICS_MAX_BUCKETS));
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, idx, (int)i + 1);
        bounds[i] = check_value(L, -1, "ami.metrics.histogram bounds");
        if (i > 0 && !(bounds[i] > bounds[i - 1]))
            luaL_argerror(L, idx, "bucket bounds must be strictly increasing");
        lua_pop(L, 1);
    }
    return n;
}

static void *register_series(ami_metrics_t *m, metric_kind_t kind, const char *name,
                             const char *help, const char *const *labels, const double *bounds,
                             size_t nbounds, ami_err_t *err)
{
    switch (kind) {
    case MK_COUNTER:
        return ami_metrics_counter(m, name, help, labels, err);
    case MK_GAUGE:
        return ami_metrics_gauge(m, name, help, labels, err);
    default:
        return ami_metrics_histogram(m, name, help, bounds, nbounds, labels, err);
    }
}

/* NULL when the series may be created (or exists); else why not. */
static const char *series_refusal(script_t *sc, const char *name, const char *const *labels)
{
    ami_metrics_t *m = sc->gen->rt->metrics;
    if (ami_metrics_value(m, name, labels, NULL) == 0)
        return NULL; /* exists: registering it again makes nothing new */
    if (sc->metric_series >= sc->gen->rt->cfg.max_metric_series)
        return "the script has registered max_metric_series series already";
    size_t max = ami_metrics_max_series(m);
    if (ami_metrics_series_count(m) >= max - max / 4)
        return "scripts have used their share of the registry (the last quarter is the engine's)";
    return NULL;
}

MAY_RAISE static int metric_new(lua_State *L, metric_kind_t kind)
{
    script_t *sc = lua_touserdata(L, lua_upvalueindex(1));
    const char *name = luaL_checkstring(L, 1);
    const char *help = luaL_optstring(L, 2, "");
    if (strncmp(name, "ami_", 4) == 0)
        return luaL_argerror(L, 1, "the ami_ prefix is reserved for the engine's own metrics; "
                                   "name yours e.g. \"calls_total\"");
    const char *labels[2 * AMI_METRICS_MAX_LABELS + 1];
    double bounds[AMI_METRICS_MAX_BUCKETS];
    size_t nbounds = kind == MK_HISTOGRAM ? collect_bounds(L, 4, bounds) : 0;
    collect_labels(L, 3, labels);
    const char *refusal = series_refusal(sc, name, labels);
    if (refusal) {
        ami_counter_inc(sc->m_series_refused);
        lua_pushnil(L);
        push_error(L, AMI_E_LIMIT, refusal);
        return 2;
    }
    ami_metrics_t *m = sc->gen->rt->metrics;
    size_t before = ami_metrics_series_count(m);
    ami_err_t err;
    ami_err_clear(&err);
    void *series = register_series(m, kind, name, help, labels, bounds, nbounds, &err);
    sc->metric_series += (uint32_t)(ami_metrics_series_count(m) - before);
    if (!series || err.code != AMI_OK) {
        lua_pushnil(L);
        push_error(L, err.code != AMI_OK ? err.code : AMI_E_INVALID,
                   err.msg[0] ? err.msg : "the metric was refused");
        return 2;
    }
    metric_ud_t *ud = lua_newuserdata(L, sizeof *ud);
    ud->series = series;
    luaL_getmetatable(L, mt_names[kind]);
    lua_setmetatable(L, -2);
    return 1;
}

MAY_RAISE static int l_counter(lua_State *L)
{
    return metric_new(L, MK_COUNTER);
}

MAY_RAISE static int l_gauge(lua_State *L)
{
    return metric_new(L, MK_GAUGE);
}

MAY_RAISE static int l_histogram(lua_State *L)
{
    return metric_new(L, MK_HISTOGRAM);
}

void ami_lua_inject_metrics(lua_State *L, script_t *sc)
{
    static const luaL_Reg fns[] = {{"counter", l_counter},
                                   {"gauge", l_gauge},
                                   {"histogram", l_histogram},
                                   {NULL, NULL}};
    create_metatable(L, MK_COUNTER, counter_methods);
    create_metatable(L, MK_GAUGE, gauge_methods);
    create_metatable(L, MK_HISTOGRAM, histogram_methods);
    lua_createtable(L, 0, 3);
    lua_pushlightuserdata(L, sc);
    luaL_setfuncs(L, fns, 1);
    lua_setfield(L, -2, "metrics");
}
