/*
 * The engine's levelled, structured logger.
 *
 * A log line is a level, a message and a list of typed fields. It is
 * rendered as logfmt (default) or JSON:
 *   ts=2026-11-27T17:38:47.112Z level=warn msg="correlation cap reached" server_key=pbx1 count=100
 *   {"ts":"2026-11-27T17:38:47.112Z","level":"warn","msg":"correlation cap reached","server_key":"pbx1","count":100}
 *
 * Nothing on the loop waits on the log's reader: in async mode lines are
 * formatted by the caller into a bounded ring and written to the fd by a
 * writer thread; when the ring is full the line is dropped and counted
 * (ami_logger_dropped). Sync mode writes at once (tools, tests). A sink
 * callback, when set, receives every formatted line instead of the fd, in
 * the caller's thread (tests use it to assert on log output).
 *
 * A field whose key names a secret (secret, password, key, token,
 * authorization; case-insensitive) is always rendered as "[redacted]": a
 * defence in depth so a secret cannot reach a log line, even at debug level.
 *
 * Thread-safety: ami_log_* may be called from any thread. A NULL logger is
 * valid everywhere and logs nothing.
 */
#ifndef AMI_OBS_LOG_H
#define AMI_OBS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include <ami/log.h>

typedef enum ami_log_field_type {
    AMI_LF_STR = 0,
    AMI_LF_INT,
    AMI_LF_UINT,
    AMI_LF_DOUBLE,
    AMI_LF_BOOL
} ami_log_field_type_t;

typedef struct ami_log_field {
    const char *key;
    ami_log_field_type_t type;
    size_t len; /* AMI_LF_STR only: bytes of v.s; SIZE_MAX means NUL-terminated */
    union {
        const char *s;
        long long i;
        unsigned long long u;
        double d;
        bool b;
    } v;
} ami_log_field_t;

#define AMI_F_STR(k, s_) ((ami_log_field_t){.key = (k), .type = AMI_LF_STR, .len = SIZE_MAX, .v.s = (s_)})
#define AMI_F_STRN(k, s_, n_) ((ami_log_field_t){.key = (k), .type = AMI_LF_STR, .len = (n_), .v.s = (s_)})
#define AMI_F_INT(k, i_) ((ami_log_field_t){.key = (k), .type = AMI_LF_INT, .v.i = (long long)(i_)})
#define AMI_F_UINT(k, u_) ((ami_log_field_t){.key = (k), .type = AMI_LF_UINT, .v.u = (unsigned long long)(u_)})
#define AMI_F_DBL(k, d_) ((ami_log_field_t){.key = (k), .type = AMI_LF_DOUBLE, .v.d = (double)(d_)})
#define AMI_F_BOOL(k, b_) ((ami_log_field_t){.key = (k), .type = AMI_LF_BOOL, .v.b = (bool)(b_)})

static inline bool ami_log_enabled(const ami_logger_t *lg, ami_log_level_t level);

void ami_log_fields(ami_logger_t *lg, ami_log_level_t level, const char *msg,
                    const ami_log_field_t *fields, size_t nfields);

/* Usage: AMI_LOG(lg, AMI_LOG_WARN, "message", AMI_F_STR("k", v), AMI_F_INT("n", 3)); */
#define AMI_LOG(lg, level, msg, ...)                                                    \
    do {                                                                                \
        if (ami_log_enabled((lg), (level))) {                                           \
            const ami_log_field_t ami_log_f_[] = {AMI_F_STR(NULL, NULL), ##__VA_ARGS__}; \
            ami_log_fields((lg), (level), (msg), ami_log_f_ + 1,                        \
                           sizeof ami_log_f_ / sizeof ami_log_f_[0] - 1);               \
        }                                                                               \
    } while (0)

/* The level lives first in the logger so the check above is one load. It
 * is atomic because any thread logs while the loop thread may change it
 * (a reload): relaxed, since a line logged at the old level a moment after
 * the change is harmless. */
struct ami_logger_head {
    _Atomic int level;
};

static inline bool ami_log_enabled(const ami_logger_t *lg, ami_log_level_t level)
{
    return lg && (int)level >= atomic_load_explicit(&((const struct ami_logger_head *)(const void *)lg)->level,
                                                    memory_order_relaxed);
}

#endif
