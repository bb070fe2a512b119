/*
 * Child processes and small blocking helpers for end-to-end tests of the
 * real binaries (ami-engine, ami-sim): spawn with stdout/stderr in files,
 * wait with a deadline, signal, kill everything at teardown; a tiny HTTP
 * GET client; files; ports reported by listeners; temporary folders.
 *
 * Every wait here has a deadline; nothing blocks without one. Spawned
 * processes are remembered (up to PROC_MAX_TRACKED) so proc_kill_all() can
 * SIGKILL and reap whatever a failing test left behind.
 *
 * Test support only: allocates with malloc; single-threaded.
 */
#ifndef AMI_TEST_PROC_H
#define AMI_TEST_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PROC_MAX_TRACKED 64

typedef struct proc {
    pid_t pid;      /* 0: never started */
    bool exited;    /* reaped */
    int exit_code;  /* exit status, or 128 + signal number when killed by a signal */
    int term_signal; /* 0, or the signal that ended it */
    char out_path[1024];
    char err_path[1024];
} proc_t;

/* Start argv[0] (a path) with argv; the current environment plus env_add
 * ("NAME=value" entries, NULL-terminated; NULL for none) where an added
 * name replaces an inherited one. stdin is /dev/null; stdout and stderr go
 * to out_path and err_path (created or truncated; NULL: /dev/null).
 * 0, or -1 with errno-based message on stderr. */
int proc_spawn(proc_t *p, const char *const *argv, const char *const *env_add, const char *out_path,
               const char *err_path);

/* Wait up to timeout_ms for the process to exit. true if it did (see
 * p->exit_code); false on timeout (it keeps running). */
bool proc_wait(proc_t *p, uint32_t timeout_ms);

/* Is it still running (not exited, not reaped)? Reaps it if it ended. */
bool proc_running(proc_t *p);

/* Send sig. 0, or -1 if it is not running. */
int proc_signal(proc_t *p, int sig);

/* SIGKILL (if still running) and reap. */
void proc_kill(proc_t *p);

/* SIGKILL and reap every process proc_spawn started that is still running. */
void proc_kill_all(void);

/* Run to completion with a deadline: spawn, wait; on timeout kill and
 * return -1. Otherwise the exit code. */
int proc_run(const char *const *argv, const char *const *env_add, const char *out_path, const char *err_path,
             uint32_t timeout_ms);

/* A blocking HTTP/1.0 GET to ip:port path, every socket step bounded by
 * timeout_ms (SO_RCVTIMEO/SO_SNDTIMEO; total bounded by a deadline). On
 * success returns 0, *status is the status code, *body a malloc'd,
 * NUL-terminated body (the caller frees), *body_len its length. -1 on a
 * connect/IO/parse error (then *body is NULL). */
int http_get(const char *ip, uint16_t port, const char *path, uint32_t timeout_ms, int *status, char **body,
             size_t *body_len);

/* The whole file, malloc'd and NUL-terminated (NULL if it cannot be read);
 * *len (if given) its length. */
char *file_read(const char *path, size_t *len);

/* Write the file atomically: path.tmp then rename. 0 or -1. */
int file_write_atomic(const char *path, const char *text);

/* Poll the file until it contains needle or timeout_ms passes. */
bool file_wait_contains(const char *path, const char *needle, uint32_t timeout_ms);

/* Poll until the file contains at least n occurrences of needle. */
bool file_wait_count(const char *path, const char *needle, size_t n, uint32_t timeout_ms);

/* Occurrences of needle in text (non-overlapping). */
size_t str_count(const char *text, const char *needle);

/* Ports: nothing here hands out a "free" port to be bound later (another
 * test running in parallel could take it first). Listeners bind port 0 and
 * report the port the kernel chose: ami-sim --port-file, the engine's
 * "metrics endpoint listening ... port=N" log line. */

/* The port a "name port" line of an ami-sim --port-file gives for name;
 * 0 if the file or the line is missing. */
uint16_t port_file_lookup(const char *path, const char *name);

/* Wait up to timeout_ms for an ami-sim --port-file to name `name`; its
 * port, or 0. */
uint16_t port_file_wait(const char *path, const char *name, uint32_t timeout_ms);

/* Wait up to timeout_ms for the engine's log (logfmt) to say which port its
 * metrics endpoint listens on (metrics.listen with port 0); the port, or 0. */
uint16_t engine_metrics_port(const char *log_path, uint32_t timeout_ms);

/* A port where connections are refused, and stay refused while the
 * returned descriptor is open: a socket bound to 127.0.0.1:0 that never
 * listens (nobody else can bind that port meanwhile). The caller closes the
 * descriptor. -1 on failure. */
int refusing_port(uint16_t *port);

/* VmRSS of this process in KiB (from /proc/self/status), or -1. */
long proc_vmrss_kib(void);

/* Milliseconds on a monotonic clock. */
int64_t mono_ms(void);

/* Sleep ms milliseconds. */
void sleep_ms(uint32_t ms);

/* Can a TCP socket bind [::1]? Containers and CI hosts without IPv6 cannot;
 * tests of IPv6 paths skip there, saying so (see IPV6_SKIP_MESSAGE). */
bool ipv6_loopback_available(void);
#define IPV6_SKIP_MESSAGE                                                                          \
    "SKIPPED: this host has no IPv6 loopback (::1 cannot be bound), so the IPv6 path is NOT "   \
    "tested here\n"

/* mkdtemp under $TMPDIR (or /tmp) from prefix; out holds the path. 0 or -1. */
int tmpdir_make(const char *prefix, char *out, size_t out_size);

/* rm -rf path (files and folders below it; symlinks are not followed). */
void tmpdir_remove(const char *path);

#endif
