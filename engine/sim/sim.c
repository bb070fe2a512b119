/*
 * The simulator object and its nodes: creation, configuration, faults,
 * stop/restart, statistics, and the own-loop runner.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "sim/sim_internal.h"
#include "util/alloc.h"

#define SCRATCH_LIMIT (1u << 20)

static void on_stop_async(struct ev_loop *loop, ev_async *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

static void on_run_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

ami_sim_t *ami_sim_new(struct ev_loop *loop, ami_logger_t *log)
{
    SIM_ACCOUNT();
    ami_sim_t *sim = ami_calloc(1, sizeof *sim);
    if (!sim)
        return NULL;
    if (!loop) {
        loop = ev_loop_new(EVFLAG_AUTO);
        if (!loop) {
            ami_free(sim);
            return NULL;
        }
        sim->own_loop = true;
    }
    sim->loop = loop;
    sim->log = log;
    ev_async_init(&sim->stop_async, on_stop_async);
    ev_async_start(loop, &sim->stop_async);
    /* the stop hook must not keep a caller's loop alive on its own */
    ev_unref(loop);
    ev_timer_init(&sim->run_timer, on_run_timeout, 0., 0.);
    return sim;
}

static void close_all_sessions(ami_sim_node_t *n, const char *why)
{
    while (n->sessions)
        sim_session_close(n->sessions, why);
}

static void node_free(ami_sim_node_t *n)
{
    struct ev_loop *loop = n->sim->loop;
    sim_unlisten(n);
    close_all_sessions(n, "simulator freed");
    sim_calls_clear(n);
    sim_reap(n);
    sim_traffic_stop(n);
    sim_flood_free(n);
    ev_idle_stop(loop, &n->reaper);
    ami_buf_deinit(&n->scratch);
    ami_buf_deinit(&n->reply);
    sim_vars_free(&n->globals);
    sim_flow_free(n->flow);
    sim_counts_free(n);
    sim_tls_node_free(n);
    ami_free(n->name);
    ami_free(n->bind_ip);
    ami_free(n->username);
    ami_free(n->secret);
    ami_free(n->ami_version);
    ami_free(n);
}

void ami_sim_free(ami_sim_t *sim)
{
    SIM_ACCOUNT();
    if (!sim)
        return;
    for (size_t i = 0; i < sim->nnodes; i++)
        node_free(sim->nodes[i]);
    ami_free(sim->nodes);
    ev_ref(sim->loop);
    ev_async_stop(sim->loop, &sim->stop_async);
    ev_timer_stop(sim->loop, &sim->run_timer);
    if (sim->own_loop)
        ev_loop_destroy(sim->loop);
    ami_free(sim);
}

struct ev_loop *ami_sim_loop(ami_sim_t *sim)
{
    return sim->loop;
}

static void on_reap(struct ev_loop *loop, ev_idle *w, int revents)
{
    SIM_ACCOUNT();
    sim_reap(w->data);
}

static uint64_t mix_seed(uint32_t seed)
{
    /* splitmix64 step, so small seeds still give a well-spread state */
    uint64_t z = (uint64_t)(seed ? seed : 20261127u) + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z ? z : 1;
}

static int node_strings(ami_sim_node_t *n, const ami_sim_node_config_t *cfg, size_t index)
{
    char def[32];
    snprintf(def, sizeof def, "sim%zu", index + 1);
    n->name = ami_strdup(cfg->name && *cfg->name ? cfg->name : def);
    n->bind_ip = ami_strdup(cfg->bind_ip && *cfg->bind_ip ? cfg->bind_ip : "127.0.0.1");
    n->username = ami_strdup(cfg->username && *cfg->username ? cfg->username : "engine");
    n->secret = ami_strdup(cfg->secret ? cfg->secret : "s3cret");
    n->ami_version = ami_strdup(cfg->ami_version && *cfg->ami_version ? cfg->ami_version : "11.0.0");
    return n->name && n->bind_ip && n->username && n->secret && n->ami_version ? 0 : -1;
}

