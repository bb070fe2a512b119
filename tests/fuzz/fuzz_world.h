/*
 * A whole engine for the Lua fuzz targets, made once per process: a loop,
 * a simulated Asterisk node (pbx1) the client is logged in to, and the Lua
 * runtime loading one script written to a temporary folder. Log lines at
 * error level are kept for the targets to inspect (fuzz_world_errors), so a
 * Lua-side invariant (an error raised by the script) reaches the C side.
 *
 * AMI_FUZZ_VERBOSE=1 in the environment prints every log line (the
 * engine's and the simulator's) at debug level, to see what an input did.
 *
 * Nothing is freed at exit: the world lives for the fuzzing process, and
 * stays reachable from the target's statics (no leak report). Loop thread.
 */
#ifndef AMI_FUZZ_WORLD_H
#define AMI_FUZZ_WORLD_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster/client.h"
#include "lua/runtime.h"
#include "sim/sim.h"

typedef struct fuzz_world {
    struct ev_loop *loop;
    ami_sim_t *sim;
    ami_sim_node_t *node;
    ami_client_t *client;
    ami_metrics_t *metrics;
    ami_logger_t *log;
    ami_lua_runtime_t *rt;
    char dir[64];
    char errors[4096]; /* the first error-level log lines since fuzz_world_clear_errors */
    size_t errors_len;
    uint64_t nerrors;
} fuzz_world_t;

/* script: the file's name in the scripts folder; source: its text (NULL:
 * no script). cfg: runtime limits (the world sets the folder). Aborts with
 * a message if anything fails. */
fuzz_world_t *fuzz_world_new(const char *script, const char *source, const ami_lua_config_t *cfg);

/* Run the loop until pred(ud) holds (true) or max_ms of loop time pass. */
bool fuzz_world_run_until(fuzz_world_t *w, bool (*pred)(void *ud), void *ud, uint32_t max_ms);
void fuzz_world_run_for(fuzz_world_t *w, uint32_t ms);

void fuzz_world_clear_errors(fuzz_world_t *w);

/* The text of a source file (tests/fuzz/<name>), read once; aborts if missing. */
char *fuzz_read_source(const char *name);

#endif
