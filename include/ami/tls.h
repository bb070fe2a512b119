/*
 * A server's TLS settings (AMI over TLS, Asterisk's tlsenable), part of
 * ami_server_options_t.
 *
 * Zero-initialised means "TLS off". Once enabled, verification is on unless
 * no_verify says otherwise: the server's certificate chain must lead to a
 * certificate of ca_file and the certificate must hold server_name (also
 * sent as SNI), or, with no server_name and an IP literal as the host, that
 * IP address as a subjectAltName. The files are PEM; they are read when the
 * server is added (a file that cannot be used fails ami_client_add_server
 * with a message naming it) and read again before a reconnect when they
 * changed on disk, so renewed certificates apply without a restart.
 *
 * The strings are borrowed for the duration of the call that takes the
 * options (the library keeps copies).
 */
#ifndef AMI_TLS_H
#define AMI_TLS_H

#include <stdbool.h>
#include <stdint.h>

#include <ami/export.h>

AMI_BEGIN_DECLS

#define AMI_TLS_DEFAULT_HANDSHAKE_TIMEOUT_MS 5000u
#define AMI_TLS_DEFAULT_PORT 5039u /* Asterisk's tlsbindaddr default port */

typedef struct ami_tls_options {
    bool enabled;
    bool no_verify;                /* insecure: accept any certificate */
    const char *ca_file;           /* the CA(s) that signed Asterisk's certificate */
    const char *server_name;       /* the name to verify and send as SNI; NULL: the host */
    const char *cert_file;         /* our client certificate (chain), optional */
    const char *key_file;          /* its key; NULL: the key is in cert_file */
    uint32_t handshake_timeout_ms; /* 0: AMI_TLS_DEFAULT_HANDSHAKE_TIMEOUT_MS */
} ami_tls_options_t;

AMI_END_DECLS

#endif