static ami_sim_node_t *node_new(ami_sim_t *sim, const ami_sim_node_config_t *cfg, ami_err_t *err)
{
    ami_sim_node_t *n = ami_calloc(1, sizeof *n);
    if (!n) {
        ami_err_set(err, AMI_E_NOMEM, "out of memory");
        return NULL;
    }
    n->sim = sim;
    n->index = sim->nnodes;
    n->lfd = -1;
    n->port = cfg->port;
    n->cps = cfg->calls_per_second > 0 ? cfg->calls_per_second : 0;
    n->call_duration_ms = cfg->call_duration_ms ? cfg->call_duration_ms : 3000;
    n->rng = mix_seed(cfg->seed);
    n->replay_speed = 1.0;
    n->started_wall = sim_wall_now();
    ami_buf_init(&n->scratch, SCRATCH_LIMIT);
    ami_buf_init(&n->reply, SIM_OUT_LIMIT);
    ev_idle_init(&n->reaper, on_reap);
    n->reaper.data = n;
    ev_init(&n->traffic_timer, NULL);
    sim_queues_init(n);
    sim_calls_init(n);
    if (node_strings(n, cfg, sim->nnodes) < 0 || (cfg->count_events && sim_counts_new(n) < 0)) {
        ami_err_set(err, AMI_E_NOMEM, "out of memory");
        node_free(n);
        return NULL;
    }
    if ((cfg->replay_flow && sim_flow_load(cfg->replay_flow, &n->flow, err) < 0) ||
        sim_tls_node_init(n, cfg, err) < 0) {
        node_free(n);
        return NULL;
    }
    return n;
}

ami_sim_node_t *ami_sim_add_node(ami_sim_t *sim, const ami_sim_node_config_t *cfg, ami_err_t *err)
{
    SIM_ACCOUNT();
    ami_sim_node_config_t none = {0};
    if (!cfg)
        cfg = &none;
    if (sim->nnodes == sim->cap) {
        size_t cap = sim->cap ? sim->cap * 2 : 4;
        ami_sim_node_t **grown = ami_realloc(sim->nodes, cap * sizeof *grown);
        if (!grown) {
            ami_err_set(err, AMI_E_NOMEM, "out of memory");
            return NULL;
        }
        sim->nodes = grown;
        sim->cap = cap;
    }
    ami_sim_node_t *n = node_new(sim, cfg, err);
    if (!n)
        return NULL;
    if (sim_listen(n, err) < 0) {
        node_free(n);
        return NULL;
    }
    sim->nodes[sim->nnodes++] = n;
    sim_traffic_start(n);
    AMI_LOG(sim->log, AMI_LOG_INFO, "sim node listening", AMI_F_STR("node", n->name),
            AMI_F_STR("ip", n->bind_ip), AMI_F_UINT("port", n->port),
            AMI_F_STR("replay", cfg->replay_flow ? cfg->replay_flow : ""));
    return n;
}

size_t ami_sim_node_count(const ami_sim_t *sim)
{
    return sim->nnodes;
}

ami_sim_node_t *ami_sim_node_at(ami_sim_t *sim, size_t i)
{
    return i < sim->nnodes ? sim->nodes[i] : NULL;
}

uint16_t ami_sim_node_port(const ami_sim_node_t *node)
{
    return node->port;
}

const char *ami_sim_node_name(const ami_sim_node_t *node)
{
    return node->name;
}

void ami_sim_node_stop(ami_sim_node_t *n)
{
    SIM_ACCOUNT();
    if (!n->running)
        return;
    sim_unlisten(n);
    close_all_sessions(n, "node stopped");
    sim_calls_clear(n);
    sim_queues_init(n);
    sim_traffic_stop(n);
    sim_flood_apply(n);
    AMI_LOG(SIM_LOG(n), AMI_LOG_INFO, "sim node stopped", AMI_F_STR("node", n->name));
}

