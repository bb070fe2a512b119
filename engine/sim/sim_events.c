/*
 * Who gets which event: the read classes of a session (Login Events:,
 * Action: Events), its Filter list, and delivery to every session of a node.
 * Filters follow Asterisk 22: no filters pass everything; with includes an
 * event must match one of them; an exclude that matches always drops it.
 */
#include <regex.h>
#include <string.h>
#include <strings.h>

#include "sim/sim_internal.h"
#include "util/alloc.h"

static const struct {
    const char *name;
    uint32_t bit;
} CLASSES[] = {
    {"system", SIM_EV_SYSTEM},   {"call", SIM_EV_CALL},         {"log", SIM_EV_LOG},
    {"verbose", SIM_EV_VERBOSE}, {"command", SIM_EV_COMMAND},   {"agent", SIM_EV_AGENT},
    {"user", SIM_EV_USER},       {"config", SIM_EV_CONFIG},     {"dtmf", SIM_EV_DTMF},
    {"reporting", SIM_EV_REPORTING}, {"cdr", SIM_EV_CDR},       {"dialplan", SIM_EV_DIALPLAN},
    {"originate", SIM_EV_ORIGINATE}, {"agi", SIM_EV_AGI},       {"cc", SIM_EV_CC},
    {"aoc", SIM_EV_AOC},         {"test", SIM_EV_TEST},         {"security", SIM_EV_SECURITY},
    {"message", SIM_EV_MESSAGE}, {"all", SIM_EV_ALL},
};

static uint32_t class_bit(const char *p, size_t len)
{
    for (size_t i = 0; i < sizeof CLASSES / sizeof CLASSES[0]; i++)
        if (strlen(CLASSES[i].name) == len && strncasecmp(CLASSES[i].name, p, len) == 0)
            return CLASSES[i].bit;
    return 0;
}

static bool is_word(const char *s, const char *const *words)
{
    for (; *words; words++)
        if (strcasecmp(s, *words) == 0)
            return true;
    return false;
}

uint32_t sim_class_parse(const char *list, bool *ok)
{
    static const char *const TRUE_WORDS[] = {"on", "yes", "true", "y", "t", "1", NULL};
    static const char *const FALSE_WORDS[] = {"off", "no", "false", "n", "f", "0", NULL};
    *ok = true;
    if (!list || !*list || is_word(list, FALSE_WORDS))
        return 0;
    if (is_word(list, TRUE_WORDS))
        return SIM_EV_ALL;
    uint32_t mask = 0;
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && *p == ' ') {
            p++;
            len--;
        }
        uint32_t bit = class_bit(p, len);
        if (!bit)
            *ok = false;
        mask |= bit;
        p += len;
        if (*p == ',')
            p++;
    }
    return mask;
}

uint32_t sim_class_of_event(const char *ev, size_t len)
{
    static const char KEY[] = "\nPrivilege: ";
    size_t klen = sizeof KEY - 1;
    size_t scan = len < 512 ? len : 512;
    for (size_t i = 0; i + klen <= scan; i++) {
        if (ev[i] != '\n' || strncasecmp(ev + i, KEY, klen) != 0)
            continue;
        const char *v = ev + i + klen;
        size_t n = 0;
        while (v + n < ev + len && v[n] != ',' && v[n] != '\r' && v[n] != '\n')
            n++;
        return class_bit(v, n);
    }
    return 0;
}

enum { M_NONE, M_REGEX, M_EXACT, M_STARTS, M_ENDS, M_CONTAINS };

struct sim_filter {
    bool exclude;
    int method;
    char *name;   /* event name to match, or NULL */
    char *header; /* header whose value is matched, or NULL (whole event) */
    char *value;
    regex_t re;
    bool has_re;
};

static const char BAD_REGEX[] = "Filter did not compile.  Check the syntax of the filter given.";
static const char BAD_FORMAT[] = "Filter was formatted incorrectly";

static void filter_clear(sim_filter_t *f)
{
    if (f->has_re)
        regfree(&f->re);
    ami_free(f->name);
    ami_free(f->header);
    ami_free(f->value);
    memset(f, 0, sizeof *f);
}

