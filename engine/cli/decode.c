/*
 * ami-engine decode FILE.ami [FILE.sent]: what the engine understands of a
 * recorded AMI session. Every message the server sent is printed; with the
 * client's side (.sent) the actions are also correlated as the engine would
 * (single response, event list, Command output, completion event) and the
 * completed actions are listed. A tool for operators reading captures, and
 * a look at the protocol core without a server.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "correlation/registry.h"
#include "protocol/parser.h"
#include "util/alloc.h"

#define MAX_ACTIONS 512

typedef struct action {
    char recorded_id[64];
    char name[40];
    uint64_t id;
    bool done;
    char outcome[160];
    uint32_t items;
} action_t;

typedef struct decoder {
    action_t actions[MAX_ACTIONS];
    size_t nactions;
    ami_actionid_gen_t ids;
    ami_registry_t *reg;
    size_t messages;
} decoder_t;

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    ami_buf_t b;
    ami_buf_init(&b, 256u << 20);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (ami_buf_append(&b, chunk, n) < 0)
            break;
    fclose(f);
    *len = b.len;
    return b.data ? b.data : ami_strdup("");
}

static ami_strategy_t strategy_for(const char *name)
{
    if (ami_str_ieq(name, strlen(name), "Originate", 9))
        return AMI_STRATEGY_EVENT;
    if (ami_str_ieq(name, strlen(name), "Command", 7))
        return AMI_STRATEGY_COMMAND;
    return AMI_STRATEGY_AUTO;
}

static void on_note(void *ud, const ami_pending_note_t *n)
{
    action_t *a = ud;
    if (n->signal != AMI_PENDING_DONE && n->signal != AMI_PENDING_FAILED)
        return;
    a->done = true;
    a->items = n->items;
    if (n->signal == AMI_PENDING_DONE)
        snprintf(a->outcome, sizeof a->outcome, "done (%s%s%s)", ami_strategy_name(n->strategy),
                 n->msg ? ", " : "", n->msg ? ami_msg_name(n->msg) : "");
    else
        snprintf(a->outcome, sizeof a->outcome, "failed: %s: %.100s", ami_status_name(n->status),
                 n->reason ? n->reason : "");
}

/* Register every action of the client's side, under our own ActionIDs. */
static void load_actions(decoder_t *d, const char *sent, size_t len)
{
    ami_parser_t p;
    ami_parser_init(&p, NULL);
    ami_parser_expect_banner(&p, false);
    ami_parser_feed(&p, sent, len, NULL);
    ami_msg_t m;
    while (ami_parser_next(&p, &m, NULL) == 1 && d->nactions < MAX_ACTIONS) {
        size_t idlen;
        const char *rid = ami_msg_action_id(&m, &idlen);
        const char *name = ami_msg_get(&m, "Action");
        if (!name)
            continue;
        action_t *a = &d->actions[d->nactions++];
        snprintf(a->recorded_id, sizeof a->recorded_id, "%.*s", rid ? (int)idlen : 0, rid ? rid : "");
        snprintf(a->name, sizeof a->name, "%s", name);
        a->id = ami_actionid_next(&d->ids);
        ami_pending_spec_t spec = {.id = a->id, .action = a->name, .strategy = strategy_for(name),
                                   .completion_event = "OriginateResponse", .cb = on_note, .ud = a};
        ami_registry_add(d->reg, &spec, NULL);
    }
    ami_parser_deinit(&p);
}

/* Rewrite "ActionID: <recorded>" lines to ours so the registry sees its own. */
static char *rewrite_ids(decoder_t *d, const char *text, size_t len, size_t *out_len)
{
    ami_buf_t out;
    ami_buf_init(&out, 0);
    for (const char *p = text, *end = text + len; p < end;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t n = eol ? (size_t)(eol - p) + 1 : (size_t)(end - p);
        bool done = false;
        for (size_t i = 0; i < d->nactions && !done && n > 12 && strncmp(p, "ActionID: ", 10) == 0; i++) {
            size_t rl = strlen(d->actions[i].recorded_id);
            if (rl && n >= 10 + rl && memcmp(p + 10, d->actions[i].recorded_id, rl) == 0 &&
                (p[10 + rl] == '\r' || p[10 + rl] == '\n')) {
                char id[AMI_ACTIONID_MAX];
                ami_actionid_format(&d->ids, d->actions[i].id, id);
                ami_buf_printf(&out, "ActionID: %s", id);
                ami_buf_append(&out, p + 10 + rl, n - 10 - rl); /* the line's CRLF */
                done = true;
            }
        }
        if (!done)
            ami_buf_append(&out, p, n);
        p += n;
    }
    *out_len = out.len;
    return out.data;
}

