#include "parse_run.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

static void copy_msg(cmsg_t *c, const ami_msg_t *m)
{
    memset(c, 0, sizeof *c);
    c->kind = m->kind;
    c->legacy = m->legacy_command;
    c->actionid_idx = m->actionid_idx;
    c->wire_len = m->wire_len;
    c->nhdrs = m->nhdrs;
    c->bad_lines = m->bad_lines;
    assert_true(m->nhdrs <= MAX_HDRS);
    for (size_t i = 0; i < m->nhdrs; i++) {
        size_t kl, vl;
        const char *k = ami_msg_key(m, i, &kl);
        const char *v = ami_msg_value(m, i, &vl);
        assert_true(kl < sizeof c->key[i] && vl < sizeof c->val[i]);
        /* keys and values are NUL-terminated in place (checked by assert_hdr) */
        c->terminated[i] = k[kl] == '\0' && v[vl] == '\0';
        memcpy(c->key[i], k, kl);
        memcpy(c->val[i], v, vl);
        c->vlen[i] = vl;
    }
}

/* Feed `in` in chunks of `chunk` bytes (0: all at once), draining after each
 * feed, until the end or the first error. */
void run_parser(result_t *r, ami_parser_t *p, const char *in, size_t len, size_t chunk)
{
    memset(r, 0, sizeof *r);
    size_t off = 0;
    do {
        size_t n = chunk == 0 || chunk > len - off ? len - off : chunk;
        if (ami_parser_feed(p, in + off, n, &r->err) != 0) {
            r->rc = -1;
            break;
        }
        off += n;
        ami_msg_t m;
        while ((r->rc = ami_parser_next(p, &m, &r->err)) == 1) {
            assert_true(r->n < MAX_MSGS);
            copy_msg(&r->m[r->n++], &m);
        }
    } while (r->rc == 0 && off < len);
    r->buffered = ami_parser_buffered(p);
    r->errors = ami_parser_stats(p)->errors;
    r->bad_lines = ami_parser_stats(p)->bad_lines;
    r->last_bad = *ami_parser_last_bad(p);
}

void parse_with(result_t *r, const ami_parser_limits_t *lim, bool banner, const char *in, size_t len,
                  size_t chunk)
{
    ami_parser_t p;
    assert_int_equal(ami_parser_init(&p, lim), 0);
    ami_parser_expect_banner(&p, banner);
    run_parser(r, &p, in, len, chunk);
    ami_parser_deinit(&p);
}

static void assert_same_messages(const result_t *a, const result_t *b)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const cmsg_t *x = &a->m[i], *y = &b->m[i];
        assert_int_equal(x->kind, y->kind);
        assert_int_equal(x->legacy, y->legacy);
        assert_int_equal(x->actionid_idx, y->actionid_idx);
        assert_int_equal(x->wire_len, y->wire_len);
        assert_int_equal(x->nhdrs, y->nhdrs);
        assert_int_equal(x->bad_lines, y->bad_lines);
        for (size_t j = 0; j < x->nhdrs; j++) {
            assert_string_equal(x->key[j], y->key[j]);
            assert_string_equal(x->val[j], y->val[j]);
            assert_int_equal(x->vlen[j], y->vlen[j]);
        }
    }
}

/* Parse in one feed and byte by byte; both must agree. Result of the first. */
void parse_both(result_t *r, const ami_parser_limits_t *lim, bool banner, const char *in, size_t len)
{
    static result_t bytewise;
    parse_with(r, lim, banner, in, len, 0);
    parse_with(&bytewise, lim, banner, in, len, 1);
    assert_same_messages(r, &bytewise);
    assert_int_equal(r->rc, bytewise.rc);
    assert_int_equal(r->bad_lines, bytewise.bad_lines);
    if (r->rc < 0)
        assert_int_equal(r->err.code, bytewise.err.code);
    else
        assert_int_equal(r->buffered, bytewise.buffered);
}


void assert_error(const result_t *r, ami_status_t code, const char *needle)
{
    assert_int_equal(r->rc, -1);
    assert_int_equal(r->err.code, code);
    if (!strstr(r->err.msg, needle))
        fail_msg("error message \"%s\" does not mention \"%s\"", r->err.msg, needle);
    assert_int_equal(r->errors, 1);
}

/* Header i is key: val, by length, and NUL-terminated in the parser's buffer. */
void assert_hdr_content(const cmsg_t *m, size_t i, const char *key, const char *val)
{
    assert_true(i < m->nhdrs);
    assert_string_equal(m->key[i], key);
    assert_string_equal(m->val[i], val);
    assert_int_equal(m->vlen[i], strlen(val));
}

void assert_hdr(const cmsg_t *m, size_t i, const char *key, const char *val)
{
    assert_hdr_content(m, i, key, val);
    if (!m->terminated[i])
        fail_msg("header %zu (%s: \"%s\") is not NUL-terminated in place", i, key, val);
}

void assert_banner(const cmsg_t *m, const char *text)
{
    assert_int_equal(m->kind, AMI_MSG_BANNER);
    assert_int_equal(m->nhdrs, 1);
    assert_hdr(m, 0, "Banner", text);
}

ami_parser_limits_t small_limits(size_t max_line, size_t max_headers, size_t max_message)
{
    ami_parser_limits_t lim = {max_line, max_headers, max_message};
    return lim;
}

