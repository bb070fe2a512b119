/*
 * The metrics registry (see metrics.h): validation, registration and lookup
 * of families and series, histograms, and reading values back. Rendering
 * in text format, and the collectors that run before it, are in
 * metrics_render.c.
 */
#include "obs/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "obs/metrics_internal.h"
#include "util/alloc.h"

/* ami_metrics_new(0) still gets a bound: an unbounded registry is how a
 * script with a per-call label eats the process. */
#define DEFAULT_MAX_SERIES 10000
#define REFUSED_NAME "ami_metrics_series_refused_total"
#define REFUSED_HELP "Metric registrations refused: invalid, conflicting or past the series limit."

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

const char *metrics_kind_name(enum kind k)
{
    return kind_names[k];
}

static const double default_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define N_DEFAULT_BOUNDS (sizeof default_bounds / sizeof default_bounds[0])

typedef struct labelset {
    size_t n;
    const char *k[AMI_METRICS_MAX_LABELS];
    const char *v[AMI_METRICS_MAX_LABELS];
} labelset_t;

struct series_key {
    const char *name;
    const labelset_t *ls;
};

/* ---- hashing and the table ---------------------------------------------- */

/* Each string is closed by 0xff, a byte UTF-8 never uses, so "ab"+"c" and
 * "a"+"bc" hash apart. */
static uint64_t fnv_str(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= FNV_PRIME;
    }
    h ^= 0xff;
    return h * FNV_PRIME;
}

static uint64_t series_hash(uint64_t name_hash, const labelset_t *ls)
{
    uint64_t h = name_hash;
    for (size_t i = 0; i < ls->n; i++)
        h = fnv_str(fnv_str(h, ls->k[i]), ls->v[i]);
    return h;
}

static void table_place(void **items, uint64_t *hashes, size_t cap, uint64_t h, void *item)
{
    size_t i = (size_t)h & (cap - 1);
    while (items[i])
        i = (i + 1) & (cap - 1);
    items[i] = item;
    hashes[i] = h;
}

/* Grows ahead of an insert, so that the insert itself cannot fail. */
static int table_reserve(table_t *t, size_t n)
{
    if (n * 10 <= t->cap * 7)
        return 0;
    size_t cap = t->cap ? t->cap * 2 : 64;
    while (n * 10 > cap * 7)
        cap *= 2;
    void **items = ami_calloc(cap, sizeof *items);
    uint64_t *hashes = ami_calloc(cap, sizeof *hashes);
    if (!items || !hashes) {
        ami_free(items);
        ami_free(hashes);
        return -1;
    }
    for (size_t i = 0; i < t->cap; i++)
        if (t->items[i])
            table_place(items, hashes, cap, t->hashes[i], t->items[i]);
    ami_free(t->items);
    ami_free(t->hashes);
    t->items = items;
    t->hashes = hashes;
    t->cap = cap;
    return 0;
}

static void table_insert(table_t *t, uint64_t h, void *item)
{
    table_place(t->items, t->hashes, t->cap, h, item);
    t->n++;
}

static void table_deinit(table_t *t)
{
    ami_free(t->items);
    ami_free(t->hashes);
}

static bool family_eq(const void *item, const void *key)
{
    return strcmp(((const struct family *)item)->name, key) == 0;
}

static bool series_eq(const void *item, const void *key)
{
    const struct series *s = item;
    const struct series_key *k = key;
    if (s->fam->nlabels != k->ls->n || strcmp(s->fam->name, k->name) != 0)
        return false;
    for (size_t i = 0; i < k->ls->n; i++)
        if (strcmp(s->fam->label_names[i], k->ls->k[i]) != 0 || strcmp(s->values[i], k->ls->v[i]) != 0)
            return false;
    return true;
}

static void *table_find(const table_t *t, uint64_t h, bool (*eq)(const void *, const void *),
                        const void *key)
{
    if (!t->cap)
        return NULL;
    for (size_t i = (size_t)h & (t->cap - 1); t->items[i]; i = (i + 1) & (t->cap - 1))
        if (t->hashes[i] == h && eq(t->items[i], key))
            return t->items[i];
    return NULL;
}

/* ---- validation ----------------------------------------------------------- */

