/*
 * libFuzzer target for the live call state's table (engine/callstate): what
 * a hostile or broken AMI peer can make of it.
 *
 * Input layout: 1 configuration byte, then an AMI stream (no banner).
 *   byte 0: max_channels 1..16 (bits 0-3), variable_max_bytes 1..8 (bits 4-6)
 * The stream's messages drive the table as the engine would: a response
 * with "EventList: start" begins a rebuild (and its list), CoreShowChannel
 * events are its items, CoreShowChannelsComplete ends it (complete unless
 * it has a "Truncated" header), "Response: Error" aborts it; every other
 * event is applied. After each message the table's invariants are checked:
 * the list and both indexes agree, the bound holds, every record is well
 * formed (offsets inside it, strings NUL-terminated, within their bounds),
 * and the calls grouping is a partition of the channels. LeakSanitizer
 * checks that deinit frees everything.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "callstate/callstate_internal.h"
#include "protocol/parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_callstate: invariant failed: %s: ", #cond);  \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

static void check_record(const ami_chan_t *r, uint32_t var_max, size_t max_size)
{
    CHECK(ami_chan_size(r) <= max_size, "record of %zu bytes, bound %zu", ami_chan_size(r), max_size);
    for (int f = 0; f < AMI_CHAN_STR_COUNT; f++) {
        size_t len;
        const char *s = ami_chan_str(r, (ami_chan_field_t)f, &len);
        CHECK(len <= AMI_CHAN_FIELD_MAX, "field %d of %zu bytes", f, len);
        CHECK(s + len < (const char *)r + ami_chan_size(r), "field %d outside its record", f);
        CHECK(s[len] == '\0', "field %d not terminated", f);
    }
    for (size_t i = 0; i < ami_chan_var_count(r); i++) {
        size_t len;
        const char *v = ami_chan_var(r, i, &len);
        if (!v)
            continue;
        CHECK(len <= var_max, "variable %zu of %zu bytes", i, len);
        CHECK(v + len < (const char *)r + ami_chan_size(r) && v[len] == '\0', "variable %zu malformed", i);
    }
}

static void check_table(const cs_table_t *t, cs_calls_ws_t *ws, uint32_t var_max, size_t max_size)
{
    uint32_t n = 0;
    for (const cs_slot_t *s = t->head; s; s = s->next, n++) {
        CHECK(!s->next || s->next->prev == s, "list links broken at %u", n);
        size_t len;
        const char *uid = ami_chan_str(s->rec, AMI_CHAN_UNIQUEID, &len);
        CHECK(len > 0, "a channel without Uniqueid");
        CHECK(cs_table_find(t, uid, len) == s->rec, "channel %u not found by its Uniqueid", n);
        const char *name = ami_chan_str(s->rec, AMI_CHAN_CHANNEL, &len);
        const ami_chan_t *by_name = cs_table_find(t, name, len);
        CHECK(by_name != NULL, "channel %u not found by its name", n);
        check_record(s->rec, var_max, max_size);
    }
    CHECK(n == t->count, "list holds %u, count says %u", n, t->count);
    CHECK(t->count <= t->max_channels, "%u channels over the bound %u", t->count, t->max_channels);
    CHECK(t->ntombs <= t->max_channels, "%u tombstones", t->ntombs);
    const ami_calls_view_t *v = cs_calls_group(ws, t);
    CHECK(v && v->nchans == t->count, "grouping lost channels");
    CHECK(v->ncalls <= v->nchans, "more calls than channels");
    for (size_t i = 0; i < v->nchans; i++)
        CHECK(v->call_of[i] < v->ncalls, "channel %zu in call %u of %zu", i, v->call_of[i], v->ncalls);
}

static bool named(const ami_msg_t *m, const char *name)
{
    const char *n = ami_msg_name(m);
    return ami_str_ieq(n, strlen(n), name, strlen(name));
}

static void drive(cs_table_t *t, const ami_msg_t *m, double now)
{
    const char *eventlist = ami_msg_get(m, "EventList");
    if (m->kind == AMI_MSG_RESPONSE && eventlist && ami_str_ieq(eventlist, strlen(eventlist), "start", 5)) {
        cs_table_rebuild_begin(t);
        cs_table_rebuild_listing(t);
    } else if (m->kind == AMI_MSG_RESPONSE && named(m, "Error")) {
        cs_table_rebuild_abort(t);
    } else if (m->kind == AMI_MSG_EVENT && named(m, "CoreShowChannel")) {
        cs_table_rebuild_item(t, m, now);
    } else if (m->kind == AMI_MSG_EVENT && named(m, "CoreShowChannelsComplete")) {
        cs_table_rebuild_end(t, ami_msg_get(m, "Truncated") == NULL);
    } else if (m->kind == AMI_MSG_EVENT) {
        cs_table_apply(t, m, now);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const char *const VARS[] = {"CALLTAG", "FOO", "CRM_ID"};
    static const size_t VLEN[] = {7, 3, 6};
    uint32_t var_max = 1 + ((data[0] >> 4) & 7);
    chan_read_conf_t conf = {.nvars = 3, .var_names = VARS, .var_name_len = VLEN, .var_max = var_max};
    size_t max_size = chan_max_size(conf.nvars, var_max);
    uint64_t serials = 0;
    void *scratch = malloc(max_size);
    cs_table_t t;
    if (!scratch || cs_table_init(&t, &conf, 1 + (data[0] & 15), &serials, scratch) < 0) {
        free(scratch);
        return 0;
    }
    cs_calls_ws_t ws = {0};
    ami_parser_t p;
    ami_parser_init(&p, NULL);
    ami_parser_expect_banner(&p, false);
    ami_err_t err;
    double now = 1700000000.0;
    if (ami_parser_feed(&p, data + 1, size - 1, &err) == 0) {
        ami_msg_t m;
        int rc;
        while ((rc = ami_parser_next(&p, &m, &err)) != 0) {
            if (rc < 0) {
                ami_parser_reset(&p);
                break;
            }
            drive(&t, &m, now);
            now += 0.25;
            check_table(&t, &ws, var_max, max_size);
        }
    }
    ami_parser_deinit(&p);
    cs_calls_ws_free(&ws);
    cs_table_deinit(&t);
    free(scratch);
    return 0;
}
