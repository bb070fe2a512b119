/*
 * Log capture for tests: a logger sink that keeps every line, its level,
 * and all of them joined, for assertions ("exactly one WARN line holding
 * these fields", "this line comes after that one").
 *
 * Memory comes from plain malloc, never the engine's allocator, so a test's
 * capture does not show in the engine's live bytes (util/alloc.h). A
 * zero-initialised log_capture_t is an empty capture; log_capture_free
 * releases everything and leaves it empty again. Out of memory aborts the
 * test program. The sink runs on whatever thread logs (sync loggers: the
 * caller's): one capture per thread of loggers.
 *
 * AMI_TEST_VERBOSE=1 in the environment also echoes each line to stderr.
 */
#ifndef AMI_TEST_LOG_CAPTURE_H
#define AMI_TEST_LOG_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>

#include "obs/log.h"

typedef struct log_capture {
    size_t n;                /* lines captured */
    char **line;             /* each line, NUL-terminated, without its '\n' */
    ami_log_level_t *level;  /* each line's level */
    char *text;              /* every line followed by '\n', NUL-terminated; NULL when none */
    size_t len;              /* bytes in text */
    size_t cap, text_cap;
} log_capture_t;

/* The sink itself (cfg->sink), for loggers configured by hand. */
void log_capture_sink(void *ud, ami_log_level_t level, const char *line, size_t len);

/* Point a logger configuration's sink at the capture. */
void log_capture_attach(log_capture_t *c, ami_logger_config_t *cfg);

/* A new logger writing into the capture: level, format, max_line (0: the
 * logger's default). Fails the test if it cannot be made. */
ami_logger_t *log_capture_logger(log_capture_t *c, ami_log_level_t level, ami_log_format_t format,
                                 size_t max_line);

void log_capture_clear(log_capture_t *c);
void log_capture_free(log_capture_t *c);

/* Everything captured, "" when nothing. */
const char *log_capture_text(const log_capture_t *c);

/* Occurrences of needle anywhere in the text (non-overlapping). */
size_t log_capture_count(const log_capture_t *c, const char *needle);

/* Lines that contain every needle of the NULL-terminated list. */
size_t log_capture_lines_with(const log_capture_t *c, const char *const *needles);

/* Index of the first line at or after `from` that contains every needle;
 * -1 if none. */
long log_capture_find(const log_capture_t *c, size_t from, const char *const *needles);

#endif