static bool is_alpha_(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool valid_metric_name(const char *s)
{
    if (!is_alpha_(*s) && *s != ':')
        return false;
    for (s++; *s; s++)
        if (!is_alpha_(*s) && !is_digit(*s) && *s != ':')
            return false;
    return true;
}

static bool valid_label_name(const char *s)
{
    if (!is_alpha_(*s) || (s[0] == '_' && s[1] == '_'))
        return false;
    for (s++; *s; s++)
        if (!is_alpha_(*s) && !is_digit(*s))
            return false;
    return true;
}

static int labels_parse(const char *name, const char *const *labels, labelset_t *ls, ami_err_t *err)
{
    ls->n = 0;
    for (size_t i = 0; labels && labels[2 * i]; i++) {
        if (ls->n == AMI_METRICS_MAX_LABELS)
            return ami_err_set(err, AMI_E_INVALID, "metric %s: more than %d labels", name,
                               AMI_METRICS_MAX_LABELS);
        if (!labels[2 * i + 1])
            return ami_err_set(err, AMI_E_INVALID, "metric %s: label %s has no value", name,
                               labels[2 * i]);
        ls->k[ls->n] = labels[2 * i];
        ls->v[ls->n] = labels[2 * i + 1];
        ls->n++;
    }
    return 0;
}

static int validate_labels(const char *name, enum kind kind, const labelset_t *ls, ami_err_t *err)
{
    for (size_t i = 0; i < ls->n; i++) {
        if (!valid_label_name(ls->k[i]))
            return ami_err_set(err, AMI_E_INVALID,
                               "metric %s: label name \"%s\" is invalid: it must match "
                               "[a-zA-Z_][a-zA-Z0-9_]* and not start with \"__\"",
                               name, ls->k[i]);
        if (kind == KIND_HISTOGRAM && strcmp(ls->k[i], "le") == 0)
            return ami_err_set(err, AMI_E_INVALID,
                               "metric %s: label \"le\" is reserved for histogram buckets", name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(ls->k[i], ls->k[j]) == 0)
                return ami_err_set(err, AMI_E_INVALID, "metric %s: label \"%s\" given twice", name,
                                   ls->k[i]);
    }
    return 0;
}

static int validate_bounds(const char *name, const double *b, size_t n, ami_err_t *err)
{
    if (n > AMI_METRICS_MAX_BUCKETS)
        return ami_err_set(err, AMI_E_INVALID, "metric %s: %zu histogram bounds, at most %d", name,
                           n, AMI_METRICS_MAX_BUCKETS);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(b[i]) || (i > 0 && !(b[i] > b[i - 1])))
            return ami_err_set(err, AMI_E_INVALID,
                               "metric %s: histogram bounds must be finite and strictly increasing",
                               name);
    return 0;
}

static int validate_new(const char *name, enum kind kind, const labelset_t *ls, const double *b,
                        size_t nb, ami_err_t *err)
{
    if (!valid_metric_name(name))
        return ami_err_set(err, AMI_E_INVALID,
                           "metric name \"%s\" is invalid: it must match [a-zA-Z_:][a-zA-Z0-9_:]*",
                           name);
    if (validate_labels(name, kind, ls, err) < 0)
        return -1;
    return kind == KIND_HISTOGRAM ? validate_bounds(name, b, nb, err) : 0;
}

static void join_label_names(const struct family *f, char *out, size_t size)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < f->nlabels && len < size; i++) {
        int n = snprintf(out + len, size - len, "%s%s", i ? "," : "", f->label_names[i]);
        if (n < 0)
            break;
        len += (size_t)n;
    }
}

/* A name keeps the type, label names and bounds of its first registration. */
static int family_check(const struct family *f, enum kind kind, const labelset_t *ls, const double *b,
                        size_t nb, ami_err_t *err)
{
    if (f->kind != kind)
        return ami_err_set(err, AMI_E_INVALID, "metric %s is registered as a %s, not a %s", f->name,
                           metrics_kind_name(f->kind), metrics_kind_name(kind));
    bool same = f->nlabels == ls->n;
    for (size_t i = 0; same && i < ls->n; i++)
        same = strcmp(f->label_names[i], ls->k[i]) == 0;
    if (!same) {
        char names[96];
        join_label_names(f, names, sizeof names);
        return ami_err_set(err, AMI_E_INVALID,
                           "metric %s is registered with label names (%s): the same names in the "
                           "same order are required",
                           f->name, names);
    }
    if (kind != KIND_HISTOGRAM)
        return 0;
    same = f->nbounds == nb;
    for (size_t i = 0; same && i < nb; i++)
        same = f->bounds[i] == b[i];
    if (!same)
        return ami_err_set(err, AMI_E_INVALID,
                           "metric %s is registered with other histogram bounds", f->name);
    return 0;
}

/* ---- creation ------------------------------------------------------------- */

static char *pack(char **cursor, const char *s)
{
    size_t n = strlen(s) + 1;
    char *dst = *cursor;
    memcpy(dst, s, n);
    *cursor += n;
    return dst;
}

static ami_histogram_t *hist_new(const double *bounds, size_t nbounds)
{
    ami_histogram_t *h = ami_calloc(1, sizeof *h + (nbounds + 1) * sizeof h->buckets[0]);
    if (!h)
        return NULL;
    h->bounds = bounds;
    h->nbounds = nbounds;
    return h;
}

