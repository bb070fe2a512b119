/*
 * How a transfer ended: libcurl's result mapped to the engine's error kinds
 * with a message that says what failed, the final response's headers split
 * into lower-cased name/value pairs, and the metrics (per host and status
 * class, errors by kind, refusals by reason, duration).
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "httpc/httpc_internal.h"
#include "util/alloc.h"
#include "util/clock.h"

static const char *const REFUSAL_NAMES[REFUSAL_COUNT] = {
    "max_concurrent",   "max_per_script",  "url_length",     "request_headers", "request_body",
    "response_headers", "response_body",   "redirects",      "scheme",          "invalid",
};

/* ---- metrics -------------------------------------------------------------------- */

int httpc_metrics_init(ami_httpc_t *h, ami_metrics_t *registry)
{
    httpc_metrics_t *m = &h->m;
    m->registry = registry;
    for (int i = 0; i < REFUSAL_COUNT; i++)
        m->refused[i] = ami_metrics_counter(registry, "ami_http_client_refused_total",
                                            "HTTP requests (or their answers) refused by a bound or a policy",
                                            (const char *const[]){"reason", REFUSAL_NAMES[i], NULL}, NULL);
    for (int k = AMI_HTTPC_INVALID; k < AMI_HTTPC_KIND_COUNT; k++)
        m->errors[k] = ami_metrics_counter(registry, "ami_http_client_errors_total",
                                           "HTTP requests that ended without an answer, by error kind",
                                           (const char *const[]){"kind", ami_httpc_kind_name(k), NULL}, NULL);
    m->cancelled = ami_metrics_counter(registry, "ami_http_client_cancelled_total",
                                       "HTTP requests abandoned by their caller (a cancelled coroutine)", NULL, NULL);
    m->in_flight = ami_metrics_gauge(registry, "ami_http_client_in_flight", "HTTP requests in flight", NULL, NULL);
    m->duration = ami_metrics_histogram(registry, "ami_http_client_request_duration_seconds",
                                        "Time from start to answer or error of HTTP requests", NULL, 0, NULL, NULL);
    m->hosts = ami_calloc(h->cfg.max_host_labels ? h->cfg.max_host_labels : 1, sizeof *m->hosts);
    return m->hosts ? 0 : -1;
}

void httpc_metrics_deinit(ami_httpc_t *h)
{
    for (uint32_t i = 0; i < h->m.nhosts; i++)
        ami_free(h->m.hosts[i]);
    ami_free(h->m.hosts);
    h->m.hosts = NULL;
    h->m.nhosts = 0;
}

void httpc_host_label(ami_httpc_t *h, const char *host, char *out, size_t size)
{
    httpc_metrics_t *m = &h->m;
    for (uint32_t i = 0; i < m->nhosts; i++)
        if (strcmp(m->hosts[i], host) == 0) {
            snprintf(out, size, "%s", host);
            return;
        }
    if (m->nhosts < h->cfg.max_host_labels && (m->hosts[m->nhosts] = ami_strdup(host))) {
        m->nhosts++;
        snprintf(out, size, "%s", host);
        return;
    }
    snprintf(out, size, "other");
}

static void count_request(ami_httpc_transfer_t *t, const char *cls)
{
    ami_counter_t *c = ami_metrics_counter(t->h->m.registry, "ami_http_client_requests_total",
                                           "HTTP requests finished, by host and status class (error: no answer)",
                                           (const char *const[]){"host", t->host, "class", cls, NULL}, NULL);
    ami_counter_inc(c);
}

/* ---- response headers ------------------------------------------------------------------ */

static size_t trim_end(const char *s, size_t n)
{
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    return n;
}

/* One "Name: value" line into hd (name lower-cased in place); false for
 * anything else (status line, blank line, folded continuation). */
static bool split_line(char *line, size_t n, ami_httpc_header_t *hd)
{
    n = trim_end(line, n);
    if (n == 0 || line[0] == ' ' || line[0] == '\t' || (n >= 5 && memcmp(line, "HTTP/", 5) == 0))
        return false;
    char *colon = memchr(line, ':', n);
    if (!colon || colon == line)
        return false;
    size_t name_len = trim_end(line, (size_t)(colon - line));
    for (size_t i = 0; i < name_len; i++)
        line[i] = (char)tolower((unsigned char)line[i]);
    char *v = colon + 1;
    char *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    *hd = (ami_httpc_header_t){line, name_len, v, (size_t)(end - v)};
    return true;
}

static size_t split_headers(ami_buf_t *head, ami_httpc_header_t **out)
{
    size_t lines = 1;
    for (size_t i = 0; i < head->len; i++)
        lines += head->data[i] == '\n';
    ami_httpc_header_t *hs = ami_calloc(lines, sizeof *hs);
    if (!hs)
        return 0;
    size_t n = 0;
    char *p = head->data, *end = head->data + head->len;
    while (p && p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (split_line(p, len, &hs[n]))
            n++;
        p = nl ? nl + 1 : NULL;
    }
    *out = hs;
    return n;
}

/* ---- errors ------------------------------------------------------------------------------- */

static bool is_tls_error(CURLcode c)
{
    switch (c) {
    case CURLE_SSL_CONNECT_ERROR: case CURLE_PEER_FAILED_VERIFICATION: case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM: case CURLE_SSL_CIPHER: case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED: case CURLE_SSL_ENGINE_INITFAILED: case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE: case CURLE_SSL_ISSUER_ERROR: case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS: case CURLE_SSL_CLIENTCERT: case CURLE_USE_SSL_FAILED:
        return true;
    default:
        return false;
    }
}

