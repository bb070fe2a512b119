/*
 * The AMI client: a cluster of Asterisk servers behind one C API. The API
 * is public (<ami/client.h>: read its contract there); this header adds
 * what only the engine's own tools and tests use.
 *
 * The client owns each server's connection (session/conn.h); nothing here
 * needs its type, so it stays opaque.
 */
#ifndef AMI_CLUSTER_CLIENT_H
#define AMI_CLUSTER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <ami/client.h>

typedef struct ami_conn ami_conn_t;

/* The connection of server i, for tests and tools (force_close...), or NULL. */
ami_conn_t *ami_client_conn(ami_client_t *c, size_t i);

/* True while busy polling keeps the loop from blocking (ami_client_set_busy_poll). */
bool ami_client_busy_polling(const ami_client_t *c);

#endif
