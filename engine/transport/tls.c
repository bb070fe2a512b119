/*
 * TLS sessions (see tls.h): one SSL on a caller's non-blocking socket,
 * stepped by the caller's readiness; the socket BIO that never raises
 * SIGPIPE; and turning OpenSSL's failures into an operator's words.
 *
 * The OpenSSL error queue is per thread and shared with anything else that
 * uses OpenSSL on the thread, so it is cleared before every SSL call and
 * read (then cleared) right after a failure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "transport/tls_internal.h"
#include "util/alloc.h"
#include "util/clock.h"

struct ami_tls {
    ami_tls_ctx_t *ctx;
    SSL *ssl;
    int fd;
    bool handshake_done;
    bool failed;         /* fatal: no close_notify, no more I/O */
    bool app_data_seen;
    bool io_eof;         /* the socket read returned 0 */
    int io_errno;        /* the last socket error, 0 if none */
    int64_t started_ns;
    ami_tls_reason_t reason;
    /* the first certificate verification failure, captured by the verify callback */
    int verify_err;
    int verify_depth;
    char subject[72], issuer[72], not_before[32], not_after[32], sans[72];
    char error[AMI_ERR_MSG_MAX];
};

/* ---- the socket BIO ---------------------------------------------------------------- */

static int bio_write(BIO *b, const char *data, size_t len, size_t *written)
{
    ami_tls_t *s = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = send(s->fd, data, len, MSG_NOSIGNAL);
        if (n >= 0) {
            *written = (size_t)n;
            return 1;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_write(b);
        else
            s->io_errno = errno;
        return 0;
    }
}

static int bio_read(BIO *b, char *buf, size_t len, size_t *got)
{
    ami_tls_t *s = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = recv(s->fd, buf, len, 0);
        if (n > 0) {
            *got = (size_t)n;
            return 1;
        }
        if (n == 0) {
            s->io_eof = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_read(b);
        else
            s->io_errno = errno;
        return 0;
    }
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    ami_tls_t *s = BIO_get_data(b);
    if (cmd == BIO_CTRL_FLUSH)
        return 1;
    if (cmd == BIO_CTRL_EOF)
        return s && s->io_eof;
    return 0;
}

BIO_METHOD *tls_bio_method_new(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "ami socket");
    if (m && (!BIO_meth_set_write_ex(m, bio_write) || !BIO_meth_set_read_ex(m, bio_read) ||
              !BIO_meth_set_ctrl(m, bio_ctrl))) {
        BIO_meth_free(m);
        m = NULL;
    }
    return m;
}

/* ---- certificate details for messages ------------------------------------------------ */

/* Certificate text is the peer's: keep it printable before it reaches a log. */
static void printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f || *s == '"')
            *s = '?';
}

static void name_text(const X509_NAME *name, char *out, size_t size)
{
    out[0] = '\0';
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return;
    if (name && X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(b, out, (int)size - 1);
        out[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    printable(out);
}

static void time_text(const ASN1_TIME *t, char *out, size_t size)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1 || strftime(out, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(out, size, "?");
}

static void sans_text(X509 *cert, char *out, size_t size)
{
    out[0] = '\0';
    GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    size_t used = 0;
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        char one[64] = "";
        if (g->type == GEN_DNS) {
            snprintf(one, sizeof one, "DNS:%.56s", (const char *)ASN1_STRING_get0_data(g->d.dNSName));
        } else if (g->type == GEN_IPADD) {
            char ip[INET6_ADDRSTRLEN] = "?";
            int len = ASN1_STRING_length(g->d.iPAddress);
            if (len == 4 || len == 16)
                inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(g->d.iPAddress), ip, sizeof ip);
            snprintf(one, sizeof one, "IP:%s", ip);
        }
        if (one[0] && used + strlen(one) + 2 < size)
            used += (size_t)snprintf(out + used, size - used, "%s%s", used ? ", " : "", one);
    }
    GENERAL_NAMES_free(gens);
    printable(out);
}

