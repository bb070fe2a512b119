/*
 * The library's metrics registry, as an embedder reads it.
 *
 * The client counts what happens on every server (events, actions and their
 * latency, reconnects, heartbeat failures, dropped events, bytes) as
 * Prometheus series labelled with the server's key. Give it a registry
 * (ami_client_config_t.metrics) or let it create its own
 * (ami_client_metrics), then render the registry for your /metrics
 * endpoint, or read one series.
 *
 * Bounded: a registry holds at most max_series series; past that new
 * series are refused and counted (ami_metrics_refused, also exported as
 * ami_metrics_series_refused_total), never grown.
 *
 * Memory: a registry you create is yours (free it after every client that
 * uses it); the client's own is freed with the client.
 * Threads: none; use a registry from the loop thread only.
 */
#ifndef AMI_METRICS_H
#define AMI_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <ami/export.h>

AMI_BEGIN_DECLS

typedef struct ami_metrics ami_metrics_t;

/* max_series 0 takes the default (10000). NULL out of memory. */
AMI_API ami_metrics_t *ami_metrics_new(size_t max_series);
AMI_API void ami_metrics_free(ami_metrics_t *m);

/* The whole registry in the Prometheus text format 0.0.4, like snprintf:
 * writes at most cap bytes into dst (NUL-terminated when cap > 0) and
 * returns the length of the whole rendering, so a result >= cap means dst
 * was too small (call again with result + 1 bytes). SIZE_MAX when memory
 * ran out (dst then holds ""). */
AMI_API size_t ami_metrics_render_text(ami_metrics_t *m, char *dst, size_t cap);

/* The current value of one series, by name and label pairs (a
 * NULL-terminated array of key, value; NULL for none):
 *   ami_metrics_value(m, "ami_events_received_total",
 *                     (const char *const[]){"server_key", "pbx1", NULL}, &v);
 * 0, or -1 if there is no such series. */
AMI_API int ami_metrics_value(ami_metrics_t *m, const char *name, const char *const *labels,
                              double *out);

AMI_API uint64_t ami_metrics_refused(const ami_metrics_t *m);
AMI_API size_t ami_metrics_series_count(const ami_metrics_t *m);
AMI_API size_t ami_metrics_max_series(const ami_metrics_t *m);

AMI_END_DECLS

#endif
