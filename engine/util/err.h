/*
 * Errors as values. The types, the status kinds and ami_status_name are
 * public (<ami/err.h>, read its contract there); this adds ami_err_set,
 * which only the engine's own code uses to fill an error.
 */
#ifndef AMI_UTIL_ERR_H
#define AMI_UTIL_ERR_H

#include <stddef.h>

#include <ami/err.h>

/* Fill err (if not NULL) and return -1, so callers can `return ami_err_set(...)`. */
int ami_err_set(ami_err_t *err, ami_status_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
