/*
 * The action writer: an action (name, ActionID, headers) to wire bytes.
 *
 * It validates everything before writing anything: on error the output
 * buffer is left exactly as it was. It refuses
 *   - CR, LF or NUL in the action name, any key or any value (AMI header
 *     injection: a value "x\r\nAction: Originate" would smuggle an action);
 *   - an empty key, a key with ':' or a blank; an action name that is empty or
 *     has anything but letters, digits, '_' and '-';
 *   - a user header named Action or ActionID (the engine sets those);
 *   - what a real Asterisk would reject or silently cut (main/manager.c): a
 *     line over AMI_WRITER_MAX_LINE bytes before its CRLF (the server reads
 *     lines into a 1024-byte window), or more than AMI_WRITER_MAX_LINES lines
 *     in one action, Action and ActionID included (AST_MAX_MANHEADERS).
 * Repeated keys (several Variable: lines) are written as repeated lines, in
 * order, never joined.
 */
#ifndef AMI_PROTOCOL_WRITER_H
#define AMI_PROTOCOL_WRITER_H

#include <stdbool.h>
#include <stddef.h>

#include <ami/action.h>

#include "util/buf.h"
#include "util/err.h"

#define AMI_WRITER_MAX_LINE 1022
#define AMI_WRITER_MAX_LINES 128

/* ami_kv_t, AMI_KV and ami_kv(): <ami/action.h>. */

/* Validate only (no output). 0 or -1 with AMI_E_INVALID / AMI_E_LIMIT. */
int ami_action_validate(const char *name, const ami_kv_t *hdrs, size_t n, ami_err_t *err);

/* Validate, then append "Action: name\r\nActionID: id\r\n<hdrs>\r\n" to out.
 * action_id may be NULL (no ActionID line). -1 leaves out untouched; a full
 * out (its limit) is AMI_E_BACKPRESSURE. */
int ami_write_action(ami_buf_t *out, const char *name, const char *action_id,
                     const ami_kv_t *hdrs, size_t n, ami_err_t *err);

/* Header keys whose values must never be logged (Secret, Key, ...). */
bool ami_header_is_secret(const char *key, size_t key_len);

/* Render an action for a log line ("Login ActionID=x Username=u Secret=[redacted]"),
 * truncated to fit out_size. */
void ami_action_describe(char *out, size_t out_size, const char *name, const char *action_id,
                         const ami_kv_t *hdrs, size_t n);

#endif
