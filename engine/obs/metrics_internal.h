/*
 * Private to obs/metrics*.c: the registry's structures, shared by
 * metrics.c (registration, lookup, read-back) and metrics_render.c (the
 * collectors and the text format). The registry owns every family, series
 * and histogram; families and series are never freed before
 * ami_metrics_free. Loop thread only.
 */
#ifndef AMI_OBS_METRICS_INTERNAL_H
#define AMI_OBS_METRICS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obs/metrics.h"

#define MAX_COLLECTORS 32

enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM };

struct ami_histogram {
    const double *bounds; /* the family's, or default_bounds for the discard */
    size_t nbounds;
    uint64_t count;
    double sum;
    uint64_t buckets[]; /* nbounds + 1 (the last is +Inf), not cumulative */
};

struct series;

/* One allocation: the struct, then its name, help and label names. */
struct family {
    struct family *next; /* registration order */
    struct series *first, *last;
    enum kind kind;
    size_t nlabels;
    const char *label_names[AMI_METRICS_MAX_LABELS];
    size_t nbounds;
    double bounds[AMI_METRICS_MAX_BUCKETS];
    const char *help;
    char name[];
};

/* One allocation: the struct, then its label values. */
struct series {
    struct series *next; /* registration order within the family */
    struct family *fam;
    union {
        ami_counter_t counter;
        ami_gauge_t gauge;
    } v;
    ami_histogram_t *hist;
    const char *values[AMI_METRICS_MAX_LABELS];
    char strings[];
};

/* Open addressing, linear probing; items are never removed. */
typedef struct table {
    void **items;
    uint64_t *hashes;
    size_t cap; /* a power of two */
    size_t n;
} table_t;

struct collector {
    ami_metrics_collector_fn fn;
    void *ud;
};

struct ami_metrics {
    size_t max_series;
    size_t nseries;
    table_t families; /* by name */
    table_t series;   /* by name, label names and values */
    struct family *first, *last;
    ami_counter_t *refused;
    ami_counter_t discard_counter;
    ami_gauge_t discard_gauge;
    ami_histogram_t *discard_hist;
    struct collector collectors[MAX_COLLECTORS];
    size_t ncollectors;
    size_t cursor; /* the collector running, so removal during a run skips none */
    bool collecting;
};

/* "counter", "gauge" or "histogram": the TYPE line's word (metrics.c). */
const char *metrics_kind_name(enum kind k);

#endif
