/*
 * TLS contexts (see tls.h): options, loading the CA, certificate and key
 * files with errors an operator can act on, what the peer's certificate
 * must hold, reloading changed files, and the handshake metrics.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transport/tls_internal.h"
#include "util/alloc.h"

atomic_long ami_tls_live;

static const char *const reason_names[AMI_TLS_R_COUNT] = {
    "none",     "unknown_ca", "expired", "not_yet_valid", "name_mismatch",          "bad_certificate",
    "timeout",  "peer_closed", "not_tls", "no_certificate", "certificate_refused", "protocol",
    "network",  "other",
};

const char *ami_tls_reason_name(ami_tls_reason_t r)
{
    return (unsigned)r < AMI_TLS_R_COUNT ? reason_names[r] : "other";
}

long ami_tls_live_objects(void)
{
    return atomic_load_explicit(&ami_tls_live, memory_order_relaxed);
}

/* ---- options -------------------------------------------------------------------- */

static bool dup_opt(const char **dst, const char *src)
{
    *dst = src ? ami_strdup(src) : NULL;
    return !src || *dst;
}

int ami_tls_options_copy(ami_tls_options_t *dst, const ami_tls_options_t *src)
{
    *dst = *src;
    bool ok = dup_opt(&dst->ca_file, src->ca_file);
    ok = dup_opt(&dst->server_name, src->server_name) && ok;
    ok = dup_opt(&dst->cert_file, src->cert_file) && ok;
    ok = dup_opt(&dst->key_file, src->key_file) && ok;
    return ok ? 0 : -1;
}

void ami_tls_options_free(ami_tls_options_t *o)
{
    ami_free((char *)o->ca_file);
    ami_free((char *)o->server_name);
    ami_free((char *)o->cert_file);
    ami_free((char *)o->key_file);
    o->ca_file = o->server_name = o->cert_file = o->key_file = NULL;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool ami_tls_options_equal(const ami_tls_options_t *a, const ami_tls_options_t *b)
{
    if (!a->enabled && !b->enabled)
        return true;
    return a->enabled == b->enabled && a->no_verify == b->no_verify &&
           a->handshake_timeout_ms == b->handshake_timeout_ms && same_str(a->ca_file, b->ca_file) &&
           same_str(a->server_name, b->server_name) && same_str(a->cert_file, b->cert_file) &&
           same_str(a->key_file, b->key_file);
}

/* A DNS name or an IP literal: printable, no spaces, at most 253 bytes. */
static bool plausible_name(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 253)
        return false;
    for (const char *p = n; *p; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f || *p == '/' || *p == '\\')
            return false;
    return true;
}

int ami_tls_options_validate(const ami_tls_options_t *o, ami_err_t *err)
{
    if (!o->enabled)
        return 0;
    if (!o->no_verify && (!o->ca_file || !*o->ca_file))
        return ami_err_set(err, AMI_E_CONFIG,
                           "tls.ca_file is missing; give the CA certificate (PEM) that signed Asterisk's "
                           "certificate, or (insecure) set tls.verify = false");
    if (o->key_file && !o->cert_file)
        return ami_err_set(err, AMI_E_CONFIG,
                           "tls.key_file is set without tls.cert_file; a client key needs its certificate");
    if (o->server_name && !plausible_name(o->server_name))
        return ami_err_set(err, AMI_E_CONFIG,
                           "tls.server_name \"%.64s\" is not a host name; give the DNS name (or IP) that "
                           "Asterisk's certificate holds",
                           o->server_name);
    if (o->handshake_timeout_ms > 600000)
        return ami_err_set(err, AMI_E_CONFIG, "tls.handshake_timeout_ms must be at most 600000");
    return 0;
}

/* ---- files -------------------------------------------------------------------- */

static void stamp_of(const char *path, tls_file_stamp_t *st)
{
    struct stat sb;
    memset(st, 0, sizeof *st);
    if (!path || stat(path, &sb) != 0)
        return;
    st->present = true;
    st->dev = sb.st_dev;
    st->ino = sb.st_ino;
    st->size = sb.st_size;
    st->mtime = sb.st_mtim;
}

static bool stamp_equal(const tls_file_stamp_t *a, const tls_file_stamp_t *b)
{
    return a->present == b->present && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/* Readable by this process? The error names the option, the path and the errno. */
static int check_readable(const char *what, const char *path, ami_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ami_err_set(err, AMI_E_CONFIG,
                           "%s \"%.120s\": cannot read it: %s; check the path and that the engine's user "
                           "may read it",
                           what, path, strerror(errno));
    struct stat sb;
    bool regular = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode);
    close(fd);
    if (!regular)
        return ami_err_set(err, AMI_E_CONFIG, "%s \"%.120s\" is not a regular file; give a PEM file", what,
                           path);
    return 0;
}

