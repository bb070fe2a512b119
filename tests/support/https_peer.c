#include "https_peer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPENSSL "/usr/bin/openssl"
#define STEP_MS 20000

static bool run(const https_certs_t *c, const char *const *argv)
{
    char err[320];
    snprintf(err, sizeof err, "%s/openssl.err", c->dir);
    int rc = proc_run(argv, NULL, NULL, err, STEP_MS);
    if (rc != 0) {
        char *text = file_read(err, NULL);
        fprintf(stderr, "openssl %s failed (%d): %s\n", argv[1], rc, text ? text : "");
        free(text);
    }
    return rc == 0;
}

static bool make_ca(const https_certs_t *c, const char *cert, const char *key, const char *cn)
{
    char subj[64];
    snprintf(subj, sizeof subj, "/CN=%s", cn);
    const char *argv[] = {OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                          "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", subj, NULL};
    return run(c, argv);
}

/* A leaf for san ("IP:127.0.0.1"), signed by the test CA. */
static bool make_leaf(const https_certs_t *c, const char *cert, const char *key, const char *san)
{
    char csr[320], ext[320], ca_key[320], serial[320];
    snprintf(csr, sizeof csr, "%s/leaf.csr", c->dir);
    snprintf(ext, sizeof ext, "%s/leaf.ext", c->dir);
    snprintf(ca_key, sizeof ca_key, "%s/ca.key", c->dir);
    snprintf(serial, sizeof serial, "%s/ca.srl", c->dir);
    char ext_text[128];
    snprintf(ext_text, sizeof ext_text, "subjectAltName=%s\nbasicConstraints=CA:FALSE\n", san);
    if (file_write_atomic(ext, ext_text) < 0)
        return false;
    const char *req[] = {OPENSSL, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", key, "-out", csr, "-subj", "/CN=ami-test-server", NULL};
    const char *sign[] = {OPENSSL, "x509", "-req", "-in", csr, "-CA", c->ca, "-CAkey", ca_key,
                          "-CAserial", serial, "-CAcreateserial", "-out", cert, "-days", "2",
                          "-extfile", ext, NULL};
    return run(c, req) && run(c, sign);
}

bool https_certs_make(https_certs_t *c)
{
    memset(c, 0, sizeof *c);
    if (tmpdir_make("ami-https-", c->dir, sizeof c->dir) < 0)
        return false;
    char ca_key[300], other_key[300];
    snprintf(c->ca, sizeof c->ca, "%s/ca.pem", c->dir);
    snprintf(ca_key, sizeof ca_key, "%s/ca.key", c->dir);
    snprintf(c->other_ca, sizeof c->other_ca, "%s/other-ca.pem", c->dir);
    snprintf(other_key, sizeof other_key, "%s/other-ca.key", c->dir);
    snprintf(c->cert, sizeof c->cert, "%s/server.pem", c->dir);
    snprintf(c->key, sizeof c->key, "%s/server.key", c->dir);
    snprintf(c->wrong_cert, sizeof c->wrong_cert, "%s/wrong.pem", c->dir);
    snprintf(c->wrong_key, sizeof c->wrong_key, "%s/wrong.key", c->dir);
    return make_ca(c, c->ca, ca_key, "ami-test-ca") && make_ca(c, c->other_ca, other_key, "ami-other-ca") &&
           make_leaf(c, c->cert, c->key, "IP:127.0.0.1") && make_leaf(c, c->wrong_cert, c->wrong_key, "DNS:wrong.example");
}

void https_certs_remove(https_certs_t *c)
{
    if (c->dir[0])
        tmpdir_remove(c->dir);
    c->dir[0] = '\0';
}

bool https_peer_start(https_peer_t *p, const https_certs_t *c, const char *cert, const char *key)
{
    memset(p, 0, sizeof *p);
    char out[320];
    snprintf(out, sizeof out, "%s/s_server.%s.out", c->dir, strrchr(cert, '/') + 1);
    const char *argv[] = {OPENSSL, "s_server", "-accept", "127.0.0.1:0", "-cert", cert, "-key", key, "-www", NULL};
    if (proc_spawn(&p->proc, argv, NULL, out, out) < 0)
        return false;
    if (!file_wait_contains(out, "ACCEPT 127.0.0.1:", STEP_MS)) {
        https_peer_stop(p);
        return false;
    }
    char *text = file_read(out, NULL);
    const char *at = text ? strstr(text, "ACCEPT 127.0.0.1:") : NULL;
    p->port = at ? (uint16_t)atoi(at + strlen("ACCEPT 127.0.0.1:")) : 0;
    free(text);
    return p->port != 0;
}

void https_peer_stop(https_peer_t *p)
{
    if (p->proc.pid)
        proc_kill(&p->proc);
    p->port = 0;
}
