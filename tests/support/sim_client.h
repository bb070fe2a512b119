/*
 * A tiny AMI test client for talking to the simulator over real TCP.
 *
 * Single-threaded tests put the simulator on a loop and hand that loop to
 * the client: while the client waits for bytes it runs the loop without
 * blocking (EVRUN_NOWAIT) and polls its socket for a millisecond at a time,
 * so both sides make progress on one thread. With loop NULL it simply
 * blocks (SO_RCVTIMEO) for a server running elsewhere.
 *
 * Messages come from the project's parser (banner included, as kind
 * AMI_MSG_BANNER) and are borrowed until the next call on the client.
 * Every wait has a deadline; nothing here can hang a test.
 */
#ifndef AMI_TEST_SIM_CLIENT_H
#define AMI_TEST_SIM_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol/parser.h"

struct ev_loop;

typedef struct sim_client {
    int fd;
    struct ev_loop *loop; /* pumped while waiting; may be NULL */
    ami_parser_t parser;
    bool eof;
    ami_err_t err;        /* the parser's complaint after a -1 */
    uint64_t bytes;       /* bytes received */
} sim_client_t;

/* Connect to 127.0.0.1:port. 0, or -1 with errno (ECONNREFUSED...). */
int sim_client_connect(sim_client_t *c, struct ev_loop *loop, uint16_t port);
void sim_client_close(sim_client_t *c);

/* Send every byte (pumping the loop if the socket is full). 0 or -1. */
int sim_client_send(sim_client_t *c, const char *text);

/* 1: *m holds the next message. 0: nothing within timeout_ms.
 * -1: connection closed (c->eof) or a protocol error (c->err). */
int sim_client_next(sim_client_t *c, ami_msg_t *m, int timeout_ms);

/* Skip messages until one whose header key equals value. 1, 0 or -1 as above. */
int sim_client_wait_for(sim_client_t *c, ami_msg_t *m, const char *key, const char *value,
                        int timeout_ms);

/* Raw bytes (no parsing) until EOF, cap or timeout; returns how many. Do not
 * mix with sim_client_next on the same connection. */
size_t sim_client_read_raw(sim_client_t *c, char *buf, size_t cap, int timeout_ms);

/* Skip everything until the server closes. true if it did within timeout_ms. */
bool sim_client_wait_closed(sim_client_t *c, int timeout_ms);

/* Run the loop (if any) for ms milliseconds, reading nothing. */
void sim_client_pump(struct ev_loop *loop, int ms);

/* The n-th header's key (for order checks), "" when out of range. */
const char *sim_client_key(const ami_msg_t *m, size_t i);

#endif
