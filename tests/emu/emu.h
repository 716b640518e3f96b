/* The emulating driver's compiler side (tests/emu/emu.c): generated CUDA C
 * compiled on the host as C++ with tests/emu/cuda_emu.h, loaded with dlopen,
 * its kernels found by name and launched over their grids.  Used by
 * tests/fakecuda/fake_cuda.c when built with -DFAKE_CUDA_EMULATE (the
 * emulator, tests/emu/cuda_emu.so). */
#ifndef EDMC_TESTS_EMU_H
#define EDMC_TESTS_EMU_H

#include <stddef.h>

/* One kernel of a compiled module: the C layout of cuda_emu.h's edm_emu_kernel. */
typedef struct {
    const char *name;
    void (*tramp)(void **);
    int (*nparams)(void);
    void (*sizes)(unsigned *);
    int barrier;
} emu_kernel;

typedef int (*emu_launch_fn)(const emu_kernel *k, const unsigned grid[3], const unsigned block[3], void **args,
                             char *err, size_t errsize);

typedef struct {
    void *lib;
    const emu_kernel *k;
    int n;
    emu_launch_fn launch;
    int from_cache;
    double seconds;
} emu_module;

/* Compiles (or finds in the cache) and loads source; 0, or -1 with the
 * reason (the compiler's first lines) in err. */
int emu_module_load(const char *source, emu_module *m, char *err, size_t errsize);
void emu_module_unload(emu_module *m);
/* The kernel called name, or NULL. */
const emu_kernel *emu_module_find(const emu_module *m, const char *name);

#endif
