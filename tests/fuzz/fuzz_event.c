/*
 * libFuzzer target for event objects (engine/lua/lua_event.c): what a
 * script gets from every AMI message a server sends.
 *
 * Input layout: 1 byte, then an AMI stream as a server sends it (no
 * banner). The byte picks the server key the events come from (a short
 * one, or one longer than an event object stores: 300 bytes). The stream
 * goes through the AMI parser; each event it yields is dispatched to the
 * script's handlers exactly as the runtime dispatches what the client
 * receives (handlers_dispatch, reached through the runtime's private
 * headers: this is a test of its internals), where fuzz_event.lua calls
 * every method and metamethod of the event object, with good and hostile
 * arguments, and checks the answers against each other and against events
 * kept from earlier messages (an event must stay valid and unchanged after
 * the parser's buffer has moved on).
 *
 * Invariants: no crash, no sanitizer report, and no error-level log line:
 * an "INVARIANT: ..." error raised by the script, a handler stopped by the
 * watchdog or any other handler failure aborts with the log line.
 */
#include <ev.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_world.h"
#include "lua/lua_internal.h"
#include "protocol/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static fuzz_world_t *world;
static char long_key[301];

static void init(void)
{
    ami_lua_config_t cfg;
    ami_lua_config_default(&cfg);
    cfg.handler_budget_ms = 2000; /* the script checks a lot per event: only a hang is a failure */
    cfg.memory_limit = (size_t)64 << 20;
    char *src = fuzz_read_source("fuzz_event.lua");
    world = fuzz_world_new("events.lua", src, &cfg);
    free(src);
    memset(long_key, 'k', sizeof long_key - 1);
}

/* As the runtime's on_client_event does for each event the client receives. */
static void dispatch(const ami_msg_t *m, const char *server_key)
{
    ami_lua_runtime_t *rt = world->rt;
    rt->event_seq++;
    for (script_t *sc = rt->current->scripts; sc; sc = sc->next)
        handlers_dispatch(sc, m, server_key, true); /* no high availability here: every handler runs */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!world)
        init();
    if (size < 1)
        return 0;
    /* a long key checks the object's bound: ev.server keeps 255 bytes of it */
    const char *key = data[0] == 0xff ? long_key : "pbx1";
    ami_parser_limits_t lim;
    ami_parser_limits_default(&lim);
    ami_parser_t p;
    if (ami_parser_init(&p, &lim) < 0)
        abort();
    ami_parser_expect_banner(&p, false);
    ami_err_t err;
    fuzz_world_clear_errors(world);
    if (ami_parser_feed(&p, data + 1, size - 1, &err) == 0) {
        ami_msg_t m;
        while (ami_parser_next(&p, &m, &err) == 1)
            if (m.kind == AMI_MSG_EVENT)
                dispatch(&m, key);
    }
    ami_parser_deinit(&p);
    ev_run(world->loop, EVRUN_NOWAIT); /* whatever the handlers queued */
    if (world->nerrors) {
        fprintf(stderr, "fuzz_event: a handler failed:\n%s", world->errors);
        abort();
    }
    return 0;
}
