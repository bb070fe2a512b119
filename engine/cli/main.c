/* ami-engine: argument parsing and the subcommands' entry. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "util/buf.h"

static const char usage[] =
    "usage: ami-engine -c CONFIG [--duration SECONDS]\n"
    "       ami-engine --check-config -c CONFIG\n"
    "       ami-engine decode FILE.ami [FILE.sent]\n"
    "       ami-engine spec [--nodes N] [--budget-ms MS] [--timeout S] [--verbose] [busted args] [spec dir]\n"
    "       ami-engine --version | --help\n"
    "\n"
    "Runs Lua call-handling scripts against a cluster of Asterisk servers over AMI.\n"
    "  -c, --config FILE   the configuration (a Lua file; see docs/configuration.md)\n"
    "  --check-config      validate the configuration, print a summary, exit 0 if valid\n"
    "  --duration SECONDS  stop (as on SIGTERM) after this long; for demos and tests\n"
    "Signals: SIGHUP reloads the scripts (and log settings), SIGTERM/SIGINT drain and exit.\n"
    "Docs: README.md, docs/usage-guide.md, docs/lua-api.md, docs/operations.md\n";

const char *ami_cli_engine_lua_path(void)
{
    static char path[1200];
    const char *dir = getenv("AMI_ENGINE_LUA_DIR");
    if (!dir || !*dir)
        dir = AMI_LUA_DIR;
    snprintf(path, sizeof path, "%s/?.lua;%s/?/init.lua", dir, dir);
    return path;
}

static int bad_usage(const char *why)
{
    fprintf(stderr, "ami-engine: %s\n\n%s", why, usage);
    return 2;
}

static int check_config(const char *path)
{
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    if (ami_config_load(path, &cfg, &errs) < 0) {
        fprintf(stderr, "ami-engine: %s has %zu error%s:\n", path, errs.count, errs.count == 1 ? "" : "s");
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "  - %s\n", errs.msg[i]);
        return 1;
    }
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_config_describe(&cfg, &out);
    printf("%s: valid%s\n%.*s", path, cfg.nwarnings ? " (with warnings, at the end)" : "", (int)out.len,
           out.data ? out.data : "");
    ami_buf_deinit(&out);
    ami_config_free(&cfg);
    return 0;
}

static int run(const char *path, uint32_t duration)
{
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    if (ami_config_load(path, &cfg, &errs) < 0) {
        fprintf(stderr, "ami-engine: cannot start, %s has %zu error%s:\n", path, errs.count,
                errs.count == 1 ? "" : "s");
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "  - %s\n", errs.msg[i]);
        return 1;
    }
    for (size_t i = 0; i < cfg.nwarnings; i++)
        fprintf(stderr, "ami-engine: warning: %s\n", cfg.warnings[i]);
    ami_run_options_t opt = {.duration_s = duration};
    int rc = ami_cli_run(&cfg, &opt);
    ami_config_free(&cfg);
    return rc;
}

static int parse_duration(const char *s, uint32_t *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 1 || v > 86400 * 365)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "decode") == 0)
        return ami_cli_decode(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "spec") == 0)
        return ami_cli_spec(argc - 1, argv + 1);
    const char *config = NULL;
    bool check = false;
    uint32_t duration = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (strcmp(a, "--version") == 0) {
            printf("ami-engine %s\n", AMI_VERSION);
            return 0;
        }
        if (strcmp(a, "--check-config") == 0) {
            check = true;
        } else if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(a, "--duration") == 0 && i + 1 < argc) {
            if (parse_duration(argv[++i], &duration) < 0)
                return bad_usage("--duration takes whole seconds, 1 or more");
        } else {
            char why[200];
            snprintf(why, sizeof why, "unknown or incomplete argument \"%.100s\"", a);
            return bad_usage(why);
        }
    }
    if (!config)
        return bad_usage("a configuration file is required (-c engine.lua)");
    return check ? check_config(config) : run(config, duration);
}
