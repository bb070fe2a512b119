/*
 * Errors as values.
 *
 * Every fallible function of the library returns a status and, where the
 * caller passed one, fills an ami_err_t with a fixed-size message that says
 * what was wrong and what to do. No allocation, safe to copy, safe to log.
 * The status names (ami_status_name) are stable error kinds ("timeout",
 * "disconnected", ...): the Lua API hands the same words to scripts.
 */
#ifndef AMI_ERR_H
#define AMI_ERR_H

#include <stddef.h>

#include <ami/export.h>

AMI_BEGIN_DECLS

typedef enum ami_status {
    AMI_OK = 0,
    AMI_E_INVALID,       /* the caller passed something unusable */
    AMI_E_PROTOCOL,      /* the peer broke the AMI protocol */
    AMI_E_LIMIT,         /* a configured bound was reached */
    AMI_E_TIMEOUT,       /* no answer in time */
    AMI_E_DISCONNECTED,  /* the connection went away while waiting */
    AMI_E_BACKPRESSURE,  /* the write buffer is above its high-water mark */
    AMI_E_NOMEM,         /* an allocation failed */
    AMI_E_SERVER,        /* the server answered Response: Error/Failure */
    AMI_E_NOT_CONNECTED, /* the server is not logged in right now */
    AMI_E_UNKNOWN_SERVER,/* no server with that key */
    AMI_E_CANCELLED,     /* the waiter went away first */
    AMI_E_IO,            /* a system call failed */
    AMI_E_AUTH,          /* login refused */
    AMI_E_CONFIG,        /* bad configuration */
    AMI_E_HEARTBEAT,     /* Max heartbeat failures: the connection was force-closed */
    AMI_E_SHUTDOWN,      /* the engine is stopping */
    AMI_STATUS_COUNT
} ami_status_t;

#define AMI_ERR_MSG_MAX 240

typedef struct ami_err {
    ami_status_t code;
    char msg[AMI_ERR_MSG_MAX];
} ami_err_t;

/* Stable lower-case kind: "timeout", "disconnected", ... Never NULL. */
AMI_API const char *ami_status_name(ami_status_t code);

AMI_API void ami_err_clear(ami_err_t *err);

AMI_END_DECLS

#endif