static const char *openssl_reason(void)
{
    const char *r = ERR_reason_error_string(ERR_peek_last_error());
    return r ? r : "no details";
}

/* A key protected by a passphrase: refuse to prompt (a prompt would block
 * the engine on its terminal) and remember that one was asked for. */
static int refuse_passphrase(char *buf, int size, int rwflag, void *ud)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    *(bool *)ud = true;
    return 0;
}

static int load_ca(SSL_CTX *c, const char *ca_file, ami_err_t *err)
{
    if (check_readable("tls.ca_file", ca_file, err) < 0)
        return -1;
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(c, ca_file, NULL) != 1)
        return ami_err_set(err, AMI_E_CONFIG,
                           "tls.ca_file \"%.120s\" holds no usable PEM certificate (%s); give the CA "
                           "certificate in PEM form (-----BEGIN CERTIFICATE-----)",
                           ca_file, openssl_reason());
    return 0;
}

/* 1 loaded; 0 the key does not belong to the certificate; -1 (err set) otherwise. */
static int load_key(SSL_CTX *c, const char *key_opt, const char *key, ami_err_t *err)
{
    bool asked = false;
    SSL_CTX_set_default_passwd_cb(c, refuse_passphrase);
    SSL_CTX_set_default_passwd_cb_userdata(c, &asked);
    ERR_clear_error();
    int ok = SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM);
    SSL_CTX_set_default_passwd_cb(c, NULL);
    SSL_CTX_set_default_passwd_cb_userdata(c, NULL);
    if (ok == 1) {
        ERR_clear_error();
        return SSL_CTX_check_private_key(c) == 1 ? 1 : 0;
    }
    int why = ERR_GET_REASON(ERR_peek_last_error());
    if (why == X509_R_KEY_VALUES_MISMATCH || why == X509_R_KEY_TYPE_MISMATCH)
        return 0;
    if (asked)
        return ami_err_set(err, AMI_E_CONFIG,
                           "%s \"%.120s\": the private key is protected by a passphrase, which the engine "
                           "cannot ask for; store it unencrypted (openssl pkey -in KEY -out KEY.plain) with "
                           "mode 0600",
                           key_opt, key);
    return ami_err_set(err, AMI_E_CONFIG, "%s \"%.120s\" holds no usable PEM private key (%s)", key_opt, key,
                       openssl_reason());
}

static int load_identity(SSL_CTX *c, const char *cert_file, const char *key_file, ami_err_t *err)
{
    const char *key = key_file ? key_file : cert_file;
    const char *key_opt = key_file ? "tls.key_file" : "tls.cert_file (no key_file given)";
    if (check_readable("tls.cert_file", cert_file, err) < 0 || check_readable(key_opt, key, err) < 0)
        return -1;
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(c, cert_file) != 1)
        return ami_err_set(err, AMI_E_CONFIG, "tls.cert_file \"%.120s\" holds no usable PEM certificate (%s)",
                           cert_file, openssl_reason());
    int rc = load_key(c, key_opt, key, err);
    if (rc == 0)
        ami_err_set(err, AMI_E_CONFIG,
                    "%s \"%.120s\" does not match the certificate in tls.cert_file \"%.120s\"; give the key "
                    "that was used to request that certificate",
                    key_opt, key, cert_file);
    return rc == 1 ? 0 : -1;
}

static SSL_CTX *new_ssl_ctx(bool server, ami_err_t *err)
{
    SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!c) {
        ami_err_set(err, AMI_E_NOMEM, "cannot create a TLS context: %s", openssl_reason());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return c;
}

/* ---- what the certificate must hold --------------------------------------------------- */

/* "10.0.0.5", "::1" or "[::1]" -> the bare address in out; false for names. */
static bool ip_literal(const char *s, char *out, size_t size)
{
    size_t len = strlen(s);
    if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
        s++;
        len -= 2;
    }
    if (len == 0 || len >= size)
        return false;
    memcpy(out, s, len);
    out[len] = '\0';
    unsigned char bin[16];
    return inet_pton(AF_INET, out, bin) == 1 || inet_pton(AF_INET6, out, bin) == 1;
}