static struct family *family_new(enum kind kind, const char *name, const char *help,
                                 const labelset_t *ls, const double *b, size_t nb)
{
    help = help ? help : "";
    size_t size = sizeof(struct family) + strlen(name) + 1 + strlen(help) + 1;
    for (size_t i = 0; i < ls->n; i++)
        size += strlen(ls->k[i]) + 1;
    struct family *f = ami_calloc(1, size);
    if (!f)
        return NULL;
    char *cursor = f->name;
    pack(&cursor, name);
    f->help = pack(&cursor, help);
    for (size_t i = 0; i < ls->n; i++)
        f->label_names[i] = pack(&cursor, ls->k[i]);
    f->kind = kind;
    f->nlabels = ls->n;
    f->nbounds = nb;
    if (nb)
        memcpy(f->bounds, b, nb * sizeof b[0]);
    return f;
}

static struct series *series_new(struct family *f, const labelset_t *ls)
{
    size_t size = sizeof(struct series);
    for (size_t i = 0; i < ls->n; i++)
        size += strlen(ls->v[i]) + 1;
    struct series *s = ami_calloc(1, size);
    if (!s)
        return NULL;
    char *cursor = s->strings;
    for (size_t i = 0; i < ls->n; i++)
        s->values[i] = pack(&cursor, ls->v[i]);
    s->fam = f;
    if (f->kind == KIND_HISTOGRAM && !(s->hist = hist_new(f->bounds, f->nbounds))) {
        ami_free(s);
        return NULL;
    }
    return s;
}

static void link_series(struct family *f, struct series *s)
{
    if (f->last)
        f->last->next = s;
    else
        f->first = s;
    f->last = s;
}

static void link_family(ami_metrics_t *m, struct family *f)
{
    if (m->last)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
}

/* f is NULL when the name is new: the family is created with its first
 * series, so that no family is ever rendered without one. */
static struct series *add_series(ami_metrics_t *m, struct family *f, enum kind kind, const char *name,
                                 const char *help, uint64_t name_hash, uint64_t hash,
                                 const labelset_t *ls, const double *b, size_t nb, ami_err_t *err)
{
    struct family *created = NULL;
    if (table_reserve(&m->series, m->series.n + 1) < 0 ||
        (!f && table_reserve(&m->families, m->families.n + 1) < 0))
        goto nomem;
    if (!f && !(f = created = family_new(kind, name, help, ls, b, nb)))
        goto nomem;
    struct series *s = series_new(f, ls);
    if (!s) {
        ami_free(created);
        goto nomem;
    }
    if (created) {
        table_insert(&m->families, name_hash, created);
        link_family(m, created);
    }
    table_insert(&m->series, hash, s);
    link_series(f, s);
    m->nseries++;
    return s;
nomem:
    ami_err_set(err, AMI_E_NOMEM, "metric %s: out of memory", name);
    return NULL;
}

static void pick_bounds(enum kind kind, const double *bounds, size_t nbounds, const double **b,
                        size_t *nb)
{
    *b = NULL;
    *nb = 0;
    if (kind != KIND_HISTOGRAM)
        return;
    if (bounds && nbounds) {
        *b = bounds;
        *nb = nbounds;
    } else {
        *b = default_bounds;
        *nb = N_DEFAULT_BOUNDS;
    }
}

/* The series for name and labels, found or created; NULL (err filled) when
 * refused. A known series costs one hash and one compare. */
static struct series *reg(ami_metrics_t *m, enum kind kind, const char *name, const char *help,
                          const double *bounds, size_t nbounds, const char *const *labels,
                          ami_err_t *err)
{
    labelset_t ls;
    const double *b;
    size_t nb;
    if (!name) {
        ami_err_set(err, AMI_E_INVALID, "metric name missing");
        return NULL;
    }
    if (labels_parse(name, labels, &ls, err) < 0)
        return NULL;
    pick_bounds(kind, bounds, nbounds, &b, &nb);
    uint64_t name_hash = fnv_str(FNV_OFFSET, name);
    uint64_t hash = series_hash(name_hash, &ls);
    struct series_key key = {name, &ls};
    struct series *s = table_find(&m->series, hash, series_eq, &key);
    if (s)
        return family_check(s->fam, kind, &ls, b, nb, err) == 0 ? s : NULL;
    struct family *f = table_find(&m->families, name_hash, family_eq, name);
    if (f ? family_check(f, kind, &ls, b, nb, err) < 0 : validate_new(name, kind, &ls, b, nb, err) < 0)
        return NULL;
    if (m->nseries >= m->max_series) {
        ami_err_set(err, AMI_E_LIMIT, "metric %s: the registry's limit of %zu series is reached",
                    name, m->max_series);
        return NULL;
    }
    return add_series(m, f, kind, name, help, name_hash, hash, &ls, b, nb, err);
}

