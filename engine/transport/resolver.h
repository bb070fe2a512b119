/*
 * Name resolution off the loop, for enforce_ip_endpoints = false only.
 *
 * getaddrinfo blocks for as long as DNS takes; it must never run on the loop.
 * ami_resolve_start runs it on a short-lived detached thread, which hands the
 * first address back to the loop through an ev_async; `done` then runs on the
 * loop thread. ami_resolve_cancel (loop thread, only before `done` has run:
 * the request is gone after that) guarantees `done` is never called; the
 * thread finishes its lookup and frees the request by itself.
 */
#ifndef AMI_TRANSPORT_RESOLVER_H
#define AMI_TRANSPORT_RESOLVER_H

#include <sys/socket.h>

#include "util/err.h"

struct ev_loop;

typedef struct ami_resolve ami_resolve_t;

/* error is NULL on success; ss holds the address with port 0. */
typedef void (*ami_resolve_done_fn)(void *ud, const struct sockaddr_storage *ss, socklen_t len,
                                    const char *error);

ami_resolve_t *ami_resolve_start(struct ev_loop *loop, const char *host, ami_resolve_done_fn done,
                                 void *ud, ami_err_t *err);
void ami_resolve_cancel(ami_resolve_t *r);

#endif
