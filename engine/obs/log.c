#include "obs/log.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "util/alloc.h"
#include "util/buf.h"

#define DEFAULT_RING_BYTES ((size_t)1 << 20)
#define DEFAULT_MAX_LINE ((size_t)8192)
/* Room for the timestamp, the level, a cut message and the truncation marker,
 * so that a truncated line is still a well-formed line. */
#define MIN_MAX_LINE ((size_t)128)
#define DRAIN_WAIT_NS 2000000000LL
/* How long a write on a non-blocking fd may stay stalled (polls of 100 ms)
 * before the bytes are given up: a stuck reader must not stall us forever. */
#define MAX_STALLS 20

/* Async mode: bytes of whole lines, written by one thread. */
struct ring {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* producers and free -> writer: data, or stop */
    pthread_cond_t done; /* writer -> free: exited (monotonic clock) */
    char *data;
    size_t cap;
    size_t tail; /* oldest unwritten byte */
    size_t used;
    bool stop;
    bool exited;
    pthread_t thread;
};

struct ami_logger {
    struct ami_logger_head head; /* first: ami_log_enabled reads it */
    atomic_int format;
    int fd;
    size_t max_line;
    ami_log_sink_fn sink;
    void *sink_ud;
    atomic_uint_least64_t written;
    atomic_uint_least64_t dropped;
    pthread_mutex_t write_mu; /* sync mode: lines from several threads must not interleave */
    struct ring *ring;        /* async mode only */
};

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

const char *ami_log_level_name(ami_log_level_t level)
{
    if ((unsigned)level > AMI_LOG_OFF)
        return "unknown";
    return level_names[level];
}

int ami_log_level_parse(const char *name)
{
    if (!name)
        return -1;
    if (strcasecmp(name, "warning") == 0)
        return AMI_LOG_WARN;
    for (int i = 0; i <= AMI_LOG_OFF; i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

/* ---- rendering ---------------------------------------------------------- */

static bool key_is_secret(const char *key)
{
    static const char *const exact[] = {"password", "key", "token", "authorization"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strcasecmp(key, exact[i]) == 0)
            return true;
    size_t n = strlen(key);
    return n >= 6 && strcasecmp(key + n - 6, "secret") == 0;
}

/* The escape for byte c inside a quoted value; 0 when c goes as is. */
static size_t escape_byte(unsigned char c, bool json, char out[8])
{
    const char *two = NULL;
    switch (c) {
    case '"': two = "\\\""; break;
    case '\\': two = "\\\\"; break;
    case '\n': two = "\\n"; break;
    case '\r': two = "\\r"; break;
    case '\t': two = "\\t"; break;
    default: break;
    }
    if (two) {
        memcpy(out, two, 2);
        return 2;
    }
    if (json && c < 0x20)
        return (size_t)snprintf(out, 8, "\\u%04x", c);
    if (!json && (c < 0x20 || c == 0x7f))
        return (size_t)snprintf(out, 8, "\\x%02x", c);
    return 0;
}

/* Appends what fits of p[0..n) under b's limit, so a cut message keeps as
 * much text as possible; -1 if not all of it fitted. */
static int append_fit(ami_buf_t *b, const char *p, size_t n)
{
    if (ami_buf_append(b, p, n) == 0)
        return 0;
    size_t room = b->limit > b->len ? b->limit - b->len : 0;
    if (room < n)
        (void)ami_buf_append(b, p, room);
    return -1;
}

/* Plain bytes go by runs; an escape goes whole or not at all, so a cut never
 * leaves half an escape behind. */
static int put_escaped(ami_buf_t *b, const char *s, size_t n, bool json)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        char esc[8];
        size_t e = escape_byte((unsigned char)s[i], json, esc);
        if (e == 0)
            continue;
        if (append_fit(b, s + start, i - start) < 0 || ami_buf_append(b, esc, e) < 0)
            return -1;
        start = i + 1;
    }
    return append_fit(b, s + start, n - start);
}

static bool logfmt_needs_quotes(const char *s, size_t n)
{
    if (n == 0)
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == '=' || c == '"' || c == 0x7f)
            return true;
    }
    return false;
}

static int put_str(ami_buf_t *b, bool json, const char *s, size_t n)
{
    if (!json && !logfmt_needs_quotes(s, n))
        return ami_buf_append(b, s, n);
    if (ami_buf_append(b, "\"", 1) < 0 || put_escaped(b, s, n, json) < 0)
        return -1;
    return ami_buf_append(b, "\"", 1);
}

