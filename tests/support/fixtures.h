/*
 * Test helpers for the recorded Asterisk sessions in tests/fixtures/asterisk.
 * fixture_load reads NAME.ami / NAME.sent (the exact bytes each side sent);
 * fixture_names lists every recorded scenario. Memory from fixture_load is
 * freed with fixture_free.
 */
#ifndef AMI_TEST_FIXTURES_H
#define AMI_TEST_FIXTURES_H

#include <stddef.h>

typedef struct fixture {
    char *data;
    size_t len;
} fixture_t;

/* name without extension, ext like ".ami"; aborts the test if missing. */
fixture_t fixture_load(const char *name, const char *ext);
void fixture_free(fixture_t *f);

/* NULL-terminated array of scenario names (static storage). */
const char *const *fixture_names(void);

#endif
