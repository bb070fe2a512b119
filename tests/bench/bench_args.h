/*
 * The command lines of the bench programs and the soak, on getopt_long:
 * each program lists its options in a table (a number with its bounds, a
 * string, a flag, or a value a callback checks) and this parses, checks and
 * explains them, so every bench answers --help and refuses a bad value the
 * same way. Needs only libc (bench_parse and bench_pattern link nothing else).
 */
#ifndef AMI_BENCH_ARGS_H
#define AMI_BENCH_ARGS_H

#include <stdbool.h>
#include <stddef.h>

typedef enum bench_arg_kind {
    BENCH_DOUBLE,   /* double *; within [lo, hi] */
    BENCH_LONG,     /* long *; a whole number within [lo, hi] */
    BENCH_INT,      /* int * */
    BENCH_UINT,     /* unsigned * (uint32_t on every platform the engine builds on) */
    BENCH_SIZE,     /* size_t * */
    BENCH_STRING,   /* const char ** (argv's) */
    BENCH_FLAG,     /* bool *: set when present, takes no value */
    BENCH_PICK,     /* bool[nchoices]: the one named by the value is set; repeatable */
    BENCH_CHECKED   /* check(out, value) stores it; false refuses it */
} bench_arg_kind_t;

typedef struct bench_arg {
    const char *name;  /* "duration" for --duration */
    const char *value; /* its value in the help ("S", "N"); NULL for a flag */
    const char *help;  /* one line, with the default */
    bench_arg_kind_t kind;
    void *out;
    double lo, hi;
    bool (*check)(void *out, const char *value);
    const char *const *choices; /* BENCH_PICK: the names, NULL-terminated */
} bench_arg_t;

/* Table entries, by kind: */
#define BENCH_OPT_NUM(name, value, help, kind, out, lo, hi) {name, value, help, kind, out, lo, hi, NULL, NULL}
#define BENCH_OPT_STR(name, value, help, out) {name, value, help, BENCH_STRING, out, 0, 0, NULL, NULL}
#define BENCH_OPT_FLAG(name, help, out) {name, NULL, help, BENCH_FLAG, out, 0, 0, NULL, NULL}
#define BENCH_OPT_PICK(name, value, help, out, choices) {name, value, help, BENCH_PICK, out, 0, 0, NULL, choices}
#define BENCH_OPT_CHECK(name, value, help, out, fn) {name, value, help, BENCH_CHECKED, out, 0, 0, fn, NULL}

/* 0: every option parsed into its out; 1: --help printed (exit 0); 2: a bad
 * or unknown argument reported with the usage (exit 2). */
int bench_args_parse(int argc, char **argv, const char *program, const bench_arg_t *args, size_t nargs);

#define BENCH_NARGS(a) (sizeof(a) / sizeof((a)[0]))

#endif
