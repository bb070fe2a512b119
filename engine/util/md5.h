/*
 * MD5 (RFC 1321), for AMI's challenge-response login only: the Key is the
 * lower-case hex of md5(challenge + secret). MD5 is broken as a hash for
 * anything that needs collision resistance; the protocol fixes the choice.
 * Used by the simulator (to check keys) and by the engine's login (to make
 * them), so both sides agree byte for byte.
 */
#ifndef AMI_UTIL_MD5_H
#define AMI_UTIL_MD5_H

#include <stddef.h>
#include <stdint.h>

typedef struct ami_md5 {
    uint32_t state[4];
    uint64_t total;        /* bytes hashed so far */
    unsigned char block[64];
    size_t used;           /* bytes waiting in block */
} ami_md5_t;

void ami_md5_init(ami_md5_t *ctx);
void ami_md5_update(ami_md5_t *ctx, const void *data, size_t len);
void ami_md5_final(ami_md5_t *ctx, unsigned char digest[16]);

/* One shot: 32 lower-case hex digits and a NUL. */
void ami_md5_hex(const void *data, size_t len, char out[33]);

/* Streaming result as hex (finalizes ctx). */
void ami_md5_final_hex(ami_md5_t *ctx, char out[33]);

#endif
