/*
 * The live call state: per server, the table of channels the Asterisk
 * server has right now, and the calls they make up. A client of the public
 * client API like any embedder, and public itself (<ami/callstate.h>: read
 * its contract there); the engine's Lua API (ami.channels, ami.calls) reads
 * it.
 */
#ifndef AMI_CALLSTATE_CALLSTATE_H
#define AMI_CALLSTATE_CALLSTATE_H

#include <ami/callstate.h>

#endif
