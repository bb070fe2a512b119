#include "prom_check.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LABELS 64
#define MAX_NUMBER 64

enum ptype { T_UNTYPED, T_COUNTER, T_GAUGE, T_HISTOGRAM, T_SUMMARY, T_COUNT };
static const char *const type_names[T_COUNT] = {"untyped", "counter", "gauge", "histogram", "summary"};

enum suffix { SFX_NONE, SFX_BUCKET, SFX_SUM, SFX_COUNT };
static const char *const suffix_names[] = {"", "_bucket", "_sum", "_count"};

struct family {
    enum ptype type;
    bool has_help, has_type, has_samples, closed;
    char name[];
};

/* Strings to pointers, open addressing; keys are copied, never removed. */
typedef struct strmap {
    char **keys;
    size_t *lens;
    void **vals;
    size_t cap, n;
} strmap_t;

typedef struct label {
    const char *name;
    size_t name_n;
    const char *value; /* unescaped, in the checker's scratch */
    size_t value_n;
} label_t;

typedef struct sample {
    const char *name;
    size_t name_n;
    label_t labels[MAX_LABELS];
    size_t nlabels;
    double value;
} sample_t;

typedef struct checker {
    size_t line_no;
    char *why;
    size_t why_size;
    strmap_t families; /* name -> struct family */
    strmap_t series;   /* series key -> non-NULL */
    struct family *cur;
    char *scratch;
    /* the histogram bucket run in progress, and the last one finished */
    char *run_key;
    double run_le, run_value;
    bool run_inf;
    char *done_key;
    double done_inf;
} checker_t;

