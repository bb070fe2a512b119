#include "redis_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define REDIS_BIN "/usr/bin/redis-server"
#define REDIS_CLI "/usr/bin/redis-cli"
#define READY_MS 8000u

bool redis_server_available(void)
{
    return access(REDIS_BIN, X_OK) == 0 && access(REDIS_CLI, X_OK) == 0;
}

/* Connect to the socket, send PING: any answer means it serves. */
static bool answers(const redis_server_t *r)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(r->socket);
    if (n >= sizeof sa.sun_path) {
        close(fd);
        return false;
    }
    memcpy(sa.sun_path, r->socket, n + 1);
    char buf[64];
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && write(fd, "PING\r\n", 6) == 6 &&
              read(fd, buf, sizeof buf) > 0;
    close(fd);
    return ok;
}

static int launch(redis_server_t *r)
{
    char port[16], log[640], out[640], user[200];
    snprintf(port, sizeof port, "%u", r->port);
    snprintf(log, sizeof log, "%s/redis-%d.log", r->dir, r->runs);
    snprintf(out, sizeof out, "%s/redis-%d.out", r->dir, r->runs);
    snprintf(user, sizeof user, ">%s", r->password);
    r->runs++;
    const char *argv[40] = {REDIS_BIN, "--port", port, "--bind", "127.0.0.1", "--unixsocket", r->socket,
                            "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", r->dir,
                            "--logfile", log, "--daemonize", "no"};
    int n = 19;
    if (r->password[0] && !r->acl_user[0]) {
        argv[n++] = "--requirepass";
        argv[n++] = r->password;
    }
    if (r->acl_user[0]) {
        const char *a[] = {"--user", r->acl_user, "on", user, "~*", "&*", "+@all", "--user", "default", "off"};
        memcpy(argv + n, a, sizeof a);
        n += 10;
    }
    argv[n] = NULL;
    if (proc_spawn(&r->proc, argv, NULL, out, out) < 0)
        return -1;
    for (int64_t end = mono_ms() + READY_MS; mono_ms() < end && proc_running(&r->proc); sleep_ms(20))
        if (answers(r))
            return 0;
    fprintf(stderr, "redis-server did not start within %u ms; see %s\n", READY_MS, log);
    return -1;
}

/* A port the kernel considers free right now (bind port 0, read it, close). */
static uint16_t kernel_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    uint16_t port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Did the last launch fail because its TCP port was in use? */
static bool port_was_taken(const redis_server_t *r)
{
    char log[640];
    snprintf(log, sizeof log, "%s/redis-%d.log", r->dir, r->runs - 1);
    char *text = file_read(log, NULL);
    bool taken = text && strstr(text, "Address already in use");
    free(text);
    return taken;
}

int redis_server_start(redis_server_t *r, const char *dir, bool tcp, const char *password, const char *acl_user)
{
    memset(r, 0, sizeof *r);
    if (dir)
        snprintf(r->dir, sizeof r->dir, "%s", dir);
    else if (tmpdir_make("ami-redis-", r->dir, sizeof r->dir) < 0)
        return -1;
    snprintf(r->socket, sizeof r->socket, "%s/redis.sock", r->dir);
    snprintf(r->password, sizeof r->password, "%s", password ? password : "");
    snprintf(r->acl_user, sizeof r->acl_user, "%s", acl_user ? acl_user : "");
    r->own_dir = !dir;
    if (!tcp)
        return launch(r);
    /* redis-server cannot listen on port 0 (it means no TCP at all): take a
     * port the kernel just handed out and, should another program bind it
     * first, try again with another. */
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = kernel_port();
        if (r->port && launch(r) == 0)
            return 0;
        proc_kill(&r->proc);
        if (!port_was_taken(r))
            return -1;
    }
    return -1;
}

int redis_server_restart(redis_server_t *r)
{
    proc_kill(&r->proc);
    unlink(r->socket);
    return launch(r);
}

void redis_server_pause(redis_server_t *r)
{
    proc_signal(&r->proc, SIGSTOP);
}

void redis_server_resume(redis_server_t *r)
{
    proc_signal(&r->proc, SIGCONT);
}

void redis_server_stop(redis_server_t *r)
{
    if (r->proc.pid) {
        proc_signal(&r->proc, SIGCONT);
        proc_kill(&r->proc);
    }
    if (r->own_dir && !getenv("AMI_E2E_KEEP"))
        tmpdir_remove(r->dir);
    r->proc.pid = 0;
}

int redis_server_cli(redis_server_t *r, char *out, size_t out_size, const char *const *args)
{
    char path[640];
    snprintf(path, sizeof path, "%s/cli.out", r->dir);
    const char *argv[48] = {REDIS_CLI, "-s", r->socket};
    int n = 3;
    if (r->password[0]) {
        const char *a[] = {"--no-auth-warning", "-a", r->password};
        memcpy(argv + n, a, sizeof a);
        n += 3;
    }
    if (r->acl_user[0]) {
        argv[n++] = "--user";
        argv[n++] = r->acl_user;
    }
    for (size_t i = 0; args[i] && n < 47; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int rc = proc_run(argv, NULL, path, NULL, 5000);
    char *text = file_read(path, NULL);
    if (out_size)
        out[0] = '\0';
    if (text) {
        size_t len = strlen(text);
        while (len && text[len - 1] == '\n')
            len--;
        snprintf(out, out_size, "%.*s", (int)len, text);
        free(text);
    }
    return rc == 0 ? 0 : -1;
}
