/* A growing text buffer for the code generators: appends never fail on the
 * spot; an allocation failure sets `oom`, later appends do nothing, and the
 * caller checks `oom` once when the text is done. */
#ifndef EDMC_CODEGEN_TEXT_H
#define EDMC_CODEGEN_TEXT_H

#include <stddef.h>

typedef struct {
    char *p; /* NUL-terminated when non-NULL */
    size_t len, cap;
    int oom;
} sbuf;

void sb_putn(sbuf *b, const char *s, size_t n);
void sb_puts(sbuf *b, const char *s);
void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
