/*
 * Turning a request into a libcurl easy handle: every check first (method,
 * URL, headers, body, timeout), each refusal counted with its reason, then
 * the handle with the engine's policy (http/https only, also on redirect;
 * no proxy but the configured one; TLS verification; bounded time, size and
 * redirects) and the callbacks that collect the answer within its bounds.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "httpc/httpc_internal.h"
#include "util/alloc.h"

#define USER_AGENT "ami-engine/" AMI_VERSION

static const char *const METHODS[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
enum { M_GET, M_HEAD, M_POST, M_PUT, M_PATCH, M_DELETE, M_OPTIONS, M_COUNT };

/* ---- checks ------------------------------------------------------------------------ */

static int check_method(ami_httpc_t *h, const char *method, ami_httpc_err_t *err)
{
    if (!method)
        return M_GET;
    for (int i = 0; i < M_COUNT; i++)
        if (strcasecmp(method, METHODS[i]) == 0)
            return i;
    httpc_refuse(h, REFUSED_INVALID, err, AMI_HTTPC_INVALID,
                 "method \"%.20s\" is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS", method);
    return -1;
}

static bool has_scheme(const char *url, size_t len, const char *scheme)
{
    size_t n = strlen(scheme);
    return len >= n && strncasecmp(url, scheme, n) == 0;
}

/* Also copies the URL into t and finds its host. */
static int check_url(ami_httpc_t *h, ami_httpc_transfer_t *t, const ami_httpc_request_t *req, ami_httpc_err_t *err)
{
    const char *url = req->url;
    size_t len = req->url_len;
    if (!url || len == 0) {
        httpc_refuse(h, REFUSED_INVALID, err, AMI_HTTPC_INVALID, "url is required (http:// or https://)");
        return -1;
    }
    if (len > h->cfg.max_url_bytes) {
        httpc_refuse(h, REFUSED_URL_LENGTH, err, AMI_HTTPC_TOO_LARGE, "url is %zu bytes, more than http.max_url_bytes (%zu)",
                     len, h->cfg.max_url_bytes);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c == 0x7f) {
            httpc_refuse(h, REFUSED_INVALID, err, AMI_HTTPC_INVALID,
                         "url has a space or control character at byte %zu; percent-encode it", i + 1);
            return -1;
        }
    }
    if (!has_scheme(url, len, "http://") && !has_scheme(url, len, "https://")) {
        httpc_refuse(h, REFUSED_SCHEME, err, AMI_HTTPC_REFUSED, "url must start with http:// or https://");
        return -1;
    }
    if (!(t->url = ami_strndup(url, len))) {
        if (err) {
            err->kind = AMI_HTTPC_NOMEM;
            snprintf(err->msg, sizeof err->msg, "out of memory starting an HTTP request");
        }
        return -1;
    }
    if (!httpc_url_host(t->url, t->host, sizeof t->host)) {
        httpc_refuse(h, REFUSED_INVALID, err, AMI_HTTPC_INVALID, "url \"%.80s\" is not a valid URL with a host",
                     t->url);
        return -1;
    }
    return 0;
}

static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int check_header(ami_httpc_t *h, const ami_httpc_header_t *hd, ami_httpc_err_t *err)
{
    if (hd->name_len == 0 || hd->name_len > HTTPC_HEADER_NAME_MAX) {
        httpc_refuse(h, REFUSED_INVALID, err, AMI_HTTPC_INVALID, "header names are 1 to %u characters",
                     HTTPC_HEADER_NAME_MAX);
        return -1;
    }
    for (size_t i = 0; i < hd->name_len; i++)
        if (!is_tchar((unsigned char)hd->name[i])) {
            httpc_refuse(h, REFUSED_INVALID, err, AMI_HTTPC_INVALID,
                         "header name \"%.40s\" has a character that is not allowed in a name (byte %zu)",
                         hd->name, i + 1);
            return -1;
        }
    if ((hd->name_len == 14 && strncasecmp(hd->name, "Content-Length", 14) == 0) ||
        (hd->name_len == 17 && strncasecmp(hd->name, "Transfer-Encoding", 17) == 0)) {
        httpc_refuse(h, REFUSED_INVALID, err, AMI_HTTPC_INVALID,
                     "header %.20s is set by the engine from the body; remove it", hd->name);
        return -1;
    }
    if (hd->value_len > HTTPC_HEADER_VALUE_MAX) {
        httpc_refuse(h, REFUSED_REQUEST_HEADERS, err, AMI_HTTPC_TOO_LARGE, "header %.40s is longer than %u bytes",
                     hd->name, HTTPC_HEADER_VALUE_MAX);
        return -1;
    }
    for (size_t i = 0; i < hd->value_len; i++) {
        unsigned char c = (unsigned char)hd->value[i];
        if (c == '\r' || c == '\n' || c == '\0' || (c < 0x20 && c != '\t') || c == 0x7f) {
            httpc_refuse(h, REFUSED_INVALID, err, AMI_HTTPC_INVALID,
                         "header %.40s has a %s in its value (header injection); remove it", hd->name,
                         c == '\r' || c == '\n' ? "CR or LF" : c == '\0' ? "NUL" : "control character");
            return -1;
        }
    }
    return 0;
}

