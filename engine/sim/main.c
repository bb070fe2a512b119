/*
 * ami-sim: a simulated Asterisk cluster for script authors, specs, the demo
 * and benchmarks. One node per port, each speaking AMI like Asterisk 22.
 * Prints one "listening" line per node and then READY on stdout, so scripts
 * can wait for it; with --port-file it also writes "name port" lines to a
 * file (atomically, before READY), so a test can let the kernel choose the
 * ports (--base-port 0) and read them back. SIGINT/SIGTERM stop it cleanly.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "obs/log.h"
#include "sim/sim.h"

#define MAX_NODES 256 /* as many as the engine connects to (AMI_CONFIG_MAX_SERVERS) */
#define SUMMARY_EVERY_S 10.0
#define EXIT_USAGE 2

#ifndef AMI_VERSION
#define AMI_VERSION "dev"
#endif

typedef struct options {
    long nodes;
    long base_port;
    const char *bind_ip;
    char *names[MAX_NODES];
    size_t nnames;
    double cps;
    long call_duration_ms;
    const char *username, *secret;
    double flood;
    const char *replay;
    const char *port_file;
    double replay_speed;
    double duration_s;
    long seed;
    int log_level;
    const char *tls_cert, *tls_key, *tls_client_ca;
} options_t;

static ami_sim_t *g_sim;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ami-sim [options]\n"
            "  --nodes N            number of simulated Asterisk nodes (default 2)\n"
            "  --base-port P        node i listens on P+i; 0 = ephemeral ports (default 5038)\n"
            "  --bind IP            address to listen on (default 127.0.0.1; IPv6 literal allowed)\n"
            "  --port-file PATH     write \"name port\" per node to PATH once listening (with\n"
            "                       --base-port 0: the ports the kernel chose)\n"
            "  --names a,b,...      node names (default pbx1,pbx2,...)\n"
            "  --cps RATE           background calls per second per node (default 1; 0 = none)\n"
            "  --call-duration MS   mean talk time of generated calls (default 3000)\n"
            "  --username U         accepted AMI user (default engine)\n"
            "  --secret S           its secret (default s3cret)\n"
            "  --flood RATE|max     extra events per second to logged-in sessions, or max speed\n"
            "  --replay FILE.flow   serve a recorded session on every connection\n"
            "  --replay-speed X     replay pacing factor (default 1; 0 = no waits)\n"
            "  --duration SECONDS   stop after this long (default: run until SIGINT/SIGTERM)\n"
            "  --seed N             traffic generator seed\n"
            "  --log-level LEVEL    debug, info, warn, error, off (default info)\n"
            "  --tls-cert FILE      serve AMI over TLS with this PEM certificate (as tlsenable)\n"
            "  --tls-key FILE       its PEM private key (default: in the --tls-cert file)\n"
            "  --tls-client-ca FILE require a client certificate signed by this CA\n"
            "  --help, --version\n");
}

static int bad(const char *fmt, const char *arg)
{
    fprintf(stderr, "ami-sim: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    usage(stderr);
    return -1;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double lo, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo) || v > 1e12)
        return -1;
    *out = v;
    return 0;
}

static int parse_names(options_t *o, char *list)
{
    o->nnames = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (o->nnames == MAX_NODES)
            return bad("--names: at most %s names", "64");
        o->names[o->nnames++] = tok;
    }
    return o->nnames ? 0 : bad("--names needs at least one name: '%s'", list);
}

enum { OPT_NODES = 1, OPT_PORT, OPT_BIND, OPT_NAMES, OPT_CPS, OPT_DUR, OPT_USER, OPT_SECRET,
       OPT_FLOOD, OPT_REPLAY, OPT_SPEED, OPT_DURATION, OPT_SEED, OPT_LOG, OPT_HELP, OPT_VERSION,
       OPT_TLS_CERT, OPT_TLS_KEY, OPT_TLS_CLIENT_CA, OPT_PORT_FILE };

static const struct option LONG_OPTS[] = {
    {"nodes", required_argument, NULL, OPT_NODES},
    {"base-port", required_argument, NULL, OPT_PORT},
    {"bind", required_argument, NULL, OPT_BIND},
    {"port-file", required_argument, NULL, OPT_PORT_FILE},
    {"names", required_argument, NULL, OPT_NAMES},
    {"cps", required_argument, NULL, OPT_CPS},
    {"call-duration", required_argument, NULL, OPT_DUR},
    {"username", required_argument, NULL, OPT_USER},
    {"secret", required_argument, NULL, OPT_SECRET},
    {"flood", required_argument, NULL, OPT_FLOOD},
    {"replay", required_argument, NULL, OPT_REPLAY},
    {"replay-speed", required_argument, NULL, OPT_SPEED},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"seed", required_argument, NULL, OPT_SEED},
    {"log-level", required_argument, NULL, OPT_LOG},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-client-ca", required_argument, NULL, OPT_TLS_CLIENT_CA},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* 1, or -1 after saying what the option wanted. */
