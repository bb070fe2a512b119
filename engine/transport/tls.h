/*
 * TLS on a non-blocking socket, with OpenSSL. Knows nothing of AMI or Lua.
 *
 * Two objects:
 *   - ami_tls_ctx_t: what one endpoint needs for every connection: the
 *     SSL_CTX (trusted CAs, our certificate and key), the name to verify,
 *     the handshake timeout, and the metrics of that endpoint. A client
 *     context belongs to one server (its host decides what name or IP the
 *     certificate must hold); a server context serves the simulator.
 *   - ami_tls_t: one TLS session on one connected socket. The caller owns
 *     the socket and the event loop; this object only says what it needs
 *     next: every call returns at once with DONE, WANT_READ or WANT_WRITE
 *     (wait for that readiness, then call the same function again),
 *     CLOSED or FAILED. Nothing here waits, sleeps or touches a loop.
 *
 * Verification (client, on unless no_verify): the chain must lead to a
 * certificate of ca_file, and the certificate must hold server_name (also
 * sent as SNI), or, when no server_name is given and the host is an IP
 * literal, that IP address as a subjectAltName. Failures are described in
 * an operator's words (ami_tls_error) and classified (ami_tls_reason) for
 * the metric ami_tls_handshake_failures_total{server_key,reason}; a
 * successful handshake is timed into ami_tls_handshake_seconds{server_key}.
 *
 * Writes follow OpenSSL's rule for non-blocking sockets: after WANT_READ or
 * WANT_WRITE from ami_tls_write, call it again with the same bytes at the
 * front (the buffer may have moved, and more bytes may follow them).
 * Socket writes use MSG_NOSIGNAL: a peer gone away is an error, never a
 * SIGPIPE.
 *
 * Certificate rotation: ami_tls_ctx_refresh re-reads the files when their
 * size, inode or modification time changed (a stat each, no read
 * otherwise); the transport calls it before every connection attempt, so
 * new files are used from the next reconnect on. A refresh that fails
 * keeps the previous, working context.
 *
 * Memory: contexts and sessions are the caller's, freed with their _free.
 * Options' strings are borrowed by the functions that take them, and owned
 * by a copy made with ami_tls_options_copy. ami_tls_live_objects counts
 * contexts and sessions not yet freed (tests prove reconnects leak none).
 *
 * Threads: a context and its sessions are used by one thread at a time
 * (the loop thread of their owner); different contexts may live on
 * different threads (the benchmark runs the simulator on its own).
 */
#ifndef AMI_TRANSPORT_TLS_H
#define AMI_TRANSPORT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ami/tls.h>

#include "obs/log.h"
#include "obs/metrics.h"
#include "util/err.h"

/* ami_tls_options_t and the AMI_TLS_DEFAULT_* values: <ami/tls.h>. */

/* Deep copy of the strings (dst's previous strings are not freed). -1 on ENOMEM. */
int ami_tls_options_copy(ami_tls_options_t *dst, const ami_tls_options_t *src);
void ami_tls_options_free(ami_tls_options_t *o);
bool ami_tls_options_equal(const ami_tls_options_t *a, const ami_tls_options_t *b);

/* Consistency without touching a file (a key without a certificate, a
 * missing CA with verification on, a bad name): -1 with AMI_E_CONFIG and a
 * message that starts with the option ("tls.ca_file ..."). */
int ami_tls_options_validate(const ami_tls_options_t *o, ami_err_t *err);

typedef struct ami_tls_ctx ami_tls_ctx_t;

/* A client context for one server: loads ca_file, cert_file and key_file
 * now. NULL with AMI_E_CONFIG and a message naming the file and what is
 * wrong with it (unreadable, no certificate in it, key does not match the
 * certificate, key protected by a passphrase...). metrics and log may be
 * NULL; server_key labels both. */
ami_tls_ctx_t *ami_tls_client_new(const ami_tls_options_t *o, const char *host, const char *server_key,
                                  ami_metrics_t *metrics, ami_logger_t *log, ami_err_t *err);

/* A server context (the simulator). */
typedef struct ami_tls_server_options {
    const char *cert_file;      /* PEM certificate (chain) */
    const char *key_file;       /* NULL: the key is in cert_file */
    const char *client_ca_file; /* set: every client must present a certificate signed by it */
    bool tls12_only;            /* tests: renegotiation exists up to TLS 1.2 only */
} ami_tls_server_options_t;

ami_tls_ctx_t *ami_tls_server_new(const ami_tls_server_options_t *o, ami_err_t *err);

void ami_tls_ctx_free(ami_tls_ctx_t *ctx);

/* Re-read the files if they changed since they were loaded (see above).
 * 0 when nothing changed or the new files loaded; -1 (old context kept)
 * with the reason. Client contexts only; a no-op for servers. */
int ami_tls_ctx_refresh(ami_tls_ctx_t *ctx, ami_err_t *err);