static bool names_equal(const ami_httpc_header_t *hd, const char *name)
{
    return hd->name_len == strlen(name) && strncasecmp(hd->name, name, hd->name_len) == 0;
}

static int append_line(struct curl_slist **list, const char *line)
{
    struct curl_slist *n = curl_slist_append(*list, line);
    if (!n)
        return -1;
    *list = n;
    return 0;
}

/* "Name: value", or "Name;" for an empty value ("Name:" would remove it). */
static int append_header(struct curl_slist **list, const ami_httpc_header_t *hd)
{
    size_t n = hd->name_len + hd->value_len + 3;
    char *line = ami_malloc(n);
    if (!line)
        return -1;
    if (hd->value_len)
        snprintf(line, n, "%.*s: %.*s", (int)hd->name_len, hd->name, (int)hd->value_len, hd->value);
    else
        snprintf(line, n, "%.*s;", (int)hd->name_len, hd->name);
    int rc = append_line(list, line);
    ami_free(line);
    return rc;
}

static int build_headers(ami_httpc_t *h, ami_httpc_transfer_t *t, const ami_httpc_request_t *req, bool body,
                         ami_httpc_err_t *err)
{
    if (req->nheaders > HTTPC_MAX_REQUEST_HEADERS) {
        httpc_refuse(h, REFUSED_REQUEST_HEADERS, err, AMI_HTTPC_TOO_LARGE, "%zu headers; at most %zu",
                     req->nheaders, HTTPC_MAX_REQUEST_HEADERS);
        return -1;
    }
    size_t total = 0;
    bool content_type = false;
    for (size_t i = 0; i < req->nheaders; i++) {
        const ami_httpc_header_t *hd = &req->headers[i];
        if (check_header(h, hd, err) < 0)
            return -1;
        total += hd->name_len + hd->value_len + 4;
        content_type |= names_equal(hd, "Content-Type");
    }
    if (total > h->cfg.max_header_bytes) {
        httpc_refuse(h, REFUSED_REQUEST_HEADERS, err, AMI_HTTPC_TOO_LARGE,
                     "request headers are %zu bytes, more than http.max_header_bytes (%zu)", total,
                     h->cfg.max_header_bytes);
        return -1;
    }
    for (size_t i = 0; i < req->nheaders; i++)
        if (append_header(&t->headers, &req->headers[i]) < 0)
            goto nomem;
    /* No 100-continue round trip (a one-second stall with many servers), and
     * no made-up form content type on a body the script did not label. */
    if (append_line(&t->headers, "Expect:") < 0 || (body && !content_type && append_line(&t->headers, "Content-Type:") < 0))
        goto nomem;
    return 0;
nomem:
    if (err) {
        err->kind = AMI_HTTPC_NOMEM;
        snprintf(err->msg, sizeof err->msg, "out of memory building the request headers");
    }
    return -1;
}

static int check_body_and_time(ami_httpc_t *h, const ami_httpc_request_t *req, int method, ami_httpc_err_t *err)
{
    if (req->body && req->body_len > h->cfg.max_request_bytes) {
        httpc_refuse(h, REFUSED_REQUEST_BODY, err, AMI_HTTPC_TOO_LARGE,
                     "request body is %zu bytes, more than http.max_request_bytes (%zu)", req->body_len,
                     h->cfg.max_request_bytes);
        return -1;
    }
    if (req->body && (method == M_GET || method == M_HEAD)) {
        httpc_refuse(h, REFUSED_INVALID, err, AMI_HTTPC_INVALID, "a %s request has no body; use POST or PUT",
                     METHODS[method]);
        return -1;
    }
    if (req->timeout_ms > h->cfg.timeout_ms) {
        httpc_refuse(h, REFUSED_INVALID, err, AMI_HTTPC_INVALID,
                     "timeout %u ms is more than http.timeout_ms (%u ms), the most a request may take",
                     req->timeout_ms, h->cfg.timeout_ms);
        return -1;
    }
    return 0;
}

/* ---- the easy handle --------------------------------------------------------------------- */

/* A header line of the answer. A status line starts a new response (a
 * redirect, a 100 Continue): only the last one's headers are kept. */
static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    ami_httpc_transfer_t *t = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(data, "HTTP/", 5) == 0)
        ami_buf_clear(&t->resp_head);
    if (ami_buf_append(&t->resp_head, data, len) < 0) {
        t->overflowed = true;
        t->overflow = REFUSED_RESPONSE_HEADERS;
        return 0; /* curl aborts the transfer */
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    ami_httpc_transfer_t *t = ud;
    size_t len = size * n;
    if (ami_buf_append(&t->resp_body, data, len) < 0) {
        t->overflowed = true;
        t->overflow = REFUSED_RESPONSE_BODY;
        return 0;
    }
    return len;
}

