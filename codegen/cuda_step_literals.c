/* A grouped step's literals made arguments (see cuda_step_literals.h). */
#include "config.h"

#include "codegen/cuda_step_literals.h"

#include <ctype.h>
#include <string.h>

static int ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* The end of the number that starts at s (a digit): digits, a point and
 * digits, an exponent; *real says whether it had a point or an exponent. */
static const char *number_end(const char *s, int *real)
{
    *real = 0;
    while (isdigit((unsigned char)*s))
        s++;
    if (*s == '.') {
        *real = 1;
        s++;
        while (isdigit((unsigned char)*s))
            s++;
    }
    if ((*s == 'e' || *s == 'E') &&
        (isdigit((unsigned char)s[1]) || ((s[1] == '+' || s[1] == '-') && isdigit((unsigned char)s[2])))) {
        *real = 1;
        s += 2;
        while (isdigit((unsigned char)*s))
            s++;
    }
    return s;
}

void edm_cuda_step_literals(const char *text, sbuf *out, sbuf *ints, int *nints, sbuf *floats, int *nfloats)
{
    const char *p = text;
    while (*p) {
        if (p[0] == '/' && p[1] == '*') { /* a comment, as it is */
            const char *e = strstr(p + 2, "*/");
            size_t n = e ? (size_t)(e + 2 - p) : strlen(p);
            sb_putn(out, p, n);
            p += n;
            continue;
        }
        if (ident_char(*p) && !isdigit((unsigned char)*p)) { /* an identifier, digits and all */
            const char *e = p;
            while (ident_char(*e))
                e++;
            sb_putn(out, p, (size_t)(e - p));
            p = e;
            continue;
        }
        if (!isdigit((unsigned char)*p) || (p > text && p[-1] == '.')) {
            sb_putn(out, p, 1);
            p++;
            continue;
        }
        int real;
        const char *e = number_end(p, &real);
        const char *suffix = e;
        while (ident_char(*e))
            e++;
        size_t digits = (size_t)(suffix - p), all = (size_t)(e - p);
        int index = !real && all == digits + 3 && strncmp(suffix, "_ix", 3) == 0 &&
                    !(digits == 1 && (p[0] == '0' || p[0] == '1'));
        int f32 = real && all == digits + 1 && *suffix == 'f' && !(digits == 3 && (strncmp(p, "0.0", 3) == 0 ||
                                                                                   strncmp(p, "1.0", 3) == 0));
        if (index) {
            sb_printf(out, "P.k_[%d]", (*nints)++);
            sb_putn(ints, p, digits);
            sb_puts(ints, ", ");
        } else if (f32) {
            sb_printf(out, "P.f_[%d]", (*nfloats)++);
            sb_putn(floats, p, all);
            sb_puts(floats, ", ");
        } else { /* 256, 0x7f800000U, 2.0 (a double), 0_ix: as they are */
            sb_putn(out, p, all);
        }
        p = e;
    }
}
