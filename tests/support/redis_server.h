/*
 * A real redis-server for tests, started and stopped by the test: it
 * listens on a unix socket in the test's own temporary folder (and, when
 * asked, on a free TCP port of 127.0.0.1), keeps no data on disk, and can
 * be paused (SIGSTOP), continued, killed and restarted on the same
 * addresses. Every wait has a deadline.
 *
 * Tests that need it call redis_server_available() first and skip with a
 * message when the binary is missing (tests/deps.sh installs it).
 *
 * Test support only: single-threaded, blocking helpers with deadlines.
 */
#ifndef AMI_TEST_REDIS_SERVER_H
#define AMI_TEST_REDIS_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "proc.h"

typedef struct redis_server {
    char dir[512];        /* the temporary folder (socket, log) */
    char socket[600];     /* unix socket path */
    uint16_t port;        /* 0: no TCP */
    char password[64];    /* "" : no requirepass */
    char acl_user[64];    /* "" : no extra ACL user (else user with password, all commands) */
    proc_t proc;
    int runs;
    bool own_dir;         /* start made the folder: stop removes it */
} redis_server_t;

bool redis_server_available(void);

/* Start in dir (created by the caller or NULL: a new temporary folder).
 * tcp: also listen on a free 127.0.0.1 port. 0, or -1 (message on stderr). */
int redis_server_start(redis_server_t *r, const char *dir, bool tcp, const char *password, const char *acl_user);
/* Kill (SIGKILL) and start again on the same socket and port: all data is gone. */
int redis_server_restart(redis_server_t *r);
void redis_server_pause(redis_server_t *r);
void redis_server_resume(redis_server_t *r);
/* Stop it (SIGKILL) and remove the folder if start made it. */
void redis_server_stop(redis_server_t *r);

/* Run one command through redis-cli (argv after the connection options,
 * NULL-terminated); its answer (one line per element, no final newline)
 * into out. 0 or -1. */
int redis_server_cli(redis_server_t *r, char *out, size_t out_size, const char *const *args);

#endif
