/* ami-engine spec's command line (spec.c runs it). */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"

static const char spec_usage_text[] =
    "usage: ami-engine spec [--nodes N] [--cps RATE] [--budget-ms MS] [--timeout S] [--verbose]\n"
    "                       [busted options] [spec files or folders]\n"
    "Runs busted specs inside the engine against an in-process simulated cluster.\n"
    "  --nodes N       simulated Asterisk nodes, 1..8 (default 2)\n"
    "  --cps RATE      background calls per second per node (default 0)\n"
    "  --budget-ms MS  handler budget of the spec runs (default 60000)\n"
    "  --timeout S     give up after S seconds (default 600)\n"
    "  --verbose       print the engine's log lines\n"
    "The first argument that is not one of these, and all after it, go to busted.\n";

int ami_cli_spec_usage(const char *why)
{
    if (!why) {
        fputs(spec_usage_text, stdout);
        return 0;
    }
    fprintf(stderr, "spec: %s\n%s", why, spec_usage_text);
    return 2;
}

static bool spec_number(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

/* Our options come first; at the first argument that is not one of them
 * (busted's --output, a spec folder) parsing stops and the rest is busted's. */
int ami_cli_spec_args(int argc, char **argv, ami_spec_args_t *a)
{
    enum { O_NODES = 1, O_CPS, O_BUDGET, O_TIMEOUT, O_VERBOSE, O_HELP };
    static const struct option opts[] = {
        {"nodes", required_argument, NULL, O_NODES},   {"cps", required_argument, NULL, O_CPS},
        {"budget-ms", required_argument, NULL, O_BUDGET}, {"timeout", required_argument, NULL, O_TIMEOUT},
        {"verbose", no_argument, NULL, O_VERBOSE},     {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0}};
    *a = (ami_spec_args_t){.nodes = 2, .budget_ms = 60000, .timeout_s = 600};
    optind = 0; /* a fresh scan: main may have used getopt */
    opterr = 0;
    for (;;) {
        int at = optind ? optind : 1;
        int c = getopt_long(argc, argv, "+:", opts, NULL);
        if (c == -1 || c == '?') {
            a->first_busted = c == -1 ? optind : at;
            return 0;
        }
        if (c == O_HELP) {
            ami_cli_spec_usage(NULL);
            return 1;
        }
        if (c == O_VERBOSE) {
            a->verbose = true;
            continue;
        }
        double v = 0;
        char why[160];
        if (c == ':' || !spec_number(optarg, 0, 1e9, &v)) {
            snprintf(why, sizeof why, "%.60s needs a number", argv[at]);
            return ami_cli_spec_usage(why);
        }
        if (c == O_CPS) {
            a->cps = v;
        } else if (v != (double)(long)v || v < 1) {
            snprintf(why, sizeof why, "%.60s takes a whole number, 1 or more", argv[at]);
            return ami_cli_spec_usage(why);
        } else {
            *(c == O_NODES ? &a->nodes : c == O_BUDGET ? &a->budget_ms : &a->timeout_s) = (long)v;
        }
    }
}
