/*
 * One channel of the live call state, as a flat, read-only record.
 *
 * A record is one contiguous block without pointers: a fixed header (the
 * numbers), a table of string offsets, then the strings themselves, each
 * NUL-terminated. That makes a snapshot one memcpy:
 *
 *   char *copy = malloc(ami_chan_size(ch));
 *   memcpy(copy, ch, ami_chan_size(ch));       // a self-contained record
 *   ami_chan_str((const ami_chan_t *)copy, AMI_CHAN_CONTEXT, NULL);
 *
 * Every accessor below works on the table's own records and on such copies
 * alike. A record copied needs the alignment of a double (malloc's, or a Lua
 * userdata's, is enough).
 *
 * Strings are never NULL: a field nothing has said anything about reads "".
 * Each string is at most AMI_CHAN_FIELD_MAX bytes (longer values from the
 * server are cut, and counted by the call state); a tracked variable's value
 * is at most the call state's variable_max_bytes.
 *
 * Ownership: the call state owns its records; a pointer it hands out is
 * BORROWED and valid until the next event of that server is applied (copy
 * what must live longer). Copies belong to whoever made them.
 */
#ifndef AMI_CHANNEL_H
#define AMI_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include <ami/export.h>

AMI_BEGIN_DECLS

/* Longest string field kept (Asterisk's own limits are below it: channel
 * names 80, Uniqueids 150). */
#define AMI_CHAN_FIELD_MAX 255

typedef enum ami_chan_field {
    AMI_CHAN_CHANNEL = 0,      /* Channel: "PJSIP/1001-0000002a" */
    AMI_CHAN_UNIQUEID,         /* Uniqueid: the key of the table */
    AMI_CHAN_LINKEDID,         /* Linkedid: shared by the channels of one call */
    AMI_CHAN_STATE_DESC,       /* ChannelStateDesc: "Up", "Ringing", ... */
    AMI_CHAN_CALLER_NUM,       /* CallerIDNum */
    AMI_CHAN_CALLER_NAME,      /* CallerIDName */
    AMI_CHAN_CONNECTED_NUM,    /* ConnectedLineNum */
    AMI_CHAN_CONNECTED_NAME,   /* ConnectedLineName */
    AMI_CHAN_LANGUAGE,         /* Language */
    AMI_CHAN_ACCOUNTCODE,      /* AccountCode */
    AMI_CHAN_CONTEXT,          /* Context */
    AMI_CHAN_EXTEN,            /* Exten */
    AMI_CHAN_APPLICATION,      /* Application (Newexten, CoreShowChannel) */
    AMI_CHAN_APPDATA,          /* AppData (Newexten) / ApplicationData (CoreShowChannel) */
    AMI_CHAN_BRIDGE,           /* BridgeUniqueid of the bridge it is in; "" when none */
    AMI_CHAN_DIAL_STATUS,      /* DialStatus of its last DialState/DialEnd, as caller or callee */
    AMI_CHAN_DIALED_BY,        /* Uniqueid of the channel whose Dial created it (DialBegin) */
    AMI_CHAN_HANGUP_CAUSE_TXT, /* Cause-txt of its Hangup; "" while it lives */
    AMI_CHAN_STR_COUNT
} ami_chan_field_t;

typedef struct ami_chan ami_chan_t;

/* Bytes of the whole record (what to copy). */
AMI_API size_t ami_chan_size(const ami_chan_t *ch);

/* A string field; never NULL. */
AMI_API const char *ami_chan_str(const ami_chan_t *ch, ami_chan_field_t f, size_t *len);

/* ChannelState (0 Down .. 10), -1 when unknown. */
AMI_API int ami_chan_state(const ami_chan_t *ch);
/* Priority in the dialplan, 0 when unknown. */
AMI_API int ami_chan_priority(const ami_chan_t *ch);
/* Hangup cause, -1 while the channel lives. */
AMI_API int ami_chan_hangup_cause(const ami_chan_t *ch);

/* Wall-clock seconds (Unix epoch): when the engine saw the channel appear
 * (Newchannel; for a channel found by a rebuild, now minus its Duration),
 * and when it first saw it Up (0: never, or unknown). */
AMI_API double ami_chan_started(const ami_chan_t *ch);
AMI_API double ami_chan_answered(const ami_chan_t *ch);

/* Tracked variable number i (the call state's configuration order), or NULL
 * when the channel has not set it. */
AMI_API const char *ami_chan_var(const ami_chan_t *ch, size_t i, size_t *len);
AMI_API size_t ami_chan_var_count(const ami_chan_t *ch);

/* A number unique to this channel for the life of the process (never
 * reused), and the count of changes to its record: equal serial and
 * version mean equal contents. */
AMI_API uint64_t ami_chan_serial(const ami_chan_t *ch);
AMI_API uint32_t ami_chan_version(const ami_chan_t *ch);

/* "channel", "uniqueid", ... ("hangup_cause_txt"): the names the Lua API uses. */
AMI_API const char *ami_chan_field_name(ami_chan_field_t f);

AMI_END_DECLS

#endif
