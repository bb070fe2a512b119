/*
 * Non-blocking TCP client on libev. Knows nothing of AMI or Lua.
 *
 * One ami_tcp_t is one outgoing connection slot, reusable: open, use, close,
 * open again (reconnects reuse the object). Everything is asynchronous:
 *   - ami_tcp_open never blocks. With enforce_ip (the default) the host must
 *     be an IPv4 or IPv6 literal; a hostname is refused at once with a clear
 *     error and no resolver function is called. With enforce_ip off, a
 *     hostname is resolved by a short-lived resolver thread (getaddrinfo) that
 *     hands the address back to the loop through ev_async; the loop never
 *     waits for DNS.
 *   - connect is non-blocking, bounded by connect_timeout_ms.
 *   - reads go straight into a buffer the owner provides (read_buffer), one
 *     chunk per wake-up, so one busy connection cannot starve the others:
 *     libev calls every ready watcher once per loop iteration.
 *   - writes are appended to a bounded buffer (the write high-water mark)
 *     and flushed once per loop iteration, before the loop polls; a partial
 *     write or EAGAIN waits for writability. Appends past the mark fail.
 *   - with a TLS context (options.tls), the connection is TLS: after the TCP
 *     connect comes the handshake, stepped by readiness and bounded by the
 *     context's handshake timeout; on_open follows it, so the owner sees the
 *     same plaintext stream as over plain TCP (reads still land in
 *     read_buffer, up to read_chunk bytes per wake-up). Reads that must
 *     write first and writes that must read first (renegotiation, key
 *     updates) wait for the readiness they need; nothing blocks. A close
 *     sends close_notify once if the socket takes it. Each attempt starts
 *     with ami_tls_ctx_refresh (new certificate files apply at reconnects)
 *     and, when verification is off, logs a WARNING.
 *
 * Callbacks run on the loop thread. on_close reports closes the transport
 * noticed itself (connect failure or timeout, EOF, socket error); it is not
 * called for ami_tcp_close. Callbacks may call ami_tcp_close and
 * ami_tcp_open and append to the write buffer; they must not call
 * ami_tcp_free.
 */
#ifndef AMI_TRANSPORT_TCP_H
#define AMI_TRANSPORT_TCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "obs/log.h"
#include "transport/tls.h"
#include "util/buf.h"
#include "util/err.h"

struct ev_loop;

typedef enum ami_tcp_state {
    AMI_TCP_IDLE = 0,
    AMI_TCP_RESOLVING,
    AMI_TCP_CONNECTING,
    AMI_TCP_HANDSHAKE, /* TLS only */
    AMI_TCP_OPEN,
} ami_tcp_state_t;

typedef struct ami_tcp_callbacks {
    void (*on_open)(void *ud);
    /* Where to put up to `want` bytes; *got says how many fit (none fails
     * the connection, unless the owner paused reading in it: then nothing
     * is read this time). */
    char *(*read_buffer)(void *ud, size_t want, size_t *got);
    /* n bytes were read into the last read_buffer. */
    void (*on_read)(void *ud, size_t n);
    void (*on_close)(void *ud, ami_status_t why, const char *reason);
} ami_tcp_callbacks_t;

typedef struct ami_tcp_options {
    bool enforce_ip;             /* default true */
    uint32_t connect_timeout_ms; /* default 5000 */
    size_t read_chunk;           /* bytes per read; default 64 KiB */
    size_t write_hwm;            /* write buffer bound; default 1 MiB */
    ami_tls_ctx_t *tls;          /* borrowed; must outlive the transport. NULL: plain TCP */
} ami_tcp_options_t;

void ami_tcp_options_default(ami_tcp_options_t *opt);

typedef struct ami_tcp ami_tcp_t;

ami_tcp_t *ami_tcp_new(struct ev_loop *loop, const ami_tcp_options_t *opt,
                       const ami_tcp_callbacks_t *cb, void *ud, ami_logger_t *log);
void ami_tcp_free(ami_tcp_t *t);

/* Is host an IPv4/IPv6 literal ("10.0.0.5", "::1", "[::1]")? No resolver call. */
bool ami_tcp_is_ip_literal(const char *host);

/* Start connecting. -1 at once with err, and no callback, when it cannot
 * start: a hostname while enforce_ip is on (no resolver call either), port
 * 0, a busy slot, socket() or connect() failing on the spot. Otherwise 0,
 * and exactly one of on_open or on_close follows (unless ami_tcp_close
 * comes first): a refused connection, a timeout or a failed lookup arrive
 * through on_close. */
int ami_tcp_open(ami_tcp_t *t, const char *host, uint16_t port, ami_err_t *err);

/* Close now: stop watchers, close the socket, drop unsent bytes. Idempotent. */
void ami_tcp_close(ami_tcp_t *t);

/* The write buffer, for serialising in place (its limit is the high-water
 * mark: an append past it fails, which is the caller's backpressure); call
 * ami_tcp_schedule_flush after appending. */
ami_buf_t *ami_tcp_wbuf(ami_tcp_t *t);
void ami_tcp_schedule_flush(ami_tcp_t *t);

/* The owner has input left to handle, or no time for more: read nothing
 * until it resumes (readiness is ignored meanwhile, so the kernel holds
 * back the peer; the owner must keep the loop from blocking, as its drain
 * does). Resuming reads at once, on the caller's stack, as a wake-up would
 * (over TLS plaintext the session already decrypted may be waiting, which
 * no readiness would announce): read_buffer and on_read may run, and close,
 * inside it. Both are no-ops when not open; a close ends a pause. Pausing
 * is callable from read_buffer and on_read; resuming is not. */
void ami_tcp_pause_reading(ami_tcp_t *t);
void ami_tcp_resume_reading(ami_tcp_t *t);

/* From read_buffer only: read nothing in this wake-up and leave the socket
 * watched, so its readiness brings the next wake-up in the next iteration
 * (no pause, nothing for the owner to do meanwhile). Refused (false) when
 * that readiness would not come: not open, or a TLS session holding input
 * it took from the socket; the owner then pauses instead. */
bool ami_tcp_skip_read(ami_tcp_t *t);

ami_tcp_state_t ami_tcp_state(const ami_tcp_t *t);
/* "127.0.0.1:5038" of the current peer, or "" */
const char *ami_tcp_peer(const ami_tcp_t *t);

typedef struct ami_tcp_stats {
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t reads;
    uint64_t writes;
    uint64_t connects;
    uint64_t resolver_calls; /* lookups started (enforce_ip off only) */
    uint64_t paused_wakeups; /* readiness reported while paused, and ignored */
    uint64_t reads_skipped;  /* wake-ups the owner let pass: ami_tcp_skip_read */
} ami_tcp_stats_t;

const ami_tcp_stats_t *ami_tcp_stats(const ami_tcp_t *t);

#endif
