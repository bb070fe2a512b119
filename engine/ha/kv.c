/*
 * ami.kv's Redis side: every key lives under "ami:<cluster>:kv:", so a
 * script can neither read nor clobber the leases or another cluster's
 * data, and keys and values are bounded before anything is sent. The
 * caller (engine/lua/lua_kv.c) has already checked every number.
 */
#include <stdio.h>
#include <string.h>

#include "ha/ha_internal.h"
#include "util/alloc.h"

#define KV_TAG "kv:"

size_t ami_ha_kv_max_key(const ami_ha_t *ha)
{
    return ha->cfg.kv_max_key;
}

size_t ami_ha_kv_max_value(const ami_ha_t *ha)
{
    return ha->cfg.kv_max_value;
}

static int check(const ami_ha_t *ha, const ami_kv_req_t *req, ami_err_t *err)
{
    if ((unsigned)req->op > AMI_KV_DEL)
        return ami_err_set(err, AMI_E_INVALID, "unknown kv operation");
    if (req->key_len == 0 || req->key_len > ha->cfg.kv_max_key)
        return ami_err_set(err, AMI_E_INVALID, "a key must be 1 to %zu bytes, got %zu", ha->cfg.kv_max_key,
                           req->key_len);
    if (req->op == AMI_KV_SET && req->value_len > ha->cfg.kv_max_value)
        return ami_err_set(err, AMI_E_LIMIT, "a value may hold at most %zu bytes (ha.kv.max_value_bytes), got %zu",
                           ha->cfg.kv_max_value, req->value_len);
    return 0;
}

int ami_ha_kv(ami_ha_t *ha, const ami_kv_req_t *req, ami_redis_reply_fn fn, void *ud, ami_redis_req_t **out,
              ami_err_t *err)
{
    if (check(ha, req, err) < 0)
        return -1;
    size_t plen = strlen(ha->prefix) + strlen(KV_TAG);
    char *key = ami_malloc(plen + req->key_len + 1);
    if (!key)
        return ami_err_set(err, AMI_E_NOMEM, "out of memory");
    snprintf(key, plen + 1, "%s%s", ha->prefix, KV_TAG);
    memcpy(key + plen, req->key, req->key_len);
    static const char *const verbs[] = {"GET", "SET", "INCRBY", "PEXPIRE", "DEL"};
    const char *argv[7] = {verbs[req->op], key};
    size_t lens[7] = {strlen(verbs[req->op]), plen + req->key_len};
    int argc = 2;
    char num[32];
    if (req->op == AMI_KV_INCRBY || req->op == AMI_KV_PEXPIRE) {
        lens[argc] = (size_t)snprintf(num, sizeof num, "%lld", (long long)req->number);
        argv[argc++] = num;
    } else if (req->op == AMI_KV_SET) {
        argv[argc] = req->value_len ? req->value : "";
        lens[argc++] = req->value_len;
        if (req->ttl_ms > 0) {
            argv[argc] = "PX";
            lens[argc++] = 2;
            lens[argc] = (size_t)snprintf(num, sizeof num, "%lld", (long long)req->ttl_ms);
            argv[argc++] = num;
        }
        if (req->only_new) {
            argv[argc] = "NX";
            lens[argc++] = 2;
        }
    }
    int rc = ami_redis_command(ha->data_conn, argc, argv, lens, fn, ud, out, err);
    ami_free(key);
    return rc;
}

void ami_ha_kv_cancel(ami_ha_t *ha, ami_redis_req_t *req)
{
    ami_redis_cancel(ha->data_conn, req);
}