/* server_name wins; else the host, as an IP SAN when it is an IP literal. */
static int set_expected_name(ami_tls_ctx_t *ctx, SSL_CTX *c, const char *host, ami_err_t *err)
{
    const char *name = ctx->opt.server_name ? ctx->opt.server_name : host;
    char ip[64];
    bool is_ip = ip_literal(name, ip, sizeof ip);
    X509_VERIFY_PARAM *p = SSL_CTX_get0_param(c);
    X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    /* An intermediate CA in ca_file is trusted as an anchor, as curl does. */
    X509_VERIFY_PARAM_set_flags(p, X509_V_FLAG_PARTIAL_CHAIN);
    ami_free(ctx->sni);
    ctx->sni = NULL;
    if (is_ip) {
        snprintf(ctx->expected, sizeof ctx->expected, "IP %s", ip);
        if (!ctx->opt.no_verify && X509_VERIFY_PARAM_set1_ip_asc(p, ip) != 1)
            return ami_err_set(err, AMI_E_CONFIG, "cannot verify against IP %s", ip);
        return 0; /* SNI carries names only (RFC 6066) */
    }
    snprintf(ctx->expected, sizeof ctx->expected, "%.190s", name);
    ctx->sni = ami_strdup(name);
    if (!ctx->sni)
        return ami_err_set(err, AMI_E_NOMEM, "out of memory");
    if (!ctx->opt.no_verify && X509_VERIFY_PARAM_set1_host(p, name, 0) != 1)
        return ami_err_set(err, AMI_E_CONFIG, "cannot verify against the name \"%.64s\"", name);
    return 0;
}

static SSL_CTX *build_client(ami_tls_ctx_t *ctx, const char *host, ami_err_t *err)
{
    const ami_tls_options_t *o = &ctx->opt;
    SSL_CTX *c = new_ssl_ctx(false, err);
    if (!c)
        return NULL;
    bool ok = (!o->ca_file || load_ca(c, o->ca_file, err) == 0) &&
              (!o->cert_file || load_identity(c, o->cert_file, o->key_file, err) == 0) &&
              set_expected_name(ctx, c, host, err) == 0;
    if (!ok) {
        SSL_CTX_free(c);
        return NULL;
    }
    if (o->no_verify)
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    else
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, tls_verify_cb);
    /* TLS 1.3: offer the mandatory suite first; AES-128-GCM decrypts the event
     * stream faster than AES-256-GCM (Asterisk, like OpenSSL servers by
     * default, takes the client's order). */
    SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
    return c;
}

static void take_stamps(ami_tls_ctx_t *ctx)
{
    stamp_of(ctx->opt.ca_file, &ctx->stamps[TLS_FILE_CA]);
    stamp_of(ctx->opt.cert_file, &ctx->stamps[TLS_FILE_CERT]);
    stamp_of(ctx->opt.key_file, &ctx->stamps[TLS_FILE_KEY]);
}

/* ---- contexts ------------------------------------------------------------------------ */

static ami_tls_ctx_t *ctx_alloc(bool server, ami_err_t *err)
{
    ami_tls_ctx_t *ctx = ami_calloc(1, sizeof *ctx);
    BIO_METHOD *bio = ctx ? tls_bio_method_new() : NULL;
    if (!bio) {
        ami_free(ctx);
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating a TLS context");
        return NULL;
    }
    ctx->server = server;
    ctx->bio = bio;
    atomic_fetch_add_explicit(&ami_tls_live, 1, memory_order_relaxed);
    return ctx;
}

static void register_metrics(ami_tls_ctx_t *ctx)
{
    if (!ctx->metrics)
        return;
    static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
    ctx->handshake_seconds = ami_metrics_histogram(
        ctx->metrics, "ami_tls_handshake_seconds", "Time from TCP connected to TLS handshake done",
        bounds, sizeof bounds / sizeof bounds[0], (const char *const[]){"server_key", ctx->server_key, NULL},
        NULL);
}

ami_tls_ctx_t *ami_tls_client_new(const ami_tls_options_t *o, const char *host, const char *server_key,
                                  ami_metrics_t *metrics, ami_logger_t *log, ami_err_t *err)
{
    if (!host || !*host) {
        ami_err_set(err, AMI_E_CONFIG, "TLS needs the server's host to know what its certificate must hold");
        return NULL;
    }
    ami_tls_ctx_t *ctx = ctx_alloc(false, err);
    if (!ctx)
        return NULL;
    snprintf(ctx->server_key, sizeof ctx->server_key, "%s", server_key ? server_key : "");
    ctx->metrics = metrics;
    ctx->log = log;
    if (ami_tls_options_copy(&ctx->opt, o) < 0) {
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating a TLS context");
        ami_tls_ctx_free(ctx);
        return NULL;
    }
    ctx->opt.enabled = true;
    if (!ctx->opt.handshake_timeout_ms)
        ctx->opt.handshake_timeout_ms = AMI_TLS_DEFAULT_HANDSHAKE_TIMEOUT_MS;
    /* The host is fixed for the context's life; keep it where refresh finds it. */
    char *h = ami_strdup(host);
    take_stamps(ctx);
    ctx->ssl_ctx = h ? build_client(ctx, h, err) : NULL;
    if (!h)
        ami_err_set(err, AMI_E_NOMEM, "out of memory creating a TLS context");
    ctx->host = h;
    if (!ctx->ssl_ctx) {
        ami_tls_ctx_free(ctx);
        return NULL;
    }
    register_metrics(ctx);
    return ctx;
}

