/*
 * The callstate section of the engine config: off when absent, true or a
 * table turns it on, every mistake reported in the operator's words, no
 * memory kept after a failed load. (The config sources are compiled in, as
 * in test_lua_config.c.)
 */
#include "../../engine/cli/config.c"
#include "../../engine/cli/config_callstate.c"
#include "../../engine/cli/config_server.c"
#include "../../engine/cli/config_values.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SERVER "servers = { { key = 'pbx1', host = '10.0.0.5', username = 'e', secret = 'pw' } }\n"

static char path[256];

static void write_config(const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(SERVER, f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static int load(const char *text, ami_engine_config_t *cfg, ami_config_errors_t *errs)
{
    write_config(text);
    int rc = ami_config_load(path, cfg, errs);
    for (size_t i = 0; i < errs->count; i++)
        print_message("  config error: %s\n", errs->msg[i]);
    return rc;
}

static void expect_error(const char *text, const char *fragment)
{
    int64_t live = ami_alloc_live_bytes();
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load(text, &cfg, &errs), -1);
    for (size_t i = 0; i < errs.count; i++)
        if (strstr(errs.msg[i], fragment))
            goto found;
    fail_msg("no error contains: %s", fragment);
found:
    assert_int_equal(ami_alloc_live_bytes(), live);
}

static char *describe(const ami_engine_config_t *cfg)
{
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_config_describe(cfg, &out);
    char *s = strndup(out.data ? out.data : "", out.len);
    ami_buf_deinit(&out);
    return s;
}

static void off_when_absent(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load("", &cfg, &errs), 0);
    assert_false(cfg.callstate_enabled);
    char *d = describe(&cfg);
    assert_non_null(strstr(d, "callstate: off\n"));
    free(d);
    ami_config_free(&cfg);
    assert_int_equal(load("callstate = false\n", &cfg, &errs), 0);
    assert_false(cfg.callstate_enabled);
    ami_config_free(&cfg);
}

static void true_turns_it_on_with_defaults(void **state)
{
    (void)state;
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load("callstate = true\n", &cfg, &errs), 0);
    assert_true(cfg.callstate_enabled);
    assert_int_equal(cfg.callstate.max_channels, 10000);
    assert_int_equal(cfg.callstate.nvariables, 0);
    assert_int_equal(cfg.callstate.variable_max_bytes, 256);
    ami_config_free(&cfg);
}

static void a_table_sets_every_option(void **state)
{
    (void)state;
    int64_t live = ami_alloc_live_bytes();
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    assert_int_equal(load("callstate = { max_channels = 500, variables = {'CRM_ID', 'CALLTAG'},\n"
                          "              variable_max_bytes = 64, rebuild_timeout_ms = 20000 }\n",
                          &cfg, &errs), 0);
    assert_true(cfg.callstate_enabled);
    assert_int_equal(cfg.callstate.max_channels, 500);
    assert_int_equal(cfg.callstate.variable_max_bytes, 64);
    assert_int_equal(cfg.callstate.rebuild_timeout_ms, 20000);
    assert_int_equal(cfg.callstate.nvariables, 2);
    assert_string_equal(cfg.callstate_vars[0], "CRM_ID");
    assert_string_equal(cfg.callstate_vars[1], "CALLTAG");
    char *d = describe(&cfg);
    assert_non_null(strstr(d, "callstate: on, at most 500 channels per server, variables: CRM_ID CALLTAG "
                              "(values up to 64 bytes)\n"));
    free(d);
    ami_config_free(&cfg);
    assert_int_equal(ami_alloc_live_bytes(), live);
}

static void mistakes_are_reported_in_the_operators_words(void **state)
{
    (void)state;
    expect_error("callstate = 5\n",
                 "callstate: expected true, false or a table { max_channels = ..., variables = {...} }, got number 5");
    expect_error("callstate = { max_channel = 5 }\n",
                 "callstate: unknown option \"max_channel\"; did you mean \"max_channels\"?");
    expect_error("callstate = { max_channels = 0 }\n",
                 "callstate.max_channels: expected an integer from 1 to 10000000, got number 0");
    expect_error("callstate = { max_channels = 1.5 }\n", "callstate.max_channels: expected an integer");
    expect_error("callstate = { variable_max_bytes = 1e9 }\n",
                 "callstate.variable_max_bytes: expected an integer from 1 to 4096");
    expect_error("callstate = { variables = 'CRM_ID' }\n",
                 "callstate.variables: expected a table { ... }, got string \"CRM_ID\"");
    expect_error("callstate = { variables = { crm = 'CRM_ID' } }\n",
                 "callstate.variables: expected a list of names");
    expect_error("callstate = { variables = { 'CRM_ID', 7 } }\n",
                 "callstate.variables[2]: expected a string, got number 7");
    expect_error("callstate = { variables = { '__CRM_ID' } }\n",
                 "callstate.variables[1]: \"__CRM_ID\" starts with '_'");
    expect_error("callstate = { variables = { 'A B' } }\n",
                 "callstate.variables[1]: \"A B\" is not a variable name");
    expect_error("callstate = { variables = { 'X', 'X' } }\n", "callstate.variables[2]: \"X\" is listed twice");
    expect_error("callstate = { variables = { 'A','B','C','D','E','F','G','H','I','J','K','L','M','N','O',"
                 "'P','Q','R','S','T','U','V','W','X','Y','Z','AA','AB','AC','AD','AE','AF','AG' } }\n",
                 "callstate.variables: at most 32 names can be tracked, got 33");
    expect_error("callstate = { variables = { string.rep('V', 65) } }\n",
                 "callstate.variables[1]: a name of 1 to 64 characters is needed");
}

static int setup(void **state)
{
    (void)state;
    char dir[] = "/tmp/ami_cs_config_XXXXXX";
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/engine.lua", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    return rmdir(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(off_when_absent),
        cmocka_unit_test(true_turns_it_on_with_defaults),
        cmocka_unit_test(a_table_sets_every_option),
        cmocka_unit_test(mistakes_are_reported_in_the_operators_words),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
