/*
 * The engine's metrics registry: counters, gauges and histograms with labels,
 * rendered in the Prometheus text exposition format (version 0.0.4).
 *
 * Registration (ami_metrics_counter/gauge/histogram) looks a series up by
 * name and label values, creating it the first time, and returns a stable
 * pointer. The hot path then updates that pointer directly: an increment is
 * one add, no lookup, no lock. Registration is idempotent: asking twice for
 * the same name and labels gives the same series.
 *
 * Bounded: the registry holds at most `max_series` series. Past that, or for
 * an invalid name, invalid label, or a name already registered with another
 * type or other label names, registration returns a shared discard series
 * (never NULL, so callers need no error path on the hot path), counts the
 * refusal in ami_metrics_refused() (exported as ami_metrics_series_refused_total)
 * and fills err if given.
 *
 * Labels are passed as a NULL-terminated array of key, value pairs:
 *   (const char *const[]){"server_key", "pbx1", NULL}
 * Label order at registration defines the family's label names.
 *
 * Thread-safety: none. All calls happen on the loop thread. Values that other
 * threads produce (log drops) are pulled in by collectors, which run just
 * before rendering.
 */
#ifndef AMI_OBS_METRICS_H
#define AMI_OBS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <ami/metrics.h>

#include "util/buf.h"
#include "util/err.h"

typedef struct ami_counter {
    double value;
} ami_counter_t;

typedef struct ami_gauge {
    double value;
} ami_gauge_t;

typedef struct ami_histogram ami_histogram_t;

#define AMI_METRICS_MAX_LABELS 6
#define AMI_METRICS_MAX_BUCKETS 32

/* ami_metrics_new, _free, _render_text, _value, _refused, _series_count,
 * _max_series: <ami/metrics.h>. */

ami_counter_t *ami_metrics_counter(ami_metrics_t *m, const char *name, const char *help,
                                   const char *const *labels, ami_err_t *err);
ami_gauge_t *ami_metrics_gauge(ami_metrics_t *m, const char *name, const char *help,
                               const char *const *labels, ami_err_t *err);
/* bounds: strictly increasing upper bounds, +Inf is implicit. NULL/0 uses
 * the default latency buckets in seconds (0.0005 .. 10). */
ami_histogram_t *ami_metrics_histogram(ami_metrics_t *m, const char *name, const char *help,
                                       const double *bounds, size_t nbounds,
                                       const char *const *labels, ami_err_t *err);

static inline void ami_counter_inc(ami_counter_t *c) { c->value += 1.0; }
static inline void ami_counter_add(ami_counter_t *c, double v) { if (v > 0) c->value += v; }
static inline void ami_gauge_set(ami_gauge_t *g, double v) { g->value = v; }
static inline void ami_gauge_add(ami_gauge_t *g, double v) { g->value += v; }
void ami_histogram_observe(ami_histogram_t *h, double v);

/* Read back (tests, /healthz, ami.servers()). */
double ami_histogram_count(const ami_histogram_t *h);
double ami_histogram_sum(const ami_histogram_t *h);

/* Collectors refresh gauges from outside state just before a render. */
typedef void (*ami_metrics_collector_fn)(void *ud, ami_metrics_t *m);
int ami_metrics_add_collector(ami_metrics_t *m, ami_metrics_collector_fn fn, void *ud);
void ami_metrics_remove_collector(ami_metrics_t *m, ami_metrics_collector_fn fn, void *ud);

/* Append the whole registry in text format 0.0.4 to out. 0, or -1 if out's
 * limit was reached (out then holds a truncated, unusable rendering). */
int ami_metrics_render(ami_metrics_t *m, ami_buf_t *out);

#endif