static int put_key(ami_buf_t *b, bool json, const char *key)
{
    if (!json)
        return ami_buf_printf(b, " %s=", key);
    if (ami_buf_append(b, ",\"", 2) < 0 || put_escaped(b, key, strlen(key), true) < 0)
        return -1;
    return ami_buf_append(b, "\":", 2);
}

/* Shortest text that reads back as the same double; JSON has no NaN or Inf,
 * so those get names that both formats can carry. */
static void format_double(char out[32], double d)
{
    if (isnan(d)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(d)) {
        strcpy(out, d > 0 ? "+Inf" : "-Inf");
        return;
    }
    snprintf(out, 32, "%.15g", d);
    if (strtod(out, NULL) != d)
        snprintf(out, 32, "%.17g", d);
}

static int put_value(ami_buf_t *b, bool json, const ami_log_field_t *f)
{
    char num[32];
    if (key_is_secret(f->key))
        return put_str(b, json, "[redacted]", 10);
    switch (f->type) {
    case AMI_LF_STR: {
        const char *s = f->v.s ? f->v.s : "";
        size_t n = (f->len == SIZE_MAX || !f->v.s) ? strlen(s) : f->len;
        return put_str(b, json, s, n);
    }
    case AMI_LF_INT:
        snprintf(num, sizeof num, "%lld", f->v.i);
        break;
    case AMI_LF_UINT:
        snprintf(num, sizeof num, "%llu", f->v.u);
        break;
    case AMI_LF_BOOL:
        strcpy(num, f->v.b ? "true" : "false");
        break;
    case AMI_LF_DOUBLE:
        format_double(num, f->v.d);
        if (json && !isfinite(f->v.d))
            return put_str(b, json, num, strlen(num));
        break;
    default:
        return put_str(b, json, "[invalid field type]", 20);
    }
    return ami_buf_append_str(b, num);
}

static void format_ts(char out[32])
{
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    if (!gmtime_r(&now.tv_sec, &tm))
        memset(&tm, 0, sizeof tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(now.tv_nsec / 1000000));
}

static int put_head(ami_buf_t *b, bool json, ami_log_level_t level)
{
    char ts[32];
    format_ts(ts);
    if (json)
        return ami_buf_printf(b, "{\"ts\":\"%s\",\"level\":\"%s\"", ts, level_names[level]);
    return ami_buf_printf(b, "ts=%s level=%s", ts, level_names[level]);
}

/* The message alone is too long: keep its head, quoted, marked by "...". */
static void put_cut_msg(ami_buf_t *b, bool json, const char *msg, size_t room)
{
    size_t limit = b->limit;
    (void)put_key(b, json, "msg");
    (void)ami_buf_append(b, "\"", 1);
    b->limit = room - 4; /* `..."` */
    (void)put_escaped(b, msg, strlen(msg), json);
    b->limit = limit;
    (void)ami_buf_append(b, "...\"", 4);
}

/* Renders the whole line with its '\n' into b, never past max_line bytes.
 * A line too long is cut after the last field that fits (or inside msg) and
 * marked truncated, so it stays one valid logfmt or JSON line. */
static int render(const ami_logger_t *lg, ami_buf_t *b, ami_log_level_t level, const char *msg,
                  const ami_log_field_t *fields, size_t nfields)
{
    bool json = atomic_load_explicit(&lg->format, memory_order_relaxed) == AMI_LOG_FMT_JSON;
    const char *cut = json ? ",\"truncated\":true}\n" : " truncated=true\n";
    size_t cut_len = strlen(cut);
    size_t max = lg->max_line;
    b->limit = max;
    if (put_head(b, json, level) < 0)
        return -1;
    size_t head_end = b->len;
    size_t safe = 0; /* end of the last element that leaves room for `cut` */
    msg = msg ? msg : "";
    int rc = put_key(b, json, "msg");
    if (rc == 0)
        rc = put_str(b, json, msg, strlen(msg));
    if (rc == 0 && b->len + cut_len <= max)
        safe = b->len;
    for (size_t i = 0; i < nfields && rc == 0; i++) {
        if (!fields[i].key)
            continue;
        rc = put_key(b, json, fields[i].key);
        if (rc == 0)
            rc = put_value(b, json, &fields[i]);
        if (rc == 0 && b->len + cut_len <= max)
            safe = b->len;
    }
    if (rc == 0 && ami_buf_append_str(b, json ? "}\n" : "\n") == 0)
        return 0;
    if (safe) {
        b->len = safe;
    } else {
        b->len = head_end;
        put_cut_msg(b, json, msg, max - cut_len);
    }
    return ami_buf_append(b, cut, cut_len);
}

