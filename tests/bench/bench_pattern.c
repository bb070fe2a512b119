/*
 * Lua patterns: LuaJIT's own string functions against ours (lua_strpat over
 * util/lpattern, with a budget check installed as the engine would), on
 * the patterns call-handling scripts use, called from Lua with the JIT off
 * (script states run that way). Then the C entry for event filters against
 * what filters did before (string.find through lua_pcall).
 *
 * Prints, per case, the best of --runs runs of about --duration seconds
 * of CPU time each (LuaJIT's and ours interleaved, so both see the same load): calls
 * per second for LuaJIT and ours, and ours / LuaJIT.
 *
 *   bench_pattern [--duration S] [--runs N] [--case NAME-PREFIX]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "bench_args.h"
#include "lua/lua_strpat.h"

typedef struct bench_case {
    const char *name;
    const char *call; /* Lua expression using F (the string table), s and p */
    const char *s;
    const char *p;
} bench_case_t;

static const bench_case_t cases[] = {
    {"find plain", "F.find(s, p, 1, true)", "PJSIP/alice-0000a1b2", "alice"},
    {"find no specials", "F.find(s, p)", "PJSIP/alice-0000a1b2", "alice"},
    {"find ^prefix", "F.find(s, p)", "PJSIP/alice-0000a1b2", "^PJSIP/"},
    {"match channel peer", "F.match(s, p)", "PJSIP/alice-0000a1b2", "^PJSIP/(.-)%-%x+$"},
    {"match uniqueid", "F.match(s, p)", "1716000000.123456", "^(%d+)%.(%d+)$"},
    {"match user@host", "F.match(s, p)", "sip:alice@example.com", "(.*)@(.*)"},
    {"match trim", "F.match(s, p)", "   Up and running   ", "^%s*(.-)%s*$"},
    {"find word frontier", "F.find(s, p)", "Channel PJSIP/alice hung up: Normal Clearing",
     "%f[%a]hung%f[%A]"},
    {"gmatch csv (6 fields)", "(function() for x in F.gmatch(s, p) do end end)()", "a,bb,ccc,d,ee,f",
     "([^,]+)"},
    {"gsub spaces", "F.gsub(s, p, ' ')", "Normal   Clearing  of\tthe   call  ", "%s+"},
    {"gsub template", "F.gsub(s, p, '%2=%1')", "a=1, b=2, c=3", "(%w+)=(%w+)"},
    {"find miss in 4 KB", "F.find(s, p)", NULL, "Fo+bar"},
};

/* CPU time of this thread: the machine is shared, and time spent
 * preempted by other processes is not the matcher's. */
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int budget_checks;

static int bench_check(lua_State *L, void *ud)
{
    budget_checks++; /* what a real check costs: next to nothing, every 4096 steps */
    return 0;
}

