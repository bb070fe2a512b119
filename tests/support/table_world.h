/*
 * One server's call table (engine/callstate/table.c) driven directly, for
 * the unit tests of the table and its records: a table, a parser to turn
 * "Key: value" lines into messages, and a check at the end that every byte
 * the table allocated came back. Owned by the test; table_world_free ends it.
 */
#ifndef AMI_TEST_TABLE_WORLD_H
#define AMI_TEST_TABLE_WORLD_H

#include <stdbool.h>
#include <stdint.h>

#include "callstate/callstate_internal.h"
#include "protocol/parser.h"

typedef struct table_world {
    int64_t live_before;
    const char *names[4];
    size_t name_len[4];
    chan_read_conf_t conf;
    uint64_t serials;
    void *scratch;
    cs_table_t t;
    ami_parser_t p;
    char text[70000];
} table_world_t;

/* track_vars: the channel variables CRM_ID and CALLTAG are tracked, each
 * value kept up to var_max bytes. */
table_world_t *table_world_new(uint32_t max_channels, uint32_t var_max, bool track_vars);
/* Frees; fails the test if the table's allocations did not all come back. */
void table_world_free(table_world_t *w);
/* "Key: value\n..." (one message, LF line ends) parsed; borrowed until the next call. */
const ami_msg_t *table_world_msg(table_world_t *w, const char *lines);

#endif
