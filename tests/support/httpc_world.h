/*
 * Helpers for tests of the HTTP client (engine/httpc) on a real loop: a
 * client with its own loop and metrics, aimed at a simulated web service
 * (engine/sim/sim_http.h) the test started; requests run to their answer
 * with a deadline; what an answer held, copied for assertions.
 *
 * Test support only (cmocka: a failure fails the running test); one thread.
 */
#ifndef AMI_TEST_HTTPC_WORLD_H
#define AMI_TEST_HTTPC_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "httpc/httpc.h"
#include "obs/metrics.h"
#include "sim/sim_http.h"

typedef struct hw_outcome {
    bool done;
    int calls;
    ami_httpc_kind_t kind;
    char msg[256];
    long status;
    char body[8192];           /* the first 8 KiB, NUL-terminated */
    size_t body_len;
    char headers[4096];        /* "name=value\n" per header, in order */
    size_t nheaders;
    char url[600];
} hw_outcome_t;

typedef struct hw {
    struct ev_loop *loop;
    ami_metrics_t *metrics;
    ami_httpc_t *h;
    ami_sim_http_t *srv;
    char base[64];             /* http://127.0.0.1:<srv's port> */
} hw_t;

hw_t *hw_new(const ami_httpc_config_t *cfg, ami_sim_http_t *srv);
void hw_free(hw_t *w);
ami_httpc_config_t hw_config(void);

/* A done callback filling the hw_outcome_t given as ud. */
void hw_on_done(void *ud, const ami_httpc_response_t *res);
bool hw_is_done(void *outcome);
/* harness predicate: the server (ud) has no connection open. */
bool hw_server_idle(void *srv);

void hw_url(hw_t *w, const char *path, char *out, size_t n);
ami_httpc_request_t hw_get(const char *url);
/* Start req and run the loop until it is answered (fails the test if not in 15 s). */
void hw_perform(hw_t *w, const ami_httpc_request_t *req, hw_outcome_t *o);
void hw_perform_path(hw_t *w, const char *path, hw_outcome_t *o);

/* A metric's value, 0 when absent. */
double hw_metric(hw_t *w, const char *name, const char *const *labels);
double hw_refused(hw_t *w, const char *reason);

/* The request is refused at once with this kind, a message holding text,
 * and one more refusal counted under reason; it never calls back. */
void hw_expect_refused_at_once(hw_t *w, const ami_httpc_request_t *req, ami_httpc_kind_t kind, const char *reason,
                               const char *text);
void hw_expect_error(hw_outcome_t *o, ami_httpc_kind_t kind, const char *text);

#endif
