/* Libraries opened at run time (dynlib.h). */
#include "config.h"

#include "runtime/dynlib.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

void *edm_dynlib_open(const char *env, const char *fallback, const char *what, edm_status *st)
{
    const char *name = getenv(env);
    if (!name || !*name)
        name = fallback;
    void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char *why = dlerror();
        edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "no %s (%s not found%s%s)", what, name, why ? ": " : "",
                 why ? why : "");
    }
    return lib;
}

/* memcpy: ISO C has no cast from void * to a function pointer */
int edm_dynlib_resolve(void *lib, const char *what, const char *name, void *fnptr, size_t fnsize, edm_status *st)
{
    void *sym = dlsym(lib, name);
    if (!sym)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%s lacks %s (too old?)", what, name);
    memcpy(fnptr, &sym, fnsize);
    return 0;
}