ami_tls_ctx_t *ami_tls_server_new(const ami_tls_server_options_t *o, ami_err_t *err)
{
    if (!o || !o->cert_file) {
        ami_err_set(err, AMI_E_CONFIG, "a TLS server needs a certificate file");
        return NULL;
    }
    ami_tls_ctx_t *ctx = ctx_alloc(true, err);
    if (!ctx)
        return NULL;
    SSL_CTX *c = new_ssl_ctx(true, err);
    ctx->ssl_ctx = c;
    bool ok = c && load_identity(c, o->cert_file, o->key_file, err) == 0;
    if (ok && o->client_ca_file) {
        ok = load_ca(c, o->client_ca_file, err) == 0;
        STACK_OF(X509_NAME) *names = ok ? SSL_load_client_CA_file(o->client_ca_file) : NULL;
        if (names)
            SSL_CTX_set_client_CA_list(c, names);
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, tls_verify_cb);
    }
    if (ok && o->tls12_only)
        SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION);
    if (!ok) {
        ami_tls_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

void ami_tls_ctx_free(ami_tls_ctx_t *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl_ctx); /* sessions still open keep their own reference */
    BIO_meth_free(ctx->bio);
    ami_tls_options_free(&ctx->opt);
    ami_free(ctx->host);
    ami_free(ctx->sni);
    ami_free(ctx);
    atomic_fetch_sub_explicit(&ami_tls_live, 1, memory_order_relaxed);
}

int ami_tls_ctx_refresh(ami_tls_ctx_t *ctx, ami_err_t *err)
{
    if (ctx->server)
        return 0;
    tls_file_stamp_t now[TLS_FILE_COUNT];
    stamp_of(ctx->opt.ca_file, &now[TLS_FILE_CA]);
    stamp_of(ctx->opt.cert_file, &now[TLS_FILE_CERT]);
    stamp_of(ctx->opt.key_file, &now[TLS_FILE_KEY]);
    bool changed = false;
    for (int i = 0; i < TLS_FILE_COUNT; i++)
        changed = changed || !stamp_equal(&now[i], &ctx->stamps[i]);
    if (!changed)
        return 0;
    SSL_CTX *fresh = build_client(ctx, ctx->host, err);
    if (!fresh)
        return -1; /* the stamps stay old: the next attempt tries again */
    SSL_CTX_free(ctx->ssl_ctx);
    ctx->ssl_ctx = fresh;
    memcpy(ctx->stamps, now, sizeof now);
    AMI_LOG(ctx->log, AMI_LOG_INFO, "tls files reloaded", AMI_F_STR("server_key", ctx->server_key),
            AMI_F_STR("ca_file", ctx->opt.ca_file ? ctx->opt.ca_file : ""),
            AMI_F_STR("cert_file", ctx->opt.cert_file ? ctx->opt.cert_file : ""));
    return 0;
}

bool ami_tls_ctx_verifies(const ami_tls_ctx_t *ctx)
{
    return ctx->server || !ctx->opt.no_verify;
}

uint32_t ami_tls_ctx_handshake_timeout_ms(const ami_tls_ctx_t *ctx)
{
    return ctx->opt.handshake_timeout_ms ? ctx->opt.handshake_timeout_ms : AMI_TLS_DEFAULT_HANDSHAKE_TIMEOUT_MS;
}

uint64_t ami_tls_ctx_handshakes(const ami_tls_ctx_t *ctx)
{
    long n = ctx->server ? SSL_CTX_sess_accept_good(ctx->ssl_ctx) : SSL_CTX_sess_connect_good(ctx->ssl_ctx);
    return n > 0 ? (uint64_t)n : 0;
}

const char *ami_tls_ctx_server_key(const ami_tls_ctx_t *ctx)
{
    return ctx->server_key;
}

const char *ami_tls_ctx_expected_name(const ami_tls_ctx_t *ctx)
{
    return ctx->expected;
}

void tls_ctx_count_failure(ami_tls_ctx_t *ctx, ami_tls_reason_t r)
{
    if (!ctx->metrics || (unsigned)r >= AMI_TLS_R_COUNT)
        return;
    if (!ctx->failures[r])
        ctx->failures[r] = ami_metrics_counter(
            ctx->metrics, "ami_tls_handshake_failures_total", "TLS handshakes that failed, by reason",
            (const char *const[]){"server_key", ctx->server_key, "reason", reason_names[r], NULL}, NULL);
    ami_counter_inc(ctx->failures[r]);
}
