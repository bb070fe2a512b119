/*
 * TLS for HTTP client tests: certificates made at test time with the
 * openssl command line (a test CA, a server certificate it signs for
 * 127.0.0.1, a second CA nobody trusts, a certificate for the wrong name),
 * and a real TLS web server on 127.0.0.1 (`openssl s_server -www`, a port
 * the kernel chooses) answering "HTTP/1.0 200 ok" to any GET.
 *
 * Everything lives in a temporary folder removed by https_certs_remove.
 * Each step has a deadline; a peer is a child process killed by
 * https_peer_stop (or proc_kill_all). Test support only; single-threaded.
 */
#ifndef AMI_TEST_HTTPS_PEER_H
#define AMI_TEST_HTTPS_PEER_H

#include <stdbool.h>
#include <stdint.h>

#include "proc.h"

typedef struct https_certs {
    char dir[256];
    char ca[300];           /* the test CA (PEM) */
    char other_ca[300];     /* a CA that signed nothing we serve */
    char cert[300], key[300];             /* 127.0.0.1, signed by ca */
    char wrong_cert[300], wrong_key[300]; /* wrong.example, signed by ca */
} https_certs_t;

/* false (with a message on stderr) if openssl failed. */
bool https_certs_make(https_certs_t *c);
void https_certs_remove(https_certs_t *c);

typedef struct https_peer {
    proc_t proc;
    uint16_t port;
} https_peer_t;

/* Serve with cert/key; true once it listens (port set). */
bool https_peer_start(https_peer_t *p, const https_certs_t *c, const char *cert, const char *key);
void https_peer_stop(https_peer_t *p);

#endif