#define SET(opt, val)                                                                            \
    do {                                                                                         \
        CURLcode rc_ = curl_easy_setopt(e, opt, val);                                            \
        if (rc_ != CURLE_OK && first == CURLE_OK) {                                              \
            first = rc_;                                                                         \
            failed = #opt;                                                                       \
        }                                                                                        \
    } while (0)

static CURLcode set_policy(ami_httpc_t *h, CURL *e, uint32_t timeout_ms, const char **failed_opt)
{
    CURLcode first = CURLE_OK;
    const char *failed = NULL;
    const ami_httpc_config_t *c = &h->cfg;
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_QUICK_EXIT, 1L); /* a cancelled lookup is left to its thread, never waited for */
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, c->max_redirects ? 1L : 0L);
    SET(CURLOPT_MAXREDIRS, (long)c->max_redirects);
    SET(CURLOPT_PROXY, c->proxy ? c->proxy : ""); /* "": ignore http_proxy and friends */
    SET(CURLOPT_SSL_VERIFYPEER, c->verify ? 1L : 0L);
    SET(CURLOPT_SSL_VERIFYHOST, c->verify ? 2L : 0L);
    if (c->ca_file)
        SET(CURLOPT_CAINFO, c->ca_file);
    SET(CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)(c->connect_timeout_ms < timeout_ms ? c->connect_timeout_ms : timeout_ms));
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_response_bytes);
    SET(CURLOPT_USERAGENT, USER_AGENT);
    *failed_opt = failed;
    return first;
}

static CURLcode set_request(ami_httpc_transfer_t *t, CURL *e, int method, size_t body_len, const char **failed_opt)
{
    CURLcode first = CURLE_OK;
    const char *failed = NULL;
    SET(CURLOPT_URL, t->url);
    SET(CURLOPT_PRIVATE, (void *)t);
    SET(CURLOPT_ERRORBUFFER, t->errbuf);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)t);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, (void *)t);
    SET(CURLOPT_HTTPHEADER, t->headers);
    if (method == M_HEAD)
        SET(CURLOPT_NOBODY, 1L);
    else if (method == M_GET)
        SET(CURLOPT_HTTPGET, 1L);
    if (t->body) {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        SET(CURLOPT_POSTFIELDS, t->body);
    }
    if (method != M_GET && method != M_HEAD && method != M_POST)
        SET(CURLOPT_CUSTOMREQUEST, METHODS[method]);
    *failed_opt = failed;
    return first;
}

#undef SET

int httpc_request_prepare(ami_httpc_t *h, ami_httpc_transfer_t *t, const ami_httpc_request_t *req,
                          ami_httpc_err_t *err)
{
    int method = check_method(h, req->method, err);
    if (method < 0 || check_url(h, t, req, err) < 0 || check_body_and_time(h, req, method, err) < 0)
        return -1;
    /* POST, PUT and PATCH always carry a body, if only an empty one. */
    bool body = req->body || method == M_POST || method == M_PUT || method == M_PATCH;
    if (build_headers(h, t, req, body, err) < 0)
        return -1;
    t->body = body ? ami_malloc(req->body_len + 1) : NULL;
    t->easy = curl_easy_init();
    if ((body && !t->body) || !t->easy) {
        if (err) {
            err->kind = AMI_HTTPC_NOMEM;
            snprintf(err->msg, sizeof err->msg, "out of memory starting an HTTP request");
        }
        return -1;
    }
    if (body && req->body_len)
        memcpy(t->body, req->body, req->body_len);
    char host[sizeof t->host];
    snprintf(host, sizeof host, "%s", t->host);
    httpc_host_label(h, host, t->host, sizeof t->host);
    const char *failed = NULL;
    uint32_t timeout_ms = req->timeout_ms ? req->timeout_ms : h->cfg.timeout_ms;
    CURLcode rc = set_policy(h, t->easy, timeout_ms, &failed);
    if (rc == CURLE_OK)
        rc = set_request(t, t->easy, method, req->body_len, &failed);
    if (rc != CURLE_OK) {
        if (err) {
            err->kind = rc == CURLE_OUT_OF_MEMORY ? AMI_HTTPC_NOMEM : AMI_HTTPC_INVALID;
            snprintf(err->msg, sizeof err->msg, "libcurl refused %s: %s", failed ? failed : "an option",
                     curl_easy_strerror(rc));
        }
        return -1;
    }
    return 0;
}

bool httpc_url_host(const char *url, char *out, size_t size)
{
    out[0] = '\0';
    CURLU *u = curl_url();
    char *host = NULL;
    bool ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
              curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host && *host;
    if (ok) {
        snprintf(out, size, "%s", host);
        for (char *p = out; *p; p++)
            *p = (char)tolower((unsigned char)*p);
    }
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}
