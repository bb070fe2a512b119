/*
 * Rendering the metrics registry in the Prometheus text exposition format
 * 0.0.4 (see metrics.h): the collectors run first, then every family in
 * registration order, its series in theirs, with HELP and TYPE lines,
 * escaped label values and numbers that read back as the same double.
 * Collectors are kept here because rendering is what runs them. Appends to
 * the caller's buffer and allocates nothing else. Loop thread only.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obs/metrics.h"
#include "obs/metrics_internal.h"

/* ---- public: collectors ------------------------------------------------------ */

int ami_metrics_add_collector(ami_metrics_t *m, ami_metrics_collector_fn fn, void *ud)
{
    if (!m || !fn || m->ncollectors == MAX_COLLECTORS)
        return -1;
    m->collectors[m->ncollectors++] = (struct collector){fn, ud};
    return 0;
}

void ami_metrics_remove_collector(ami_metrics_t *m, ami_metrics_collector_fn fn, void *ud)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->ncollectors; i++) {
        if (m->collectors[i].fn != fn || m->collectors[i].ud != ud)
            continue;
        memmove(&m->collectors[i], &m->collectors[i + 1],
                (m->ncollectors - i - 1) * sizeof m->collectors[0]);
        m->ncollectors--;
        /* Unsigned wrap to SIZE_MAX is fine: the run loop increments first. */
        if (m->collecting && i <= m->cursor)
            m->cursor--;
        return;
    }
}

static void run_collectors(ami_metrics_t *m)
{
    m->collecting = true;
    for (m->cursor = 0; m->cursor < m->ncollectors; m->cursor++)
        m->collectors[m->cursor].fn(m->collectors[m->cursor].ud, m);
    m->collecting = false;
}

/* ---- public: rendering ------------------------------------------------------- */

/* Integral values print as integers, others as the shortest text that reads
 * back as the same double. */
static void format_value(char out[40], double v)
{
    if (isnan(v)) {
        strcpy(out, "NaN");
    } else if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
    } else if (v == trunc(v) && fabs(v) < 9007199254740992.0) {
        snprintf(out, 40, "%lld", (long long)v);
    } else {
        snprintf(out, 40, "%.15g", v);
        if (strtod(out, NULL) != v)
            snprintf(out, 40, "%.17g", v);
    }
}

static void format_bound(char out[40], double v)
{
    snprintf(out, 40, "%.15g", v);
    if (strtod(out, NULL) != v)
        snprintf(out, 40, "%.17g", v);
}

static int put_escaped(ami_buf_t *out, const char *s, bool quote)
{
    const char *start = s;
    for (; *s; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '\n' ? "\\n" : quote && *s == '"' ? "\\\"" : NULL;
        if (!esc)
            continue;
        if (ami_buf_append(out, start, (size_t)(s - start)) < 0 || ami_buf_append(out, esc, 2) < 0)
            return -1;
        start = s + 1;
    }
    return ami_buf_append(out, start, (size_t)(s - start));
}

/* name{k="v",...,le="b"}: le is only for buckets, braces only when needed. */
static int put_series_name(ami_buf_t *out, const struct series *s, const char *suffix, const char *le)
{
    const struct family *f = s->fam;
    if (ami_buf_append_str(out, f->name) < 0 || ami_buf_append_str(out, suffix) < 0)
        return -1;
    if (f->nlabels == 0 && !le)
        return 0;
    if (ami_buf_append(out, "{", 1) < 0)
        return -1;
    for (size_t i = 0; i < f->nlabels; i++) {
        if (ami_buf_printf(out, "%s%s=\"", i ? "," : "", f->label_names[i]) < 0 ||
            put_escaped(out, s->values[i], true) < 0 || ami_buf_append(out, "\"", 1) < 0)
            return -1;
    }
    if (le && ami_buf_printf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le) < 0)
        return -1;
    return ami_buf_append(out, "}", 1);
}

static int put_sample(ami_buf_t *out, const struct series *s, const char *suffix, const char *le,
                      double v)
{
    char num[40];
    format_value(num, v);
    if (put_series_name(out, s, suffix, le) < 0)
        return -1;
    return ami_buf_printf(out, " %s\n", num);
}

static int put_histogram(ami_buf_t *out, const struct series *s)
{
    const ami_histogram_t *h = s->hist;
    uint64_t cumulative = 0;
    char le[40];
    for (size_t i = 0; i <= h->nbounds; i++) {
        cumulative += h->buckets[i];
        if (i < h->nbounds)
            format_bound(le, h->bounds[i]);
        else
            strcpy(le, "+Inf");
        if (put_sample(out, s, "_bucket", le, (double)cumulative) < 0)
            return -1;
    }
    if (put_sample(out, s, "_sum", NULL, h->sum) < 0)
        return -1;
    return put_sample(out, s, "_count", NULL, (double)h->count);
}

/* An empty help gets no HELP line: the line is optional, and "# HELP x "
 * with nothing after it helps nobody. */
static int put_family(ami_buf_t *out, const struct family *f)
{
    if (f->help[0] && (ami_buf_printf(out, "# HELP %s ", f->name) < 0 ||
                       put_escaped(out, f->help, false) < 0 || ami_buf_append(out, "\n", 1) < 0))
        return -1;
    if (ami_buf_printf(out, "# TYPE %s %s\n", f->name, metrics_kind_name(f->kind)) < 0)
        return -1;
    for (const struct series *s = f->first; s; s = s->next) {
        int rc = f->kind == KIND_HISTOGRAM ? put_histogram(out, s)
                 : f->kind == KIND_GAUGE   ? put_sample(out, s, "", NULL, s->v.gauge.value)
                                           : put_sample(out, s, "", NULL, s->v.counter.value);
        if (rc < 0)
            return -1;
    }
    return 0;
}

int ami_metrics_render(ami_metrics_t *m, ami_buf_t *out)
{
    if (!m || !out)
        return -1;
    run_collectors(m);
    for (const struct family *f = m->first; f; f = f->next)
        if (put_family(out, f) < 0)
            return -1;
    return 0;
}

size_t ami_metrics_render_text(ami_metrics_t *m, char *dst, size_t cap)
{
    if (cap > 0)
        dst[0] = '\0';
    /* The registry's series are bounded (max_series), so is its rendering. */
    ami_buf_t out;
    ami_buf_init(&out, 0);
    if (ami_metrics_render(m, &out) < 0) {
        ami_buf_deinit(&out);
        return SIZE_MAX;
    }
    if (cap > 0) {
        size_t n = out.len < cap ? out.len : cap - 1;
        if (n)
            memcpy(dst, out.data, n);
        dst[n] = '\0';
    }
    size_t len = out.len;
    ami_buf_deinit(&out);
    return len;
}
