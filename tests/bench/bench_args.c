#include "bench_args.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 32

_Static_assert(sizeof(unsigned) == sizeof(uint32_t), "BENCH_UINT stores uint32_t options");

static void usage(FILE *to, const char *program, const bench_arg_t *args, size_t n)
{
    int col = fprintf(to, "usage: %s", program), indent = col;
    for (size_t i = 0; i < n; i++) {
        char item[96];
        int len = args[i].value ? snprintf(item, sizeof item, " [--%s %s]", args[i].name, args[i].value)
                                : snprintf(item, sizeof item, " [--%s]", args[i].name);
        if (col + len > 100)
            col = fprintf(to, "\n%*s", indent, "") - 1;
        col += fprintf(to, "%s", item);
    }
    fprintf(to, "\n");
    for (size_t i = 0; i < n; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", args[i].name, args[i].value ? " " : "",
                 args[i].value ? args[i].value : "");
        fprintf(to, "  %-22s %s\n", left, args[i].help);
    }
}

static bool number(const char *s, double lo, double hi, bool whole, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi) || (whole && v != floor(v)))
        return false;
    *out = v;
    return true;
}

static bool store(const bench_arg_t *a, const char *value)
{
    double v;
    bool whole = a->kind != BENCH_DOUBLE;
    switch (a->kind) {
    case BENCH_STRING:
        *(const char **)a->out = value;
        return true;
    case BENCH_FLAG:
        *(bool *)a->out = true;
        return true;
    case BENCH_CHECKED:
        return a->check(a->out, value);
    case BENCH_PICK:
        for (size_t i = 0; a->choices[i]; i++)
            if (strcmp(value, a->choices[i]) == 0)
                return ((bool *)a->out)[i] = true;
        return false;
    default:
        break;
    }
    if (!number(value, a->lo, a->hi, whole, &v))
        return false;
    if (a->kind == BENCH_DOUBLE)
        *(double *)a->out = v;
    else if (a->kind == BENCH_LONG)
        *(long *)a->out = (long)v;
    else if (a->kind == BENCH_INT)
        *(int *)a->out = (int)v;
    else if (a->kind == BENCH_UINT)
        *(unsigned *)a->out = (unsigned)v;
    else
        *(size_t *)a->out = (size_t)v;
    return true;
}

static int bad(const char *program, const bench_arg_t *args, size_t n, const char *what, const char *arg)
{
    fprintf(stderr, "%s: %s \"%.100s\"\n", program, what, arg);
    usage(stderr, program, args, n);
    return 2;
}

int bench_args_parse(int argc, char **argv, const char *program, const bench_arg_t *args, size_t nargs)
{
    struct option opts[MAX_ARGS + 2];
    if (nargs > MAX_ARGS)
        return bad(program, args, 0, "too many options in its table:", program);
    for (size_t i = 0; i < nargs; i++)
        opts[i] = (struct option){args[i].name, args[i].value ? required_argument : no_argument, NULL, (int)i};
    opts[nargs] = (struct option){"help", no_argument, NULL, 'h'};
    opts[nargs + 1] = (struct option){NULL, 0, NULL, 0};
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout, program, args, nargs);
            return 1;
        }
        if (c == '?')
            return bad(program, args, nargs, "unknown option", argv[optind - 1]);
        if (c == ':')
            return bad(program, args, nargs, "a value is missing after", argv[optind - 1]);
        if (!store(&args[c], optarg)) {
            char what[200];
            snprintf(what, sizeof what, "--%s: %s; not", args[c].name, args[c].help);
            return bad(program, args, nargs, what, optarg);
        }
    }
    if (optind < argc)
        return bad(program, args, nargs, "unexpected argument", argv[optind]);
    return 0;
}
