#include "table_world.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"

table_world_t *table_world_new(uint32_t max_channels, uint32_t var_max, bool track_vars)
{
    table_world_t *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->live_before = ami_alloc_live_bytes();
    w->conf = (chan_read_conf_t){.var_max = var_max};
    if (track_vars) {
        w->names[0] = "CRM_ID";
        w->names[1] = "CALLTAG";
        for (int i = 0; i < 2; i++)
            w->name_len[i] = strlen(w->names[i]);
        w->conf.nvars = 2;
        w->conf.var_names = w->names;
        w->conf.var_name_len = w->name_len;
    }
    w->scratch = ami_malloc(chan_max_size(w->conf.nvars, w->conf.var_max));
    assert_int_equal(cs_table_init(&w->t, &w->conf, max_channels, &w->serials, w->scratch), 0);
    assert_int_equal(ami_parser_init(&w->p, NULL), 0);
    ami_parser_expect_banner(&w->p, false);
    return w;
}

void table_world_free(table_world_t *w)
{
    cs_table_deinit(&w->t);
    ami_parser_deinit(&w->p);
    ami_free(w->scratch);
    assert_int_equal(ami_alloc_live_bytes(), w->live_before);
    free(w);
}

const ami_msg_t *table_world_msg(table_world_t *w, const char *lines)
{
    static ami_msg_t m;
    size_t o = 0;
    for (const char *p = lines; *p && o + 3 < sizeof w->text; p++) {
        if (*p == '\n')
            w->text[o++] = '\r';
        w->text[o++] = *p;
    }
    w->text[o++] = '\r';
    w->text[o++] = '\n';
    ami_err_t err;
    assert_int_equal(ami_parser_feed(&w->p, w->text, o, &err), 0);
    assert_int_equal(ami_parser_next(&w->p, &m, &err), 1);
    return &m;
}
