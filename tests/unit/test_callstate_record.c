/*
 * The call state's records and the reading of snapshots, below the table's
 * behaviour: values of every length stored whole with zero padding (new
 * records and in-place rewrites), a new channel in a reused slot too small
 * or too large for it, keys off Asterisk's order read as in order, event
 * names in any case, and the hash that indexes Uniqueids and names seeing
 * every byte and spreading identifiers as Asterisk writes them over the
 * buckets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "table_world.h"
#include "util/alloc.h"

#define NOW 1000.0

typedef table_world_t world_t;

static world_t *world_new(void)
{
    return table_world_new(100, 16, false);
}

static void world_free(world_t *w)
{
    table_world_free(w);
}

/* "Key: value\n..." applied as one event. */
static void apply(world_t *w, const char *lines)
{
    cs_table_apply(&w->t, table_world_msg(w, lines), NOW);
}

static const ami_chan_t *find(world_t *w, const char *id)
{
    return cs_table_find(&w->t, id, strlen(id));
}

/* len bytes that differ from position to position (and by seed), so a
 * value copied short, shifted or from the wrong place shows. */
static char *pattern(char *out, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (char)('!' + (i * 7 + seed) % 90);
    out[len] = '\0';
    return out;
}

/* Every string of the record is its value, a NUL, then zeros to the end of
 * its slot (the next slot's start): what chan_same relies on. */
static void assert_well_formed(const ami_chan_t *r)
{
    for (int f = 0; f < AMI_CHAN_STR_COUNT; f++) {
        const char *s = (const char *)r + r->str_off[f];
        for (size_t i = r->str_len[f]; i < r->str_off[f + 1] - r->str_off[f]; i++)
            assert_int_equal(s[i], 0);
    }
}

static void newchannel(world_t *w, const char *name, const char *uid, const char *caller_name)
{
    char text[2048];
    snprintf(text, sizeof text,
             "Event: Newchannel\nPrivilege: call,all\nChannel: %s\nChannelState: 4\nChannelStateDesc: Ring\n"
             "CallerIDNum: 1001\nCallerIDName: %s\nConnectedLineNum: <unknown>\n"
             "ConnectedLineName: <unknown>\nLanguage: en\nAccountCode: \nContext: from-internal\n"
             "Exten: 2001\nPriority: 1\nUniqueid: %s\nLinkedid: %s\n",
             name, caller_name, uid, uid);
    apply(w, text);
}

static void caller_name_is(world_t *w, const char *uid, const char *want)
{
    char text[2048];
    snprintf(text, sizeof text, "Event: NewCallerid\nPrivilege: call,all\nCallerIDName: %s\nUniqueid: %s\n",
             want, uid);
    apply(w, text);
}

static void hangup(world_t *w, const char *uid)
{
    char text[256];
    snprintf(text, sizeof text, "Event: Hangup\nUniqueid: %s\nCause: 16\nCause-txt: Normal Clearing\n", uid);
    apply(w, text);
    cs_table_forget_dead(&w->t);
}

static void values_of_every_length_are_stored_whole(void **state)
{
    (void)state;
    world_t *w = world_new();
    char value[AMI_CHAN_FIELD_MAX + 1], uid[32];
    for (size_t len = 0; len <= AMI_CHAN_FIELD_MAX; len++) {
        snprintf(uid, sizeof uid, "u%zu", len);
        newchannel(w, uid, uid, pattern(value, len, 1));
        const ami_chan_t *c = find(w, uid);
        assert_non_null(c);
        assert_string_equal(ami_chan_str(c, AMI_CHAN_CALLER_NAME, NULL), value);
        assert_well_formed(c);
        /* rewritten in place when it fits its slot, rebuilt when not; longer and shorter */
        size_t other[] = {len / 2, len + 1 > AMI_CHAN_FIELD_MAX ? 0 : len + 1, (len * 7) % 256, len};
        for (size_t k = 0; k < 4; k++) {
            if (other[k] > AMI_CHAN_FIELD_MAX)
                continue;
            caller_name_is(w, uid, pattern(value, other[k], (unsigned)(k + 2)));
            c = find(w, uid);
            size_t got;
            assert_string_equal(ami_chan_str(c, AMI_CHAN_CALLER_NAME, &got), value);
            assert_int_equal(got, other[k]);
            assert_string_equal(ami_chan_str(c, AMI_CHAN_CHANNEL, NULL), uid); /* neighbours intact */
            assert_string_equal(ami_chan_str(c, AMI_CHAN_CONNECTED_NUM, NULL), "<unknown>");
            assert_well_formed(c);
        }
        hangup(w, uid);
    }
    world_free(w);
}

