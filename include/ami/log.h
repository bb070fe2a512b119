/*
 * The library's logger, as an embedder configures it.
 *
 * The client logs what happens to its servers (logins, disconnects with
 * their reason, dropped events, heartbeat failures) as levelled, structured
 * lines in logfmt (default) or JSON:
 *   ts=2026-11-27T17:38:47.112Z level=warn msg="correlation cap reached" server_key=pbx1 count=100
 * Give a logger to ami_client_config_t.log, or NULL for silence.
 *
 * Where lines go: a file descriptor (default stderr), written at once
 * (sync) or by a writer thread from a bounded ring (async: the loop never
 * waits on the reader of the log; when the ring is full a line is dropped
 * and counted, ami_logger_dropped). Or a sink callback that receives every
 * formatted line instead, in the thread that logs (the loop thread for the
 * client): route lines into your own logging there, without blocking.
 *
 * A field whose key names a secret (secret, password, key, token,
 * authorization) is always rendered as "[redacted]".
 *
 * Memory: the logger is the caller's; free it after every client that uses
 * it. Threads: any thread may log and change the level; the rest from one.
 */
#ifndef AMI_LOG_H
#define AMI_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ami/export.h>

AMI_BEGIN_DECLS

typedef enum ami_log_level {
    AMI_LOG_DEBUG = 0,
    AMI_LOG_INFO,
    AMI_LOG_WARN,
    AMI_LOG_ERROR,
    AMI_LOG_OFF
} ami_log_level_t;

typedef enum ami_log_format { AMI_LOG_FMT_LOGFMT = 0, AMI_LOG_FMT_JSON } ami_log_format_t;

/* line is one formatted line (newline included), len its length. */
typedef void (*ami_log_sink_fn)(void *ud, ami_log_level_t level, const char *line, size_t len);

typedef struct ami_logger_config {
    ami_log_level_t level;   /* lines below it are skipped cheaply */
    ami_log_format_t format;
    int fd;                  /* where lines go; default 2 (stderr) */
    bool async;              /* writer thread + bounded ring */
    size_t ring_bytes;       /* async ring size; default 1 MiB */
    size_t max_line;         /* longer lines are truncated with "..."; default 8 KiB */
    ami_log_sink_fn sink;    /* if set, gets lines instead of fd (sync, caller's thread) */
    void *sink_ud;
} ami_logger_config_t;

typedef struct ami_logger ami_logger_t;

/* Defaults: info, logfmt, fd 2, sync. */
AMI_API void ami_logger_config_default(ami_logger_config_t *cfg);

/* NULL for an invalid configuration or out of memory. */
AMI_API ami_logger_t *ami_logger_new(const ami_logger_config_t *cfg);
/* Flushes what is queued (bounded wait for the writer thread), then frees. */
AMI_API void ami_logger_free(ami_logger_t *lg);

AMI_API void ami_logger_set_level(ami_logger_t *lg, ami_log_level_t level);
AMI_API ami_log_level_t ami_logger_level(const ami_logger_t *lg);
AMI_API void ami_logger_set_format(ami_logger_t *lg, ami_log_format_t format);

/* Lines dropped because the async ring was full, and lines written. */
AMI_API uint64_t ami_logger_dropped(const ami_logger_t *lg);
AMI_API uint64_t ami_logger_written(const ami_logger_t *lg);

/* "debug"/"info"/"warn"/"error"/"off" (also "warning"); -1 if unknown. */
AMI_API int ami_log_level_parse(const char *name);
AMI_API const char *ami_log_level_name(ami_log_level_t level);

AMI_END_DECLS

#endif