int tls_verify_cb(int ok, X509_STORE_CTX *store)
{
    if (ok)
        return 1;
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    ami_tls_t *s = ssl ? SSL_get_app_data(ssl) : NULL;
    if (s && !s->verify_err) {
        s->verify_err = X509_STORE_CTX_get_error(store);
        s->verify_depth = X509_STORE_CTX_get_error_depth(store);
        X509 *cert = X509_STORE_CTX_get_current_cert(store);
        if (cert) {
            name_text(X509_get_subject_name(cert), s->subject, sizeof s->subject);
            name_text(X509_get_issuer_name(cert), s->issuer, sizeof s->issuer);
            time_text(X509_get0_notBefore(cert), s->not_before, sizeof s->not_before);
            time_text(X509_get0_notAfter(cert), s->not_after, sizeof s->not_after);
            sans_text(cert, s->sans, sizeof s->sans);
        }
    }
    return 0;
}

/* ---- failures ------------------------------------------------------------------------- */

static const char *peer_word(const ami_tls_t *s)
{
    return s->ctx->server ? "the client" : "the server";
}

/* Handshake failures are counted once; so are alerts that end a session
 * before it carried any data (TLS 1.3 refuses client certificates after
 * the client's side of the handshake is done). */
static void count(ami_tls_t *s)
{
    if (!s->handshake_done || !s->app_data_seen)
        tls_ctx_count_failure(s->ctx, s->reason);
}

static ami_tls_result_t fail(ami_tls_t *s, ami_tls_reason_t r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static ami_tls_result_t fail(ami_tls_t *s, ami_tls_reason_t r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->error, sizeof s->error, fmt, ap);
    va_end(ap);
    s->failed = true;
    s->reason = r;
    count(s);
    ERR_clear_error();
    return AMI_TLS_FAILED;
}

static bool unknown_ca_error(int v)
{
    return v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT || v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
           v == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT || v == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
           v == X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE || v == X509_V_ERR_CERT_UNTRUSTED;
}

static ami_tls_result_t fail_verify(ami_tls_t *s)
{
    int v = s->verify_err;
    char which[64];
    if (s->verify_depth == 0)
        snprintf(which, sizeof which, "%s's certificate", peer_word(s));
    else
        snprintf(which, sizeof which, "the CA certificate at depth %d of %s's chain", s->verify_depth,
                 peer_word(s));
    if (v == X509_V_ERR_CERT_HAS_EXPIRED)
        return fail(s, AMI_TLS_R_EXPIRED, "certificate expired: %s expired on %s (subject \"%s\"); renew it",
                    which, s->not_after, s->subject);
    if (v == X509_V_ERR_CERT_NOT_YET_VALID)
        return fail(s, AMI_TLS_R_NOT_YET_VALID,
                    "certificate not yet valid: %s is valid from %s; check both hosts' clocks", which,
                    s->not_before);
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
        return fail(s, AMI_TLS_R_NAME_MISMATCH,
                    "name mismatch: %s is not for %s (it holds %s); set tls.server_name to a name it holds, "
                    "or reissue it",
                    which, s->ctx->expected, s->sans[0] ? s->sans : s->subject);
    if (unknown_ca_error(v))
        return fail(s, AMI_TLS_R_UNKNOWN_CA,
                    "unknown CA: %s (issuer \"%s\") is not signed by a CA in tls.ca_file; add the CA that "
                    "issued it",
                    which, s->issuer);
    return fail(s, AMI_TLS_R_BAD_CERTIFICATE, "certificate refused: %s: %s (subject \"%s\")", which,
                X509_verify_cert_error_string(v), s->subject);
}

/* The most telling SSL-library reason in the error queue, or 0. */
static int ssl_reason(unsigned long *first)
{
    int found = 0;
    unsigned long code;
    *first = 0;
    while ((code = ERR_get_error()) != 0) {
        if (!*first)
            *first = code;
        if (!found && ERR_GET_LIB(code) == ERR_LIB_SSL)
            found = ERR_GET_REASON(code);
    }
    return found;
}