/* A function(n) running the case's call n times with F = ours or LuaJIT's. */
static int make_runner(lua_State *L, const bench_case_t *c, const char *s, int ours)
{
    char src[512];
    snprintf(src, sizeof src,
             "local F, s, p = ...\n"
             "return function(n) for i = 1, n do local _ = %s end end", c->call);
    if (luaL_loadstring(L, src) != 0) {
        fprintf(stderr, "%s: %s\n", c->name, lua_tostring(L, -1));
        exit(1);
    }
    lua_getglobal(L, ours ? "P" : "string");
    lua_pushstring(L, s);
    lua_pushstring(L, c->p);
    lua_call(L, 3, 1);
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Calls per second over about duration seconds. */
static double measure(lua_State *L, int ref, double duration)
{
    double best = 0;
    {
        long n = 1000;
        double t0, dt;
        for (;;) { /* grow n until one batch takes a tenth of the duration */
            lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
            lua_pushinteger(L, n);
            t0 = now_s();
            lua_call(L, 1, 0);
            dt = now_s() - t0;
            if (dt >= duration / 10 || n > 100000000)
                break;
            n *= 4;
        }
        long total = 0;
        t0 = now_s();
        do {
            lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
            lua_pushinteger(L, n);
            lua_call(L, 1, 0);
            total += n;
        } while ((dt = now_s() - t0) < duration);
        if (total / dt > best)
            best = total / dt;
    }
    return best;
}

/* The filter path: string.find through lua_pcall before, the C entry now. */
static void bench_filter(lua_State *L, double duration)
{
    const char *v = "PJSIP/alice-0000a1b2", *p = "^PJSIP/(.-)%-%x+$";
    size_t vl = strlen(v), pl = strlen(p);
    long n = 0;
    double t0 = now_s(), dt;
    do {
        for (int i = 0; i < 1000; i++, n++) {
            lua_getglobal(L, "string");
            lua_getfield(L, -1, "find");
            lua_remove(L, -2);
            lua_pushlstring(L, v, vl);
            lua_pushlstring(L, p, pl);
            if (lua_pcall(L, 2, 1, 0) != 0 || lua_isnil(L, -1))
                exit(1);
            lua_pop(L, 1);
        }
    } while ((dt = now_s() - t0) < duration);
    double before = n / dt;
    n = 0;
    t0 = now_s();
    do {
        for (int i = 0; i < 1000; i++, n++)
            if (ami_strpat_match_budget(v, vl, p, pl, 1000000, NULL) != AMI_STRPAT_MATCH)
                exit(1);
    } while ((dt = now_s() - t0) < duration);
    printf("%-26s %14.2f %14.2f %8.2f\n", "filter (pcall vs C entry)", before / 1e6, n / dt / 1e6,
           n / dt / before);
}

int main(int argc, char **argv)
{
    double duration = 0.5;
    int runs = 3;
    const char *only = NULL; /* a case name prefix */
    const bench_arg_t args[] = {
        BENCH_OPT_NUM("duration", "S", "seconds per case and matcher (default 0.5)",
            BENCH_DOUBLE, &duration, 0.001, 1e6),
        BENCH_OPT_NUM("runs", "N", "runs of each case (default 3)", BENCH_INT, &runs, 1, 1000),
        BENCH_OPT_STR("case", "NAME-PREFIX", "only the cases whose name starts with it", &only),
    };
    int args_rc = bench_args_parse(argc, argv, "bench_pattern", args, BENCH_NARGS(args));
    if (args_rc != 0)
        return args_rc == 1 ? 0 : 2;
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    lua_newtable(L);
    ami_strpat_budget_t b = {bench_check, NULL};
    ami_strpat_install(L, -1, &b);
    lua_setglobal(L, "P");

    char *big = malloc(4097);
    for (int i = 0; i < 4096; i++)
        big[i] = "abcdefghij FOo "[i % 15];
    big[4096] = '\0';

    printf("calls per second, millions (best of %d runs of %.2f s; Lua, JIT off)\n", runs, duration);
    printf("%-26s %14s %14s %8s\n", "case", "LuaJIT", "ours", "ours/LJ");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bench_case_t *c = &cases[i];
        if (only && strncmp(c->name, only, strlen(only)) != 0)
            continue;
        const char *s = c->s ? c->s : big;
        int theirs = make_runner(L, c, s, 0), ours = make_runner(L, c, s, 1);
        double lj = 0, me = 0;
        for (int r = 0; r < runs; r++) { /* interleaved, so both see the same machine */
            double x = measure(L, theirs, duration), y = measure(L, ours, duration);
            lj = x > lj ? x : lj;
            me = y > me ? y : me;
        }
        printf("%-26s %14.2f %14.2f %8.2f\n", c->name, lj / 1e6, me / 1e6, me / lj);
    }
    if (!only || !strncmp("filter", only, strlen(only)))
        bench_filter(L, duration);
    printf("(budget checks made by ours: %d)\n", budget_checks);
    free(big);
    lua_close(L);
    return 0;
}