void sim_filters_free(sim_session_t *s)
{
    for (size_t i = 0; i < s->nfilters; i++)
        filter_clear(&s->filters[i]);
    ami_free(s->filters);
    s->filters = NULL;
    s->nfilters = 0;
}

static int method_parse(const char *v, size_t len)
{
    static const char *const NAMES[] = {"none", "regex", "exact", "starts_with", "ends_with", "contains"};
    for (int i = 0; i < 6; i++)
        if (strlen(NAMES[i]) == len && strncasecmp(NAMES[i], v, len) == 0)
            return i;
    return -1;
}

/* One "key(value)" item of MatchCriteria. */
static int criterion(sim_filter_t *f, const char *k, size_t klen, const char *v, size_t vlen)
{
    if (klen == 6 && strncasecmp(k, "action", 6) == 0) {
        if (vlen == 7 && strncasecmp(v, "exclude", 7) == 0)
            f->exclude = true;
        else if (!(vlen == 7 && strncasecmp(v, "include", 7) == 0))
            return -1;
        return 0;
    }
    if (klen == 4 && strncasecmp(k, "name", 4) == 0)
        return (f->name = ami_strndup(v, vlen)) ? 0 : -1;
    if (klen == 6 && strncasecmp(k, "header", 6) == 0)
        return (f->header = ami_strndup(v, vlen)) ? 0 : -1;
    if (klen == 6 && strncasecmp(k, "method", 6) == 0)
        return (f->method = method_parse(v, vlen)) < 0 ? -1 : 0;
    return -1;
}

static int parse_criteria(sim_filter_t *f, const char *mc)
{
    const char *p = mc;
    f->method = -2; /* not given */
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *open = strchr(p, '(');
        const char *close = open ? strchr(open, ')') : NULL;
        if (!open || !close)
            return -1;
        if (criterion(f, p, (size_t)(open - p), open + 1, (size_t)(close - open - 1)) < 0)
            return -1;
        p = close + 1;
    }
    return 0;
}

static int filter_build(sim_filter_t *f, const char *mc, const char *value, const char **errmsg)
{
    if (mc && *mc) {
        if (parse_criteria(f, mc) < 0) {
            *errmsg = BAD_FORMAT;
            return -1;
        }
        if (f->method == -2)
            f->method = *value ? M_REGEX : M_NONE;
    } else {
        f->method = M_REGEX;
        if (*value == '!') {
            f->exclude = true;
            value++;
        }
    }
    if (!(f->value = ami_strdup(value))) {
        *errmsg = "Out of memory";
        return -1;
    }
    if (f->method == M_REGEX) {
        if (regcomp(&f->re, value, REG_EXTENDED | REG_NOSUB) != 0) {
            *errmsg = BAD_REGEX;
            return -1;
        }
        f->has_re = true;
    }
    return 0;
}

int sim_filter_add(sim_session_t *s, const ami_msg_t *m, const char **errmsg)
{
    const char *op = ami_msg_get(m, "Operation");
    if (op && *op && strcasecmp(op, "Add") != 0) {
        *errmsg = "Unknown operation";
        return -1;
    }
    if (s->nfilters >= SIM_MAX_FILTERS) {
        *errmsg = "Too many filters";
        return -1;
    }
    const char *value = ami_msg_get(m, "Filter");
    sim_filter_t f = {0};
    if (filter_build(&f, ami_msg_get(m, "MatchCriteria"), value ? value : "", errmsg) < 0) {
        filter_clear(&f);
        return -1;
    }
    sim_filter_t *grown = ami_realloc(s->filters, (s->nfilters + 1) * sizeof *grown);
    if (!grown) {
        filter_clear(&f);
        *errmsg = "Out of memory";
        return -1;
    }
    s->filters = grown;
    s->filters[s->nfilters++] = f;
    s->view_valid = false;
    return 0;
}

