#include "httpc/curl_dl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

httpc_curl_api_t httpc_curl;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[384];

/* dlsym gives an object pointer; POSIX guarantees it converts to a
 * function pointer, C does not, hence the copy through memcpy. */
static bool resolve(void *lib, const char *name, const char *symbol, void *field, size_t size)
{
    void *p = dlsym(lib, symbol);
    if (!p) {
        snprintf(load_error, sizeof load_error,
                 "http: %.120s lacks %s: libcurl 7.85 or newer is needed (Debian: apt install libcurl4)",
                 name, symbol);
        return false;
    }
    memcpy(field, &p, size);
    return true;
}

/* AMI_LIBCURL names another build of libcurl (a path or a soname). */
static const char *library_name(void)
{
    const char *name = getenv("AMI_LIBCURL");
    return name && *name ? name : HTTPC_CURL_LIBRARY;
}

/* dlopen open()s a path as it is: a FIFO there would block the start. */
static bool a_regular_file_or_a_soname(const char *name)
{
    if (!strchr(name, '/'))
        return true; /* a soname: dlopen searches the library paths */
    struct stat st;
    if (stat(name, &st) != 0)
        return true; /* dlopen will say what is wrong with it */
    return S_ISREG(st.st_mode);
}

static void load(void)
{
    const char *name = library_name();
    if (!a_regular_file_or_a_soname(name)) {
        snprintf(load_error, sizeof load_error,
                 "http: AMI_LIBCURL names %.120s, which is not a regular file; point it at libcurl.so.4 or unset it",
                 name);
        return;
    }
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        snprintf(load_error, sizeof load_error,
                 "http: cannot load libcurl (%.120s); the http section needs it: install it (Debian: apt "
                 "install libcurl4) or remove the section",
                 why ? why : name);
        return;
    }
    httpc_curl_api_t api;
    bool ok = true;
#define HTTPC_CURL_RESOLVE(type, field, symbol, params) \
    ok = ok && resolve(lib, name, #symbol, &api.field, sizeof api.field);
    HTTPC_CURL_FUNCTIONS(HTTPC_CURL_RESOLVE)
#undef HTTPC_CURL_RESOLVE
    if (ok)
        httpc_curl = api; /* never closed: libcurl keeps global state (OpenSSL's, its own) */
    else
        dlclose(lib);
}

int httpc_curl_load(char *why, size_t size)
{
    pthread_once(&load_once, load);
    if (!load_error[0])
        return 0;
    snprintf(why, size, "%s", load_error);
    return -1;
}
