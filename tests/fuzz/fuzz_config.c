/*
 * libFuzzer target for the config loader (engine/cli/config*.c): any bytes
 * as the text of a config file, loaded from memory exactly as from a file
 * (ami_config_load_text).
 *
 * Invariants, on every input:
 *   - a config or errors, never a crash, a sanitizer report or a hang (the
 *     loader's instruction budget and memory cap must hold whatever the
 *     text does: loops, pcall/xpcall around them, metatables, huge strings);
 *   - errors: at least one, each a non-empty message;
 *   - a config: describe works, and its values are within their bounds;
 *   - nothing leaks: after the load (and the free of a loaded config) the
 *     engine's allocation counter is back where it was.
 * The config's name sits in a folder that does not exist, so relative paths
 * (scripts folder, secret files) resolve to nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/config.h"
#include "util/alloc.h"
#include "util/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "fuzz_config: invariant failed: %s: ", #cond);  \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                           \
            abort();                                                        \
        }                                                                   \
    } while (0)

#define NAME "/nonexistent-ami-fuzz/engine.lua"

static void check_config(const ami_engine_config_t *cfg)
{
    CHECK(cfg->nservers >= 1 && cfg->nservers <= AMI_CONFIG_MAX_SERVERS, "%zu servers", cfg->nservers);
    for (size_t i = 0; i < cfg->nservers; i++) {
        const ami_server_options_t *o = &cfg->servers[i];
        CHECK(o->server_key && *o->server_key && o->host && *o->host, "server %zu without key or host", i);
        CHECK(o->port >= 1, "server %zu port 0", i);
        CHECK(o->secret && !strpbrk(o->secret, "\r\n"), "server %zu secret", i);
    }
    const ami_http_config_t *hc = &cfg->metrics_http;
    CHECK(hc->max_connections >= 1 && hc->max_buffered >= hc->max_response, "metrics limits");
    ami_buf_t out;
    ami_buf_init(&out, 0);
    ami_config_describe(cfg, &out);
    CHECK(out.len > 0 && memchr(out.data, '\0', out.len) == NULL, "describe");
    ami_buf_deinit(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t live = ami_alloc_live_bytes();
    ami_engine_config_t cfg;
    ami_config_errors_t errs;
    if (ami_config_load_text(NAME, (const char *)data, size, &cfg, &errs) == 0) {
        check_config(&cfg);
        ami_config_free(&cfg);
    } else {
        CHECK(errs.count >= 1 && errs.count <= AMI_CONFIG_MAX_ERRORS, "%zu errors", errs.count);
        for (size_t i = 0; i < errs.count; i++)
            CHECK(errs.msg[i][0] != '\0' && memchr(errs.msg[i], '\0', sizeof errs.msg[i]), "message %zu", i);
    }
    CHECK(ami_alloc_live_bytes() == live, "%lld bytes still allocated after the load",
          (long long)(ami_alloc_live_bytes() - live));
    return 0;
}
