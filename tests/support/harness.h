/*
 * Loop helpers for integration tests: run a libev loop until a condition
 * holds or a deadline passes, so every test bounds its own time.
 */
#ifndef AMI_TEST_HARNESS_H
#define AMI_TEST_HARNESS_H

#include <stdbool.h>
#include <stdint.h>

struct ev_loop;

typedef bool (*harness_pred_fn)(void *ud);

/* Run the loop until pred(ud) is true (true) or timeout_ms passes (false). */
bool harness_run_until(struct ev_loop *loop, harness_pred_fn pred, void *ud, uint32_t timeout_ms);

/* Run the loop for ms milliseconds. */
void harness_run_for(struct ev_loop *loop, uint32_t ms);


#endif