bool ami_tls_ctx_verifies(const ami_tls_ctx_t *ctx);
/* Handshakes completed with the context's current files, renegotiations included. */
uint64_t ami_tls_ctx_handshakes(const ami_tls_ctx_t *ctx);
uint32_t ami_tls_ctx_handshake_timeout_ms(const ami_tls_ctx_t *ctx);
const char *ami_tls_ctx_server_key(const ami_tls_ctx_t *ctx);
/* What the peer's certificate must hold ("pbx1.example.com", "IP 10.0.0.5"), "" for servers. */
const char *ami_tls_ctx_expected_name(const ami_tls_ctx_t *ctx);

typedef enum ami_tls_result {
    AMI_TLS_DONE = 0,   /* finished, or bytes moved */
    AMI_TLS_WANT_READ,  /* call again when the socket is readable */
    AMI_TLS_WANT_WRITE, /* call again when the socket is writable */
    AMI_TLS_CLOSED,     /* the peer ended the session (close_notify or EOF) */
    AMI_TLS_FAILED,     /* ami_tls_error says why; the session is unusable */
} ami_tls_result_t;

/* Why a handshake failed, for the metric's reason label and for tests. */
typedef enum ami_tls_reason {
    AMI_TLS_R_NONE = 0,
    AMI_TLS_R_UNKNOWN_CA,           /* the chain does not lead to ca_file */
    AMI_TLS_R_EXPIRED,
    AMI_TLS_R_NOT_YET_VALID,
    AMI_TLS_R_NAME_MISMATCH,        /* neither server_name nor the IP is in the certificate */
    AMI_TLS_R_BAD_CERTIFICATE,      /* any other verification failure */
    AMI_TLS_R_TIMEOUT,
    AMI_TLS_R_PEER_CLOSED,          /* EOF or close_notify before the handshake finished */
    AMI_TLS_R_NOT_TLS,              /* the peer answered in plain text (the plain AMI port?) */
    AMI_TLS_R_NO_CERTIFICATE,       /* a certificate was required and none was sent */
    AMI_TLS_R_CERTIFICATE_REFUSED,  /* the server refused our client certificate */
    AMI_TLS_R_PROTOCOL,             /* no common version or cipher */
    AMI_TLS_R_NETWORK,              /* a socket error */
    AMI_TLS_R_OTHER,
    AMI_TLS_R_COUNT
} ami_tls_reason_t;

const char *ami_tls_reason_name(ami_tls_reason_t r);

typedef struct ami_tls ami_tls_t;

/* Start a session on a connected non-blocking socket (borrowed: the caller
 * closes it after ami_tls_free). Uses the context's current files. */
ami_tls_t *ami_tls_new(ami_tls_ctx_t *ctx, int fd, ami_err_t *err);
/* Free the session; sends nothing (see ami_tls_close_notify). */
void ami_tls_free(ami_tls_t *s);

ami_tls_result_t ami_tls_handshake(ami_tls_t *s);
/* DONE with *got > 0 bytes of plaintext in buf. */
ami_tls_result_t ami_tls_read(ami_tls_t *s, void *buf, size_t len, size_t *got);
/* DONE with *put > 0 bytes taken from buf (at most one record's worth). */
ami_tls_result_t ami_tls_write(ami_tls_t *s, const void *buf, size_t len, size_t *put);
/* Plaintext already decrypted and waiting in the session: read it without
 * waiting for the socket. */
size_t ami_tls_pending(const ami_tls_t *s);
/* Whether the session holds input taken from the socket and not yet read
 * out (plaintext, or record bytes not yet decrypted): no readiness would
 * announce it. */
bool ami_tls_holds_input(const ami_tls_t *s);
/* One non-blocking attempt to send close_notify (only after a successful
 * handshake and no failure); the caller then closes the socket. */
void ami_tls_close_notify(ami_tls_t *s);
/* The handshake ran out of time (the caller's timer): counts it and sets the error. */
void ami_tls_handshake_timed_out(ami_tls_t *s, uint32_t after_ms);

/* After FAILED or CLOSED: what happened, for an operator. After CLOSED the
 * reason is NONE for a close_notify, PEER_CLOSED for a bare EOF. */
const char *ami_tls_error(const ami_tls_t *s);
ami_tls_reason_t ami_tls_reason(const ami_tls_t *s);
/* Servers: the name the client sent as SNI, "" if none. */
const char *ami_tls_sni(const ami_tls_t *s);
/* After the handshake: "TLSv1.3", "TLS_AES_256_GCM_SHA384". */
const char *ami_tls_version(const ami_tls_t *s);
const char *ami_tls_cipher(const ami_tls_t *s);

/* Sessions for servers only: ask the client for a new handshake (TLS 1.2
 * renegotiation, TLS 1.3 KeyUpdate with a requested answer). The exchange
 * happens inside the following reads and writes. */
int ami_tls_renegotiate(ami_tls_t *s);

/* Contexts plus sessions alive in the process. */
long ami_tls_live_objects(void);

#endif
