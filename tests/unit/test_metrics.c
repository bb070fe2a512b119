/* The metrics registry: exact text format 0.0.4, idempotent registration,
 * refusals (invalid, conflicting, over the bound), collectors, read-back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "obs/metrics.h"

#define REFUSED(n)                                                                                  \
    "# HELP ami_metrics_series_refused_total Metric registrations refused: invalid, conflicting or " \
    "past the series limit.\n"                                                                      \
    "# TYPE ami_metrics_series_refused_total counter\n"                                            \
    "ami_metrics_series_refused_total " #n "\n"

#define L(...) ((const char *const[]){__VA_ARGS__, NULL})

static void assert_render(ami_metrics_t *m, const char *expect)
{
    ami_buf_t out;
    ami_buf_init(&out, 0);
    assert_int_equal(ami_metrics_render(m, &out), 0);
    assert_int_equal(ami_buf_append(&out, "", 1), 0);
    assert_string_equal(out.data, expect);
    ami_buf_deinit(&out);
}

static void new_registry_renders_only_its_refused_counter(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    assert_int_equal(ami_metrics_series_count(m), 1);
    assert_render(m, REFUSED(0));
    ami_metrics_free(m);
}

static void counters_render_with_help_type_and_labels(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    ami_counter_t *a = ami_metrics_counter(m, "ami_actions_total", "Actions sent.", L("server_key", "pbx1"), NULL);
    ami_counter_t *b = ami_metrics_counter(m, "ami_actions_total", NULL, L("server_key", "pbx2"), NULL);
    ami_counter_t *r = ami_metrics_counter(m, "ami_reloads_total", "Script reloads.", NULL, NULL);
    ami_counter_add(a, 41);
    ami_counter_inc(a);
    ami_counter_add(b, -5); /* counters only go up */
    ami_counter_add(b, 2.5);
    (void)r;
    assert_render(m, REFUSED(0) "# HELP ami_actions_total Actions sent.\n"
                                "# TYPE ami_actions_total counter\n"
                                "ami_actions_total{server_key=\"pbx1\"} 42\n"
                                "ami_actions_total{server_key=\"pbx2\"} 2.5\n"
                                "# HELP ami_reloads_total Script reloads.\n"
                                "# TYPE ami_reloads_total counter\n"
                                "ami_reloads_total 0\n");
    ami_metrics_free(m);
}