static ami_tls_result_t fail_alert(ami_tls_t *s, int reason, unsigned long first)
{
    const char *text = ERR_reason_error_string(first);
    text = text ? text : "no details";
    switch (reason) {
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
        return fail(s, AMI_TLS_R_NOT_TLS,
                    "%s does not speak TLS on this port (%s): is it the plain AMI port? Asterisk serves TLS "
                    "on tlsbindaddr, port %u by default",
                    peer_word(s), text, AMI_TLS_DEFAULT_PORT);
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
        if (s->ctx->server)
            return fail(s, AMI_TLS_R_NO_CERTIFICATE, "no certificate: the client sent none");
        return fail(s, AMI_TLS_R_NO_CERTIFICATE,
                    "no certificate: the server requires a client certificate; set tls.cert_file and "
                    "tls.key_file");
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
        return fail(s, AMI_TLS_R_CERTIFICATE_REFUSED,
                    "certificate refused: %s refused our certificate (%s); check that it trusts the CA "
                    "that issued %s",
                    peer_word(s), text, s->ctx->server ? "the server's certificate" : "tls.cert_file");
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
        return fail(s, AMI_TLS_R_PROTOCOL,
                    "%s refused the handshake (%s): it may require a client certificate (tls.cert_file) "
                    "or share no cipher with us",
                    peer_word(s), text);
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_TLSV1_ALERT_INSUFFICIENT_SECURITY:
    case SSL_R_VERSION_TOO_LOW:
        return fail(s, AMI_TLS_R_PROTOCOL,
                    "no TLS version or cipher in common with %s (%s); the engine speaks TLS 1.2 and 1.3",
                    peer_word(s), text);
    default:
        return fail(s, AMI_TLS_R_OTHER, "TLS error: %s", text);
    }
}

/* The peer went away: during the handshake a failure, after it an ordinary close. */
static ami_tls_result_t peer_gone(ami_tls_t *s, bool notified)
{
    if (!s->handshake_done)
        return fail(s, AMI_TLS_R_PEER_CLOSED,
                    "%s closed the connection during the TLS handshake (does it serve TLS on this port? "
                    "Asterisk: tlsenable = yes)",
                    peer_word(s));
    snprintf(s->error, sizeof s->error, "%s closed the TLS session%s", peer_word(s),
             notified ? " (close_notify)" : " without close_notify");
    s->failed = !notified;
    s->reason = notified ? AMI_TLS_R_NONE : AMI_TLS_R_PEER_CLOSED;
    ERR_clear_error();
    return AMI_TLS_CLOSED;
}

/* What an SSL call that returned rc <= 0 means. */
static ami_tls_result_t settle(ami_tls_t *s, int rc)
{
    int e = SSL_get_error(s->ssl, rc);
    if (e == SSL_ERROR_WANT_READ)
        return AMI_TLS_WANT_READ;
    if (e == SSL_ERROR_WANT_WRITE)
        return AMI_TLS_WANT_WRITE;
    if (e == SSL_ERROR_ZERO_RETURN)
        return peer_gone(s, true);
    unsigned long first;
    int reason = ssl_reason(&first);
    if (s->verify_err && !s->handshake_done)
        return fail_verify(s);
    if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING || (s->io_eof && reason == 0))
        return peer_gone(s, false);
    if (e == SSL_ERROR_SSL && reason)
        return fail_alert(s, reason, first);
    bool reset = s->io_errno == ECONNRESET || s->io_errno == EPIPE || s->io_errno == ECONNABORTED;
    if (reset && !s->handshake_done)
        return peer_gone(s, false); /* it closed with our ClientHello unread: a reset */
    if (s->io_errno)
        return fail(s, AMI_TLS_R_NETWORK, "socket error: %s", strerror(s->io_errno));
    return fail(s, AMI_TLS_R_OTHER, "TLS error: %s",
                first && ERR_reason_error_string(first) ? ERR_reason_error_string(first) : "no details");
}

/* ---- sessions ------------------------------------------------------------------------------ */

ami_tls_t *ami_tls_new(ami_tls_ctx_t *ctx, int fd, ami_err_t *err)
{
    ami_tls_t *s = ami_calloc(1, sizeof *s);
    BIO *bio = NULL;
    ERR_clear_error();
    if (s)
        s->ssl = SSL_new(ctx->ssl_ctx);
    if (s && s->ssl)
        bio = BIO_new(ctx->bio);
    if (!bio) {
        if (s)
            SSL_free(s->ssl);
        ami_free(s);
        ami_err_set(err, AMI_E_NOMEM, "cannot start a TLS session: out of memory");
        ERR_clear_error();
        return NULL;
    }
    s->ctx = ctx;
    s->fd = fd;
    BIO_set_data(bio, s);
    BIO_set_init(bio, 1);
    SSL_set_bio(s->ssl, bio, bio);
    SSL_set_app_data(s->ssl, s);
    if (ctx->server) {
        SSL_set_accept_state(s->ssl);
    } else {
        SSL_set_connect_state(s->ssl);
        if (ctx->sni)
            SSL_set_tlsext_host_name(s->ssl, ctx->sni);
    }
    s->started_ns = ami_now_ns();
    atomic_fetch_add_explicit(&ami_tls_live, 1, memory_order_relaxed);
    return s;
}

