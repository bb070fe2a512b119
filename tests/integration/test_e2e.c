/*
 * End-to-end tests of the real binaries, as an operator uses them: ami-sim
 * processes as the Asterisk cluster, ami-engine with a config file and a
 * scripts folder written into a fresh temporary folder, the engine's log
 * (stderr, logfmt) read from a file, /metrics and /healthz over HTTP,
 * signals sent to the processes.
 *
 * Everything runs on 127.0.0.1 on ports the kernel chose: ami-sim binds
 * port 0 and writes its ports to a --port-file; the engine's metrics
 * endpoint listens on port 0 and logs the port it got. Every
 * wait has a deadline of a few seconds; the teardown SIGKILLs whatever a
 * test left running and removes its folder (AMI_E2E_KEEP=1 keeps it).
 * When an expectation about a log fails, the log's tail is printed.
 *
 * Skipped (with a message) when AMI_BINARY_DIR/ami-engine or ami-sim has
 * not been built yet.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proc.h"
#include "prom_check.h"

#define ENGINE_BIN AMI_BINARY_DIR "/ami-engine"
#define SIM_BIN AMI_BINARY_DIR "/ami-sim"
#define T 4000u /* ms: the bound for anything that should happen "at once" */
#define SECRET "Zq9-secret-VALUE-77"
#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ---- the world of one test ------------------------------------------------------------- */

typedef struct world {
    char dir[512];
    char scripts[600];
    char config[600];
    char log[600];  /* the engine's stderr */
    char out[600];  /* the engine's stdout */
    uint16_t p1, p2, mport; /* 0 until the process listening there reported it */
    char env_p1[64], env_p2[64], env_secret[128];
    proc_t sim1, sim2, engine;
    int sim_runs; /* numbers the sims' output files */
} world_t;

static world_t W;

static bool binaries_missing(void)
{
    return access(ENGINE_BIN, X_OK) != 0 || access(SIM_BIN, X_OK) != 0;
}

static void need_binaries(void)
{
    if (binaries_missing()) {
        print_message("SKIP: %s or %s is not built yet; build everything first "
                      "(cmake --build build), then run ctest\n",
                      ENGINE_BIN, SIM_BIN);
        skip();
    }
}

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof W);
    if (tmpdir_make("ami-e2e-", W.dir, sizeof W.dir) < 0)
        return -1;
    snprintf(W.scripts, sizeof W.scripts, "%s/scripts", W.dir);
    snprintf(W.config, sizeof W.config, "%s/engine.lua", W.dir);
    snprintf(W.log, sizeof W.log, "%s/engine.log", W.dir);
    snprintf(W.out, sizeof W.out, "%s/engine.out", W.dir);
    if (mkdir(W.scripts, 0755) < 0)
        return -1;
    snprintf(W.env_secret, sizeof W.env_secret, "E2E_SECRET=%s", SECRET);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    proc_kill_all();
    const char *keep = getenv("AMI_E2E_KEEP");
    if (keep && *keep == '1')
        print_message("kept %s\n", W.dir);
    else
        tmpdir_remove(W.dir);
    return 0;
}

/* ---- reading the log ---------------------------------------------------------------------- */

static void dump_tail(const char *path, const char *why)
{
    size_t len = 0;
    char *text = file_read(path, &len);
    const char *from = text ? text : "";
    if (len > 6000)
        from = text + len - 6000;
    print_error("---- %s; tail of %s ----\n%s\n---- end ----\n", why, path, from);
    free(text);
}

static bool line_has_all(const char *line, size_t len, const char *const *needles)
{
    char *copy = strndup(line, len);
    bool all = copy != NULL;
    for (const char *const *k = needles; *k && all; k++)
        all = strstr(copy, *k) != NULL;
    free(copy);
    return all;
}

/* Lines of text that contain every needle. */
static size_t count_lines(const char *text, const char *const *needles)
{
    size_t n = 0;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        n += line_has_all(line, len, needles);
        line += len + (nl != NULL);
    }
    return n;
}

static size_t log_lines(const char *const *needles)
{
    char *text = file_read(W.log, NULL);
    size_t n = count_lines(text, needles);
    free(text);
    return n;
}

/* Wait until at least n lines of the engine log contain every needle. */
static bool wait_lines(const char *const *needles, size_t n, uint32_t timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        if (log_lines(needles) >= n)
            return true;
        if (mono_ms() >= deadline)
            return false;
        sleep_ms(20);
    }
}

#define EXPECT_LINES(needles, n, timeout)                                                          \
    do {                                                                                           \
        if (!wait_lines(needles, n, timeout)) {                                                    \
            dump_tail(W.log, "expected log lines missing");                                        \
            fail_msg("expected %zu log line(s) with %s ... within %u ms, got %zu", (size_t)(n),   \
                     (needles)[0], (unsigned)(timeout), log_lines(needles));                       \
        }                                                                                          \
    } while (0)

/* Byte offset of the first line at or after from that has every needle;
 * -1 if none. */
static long find_line(const char *text, long from, const char *const *needles)
{
    if (!text || from < 0)
        return -1;
    for (const char *line = text + from; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (line_has_all(line, len, needles))
            return (long)(line - text);
        line += len + (nl != NULL);
    }
    return -1;
}

/* ---- config, scripts, processes ------------------------------------------------------------- */

