#include "protocol/message.h"

#include <string.h>

long ami_msg_next_index(const ami_msg_t *m, const char *key, size_t key_len, size_t from)
{
    for (size_t i = from; i < m->nhdrs; i++) {
        size_t klen;
        const char *k = ami_msg_key(m, i, &klen);
        if (klen == key_len && ami_str_ieq(k, klen, key, key_len))
            return (long)i;
    }
    return -1;
}

const char *ami_msg_getn(const ami_msg_t *m, const char *key, size_t key_len, size_t *val_len)
{
    long i = ami_msg_next_index(m, key, key_len, 0);
    if (i < 0)
        return NULL;
    return ami_msg_value(m, (size_t)i, val_len);
}

const char *ami_msg_get(const ami_msg_t *m, const char *key)
{
    return ami_msg_getn(m, key, strlen(key), NULL);
}

const char *ami_msg_name(const ami_msg_t *m)
{
    return m->nhdrs ? ami_msg_value(m, 0, NULL) : "";
}

const char *ami_msg_action_id(const ami_msg_t *m, size_t *len)
{
    if (m->actionid_idx < 0)
        return NULL;
    return ami_msg_value(m, (size_t)m->actionid_idx, len);
}

bool ami_msg_is_success(const ami_msg_t *m)
{
    if (m->kind != AMI_MSG_RESPONSE || m->nhdrs == 0)
        return false;
    size_t n;
    const char *v = ami_msg_value(m, 0, &n);
    return ami_str_ieq(v, n, "Success", 7) || ami_str_ieq(v, n, "Pong", 4) ||
           ami_str_ieq(v, n, "Follows", 7) || ami_str_ieq(v, n, "Goodbye", 7);
}
