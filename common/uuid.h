/*
 * uuid.h — the textual UUID check used before an id from the network goes
 * near a query or a Redis key.
 *
 *   if (!uuid_is_valid(id)) return reply_error(404, "not_found");
 */
#ifndef CA_UUID_H
#define CA_UUID_H

#include <stdbool.h>

/* True for 8-4-4-4-12 hexadecimal digits (either case) with dashes, as
 * PostgreSQL prints a uuid; false for NULL and anything else (no braces, no
 * URN prefix, no dash-less form). */
bool uuid_is_valid(const char *s);

#endif