typedef struct engine_opts {
    int nservers;            /* 1 or 2 */
    const char *level;       /* "info" when NULL */
    int drain_grace_ms;      /* 10000 when 0 */
    const char *pbx1_auth;   /* "plain" when NULL */
    int health_quorum;       /* nservers when 0 */
    const char *metrics_extra; /* more settings in the metrics table, ", key = value" */
    int busy_poll_us;        /* 0: not in the file */
} engine_opts_t;

static void write_config(const engine_opts_t *o)
{
    char servers[600];
    snprintf(servers, sizeof servers,
             "servers = {\n"
             "  { key = \"pbx1\", host = \"127.0.0.1\", port = p1, auth = \"%s\" },\n"
             "%s"
             "}\n",
             o->pbx1_auth ? o->pbx1_auth : "plain",
             o->nservers > 1 ? "  { key = \"pbx2\", host = \"127.0.0.1\", port = p2 },\n" : "");
    FILE *f = fopen(W.config, "w");
    assert_non_null(f);
    fprintf(f,
            "-- written by test_e2e.c\n"
            "local p1 = tonumber(os.getenv(\"E2E_P1\"))\n"
            "local p2 = tonumber(os.getenv(\"E2E_P2\"))\n"
            "%s"
            "defaults = {\n"
            "  username = \"engine\", secret_env = \"E2E_SECRET\",\n"
            "  heartbeat_interval_ms = 300, heartbeat_max_failures = 2,\n"
            "  backoff_initial_ms = 100, backoff_max_ms = 500,\n"
            "  connect_timeout_ms = 1000, login_timeout_ms = 1000, action_timeout_ms = 3000,\n"
            "}\n"
            "scripts = { dir = \"scripts\", watch = false, reload_grace_ms = 1000 }\n"
            "metrics = { listen = \"127.0.0.1:\" .. os.getenv(\"E2E_METRICS\"), health_quorum = %d%s }\n"
            "log = { level = \"%s\", format = \"logfmt\" }\n"
            "drain_grace_ms = %d\n",
            servers, o->health_quorum ? o->health_quorum : o->nservers, o->metrics_extra ? o->metrics_extra : "",
            o->level ? o->level : "info",
            o->drain_grace_ms ? o->drain_grace_ms : 10000);
    if (o->busy_poll_us)
        fprintf(f, "busy_poll_us = %d\n", o->busy_poll_us);
    assert_int_equal(fclose(f), 0);
}

static void write_script(const char *name, const char *text)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", W.scripts, name);
    assert_int_equal(file_write_atomic(path, text), 0);
}

/* Start one ami-sim node and wait for READY. *port 0: the kernel chooses
 * the port, read back from the sim's --port-file into *port; otherwise the
 * node listens on *port again (a PBX that comes back where it was). */
static void start_sim(proc_t *p, const char *name, uint16_t *port, const char *cps, const char *log_level)
{
    char portbuf[16], out[700], err[700], ports[700];
    snprintf(portbuf, sizeof portbuf, "%u", (unsigned)*port);
    W.sim_runs++;
    snprintf(out, sizeof out, "%s/sim-%s-%d.out", W.dir, name, W.sim_runs);
    snprintf(err, sizeof err, "%s/sim-%s-%d.err", W.dir, name, W.sim_runs);
    snprintf(ports, sizeof ports, "%s/sim-%s-%d.ports", W.dir, name, W.sim_runs);
    const char *const *argv =
        L(SIM_BIN, "--nodes", "1", "--names", name, "--base-port", portbuf, "--port-file", ports, "--cps", cps,
          "--duration", "120", "--secret", SECRET, "--username", "engine", "--log-level",
          log_level ? log_level : "info");
    assert_int_equal(proc_spawn(p, argv, NULL, out, err), 0);
    if (!file_wait_contains(out, "READY", T)) {
        dump_tail(err, "ami-sim did not print READY");
        fail_msg("ami-sim %s (port %s) did not print READY within %u ms", name, portbuf, T);
    }
    uint16_t got = port_file_lookup(ports, name);
    if (!got || (*port && got != *port))
        fail_msg("ami-sim %s: port file %s says %u (wanted %s)", name, ports, (unsigned)got, portbuf);
    *port = got;
}

static void start_engine(void)
{
    snprintf(W.env_p1, sizeof W.env_p1, "E2E_P1=%u", (unsigned)W.p1);
    snprintf(W.env_p2, sizeof W.env_p2, "E2E_P2=%u", (unsigned)W.p2);
    const char *const *argv = L(ENGINE_BIN, "-c", W.config);
    const char *const *env = L(W.env_p1, W.env_p2, "E2E_METRICS=0", W.env_secret);
    assert_int_equal(proc_spawn(&W.engine, argv, env, W.out, W.log), 0);
    if (!file_wait_contains(W.log, "msg=\"ami-engine started\"", T)) {
        dump_tail(W.log, "the engine did not start");
        fail_msg("ami-engine did not log \"ami-engine started\" within %u ms", T);
    }
    /* the metrics endpoint listens on a port the kernel chose: the log says which */
    W.mport = engine_metrics_port(W.log, T);
    if (!W.mport) {
        dump_tail(W.log, "no metrics port in the log");
        fail_msg("ami-engine did not log the port of its metrics endpoint");
    }
}

/* ---- HTTP and metrics ------------------------------------------------------------------------ */

/* GET path on the engine's endpoint; the body (caller frees). Fails the test
 * if the request itself fails. */