static void gauges_render_integers_fractions_and_non_finite_values(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(20);
    const char *names[] = {"int", "neg", "tenth", "third", "tiny", "two53", "huge", "nan", "inf", "ninf"};
    double values[] = {3, -2, 0.1, 1.0 / 3, 1.5e-7, 9007199254740992.0, 1e300, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        ami_gauge_set(ami_metrics_gauge(m, "ami_g", "A gauge.", L("case", names[i]), NULL), values[i]);
    ami_gauge_add(ami_metrics_gauge(m, "ami_g", NULL, L("case", "int"), NULL), 1);
    assert_render(m, REFUSED(0) "# HELP ami_g A gauge.\n"
                                "# TYPE ami_g gauge\n"
                                "ami_g{case=\"int\"} 4\n"
                                "ami_g{case=\"neg\"} -2\n"
                                "ami_g{case=\"tenth\"} 0.1\n"
                                "ami_g{case=\"third\"} 0.33333333333333331\n"
                                "ami_g{case=\"tiny\"} 1.5e-07\n"
                                "ami_g{case=\"two53\"} 9007199254740992\n"
                                "ami_g{case=\"huge\"} 1e+300\n"
                                "ami_g{case=\"nan\"} NaN\n"
                                "ami_g{case=\"inf\"} +Inf\n"
                                "ami_g{case=\"ninf\"} -Inf\n");
    ami_metrics_free(m);
}

static void histogram_renders_cumulative_buckets_sum_and_count(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    const double bounds[] = {0.005, 1, 2.5};
    ami_histogram_t *h = ami_metrics_histogram(m, "ami_action_seconds", "Action latency.", bounds, 3,
                                               L("server_key", "pbx1"), NULL);
    const double obs[] = {0.00390625, 0.5, 0.75, 2, 4, 1 /* le is inclusive */, NAN /* ignored */};
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        ami_histogram_observe(h, obs[i]);
    assert_true(ami_histogram_count(h) == 6);
    assert_true(ami_histogram_sum(h) == 8.25390625);
    assert_render(m, REFUSED(0) "# HELP ami_action_seconds Action latency.\n"
                                "# TYPE ami_action_seconds histogram\n"
                                "ami_action_seconds_bucket{server_key=\"pbx1\",le=\"0.005\"} 1\n"
                                "ami_action_seconds_bucket{server_key=\"pbx1\",le=\"1\"} 4\n"
                                "ami_action_seconds_bucket{server_key=\"pbx1\",le=\"2.5\"} 5\n"
                                "ami_action_seconds_bucket{server_key=\"pbx1\",le=\"+Inf\"} 6\n"
                                "ami_action_seconds_sum{server_key=\"pbx1\"} 8.25390625\n"
                                "ami_action_seconds_count{server_key=\"pbx1\"} 6\n");
    ami_metrics_free(m);
}

static void histogram_without_bounds_uses_default_latency_buckets(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    ami_histogram_t *h = ami_metrics_histogram(m, "ami_tick_seconds", "", NULL, 0, NULL, NULL);
    ami_histogram_observe(h, 0.0005);
    ami_histogram_observe(h, 11);
    assert_render(m, REFUSED(0) "# TYPE ami_tick_seconds histogram\n"
                                "ami_tick_seconds_bucket{le=\"0.0005\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"0.001\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"0.0025\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"0.005\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"0.01\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"0.025\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"0.05\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"0.1\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"0.25\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"0.5\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"1\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"2.5\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"5\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"10\"} 1\n"
                                "ami_tick_seconds_bucket{le=\"+Inf\"} 2\n"
                                "ami_tick_seconds_sum 11.0005\n"
                                "ami_tick_seconds_count 2\n");
    ami_metrics_free(m);
}

static void registration_is_idempotent(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    ami_counter_t *c = ami_metrics_counter(m, "c_total", "C.", L("k", "v"), NULL);
    ami_gauge_t *g = ami_metrics_gauge(m, "g", "G.", NULL, NULL);
    ami_histogram_t *h = ami_metrics_histogram(m, "h_seconds", "H.", NULL, 0, L("k", "v"), NULL);
    size_t n = ami_metrics_series_count(m);
    assert_int_equal(n, 4);
    char value[] = {'v', '\0'}; /* equal content, other storage */
    assert_ptr_equal(ami_metrics_counter(m, "c_total", "other help", L("k", value), NULL), c);
    assert_ptr_equal(ami_metrics_gauge(m, "g", NULL, NULL, NULL), g);
    assert_ptr_equal(ami_metrics_histogram(m, "h_seconds", NULL, NULL, 0, L("k", "v"), NULL), h);
    assert_ptr_not_equal(ami_metrics_counter(m, "c_total", NULL, L("k", "w"), NULL), c);
    assert_int_equal(ami_metrics_series_count(m), n + 1);
    assert_int_equal(ami_metrics_refused(m), 0);
    ami_metrics_free(m);
}

static void label_values_and_help_are_escaped(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    ami_gauge_set(ami_metrics_gauge(m, "ami_g", "Line one\nback\\slash \"quoted\".",
                                    L("a", "x\"y\\z\nw", "b", ""), NULL),
                  1);
    assert_render(m, REFUSED(0) "# HELP ami_g Line one\\nback\\\\slash \"quoted\".\n"
                                "# TYPE ami_g gauge\n"
                                "ami_g{a=\"x\\\"y\\\\z\\nw\",b=\"\"} 1\n");
    ami_metrics_free(m);
}

static void type_conflict_is_refused_with_a_discard_series(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    ami_counter_t *c = ami_metrics_counter(m, "ami_x_total", "X.", NULL, NULL);
    ami_err_t err = {0};
    ami_gauge_t *g = ami_metrics_gauge(m, "ami_x_total", "X.", NULL, &err);
    assert_non_null(g);
    assert_ptr_not_equal((void *)g, (void *)c);
    assert_int_equal(err.code, AMI_E_INVALID);
    assert_non_null(strstr(err.msg, "ami_x_total"));
    assert_non_null(strstr(err.msg, "counter"));
    ami_gauge_set(g, 99); /* harmless, never rendered */
    ami_histogram_observe(ami_metrics_histogram(m, "ami_x_total", NULL, NULL, 0, NULL, NULL), 1);
    assert_int_equal(ami_metrics_refused(m), 2);
    assert_int_equal(ami_metrics_series_count(m), 2);
    assert_render(m, REFUSED(2) "# HELP ami_x_total X.\n"
                                "# TYPE ami_x_total counter\n"
                                "ami_x_total 0\n");
    ami_metrics_free(m);
}

static void label_name_conflict_is_refused(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    ami_counter_t *c = ami_metrics_counter(m, "ami_y_total", NULL, L("a", "1", "b", "2"), NULL);
    ami_err_t err = {0};
    assert_ptr_not_equal(ami_metrics_counter(m, "ami_y_total", NULL, L("a", "1"), &err), c);
    assert_non_null(strstr(err.msg, "ami_y_total"));
    assert_non_null(strstr(err.msg, "(a,b)"));
    ami_metrics_counter(m, "ami_y_total", NULL, L("b", "2", "a", "1"), NULL);
    ami_metrics_counter(m, "ami_y_total", NULL, L("a", "1", "c", "2"), NULL);
    ami_metrics_counter(m, "ami_y_total", NULL, NULL, NULL);
    assert_int_equal(ami_metrics_refused(m), 4);
    assert_int_equal(ami_metrics_series_count(m), 2);
    ami_metrics_free(m);
}

static void histogram_bounds_conflict_is_refused(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    const double b1[] = {1, 2}, b2[] = {1, 3};
    ami_histogram_t *h = ami_metrics_histogram(m, "ami_h", NULL, b1, 2, L("k", "v"), NULL);
    ami_err_t err = {0};
    assert_ptr_not_equal(ami_metrics_histogram(m, "ami_h", NULL, b2, 2, L("k", "v"), &err), h);
    assert_non_null(strstr(err.msg, "ami_h"));
    assert_ptr_not_equal(ami_metrics_histogram(m, "ami_h", NULL, b2, 2, L("k", "w"), NULL), h);
    assert_ptr_not_equal(ami_metrics_histogram(m, "ami_h", NULL, NULL, 0, L("k", "v"), NULL), h);
    assert_ptr_equal(ami_metrics_histogram(m, "ami_h", NULL, b1, 2, L("k", "v"), NULL), h);
    assert_int_equal(ami_metrics_refused(m), 3);
    ami_metrics_free(m);
}

static void invalid_names_and_labels_are_refused(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(50);
    ami_err_t err = {0};
    ami_metrics_counter(m, "1abc", NULL, NULL, &err);
    assert_int_equal(err.code, AMI_E_INVALID);
    assert_non_null(strstr(err.msg, "1abc"));
    ami_metrics_counter(m, "a-b", NULL, NULL, NULL);
    ami_metrics_counter(m, "", NULL, NULL, NULL);
    ami_metrics_counter(m, NULL, NULL, NULL, NULL);
    ami_metrics_counter(m, "ok_total", NULL, L("__reserved", "x"), NULL);
    ami_metrics_counter(m, "ok_total", NULL, L("1a", "x"), NULL);
    ami_metrics_counter(m, "ok_total", NULL, L("a:b", "x"), NULL);
    ami_metrics_counter(m, "ok_total", NULL, L("a", "x", "a", "y"), NULL);
    ami_metrics_counter(m, "ok_total", NULL, L("a", NULL), NULL);
    ami_metrics_counter(m, "ok_total", NULL,
                        L("a", "1", "b", "2", "c", "3", "d", "4", "e", "5", "f", "6", "g", "7"), NULL);
    ami_metrics_histogram(m, "ok_seconds", NULL, NULL, 0, L("le", "1"), NULL);
    assert_int_equal(ami_metrics_refused(m), 11);
    assert_int_equal(ami_metrics_series_count(m), 1);

    /* Valid edge cases: colons in metric names, le outside histograms, six labels. */
    ami_metrics_counter(m, ":a:b_c1", NULL, NULL, NULL);
    ami_metrics_counter(m, "_x", NULL, L("le", "1", "_y", "2"), NULL);
    ami_metrics_counter(m, "six_total", NULL, L("a", "1", "b", "2", "c", "3", "d", "4", "e", "5", "f", "6"), NULL);
    assert_int_equal(ami_metrics_refused(m), 11);
    assert_int_equal(ami_metrics_series_count(m), 4);
    ami_metrics_free(m);
}

static void invalid_histogram_bounds_are_refused(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(50);
    const double decreasing[] = {2, 1}, equal[] = {1, 1}, nan[] = {1, NAN}, inf[] = {1, INFINITY};
    double many[AMI_METRICS_MAX_BUCKETS + 1];
    for (size_t i = 0; i < sizeof many / sizeof many[0]; i++)
        many[i] = (double)i;
    ami_err_t err = {0};
    ami_metrics_histogram(m, "h1", NULL, decreasing, 2, NULL, &err);
    assert_non_null(strstr(err.msg, "h1"));
    ami_metrics_histogram(m, "h2", NULL, equal, 2, NULL, NULL);
    ami_metrics_histogram(m, "h3", NULL, nan, 2, NULL, NULL);
    ami_metrics_histogram(m, "h4", NULL, inf, 2, NULL, NULL);
    ami_metrics_histogram(m, "h5", NULL, many, AMI_METRICS_MAX_BUCKETS + 1, NULL, NULL);
    assert_int_equal(ami_metrics_refused(m), 5);
    ami_metrics_histogram(m, "h6", NULL, many, AMI_METRICS_MAX_BUCKETS, NULL, NULL);
    assert_int_equal(ami_metrics_refused(m), 5);
    assert_int_equal(ami_metrics_series_count(m), 2);
    ami_metrics_free(m);
}

static void series_past_the_bound_are_refused_and_counted(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(3); /* the refused counter is one of the 3 */
    ami_counter_t *a = ami_metrics_counter(m, "ami_c_total", NULL, L("n", "a"), NULL);
    ami_counter_t *b = ami_metrics_counter(m, "ami_c_total", NULL, L("n", "b"), NULL);
    ami_err_t err = {0};
    ami_counter_t *c = ami_metrics_counter(m, "ami_c_total", NULL, L("n", "c"), &err);
    assert_int_equal(err.code, AMI_E_LIMIT);
    assert_non_null(strstr(err.msg, "ami_c_total"));
    ami_metrics_gauge(m, "ami_other", NULL, NULL, NULL);
    assert_ptr_equal(ami_metrics_counter(m, "ami_c_total", NULL, L("n", "a"), NULL), a);
    ami_counter_inc(a);
    ami_counter_inc(b);
    ami_counter_inc(c);
    assert_int_equal(ami_metrics_series_count(m), 3);
    assert_int_equal(ami_metrics_refused(m), 2);
    assert_render(m, REFUSED(2) "# TYPE ami_c_total counter\n"
                                "ami_c_total{n=\"a\"} 1\n"
                                "ami_c_total{n=\"b\"} 1\n");
    ami_metrics_free(m);
}

typedef struct calls {
    int order[8];
    int n;
    ami_metrics_t *m;
} calls_t;

static void collector_one(void *ud, ami_metrics_t *m)
{
    calls_t *c = ud;
    c->order[c->n++] = 1;
    ami_gauge_set(ami_metrics_gauge(m, "ami_log_dropped", "Dropped log lines.", NULL, NULL), 7);
}

static void collector_two(void *ud, ami_metrics_t *m)
{
    calls_t *c = ud;
    c->order[c->n++] = 2;
}

static void collector_removing_itself(void *ud, ami_metrics_t *m)
{
    calls_t *c = ud;
    c->order[c->n++] = 3;
    ami_metrics_remove_collector(m, collector_removing_itself, ud);
}

static void collectors_run_in_order_before_render(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    calls_t calls = {0};
    assert_int_equal(ami_metrics_add_collector(m, collector_one, &calls), 0);
    assert_int_equal(ami_metrics_add_collector(m, collector_two, &calls), 0);
    assert_render(m, REFUSED(0) "# HELP ami_log_dropped Dropped log lines.\n"
                                "# TYPE ami_log_dropped gauge\n"
                                "ami_log_dropped 7\n");
    assert_int_equal(calls.n, 2);
    assert_int_equal(calls.order[0], 1);
    assert_int_equal(calls.order[1], 2);
    ami_metrics_free(m);
}

static void removed_collector_is_no_longer_called(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    calls_t calls = {0}, other = {0};
    ami_metrics_add_collector(m, collector_two, &other);
    ami_metrics_add_collector(m, collector_removing_itself, &calls);
    ami_metrics_add_collector(m, collector_two, &calls);
    ami_metrics_remove_collector(m, collector_two, &other); /* same fn, other ud: only this pair */
    assert_render(m, REFUSED(0));
    assert_int_equal(other.n, 0);
    assert_int_equal(calls.n, 2); /* removing itself mid-run skips nobody */
    assert_int_equal(calls.order[0], 3);
    assert_int_equal(calls.order[1], 2);
    assert_render(m, REFUSED(0));
    assert_int_equal(calls.n, 3);
    assert_int_equal(calls.order[2], 2);
    ami_metrics_free(m);
}

static void collectors_are_bounded(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    calls_t calls = {0};
    for (int i = 0; i < 32; i++)
        assert_int_equal(ami_metrics_add_collector(m, collector_two, &calls), 0);
    assert_int_equal(ami_metrics_add_collector(m, collector_two, &calls), -1);
    ami_metrics_free(m);
}

static void value_reads_existing_series_without_creating_any(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    ami_counter_add(ami_metrics_counter(m, "ami_c_total", NULL, L("k", "v"), NULL), 5);
    ami_gauge_set(ami_metrics_gauge(m, "ami_g", NULL, NULL, NULL), -1.5);
    ami_histogram_t *h = ami_metrics_histogram(m, "ami_h", NULL, NULL, 0, NULL, NULL);
    ami_histogram_observe(h, 0.1);
    ami_histogram_observe(h, 0.2);
    double v = 0;
    assert_int_equal(ami_metrics_value(m, "ami_c_total", L("k", "v"), &v), 0);
    assert_true(v == 5);
    assert_int_equal(ami_metrics_value(m, "ami_g", NULL, &v), 0);
    assert_true(v == -1.5);
    assert_int_equal(ami_metrics_value(m, "ami_h", NULL, &v), 0);
    assert_true(v == 2);
    size_t n = ami_metrics_series_count(m);
    assert_int_equal(ami_metrics_value(m, "ami_c_total", L("k", "w"), &v), -1);
    assert_int_equal(ami_metrics_value(m, "ami_c_total", NULL, &v), -1);
    assert_int_equal(ami_metrics_value(m, "absent", NULL, &v), -1);
    assert_int_equal(ami_metrics_series_count(m), n);
    ami_metrics_free(m);
}

static void render_fails_when_the_buffer_limit_is_reached(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(10);
    ami_buf_t out;
    ami_buf_init(&out, 64);
    assert_int_equal(ami_metrics_render(m, &out), -1);
    ami_buf_deinit(&out);
    ami_metrics_free(m);
}

static void many_series_stay_reachable_through_table_growth(void **state)
{
    (void)state;
    ami_metrics_t *m = ami_metrics_new(5000);
    ami_counter_t *c[2000];
    char id[16];
    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof id, "%d", i);
        c[i] = ami_metrics_counter(m, "ami_calls_total", NULL, L("id", id), NULL);
        ami_counter_add(c[i], i);
    }
    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof id, "%d", i);
        assert_ptr_equal(ami_metrics_counter(m, "ami_calls_total", NULL, L("id", id), NULL), c[i]);
    }
    assert_int_equal(ami_metrics_series_count(m), 2001);
    assert_int_equal(ami_metrics_refused(m), 0);
    ami_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_registry_renders_only_its_refused_counter),
        cmocka_unit_test(counters_render_with_help_type_and_labels),
        cmocka_unit_test(gauges_render_integers_fractions_and_non_finite_values),
        cmocka_unit_test(histogram_renders_cumulative_buckets_sum_and_count),
        cmocka_unit_test(histogram_without_bounds_uses_default_latency_buckets),
        cmocka_unit_test(registration_is_idempotent),
        cmocka_unit_test(label_values_and_help_are_escaped),
        cmocka_unit_test(type_conflict_is_refused_with_a_discard_series),
        cmocka_unit_test(label_name_conflict_is_refused),
        cmocka_unit_test(histogram_bounds_conflict_is_refused),
        cmocka_unit_test(invalid_names_and_labels_are_refused),
        cmocka_unit_test(invalid_histogram_bounds_are_refused),
        cmocka_unit_test(series_past_the_bound_are_refused_and_counted),
        cmocka_unit_test(collectors_run_in_order_before_render),
        cmocka_unit_test(removed_collector_is_no_longer_called),
        cmocka_unit_test(collectors_are_bounded),
        cmocka_unit_test(value_reads_existing_series_without_creating_any),
        cmocka_unit_test(render_fails_when_the_buffer_limit_is_reached),
        cmocka_unit_test(many_series_stay_reachable_through_table_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