static void a_new_channel_fits_a_reused_slot_of_any_size(void **state)
{
    (void)state;
    world_t *w = world_new();
    char big[AMI_CHAN_FIELD_MAX + 1], name[AMI_CHAN_FIELD_MAX + 1];
    pattern(big, AMI_CHAN_FIELD_MAX, 3);
    newchannel(w, "PJSIP/a", "a", "A");
    hangup(w, "a"); /* its small slot is kept for the next channel */
    snprintf(name, sizeof name, "PJSIP/%.240s", pattern(big, 240, 4));
    newchannel(w, name, "b", pattern(big, AMI_CHAN_FIELD_MAX, 5));
    const ami_chan_t *c = find(w, "b");
    assert_non_null(c);
    assert_string_equal(ami_chan_str(c, AMI_CHAN_CALLER_NAME, NULL), big);
    assert_string_equal(ami_chan_str(c, AMI_CHAN_CHANNEL, NULL), name);
    assert_string_equal(ami_chan_str(c, AMI_CHAN_CONTEXT, NULL), "from-internal");
    assert_int_equal(ami_chan_priority(c), 1);
    assert_int_equal(ami_chan_version(c), 1);
    assert_ptr_equal(find(w, name), c);
    assert_well_formed(c);
    hangup(w, "b"); /* now a large slot for a small channel */
    newchannel(w, "PJSIP/c", "c", "C");
    c = find(w, "c");
    assert_non_null(c);
    assert_string_equal(ami_chan_str(c, AMI_CHAN_CALLER_NAME, NULL), "C");
    assert_string_equal(ami_chan_str(c, AMI_CHAN_CHANNEL, NULL), "PJSIP/c");
    assert_string_equal(ami_chan_str(c, AMI_CHAN_BRIDGE, NULL), "");
    assert_well_formed(c);
    assert_int_equal(w->t.count, 1);
    assert_int_equal(w->t.refused, 0);
    world_free(w);
}

static void assert_snapshot(const ami_chan_t *c, const char *uid)
{
    static const struct {
        ami_chan_field_t f;
        const char *want;
    } FIELDS[] = {
        {AMI_CHAN_STATE_DESC, "Up"},      {AMI_CHAN_CALLER_NUM, "1001"},    {AMI_CHAN_CALLER_NAME, "Alice"},
        {AMI_CHAN_CONNECTED_NUM, "2001"}, {AMI_CHAN_CONNECTED_NAME, "Carol"}, {AMI_CHAN_LANGUAGE, "fr"},
        {AMI_CHAN_ACCOUNTCODE, "acc"},    {AMI_CHAN_CONTEXT, "ivr"},        {AMI_CHAN_EXTEN, "2001"},
        {AMI_CHAN_LINKEDID, "L"},
    };
    char name[32];
    snprintf(name, sizeof name, "PJSIP/%s", uid);
    assert_string_equal(ami_chan_str(c, AMI_CHAN_CHANNEL, NULL), name);
    assert_string_equal(ami_chan_str(c, AMI_CHAN_UNIQUEID, NULL), uid);
    for (size_t i = 0; i < sizeof FIELDS / sizeof FIELDS[0]; i++)
        assert_string_equal(ami_chan_str(c, FIELDS[i].f, NULL), FIELDS[i].want);
    assert_int_equal(ami_chan_state(c), 6);
    assert_int_equal(ami_chan_priority(c), 3);
}

static void keys_off_asterisks_order_read_the_same(void **state)
{
    (void)state;
    static const char *const SHAPES[] = {
        /* no Privilege; keys reversed */
        "Event: Newchannel\nLinkedid: L\nUniqueid: %s\nPriority: 3\nExten: 2001\nContext: ivr\n"
        "AccountCode: acc\nLanguage: fr\nConnectedLineName: Carol\nConnectedLineNum: 2001\n"
        "CallerIDName: Alice\nCallerIDNum: 1001\nChannelStateDesc: Up\nChannelState: 6\nChannel: PJSIP/%s\n",
        /* other case, other headers in between, Privilege late */
        "Event: Newchannel\nchannel: PJSIP/%s\nSystemName: pbx1\nCHANNELSTATE: 6\nchannelstatedesc: Up\n"
        "CallerIDNum: 1001\nCallerIDName: Alice\nPrivilege: call,all\nConnectedLineNum: 2001\n"
        "ConnectedLineName: Carol\nLanguage: fr\nAccountCode: acc\nContext: ivr\nExten: 2001\n"
        "Priority: 3\nUniqueid: %s\nLinkedid: L\n",
        /* a snapshot split by a prefixed one and a key that only starts like a known one */
        "Event: Newchannel\nPrivilege: call,all\nChannel: PJSIP/%s\nChannelState: 6\nDestChannel: X\n"
        "ChannelStateDesc: Up\nCallerIDNum: 1001\nCallerIDNam: Mallory\nCallerIDName: Alice\n"
        "ConnectedLineNum: 2001\nConnectedLineName: Carol\nLanguage: fr\nAccountCode: acc\n"
        "Context: ivr\nExten: 2001\nPriority: 3\nUniqueid: %s\nLinkedid: L\n",
    };
    world_t *w = world_new();
    char text[2048], uid[8];
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++) {
        snprintf(uid, sizeof uid, "s%zu", i);
        snprintf(text, sizeof text, SHAPES[i], uid, uid);
        apply(w, text);
        const ami_chan_t *c = find(w, uid);
        assert_non_null(c);
        assert_snapshot(c, uid);
    }
    /* and in order, as Asterisk writes it */
    apply(w, "Event: Newchannel\nPrivilege: call,all\nChannel: PJSIP/ref\nChannelState: 6\n"
             "ChannelStateDesc: Up\nCallerIDNum: 1001\nCallerIDName: Alice\nConnectedLineNum: 2001\n"
             "ConnectedLineName: Carol\nLanguage: fr\nAccountCode: acc\nContext: ivr\nExten: 2001\n"
             "Priority: 3\nUniqueid: ref\nLinkedid: L\n");
    assert_non_null(find(w, "ref"));
    assert_snapshot(find(w, "ref"), "ref");
    world_free(w);
}