/* ---- output ------------------------------------------------------------- */

/* Writes as much as the fd takes: EINTR is retried, EAGAIN waits a bounded
 * time. Returns the bytes written. */
static size_t fd_write(int fd, const char *p, size_t n)
{
    size_t done = 0;
    int stalls = 0;
    while (done < n) {
        ssize_t w = write(fd, p + done, n - done);
        if (w > 0) {
            done += (size_t)w;
            stalls = 0;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && stalls++ < MAX_STALLS) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            (void)poll(&pfd, 1, 100);
        } else {
            break;
        }
    }
    return done;
}

static uint64_t count_lines(const char *p, size_t n)
{
    uint64_t lines = 0;
    for (const char *q = p; (q = memchr(q, '\n', n - (size_t)(q - p))) != NULL; q++)
        lines++;
    return lines;
}

/* Lines are counted by their '\n' (a line has exactly one), so a chunk that
 * ends mid-line counts that line with the chunk that finishes it. */
static void write_chunk(ami_logger_t *lg, const char *p, size_t n)
{
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
    size_t w = fd_write(lg->fd, p, n);
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    atomic_fetch_add(&lg->written, count_lines(p, w));
    atomic_fetch_add(&lg->dropped, count_lines(p + w, n - w));
}

/* The writer writes from the ring without holding the lock: producers only
 * fill the free part, and the bytes in flight stay counted in `used` until
 * they are written. Cancellation is enabled only inside write(2)/poll(2),
 * where no lock is held, as free's last resort against a reader that
 * never reads. */
static void *ring_writer(void *arg)
{
    ami_logger_t *lg = arg;
    struct ring *r = lg->ring;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (r->used == 0 && !r->stop)
            pthread_cond_wait(&r->wake, &r->mu);
        if (r->used == 0)
            break;
        const char *p = r->data + r->tail;
        size_t n = r->used < r->cap - r->tail ? r->used : r->cap - r->tail;
        pthread_mutex_unlock(&r->mu);
        write_chunk(lg, p, n);
        pthread_mutex_lock(&r->mu);
        r->tail = (r->tail + n) % r->cap;
        r->used -= n;
    }
    r->exited = true;
    pthread_cond_signal(&r->done);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static void ring_push(ami_logger_t *lg, const char *p, size_t n)
{
    struct ring *r = lg->ring;
    pthread_mutex_lock(&r->mu);
    if (r->stop || n > r->cap - r->used) {
        pthread_mutex_unlock(&r->mu);
        atomic_fetch_add(&lg->dropped, 1);
        return;
    }
    size_t head = (r->tail + r->used) % r->cap;
    size_t first = n < r->cap - head ? n : r->cap - head;
    memcpy(r->data + head, p, first);
    memcpy(r->data, p + first, n - first);
    bool was_empty = r->used == 0;
    r->used += n;
    if (was_empty)
        pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->mu);
}

static void ring_free(struct ring *r)
{
    pthread_cond_destroy(&r->done);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->mu);
    ami_free(r->data);
    ami_free(r);
}

static int ring_init_sync(struct ring *r)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&r->done, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        return -1;
    pthread_cond_init(&r->wake, NULL);
    pthread_mutex_init(&r->mu, NULL);
    return 0;
}

/* The writer starts with every signal blocked: signals belong to the loop
 * thread (libev), never to the logger. */
static int ring_start(ami_logger_t *lg, size_t bytes)
{
    struct ring *r = ami_calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->data = ami_malloc(bytes);
    if (!r->data || ring_init_sync(r) < 0) {
        ami_free(r->data);
        ami_free(r);
        return -1;
    }
    r->cap = bytes;
    lg->ring = r;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&r->thread, NULL, ring_writer, lg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        ring_free(r);
        lg->ring = NULL;
        return -1;
    }
    return 0;
}

/* Waits up to DRAIN_WAIT_NS for the queue to drain; past that the writer is
 * stuck on a reader that does not read, and is cancelled. */
static void ring_stop(struct ring *r)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    long long ns = deadline.tv_nsec + DRAIN_WAIT_NS;
    deadline.tv_sec += (time_t)(ns / 1000000000LL);
    deadline.tv_nsec = (long)(ns % 1000000000LL);

    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->wake);
    while (!r->exited)
        if (pthread_cond_timedwait(&r->done, &r->mu, &deadline) == ETIMEDOUT)
            break;
    bool exited = r->exited;
    pthread_mutex_unlock(&r->mu);
    if (!exited)
        pthread_cancel(r->thread);
    pthread_join(r->thread, NULL);
}

