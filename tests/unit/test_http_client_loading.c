/* libcurl is loaded when the first HTTP client is made, not at start
 * (engine/httpc/curl_dl.h): before, the process has not mapped it; after,
 * it has; a libcurl that cannot be loaded, or a library that is not
 * libcurl, is an error that says what to do. Loading happens once per
 * process, so each case runs in a child of its own. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ev.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "httpc/httpc.h"

static bool libcurl_mapped(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return false;
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, "libcurl") != NULL;
    fclose(f);
    return found;
}

/* A client made in a child with AMI_LIBCURL set to library (NULL: unset).
 * The child exits 0 when the outcome matches: made (want_msg NULL), or
 * refused with a message holding want_msg and want_hint. */
static int child_makes_client(const char *library, const char *want_msg, const char *want_hint)
{
    if (library)
        setenv("AMI_LIBCURL", library, 1);
    else
        unsetenv("AMI_LIBCURL");
    if (libcurl_mapped())
        return 10; /* linked or loaded at start: the point is lost */
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ami_httpc_err_t err = {0};
    ami_httpc_t *h = ami_httpc_new(loop, NULL, NULL, NULL, &err);
    int rc = 0;
    if (!want_msg) {
        if (!h)
            fprintf(stderr, "child: %s\n", err.msg);
        rc = !h ? 11 : !libcurl_mapped() ? 12 : 0;
    } else {
        if (h || !strstr(err.msg, want_msg) || !strstr(err.msg, want_hint)) {
            fprintf(stderr, "child: got \"%s\"\n", err.msg);
            rc = 13;
        }
    }
    if (h)
        ami_httpc_free(h);
    ev_loop_destroy(loop);
    return rc;
}

static int in_child(const char *library, const char *want_msg, const char *want_hint)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child_makes_client(library, want_msg, want_hint));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void libcurl_is_mapped_only_once_a_client_is_made(void **state)
{
    (void)state;
    assert_int_equal(in_child(NULL, NULL, NULL), 0);
}

static void a_libcurl_that_cannot_be_loaded_is_a_clear_error(void **state)
{
    (void)state;
    assert_int_equal(in_child("/nonexistent/libcurl.so.4", "cannot load libcurl", "apt install libcurl4"), 0);
}

static void a_library_that_is_not_libcurl_is_refused(void **state)
{
    (void)state;
    assert_int_equal(in_child("libm.so.6", "lacks curl_global_init", "libcurl 7.85 or newer"), 0);
}

/* A FIFO would block dlopen's open(): refused before it is opened. */
static void a_fifo_named_as_libcurl_is_refused_without_blocking(void **state)
{
    (void)state;
    char path[] = "/tmp/ami-curl-fifo-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    unlink(path);
    assert_int_equal(mkfifo(path, 0600), 0);
    alarm(10); /* a blocking open would hang the child, and waitpid with it */
    int rc = in_child(path, "not a regular file", "unset it");
    alarm(0);
    unlink(path);
    assert_int_equal(rc, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(libcurl_is_mapped_only_once_a_client_is_made),
        cmocka_unit_test(a_libcurl_that_cannot_be_loaded_is_a_clear_error),
        cmocka_unit_test(a_library_that_is_not_libcurl_is_refused),
        cmocka_unit_test(a_fifo_named_as_libcurl_is_refused_without_blocking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