static char *get(const char *path, int *status)
{
    char *body = NULL;
    size_t len = 0;
    if (http_get("127.0.0.1", W.mport, path, T, status, &body, &len) < 0)
        fail_msg("GET %s on 127.0.0.1:%u failed", path, (unsigned)W.mport);
    return body;
}

static int healthz(void)
{
    int status = 0;
    free(get("/healthz", &status));
    return status;
}

static bool wait_healthz(int want, uint32_t timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        if (healthz() == want)
            return true;
        if (mono_ms() >= deadline)
            return false;
        sleep_ms(50);
    }
}

/* The value of one series (the exact text before the value, e.g.
 * `ami_reconnects_total{server_key="pbx2"}`); -1 if absent. */
static double series_value(const char *text, const char *series)
{
    size_t sl = strlen(series);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, series, sl) == 0 && p[sl] == ' ')
            return strtod(p + sl + 1, NULL);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -1;
}

static double metric(const char *series)
{
    int status = 0;
    char *body = get("/metrics", &status);
    assert_int_equal(status, 200);
    double v = series_value(body, series);
    free(body);
    return v;
}

/* Does the exposition have a sample line for this family (or _bucket etc.)? */
static bool has_family(const char *text, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, name, nl) == 0 && (p[nl] == '{' || p[nl] == ' '))
            return true;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return false;
}

/* ---- scripts used by several tests ------------------------------------------------------------ */

/* The ami.every loops of ORIGINATE_SCRIPT count as waiting coroutines, so
 * a drain always runs to drain_grace_ms: keep it short where they run. */
#define EVERY_GRACE_MS 500
#define STOP_EVERY_MS (EVERY_GRACE_MS + 3000u)

static const char ORIGINATE_SCRIPT[] =
    "-- every 200 ms, one Originate on each server; log how it went\n"
    "local ami = require \"ami\"\n"
    "local calls = ami.metrics.counter(\"e2e_calls_total\", \"Originates answered Success (test_e2e)\")\n"
    "for _, server in ipairs({\"pbx1\", \"pbx2\"}) do\n"
    "  ami.every(0.2, function()\n"
    "    local res, err = ami.action(server, \"Originate\",\n"
    "      {Channel = \"Local/100@test\", Application = \"Wait\", Data = \"1\"})\n"
    "    if res then\n"
    "      calls:inc()\n"
    "      ami.log.info(\"originated\", {server = server, response = res.Response, channel = res.Channel})\n"
    "    else\n"
    "      ami.log.warn(\"originate failed\", {server = server, err = err})\n"
    "    end\n"
    "  end)\n"
    "end\n";

static const char *const ORIG_OK_PBX1[] = {"msg=originated", "response=Success", "server=pbx1", NULL};
static const char *const ORIG_OK_PBX2[] = {"msg=originated", "response=Success", "server=pbx2", NULL};
static const char *const LOGGED_IN_PBX1[] = {"msg=\"logged in\"", "server_key=pbx1", NULL};
static const char *const LOGGED_IN_PBX2[] = {"msg=\"logged in\"", "server_key=pbx2", NULL};

/* Two sims, the originate script, the engine; both servers logged in. */
static void start_two_node_cluster(const engine_opts_t *o)
{
    start_sim(&W.sim1, "pbx1", &W.p1, "0", NULL);
    start_sim(&W.sim2, "pbx2", &W.p2, "0", NULL);
    write_config(o);
    write_script("originate.lua", ORIGINATE_SCRIPT);
    start_engine();
    EXPECT_LINES(LOGGED_IN_PBX1, 1, T);
    EXPECT_LINES(LOGGED_IN_PBX2, 1, T);
}

/* SIGTERM the engine and expect exit 0 within timeout_ms. */
static void stop_engine(uint32_t timeout_ms)
{
    assert_int_equal(proc_signal(&W.engine, SIGTERM), 0);
    if (!proc_wait(&W.engine, timeout_ms)) {
        dump_tail(W.log, "the engine did not exit after SIGTERM");
        fail_msg("ami-engine still running %u ms after SIGTERM", timeout_ms);
    }
    assert_int_equal(W.engine.exit_code, 0);
}

/* ---- 1. originate on two nodes ---------------------------------------------------------------- */

static void engine_and_two_sim_nodes_originate_calls_and_see_originate_response(void **state)
{
    (void)state;
    need_binaries();
    engine_opts_t o = {.nservers = 2, .drain_grace_ms = EVERY_GRACE_MS};
    start_two_node_cluster(&o);

    /* OriginateResponse (Response: Success) read through res, on both servers */
    EXPECT_LINES(ORIG_OK_PBX1, 3, T);
    EXPECT_LINES(ORIG_OK_PBX2, 3, T);
    const char *const chan1[] = {"msg=originated", "server=pbx1", "channel=Local/100@test-", NULL};
    const char *const chan2[] = {"msg=originated", "server=pbx2", "channel=Local/100@test-", NULL};
    EXPECT_LINES(chan1, 1, T);
    EXPECT_LINES(chan2, 1, T);
    const char *const failed[] = {"msg=\"originate failed\"", NULL};
    assert_int_equal(log_lines(failed), 0);

    int status = 0;
    char *body = get("/healthz", &status);
    assert_int_equal(status, 200);
    assert_non_null(strstr(body, "2 of 2 servers connected (quorum 2)"));
    free(body);

    stop_engine(STOP_EVERY_MS);
}