static bool header_value(const char *ev, size_t len, const char *key, const char **v, size_t *vlen)
{
    size_t klen = strlen(key);
    const char *p = ev, *end = ev + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if ((size_t)(le - p) > klen + 1 && p[klen] == ':' && strncasecmp(p, key, klen) == 0) {
            const char *vs = p + klen + 1;
            if (vs < le && *vs == ' ')
                vs++;
            const char *ve = (le > vs && le[-1] == '\r') ? le - 1 : le;
            *v = vs;
            *vlen = (size_t)(ve - vs);
            return true;
        }
        p = le + 1;
    }
    return false;
}

static bool text_match(const sim_filter_t *f, const char *t, size_t n)
{
    size_t vl = strlen(f->value);
    switch (f->method) {
    case M_NONE:
        return true;
    case M_EXACT:
        return n == vl && memcmp(t, f->value, n) == 0;
    case M_STARTS:
        return n >= vl && memcmp(t, f->value, vl) == 0;
    case M_ENDS:
        return n >= vl && memcmp(t + n - vl, f->value, vl) == 0;
    case M_CONTAINS:
        return vl == 0 || memmem(t, n, f->value, vl) != NULL;
    default: {
        regmatch_t pm[1] = {{.rm_so = 0, .rm_eo = (regoff_t)n}};
        return regexec(&f->re, t, 1, pm, REG_STARTEND) == 0;
    }
    }
}

static bool filter_match(const sim_filter_t *f, const char *ev, size_t len)
{
    if (f->name) {
        const char *v;
        size_t vl;
        if (!header_value(ev, len, "Event", &v, &vl) || strlen(f->name) != vl ||
            strncasecmp(v, f->name, vl) != 0)
            return false;
    }
    if (f->header) {
        const char *v;
        size_t vl;
        if (!header_value(ev, len, f->header, &v, &vl))
            return false;
        return text_match(f, v, vl);
    }
    return text_match(f, ev, len);
}

static bool filters_pass(const sim_session_t *s, const char *ev, size_t len)
{
    bool any_include = false, included = false;
    for (size_t i = 0; i < s->nfilters; i++) {
        const sim_filter_t *f = &s->filters[i];
        if (f->exclude) {
            if (filter_match(f, ev, len))
                return false;
        } else {
            any_include = true;
            if (!included && filter_match(f, ev, len))
                included = true;
        }
    }
    return !any_include || included;
}

bool sim_session_wants(sim_session_t *s, uint32_t cls, const char *ev, size_t len)
{
    if (s->closed || !s->logged_in || s->mask == 0 || s->replaying)
        return false;
    if (cls && !(cls & s->mask))
        return false;
    return s->nfilters == 0 || filters_pass(s, ev, len);
}

static void sim_session_event(sim_session_t *s, uint32_t cls, const char *ev, size_t len)
{
    if (!sim_session_wants(s, cls, ev, len))
        return;
    if (s->node->faults.mute_events) {
        sim_count_muted(s->node, ev, len);
        return;
    }
    s->node->stats.events_sent++;
    if (s->sync_call) {
        /* Asterisk holds a session's events while its sync Originate runs. */
        if (ami_buf_append(&s->held, ev, len) < 0) {
            s->node->stats.sessions_dropped_slow++;
            sim_session_close(s, "held events overflow");
        }
        return;
    }
    sim_session_send(s, ev, len);
}

static void sim_broadcast(ami_sim_node_t *n, uint32_t cls, const char *ev, size_t len)
{
    sim_session_t *next;
    for (sim_session_t *s = n->sessions; s; s = next) {
        next = s->next;
        sim_session_event(s, cls, ev, len);
    }
}

void sim_emit(ami_sim_node_t *n, uint32_t cls)
{
    /* regexec reads to a NUL even with REG_STARTEND (sanitizers check it) */
    if (ami_buf_append(&n->scratch, "", 1) < 0) {
        ami_buf_clear(&n->scratch);
        return;
    }
    n->scratch.len--;
    sim_broadcast(n, cls, n->scratch.data, n->scratch.len);
    ami_buf_clear(&n->scratch);
}