static int fail(checker_t *ck, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(checker_t *ck, const char *fmt, ...)
{
    if (ck->why && ck->why_size) {
        int n = snprintf(ck->why, ck->why_size, "line %zu: ", ck->line_no);
        if (n >= 0 && (size_t)n < ck->why_size) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(ck->why + n, ck->why_size - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

/* ---- the map ------------------------------------------------------------------------ */

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return h;
}

static size_t map_probe(const strmap_t *m, const char *k, size_t n)
{
    size_t i = (size_t)hash(k, n) & (m->cap - 1);
    while (m->keys[i] && (m->lens[i] != n || memcmp(m->keys[i], k, n) != 0))
        i = (i + 1) & (m->cap - 1);
    return i;
}

static void map_grow(strmap_t *m)
{
    strmap_t g = {calloc(m->cap ? m->cap * 2 : 64, sizeof(char *)), NULL, NULL,
                  m->cap ? m->cap * 2 : 64, m->n};
    g.lens = calloc(g.cap, sizeof(size_t));
    g.vals = calloc(g.cap, sizeof(void *));
    if (!g.keys || !g.lens || !g.vals)
        abort(); /* test support: out of memory is not a verdict on the text */
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = map_probe(&g, m->keys[i], m->lens[i]);
        g.keys[j] = m->keys[i];
        g.lens[j] = m->lens[i];
        g.vals[j] = m->vals[i];
    }
    free(m->keys);
    free(m->lens);
    free(m->vals);
    *m = g;
}

/* The value slot for k; with add, created (NULL) when absent. */
static void **map_slot(strmap_t *m, const char *k, size_t n, bool add)
{
    if (add && (m->n + 1) * 2 > m->cap)
        map_grow(m);
    if (!m->cap)
        return NULL;
    size_t i = map_probe(m, k, n);
    if (!m->keys[i]) {
        if (!add)
            return NULL;
        m->keys[i] = malloc(n + 1);
        if (!m->keys[i])
            abort();
        memcpy(m->keys[i], k, n);
        m->keys[i][n] = '\0';
        m->lens[i] = n;
        m->n++;
    }
    return &m->vals[i];
}

static void map_free(strmap_t *m, bool free_vals)
{
    for (size_t i = 0; i < m->cap; i++) {
        free(m->keys[i]);
        if (free_vals)
            free(m->vals[i]);
    }
    free(m->keys);
    free(m->lens);
    free(m->vals);
}

/* ---- lexical pieces ----------------------------------------------------------------- */

static bool is_alpha_(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static size_t metric_name_len(const char *p, const char *end)
{
    if (p == end || !(is_alpha_(*p) || *p == ':'))
        return 0;
    size_t n = 1;
    while (p + n < end && (is_alpha_(p[n]) || is_digit(p[n]) || p[n] == ':'))
        n++;
    return n;
}

static size_t label_name_len(const char *p, const char *end)
{
    if (p == end || !is_alpha_(*p))
        return 0;
    size_t n = 1;
    while (p + n < end && (is_alpha_(p[n]) || is_digit(p[n])))
        n++;
    return n;
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
    static const uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t more = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 4;
        if (more == 4 || more >= n - i)
            return false;
        uint32_t cp = more == 0 ? c : more == 1 ? (c & 0x1fu) : more == 2 ? (c & 0x0fu) : (c & 0x07u);
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        /* overlong forms and surrogates are not UTF-8 */
        if (cp < min_cp[more] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += more + 1;
    }
    return true;
}

/* [+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?, or NaN, +Inf, -Inf. */
static bool parse_float(const char *p, size_t n, double *out)
{
    if ((n == 3 && memcmp(p, "NaN", 3) == 0)) {
        *out = NAN;
        return true;
    }
    if (n == 4 && (memcmp(p, "+Inf", 4) == 0 || memcmp(p, "-Inf", 4) == 0)) {
        *out = p[0] == '+' ? INFINITY : -INFINITY;
        return true;
    }
    if (n == 0 || n >= MAX_NUMBER)
        return false;
    size_t i = (p[0] == '+' || p[0] == '-') ? 1 : 0;
    size_t int_digits = 0, frac_digits = 0;
    while (i < n && is_digit(p[i]))
        i++, int_digits++;
    if (i < n && p[i] == '.') {
        i++;
        while (i < n && is_digit(p[i]))
            i++, frac_digits++;
    }
    if (!int_digits && !frac_digits)
        return false;
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        size_t exp_digits = 0;
        while (i < n && is_digit(p[i]))
            i++, exp_digits++;
        if (!exp_digits)
            return false;
    }
    if (i != n)
        return false;
    char buf[MAX_NUMBER];
    memcpy(buf, p, n);
    buf[n] = '\0';
    *out = strtod(buf, NULL);
    return true;
}

static bool parse_timestamp(const char *p, size_t n)
{
    size_t i = (n && p[0] == '-') ? 1 : 0;
    if (i == n || n - i > 19)
        return false;
    for (; i < n; i++)
        if (!is_digit(p[i]))
            return false;
    return true;
}

/* ---- series keys ------------------------------------------------------------------ */

static void put_part(char **w, const char *s, size_t n)
{
    *w += sprintf(*w, "%zu:", n);
    memcpy(*w, s, n);
    *w += n;
}

static int label_cmp(const label_t *a, const label_t *b)
{
    size_t n = a->name_n < b->name_n ? a->name_n : b->name_n;
    int c = memcmp(a->name, b->name, n);
    return c ? c : (a->name_n > b->name_n) - (a->name_n < b->name_n);
}

/* name and labels, sorted and length-prefixed so no two series share one;
 * skip names a label to leave out (le, for a histogram's buckets). */
static char *series_key(const sample_t *s, const char *name, size_t name_n, const char *skip)
{
    const label_t *sorted[MAX_LABELS];
    size_t n = 0, size = name_n + 32;
    for (size_t i = 0; i < s->nlabels; i++) {
        const label_t *l = &s->labels[i];
        if (skip && l->name_n == strlen(skip) && memcmp(l->name, skip, l->name_n) == 0)
            continue;
        size_t j = n++;
        while (j > 0 && label_cmp(sorted[j - 1], l) > 0) {
            sorted[j] = sorted[j - 1];
            j--;
        }
        sorted[j] = l;
        size += l->name_n + l->value_n + 64;
    }
    char *key = malloc(size), *w = key;
    if (!key)
        abort();
    put_part(&w, name, name_n);
    for (size_t i = 0; i < n; i++) {
        put_part(&w, sorted[i]->name, sorted[i]->name_n);
        put_part(&w, sorted[i]->value, sorted[i]->value_n);
    }
    *w = '\0';
    return key;
}

static const label_t *find_label(const sample_t *s, const char *name)
{
    for (size_t i = 0; i < s->nlabels; i++)
        if (s->labels[i].name_n == strlen(name) && memcmp(s->labels[i].name, name, s->labels[i].name_n) == 0)
            return &s->labels[i];
    return NULL;
}

/* ---- families --------------------------------------------------------------------- */

static struct family *family_get(checker_t *ck, const char *name, size_t n)
{
    void **slot = map_slot(&ck->families, name, n, true);
    if (!*slot) {
        struct family *f = calloc(1, sizeof *f + n + 1);
        if (!f)
            abort();
        memcpy(f->name, name, n);
        *slot = f;
    }
    return *slot;
}

/* The family a sample name belongs to: a declared histogram or summary
 * claims its suffixed names, anything else is its own family. */
static struct family *family_of(checker_t *ck, const char *name, size_t n, enum suffix *sfx)
{
    for (enum suffix s = SFX_BUCKET; s <= SFX_COUNT; s++) {
        size_t sl = strlen(suffix_names[s]);
        if (n <= sl || memcmp(name + n - sl, suffix_names[s], sl) != 0)
            continue;
        void **slot = map_slot(&ck->families, name, n - sl, false);
        struct family *f = slot ? *slot : NULL;
        if (f && (f->type == T_HISTOGRAM || (f->type == T_SUMMARY && s != SFX_BUCKET))) {
            *sfx = s;
            return f;
        }
    }
    *sfx = SFX_NONE;
    return family_get(ck, name, n);
}

/* A bucket run must close at +Inf; its value is what _count must say. */
static int end_run(checker_t *ck)
{
    if (!ck->run_key)
        return 0;
    if (!ck->run_inf)
        return fail(ck, "histogram buckets end without le=\"+Inf\"");
    free(ck->done_key);
    ck->done_key = ck->run_key;
    ck->done_inf = ck->run_value;
    ck->run_key = NULL;
    return 0;
}

static int switch_to(checker_t *ck, struct family *f, const char *what)
{
    if (f == ck->cur)
        return 0;
    if (end_run(ck) < 0)
        return -1;
    if (f->closed)
        return fail(ck, "%s for family %s after another family began: a family's lines must be contiguous",
                    what, f->name);
    if (ck->cur)
        ck->cur->closed = true;
    ck->cur = f;
    return 0;
}

/* ---- comment lines ----------------------------------------------------------------- */

static int check_help(checker_t *ck, const char *p, const char *end)
{
    size_t n = metric_name_len(p, end);
    if (!n)
        return fail(ck, "HELP without a valid metric name");
    struct family *f = family_get(ck, p, n);
    if (p + n < end && p[n] != ' ')
        return fail(ck, "HELP: metric name followed by '%c' instead of a space", p[n]);
    const char *doc = p + n + (p + n < end), *q;
    for (q = doc; q < end; q++)
        if (*q == '\\' && (++q == end || (*q != '\\' && *q != 'n')))
            return fail(ck, "HELP for %s: invalid escape (only \\\\ and \\n)", f->name);
    if (!utf8_valid((const unsigned char *)doc, (size_t)(end - doc)))
        return fail(ck, "HELP for %s: not valid UTF-8", f->name);
    if (f->has_help)
        return fail(ck, "second HELP line for %s", f->name);
    f->has_help = true;
    return switch_to(ck, f, "HELP");
}

static int check_type(checker_t *ck, const char *p, const char *end)
{
    size_t n = metric_name_len(p, end);
    if (!n || p + n == end || p[n] != ' ')
        return fail(ck, "TYPE must be '# TYPE name type'");
    struct family *f = family_get(ck, p, n);
    const char *t = p + n + 1;
    enum ptype type = T_COUNT;
    for (enum ptype i = T_UNTYPED; i < T_COUNT; i++)
        if ((size_t)(end - t) == strlen(type_names[i]) && memcmp(t, type_names[i], (size_t)(end - t)) == 0)
            type = i;
    if (type == T_COUNT)
        return fail(ck, "TYPE for %s: unknown type '%.*s'", f->name, (int)(end - t), t);
    if (f->has_type)
        return fail(ck, "second TYPE line for %s", f->name);
    if (f->has_samples)
        return fail(ck, "TYPE for %s after its first sample", f->name);
    f->has_type = true;
    f->type = type;
    return switch_to(ck, f, "TYPE");
}

static int check_comment(checker_t *ck, const char *p, const char *end)
{
    size_t n = (size_t)(end - p);
    bool help = n >= 6 && memcmp(p, "# HELP", 6) == 0 && (n == 6 || p[6] == ' ');
    bool type = n >= 6 && memcmp(p, "# TYPE", 6) == 0 && (n == 6 || p[6] == ' ');
    if (help)
        return check_help(ck, p + (n > 6 ? 7 : 6), end);
    if (type)
        return check_type(ck, p + (n > 6 ? 7 : 6), end);
    return 0; /* any other comment is free text */
}

/* ---- samples ----------------------------------------------------------------------- */

static int parse_label_value(checker_t *ck, const char **pp, const char *end, char **out, label_t *l)
{
    const char *p = *pp;
    char *w = *out;
    l->value = w;
    for (;; p++) {
        if (p == end)
            return fail(ck, "label %.*s: unterminated value", (int)l->name_n, l->name);
        if (*p == '"')
            break;
        if (*p != '\\') {
            *w++ = *p;
            continue;
        }
        if (++p == end || (*p != '\\' && *p != '"' && *p != 'n'))
            return fail(ck, "label %.*s: invalid escape (only \\\\, \\\" and \\n)", (int)l->name_n, l->name);
        *w++ = *p == 'n' ? '\n' : *p;
    }
    l->value_n = (size_t)(w - l->value);
    if (!utf8_valid((const unsigned char *)l->value, l->value_n))
        return fail(ck, "label %.*s: value is not valid UTF-8", (int)l->name_n, l->name);
    *pp = p + 1;
    *out = w;
    return 0;
}

static int parse_label(checker_t *ck, const char **pp, const char *end, char **out, sample_t *s)
{
    const char *p = *pp;
    size_t n = label_name_len(p, end);
    if (!n)
        return fail(ck, "invalid label name at '%.*s'", (int)(end - p < 16 ? end - p : 16), p);
    if (n >= 2 && p[0] == '_' && p[1] == '_')
        return fail(ck, "label name %.*s is reserved (starts with __)", (int)n, p);
    if (s->nlabels == MAX_LABELS)
        return fail(ck, "more than %d labels", MAX_LABELS);
    label_t *l = &s->labels[s->nlabels];
    l->name = p;
    l->name_n = n;
    for (size_t i = 0; i < s->nlabels; i++)
        if (label_cmp(&s->labels[i], l) == 0)
            return fail(ck, "label %.*s twice", (int)n, p);
    p += n;
    if (end - p < 2 || p[0] != '=' || p[1] != '"')
        return fail(ck, "label %.*s: expected =\"", (int)n, l->name);
    p += 2;
    if (parse_label_value(ck, &p, end, out, l) < 0)
        return -1;
    s->nlabels++;
    *pp = p;
    return 0;
}

static int parse_labels(checker_t *ck, const char **pp, const char *end, sample_t *s)
{
    const char *p = *pp + 1;
    char *out = ck->scratch;
    if (p < end && *p == '}') {
        *pp = p + 1;
        return 0;
    }
    for (;;) {
        if (parse_label(ck, &p, end, &out, s) < 0)
            return -1;
        if (p < end && *p == '}')
            break;
        if (p == end || *p != ',')
            return fail(ck, "label set: expected ',' or '}'");
        if (++p < end && *p == '}')
            return fail(ck, "label set: trailing comma");
    }
    *pp = p + 1;
    return 0;
}

static int parse_sample(checker_t *ck, const char *p, const char *end, sample_t *s)
{
    s->name = p;
    s->name_n = metric_name_len(p, end);
    s->nlabels = 0;
    if (!s->name_n)
        return fail(ck, "a sample must start with a metric name, not '%c'", *p);
    p += s->name_n;
    if (p < end && *p == '{' && parse_labels(ck, &p, end, s) < 0)
        return -1;
    if (p == end || *p != ' ')
        return fail(ck, "%.*s: expected one space before the value", (int)s->name_n, s->name);
    const char *v = ++p;
    while (p < end && *p != ' ')
        p++;
    if (!parse_float(v, (size_t)(p - v), &s->value))
        return fail(ck, "%.*s: value '%.*s' is not a float", (int)s->name_n, s->name, (int)(p - v), v);
    if (p < end && !parse_timestamp(p + 1, (size_t)(end - p - 1)))
        return fail(ck, "%.*s: '%.*s' after the value is not a timestamp", (int)s->name_n, s->name,
                    (int)(end - p - 1), p + 1);
    return 0;
}

static int check_bucket(checker_t *ck, const struct family *f, const sample_t *s, char *key)
{
    const label_t *le = find_label(s, "le");
    double bound;
    if (!le || !parse_float(le->value, le->value_n, &bound) || isnan(bound)) {
        free(key);
        return fail(ck, "histogram %s: a bucket needs a float le label", f->name);
    }
    if (ck->run_key && strcmp(ck->run_key, key) == 0) {
        free(key);
        if (!(bound > ck->run_le))
            return fail(ck, "histogram %s: le values must increase", f->name);
        if (s->value < ck->run_value)
            return fail(ck, "histogram %s: bucket counts must not decrease", f->name);
    } else {
        if (end_run(ck) < 0) {
            free(key);
            return -1;
        }
        ck->run_key = key;
    }
    if (s->value < 0)
        return fail(ck, "histogram %s: negative bucket count", f->name);
    ck->run_le = bound;
    ck->run_value = s->value;
    ck->run_inf = isinf(bound) && bound > 0;
    return 0;
}

static int check_histogram(checker_t *ck, const struct family *f, const sample_t *s, enum suffix sfx)
{
    if (sfx == SFX_NONE)
        return fail(ck, "histogram %s: sample %.*s is not _bucket, _sum or _count", f->name,
                    (int)s->name_n, s->name);
    char *key = series_key(s, f->name, strlen(f->name), "le");
    if (sfx == SFX_BUCKET)
        return check_bucket(ck, f, s, key);
    int rc = end_run(ck);
    if (rc == 0 && sfx == SFX_COUNT && ck->done_key && strcmp(ck->done_key, key) == 0 &&
        s->value != ck->done_inf)
        rc = fail(ck, "histogram %s: _count %g differs from the +Inf bucket %g", f->name, s->value,
                  ck->done_inf);
    free(key);
    return rc;
}

static int check_semantics(checker_t *ck, const struct family *f, const sample_t *s, enum suffix sfx)
{
    if (f->type == T_HISTOGRAM)
        return check_histogram(ck, f, s, sfx);
    if (end_run(ck) < 0)
        return -1;
    if (f->type == T_COUNTER && s->value < 0)
        return fail(ck, "counter %s is negative", f->name);
    if (f->type == T_SUMMARY && sfx == SFX_NONE) {
        const label_t *q = find_label(s, "quantile");
        double v;
        if (!q || !parse_float(q->value, q->value_n, &v) || !(v >= 0 && v <= 1))
            return fail(ck, "summary %s: a quantile sample needs a quantile label in [0, 1]", f->name);
    }
    return 0;
}

static int check_sample(checker_t *ck, const char *p, const char *end)
{
    sample_t s;
    if (parse_sample(ck, p, end, &s) < 0)
        return -1;
    enum suffix sfx;
    struct family *f = family_of(ck, s.name, s.name_n, &sfx);
    if (switch_to(ck, f, "a sample") < 0)
        return -1;
    f->has_samples = true;
    char *key = series_key(&s, s.name, s.name_n, NULL);
    void **seen = map_slot(&ck->series, key, strlen(key), true);
    free(key);
    if (*seen)
        return fail(ck, "series %.*s appears twice", (int)s.name_n, s.name);
    *seen = ck; /* any non-NULL mark */
    return check_semantics(ck, f, &s, sfx);
}

static int check_line(checker_t *ck, const char *p, const char *end)
{
    if (p == end)
        return fail(ck, "empty line");
    if (memchr(p, '\0', (size_t)(end - p)))
        return fail(ck, "NUL byte");
    if (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')
        if (*p != '#')
            return fail(ck, "trailing blank or CR");
    if (*p == '#')
        return check_comment(ck, p, end);
    return check_sample(ck, p, end);
}

int prom_check(const char *text, size_t len, char *why, size_t why_size)
{
    checker_t ck = {.why = why, .why_size = why_size};
    if (why && why_size)
        why[0] = '\0';
    ck.scratch = malloc(len + 1);
    if (!ck.scratch)
        abort();
    int rc = 0;
    const char *p = text, *end = text + len;
    while (rc == 0 && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        ck.line_no++;
        if (!nl) {
            rc = fail(&ck, "the last line does not end in a newline");
            break;
        }
        rc = check_line(&ck, p, nl);
        p = nl + 1;
    }
    if (rc == 0)
        rc = end_run(&ck);
    free(ck.scratch);
    free(ck.run_key);
    free(ck.done_key);
    map_free(&ck.families, true);
    map_free(&ck.series, false);
    return rc;
}
