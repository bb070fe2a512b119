/*
 * The callstate section: the live call state behind ami.channels,
 * ami.channel and ami.calls. Off when the section is absent, so an engine
 * configured as before behaves as before (no CoreShowChannels after login,
 * no extra subscriptions).
 *
 *   callstate = true                         -- on, with the defaults
 *   callstate = {
 *     max_channels = 10000,                  -- per server; past it Newchannels are refused and counted
 *     variables = {"CRM_ID", "CALLTAG"},     -- channel variables to keep (VarSet, ChanVariable)
 *     variable_max_bytes = 256,              -- longer values are cut and counted
 *     rebuild_timeout_ms = 10000,            -- CoreShowChannels after login; default: action_timeout_ms
 *   }
 *   callstate = false                        -- off (the default)
 */
#include <stdio.h>
#include <string.h>

#include "cli/config_internal.h"
#include "util/alloc.h"

static const char *const CALLSTATE_KEYS[] = {"max_channels", "variables", "variable_max_bytes", "rebuild_timeout_ms"};
#define N_CALLSTATE_KEYS (sizeof CALLSTATE_KEYS / sizeof CALLSTATE_KEYS[0])

static void read_cs_u32(cfg_ctx_t *cx, int t, const char *key, uint64_t min, uint64_t max, uint32_t *dst)
{
    cfg_rawfield(cx->L, t, key);
    char where[64];
    snprintf(where, sizeof where, "callstate.%s", key);
    uint64_t v;
    if (!lua_isnil(cx->L, -1) && cfg_read_uint(cx, lua_gettop(cx->L), where, min, max, &v))
        *dst = (uint32_t)v;
    lua_pop(cx->L, 1);
}

static void read_cs_variables(cfg_ctx_t *cx, int t)
{
    lua_State *L = cx->L;
    ami_engine_config_t *cfg = cx->cfg;
    cfg_rawfield(L, t, "variables");
    int v = lua_gettop(L);
    if (lua_isnil(L, v) || !cfg_expect_table(cx, v, "callstate.variables")) {
        lua_pop(L, 1);
        return;
    }
    size_t n = lua_objlen(L, v);
    size_t entries = 0;
    for (lua_pushnil(L); lua_next(L, v); lua_pop(L, 1))
        entries++;
    if (entries != n)
        cfg_error(cx, "callstate.variables: expected a list of names {\"CRM_ID\", \"CALLTAG\"}, "
                      "got a table with other keys");
    else if (n > AMI_CALLSTATE_MAX_VARIABLES)
        cfg_error(cx, "callstate.variables: at most %d names can be tracked, got %zu; keep the ones "
                      "scripts read", AMI_CALLSTATE_MAX_VARIABLES, n);
    for (size_t i = 1; i <= n && i <= AMI_CALLSTATE_MAX_VARIABLES && entries == n; i++) {
        lua_rawgeti(L, v, (int)i);
        char where[48];
        snprintf(where, sizeof where, "callstate.variables[%zu]", i);
        const char *name;
        if (cfg_read_string(cx, lua_gettop(L), where, true, &name)) {
            char *copy = ami_strdup(name);
            if (copy)
                cfg->callstate_vars[cfg->callstate.nvariables++] = copy;
        }
        lua_pop(L, 1);
    }
    cfg->callstate.variables = (const char *const *)cfg->callstate_vars;
    lua_pop(L, 1);
}

void cfg_load_callstate(cfg_ctx_t *cx, int t)
{
    lua_State *L = cx->L;
    ami_engine_config_t *cfg = cx->cfg;
    if (lua_isnil(L, t))
        return;
    if (lua_type(L, t) == LUA_TBOOLEAN) {
        cfg->callstate_enabled = lua_toboolean(L, t);
        return;
    }
    if (!lua_istable(L, t)) {
        char got[80];
        cfg_value_text(L, t, got, sizeof got);
        cfg_error(cx, "callstate: expected true, false or a table { max_channels = ..., variables = {...} }, "
                      "got %s", got);
        return;
    }
    cfg->callstate_enabled = true;
    cfg_check_keys(cx, t, "callstate", CALLSTATE_KEYS, N_CALLSTATE_KEYS);
    size_t errors = cx->total;
    read_cs_u32(cx, t, "max_channels", 1, 10000000, &cfg->callstate.max_channels);
    read_cs_u32(cx, t, "variable_max_bytes", 1, 4096, &cfg->callstate.variable_max_bytes);
    read_cs_u32(cx, t, "rebuild_timeout_ms", 1, 600000, &cfg->callstate.rebuild_timeout_ms);
    read_cs_variables(cx, t);
    ami_err_t err;
    if (cx->total == errors && ami_callstate_config_validate(&cfg->callstate, &err) < 0)
        cfg_error(cx, "callstate.%s", err.msg);
}

void cfg_free_callstate(ami_engine_config_t *cfg)
{
    for (size_t i = 0; i < cfg->callstate.nvariables && i < AMI_CALLSTATE_MAX_VARIABLES; i++)
        ami_free(cfg->callstate_vars[i]);
}

void cfg_describe_callstate(const ami_engine_config_t *cfg, ami_buf_t *out)
{
    if (!cfg->callstate_enabled) {
        ami_buf_printf(out, "callstate: off\n");
        return;
    }
    const ami_callstate_config_t *c = &cfg->callstate;
    ami_buf_printf(out, "callstate: on, at most %u channels per server, variables:", c->max_channels);
    for (size_t i = 0; i < c->nvariables; i++)
        ami_buf_printf(out, " %s", c->variables[i]);
    ami_buf_printf(out, "%s (values up to %u bytes)\n", c->nvariables ? "" : " none", c->variable_max_bytes);
}
