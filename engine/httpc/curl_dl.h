/*
 * libcurl, loaded when the first HTTP client is made (dlopen of
 * libcurl.so.4) rather than linked. An engine whose config has no `http`
 * section then never maps libcurl and the ~25 libraries it pulls in
 * (GnuTLS, Kerberos, LDAP, SSH, RTMP, ...): ~3.5 MiB of resident pages,
 * a third of an idle engine.
 *
 * The httpc files call libcurl by its own names: below, each name stands
 * for the function resolved at load, so the code reads as plain libcurl.
 * None of them may be called before httpc_curl_load() returned 0 (the
 * client calls it first thing in ami_httpc_new). The environment variable
 * AMI_LIBCURL names another libcurl to load (a path or a soname). Loading happens once per
 * process, is thread-safe, and is never undone (curl_global_init's
 * OpenSSL set-up cannot be repeated).
 */
#ifndef AMI_HTTPC_CURL_DL_H
#define AMI_HTTPC_CURL_DL_H

#include <stddef.h>

/* The type-checking macros of curl/typecheck-gcc.h would take these names
 * before the definitions below could. */
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>

#define HTTPC_CURL_LIBRARY "libcurl.so.4"

/* type, name in the table, libcurl's symbol, parameters */
#define HTTPC_CURL_FUNCTIONS(X)                                                                        \
    X(CURLcode, global_init, curl_global_init, (long))                                                  \
    X(curl_version_info_data *, version_info, curl_version_info, (CURLversion))                         \
    X(const char *, easy_strerror, curl_easy_strerror, (CURLcode))                                      \
    X(const char *, multi_strerror, curl_multi_strerror, (CURLMcode))                                   \
    X(CURLM *, multi_init, curl_multi_init, (void))                                                     \
    X(CURLMcode, multi_setopt, curl_multi_setopt, (CURLM *, CURLMoption, ...))                          \
    X(CURLMcode, multi_add_handle, curl_multi_add_handle, (CURLM *, CURL *))                            \
    X(CURLMcode, multi_remove_handle, curl_multi_remove_handle, (CURLM *, CURL *))                      \
    X(CURLMsg *, multi_info_read, curl_multi_info_read, (CURLM *, int *))                               \
    X(CURLMcode, multi_socket_action, curl_multi_socket_action, (CURLM *, curl_socket_t, int, int *))   \
    X(CURLMcode, multi_assign, curl_multi_assign, (CURLM *, curl_socket_t, void *))                     \
    X(CURLMcode, multi_cleanup, curl_multi_cleanup, (CURLM *))                                          \
    X(CURL *, easy_init, curl_easy_init, (void))                                                        \
    X(CURLcode, easy_setopt, curl_easy_setopt, (CURL *, CURLoption, ...))                               \
    X(CURLcode, easy_getinfo, curl_easy_getinfo, (CURL *, CURLINFO, ...))                               \
    X(void, easy_cleanup, curl_easy_cleanup, (CURL *))                                                  \
    X(struct curl_slist *, slist_append, curl_slist_append, (struct curl_slist *, const char *))        \
    X(void, slist_free_all, curl_slist_free_all, (struct curl_slist *))                                 \
    X(CURLU *, url, curl_url, (void))                                                                   \
    X(CURLUcode, url_set, curl_url_set, (CURLU *, CURLUPart, const char *, unsigned int))               \
    X(CURLUcode, url_get, curl_url_get, (const CURLU *, CURLUPart, char **, unsigned int))              \
    X(void, url_cleanup, curl_url_cleanup, (CURLU *))                                                   \
    X(void, free, curl_free, (void *))

#define HTTPC_CURL_FIELD(type, field, symbol, params) type(*field) params;
typedef struct httpc_curl_api {
    HTTPC_CURL_FUNCTIONS(HTTPC_CURL_FIELD)
} httpc_curl_api_t;
#undef HTTPC_CURL_FIELD

extern httpc_curl_api_t httpc_curl; /* filled once by httpc_curl_load, read-only after */

/* 0 when libcurl is loaded (now or before); -1 with what went wrong and
 * what to do in why. */
int httpc_curl_load(char *why, size_t size);

/* curl.h defines these three as macros of themselves */
#undef curl_multi_setopt
#undef curl_easy_setopt
#undef curl_easy_getinfo
#define curl_global_init httpc_curl.global_init
#define curl_version_info httpc_curl.version_info
#define curl_easy_strerror httpc_curl.easy_strerror
#define curl_multi_strerror httpc_curl.multi_strerror
#define curl_multi_init httpc_curl.multi_init
#define curl_multi_setopt httpc_curl.multi_setopt
#define curl_multi_add_handle httpc_curl.multi_add_handle
#define curl_multi_remove_handle httpc_curl.multi_remove_handle
#define curl_multi_info_read httpc_curl.multi_info_read
#define curl_multi_socket_action httpc_curl.multi_socket_action
#define curl_multi_assign httpc_curl.multi_assign
#define curl_multi_cleanup httpc_curl.multi_cleanup
#define curl_easy_init httpc_curl.easy_init
#define curl_easy_setopt httpc_curl.easy_setopt
#define curl_easy_getinfo httpc_curl.easy_getinfo
#define curl_easy_cleanup httpc_curl.easy_cleanup
#define curl_slist_append httpc_curl.slist_append
#define curl_slist_free_all httpc_curl.slist_free_all
#define curl_url httpc_curl.url
#define curl_url_set httpc_curl.url_set
#define curl_url_get httpc_curl.url_get
#define curl_url_cleanup httpc_curl.url_cleanup
#define curl_free httpc_curl.free

#endif