/* ---- 2. one node dies, comes back -------------------------------------------------------------- */

static void killing_one_node_keeps_the_other_working_and_healthz_reports_it(void **state)
{
    (void)state;
    need_binaries();
    engine_opts_t o = {.nservers = 2, .health_quorum = 2, .drain_grace_ms = EVERY_GRACE_MS};
    start_two_node_cluster(&o);
    EXPECT_LINES(ORIG_OK_PBX1, 1, T);
    EXPECT_LINES(ORIG_OK_PBX2, 1, T);
    assert_int_equal(healthz(), 200);
    double reconnects_before = metric("ami_reconnects_total{server_key=\"pbx2\"}");
    assert_true(reconnects_before >= 0);

    /* pbx2 dies without a word */
    proc_kill(&W.sim2);
    if (!wait_healthz(503, T)) {
        dump_tail(W.log, "healthz stayed 200");
        fail_msg("/healthz did not turn 503 within %u ms of pbx2 dying (quorum 2)", T);
    }
    int status = 0;
    char *body = get("/healthz", &status);
    assert_int_equal(status, 503);
    assert_non_null(strstr(body, "1 of 2 servers connected (quorum 2)"));
    assert_null(strstr(body, "pbx2 connected"));
    free(body);

    /* pbx1 goes on */
    size_t ok1 = log_lines(ORIG_OK_PBX1);
    EXPECT_LINES(ORIG_OK_PBX1, ok1 + 3, T);

    /* reconnect attempts keep coming, and the state says so */
    double r1 = metric("ami_reconnects_total{server_key=\"pbx2\"}");
    assert_true(r1 > reconnects_before);
    int64_t deadline = mono_ms() + T;
    double r2 = r1;
    while (r2 <= r1 && mono_ms() < deadline) {
        sleep_ms(100);
        r2 = metric("ami_reconnects_total{server_key=\"pbx2\"}");
    }
    if (r2 <= r1)
        fail_msg("ami_reconnects_total{server_key=\"pbx2\"} stuck at %g while pbx2 is down", r1);
    double backoff = metric("ami_connection_state{server_key=\"pbx2\",state=\"backoff\"}");
    double connecting = metric("ami_connection_state{server_key=\"pbx2\",state=\"connecting\"}");
    assert_true(backoff == 1 || connecting == 1);
    assert_true(metric("ami_connection_state{server_key=\"pbx2\",state=\"connected\"}") == 0);
    assert_true(metric("ami_connection_state{server_key=\"pbx1\",state=\"connected\"}") == 1);

    /* pbx2 comes back on the same port: the engine finds it by itself */
    start_sim(&W.sim2, "pbx2", &W.p2, "0", NULL);
    if (!wait_healthz(200, T)) {
        dump_tail(W.log, "healthz stayed 503");
        fail_msg("/healthz did not return to 200 within %u ms of pbx2 restarting", T);
    }
    EXPECT_LINES(LOGGED_IN_PBX2, 2, T);
    assert_true(metric("ami_connection_state{server_key=\"pbx2\",state=\"connected\"}") == 1);
    assert_true(metric("ami_connection_state{server_key=\"pbx2\",state=\"backoff\"}") == 0);
    size_t ok2 = log_lines(ORIG_OK_PBX2);
    EXPECT_LINES(ORIG_OK_PBX2, ok2 + 2, T);

    stop_engine(STOP_EVERY_MS);
}

/* ---- 3. SIGHUP ----------------------------------------------------------------------------------- */

static const char VERSIONED_SCRIPT[] =
    "local ami = require \"ami\"\n"
    "ami.on(\"Newchannel\", function(ev)\n"
    "  ami.log.info(\"tick\", {version = %d, server = ev.server})\n"
    "end)\n";

static void sighup_reloads_an_edited_script(void **state)
{
    (void)state;
    need_binaries();
    char v[512];
    start_sim(&W.sim1, "pbx1", &W.p1, "10", NULL); /* background calls: Newchannel events */
    engine_opts_t o = {.nservers = 1};
    write_config(&o);
    snprintf(v, sizeof v, VERSIONED_SCRIPT, 1);
    write_script("versioned.lua", v);
    start_engine();
    EXPECT_LINES(LOGGED_IN_PBX1, 1, T);
    const char *const v1[] = {"msg=tick", "version=1", NULL};
    const char *const v2[] = {"msg=tick", "version=2", NULL};
    EXPECT_LINES(v1, 2, T);

    snprintf(v, sizeof v, VERSIONED_SCRIPT, 2);
    write_script("versioned.lua", v);
    sleep_ms(300); /* watch = false: nothing may happen without SIGHUP */
    const char *const reloaded[] = {"msg=\"scripts reloaded\"", NULL};
    assert_int_equal(log_lines(reloaded), 0);
    assert_int_equal(log_lines(v2), 0);

    assert_int_equal(proc_signal(&W.engine, SIGHUP), 0);
    EXPECT_LINES(reloaded, 1, T);
    EXPECT_LINES(v2, 3, T);

    char *text = file_read(W.log, NULL);
    long at = find_line(text, 0, reloaded);
    assert_true(at >= 0);
    assert_non_null(strstr(text + at, "why=SIGHUP"));
    /* after the reload line: version 2 only */
    assert_int_equal(count_lines(text + at, v1), 0);
    assert_true(count_lines(text + at, v2) >= 3);
    /* the connection was not dropped */
    assert_int_equal(count_lines(text, LOGGED_IN_PBX1), 1);
    const char *const closed[] = {"msg=\"connection closed\"", NULL};
    assert_int_equal(count_lines(text, closed), 0);
    free(text);

    stop_engine(T);
}

