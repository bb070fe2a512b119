/*
 * ami.http end to end, as an operator runs it: the real ami-engine with a
 * config that has an http section and a script that posts to a web
 * service (the simulated one, in this test process on its own thread);
 * the answer reaches the script, /metrics shows the request by host and
 * status class without a single refused series (no name clash with the
 * endpoint's own ami_http_* families) and passes a strict Prometheus
 * check; --check-config describes the section; SIGTERM still exits 0.
 *
 * 127.0.0.1 only, ports chosen at run time; every wait has a deadline;
 * the teardown kills what is left and removes the folder.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proc.h"
#include "prom_check.h"
#include "sim/sim_http.h"

#define ENGINE_BIN AMI_BINARY_DIR "/ami-engine"
#define SIM_BIN AMI_BINARY_DIR "/ami-sim"
#define T 5000u
#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static struct {
    char dir[512], scripts[600], config[600], log[600], out[600];
    uint16_t pbx, mport;
    proc_t sim, engine;
    ami_sim_http_t *web;
} W;

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof W);
    if (tmpdir_make("ami-e2e-http-", W.dir, sizeof W.dir) < 0)
        return -1;
    snprintf(W.scripts, sizeof W.scripts, "%s/scripts", W.dir);
    snprintf(W.config, sizeof W.config, "%s/engine.lua", W.dir);
    snprintf(W.log, sizeof W.log, "%s/engine.log", W.dir);
    snprintf(W.out, sizeof W.out, "%s/engine.out", W.dir);
    ami_err_t err;
    W.web = ami_sim_http_start(&err);
    return mkdir(W.scripts, 0755) == 0 && W.web ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    proc_kill_all();
    ami_sim_http_stop(W.web);
    tmpdir_remove(W.dir);
    return 0;
}

static void dump_log(const char *why)
{
    char *text = file_read(W.log, NULL);
    print_error("---- %s; %s ----\n%s\n---- end ----\n", why, W.log, text ? text : "");
    free(text);
}

static void write_file(const char *path, const char *text)
{
    assert_int_equal(file_write_atomic(path, text), 0);
}

static void start(const char *http_section)
{
    char ports[700], path[700], text[2048];
    snprintf(ports, sizeof ports, "%s/sim.ports", W.dir);
    snprintf(path, sizeof path, "%s/sim.out", W.dir);
    char err[700];
    snprintf(err, sizeof err, "%s/sim.err", W.dir);
    /* every port from the kernel: ami-sim writes its own, the engine logs its own */
    assert_int_equal(proc_spawn(&W.sim, L(SIM_BIN, "--nodes", "1", "--names", "pbx1", "--base-port", "0",
                                          "--port-file", ports, "--cps", "0", "--duration", "120", "--secret",
                                          "pw", "--username", "engine"),
                                NULL, path, err),
                     0);
    assert_true(file_wait_contains(path, "READY", T));
    W.pbx = port_file_wait(ports, "pbx1", T);
    assert_int_not_equal(W.pbx, 0);
    snprintf(text, sizeof text,
             "servers = { { key = \"pbx1\", host = \"127.0.0.1\", port = %u, username = \"engine\", secret = \"pw\" } }\n"
             "scripts = { dir = \"scripts\", watch = false }\n"
             "metrics = { listen = \"127.0.0.1:0\" }\n"
             "drain_grace_ms = 2000\n"
             "%s\n",
             (unsigned)W.pbx, http_section);
    write_file(W.config, text);
    snprintf(text, sizeof text,
             "local ami = require \"ami\"\n"
             "ami.spawn(function()\n"
             "  local res, err = ami.http.post(\"http://127.0.0.1:%u/webhook\",\n"
             "    ami.json.encode({hello = \"crm\"}), {headers = {[\"Content-Type\"] = \"application/json\"}})\n"
             "  local ok = res and ami.json.decode(res.body)\n"
             "  ami.log.info(\"posted\", {status = res and res.status, ok = ok and tostring(ok.ok), err = err})\n"
             "end)\n",
             (unsigned)ami_sim_http_port(W.web));
    snprintf(path, sizeof path, "%s/post.lua", W.scripts);
    write_file(path, text);
    assert_int_equal(proc_spawn(&W.engine, L(ENGINE_BIN, "-c", W.config), NULL, W.out, W.log), 0);
    W.mport = engine_metrics_port(W.log, T);
    if (!W.mport) {
        dump_log("no metrics port in the log");
        fail_msg("ami-engine did not log the port of its metrics endpoint");
    }
}