static int opt_long(const char *opt, const char *arg, long lo, long hi, long *out)
{
    if (parse_long(arg, lo, hi, out) == 0)
        return 1;
    fprintf(stderr, "ami-sim: %s wants an integer in %ld..%ld, not '%s'\n", opt, lo, hi, arg);
    usage(stderr);
    return -1;
}

static int opt_double(const char *opt, const char *arg, double lo, double hi, double *out)
{
    if (parse_double(arg, lo, out) == 0 && *out <= hi)
        return 1;
    fprintf(stderr, "ami-sim: %s wants a number in %g..%g, not '%s'\n", opt, lo, hi, arg);
    usage(stderr);
    return -1;
}

static int opt_bind(options_t *o, const char *arg)
{
    unsigned char addr[16];
    if (inet_pton(AF_INET, arg, addr) != 1 && inet_pton(AF_INET6, arg, addr) != 1)
        return bad("--bind wants an IPv4 or IPv6 literal, not '%s'", arg);
    o->bind_ip = arg;
    return 1;
}

static int opt_flood(options_t *o, const char *arg)
{
    if (strcmp(arg, "max") == 0) {
        o->flood = -1;
        return 1;
    }
    if (parse_double(arg, 0, &o->flood) == 0 && o->flood > 0)
        return 1;
    return bad("--flood wants a rate > 0 or 'max', not '%s'", arg);
}

/* 1: handled, keep going. -1: bad. */
static int apply_option(options_t *o, int c, char *arg, bool *nodes_given)
{
    switch (c) {
    case OPT_NODES:
        *nodes_given = true;
        return opt_long("--nodes", arg, 1, MAX_NODES, &o->nodes);
    case OPT_PORT:
        return opt_long("--base-port", arg, 0, 65535, &o->base_port);
    case OPT_BIND:
        return opt_bind(o, arg);
    case OPT_PORT_FILE:
        o->port_file = arg;
        return 1;
    case OPT_NAMES:
        return parse_names(o, arg) < 0 ? -1 : 1;
    case OPT_CPS:
        return opt_double("--cps", arg, 0, 1e6, &o->cps);
    case OPT_DUR:
        return opt_long("--call-duration", arg, 1, 86400000, &o->call_duration_ms);
    case OPT_USER:
        o->username = arg;
        return 1;
    case OPT_SECRET:
        o->secret = arg;
        return 1;
    case OPT_FLOOD:
        return opt_flood(o, arg);
    case OPT_REPLAY:
        o->replay = arg;
        return 1;
    case OPT_SPEED:
        return opt_double("--replay-speed", arg, 0, 1e6, &o->replay_speed);
    case OPT_DURATION:
        return opt_double("--duration", arg, 0, 4e6, &o->duration_s);
    case OPT_SEED:
        return opt_long("--seed", arg, 0, 4294967295L, &o->seed);
    case OPT_LOG:
        o->log_level = ami_log_level_parse(arg);
        return o->log_level < 0 ? bad("--log-level: unknown level '%s'", arg) : 1;
    case OPT_TLS_CERT:
        o->tls_cert = arg;
        return 1;
    case OPT_TLS_KEY:
        o->tls_key = arg;
        return 1;
    case OPT_TLS_CLIENT_CA:
        o->tls_client_ca = arg;
        return 1;
    default:
        return bad("%s", "unknown option");
    }
}

/* 0 run, 1 exit 0 (help/version), -1 exit 2. */
static int parse_args(options_t *o, int argc, char **argv)
{
    *o = (options_t){.nodes = 2, .base_port = 5038, .bind_ip = "127.0.0.1", .cps = 1,
                     .call_duration_ms = 3000, .username = "engine", .secret = "s3cret",
                     .replay_speed = 1, .log_level = AMI_LOG_INFO};
    bool nodes_given = false;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", LONG_OPTS, NULL)) != -1) {
        if (c == OPT_HELP) {
            usage(stdout);
            return 1;
        }
        if (c == OPT_VERSION) {
            printf("ami-sim %s (simulates Asterisk 22.10.1, AMI 11.0.0)\n", AMI_VERSION);
            return 1;
        }
        if (c == '?')
            return bad("bad option or missing value: '%s'", argv[optind - 1]);
        if (apply_option(o, c, optarg, &nodes_given) < 0)
            return -1;
    }
    if (optind < argc)
        return bad("unexpected argument '%s'", argv[optind]);
    if ((o->tls_key || o->tls_client_ca) && !o->tls_cert)
        return bad("%s needs --tls-cert", o->tls_key ? "--tls-key" : "--tls-client-ca");
    if (o->nnames && !nodes_given)
        o->nodes = (long)o->nnames;
    if (o->base_port && o->base_port + o->nodes - 1 > 65535)
        return bad("--base-port %s leaves no room for every node's port", "+ nodes");
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    if (g_sim)
        ami_sim_stop(g_sim);
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void summary(ami_sim_t *sim, ami_logger_t *log)
{
    for (size_t i = 0; i < ami_sim_node_count(sim); i++) {
        ami_sim_node_t *n = ami_sim_node_at(sim, i);
        ami_sim_node_stats_t st = ami_sim_node_stats(n);
        AMI_LOG(log, AMI_LOG_INFO, "sim node summary", AMI_F_STR("node", ami_sim_node_name(n)),
                AMI_F_UINT("sessions", st.sessions_live), AMI_F_UINT("calls_active", st.calls_active),
                AMI_F_UINT("events_sent", st.events_sent), AMI_F_UINT("actions", st.actions),
                AMI_F_UINT("slow_clients_dropped", st.sessions_dropped_slow));
    }
}

