/* ami-engine: argument parsing and the subcommands' entry. */
#include <errno.h>
#include <getopt.h>
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
    "       ami-engine spec [--nodes N] [--cps RATE] [--budget-ms MS] [--timeout S] [--verbose] [busted args] [spec dir]\n"
    "       ami-engine --version | --help\n"
    "\n"
    "Runs Lua call-handling scripts against a cluster of Asterisk servers over AMI.\n"
    "  -c, --config FILE   the configuration (a Lua file; see docs/configuration.md)\n"
    "  --check-config      validate the configuration, print a summary, exit 0 if valid\n"
    "  --duration SECONDS  stop (as on SIGTERM) after this long; for demos and tests\n"
    "  --version           print the version and where the engine's lua/ modules are\n"
    "  -h, --help          this text; `ami-engine decode --help`, `ami-engine spec --help`\n"
    "Signals: SIGHUP reloads the scripts (and log settings), SIGTERM/SIGINT drain and exit.\n"
    "Docs: README.md, docs/usage-guide.md, docs/lua-api.md, docs/operations.md\n";

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
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < 1 || v > 86400 * 365)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

enum { OPT_CHECK = 256, OPT_DURATION, OPT_VERSION };

static const struct option LONG_OPTS[] = {
    {"config", required_argument, NULL, 'c'},
    {"check-config", no_argument, NULL, OPT_CHECK},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"version", no_argument, NULL, OPT_VERSION},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* What was wrong with argv[optind - 1] after getopt_long said '?' or ':'. */
static int bad_option(int c, char **argv)
{
    char why[200];
    snprintf(why, sizeof why, c == ':' ? "\"%.100s\" needs a value" : "unknown argument \"%.100s\"",
             argv[optind - 1]);
    return bad_usage(why);
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
    int c;
    opterr = 0; /* our messages, with the usage */
    while ((c = getopt_long(argc, argv, ":c:h", LONG_OPTS, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case OPT_CHECK:
            check = true;
            break;
        case OPT_DURATION:
            if (parse_duration(optarg, &duration) < 0)
                return bad_usage("--duration takes whole seconds, 1 or more");
            break;
        case OPT_VERSION:
            printf("ami-engine %s (lua modules: %s)\n", AMI_VERSION, ami_cli_engine_lua_dir());
            return 0;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            return bad_option(c, argv);
        }
    }
    if (optind < argc) {
        char why[200];
        snprintf(why, sizeof why, "unexpected argument \"%.100s\"", argv[optind]);
        return bad_usage(why);
    }
    if (!config)
        return bad_usage("a configuration file is required (-c engine.lua)");
    return check ? check_config(config) : run(config, duration);
}
