#include "proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- tracking ------------------------------------------------------------------------ */

static struct {
    pid_t pid;
    bool reaped;
} tracked[PROC_MAX_TRACKED];
static size_t ntracked;

static void track(pid_t pid)
{
    for (size_t i = 0; i < ntracked; i++)
        if (tracked[i].reaped) {
            tracked[i].pid = pid;
            tracked[i].reaped = false;
            return;
        }
    if (ntracked < PROC_MAX_TRACKED) {
        tracked[ntracked].pid = pid;
        tracked[ntracked].reaped = false;
        ntracked++;
    }
}

static void mark_reaped(pid_t pid)
{
    for (size_t i = 0; i < ntracked; i++)
        if (tracked[i].pid == pid)
            tracked[i].reaped = true;
}

/* ---- time ---------------------------------------------------------------------------- */

int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long proc_vmrss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    fclose(f);
    return kib;
}

void sleep_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* ---- spawn --------------------------------------------------------------------------- */

static bool same_name(const char *a, const char *b)
{
    const char *ea = strchr(a, '=');
    const char *eb = strchr(b, '=');
    size_t la = ea ? (size_t)(ea - a) : strlen(a);
    size_t lb = eb ? (size_t)(eb - b) : strlen(b);
    return la == lb && memcmp(a, b, la) == 0;
}

static char **build_env(const char *const *env_add)
{
    size_t n = 0, nadd = 0;
    while (environ[n])
        n++;
    while (env_add && env_add[nadd])
        nadd++;
    char **env = calloc(n + nadd + 1, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool replaced = false;
        for (size_t j = 0; j < nadd && !replaced; j++)
            replaced = same_name(environ[i], env_add[j]);
        if (!replaced)
            env[k++] = environ[i];
    }
    for (size_t j = 0; j < nadd; j++)
        env[k++] = (char *)env_add[j];
    env[k] = NULL;
    return env;
}

int proc_spawn(proc_t *p, const char *const *argv, const char *const *env_add, const char *out_path,
               const char *err_path)
{
    memset(p, 0, sizeof *p);
    snprintf(p->out_path, sizeof p->out_path, "%s", out_path ? out_path : "/dev/null");
    snprintf(p->err_path, sizeof p->err_path, "%s", err_path ? err_path : "/dev/null");
    char **env = build_env(env_add);
    if (!env)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, p->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, p->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    /* the child starts with default dispositions and an empty mask, whatever
     * the test runner did to ours */
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, &attr, (char *const *)argv, env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    free(env);
    if (rc != 0) {
        fprintf(stderr, "proc_spawn %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    p->pid = pid;
    track(pid);
    return 0;
}

static void note_status(proc_t *p, int status)
{
    p->exited = true;
    mark_reaped(p->pid);
    if (WIFEXITED(status)) {
        p->exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        p->term_signal = WTERMSIG(status);
        p->exit_code = 128 + p->term_signal;
    }
}

bool proc_running(proc_t *p)
{
    if (p->pid <= 0 || p->exited)
        return false;
    int status;
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid) {
        note_status(p, status);
        return false;
    }
    if (r < 0 && errno == ECHILD) {
        p->exited = true;
        p->exit_code = -1;
        mark_reaped(p->pid);
        return false;
    }
    return true;
}

bool proc_wait(proc_t *p, uint32_t timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        if (!proc_running(p))
            return p->pid > 0;
        if (mono_ms() >= deadline)
            return false;
        sleep_ms(5);
    }
}

int proc_signal(proc_t *p, int sig)
{
    if (!proc_running(p))
        return -1;
    return kill(p->pid, sig);
}

void proc_kill(proc_t *p)
{
    if (!proc_running(p))
        return;
    kill(p->pid, SIGKILL);
    proc_wait(p, 5000);
}

void proc_kill_all(void)
{
    for (size_t i = 0; i < ntracked; i++) {
        if (tracked[i].reaped)
            continue;
        kill(tracked[i].pid, SIGKILL);
        int64_t deadline = mono_ms() + 5000;
        int status;
        while (waitpid(tracked[i].pid, &status, WNOHANG) == 0 && mono_ms() < deadline)
            sleep_ms(2);
        tracked[i].reaped = true;
    }
    ntracked = 0;
}

int proc_run(const char *const *argv, const char *const *env_add, const char *out_path, const char *err_path,
             uint32_t timeout_ms)
{
    proc_t p;
    if (proc_spawn(&p, argv, env_add, out_path, err_path) < 0)
        return -1;
    if (!proc_wait(&p, timeout_ms)) {
        proc_kill(&p);
        return -1;
    }
    return p.exit_code;
}

/* ---- HTTP ---------------------------------------------------------------------------- */