int ami_sim_node_restart(ami_sim_node_t *n, ami_err_t *err)
{
    SIM_ACCOUNT();
    if (n->running)
        return 0;
    if (sim_listen(n, err) < 0)
        return -1;
    n->started_wall = sim_wall_now();
    sim_traffic_start(n);
    sim_flood_apply(n);
    AMI_LOG(SIM_LOG(n), AMI_LOG_INFO, "sim node restarted", AMI_F_STR("node", n->name),
            AMI_F_UINT("port", n->port));
    return 0;
}

bool ami_sim_node_running(const ami_sim_node_t *node)
{
    return node->running;
}

void ami_sim_node_drop_sessions(ami_sim_node_t *n)
{
    SIM_ACCOUNT();
    close_all_sessions(n, "sessions dropped");
}

static void send_garbage_now(ami_sim_node_t *n)
{
    static const char LINE[] = "!garbage line without a colon!\r\n\r\n";
    bool sent = false;
    sim_session_t *next;
    for (sim_session_t *s = n->sessions; s; s = next) {
        next = s->next;
        if (s->logged_in && !s->closed && sim_session_send(s, LINE, sizeof LINE - 1) == 0)
            sent = true;
    }
    if (sent)
        n->faults.send_garbage = false;
}

void ami_sim_node_set_faults(ami_sim_node_t *n, const ami_sim_faults_t *faults)
{
    SIM_ACCOUNT();
    ami_sim_faults_t none = {0};
    n->faults = faults ? *faults : none;
    sim_session_t *next;
    for (sim_session_t *s = n->sessions; s; s = next) {
        next = s->next;
        if (n->faults.close_after_bytes && s->bytes_out >= n->faults.close_after_bytes) {
            sim_session_close(s, "close_after_bytes fault");
            continue;
        }
        sim_session_update_reading(s);
        if (n->faults.close_after_bytes)
            sim_session_want_write(s);
    }
    if (n->faults.send_garbage)
        send_garbage_now(n);
    if (n->faults.tls_renegotiate)
        sim_tls_renegotiate_all(n);
    sim_flood_apply(n);
}

void ami_sim_node_set_call_rate(ami_sim_node_t *n, double calls_per_second)
{
    SIM_ACCOUNT();
    sim_traffic_set_rate(n, calls_per_second);
}

void ami_sim_node_set_replay_speed(ami_sim_node_t *n, double speed)
{
    n->replay_speed = speed > 0 ? speed : 0;
}

void ami_sim_node_inject(ami_sim_node_t *n, const char *raw, size_t len)
{
    SIM_ACCOUNT();
    if (!raw || !len)
        return;
    if (ami_buf_append(&n->scratch, raw, len) < 0) {
        ami_buf_clear(&n->scratch);
        return;
    }
    sim_emit(n, sim_class_of_event(raw, len));
}

ami_sim_node_stats_t ami_sim_node_stats(const ami_sim_node_t *n)
{
    ami_sim_node_stats_t st = n->stats;
    st.tls_handshakes = n->tls ? ami_tls_ctx_handshakes(n->tls) : 0;
    return st;
}

int ami_sim_run(ami_sim_t *sim, uint32_t duration_ms)
{
    SIM_ACCOUNT();
    if (duration_ms) {
        ev_timer_set(&sim->run_timer, duration_ms / 1000.0, 0.);
        ev_timer_start(sim->loop, &sim->run_timer);
    }
    ev_run(sim->loop, 0);
    ev_timer_stop(sim->loop, &sim->run_timer);
    return 0;
}

void ami_sim_stop(ami_sim_t *sim)
{
    /* async-signal-safe: callable from a signal handler or another thread */
    ev_async_send(sim->loop, &sim->stop_async);
}
