/*
 * TLS for the simulator's nodes, as Asterisk's manager does it with
 * tlsenable: the handshake right after accept, the banner once TLS is up,
 * close_notify before every close. Reads and writes keep recv()'s and
 * send()'s contracts so sim_net.c treats both kinds of sessions alike.
 * The renegotiation fault asks logged-in clients for a new handshake
 * (TLS 1.2) or a key update (TLS 1.3), which they must answer while the
 * session keeps carrying AMI traffic.
 */
#include <errno.h>

#include "sim/sim_internal.h"

int sim_tls_node_init(ami_sim_node_t *n, const ami_sim_node_config_t *cfg, ami_err_t *err)
{
    if (!cfg->tls_cert_file)
        return 0;
    ami_tls_server_options_t so = {.cert_file = cfg->tls_cert_file,
                                   .key_file = cfg->tls_key_file,
                                   .client_ca_file = cfg->tls_client_ca_file,
                                   .tls12_only = cfg->tls12_only};
    ami_err_t terr;
    n->tls = ami_tls_server_new(&so, &terr);
    if (!n->tls)
        return ami_err_set(err, terr.code, "sim node %s: %s", n->name, terr.msg);
    return 0;
}

void sim_tls_node_free(ami_sim_node_t *n)
{
    ami_tls_ctx_free(n->tls);
    n->tls = NULL;
}

void sim_tls_session_start(sim_session_t *s)
{
    ami_err_t err;
    s->tls = ami_tls_new(s->node->tls, s->fd, &err);
    if (!s->tls) {
        sim_session_close(s, err.msg);
        return;
    }
    s->tls_handshaking = true;
    ev_io_start(s->node->sim->loop, &s->rw);
    sim_tls_handshake_step(s);
}

void sim_tls_handshake_step(sim_session_t *s)
{
    struct ev_loop *loop = s->node->sim->loop;
    switch (ami_tls_handshake(s->tls)) {
    case AMI_TLS_DONE:
        s->tls_handshaking = false;
        ev_io_stop(loop, &s->ww);
        AMI_LOG(SIM_LOG(s->node), AMI_LOG_DEBUG, "sim tls established", AMI_F_STR("node", s->node->name),
                AMI_F_UINT("session", s->id), AMI_F_STR("version", ami_tls_version(s->tls)),
                AMI_F_STR("sni", ami_tls_sni(s->tls)));
        sim_session_begin(s);
        return;
    case AMI_TLS_WANT_READ:
        ev_io_stop(loop, &s->ww);
        return;
    case AMI_TLS_WANT_WRITE:
        ev_io_start(loop, &s->ww);
        return;
    default:
        s->node->stats.tls_handshake_failures++;
        AMI_LOG(SIM_LOG(s->node), AMI_LOG_INFO, "sim tls handshake failed", AMI_F_STR("node", s->node->name),
                AMI_F_UINT("session", s->id), AMI_F_STR("error", ami_tls_error(s->tls)));
        sim_session_close(s, "tls handshake failed");
    }
}

/* A TLS read that must write first waits for writability; the write
 * handler then runs the read again (sim_net.c, on_write). */
long sim_tls_recv(sim_session_t *s, char *buf, size_t len)
{
    size_t got = 0;
    switch (ami_tls_read(s->tls, buf, len, &got)) {
    case AMI_TLS_DONE:
        return (long)got;
    case AMI_TLS_WANT_WRITE:
        s->tls_read_wants_write = true;
        ev_io_start(s->node->sim->loop, &s->ww);
        errno = EAGAIN;
        return -1;
    case AMI_TLS_WANT_READ:
        errno = EAGAIN;
        return -1;
    case AMI_TLS_CLOSED:
        if (ami_tls_reason(s->tls) == AMI_TLS_R_NONE)
            s->node->stats.tls_close_notify_received++;
        return 0;
    default:
        errno = ECONNRESET;
        return -1;
    }
}

/* A TLS write that must read first waits for readability, not for the
 * writability that would wake the loop in vain (sim_session_want_write). */
long sim_tls_send(sim_session_t *s, const char *p, size_t len)
{
    size_t put = 0;
    switch (ami_tls_write(s->tls, p, len, &put)) {
    case AMI_TLS_DONE:
        return (long)put;
    case AMI_TLS_WANT_READ:
        s->tls_write_wants_read = true;
        errno = EAGAIN;
        return -1;
    case AMI_TLS_WANT_WRITE:
        errno = EAGAIN;
        return -1;
    default:
        errno = EPIPE;
        return -1;
    }
}

void sim_tls_notify_close(sim_session_t *s)
{
    if (s->tls)
        ami_tls_close_notify(s->tls);
}

void sim_tls_session_end(sim_session_t *s)
{
    if (!s->tls)
        return;
    if (!s->node->faults.tls_abrupt_close)
        ami_tls_close_notify(s->tls);
    ami_tls_free(s->tls);
    s->tls = NULL;
}

void sim_tls_renegotiate_all(ami_sim_node_t *n)
{
    for (sim_session_t *s = n->sessions; s; s = s->next) {
        if (!s->tls || s->tls_handshaking || !s->logged_in || s->closed)
            continue;
        if (ami_tls_renegotiate(s->tls) == 0)
            n->stats.tls_renegotiations++;
        sim_session_want_write(s);
    }
    n->faults.tls_renegotiate = false;
}