static void emit(ami_logger_t *lg, ami_log_level_t level, ami_buf_t *b)
{
    if (lg->sink) {
        /* The sink gets the line without its '\n', NUL-terminated. */
        b->data[b->len - 1] = '\0';
        lg->sink(lg->sink_ud, level, b->data, b->len - 1);
        atomic_fetch_add(&lg->written, 1);
    } else if (lg->ring) {
        ring_push(lg, b->data, b->len);
    } else {
        pthread_mutex_lock(&lg->write_mu);
        size_t w = fd_write(lg->fd, b->data, b->len);
        pthread_mutex_unlock(&lg->write_mu);
        atomic_fetch_add(w == b->len ? &lg->written : &lg->dropped, 1);
    }
}

/* ---- public ------------------------------------------------------------- */

void ami_logger_config_default(ami_logger_config_t *cfg)
{
    if (!cfg)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->level = AMI_LOG_INFO;
    cfg->format = AMI_LOG_FMT_LOGFMT;
    cfg->fd = 2;
    cfg->ring_bytes = DEFAULT_RING_BYTES;
    cfg->max_line = DEFAULT_MAX_LINE;
}

ami_logger_t *ami_logger_new(const ami_logger_config_t *cfg)
{
    ami_logger_config_t c;
    if (cfg)
        c = *cfg;
    else
        ami_logger_config_default(&c);
    if ((unsigned)c.level > AMI_LOG_OFF || (unsigned)c.format > AMI_LOG_FMT_JSON)
        return NULL;
    if (!c.sink && c.fd < 0)
        return NULL;
    ami_logger_t *lg = ami_calloc(1, sizeof *lg);
    if (!lg)
        return NULL;
    atomic_init(&lg->head.level, (int)c.level);
    atomic_init(&lg->format, (int)c.format);
    atomic_init(&lg->written, 0);
    atomic_init(&lg->dropped, 0);
    lg->fd = c.fd;
    lg->sink = c.sink;
    lg->sink_ud = c.sink_ud;
    lg->max_line = c.max_line ? c.max_line : DEFAULT_MAX_LINE;
    if (lg->max_line < MIN_MAX_LINE)
        lg->max_line = MIN_MAX_LINE;
    pthread_mutex_init(&lg->write_mu, NULL);
    if (c.async && !c.sink && ring_start(lg, c.ring_bytes ? c.ring_bytes : DEFAULT_RING_BYTES) < 0) {
        pthread_mutex_destroy(&lg->write_mu);
        ami_free(lg);
        return NULL;
    }
    return lg;
}

void ami_logger_free(ami_logger_t *lg)
{
    if (!lg)
        return;
    if (lg->ring) {
        ring_stop(lg->ring);
        ring_free(lg->ring);
    }
    pthread_mutex_destroy(&lg->write_mu);
    ami_free(lg);
}

void ami_logger_set_level(ami_logger_t *lg, ami_log_level_t level)
{
    if (lg && (unsigned)level <= AMI_LOG_OFF)
        atomic_store_explicit(&lg->head.level, (int)level, memory_order_relaxed);
}

/* A NULL logger logs nothing, which is what "off" says. */
ami_log_level_t ami_logger_level(const ami_logger_t *lg)
{
    return lg ? (ami_log_level_t)atomic_load_explicit(&lg->head.level, memory_order_relaxed) : AMI_LOG_OFF;
}

void ami_logger_set_format(ami_logger_t *lg, ami_log_format_t format)
{
    if (lg && (unsigned)format <= AMI_LOG_FMT_JSON)
        atomic_store_explicit(&lg->format, (int)format, memory_order_relaxed);
}

void ami_log_fields(ami_logger_t *lg, ami_log_level_t level, const char *msg,
                    const ami_log_field_t *fields, size_t nfields)
{
    if ((unsigned)level >= AMI_LOG_OFF || !ami_log_enabled(lg, level))
        return;
    if (!fields)
        nfields = 0;
    ami_buf_t b;
    ami_buf_init(&b, 0);
    if (render(lg, &b, level, msg, fields, nfields) == 0)
        emit(lg, level, &b);
    else
        atomic_fetch_add(&lg->dropped, 1);
    ami_buf_deinit(&b);
}

uint64_t ami_logger_dropped(const ami_logger_t *lg)
{
    return lg ? atomic_load(&lg->dropped) : 0;
}

uint64_t ami_logger_written(const ami_logger_t *lg)
{
    return lg ? atomic_load(&lg->written) : 0;
}
