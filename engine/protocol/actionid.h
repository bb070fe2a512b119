/*
 * ActionIDs: unique per engine, cheap, safe to echo in logs.
 *
 * An id is "<prefix><seq>" where the prefix is fixed for the engine's life
 * ("a" + 8 random hex digits + "-") and seq a 64-bit counter. The text uses
 * only [0-9a-f-], so it needs no escaping in logs or JSON. Responses echo
 * the ActionID; ami_actionid_parse turns it back into seq, or says it is not
 * one of ours (another client's, or a hand-written one).
 */
#ifndef AMI_PROTOCOL_ACTIONID_H
#define AMI_PROTOCOL_ACTIONID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AMI_ACTIONID_MAX 32 /* bytes, NUL included */

typedef struct ami_actionid_gen {
    char prefix[12];
    size_t prefix_len;
    uint64_t next;
} ami_actionid_gen_t;

/* seed 0 draws a random prefix (getrandom); tests pass a fixed seed. */
void ami_actionid_init(ami_actionid_gen_t *g, uint32_t seed);

/* Next sequence number (starts at 1). */
static inline uint64_t ami_actionid_next(ami_actionid_gen_t *g) { return g->next++; }

/* Write the text for seq into out (AMI_ACTIONID_MAX bytes); returns its length. */
size_t ami_actionid_format(const ami_actionid_gen_t *g, uint64_t seq, char *out);

/* true and *seq if s is one of ours. */
bool ami_actionid_parse(const ami_actionid_gen_t *g, const char *s, size_t len, uint64_t *seq);

#endif
