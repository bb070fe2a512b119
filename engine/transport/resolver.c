#include "transport/resolver.h"

#include <ev.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "util/alloc.h"

struct ami_resolve {
    struct ev_loop *loop;
    ev_async wake;
    pthread_mutex_t lock;
    bool cancelled;        /* guarded by lock */
    atomic_int refs;       /* the loop side and the thread side */
    ami_resolve_done_fn done;
    void *ud;
    char host[256];
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char error[AMI_ERR_MSG_MAX];
    bool failed;
};

static void unref(ami_resolve_t *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1) {
        pthread_mutex_destroy(&r->lock);
        ami_free(r);
    }
}

static void lookup(ami_resolve_t *r)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(r->host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(r->error, sizeof r->error, "cannot resolve host \"%.120s\": %.80s", r->host,
                 rc ? gai_strerror(rc) : "no address");
        r->failed = true;
    } else {
        memcpy(&r->addr, res->ai_addr, res->ai_addrlen);
        r->addr_len = res->ai_addrlen;
    }
    if (res)
        freeaddrinfo(res);
}

static void *resolver_thread(void *arg)
{
    ami_resolve_t *r = arg;
    lookup(r);
    pthread_mutex_lock(&r->lock);
    if (!r->cancelled)
        ev_async_send(r->loop, &r->wake);
    pthread_mutex_unlock(&r->lock);
    unref(r);
    return NULL;
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)revents;
    ami_resolve_t *r = w->data;
    ev_async_stop(loop, w);
    ami_resolve_done_fn done = r->done;
    void *ud = r->ud;
    bool failed = r->failed;
    struct sockaddr_storage addr = r->addr;
    socklen_t len = r->addr_len;
    char error[AMI_ERR_MSG_MAX];
    memcpy(error, r->error, sizeof error);
    unref(r);
    done(ud, failed ? NULL : &addr, len, failed ? error : NULL);
}

ami_resolve_t *ami_resolve_start(struct ev_loop *loop, const char *host, ami_resolve_done_fn done,
                                 void *ud, ami_err_t *err)
{
    ami_resolve_t *r = ami_calloc(1, sizeof *r);
    if (!r) {
        ami_err_set(err, AMI_E_NOMEM, "out of memory starting a DNS lookup");
        return NULL;
    }
    r->loop = loop;
    r->done = done;
    r->ud = ud;
    snprintf(r->host, sizeof r->host, "%s", host);
    pthread_mutex_init(&r->lock, NULL);
    atomic_init(&r->refs, 2);
    ev_async_init(&r->wake, on_wake);
    r->wake.data = r;
    ev_async_start(loop, &r->wake);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t tid;
    int rc = pthread_create(&tid, &attr, resolver_thread, r);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        ev_async_stop(loop, &r->wake);
        pthread_mutex_destroy(&r->lock);
        ami_free(r);
        ami_err_set(err, AMI_E_IO, "cannot start a resolver thread: %s", strerror(rc));
        return NULL;
    }
    return r;
}

void ami_resolve_cancel(ami_resolve_t *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    r->cancelled = true; /* the thread must not touch the loop any more */
    pthread_mutex_unlock(&r->lock);
    ev_async_stop(r->loop, &r->wake); /* also drops a wake-up already sent */
    unref(r);
}
