/*
 * libFuzzer target for the Lua API as a whole: random calls of every
 * function and metamethod a script can reach, with every type of argument,
 * driven by the fuzzer's bytes inside a running engine (a runtime on a loop
 * with a simulated Asterisk, made once per process).
 *
 * For each input: fuzz_lua_api.lua (the driver) runs as a script chunk in
 * an engine coroutine and turns the bytes into a program (see its header);
 * the loop runs until nothing of it waits or 300 ms of loop time pass. Then
 * the scripts are reloaded (a fresh generation; whatever the input left
 * waiting is cancelled at once, so inputs do not depend on each other), and
 * a new chunk sends a Ping and, once its answer has reached Lua, a second
 * one: the simulator must see both.
 *
 * Invariants: no crash, no sanitizer report, no hang (the watchdog stops
 * any Lua that runs past its budget, in handlers, __gc, message handlers,
 * iterators and nested coroutines alike; -timeout catches the rest), and
 * the engine still answers an action after every input.
 */
#include <ev.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_world.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RUN_MS 300
#define ALIVE_MS 5000

static fuzz_world_t *world;
static char *driver;
static size_t driver_len;

static void init(void)
{
    ami_lua_config_t cfg;
    ami_lua_config_default(&cfg);
    cfg.handler_budget_ms = 20;
    cfg.load_budget_ms = 200;
    cfg.reload_grace_ms = 0;
    cfg.memory_limit = (size_t)64 << 20;
    cfg.max_coroutines = 2000;
    cfg.max_waiters = 1000;
    cfg.max_handlers = 1000;
    world = fuzz_world_new(NULL, NULL, &cfg);
    driver = fuzz_read_source("fuzz_lua_api.lua");
    driver_len = strlen(driver);
}

static void die(const char *what, const char *why)
{
    ami_sim_node_stats_t ns = ami_sim_node_stats(world->node);
    ami_lua_stats_t ls;
    ami_lua_runtime_stats(world->rt, &ls);
    fprintf(stderr, "fuzz_lua_api: %s%s%s\n  servers connected %zu, sim: sessions %llu live, %llu actions, %llu pings; "
                    "lua: generation %llu, %llu live, %zu waiting\nlast error lines:\n%s",
            what, why ? ": " : "", why ? why : "", ami_client_connected_count(world->client),
            (unsigned long long)ns.sessions_live, (unsigned long long)ns.actions, (unsigned long long)ns.pings,
            (unsigned long long)ls.generation, (unsigned long long)ls.generations_live,
            ami_lua_runtime_waiting(world->rt), world->errors);
    abort();
}

/* The driver, then `return run("<the bytes, each as \ddd>")`. */
static char *program(const uint8_t *data, size_t size)
{
    static const char head[] = "\nreturn run(\"";
    char *code = malloc(driver_len + sizeof head + size * 4 + 4);
    if (!code)
        die("out of memory", NULL);
    char *p = code;
    memcpy(p, driver, driver_len);
    p += driver_len;
    memcpy(p, head, sizeof head - 1);
    p += sizeof head - 1;
    for (size_t i = 0; i < size; i++)
        p += sprintf(p, "\\%u", (unsigned)data[i]);
    memcpy(p, "\")\n", 4);
    return code;
}

static bool nothing_waits(void *ud)
{
    (void)ud;
    return ami_lua_runtime_waiting(world->rt) == 0;
}

static bool one_generation(void *ud)
{
    (void)ud;
    ami_lua_stats_t st;
    ami_lua_runtime_stats(world->rt, &st);
    return st.generations_live == 1;
}

typedef struct pings {
    uint64_t want;
} pings_t;

static bool pinged(void *ud)
{
    return ami_sim_node_stats(world->node).pings >= ((pings_t *)ud)->want;
}

static void reset_scripts(void)
{
    ami_err_t err;
    if (ami_lua_runtime_reload(world->rt, "fuzz input done", &err) < 0)
        die("reload failed", err.msg);
    if (!fuzz_world_run_until(world, one_generation, NULL, ALIVE_MS))
        die("the old generation was not closed", NULL);
}

/* A Ping, and once its answer is back in Lua, another: both must reach the server. */
static void check_alive(void)
{
    static const char alive[] = "local r, err = ami.action('pbx1', 'Ping')\n"
                                "if r then r, err = ami.action('pbx1', 'Ping') end\n"
                                "if not r then ami.log.error('alive: Ping failed', {err = err}) end\n";
    pings_t p = {ami_sim_node_stats(world->node).pings + 2};
    ami_err_t err;
    fuzz_world_clear_errors(world);
    if (ami_lua_runtime_spawn_string(world->rt, "alive", alive, false, &err) < 0)
        die("cannot run the liveness check", err.msg);
    if (!fuzz_world_run_until(world, pinged, &p, ALIVE_MS))
        die("the engine no longer answers an action", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!world)
        init();
    fuzz_world_clear_errors(world);
    char *code = program(data, size);
    ami_err_t err;
    if (ami_lua_runtime_spawn_string(world->rt, "fuzz", code, false, &err) < 0)
        die("the driver did not start", err.msg);
    free(code);
    fuzz_world_run_until(world, nothing_waits, NULL, RUN_MS);
    reset_scripts();
    check_alive();
    return 0;
}