/* Asterisk writes "Newchannel"; the name is compared as the protocol
 * says, without case. */
static void event_names_are_read_in_any_case(void **state)
{
    (void)state;
    world_t *w = world_new();
    apply(w, "Event: NEWCHANNEL\nChannel: PJSIP/a\nChannelState: 4\nUniqueid: a\n");
    apply(w, "Event: newchannel\nChannel: PJSIP/b\nChannelState: 4\nUniqueid: b\n");
    assert_non_null(find(w, "a"));
    assert_non_null(find(w, "b"));
    apply(w, "Event: nEWsTATE\nChannelState: 6\nChannelStateDesc: Up\nUniqueid: a\n");
    assert_int_equal(ami_chan_state(find(w, "a")), 6);
    apply(w, "Event: HANGUP\nUniqueid: b\nCause: 16\n");
    assert_int_equal(w->t.count, 1);
    apply(w, "Event: Newchannels\nChannel: PJSIP/c\nUniqueid: c\n"); /* another event */
    apply(w, "Event: Newchanne\nChannel: PJSIP/d\nUniqueid: d\n");
    assert_null(find(w, "c"));
    assert_null(find(w, "d"));
    cs_table_forget_dead(&w->t);
    world_free(w);
}

static void the_hash_sees_every_byte(void **state)
{
    (void)state;
    char s[48];
    for (size_t n = 1; n <= 40; n++) {
        memset(s, 'a', sizeof s);
        uint32_t h = cs_hash(s, n);
        for (size_t i = 0; i < n; i++) {
            s[i] = 'b';
            assert_int_not_equal(cs_hash(s, n), h);
            s[i] = 'a';
        }
        assert_int_not_equal(cs_hash(s, n + 1), h); /* the length counts too */
    }
}

/* The indexes pick a bucket with the hash's low bits: identifiers as
 * Asterisk writes them (a sequence that grows at the end of the value, in
 * the last word's high bytes) must spread over them, not fill a few. */
static void the_hash_spreads_asterisks_identifiers(void **state)
{
    (void)state;
    static const char *const SHAPES[] = {"1733360000.%u", "1733360000.%012u", "PJSIP/1001-%08x", "SIP/trunk-%u",
                                         "%u"};
    enum { N = 10000, BUCKETS = 16384 };
    static uint16_t load[BUCKETS];
    for (size_t k = 0; k < sizeof SHAPES / sizeof SHAPES[0]; k++) {
        memset(load, 0, sizeof load);
        unsigned most = 0;
        char id[64];
        for (unsigned i = 0; i < N; i++) {
            int n = snprintf(id, sizeof id, SHAPES[k], 1000 + i * 3);
            unsigned b = cs_hash(id, (size_t)n) & (BUCKETS - 1);
            if (++load[b] > most)
                most = load[b];
        }
        if (most > 10) /* a uniform hash gives 6 or 7 here */
            fail_msg("%s: %u identifiers in one bucket", SHAPES[k], most);
    }
}

/* A child that draws the key and tells the hash of one id. */
static uint32_t keyed_hash_in_a_child(const char *id)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cs_hash_init();
        uint32_t h = cs_hash(id, strlen(id));
        _exit(write(fds[1], &h, sizeof h) == (ssize_t)sizeof h ? 0 : 1);
    }
    close(fds[1]);
    uint32_t h = 0;
    assert_int_equal(read(fds[0], &h, sizeof h), (ssize_t)sizeof h);
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return h;
}

/* An AMI server cannot know which of its ids share a bucket: each process
 * hashes with a key of its own (equal by chance once in 2^32). */
static void the_hash_is_keyed_per_process(void **state)
{
    (void)state;
    static const char id[] = "1733360000.1234";
    uint32_t a = keyed_hash_in_a_child(id), b = keyed_hash_in_a_child(id);
    assert_int_not_equal(a, b);
    assert_int_not_equal(a, cs_hash(id, sizeof id - 1)); /* this process drew no key */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(values_of_every_length_are_stored_whole),
        cmocka_unit_test(a_new_channel_fits_a_reused_slot_of_any_size),
        cmocka_unit_test(keys_off_asterisks_order_read_the_same),
        cmocka_unit_test(event_names_are_read_in_any_case),
        cmocka_unit_test(the_hash_sees_every_byte),
        cmocka_unit_test(the_hash_spreads_asterisks_identifiers),
        cmocka_unit_test(the_hash_is_keyed_per_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