static void set_timeouts(int fd, uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (long)(ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int send_all(int fd, const char *buf, size_t len, int64_t deadline)
{
    while (len) {
        ssize_t w = send(fd, buf, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR && mono_ms() < deadline)
            continue;
        if (w <= 0)
            return -1;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Read to EOF within the deadline into a malloc'd buffer. */
static char *recv_all(int fd, int64_t deadline, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf)
        return NULL;
    for (;;) {
        if (mono_ms() >= deadline)
            goto fail;
        if (n == cap) {
            char *bigger = realloc(buf, cap * 2 + 1);
            if (!bigger)
                goto fail;
            buf = bigger;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + n, cap - n, 0);
        if (r == 0)
            break;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            goto fail; /* EAGAIN: SO_RCVTIMEO passed */
        }
        n += (size_t)r;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
fail:
    free(buf);
    return NULL;
}

int http_get(const char *ip, uint16_t port, const char *path, uint32_t timeout_ms, int *status, char **body,
             size_t *body_len)
{
    *body = NULL;
    *status = 0;
    if (body_len)
        *body_len = 0;
    int64_t deadline = mono_ms() + timeout_ms;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1)
        return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    set_timeouts(fd, timeout_ms);
    char req[512];
    int rl = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s:%u\r\nConnection: close\r\n\r\n", path, ip,
                      (unsigned)port);
    size_t n = 0;
    char *resp = NULL;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || send_all(fd, req, (size_t)rl, deadline) < 0 ||
        !(resp = recv_all(fd, deadline, &n))) {
        close(fd);
        return -1;
    }
    close(fd);
    int code = 0;
    char *head_end = strstr(resp, "\r\n\r\n");
    if (!head_end || sscanf(resp, "HTTP/1.%*[01] %d", &code) != 1) {
        free(resp);
        return -1;
    }
    size_t off = (size_t)(head_end + 4 - resp);
    memmove(resp, resp + off, n - off + 1);
    *status = code;
    *body = resp;
    if (body_len)
        *body_len = n - off;
    return 0;
}

/* ---- files --------------------------------------------------------------------------- */

char *file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        if (n == cap) {
            char *bigger = realloc(buf, cap * 2 + 1);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
    }
    fclose(f);
    if (!buf)
        return NULL;
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

int file_write_atomic(const char *path, const char *text)
{
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return -1;
    size_t len = strlen(text);
    bool ok = fwrite(text, 1, len, f) == len;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

size_t str_count(const char *text, const char *needle)
{
    size_t n = 0, nl = strlen(needle);
    if (!text || nl == 0)
        return 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + nl, needle))
        n++;
    return n;
}

bool file_wait_count(const char *path, const char *needle, size_t n, uint32_t timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        char *text = file_read(path, NULL);
        size_t have = str_count(text, needle);
        free(text);
        if (have >= n)
            return true;
        if (mono_ms() >= deadline)
            return false;
        sleep_ms(10);
    }
}

bool file_wait_contains(const char *path, const char *needle, uint32_t timeout_ms)
{
    return file_wait_count(path, needle, 1, timeout_ms);
}

/* ---- ports and folders ---------------------------------------------------------------- */

uint16_t port_file_lookup(const char *path, const char *name)
{
    char *text = file_read(path, NULL);
    size_t nl = strlen(name);
    unsigned long port = 0;
    for (const char *line = text; line && *line && !port;) {
        if (strncmp(line, name, nl) == 0 && line[nl] == ' ')
            port = strtoul(line + nl + 1, NULL, 10);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    free(text);
    return port <= 65535 ? (uint16_t)port : 0;
}

uint16_t port_file_wait(const char *path, const char *name, uint32_t timeout_ms)
{
    int64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        uint16_t port = port_file_lookup(path, name);
        if (port || mono_ms() >= deadline)
            return port;
        sleep_ms(10);
    }
}

/* The number after ` key=` on the first line of text holding needle; 0 if none. */
static unsigned long line_field(const char *text, const char *needle, const char *key)
{
    const char *line = text ? strstr(text, needle) : NULL;
    if (!line)
        return 0;
    while (line > text && line[-1] != '\n')
        line--;
    const char *nl = strchr(line, '\n');
    const char *at = strstr(line, key);
    return at && (!nl || at < nl) ? strtoul(at + strlen(key), NULL, 10) : 0;
}

uint16_t engine_metrics_port(const char *log_path, uint32_t timeout_ms)
{
    static const char LISTENING[] = "msg=\"metrics endpoint listening\"";
    if (!file_wait_contains(log_path, LISTENING, timeout_ms))
        return 0;
    char *text = file_read(log_path, NULL);
    unsigned long port = line_field(text, LISTENING, " port=");
    free(text);
    return port <= 65535 ? (uint16_t)port : 0;
}

int refusing_port(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

bool ipv6_loopback_available(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

int tmpdir_make(const char *prefix, char *out, size_t out_size)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    int n = snprintf(out, out_size, "%s/%sXXXXXX", base, prefix);
    if (n < 0 || (size_t)n >= out_size)
        return -1;
    return mkdtemp(out) ? 0 : -1;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void tmpdir_remove(const char *path)
{
    if (path && *path)
        nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}
