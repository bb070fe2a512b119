#include "bench_peer.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_util.h"
#include "protocol/message.h"
#include "protocol/parser.h"
#include "util/clock.h"

#define FLOOD_EVENTS 4096u
#define ID_DIGITS 12u
#define RING (1u << 20) /* send times of the paced events still awaiting their action */
#define OUT_MAX (8u << 20)
#define STALL_NS 50000 /* a spinning peer's pass this long after the previous: a stall */

/* An output buffer with a read position: what is queued, what went out. */
typedef struct out {
    char *data;
    size_t len, off, cap;
    uint64_t sent_total; /* bytes sent over the connection's life */
} out_t;

struct bench_peer {
    bench_peer_config_t cfg;
    int lfd;
    uint16_t port;
    pthread_t th;
    bool started;
    atomic_bool stop;
    atomic_bool measuring;
    /* FLOOD: a block of events with per-event identifier fields patched each pass */
    char *block;
    size_t block_len;
    uint32_t *id_at;  /* offsets of the ID_DIGITS-wide fields */
    uint32_t *id_ev;  /* which event of the block each field belongs to */
    size_t nids;
    uint64_t pass;
    size_t block_off; /* bytes of the current pass already sent */
    /* PACED */
    int64_t *sent_ns;   /* by seq % RING */
    uint64_t *end_at;   /* by seq % RING: stream offset of the event's last byte */
    uint64_t next_seq, unsent_seq, measure_from, measure_to; /* measured: seqs in [from, to) */
    uint32_t *samples;
    size_t nsamples;
    int64_t last_pass_ns;          /* the serving loop's previous pass, while measuring */
    uint64_t stalls, stalled_ns;   /* passes that came > STALL_NS after the previous one */
    _Atomic uint64_t sent_measured, acked_measured, events;
    _Atomic long preempted, preempted_at_start;
};

static int out_add(out_t *o, const char *s, size_t n)
{
    if (o->len + n > o->cap) {
        if (o->off) {
            memmove(o->data, o->data + o->off, o->len - o->off);
            o->len -= o->off;
            o->off = 0;
        }
        size_t cap = o->cap ? o->cap : 65536;
        while (cap < o->len + n)
            cap *= 2;
        if (cap > OUT_MAX)
            return -1;
        char *d = realloc(o->data, cap);
        if (!d)
            return -1;
        o->data = d;
        o->cap = cap;
    }
    memcpy(o->data + o->len, s, n);
    o->len += n;
    return 0;
}

/* ---- the flood block --------------------------------------------------------- */

static void put(out_t *b, const char *k, const char *v)
{
    char line[256];
    int n = snprintf(line, sizeof line, "%s: %s\r\n", k, v);
    out_add(b, line, (size_t)n);
}

/* A field whose value ends with ID_DIGITS digits patched per pass. */
static void put_id(bench_peer_t *p, out_t *b, const char *k, const char *prefix, unsigned ev)
{
    char line[256];
    int n = snprintf(line, sizeof line, "%s: %s%0*u\r\n", k, prefix, (int)ID_DIGITS, 0u);
    p->id_at[p->nids] = (uint32_t)(b->len + (size_t)n - 2 - ID_DIGITS);
    p->id_ev[p->nids++] = ev;
    out_add(b, line, (size_t)n);
}

static void render_event(bench_peer_t *p, out_t *b, unsigned i)
{
    static const char *const names[] = {"Newchannel", "Newstate", "VarSet", "Hangup", "DeviceStateChange"};
    char ext[16], other[16], dev[32];
    snprintf(ext, sizeof ext, "%u", 1001 + i % 50);
    snprintf(other, sizeof other, "%u", 2001 + i % 40);
    char chan[32];
    snprintf(chan, sizeof chan, "PJSIP/%s-", ext);
    unsigned kind = i % 5;
    put(b, "Event", names[kind]);
    put(b, "Privilege", kind == 2 ? "dialplan,all" : "call,all");
    if (kind == 4) {
        snprintf(dev, sizeof dev, "PJSIP/%s", ext);
        put(b, "Device", dev);
        put(b, "State", "NOT_INUSE");
        out_add(b, "\r\n", 2);
        return;
    }
    put_id(p, b, "Channel", chan, i);
    put(b, "ChannelState", kind == 0 ? "4" : "6");
    put(b, "ChannelStateDesc", kind == 0 ? "Ring" : "Up");
    put(b, "CallerIDNum", ext);
    char name[32];
    snprintf(name, sizeof name, "User %s", ext);
    put(b, "CallerIDName", name);
    put(b, "ConnectedLineNum", other);
    put(b, "ConnectedLineName", "<unknown>");
    put(b, "Language", "en");
    put(b, "AccountCode", "");
    put(b, "Context", "from-internal");
    put(b, "Exten", other);
    put(b, "Priority", "1");
    put_id(p, b, "Uniqueid", "1785000000.", i);
    put_id(p, b, "Linkedid", "1785000000.", i);
    if (kind == 2) {
        put(b, "Variable", "BRIDGEPEER");
        snprintf(chan, sizeof chan, "PJSIP/%s-", other);
        put_id(p, b, "Value", chan, i);
    } else if (kind == 3) {
        put(b, "Cause", "16");
        put(b, "Cause-txt", "Normal Clearing");
    }
    out_add(b, "\r\n", 2);
}