void ami_tls_free(ami_tls_t *s)
{
    if (!s)
        return;
    SSL_free(s->ssl); /* frees the BIO too */
    ami_free(s);
    atomic_fetch_sub_explicit(&ami_tls_live, 1, memory_order_relaxed);
}

ami_tls_result_t ami_tls_handshake(ami_tls_t *s)
{
    if (s->failed)
        return AMI_TLS_FAILED;
    if (s->handshake_done)
        return AMI_TLS_DONE;
    ERR_clear_error();
    int rc = SSL_do_handshake(s->ssl);
    if (rc != 1)
        return settle(s, rc);
    s->handshake_done = true;
    if (s->ctx->handshake_seconds)
        ami_histogram_observe(s->ctx->handshake_seconds, (double)(ami_now_ns() - s->started_ns) / 1e9);
    return AMI_TLS_DONE;
}

ami_tls_result_t ami_tls_read(ami_tls_t *s, void *buf, size_t len, size_t *got)
{
    *got = 0;
    if (s->failed)
        return AMI_TLS_FAILED;
    ERR_clear_error();
    size_t n = 0;
    int rc = SSL_read_ex(s->ssl, buf, len, &n);
    if (rc != 1)
        return settle(s, rc);
    s->app_data_seen = true;
    *got = n;
    return AMI_TLS_DONE;
}

ami_tls_result_t ami_tls_write(ami_tls_t *s, const void *buf, size_t len, size_t *put)
{
    *put = 0;
    if (s->failed)
        return AMI_TLS_FAILED;
    ERR_clear_error();
    size_t n = 0;
    int rc = SSL_write_ex(s->ssl, buf, len, &n);
    if (rc != 1)
        return settle(s, rc);
    *put = n;
    return AMI_TLS_DONE;
}

size_t ami_tls_pending(const ami_tls_t *s)
{
    int n = s->failed ? 0 : SSL_pending(s->ssl);
    return n > 0 ? (size_t)n : 0;
}

bool ami_tls_holds_input(const ami_tls_t *s)
{
    return !s->failed && SSL_has_pending(s->ssl) == 1;
}

void ami_tls_close_notify(ami_tls_t *s)
{
    if (!s || !s->handshake_done || s->failed)
        return;
    ERR_clear_error();
    SSL_shutdown(s->ssl); /* one try: sends our close_notify if the socket takes it */
    ERR_clear_error();
}

void ami_tls_handshake_timed_out(ami_tls_t *s, uint32_t after_ms)
{
    if (s->failed)
        return;
    fail(s, AMI_TLS_R_TIMEOUT,
         "timed out after %u ms: %s accepted the TCP connection but did not complete the TLS handshake",
         after_ms, peer_word(s));
}

int ami_tls_renegotiate(ami_tls_t *s)
{
    if (!s->ctx->server || !s->handshake_done || s->failed)
        return -1;
    ERR_clear_error();
    int ok = SSL_version(s->ssl) >= TLS1_3_VERSION ? SSL_key_update(s->ssl, SSL_KEY_UPDATE_REQUESTED)
                                                    : SSL_renegotiate(s->ssl);
    if (ok == 1)
        SSL_do_handshake(s->ssl); /* sends the request now when the socket takes it */
    ERR_clear_error();
    return ok == 1 ? 0 : -1;
}

const char *ami_tls_error(const ami_tls_t *s)
{
    return s->error;
}

ami_tls_reason_t ami_tls_reason(const ami_tls_t *s)
{
    return s->reason;
}

const char *ami_tls_version(const ami_tls_t *s)
{
    return SSL_get_version(s->ssl);
}

const char *ami_tls_sni(const ami_tls_t *s)
{
    const char *n = SSL_get_servername(s->ssl, TLSEXT_NAMETYPE_host_name);
    return n ? n : "";
}

const char *ami_tls_cipher(const ami_tls_t *s)
{
    const char *c = SSL_get_cipher_name(s->ssl);
    return c ? c : "";
}
