/*
 * The ami-engine program's subcommands. Private to engine/cli.
 *
 *   ami-engine -c engine.lua [--duration S]   run the engine (run.c)
 *   ami-engine --check-config -c engine.lua   validate and describe the config
 *   ami-engine decode FILE.ami [FILE.sent]    decode a recorded AMI session (decode.c)
 *   ami-engine spec [options] [busted args]   run busted specs inside the engine (spec.c)
 */
#ifndef AMI_CLI_CLI_H
#define AMI_CLI_CLI_H

#include <stdint.h>

#include "cli/config.h"

typedef struct ami_run_options {
    uint32_t duration_s; /* 0: until SIGTERM/SIGINT */
} ami_run_options_t;

int ami_cli_run(ami_engine_config_t *cfg, const ami_run_options_t *opt);
int ami_cli_decode(int argc, char **argv);
int ami_cli_spec(int argc, char **argv);

/* The engine's own lua/ folder as a require() path ("<dir>/?.lua;<dir>/?/init.lua"). */
const char *ami_cli_engine_lua_path(void);

#endif