static int render_block(bench_peer_t *p)
{
    out_t b = {0};
    p->id_at = malloc(FLOOD_EVENTS * 4 * sizeof *p->id_at);
    p->id_ev = malloc(FLOOD_EVENTS * 4 * sizeof *p->id_ev);
    if (!p->id_at || !p->id_ev)
        return -1;
    for (unsigned i = 0; i < FLOOD_EVENTS; i++)
        render_event(p, &b, i);
    p->block = b.data;
    p->block_len = b.len;
    return p->block ? 0 : -1;
}

/* Every identifier of event i of pass n becomes n * FLOOD_EVENTS + i: new
 * in every event, never repeated in the run. */
static void patch_block(bench_peer_t *p)
{
    uint64_t base = p->pass * FLOOD_EVENTS;
    char digits[ID_DIGITS];
    unsigned last = UINT32_MAX;
    for (size_t k = 0; k < p->nids; k++) {
        if (p->id_ev[k] != last) {
            last = p->id_ev[k];
            uint64_t v = base + last;
            for (int d = (int)ID_DIGITS - 1; d >= 0; d--, v /= 10)
                digits[d] = (char)('0' + v % 10);
        }
        memcpy(p->block + p->id_at[k], digits, ID_DIGITS);
    }
    p->pass++;
}

/* ---- the connection ------------------------------------------------------------- */

static void answer(bench_peer_t *p, out_t *o, const ami_msg_t *m, int64_t read_ns)
{
    size_t idlen = 0;
    const char *id = ami_msg_action_id(m, &idlen);
    char resp[256];
    int n = snprintf(resp, sizeof resp, "Response: Success\r\nActionID: %.*s\r\nMessage: %s\r\n\r\n",
                     id ? (int)(idlen > 100 ? 100 : idlen) : 0, id ? id : "",
                     ami_str_ieq(ami_msg_name(m), strlen(ami_msg_name(m)), "Login", 5) ? "Authentication accepted"
                                                                                         : "OK");
    out_add(o, resp, (size_t)n);
    const char *seq = ami_msg_get(m, "Seq");
    if (!seq || p->cfg.mode != BENCH_PEER_PACED)
        return;
    uint64_t s = strtoull(seq, NULL, 10);
    if (s < p->measure_from || s >= p->measure_to || s >= p->unsent_seq || p->next_seq - s >= RING)
        return;
    atomic_fetch_add(&p->acked_measured, 1);
    int64_t lat = read_ns - p->sent_ns[s % RING];
    if (p->nsamples < p->cfg.max_samples)
        p->samples[p->nsamples++] = lat < 0 ? 0 : lat > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)lat;
}

/* Queue the paced events due by now. */
static void queue_paced(bench_peer_t *p, out_t *o, int64_t t0)
{
    uint64_t due = (uint64_t)((double)(ami_now_ns() - t0) * p->cfg.rate / 1e9);
    char ev[512];
    for (; p->next_seq < due && p->next_seq - p->unsent_seq < RING / 2; p->next_seq++) {
        uint64_t s = p->next_seq;
        int n = snprintf(ev, sizeof ev,
                         "Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: Bench\r\nSeq: %llu\r\n"
                         "Channel: PJSIP/%u-%08llx\r\nUniqueid: 1785000000.%llu\r\nContext: from-internal\r\n\r\n",
                         (unsigned long long)s, 1001 + (unsigned)(s % 50), (unsigned long long)(s / 5),
                         (unsigned long long)(s / 5));
        if (out_add(o, ev, (size_t)n) < 0)
            break;
        p->end_at[s % RING] = o->sent_total + (o->len - o->off);
    }
}

/* What send() took: every paced event whose last byte went out now has its time. */
static void note_sent(bench_peer_t *p, out_t *o, int64_t now)
{
    while (p->unsent_seq < p->next_seq && p->end_at[p->unsent_seq % RING] <= o->sent_total) {
        p->sent_ns[p->unsent_seq % RING] = now;
        if (p->unsent_seq >= p->measure_from && p->unsent_seq < p->measure_to)
            atomic_fetch_add(&p->sent_measured, 1);
        p->unsent_seq++;
        atomic_fetch_add(&p->events, 1);
    }
}