typedef struct ticker {
    ev_timer w;
    ami_sim_t *sim;
    ami_logger_t *log;
} ticker_t;

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    ticker_t *t = (ticker_t *)w;
    summary(t->sim, t->log);
}

/* "name port" per node, written to PATH.tmp and renamed: a reader never
 * sees half a file. 0, or -1 after saying why. */
static int write_port_file(ami_sim_t *sim, const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        fprintf(stderr, "ami-sim: --port-file path is too long\n");
        return -1;
    }
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "ami-sim: cannot write %s: %s\n", tmp, strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < ami_sim_node_count(sim); i++) {
        ami_sim_node_t *n = ami_sim_node_at(sim, i);
        fprintf(f, "%s %u\n", ami_sim_node_name(n), (unsigned)ami_sim_node_port(n));
    }
    bool ok = fclose(f) == 0;
    if (!ok || rename(tmp, path) < 0) {
        fprintf(stderr, "ami-sim: cannot write %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int add_nodes(ami_sim_t *sim, const options_t *o)
{
    for (long i = 0; i < o->nodes; i++) {
        char name[32];
        snprintf(name, sizeof name, "pbx%ld", i + 1);
        ami_sim_node_config_t cfg = {
            .name = (size_t)i < o->nnames ? o->names[i] : name,
            .bind_ip = o->bind_ip,
            .port = (uint16_t)(o->base_port ? o->base_port + i : 0),
            .username = o->username,
            .secret = o->secret,
            .calls_per_second = o->cps,
            .call_duration_ms = (uint32_t)o->call_duration_ms,
            .seed = (uint32_t)(o->seed + i),
            .replay_flow = o->replay,
            .tls_cert_file = o->tls_cert,
            .tls_key_file = o->tls_key,
            .tls_client_ca_file = o->tls_client_ca,
        };
        ami_err_t err;
        ami_sim_node_t *n = ami_sim_add_node(sim, &cfg, &err);
        if (!n) {
            fprintf(stderr, "ami-sim: %s\n", err.msg);
            return -1;
        }
        ami_sim_node_set_replay_speed(n, o->replay_speed);
        ami_sim_faults_t f = {.flood_events_per_sec = o->flood};
        ami_sim_node_set_faults(n, &f);
        bool v6 = strchr(o->bind_ip, ':') != NULL;
        printf("ami-sim: node %s listening on %s%s%s:%u (user %s%s)\n", ami_sim_node_name(n),
               v6 ? "[" : "", o->bind_ip, v6 ? "]" : "", (unsigned)ami_sim_node_port(n), o->username,
               o->tls_cert ? ", TLS" : "");
    }
    if (o->port_file && write_port_file(sim, o->port_file) < 0)
        return -1;
    printf("READY\n");
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    options_t o;
    int rc = parse_args(&o, argc, argv);
    if (rc)
        return rc > 0 ? 0 : EXIT_USAGE;
    ami_logger_config_t lc;
    ami_logger_config_default(&lc);
    lc.level = (ami_log_level_t)o.log_level;
    ami_logger_t *log = ami_logger_new(&lc);
    ami_sim_t *sim = ami_sim_new(NULL, log);
    if (!sim) {
        fprintf(stderr, "ami-sim: cannot create the event loop\n");
        ami_logger_free(log);
        return 1;
    }
    /* before READY: a script may signal us as soon as it reads that line */
    g_sim = sim;
    install_signals();
    if (add_nodes(sim, &o) < 0) {
        g_sim = NULL;
        ami_sim_free(sim);
        ami_logger_free(log);
        return 1;
    }
    ticker_t t = {.sim = sim, .log = log};
    ev_timer_init(&t.w, on_tick, SUMMARY_EVERY_S, SUMMARY_EVERY_S);
    ev_timer_start(ami_sim_loop(sim), &t.w);
    uint32_t ms = (uint32_t)(o.duration_s * 1000.0);
    ami_sim_run(sim, o.duration_s > 0 && ms == 0 ? 1 : ms);
    ev_timer_stop(ami_sim_loop(sim), &t.w);
    summary(sim, log);
    g_sim = NULL;
    ami_sim_free(sim);
    ami_logger_free(log);
    return 0;
}