static const char *kind_name(ami_msg_kind_t k)
{
    switch (k) {
    case AMI_MSG_BANNER: return "banner";
    case AMI_MSG_RESPONSE: return "response";
    case AMI_MSG_EVENT: return "event";
    default: return "other";
    }
}

static void print_message(const ami_msg_t *m, bool taken)
{
    printf("%-8s %s%s\n", kind_name(m->kind), ami_msg_name(m), taken ? "  [correlated]" : "");
    for (size_t i = 1; i < m->nhdrs; i++) {
        size_t kl, vl;
        const char *k = ami_msg_key(m, i, &kl);
        const char *v = ami_msg_value(m, i, &vl);
        printf("    %.*s: %.*s\n", (int)kl, k, (int)vl, v);
    }
}

static int decode_stream(decoder_t *d, const char *text, size_t len)
{
    ami_parser_t p;
    ami_parser_init(&p, NULL);
    if (len < 21 || strncmp(text, "Asterisk Call Manager", 21) != 0)
        ami_parser_expect_banner(&p, false);
    ami_err_t err;
    int rc = ami_parser_feed(&p, text, len, &err);
    ami_msg_t m;
    if (rc == 0)
        while ((rc = ami_parser_next(&p, &m, &err)) == 1) {
            d->messages++;
            print_message(&m, ami_registry_on_message(d->reg, &m) != AMI_TOOK_NOTHING);
        }
    if (rc < 0)
        fprintf(stderr, "decode: protocol error after %zu messages: %s\n", d->messages, err.msg);
    else if (ami_parser_buffered(&p))
        fprintf(stderr, "decode: the stream ends in the middle of a message (%zu bytes)\n",
                ami_parser_buffered(&p));
    ami_parser_deinit(&p);
    return rc < 0 ? 1 : 0;
}

static void print_actions(const decoder_t *d)
{
    printf("\n%zu messages; %zu actions:\n", d->messages, d->nactions);
    for (size_t i = 0; i < d->nactions; i++) {
        const action_t *a = &d->actions[i];
        printf("  %-14s %-18s %s", a->recorded_id[0] ? a->recorded_id : "(no ActionID)", a->name,
               a->done ? a->outcome : "no answer in the recording");
        if (a->items)
            printf(", %u items", a->items);
        putchar('\n');
    }
}

static const char decode_usage[] =
    "usage: ami-engine decode FILE.ami [FILE.sent]\n"
    "Decodes a recorded AMI session (what the server sent) message by message; with\n"
    "FILE.sent (what the client sent), also correlates each action with its answer.\n";

/* 0: the files are argv[optind..]; 1: --help printed; 2: usage error printed. */
static int decode_args(int argc, char **argv)
{
    static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int c;
    optind = 0; /* a fresh scan: main may have used getopt */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(decode_usage, stdout);
            return 1;
        }
        fprintf(stderr, "decode: unknown option \"%.100s\"\n%s", argv[optind - 1], decode_usage);
        return 2;
    }
    int nfiles = argc - optind;
    if (nfiles < 1 || nfiles > 2) {
        fprintf(stderr, "decode: %s\n%s", nfiles < 1 ? "no recording given" : "at most two files",
                decode_usage);
        return 2;
    }
    return 0;
}

int ami_cli_decode(int argc, char **argv)
{
    int usage_rc = decode_args(argc, argv);
    if (usage_rc != 0)
        return usage_rc == 1 ? 0 : usage_rc;
    const char *recv_path = argv[optind];
    const char *sent_path = optind + 1 < argc ? argv[optind + 1] : NULL;
    size_t len, slen = 0;
    char *text = read_file(recv_path, &len);
    char *sent = sent_path ? read_file(sent_path, &slen) : NULL;
    if (!text || (sent_path && !sent)) {
        fprintf(stderr, "decode: cannot read %s\n", !text ? recv_path : sent_path);
        ami_free(text);
        return 1;
    }
    decoder_t *d = ami_calloc(1, sizeof *d);
    ami_actionid_init(&d->ids, 0);
    ami_registry_config_t rc;
    ami_registry_config_default(&rc);
    rc.ids = &d->ids;
    rc.server_key = "recording";
    d->reg = ami_registry_new(&rc, NULL);
    if (sent)
        load_actions(d, sent, slen);
    size_t rlen;
    char *rewritten = rewrite_ids(d, text, len, &rlen);
    int status = decode_stream(d, rewritten, rlen);
    if (sent)
        print_actions(d);
    ami_free(rewritten);
    ami_registry_free(d->reg);
    ami_free(d);
    ami_free(text);
    ami_free(sent);
    return status;
}
