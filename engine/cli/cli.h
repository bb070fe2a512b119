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

#include <stdbool.h>
#include <stdint.h>

#include "cli/config.h"

typedef struct ami_run_options {
    uint32_t duration_s; /* 0: until SIGTERM/SIGINT */
} ami_run_options_t;

int ami_cli_run(ami_engine_config_t *cfg, const ami_run_options_t *opt);
int ami_cli_decode(int argc, char **argv);
int ami_cli_spec(int argc, char **argv);

/* ami-engine spec's options (spec_args.c). */
typedef struct ami_spec_args {
    long nodes;
    double cps;
    long budget_ms, timeout_s;
    bool verbose;
    int first_busted; /* argv index of busted's first argument */
} ami_spec_args_t;

/* 0: parsed; 1: --help printed (exit 0); 2: a usage error printed. */
int ami_cli_spec_args(int argc, char **argv, ami_spec_args_t *a);
/* why NULL: the usage on stdout, 0; else why and the usage on stderr, 2. */
int ami_cli_spec_usage(const char *why);

/* The engine's own lua/ folder (lua_dir.c says where it is looked for), and
 * as a require() path ("<dir>/?.lua;<dir>/?/init.lua"). */
const char *ami_cli_engine_lua_dir(void);
const char *ami_cli_engine_lua_path(void);

#endif