static char *scrape(void)
{
    int status = 0;
    char *body = NULL;
    size_t len = 0;
    if (http_get("127.0.0.1", W.mport, "/metrics", T, &status, &body, &len) < 0 || status != 200)
        fail_msg("GET /metrics failed");
    return body;
}

/* The value of the sample line starting with `name` (the series and a space); -1 if absent. */
static double series(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, name, n) == 0)
            return strtod(line + n, NULL);
    return -1;
}

static void stop(void)
{
    assert_int_equal(proc_signal(&W.engine, SIGTERM), 0);
    if (!proc_wait(&W.engine, 10000)) {
        dump_log("no exit after SIGTERM");
        fail_msg("ami-engine still running after SIGTERM");
    }
    assert_int_equal(W.engine.exit_code, 0);
}

static void a_script_posts_through_the_engine_and_metrics_show_it(void **state)
{
    (void)state;
    start("http = { timeout_ms = 3000 }");
    if (!file_wait_contains(W.log, "msg=posted", T)) {
        dump_log("the script never logged its answer");
        fail_msg("no \"posted\" line");
    }
    char *log = file_read(W.log, NULL);
    assert_non_null(strstr(log, "msg=posted ok=true"));
    assert_non_null(strstr(log, "status=200"));
    free(log);
    ami_sim_http_seen_t seen;
    assert_true(ami_sim_http_seen(W.web, 0, &seen));
    assert_string_equal(seen.body, "{\"hello\":\"crm\"}");
    ami_sim_http_seen_free(&seen);

    char *body = scrape();
    char why[256] = "";
    if (prom_check(body, strlen(body), why, sizeof why) != 0)
        fail_msg("prom_check: %s", why);
    assert_true(series(body, "ami_http_client_requests_total{host=\"127.0.0.1\",class=\"2xx\"} ") == 1);
    assert_true(series(body, "ami_http_client_in_flight ") == 0);
    assert_true(series(body, "ami_metrics_series_refused_total ") == 0);
    assert_non_null(strstr(body, "ami_http_client_request_duration_seconds_bucket"));
    free(body);
    stop();
}

static void without_an_http_section_the_script_hears_disabled(void **state)
{
    (void)state;
    start("");
    if (!file_wait_contains(W.log, "msg=posted", T)) {
        dump_log("the script never logged its answer");
        fail_msg("no \"posted\" line");
    }
    char *log = file_read(W.log, NULL);
    assert_non_null(strstr(log, "err=\"disabled: ami.http is off"));
    free(log);
    assert_int_equal(ami_sim_http_seen_count(W.web), 0);
    stop();
}

static void check_config_describes_the_http_section(void **state)
{
    (void)state;
    char path[700], out[700], err[700];
    snprintf(path, sizeof path, "%s/check.lua", W.dir);
    snprintf(out, sizeof out, "%s/check.out", W.dir);
    snprintf(err, sizeof err, "%s/check.err", W.dir);
    write_file(path, "servers = { { key = \"pbx1\", host = \"127.0.0.1\", username = \"e\", secret = \"pw\" } }\n"
                     "http = { max_concurrent = 9, verify = false, proxy = \"http://u:topsecret@proxy:3128\" }\n");
    assert_int_equal(proc_run(L(ENGINE_BIN, "--check-config", "-c", path), NULL, out, err, T), 0);
    char *text = file_read(out, NULL);
    assert_non_null(text);
    assert_non_null(strstr(text, "http: max_concurrent 9"));
    assert_non_null(strstr(text, "verify OFF"));
    assert_null(strstr(text, "topsecret"));
    free(text);
}

int main(void)
{
    if (access(ENGINE_BIN, X_OK) != 0 || access(SIM_BIN, X_OK) != 0) {
        printf("SKIP: build ami-engine and ami-sim first\n");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_script_posts_through_the_engine_and_metrics_show_it, setup, teardown),
        cmocka_unit_test_setup_teardown(without_an_http_section_the_script_hears_disabled, setup, teardown),
        cmocka_unit_test_setup_teardown(check_config_describes_the_http_section, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