/* busy_poll_us is applied by SIGHUP without a restart: off, the loop never
 * spins; on, it spins after the simulator's call events. */
static void sighup_turns_busy_polling_on_without_a_restart(void **state)
{
    (void)state;
    need_binaries();
    start_sim(&W.sim1, "pbx1", &W.p1, "20", NULL);
    engine_opts_t o = {.nservers = 1};
    write_config(&o);
    start_engine();
    EXPECT_LINES(LOGGED_IN_PBX1, 1, T);
    sleep_ms(300);
    assert_true(metric("ami_loop_busy_poll_seconds_total") == 0);

    o.busy_poll_us = 10000;
    write_config(&o);
    assert_int_equal(proc_signal(&W.engine, SIGHUP), 0);
    const char *const applied[] = {"msg=\"scripts reloaded\"", NULL};
    EXPECT_LINES(applied, 1, T);
    int64_t deadline = mono_ms() + T;
    while (metric("ami_loop_busy_poll_seconds_total") <= 0 && mono_ms() < deadline)
        sleep_ms(50);
    assert_true(metric("ami_loop_busy_poll_seconds_total") > 0);
    const char *const closed[] = {"msg=\"connection closed\"", NULL};
    assert_int_equal(log_lines(closed), 0);
    stop_engine(T);
}

/* ---- 4. SIGTERM drain ----------------------------------------------------------------------------- */

static const char WAITING_SCRIPT[] =
    "local ami = require \"ami\"\n"
    "ami.on(\"FullyBooted\", function(ev)\n"
    "  ami.log.info(\"handler-waiting\", {server = ev.server})\n"
    "  ami.sleep(%s)\n"
    "  ami.log.info(\"finished-after-wait\", {server = ev.server})\n"
    "end)\n";

static const char *const DRAINING[] = {"msg=\"draining:", NULL};
static const char *const WAITING[] = {"msg=handler-waiting", NULL};
static const char *const FINISHED[] = {"msg=finished-after-wait", NULL};
static const char *const LOGGING_OFF[] = {"msg=\"logging off from every server\"", NULL};
static const char *const STOPPED_PBX1[] = {"msg=\"server state\"", "server_key=pbx1", "to=stopped",
                                           "reason=\"logged off\"", NULL};
static const char *const ENGINE_STOPPED[] = {"msg=\"ami-engine stopped\"", NULL};
static const char *const GRACE_OVER[] = {"drain grace over; cancelling waiting coroutines", NULL};

static void sigterm_drains_waiting_coroutines_then_logs_off_and_exits_zero(void **state)
{
    (void)state;
    need_binaries();
    char script[512];
    start_sim(&W.sim1, "pbx1", &W.p1, "0", "debug");
    char sim_err[sizeof W.sim1.err_path];
    snprintf(sim_err, sizeof sim_err, "%s", W.sim1.err_path);
    /* A grace far longer than this test's own bound for the exit: the engine
     * passes only if it stops waiting as soon as the handler is done (the
     * log's order proves it waited for the handler at all). */
    engine_opts_t o = {.nservers = 1, .level = "debug", .drain_grace_ms = 120000};
    write_config(&o);
    snprintf(script, sizeof script, WAITING_SCRIPT, "1.5");
    write_script("wait.lua", script);
    start_engine();
    EXPECT_LINES(WAITING, 1, T);

    int64_t t0 = mono_ms();
    stop_engine(30000);
    int64_t took = mono_ms() - t0;
    print_message("engine exited %lld ms after SIGTERM\n", (long long)took);

    char *text = file_read(W.log, NULL);
    long draining = find_line(text, 0, DRAINING);
    long finished = find_line(text, draining, FINISHED);
    long logoff = find_line(text, finished, LOGGING_OFF);
    long stopped = find_line(text, logoff, STOPPED_PBX1);
    long end = find_line(text, stopped, ENGINE_STOPPED);
    if (draining < 0 || finished < 0 || logoff < 0 || stopped < 0 || end < 0) {
        dump_tail(W.log, "drain sequence out of order");
        fail_msg("expected draining -> finished-after-wait -> logging off -> pbx1 stopped (logged off) -> "
                 "ami-engine stopped; got offsets %ld %ld %ld %ld %ld",
                 draining, finished, logoff, stopped, end);
    }
    assert_non_null(strstr(text + draining, "why=SIGTERM"));
    assert_int_equal(count_lines(text, GRACE_OVER), 0);
    const char *const logoff_sent[] = {"msg=\"action sent\"", "server_key=pbx1", "action=\"Logoff", NULL};
    assert_int_equal(count_lines(text, logoff_sent), 1);
    free(text);

    /* the simulated Asterisk saw the Logoff: it answered Goodbye and closed the session */
    if (!file_wait_contains(sim_err, "reason=\"closed after reply\"", T)) {
        dump_tail(sim_err, "ami-sim never closed the session after Logoff");
        fail_msg("ami-sim did not close the engine's session after a Logoff");
    }
}

