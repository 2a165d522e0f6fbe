/* uuid — the textual UUID check. See uuid.h. */
#include "uuid.h"

#include <stddef.h>

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool uuid_is_valid(const char *s)
{
    if (s == NULL) {
        return false;
    }
    for (int i = 0; i < 36; i++) {
        if (s[i] == '\0') {
            return false;
        }
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return false;
            }
        } else if (!is_hex(s[i])) {
            return false;
        }
    }
    return s[36] == '\0';
}
