#include "log_capture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *bigger = realloc(p, n * elem);
    if (!bigger) {
        fprintf(stderr, "log_capture: out of memory\n");
        abort();
    }
    *cap = n;
    return bigger;
}

void log_capture_sink(void *ud, ami_log_level_t level, const char *line, size_t len)
{
    log_capture_t *c = ud;
    assert_int_equal(line[len], '\0'); /* the sink contract: NUL-terminated at len */
    if (c->n == c->cap) {
        size_t cap = c->cap; /* the two arrays grow together */
        c->line = grow(c->line, &cap, c->n + 1, sizeof *c->line);
        c->level = grow(c->level, &c->cap, c->n + 1, sizeof *c->level);
    }
    char *copy = malloc(len + 1);
    if (!copy)
        abort();
    memcpy(copy, line, len + 1);
    c->line[c->n] = copy;
    c->level[c->n] = level;
    c->n++;
    c->text = grow(c->text, &c->text_cap, c->len + len + 2, 1);
    memcpy(c->text + c->len, line, len);
    c->len += len;
    c->text[c->len++] = '\n';
    c->text[c->len] = '\0';
    if (getenv("AMI_TEST_VERBOSE"))
        fprintf(stderr, "%s\n", copy);
}

void log_capture_attach(log_capture_t *c, ami_logger_config_t *cfg)
{
    cfg->sink = log_capture_sink;
    cfg->sink_ud = c;
}

ami_logger_t *log_capture_logger(log_capture_t *c, ami_log_level_t level, ami_log_format_t format,
                                 size_t max_line)
{
    ami_logger_config_t cfg;
    ami_logger_config_default(&cfg);
    cfg.level = level;
    cfg.format = format;
    if (max_line)
        cfg.max_line = max_line;
    log_capture_attach(c, &cfg);
    ami_logger_t *lg = ami_logger_new(&cfg);
    assert_non_null(lg);
    return lg;
}

void log_capture_clear(log_capture_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->line[i]);
    c->n = 0;
    c->len = 0;
    if (c->text)
        c->text[0] = '\0';
}

void log_capture_free(log_capture_t *c)
{
    log_capture_clear(c);
    free(c->line);
    free(c->level);
    free(c->text);
    memset(c, 0, sizeof *c);
}

const char *log_capture_text(const log_capture_t *c)
{
    return c->text ? c->text : "";
}

size_t log_capture_count(const log_capture_t *c, const char *needle)
{
    size_t n = 0, nl = strlen(needle);
    if (nl == 0)
        return 0;
    for (const char *p = log_capture_text(c); (p = strstr(p, needle)); p += nl)
        n++;
    return n;
}

static bool has_all(const char *line, const char *const *needles)
{
    for (const char *const *k = needles; *k; k++)
        if (!strstr(line, *k))
            return false;
    return true;
}

size_t log_capture_lines_with(const log_capture_t *c, const char *const *needles)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++)
        n += has_all(c->line[i], needles);
    return n;
}

long log_capture_find(const log_capture_t *c, size_t from, const char *const *needles)
{
    for (size_t i = from; i < c->n; i++)
        if (has_all(c->line[i], needles))
            return (long)i;
    return -1;
}