static void sigterm_cancels_coroutines_still_waiting_after_drain_grace_and_exits_zero(void **state)
{
    (void)state;
    need_binaries();
    char script[512];
    start_sim(&W.sim1, "pbx1", &W.p1, "0", NULL);
    engine_opts_t o = {.nservers = 1, .level = "debug", .drain_grace_ms = 500};
    write_config(&o);
    snprintf(script, sizeof script, WAITING_SCRIPT, "30");
    write_script("wait.lua", script);
    start_engine();
    EXPECT_LINES(WAITING, 1, T);

    int64_t t0 = mono_ms();
    stop_engine(500 + 2500);
    int64_t took = mono_ms() - t0;
    print_message("engine exited %lld ms after SIGTERM\n", (long long)took);
    assert_true(took >= 400);

    char *text = file_read(W.log, NULL);
    long draining = find_line(text, 0, DRAINING);
    long cancelled = find_line(text, draining, GRACE_OVER);
    long logoff = find_line(text, cancelled, LOGGING_OFF);
    long end = find_line(text, logoff, ENGINE_STOPPED);
    if (draining < 0 || cancelled < 0 || logoff < 0 || end < 0) {
        dump_tail(W.log, "drain sequence out of order");
        fail_msg("expected draining -> drain grace over; cancelling -> logging off -> ami-engine stopped; "
                 "got offsets %ld %ld %ld %ld",
                 draining, cancelled, logoff, end);
    }
    assert_non_null(strstr(text + cancelled, "coroutines=1"));
    assert_int_equal(count_lines(text, FINISHED), 0);
    assert_int_equal(count_lines(text, STOPPED_PBX1), 1);
    free(text);
}

/* ---- 5. /metrics -------------------------------------------------------------------------------- */

static void metrics_endpoint_passes_a_strict_prometheus_check(void **state)
{
    (void)state;
    need_binaries();
    engine_opts_t o = {.nservers = 2, .drain_grace_ms = EVERY_GRACE_MS};
    start_two_node_cluster(&o);
    EXPECT_LINES(ORIG_OK_PBX1, 2, T);
    EXPECT_LINES(ORIG_OK_PBX2, 2, T);
    assert_int_equal(healthz(), 200); /* so ami_http_requests_total has a series too */

    int status = 0;
    char *body = get("/metrics", &status);
    assert_int_equal(status, 200);
    char why[256] = "";
    int rc = prom_check(body, strlen(body), why, sizeof why);
    if (rc != 0)
        print_error("prom_check: %s\n", why);
    assert_int_equal(rc, 0);

    static const char *const families[] = {
        "ami_connection_state",         "ami_reconnects_total",
        "ami_heartbeat_failures_total", "ami_actions_sent_total",
        "ami_actions_completed_total",  "ami_action_latency_seconds_bucket",
        "ami_events_received_total",    "ami_correlation_events_dropped_total",
        "ami_lua_handler_errors_total", "ami_lua_handler_kills_total",
        "ami_loop_iteration_seconds_bucket", "ami_lua_memory_bytes",
        "ami_lua_reloads_total",        "ami_lua_reload_failures_total",
        "ami_http_requests_total",      "e2e_calls_total",
    };
    char missing[1024] = "";
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (!has_family(body, families[i])) {
            strncat(missing, " ", sizeof missing - strlen(missing) - 1);
            strncat(missing, families[i], sizeof missing - strlen(missing) - 1);
        }
    if (missing[0])
        fail_msg("/metrics lacks:%s", missing);
    /* the figures move */
    assert_true(series_value(body, "ami_actions_sent_total{server_key=\"pbx1\"}") > 0);
    assert_true(series_value(body, "ami_actions_completed_total{server_key=\"pbx2\"}") > 0);
    assert_true(series_value(body, "ami_events_received_total{server_key=\"pbx1\"}") > 0);
    assert_true(series_value(body, "e2e_calls_total") >= 4);
    assert_true(series_value(body, "ami_lua_memory_bytes") > 0);
    assert_true(series_value(body, "ami_connection_state{server_key=\"pbx1\",state=\"connected\"}") == 1);
    free(body);

    stop_engine(STOP_EVERY_MS);
}