static void count_refusal(ami_metrics_t *m)
{
    if (m->refused)
        ami_counter_inc(m->refused);
}

/* ---- public: lifecycle and registration ------------------------------------ */

ami_metrics_t *ami_metrics_new(size_t max_series)
{
    ami_metrics_t *m = ami_calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->max_series = max_series ? max_series : DEFAULT_MAX_SERIES;
    m->discard_hist = hist_new(default_bounds, N_DEFAULT_BOUNDS);
    struct series *s = reg(m, KIND_COUNTER, REFUSED_NAME, REFUSED_HELP, NULL, 0, NULL, NULL);
    if (!m->discard_hist || !s) {
        ami_metrics_free(m);
        return NULL;
    }
    m->refused = &s->v.counter;
    return m;
}

void ami_metrics_free(ami_metrics_t *m)
{
    if (!m)
        return;
    struct family *f = m->first;
    while (f) {
        struct family *fnext = f->next;
        struct series *s = f->first;
        while (s) {
            struct series *snext = s->next;
            ami_free(s->hist);
            ami_free(s);
            s = snext;
        }
        ami_free(f);
        f = fnext;
    }
    table_deinit(&m->families);
    table_deinit(&m->series);
    ami_free(m->discard_hist);
    ami_free(m);
}

ami_counter_t *ami_metrics_counter(ami_metrics_t *m, const char *name, const char *help,
                                   const char *const *labels, ami_err_t *err)
{
    if (!m) {
        ami_err_set(err, AMI_E_INVALID, "no metrics registry");
        return NULL;
    }
    struct series *s = reg(m, KIND_COUNTER, name, help, NULL, 0, labels, err);
    if (s)
        return &s->v.counter;
    count_refusal(m);
    return &m->discard_counter;
}

ami_gauge_t *ami_metrics_gauge(ami_metrics_t *m, const char *name, const char *help,
                               const char *const *labels, ami_err_t *err)
{
    if (!m) {
        ami_err_set(err, AMI_E_INVALID, "no metrics registry");
        return NULL;
    }
    struct series *s = reg(m, KIND_GAUGE, name, help, NULL, 0, labels, err);
    if (s)
        return &s->v.gauge;
    count_refusal(m);
    return &m->discard_gauge;
}

ami_histogram_t *ami_metrics_histogram(ami_metrics_t *m, const char *name, const char *help,
                                       const double *bounds, size_t nbounds,
                                       const char *const *labels, ami_err_t *err)
{
    if (!m) {
        ami_err_set(err, AMI_E_INVALID, "no metrics registry");
        return NULL;
    }
    struct series *s = reg(m, KIND_HISTOGRAM, name, help, bounds, nbounds, labels, err);
    if (s)
        return s->hist;
    count_refusal(m);
    return m->discard_hist;
}

/* ---- public: histograms ---------------------------------------------------- */

void ami_histogram_observe(ami_histogram_t *h, double v)
{
    if (!h || isnan(v))
        return;
    size_t lo = 0, hi = h->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= h->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    h->buckets[lo]++;
    h->count++;
    h->sum += v;
}

double ami_histogram_count(const ami_histogram_t *h)
{
    return h ? (double)h->count : 0;
}

double ami_histogram_sum(const ami_histogram_t *h)
{
    return h ? h->sum : 0;
}

/* ---- public: read back --------------------------------------------------------- */

int ami_metrics_value(ami_metrics_t *m, const char *name, const char *const *labels, double *out)
{
    labelset_t ls;
    if (!m || !name || labels_parse(name, labels, &ls, NULL) < 0)
        return -1;
    struct series_key key = {name, &ls};
    const struct series *s = table_find(&m->series, series_hash(fnv_str(FNV_OFFSET, name), &ls),
                                        series_eq, &key);
    if (!s)
        return -1;
    double v = s->fam->kind == KIND_HISTOGRAM ? (double)s->hist->count
               : s->fam->kind == KIND_GAUGE   ? s->v.gauge.value
                                              : s->v.counter.value;
    if (out)
        *out = v;
    return 0;
}

uint64_t ami_metrics_refused(const ami_metrics_t *m)
{
    return m && m->refused ? (uint64_t)m->refused->value : 0;
}

size_t ami_metrics_series_count(const ami_metrics_t *m)
{
    return m ? m->nseries : 0;
}

size_t ami_metrics_max_series(const ami_metrics_t *m)
{
    return m ? m->max_series : 0;
}