static int flush_out(bench_peer_t *p, int fd, out_t *o)
{
    while (o->off < o->len) {
        ssize_t n = send(fd, o->data + o->off, o->len - o->off, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        o->off += (size_t)n;
        o->sent_total += (uint64_t)n;
        if (p->cfg.mode == BENCH_PEER_PACED)
            note_sent(p, o, ami_now_ns());
    }
    o->off = o->len = 0;
    return 0;
}

/* FLOOD: the block straight from memory, whole passes between responses. */
static int flood(bench_peer_t *p, int fd, out_t *o)
{
    for (int rounds = 0; rounds < 64; rounds++) {
        if (p->block_off == 0) {
            if (o->off < o->len)
                return flush_out(p, fd, o);
            patch_block(p);
        }
        ssize_t n = send(fd, p->block + p->block_off, p->block_len - p->block_off, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        p->block_off += (size_t)n;
        if (p->block_off == p->block_len) {
            p->block_off = 0;
            atomic_fetch_add(&p->events, FLOOD_EVENTS);
        }
    }
    return 0;
}

static int read_actions(bench_peer_t *p, int fd, ami_parser_t *parser, out_t *o, bool *logged_in)
{
    size_t room;
    char *dst = ami_parser_reserve(parser, 65536, &room);
    if (!dst)
        return -1;
    ssize_t n = recv(fd, dst, room, 0);
    int64_t t = ami_now_ns();
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
        return -1;
    if (n < 0)
        return 0;
    ami_parser_commit(parser, (size_t)n);
    ami_msg_t m;
    ami_err_t err;
    int rc;
    while ((rc = ami_parser_next(parser, &m, &err)) == 1) {
        answer(p, o, &m, t);
        if (ami_str_ieq(ami_msg_name(&m), strlen(ami_msg_name(&m)), "Login", 5))
            *logged_in = true;
    }
    return rc < 0 ? -1 : 0;
}

/* A spinning peer never sleeps: a long gap between two of its passes is
 * time its thread did not run (taken by the guest's kernel or the host). */
static void note_pass(bench_peer_t *p)
{
    int64_t now = ami_now_ns();
    if (p->last_pass_ns && now - p->last_pass_ns > STALL_NS) {
        p->stalls++;
        p->stalled_ns += (uint64_t)(now - p->last_pass_ns);
    }
    p->last_pass_ns = now;
}

static void serve(bench_peer_t *p, int fd)
{
    ami_parser_t parser;
    ami_parser_init(&parser, NULL);
    ami_parser_expect_banner(&parser, false);
    out_t o = {0};
    static const char banner[] = "Asterisk Call Manager/5.0.2\r\n";
    out_add(&o, banner, sizeof banner - 1);
    bool logged_in = false, was_measuring = false;
    int64_t t0 = 0;
    while (!atomic_load(&p->stop)) {
        bool measuring = atomic_load(&p->measuring);
        if (measuring && !was_measuring) {
            p->measure_from = p->next_seq;
            p->measure_to = UINT64_MAX;
            p->nsamples = 0;
            p->stalls = p->stalled_ns = 0;
            atomic_store(&p->preempted_at_start, bench_thread_preempted());
        } else if (!measuring && was_measuring) {
            p->measure_to = p->next_seq; /* actions for these may still come back */
            atomic_store(&p->preempted, bench_thread_preempted() - atomic_load(&p->preempted_at_start));
        }
        was_measuring = measuring;
        if (logged_in && !t0)
            t0 = ami_now_ns();
        bool paced = p->cfg.mode == BENCH_PEER_PACED;
        if (logged_in && paced)
            queue_paced(p, &o, t0);
        bool want_out = o.off < o.len || (logged_in && !paced);
        struct pollfd pfd = {.fd = fd, .events = (short)(POLLIN | (want_out ? POLLOUT : 0))};
        /* paced: a spinning peer never sleeps (an instrument that sleeps
         * adds its own wake-up to every sample: the action is in its socket
         * before it looks); otherwise it sleeps until the next event is due
         * or an action comes. Not paced: wait a little. */
        int64_t wait_ns = 50000000;
        if (logged_in && paced) {
            int64_t due = t0 + (int64_t)((double)(p->next_seq + 1) * 1e9 / p->cfg.rate);
            wait_ns = due - ami_now_ns();
            wait_ns = p->cfg.spin || wait_ns < 2000 ? 0 : wait_ns > 1000000 ? 1000000 : wait_ns;
        }
        struct timespec ts = {.tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000};
        int rc = ppoll(&pfd, 1, &ts, NULL);
        if (measuring && paced && wait_ns == 0)
            note_pass(p);
        else
            p->last_pass_ns = 0;
        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0 && (pfd.revents & (POLLERR | POLLHUP)) && !(pfd.revents & POLLIN))
            break;
        if (rc > 0 && (pfd.revents & POLLIN) && read_actions(p, fd, &parser, &o, &logged_in) < 0)
            break;
        int wrc = logged_in && !paced ? flood(p, fd, &o) : flush_out(p, fd, &o);
        if (wrc < 0)
            break;
    }
    free(o.data);
    ami_parser_deinit(&parser);
}

static void *peer_main(void *arg)
{
    bench_peer_t *p = arg;
    if (p->cfg.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(p->cfg.cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    }
    if (p->cfg.realtime)
        bench_realtime();
    while (!atomic_load(&p->stop)) {
        struct pollfd pfd = {.fd = p->lfd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int fd = accept(p->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        serve(p, fd);
        close(fd);
    }
    return NULL;
}

/* ---- life ------------------------------------------------------------------------- */

static int listen_loopback(bench_peer_t *p)
{
    p->lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (p->lfd < 0)
        return -1;
    int one = 1;
    setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
    socklen_t alen = sizeof a;
    if (bind(p->lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(p->lfd, 4) < 0 ||
        getsockname(p->lfd, (struct sockaddr *)&a, &alen) < 0)
        return -1;
    p->port = ntohs(a.sin_port);
    return 0;
}

bench_peer_t *bench_peer_start(const bench_peer_config_t *cfg)
{
    bench_peer_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->cfg = *cfg;
    p->lfd = -1;
    p->measure_from = p->measure_to = UINT64_MAX; /* nothing measured until asked */
    bool paced = cfg->mode == BENCH_PEER_PACED;
    if (paced) {
        p->sent_ns = calloc(RING, sizeof *p->sent_ns);
        p->end_at = calloc(RING, sizeof *p->end_at);
        p->samples = calloc(cfg->max_samples ? cfg->max_samples : 1, sizeof *p->samples);
    }
    if ((paced && (!p->sent_ns || !p->end_at || !p->samples || cfg->rate <= 0)) ||
        (!paced && render_block(p) < 0) || listen_loopback(p) < 0) {
        fprintf(stderr, "bench_peer: cannot start: %s\n", strerror(errno));
        bench_peer_free(p);
        return NULL;
    }
    if (pthread_create(&p->th, NULL, peer_main, p) != 0) {
        bench_peer_free(p);
        return NULL;
    }
    p->started = true;
    return p;
}

uint16_t bench_peer_port(const bench_peer_t *p)
{
    return p->port;
}

/* Samples are written by the peer's thread only: the flag tells it where
 * measuring starts (the next event queued) and the counters restart. */
void bench_peer_measure(bench_peer_t *p, bool on)
{
    if (on) {
        atomic_store(&p->sent_measured, 0);
        atomic_store(&p->acked_measured, 0);
    }
    atomic_store(&p->measuring, on);
}

void bench_peer_stop(bench_peer_t *p)
{
    if (!p->started)
        return;
    atomic_store(&p->stop, true);
    pthread_join(p->th, NULL);
    p->started = false;
}

void bench_peer_free(bench_peer_t *p)
{
    if (!p)
        return;
    bench_peer_stop(p);
    if (p->lfd >= 0)
        close(p->lfd);
    free(p->block);
    free(p->id_at);
    free(p->id_ev);
    free(p->sent_ns);
    free(p->end_at);
    free(p->samples);
    free(p);
}

/* Before the sort: samples in the order their actions came back. */
bench_peer_tail_t bench_peer_tail(const bench_peer_t *p, uint32_t over_ns)
{
    bench_peer_tail_t t = {.peer_stalls = p->stalls, .peer_stalled_ns = p->stalled_ns};
    size_t run = 0;
    for (size_t i = 0; i < p->nsamples; i++) {
        if (p->samples[i] <= over_ns) {
            run = 0;
            continue;
        }
        t.over++;
        if (run++ == 0)
            t.bursts++;
        if (run > t.longest_burst)
            t.longest_burst = run;
    }
    return t;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

const uint32_t *bench_peer_samples(bench_peer_t *p, size_t *n)
{
    qsort(p->samples, p->nsamples, sizeof *p->samples, cmp_u32);
    *n = p->nsamples;
    return p->samples;
}

uint64_t bench_peer_sent(const bench_peer_t *p)
{
    return atomic_load(&p->sent_measured);
}

uint64_t bench_peer_acked(const bench_peer_t *p)
{
    return atomic_load(&p->acked_measured);
}

long bench_peer_preempted(const bench_peer_t *p)
{
    return atomic_load(&p->preempted);
}

uint64_t bench_peer_events(const bench_peer_t *p)
{
    return atomic_load(&p->events);
}