/* An idle connection to the endpoint: connected, never a byte sent. */
static int idle_connection(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(W.mport),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void metrics_limits_from_the_config_reach_the_endpoint(void **state)
{
    (void)state;
    need_binaries();
    engine_opts_t o = {.nservers = 2, .drain_grace_ms = EVERY_GRACE_MS,
                       .metrics_extra = ", max_connections = 4, request_timeout_ms = 1000"};
    start_two_node_cluster(&o);
    int idle[5];
    for (int i = 0; i < 5; i++) {
        idle[i] = idle_connection();
        sleep_ms(20); /* each in an accept batch of its own */
    }
    /* the fifth idle one and this scrape each made room by evicting the oldest */
    assert_true(metric("ami_http_connections_evicted_total{phase=\"read\"}") == 2);
    sleep_ms(1300);
    assert_true(metric("ami_http_timeouts_total{phase=\"read\"}") == 3);
    for (int i = 0; i < 5; i++)
        close(idle[i]);
    stop_engine(STOP_EVERY_MS);
}

/* ---- 6. --check-config ----------------------------------------------------------------------------- */

#define GOOD_SERVER                                                                                \
    "servers = { { key = \"pbx1\", host = \"127.0.0.1\", port = 5038, username = \"engine\", "     \
    "secret_env = \"E2E_SECRET\" } }\n"

typedef struct bad_config {
    const char *what;
    const char *text;
    const char *expect; /* a fragment of stderr */
} bad_config_t;

static int check_config(const char *text, char **out, char **err)
{
    char path[700], o[700], e[700];
    snprintf(path, sizeof path, "%s/check.lua", W.dir);
    snprintf(o, sizeof o, "%s/check.out", W.dir);
    snprintf(e, sizeof e, "%s/check.err", W.dir);
    assert_int_equal(file_write_atomic(path, text), 0);
    int rc = proc_run(L(ENGINE_BIN, "--check-config", "-c", path), L(W.env_secret), o, e, T);
    *out = file_read(o, NULL);
    *err = file_read(e, NULL);
    assert_non_null(*out);
    assert_non_null(*err);
    return rc;
}

static void check_config_rejects_a_catalogue_of_bad_configs(void **state)
{
    (void)state;
    need_binaries();
    static const bad_config_t bad[] = {
        {"unknown key", GOOD_SERVER "serverz = {}\n", "serverz: unknown setting; did you mean \"servers\"?"},
        {"unknown option in a server",
         "servers = { { key = \"pbx1\", host = \"127.0.0.1\", username = \"engine\", secret = \"" SECRET
         "\", prot = 5038 } }\n",
         "servers[1] (pbx1): unknown option \"prot\""},
        {"wrong type", GOOD_SERVER "defaults = { port = \"5038\" }\n",
         "defaults.port: expected an integer from 1 to 65535, got string \"5038\""},
        {"wrong type (boolean)", GOOD_SERVER "scripts = { dir = false, watch = \"yes\" }\n", "scripts.watch"},
        {"missing secret", "servers = { { key = \"pbx1\", host = \"127.0.0.1\", username = \"engine\" } }\n",
         "servers[1] (pbx1).secret: missing"},
        {"secret_env not set",
         "servers = { { key = \"pbx1\", host = \"127.0.0.1\", username = \"engine\", "
         "secret_env = \"E2E_SURELY_UNSET_VAR\" } }\n",
         "E2E_SURELY_UNSET_VAR is not set"},
        {"hostname with enforce_ip_endpoints",
         "servers = { { key = \"pbx1\", host = \"pbx.example.com\", username = \"engine\", secret = \"" SECRET
         "\" } }\n",
         "\"pbx.example.com\" is not an IP address and enforce_ip_endpoints is on"},
        {"duplicate key",
         "servers = { { key = \"pbx1\", host = \"127.0.0.1\", username = \"engine\", secret_env = \"E2E_SECRET\" },\n"
         "            { key = \"pbx1\", host = \"127.0.0.2\", username = \"engine\", secret_env = \"E2E_SECRET\" } }\n",
         "\"pbx1\" is also the key of servers[1]"},
        {"bad metrics.listen (hostname)", GOOD_SERVER "metrics = { listen = \"localhost:9100\" }\n",
         "metrics.listen: \"localhost:9100\" is not ip:port"},
        {"bad metrics.listen (no port)", GOOD_SERVER "metrics = { listen = \"127.0.0.1\" }\n",
         "metrics.listen: \"127.0.0.1\" is not ip:port"},
        {"syntax error", GOOD_SERVER "log = { level = \"info\"\n", "fix the Lua syntax"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out, *err;
        int rc = check_config(bad[i].text, &out, &err);
        if (rc != 1 || !strstr(err, bad[i].expect) || strstr(err, SECRET) || strstr(out, SECRET))
            fail_msg("%s: expected exit 1 and \"%s\" on stderr (and no secret); got exit %d, stderr:\n%s"
                     "stdout:\n%s",
                     bad[i].what, bad[i].expect, rc, err, out);
        assert_non_null(strstr(err, "check.lua has"));
        free(out);
        free(err);
    }

    /* a good one: exit 0, a summary, and no secret in it */
    char *out, *err;
    static const char good[] =
        "servers = {\n"
        "  { key = \"pbx1\", host = \"127.0.0.1\", username = \"engine\", secret_env = \"E2E_SECRET\" },\n"
        "  { key = \"pbx2\", host = \"127.0.0.2\", username = \"engine\", auth = \"md5\",\n"
        "    secret = \"" SECRET "\" },\n"
        "}\n"
        "scripts = { dir = false }\n"
        "metrics = { listen = \"127.0.0.1:9100\", health_quorum = 1 }\n"
        "log = { level = \"debug\" }\n";
    int rc = check_config(good, &out, &err);
    if (rc != 0)
        fail_msg("a good config: exit %d, stderr:\n%s", rc, err);
    assert_non_null(strstr(out, "check.lua: valid"));
    assert_non_null(strstr(out, "pbx1"));
    assert_non_null(strstr(out, "pbx2"));
    assert_non_null(strstr(out, "secret from env E2E_SECRET"));
    assert_non_null(strstr(out, "secret inline"));
    assert_null(strstr(out, SECRET));
    assert_null(strstr(err, SECRET));
    free(out);
    free(err);
}

/* ---- 7. the secret stays secret ----------------------------------------------------------------- */

static void secret_never_appears_in_any_log_line_at_debug_level(void **state)
{
    (void)state;
    need_binaries();
    engine_opts_t o = {.nservers = 2, .level = "debug", .pbx1_auth = "md5", .drain_grace_ms = EVERY_GRACE_MS};
    start_two_node_cluster(&o);
    EXPECT_LINES(ORIG_OK_PBX1, 2, T);
    EXPECT_LINES(ORIG_OK_PBX2, 2, T);

    /* one reconnect (a second plain Login) */
    proc_kill(&W.sim2);
    start_sim(&W.sim2, "pbx2", &W.p2, "0", NULL);
    EXPECT_LINES(LOGGED_IN_PBX2, 2, T);
    size_t ok2 = log_lines(ORIG_OK_PBX2);
    EXPECT_LINES(ORIG_OK_PBX2, ok2 + 1, T);

    int status = 0;
    char *metrics = get("/metrics", &status);
    assert_int_equal(status, 200);
    char *health = get("/healthz", &status);
    stop_engine(STOP_EVERY_MS);

    char *log = file_read(W.log, NULL);
    char *out = file_read(W.out, NULL);
    assert_non_null(log);
    assert_non_null(out);
    static const char *const pieces[] = {SECRET, "secret-VALUE", "VALUE-77"};
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        const char *hit = strstr(log, pieces[i]);
        if (hit) {
            const char *line = hit;
            while (line > log && line[-1] != '\n')
                line--;
            const char *nl = strchr(hit, '\n');
            fail_msg("the secret (\"%s\") is in the engine log: %.*s", pieces[i],
                     (int)(nl ? nl - line : (long)strlen(line)), line);
        }
        assert_null(strstr(out, pieces[i]));
        assert_null(strstr(metrics, pieces[i]));
        assert_null(strstr(health, pieces[i]));
    }

    /* the test can fail: the Login path really was logged, redacted */
    const char *const md5_login[] = {"msg=\"action sent\"", "server_key=pbx1", "action=\"Login ",
                                     "AuthType=MD5", "Key=[redacted]", NULL};
    const char *const challenge[] = {"msg=\"action sent\"", "server_key=pbx1", "action=\"Challenge ", NULL};
    const char *const plain_login[] = {"msg=\"action sent\"", "server_key=pbx2", "action=\"Login ",
                                       "Secret=[redacted]", NULL};
    assert_true(count_lines(log, challenge) >= 1);
    assert_true(count_lines(log, md5_login) >= 1);
    assert_true(count_lines(log, plain_login) >= 2); /* the first login and the reconnect */
    free(log);
    free(out);
    free(metrics);
    free(health);
}

/* ---- 8. arguments --------------------------------------------------------------------------------- */

static int run_engine(const char *const *argv, char **out, char **err)
{
    char o[700], e[700];
    snprintf(o, sizeof o, "%s/args.out", W.dir);
    snprintf(e, sizeof e, "%s/args.err", W.dir);
    int rc = proc_run(argv, NULL, o, e, T);
    *out = file_read(o, NULL);
    *err = file_read(e, NULL);
    assert_non_null(*out);
    assert_non_null(*err);
    return rc;
}

static void version_and_help_and_bad_arguments(void **state)
{
    (void)state;
    need_binaries();
    char *out, *err;

    assert_int_equal(run_engine(L(ENGINE_BIN, "--version"), &out, &err), 0);
    assert_true(strncmp(out, "ami-engine ", 11) == 0);
    free(out);
    free(err);

    assert_int_equal(run_engine(L(ENGINE_BIN, "--help"), &out, &err), 0);
    assert_non_null(strstr(out, "usage: ami-engine"));
    assert_non_null(strstr(out, "--check-config"));
    free(out);
    free(err);

    assert_int_equal(run_engine(L(ENGINE_BIN, "--no-such-option"), &out, &err), 2);
    assert_non_null(strstr(err, "--no-such-option"));
    assert_non_null(strstr(err, "usage: ami-engine"));
    free(out);
    free(err);

    assert_int_equal(run_engine(L(ENGINE_BIN), &out, &err), 2); /* no -c */
    assert_non_null(strstr(err, "usage: ami-engine"));
    free(out);
    free(err);

    char missing[700];
    snprintf(missing, sizeof missing, "%s/no-such-config.lua", W.dir);
    assert_int_equal(run_engine(L(ENGINE_BIN, "-c", missing), &out, &err), 1);
    assert_non_null(strstr(err, missing));
    assert_non_null(strstr(err, "cannot read the config file"));
    free(out);
    free(err);

    assert_int_equal(run_engine(L(ENGINE_BIN, "--check-config", "-c", missing), &out, &err), 1);
    assert_non_null(strstr(err, "cannot read the config file"));
    free(out);
    free(err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(engine_and_two_sim_nodes_originate_calls_and_see_originate_response,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(killing_one_node_keeps_the_other_working_and_healthz_reports_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(sighup_reloads_an_edited_script, setup, teardown),
        cmocka_unit_test_setup_teardown(sighup_turns_busy_polling_on_without_a_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(sigterm_drains_waiting_coroutines_then_logs_off_and_exits_zero, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(sigterm_cancels_coroutines_still_waiting_after_drain_grace_and_exits_zero,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(metrics_endpoint_passes_a_strict_prometheus_check, setup, teardown),
        cmocka_unit_test_setup_teardown(metrics_limits_from_the_config_reach_the_endpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(check_config_rejects_a_catalogue_of_bad_configs, setup, teardown),
        cmocka_unit_test_setup_teardown(secret_never_appears_in_any_log_line_at_debug_level, setup, teardown),
        cmocka_unit_test_setup_teardown(version_and_help_and_bad_arguments, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
