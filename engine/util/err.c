#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const status_names[AMI_STATUS_COUNT] = {
    [AMI_OK] = "ok",
    [AMI_E_INVALID] = "invalid",
    [AMI_E_PROTOCOL] = "protocol",
    [AMI_E_LIMIT] = "limit",
    [AMI_E_TIMEOUT] = "timeout",
    [AMI_E_DISCONNECTED] = "disconnected",
    [AMI_E_BACKPRESSURE] = "backpressure",
    [AMI_E_NOMEM] = "nomem",
    [AMI_E_SERVER] = "server",
    [AMI_E_NOT_CONNECTED] = "not_connected",
    [AMI_E_UNKNOWN_SERVER] = "unknown_server",
    [AMI_E_CANCELLED] = "cancelled",
    [AMI_E_IO] = "io",
    [AMI_E_AUTH] = "auth",
    [AMI_E_CONFIG] = "config",
    [AMI_E_HEARTBEAT] = "heartbeat",
    [AMI_E_SHUTDOWN] = "shutdown",
};

const char *ami_status_name(ami_status_t code)
{
    if ((unsigned)code >= AMI_STATUS_COUNT || !status_names[code])
        return "unknown";
    return status_names[code];
}

int ami_err_set(ami_err_t *err, ami_status_t code, const char *fmt, ...)
{
    if (!err)
        return -1;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

void ami_err_clear(ami_err_t *err)
{
    if (!err)
        return;
    err->code = AMI_OK;
    err->msg[0] = '\0';
}
