/*
 * A strict checker for the Prometheus text exposition format 0.0.4, for
 * tests that scrape the engine: it says whether a scraper would take the
 * text, and why not.
 *
 * Checked: every line ends in '\n' (the last one too) and holds no NUL;
 * "# HELP name doc" and "# TYPE name counter|gauge|histogram|summary|untyped"
 * are well formed (doc escapes only \\ and \n), at most one of each per
 * family, TYPE before the family's first sample; other '#' lines are
 * comments. A sample is `name{label="value",...} value [timestamp]`: a
 * valid metric name, valid label names (not "__"-reserved, no duplicates),
 * quoted values escaping only \\ \" \n and valid UTF-8, a float value (or
 * NaN, +Inf, -Inf), an optional integer timestamp. A family's samples are
 * contiguous and no series appears twice. Counters are not negative.
 * Histogram samples are _bucket (with a float le), _sum or _count; a run of
 * buckets has increasing le, non-decreasing counts and ends at le="+Inf";
 * a _count right after its buckets equals the +Inf bucket. Summary samples
 * carry a float quantile.
 *
 * Stricter than the spec on layout, as a renderer should be: single spaces
 * between fields, no blanks inside braces, no leading or trailing blanks,
 * no empty lines, no trailing comma in a label set.
 *
 * Test support only: allocates with malloc, not the engine's allocator.
 */
#ifndef AMI_TEST_PROM_CHECK_H
#define AMI_TEST_PROM_CHECK_H

#include <stddef.h>

/* 0 if text is valid; otherwise -1 and why holds "line N: what is wrong". */
int prom_check(const char *text, size_t len, char *why, size_t why_size);

#endif