static void set_error(ami_httpc_response_t *res, ami_httpc_kind_t kind, const char *detail, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_error(ami_httpc_response_t *res, ami_httpc_kind_t kind, const char *detail, const char *fmt, ...)
{
    res->err.kind = kind;
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(res->err.msg, sizeof res->err.msg, "%s (%s)", what, detail);
}

static void map_error(ami_httpc_transfer_t *t, CURLcode code, ami_httpc_response_t *res)
{
    ami_httpc_t *h = t->h;
    const char *detail = t->errbuf[0] ? t->errbuf : curl_easy_strerror(code);
    long redirects = 0;
    curl_easy_getinfo(t->easy, CURLINFO_REDIRECT_COUNT, &redirects);
    if (t->overflowed) {
        ami_counter_inc(h->m.refused[t->overflow]);
        if (t->overflow == REFUSED_RESPONSE_BODY)
            set_error(res, AMI_HTTPC_TOO_LARGE, "transfer stopped",
                      "response body larger than http.max_response_bytes (%zu bytes)", h->cfg.max_response_bytes);
        else
            set_error(res, AMI_HTTPC_TOO_LARGE, "transfer stopped",
                      "response headers larger than http.max_header_bytes (%zu bytes)", h->cfg.max_header_bytes);
        return;
    }
    switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
        set_error(res, AMI_HTTPC_TIMEOUT, detail, "no complete answer in time");
        return;
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY:
        set_error(res, AMI_HTTPC_DNS, detail, "the name did not resolve");
        return;
    case CURLE_COULDNT_CONNECT:
        set_error(res, AMI_HTTPC_CONNECT, detail, "cannot connect");
        return;
    case CURLE_FILESIZE_EXCEEDED:
        ami_counter_inc(h->m.refused[REFUSED_RESPONSE_BODY]);
        set_error(res, AMI_HTTPC_TOO_LARGE, "announced by Content-Length",
                  "response body larger than http.max_response_bytes (%zu bytes)", h->cfg.max_response_bytes);
        return;
    case CURLE_TOO_MANY_REDIRECTS:
        ami_counter_inc(h->m.refused[REFUSED_REDIRECTS]);
        set_error(res, AMI_HTTPC_REDIRECT, detail, "more than %u redirects (http.max_redirects)",
                  h->cfg.max_redirects);
        return;
    case CURLE_UNSUPPORTED_PROTOCOL:
        if (strstr(detail, "HTTP/0.9")) { /* a line that is not HTTP read as the oldest HTTP */
            set_error(res, AMI_HTTPC_PROTOCOL, detail, "the server's answer is not valid HTTP");
            return;
        }
        ami_counter_inc(h->m.refused[REFUSED_SCHEME]);
        set_error(res, AMI_HTTPC_REFUSED, detail, "%s",
                  redirects ? "redirected to a URL that is not http or https" : "only http and https URLs are allowed");
        return;
    case CURLE_URL_MALFORMAT:
        set_error(res, AMI_HTTPC_INVALID, detail, "malformed URL");
        return;
    case CURLE_OUT_OF_MEMORY:
        set_error(res, AMI_HTTPC_NOMEM, detail, "out of memory");
        return;
    case CURLE_GOT_NOTHING: case CURLE_WEIRD_SERVER_REPLY: case CURLE_PARTIAL_FILE:
    case CURLE_BAD_CONTENT_ENCODING: case CURLE_HTTP2: case CURLE_HTTP2_STREAM: case CURLE_HTTP3:
        set_error(res, AMI_HTTPC_PROTOCOL, detail, "the server's answer is not valid HTTP");
        return;
    default:
        if (is_tls_error(code))
            set_error(res, AMI_HTTPC_TLS, detail, "TLS failed");
        else
            set_error(res, AMI_HTTPC_IO, detail, "the transfer failed");
        return;
    }
}

/* ---- the result ----------------------------------------------------------------------------- */

static const char *status_class(long status)
{
    static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    return status >= 100 && status <= 599 ? classes[status / 100 - 1] : "other";
}

void httpc_result_build(ami_httpc_transfer_t *t, CURLcode code, ami_httpc_response_t *res,
                        ami_httpc_header_t **headers)
{
    ami_httpc_t *h = t->h;
    memset(res, 0, sizeof *res);
    res->seconds = (double)(ami_now_ns() - t->start_ns) / 1e9;
    ami_histogram_observe(h->m.duration, res->seconds);
    if (code != CURLE_OK || t->overflowed) {
        map_error(t, code, res);
        ami_counter_inc(h->m.errors[res->err.kind]);
        count_request(t, "error");
        if (h->log && ami_log_enabled(h->log, AMI_LOG_DEBUG))
            AMI_LOG(h->log, AMI_LOG_DEBUG, "http request failed", AMI_F_STR("host", t->host),
                    AMI_F_STR("kind", ami_httpc_kind_name(res->err.kind)), AMI_F_STR("error", res->err.msg));
        return;
    }
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &res->status);
    char *url = NULL;
    curl_easy_getinfo(t->easy, CURLINFO_EFFECTIVE_URL, &url);
    res->url = url ? url : t->url;
    res->nheaders = split_headers(&t->resp_head, headers);
    res->headers = *headers;
    res->body = t->resp_body.data ? t->resp_body.data : "";
    res->body_len = t->resp_body.len;
    count_request(t, status_class(res->status));
}
