/*
 * The soak's simulated cluster: one child process per node, so that the
 * soak's own counters (live bytes, RSS, descriptors) hold the engine alone,
 * and so that one node can be stopped while the other works. Two ways to
 * freeze a node:
 *   stop (default)  SIGSTOP, as the real Asterisk of the issue was frozen:
 *                   the kernel still takes the engine's bytes, nothing comes
 *                   back; at SIGCONT the node catches up, answering into a
 *                   session the engine may have closed meanwhile: those
 *                   events were in flight at the forced disconnect
 *   mute            the node answers nothing and sends no event (counted as
 *                   muted): a silence in the application, nothing in flight
 * The parent drives each child over a socketpair with one-line commands:
 *   freeze / thaw   the mute mode's silence, on and off
 *   quiet           stop sending events (answers still go); "ok"
 *   report          "node 0 <stats...>", "ev 0 NAME SENT MUTED" per event name,
 *                   "sess 0 ID EVENTS BYTES UNSENT OPEN" per session, "end"
 * A child dies with the parent (PR_SET_PDEATHSIG) or when its socket closes.
 */
#include <errno.h>
#include <ev.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "soak.h"
#include "util/clock.h"

#define IO_TIMEOUT_MS 10000

typedef struct child {
    ami_sim_t *sim;
    ami_sim_node_t *node;
    bool frozen, quiet;
    int fd;
    ev_io w;
    char in[4096];
    size_t len;
} child_t;

