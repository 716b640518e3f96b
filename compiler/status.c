#include "config.h"

#include "compiler/status.h"

#include <stdio.h>
#include <string.h>

void edm_status_init(edm_status *st)
{
    memset(st, 0, sizeof *st);
    st->loc = EDM_NO_LOC;
}

int edm_vfail(edm_status *st, edm_code code, edm_loc loc, const char *fmt, va_list ap)
{
    st->code = code;
    st->loc = loc;
    st->nnotes = 0;
    vsnprintf(st->msg, sizeof st->msg, fmt, ap);
    return -1;
}

int edm_fail(edm_status *st, edm_code code, edm_loc loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    edm_vfail(st, code, loc, fmt, ap);
    va_end(ap);
    return -1;
}

void edm_note_add(edm_status *st, edm_loc loc, const char *fmt, ...)
{
    if (st->nnotes >= EDM_STATUS_NOTES)
        return;
    edm_note *n = &st->notes[st->nnotes];
    n->loc = loc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->msg, sizeof n->msg, fmt, ap);
    va_end(ap);
    /* the same note twice in a row (deep recursion) says nothing new */
    const edm_note *prev = st->nnotes > 0 ? &st->notes[st->nnotes - 1] : NULL;
    if (prev && prev->loc.file == loc.file && prev->loc.line == loc.line && prev->loc.col == loc.col &&
        strcmp(prev->msg, n->msg) == 0)
        return;
    st->nnotes++;
}

void edm_status_prefix(edm_status *st, const char *fmt, ...)
{
    char joined[EDM_STATUS_MSG];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(joined, sizeof joined, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t used = (size_t)n < sizeof joined ? (size_t)n : sizeof joined - 1;
    /* append ": " and the old message, truncating to the buffer */
    const char *parts[2] = {": ", st->msg};
    for (int p = 0; p < 2; p++) {
        size_t len = strlen(parts[p]);
        if (len > sizeof joined - 1 - used)
            len = sizeof joined - 1 - used;
        memcpy(joined + used, parts[p], len);
        used += len;
    }
    joined[used] = '\0';
    memcpy(st->msg, joined, used + 1);
}

int edm_nomem(edm_status *st)
{
    return edm_fail(st, EDM_ERR_NOMEM, EDM_NO_LOC, "out of memory");
}
