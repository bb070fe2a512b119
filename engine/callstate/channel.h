/*
 * One channel of the live call state, as a flat, read-only record: the
 * whole API is public (<ami/channel.h>: read its contract there).
 */
#ifndef AMI_CALLSTATE_CHANNEL_H
#define AMI_CALLSTATE_CHANNEL_H

#include <ami/channel.h>

#endif
