/*
 * Private to the TLS files of transport/: the context's structure, shared
 * by tls_ctx.c (options, files, contexts, metrics) and tls.c (sessions).
 * A context owns its SSL_CTX, its BIO method and its copies of the
 * options; sessions hold a reference on the SSL_CTX they started with, so
 * a refresh may replace it under them.
 */
#ifndef AMI_TRANSPORT_TLS_INTERNAL_H
#define AMI_TRANSPORT_TLS_INTERNAL_H

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <time.h>

#include "transport/tls.h"

enum { TLS_FILE_CA = 0, TLS_FILE_CERT, TLS_FILE_KEY, TLS_FILE_COUNT };

/* What a file looked like when it was loaded; a difference means "reload". */
typedef struct tls_file_stamp {
    bool present;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} tls_file_stamp_t;

struct ami_tls_ctx {
    bool server;
    SSL_CTX *ssl_ctx;
    BIO_METHOD *bio;          /* socket I/O with MSG_NOSIGNAL, and EOF/errno capture */
    ami_tls_options_t opt;    /* client: owned copy */
    char *host;               /* client: the endpoint, for the expected name */
    char *sni;                /* client: the name sent as SNI, NULL for IP targets */
    char expected[200];       /* "pbx1.example.com" or "IP 10.0.0.5" */
    char server_key[64];
    tls_file_stamp_t stamps[TLS_FILE_COUNT];
    ami_metrics_t *metrics;
    ami_logger_t *log;
    ami_counter_t *failures[AMI_TLS_R_COUNT]; /* registered on first use */
    ami_histogram_t *handshake_seconds;
};

extern atomic_long ami_tls_live;

/* tls.c: the BIO method of a context's sessions. */
BIO_METHOD *tls_bio_method_new(void);
/* tls.c: the verify callback of every context (records the first failure in the session). */
int tls_verify_cb(int ok, X509_STORE_CTX *store);
/* tls_ctx.c: count one handshake failure of this reason. */
void tls_ctx_count_failure(ami_tls_ctx_t *ctx, ami_tls_reason_t r);

#endif
