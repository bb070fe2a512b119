/* Under systemd (Type=notify, WatchdogSec=): the real ami-engine says READY,
 * pings the watchdog from its own loop, so the pings stop when the loop
 * does (here: the process is stopped with SIGSTOP), and says STOPPING on
 * SIGTERM. systemd's side is played by a datagram socket in a temp folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "proc.h"

typedef struct world {
    char dir[512];
    char sock_path[600];
    char config[600];
    int fd;
    int refuse_fd; /* holds the server's port: connections there are refused */
    proc_t engine;
} world_t;

static int notify_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof a.sun_path);
    memcpy(a.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* The next datagram within ms, into buf; false when none came. */
static bool next_message(int fd, char *buf, size_t size, uint32_t ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n = recv(fd, buf, size - 1, 0);
    if (n < 0)
        return false;
    buf[n] = '\0';
    return true;
}

/* Count WATCHDOG=1 pings arriving during ms. */
static int pings_during(int fd, uint32_t ms)
{
    int64_t end = mono_ms() + ms;
    int n = 0;
    char buf[256];
    for (int64_t now = mono_ms(); now < end; now = mono_ms())
        if (next_message(fd, buf, sizeof buf, (uint32_t)(end - now)) && strcmp(buf, "WATCHDOG=1") == 0)
            n++;
    return n;
}

static void start_with(world_t *w, const char *script)
{
    alarm(120);
    assert_int_equal(tmpdir_make("ami-systemd", w->dir, sizeof w->dir), 0);
    snprintf(w->sock_path, sizeof w->sock_path, "%s/notify", w->dir);
    snprintf(w->config, sizeof w->config, "%s/engine.lua", w->dir);
    w->fd = notify_socket(w->sock_path);
    /* Nothing listens on the server's port: the engine keeps retrying, and
     * keeps its loop (and the pings) going. */
    uint16_t port = 0;
    w->refuse_fd = refusing_port(&port);
    assert_true(w->refuse_fd >= 0);
    char text[1024];
    if (script) {
        char sdir[600], path[700];
        snprintf(sdir, sizeof sdir, "%s/scripts", w->dir);
        snprintf(path, sizeof path, "%s/stall.lua", sdir);
        assert_int_equal(mkdir(sdir, 0700), 0);
        assert_int_equal(file_write_atomic(path, script), 0);
    }
    snprintf(text, sizeof text,
             "servers = { { key = 'pbx1', host = '127.0.0.1', port = %u, username = 'u', secret = 's' } }\n"
             "scripts = { dir = %s, handler_budget_ms = 2000 }\nmetrics = { listen = false }\n",
             (unsigned)port, script ? "'scripts'" : "false");
    assert_int_equal(file_write_atomic(w->config, text), 0);
    char sock_env[700];
    snprintf(sock_env, sizeof sock_env, "NOTIFY_SOCKET=%s", w->sock_path);
    const char *env[] = {sock_env, "WATCHDOG_USEC=200000", NULL};
    const char *argv[] = {AMI_BINARY_DIR "/ami-engine", "-c", w->config, NULL};
    char out[700], err[700];
    snprintf(out, sizeof out, "%s/out", w->dir);
    snprintf(err, sizeof err, "%s/err", w->dir);
    assert_int_equal(proc_spawn(&w->engine, argv, env, out, err), 0);
}

static void start(world_t *w)
{
    start_with(w, NULL);
}

static void finish(world_t *w)
{
    proc_kill(&w->engine);
    close(w->fd);
    close(w->refuse_fd);
    tmpdir_remove(w->dir);
    alarm(0);
}

static void ready_then_watchdog_pings_from_the_loop(void **state)
{
    (void)state;
    world_t w;
    start(&w);
    char buf[256];
    assert_true(next_message(w.fd, buf, sizeof buf, 10000));
    assert_non_null(strstr(buf, "READY=1"));
    assert_non_null(strstr(buf, "STATUS=serving 1 servers"));
    /* Every 100 ms (half of 200 ms). */
    int pings = pings_during(w.fd, 1000);
    assert_true(pings >= 6 && pings <= 12);
    /* A stopped loop sends nothing: systemd would restart it. */
    assert_int_equal(proc_signal(&w.engine, SIGSTOP), 0);
    pings_during(w.fd, 150); /* what was in flight */
    assert_int_equal(pings_during(w.fd, 800), 0);
    assert_int_equal(proc_signal(&w.engine, SIGCONT), 0);
    assert_true(pings_during(w.fd, 600) >= 3);
    /* SIGTERM: STOPPING=1, then a clean exit. */
    assert_int_equal(proc_signal(&w.engine, SIGTERM), 0);
    bool stopping = false;
    for (int i = 0; i < 50 && !stopping; i++)
        stopping = next_message(w.fd, buf, sizeof buf, 200) && strcmp(buf, "STOPPING=1") == 0;
    assert_true(stopping);
    assert_true(proc_wait(&w.engine, 10000));
    assert_int_equal(w.engine.exit_code, 0);
    finish(&w);
}

/* The longest gap between pings during ms. */
static int64_t longest_gap(int fd, uint32_t ms)
{
    int64_t end = mono_ms() + ms, last = mono_ms(), gap = 0;
    char buf[256];
    for (int64_t now = mono_ms(); now < end; now = mono_ms()) {
        if (!next_message(fd, buf, sizeof buf, (uint32_t)(end - now)) || strcmp(buf, "WATCHDOG=1") != 0)
            continue;
        now = mono_ms();
        if (now - last > gap)
            gap = now - last;
        last = now;
    }
    return end - last > gap ? end - last : gap;
}

/* A sort of millions of numbers is one C call no hook can stop: the loop
 * stalls while the process runs on. The pings pause with the loop (they
 * come from it, not from a thread), and the stall is logged. */
static void pings_pause_while_the_loop_stalls(void **state)
{
    (void)state;
    world_t w;
    start_with(&w, "ami.spawn(function()\n"
                   "  local t = {}\n"
                   "  for c = 0, 399 do\n"
                   "    for i = c * 10000 + 1, (c + 1) * 10000 do t[i] = (i * 7919) % 1000003 end\n"
                   "    ami.sleep(0)\n"
                   "  end\n"
                   "  ami.log.info('sorting')\n"
                   "  table.sort(t)\n"
                   "  ami.log.info('sorted')\n"
                   "end)\n");
    char buf[256];
    assert_true(next_message(w.fd, buf, sizeof buf, 10000));
    assert_non_null(strstr(buf, "READY=1"));
    char err[700];
    snprintf(err, sizeof err, "%s/err", w.dir);
    assert_true(file_wait_contains(err, "msg=sorting", 60000));
    int64_t gap = longest_gap(w.fd, 4000);
    assert_true(file_wait_contains(err, "msg=sorted", 30000));
    assert_true(file_wait_contains(err, "msg=\"event loop stalled\"", 5000));
    print_message("longest gap between pings during the sort: %lld ms (pings every 100 ms)\n", (long long)gap);
    assert_true(gap >= 500);
    finish(&w);
}

static void no_notify_socket_means_no_notifications(void **state)
{
    (void)state;
    world_t w;
    assert_int_equal(tmpdir_make("ami-systemd", w.dir, sizeof w.dir), 0);
    snprintf(w.config, sizeof w.config, "%s/engine.lua", w.dir);
    assert_int_equal(file_write_atomic(w.config, "servers = { { key = 'pbx1', host = '127.0.0.1', port = 1, "
                                                 "username = 'u', secret = 's' } }\n"
                                                 "scripts = { dir = false }\nmetrics = { listen = false }\n"),
                     0);
    const char *argv[] = {AMI_BINARY_DIR "/ami-engine", "-c", w.config, "--duration", "1", NULL};
    const char *env[] = {"NOTIFY_SOCKET=", NULL};
    assert_int_equal(proc_run(argv, env, NULL, NULL, 20000), 0);
    tmpdir_remove(w.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ready_then_watchdog_pings_from_the_loop),
        cmocka_unit_test(pings_pause_while_the_loop_stalls),
        cmocka_unit_test(no_notify_socket_means_no_notifications),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    proc_kill_all();
    return rc;
}