static int write_all(int fd, const char *p, size_t len)
{
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void apply_faults(child_t *c)
{
    ami_sim_faults_t f = {.all_silent = c->frozen, .mute_events = c->frozen || c->quiet};
    ami_sim_node_set_faults(c->node, &f);
}

static void report_sessions(child_t *c)
{
    char line[256];
    size_t ns = ami_sim_node_sessions(c->node, NULL, 0);
    ami_sim_session_record_t *rec = malloc((ns + 1) * sizeof *rec);
    ns = rec ? ami_sim_node_sessions(c->node, rec, ns) : 0;
    for (size_t j = 0; j < ns; j++) {
        int n = snprintf(line, sizeof line, "sess 0 %llu %llu %llu %llu %d\n", (unsigned long long)rec[j].id,
                         (unsigned long long)rec[j].events_queued, (unsigned long long)rec[j].bytes_written,
                         (unsigned long long)rec[j].bytes_unsent, rec[j].open);
        write_all(c->fd, line, (size_t)n);
    }
    free(rec);
}

static void report(child_t *c)
{
    char line[256];
    ami_sim_node_stats_t st = ami_sim_node_stats(c->node);
    int n = snprintf(line, sizeof line,
                     "node 0 bytes_sent %llu unsent %llu sessions %llu logins %llu events %llu calls %llu "
                     "actions %llu\n",
                     (unsigned long long)st.bytes_sent, (unsigned long long)st.bytes_unsent_at_close,
                     (unsigned long long)st.sessions_accepted, (unsigned long long)st.logins_ok,
                     (unsigned long long)st.events_sent, (unsigned long long)st.calls_started,
                     (unsigned long long)st.actions);
    write_all(c->fd, line, (size_t)n);
    ami_sim_event_count_t ev[SOAK_MAX_NAMES];
    size_t k = ami_sim_node_event_counts(c->node, ev, SOAK_MAX_NAMES);
    for (size_t j = 0; j < k && j < SOAK_MAX_NAMES; j++) {
        n = snprintf(line, sizeof line, "ev 0 %s %llu %llu\n", ev[j].name, (unsigned long long)ev[j].sent,
                     (unsigned long long)ev[j].muted);
        write_all(c->fd, line, (size_t)n);
    }
    report_sessions(c);
    write_all(c->fd, "end\n", 4);
}

static void command(child_t *c, const char *cmd)
{
    if (strcmp(cmd, "freeze") == 0 || strcmp(cmd, "thaw") == 0) {
        c->frozen = cmd[0] == 'f';
        apply_faults(c);
    } else if (strcmp(cmd, "quiet") == 0) {
        c->quiet = true;
        apply_faults(c);
        write_all(c->fd, "ok\n", 3);
    } else if (strcmp(cmd, "report") == 0) {
        report(c);
    } else {
        fprintf(stderr, "soak sim: unknown command '%s'\n", cmd);
    }
}

static void on_control(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    child_t *c = w->data;
    ssize_t n = read(c->fd, c->in + c->len, sizeof c->in - 1 - c->len);
    if (n <= 0) {
        if (n < 0 && errno == EINTR)
            return;
        ami_sim_stop(c->sim); /* the parent is gone */
        return;
    }
    c->len += (size_t)n;
    c->in[c->len] = '\0';
    char *start = c->in, *nl;
    while ((nl = strchr(start, '\n'))) {
        *nl = '\0';
        command(c, start);
        start = nl + 1;
    }
    c->len = (size_t)(c->in + c->len - start);
    memmove(c->in, start, c->len);
}

static void child_main(int fd, size_t index, double cps, uint32_t call_duration_ms)
{
    child_t c = {.fd = fd};
    char name[16], hello[32];
    snprintf(name, sizeof name, "pbx%zu", index + 1);
    c.sim = ami_sim_new(NULL, NULL);
    ami_sim_node_config_t nc = {.name = name, .calls_per_second = cps, .seed = 7u + (uint32_t)index,
                                .call_duration_ms = call_duration_ms, .count_events = true};
    c.node = c.sim ? ami_sim_add_node(c.sim, &nc, NULL) : NULL;
    if (!c.node)
        _exit(1);
    int n = snprintf(hello, sizeof hello, "port %u\n", (unsigned)ami_sim_node_port(c.node));
    if (write_all(fd, hello, (size_t)n) < 0)
        _exit(1);
    ev_io_init(&c.w, on_control, fd, EV_READ);
    c.w.data = &c;
    ev_io_start(ami_sim_loop(c.sim), &c.w);
    ami_sim_run(c.sim, 0);
    ev_io_stop(ami_sim_loop(c.sim), &c.w);
    ami_sim_free(c.sim);
    _exit(0);
}

/* ---- the parent's side ------------------------------------------------------------- */

/* Does buf end with the whole line `last` ("ok\n"), or with any line when last is NULL? */
static bool ends_with_line(const char *buf, size_t len, const char *last)
{
    if (len == 0 || buf[len - 1] != '\n')
        return false;
    if (!last)
        return true;
    size_t ll = strlen(last);
    return len >= ll && strcmp(buf + len - ll, last) == 0 && (len == ll || buf[len - ll - 1] == '\n');
}

/* Read until ends_with_line(last), within the deadline. */
static ssize_t read_until(int fd, char *buf, size_t cap, const char *last)
{
    size_t len = 0;
    int64_t deadline = ami_now_ms() + IO_TIMEOUT_MS;
    while (len < cap - 1) {
        int64_t left = deadline - ami_now_ms();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        if (ends_with_line(buf, len, last))
            return (ssize_t)len;
    }
    return -1;
}

static int start_one(soak_sim_t *s, size_t i, double cps, uint32_t call_duration_ms)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("soak: socketpair");
        return -1;
    }
    pid_t parent = getpid();
    s->pid[i] = fork();
    if (s->pid[i] < 0) {
        perror("soak: fork");
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (s->pid[i] == 0) {
        close(sv[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        child_main(sv[1], i, cps, call_duration_ms);
    }
    close(sv[1]);
    s->ctl[i] = sv[0];
    char buf[64];
    unsigned port = 0;
    if (read_until(s->ctl[i], buf, sizeof buf, NULL) < 0 || sscanf(buf, "port %u", &port) != 1 || !port ||
        port > 65535) {
        fprintf(stderr, "soak: the simulator of pbx%zu did not start\n", i + 1);
        return -1;
    }
    s->ports[i] = (uint16_t)port;
    return 0;
}

int soak_sim_start(soak_sim_t *s, double cps, uint32_t call_duration_ms)
{
    for (size_t i = 0; i < SOAK_NODES; i++)
        s->ctl[i] = -1;
    for (size_t i = 0; i < SOAK_NODES; i++)
        if (start_one(s, i, cps, call_duration_ms) < 0) {
            soak_sim_stop(s);
            return -1;
        }
    return 0;
}

static void send_command(soak_sim_t *s, size_t i, const char *cmd)
{
    if (write_all(s->ctl[i], cmd, strlen(cmd)) < 0)
        fprintf(stderr, "soak: cannot reach the simulator of pbx%zu\n", i + 1);
}

void soak_sim_freeze(soak_sim_t *s, size_t i, bool stop)
{
    s->stopped[i] = stop;
    if (stop)
        kill(s->pid[i], SIGSTOP);
    else
        send_command(s, i, "freeze\n");
}

void soak_sim_thaw(soak_sim_t *s, size_t i)
{
    if (s->stopped[i])
        kill(s->pid[i], SIGCONT);
    else
        send_command(s, i, "thaw\n");
    s->stopped[i] = false;
}

int soak_sim_quiet(soak_sim_t *s)
{
    char buf[16];
    for (size_t i = 0; i < SOAK_NODES; i++)
        if (write_all(s->ctl[i], "quiet\n", 6) < 0 || read_until(s->ctl[i], buf, sizeof buf, "ok\n") < 0)
            return -1;
    return 0;
}

static int add_session(soak_node_report_t *r, const ami_sim_session_record_t *rec)
{
    if (r->nsess == r->sess_cap) {
        size_t cap = r->sess_cap ? r->sess_cap * 2 : 256;
        ami_sim_session_record_t *grown = realloc(r->sess, cap * sizeof *grown);
        if (!grown)
            return -1;
        r->sess = grown;
        r->sess_cap = cap;
    }
    r->sess[r->nsess++] = *rec;
    return 0;
}

static int by_id(const void *a, const void *b)
{
    uint64_t x = ((const ami_sim_session_record_t *)a)->id, y = ((const ami_sim_session_record_t *)b)->id;
    return x < y ? -1 : x > y;
}

/* One child's report into *out. */
static int parse_report(char *text, soak_node_report_t *out)
{
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        int open;
        unsigned long long a, b, c, d, e, f, g;
        char name[48];
        if (sscanf(line, "sess 0 %llu %llu %llu %llu %d", &a, &b, &c, &d, &open) == 5) {
            ami_sim_session_record_t rec = {.id = a, .events_queued = b, .bytes_written = c,
                                            .bytes_unsent = d, .open = open != 0};
            if (add_session(out, &rec) < 0)
                return -1;
        } else if (sscanf(line, "node 0 bytes_sent %llu unsent %llu sessions %llu logins %llu events %llu "
                                "calls %llu actions %llu", &a, &b, &c, &d, &e, &f, &g) == 7) {
            ami_sim_node_stats_t *st = &out->stats;
            st->bytes_sent = a;
            st->bytes_unsent_at_close = b;
            st->sessions_accepted = c;
            st->logins_ok = d;
            st->events_sent = e;
            st->calls_started = f;
            st->actions = g;
        } else if (sscanf(line, "ev 0 %47s %llu %llu", name, &a, &b) == 3 && out->nev < SOAK_MAX_NAMES) {
            ami_sim_event_count_t *ev = &out->ev[out->nev++];
            snprintf(ev->name, sizeof ev->name, "%s", name);
            ev->sent = a;
            ev->muted = b;
        } else if (strcmp(line, "end") != 0) {
            return -1;
        }
    }
    if (out->nsess)
        qsort(out->sess, out->nsess, sizeof *out->sess, by_id);
    return 0;
}

void soak_sim_report_free(soak_node_report_t out[SOAK_NODES])
{
    for (size_t i = 0; i < SOAK_NODES; i++) {
        free(out[i].sess);
        out[i].sess = NULL;
        out[i].nsess = out[i].sess_cap = 0;
    }
}

int soak_sim_report(soak_sim_t *s, soak_node_report_t out[SOAK_NODES])
{
    memset(out, 0, SOAK_NODES * sizeof *out);
    size_t cap = 8 << 20;
    char *buf = malloc(cap);
    int rc = buf ? 0 : -1;
    for (size_t i = 0; i < SOAK_NODES && rc == 0; i++)
        if (write_all(s->ctl[i], "report\n", 7) < 0 || read_until(s->ctl[i], buf, cap, "end\n") < 0 ||
            parse_report(buf, &out[i]) < 0)
            rc = -1;
    free(buf);
    return rc;
}

void soak_sim_stop(soak_sim_t *s)
{
    for (size_t i = 0; i < SOAK_NODES; i++) {
        if (s->pid[i] > 0)
            kill(s->pid[i], SIGCONT); /* a stopped child cannot see its socket close */
        if (s->ctl[i] >= 0)
            close(s->ctl[i]); /* the child's loop sees EOF and stops */
        s->ctl[i] = -1;
    }
    for (size_t i = 0; i < SOAK_NODES; i++) {
        if (s->pid[i] <= 0)
            continue;
        int64_t deadline = ami_now_ms() + 5000;
        while (waitpid(s->pid[i], NULL, WNOHANG) == 0) {
            if (ami_now_ms() > deadline) {
                kill(s->pid[i], SIGKILL);
                waitpid(s->pid[i], NULL, 0);
                break;
            }
            struct timespec ts = {0, 10 * 1000000};
            nanosleep(&ts, NULL);
        }
        s->pid[i] = 0;
    }
}
