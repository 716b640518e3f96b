/* The emulating driver's compiler side (see emu.h).
 *
 * A module: the generated source, preceded by an #include of cuda_emu.h
 * (its path baked in at build time: EDM_EMU_HEADER) and followed by a table
 * with one EDM_EMU_KERNEL(name, barrier) per `__global__` function, written
 * to a .cpp file and compiled with `$EDMC_EMU_CXX` (default g++) -std=c++17
 * -O1 -ffp-contract=off -shared -fPIC.  The .so is kept in the kernel cache
 * ($EDMC_CACHE_DIR, else $XDG_CACHE_HOME/edmc, else ~/.cache/edmc; `off`: a
 * temporary folder, removed after loading) as emu-<key>.so, key = FNV-1a 64
 * of the header, the source and the flags, written under a temporary name
 * and renamed, so concurrent processes never load half a file. */

#include "tests/emu/emu.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef EDM_EMU_HEADER
#error "EDM_EMU_HEADER (the path of tests/emu/cuda_emu.h) must be defined"
#endif

#define EMU_FLAGS "-std=c++17 -O1 -ffp-contract=off -fno-strict-aliasing -shared -fPIC -w"

extern char **environ;

typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}
static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static uint64_t fnv(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int is_ident(char c) { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

/* The table of kernels: every "__global__ void [__launch_bounds__(..)] NAME(...) {...}",
 * with whether its body calls __syncthreads. */
static int kernel_table(const char *src, buf *out, int *count, char *err, size_t errsize)
{
    static const char key[] = "__global__ void";
    *count = 0;
    puts_(out, "\nextern \"C\" {\n__attribute__((visibility(\"default\"))) extern const edm_emu_kernel "
               "edm_emu_kernels[] = {\n");
    for (const char *p = strstr(src, key); p; p = strstr(p, key)) {
        p += sizeof key - 1;
        while (*p == ' ' || *p == '\n')
            p++;
        if (strncmp(p, "__launch_bounds__", 17) == 0) {
            p = strchr(p, ')');
            if (!p)
                break;
            p++;
            while (*p == ' ')
                p++;
        }
        const char *name = p;
        while (is_ident(*p))
            p++;
        size_t len = (size_t)(p - name);
        if (len == 0 || *p != '(') {
            snprintf(err, errsize, "emulator: cannot read a kernel's name at \"%.40s\"", name);
            return -1;
        }
        const char *open = strchr(p, '{');
        if (!open) {
            snprintf(err, errsize, "emulator: kernel %.*s has no body", (int)len, name);
            return -1;
        }
        int depth = 0;
        const char *q = open;
        for (; *q; q++) {
            if (*q == '{')
                depth++;
            else if (*q == '}' && --depth == 0)
                break;
        }
        if (!*q) {
            snprintf(err, errsize, "emulator: kernel %.*s: unbalanced braces", (int)len, name);
            return -1;
        }
        int barrier = 0;
        for (const char *s = open; s < q && !barrier; s++)
            barrier = strncmp(s, "__syncthreads", 13) == 0;
        char line[256];
        snprintf(line, sizeof line, "    EDM_EMU_KERNEL(%.*s, %d),\n", (int)len, name, barrier);
        puts_(out, line);
        (*count)++;
        p = q;
    }
    char tail[128];
    snprintf(tail, sizeof tail, "};\n__attribute__((visibility(\"default\"))) extern const int edm_emu_nkernels = %d;\n}\n",
             *count);
    puts_(out, tail);
    return out->oom ? (snprintf(err, errsize, "emulator: out of memory"), -1) : 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        put(&b, chunk, n);
    int bad = ferror(f) || b.oom;
    fclose(f);
    if (bad) {
        free(b.p);
        return NULL;
    }
    if (!b.p)
        b.p = calloc(1, 1);
    *len = b.len;
    return b.p;
}

static int write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    int rc = fclose(f);
    return w == len && rc == 0 ? 0 : -1;
}

static int mkdirs(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return -1;
    for (char *s = tmp + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *s = '/';
        }
    return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* The cache folder (created), or "" when EDMC_CACHE_DIR=off. */
static int cache_dir(char *out, size_t size)
{
    const char *d = getenv("EDMC_CACHE_DIR");
    int n;
    if (d && strcmp(d, "off") == 0) {
        out[0] = '\0';
        return 0;
    }
    if (d && *d)
        n = snprintf(out, size, "%s", d);
    else if ((d = getenv("XDG_CACHE_HOME")) && *d)
        n = snprintf(out, size, "%s/edmc", d);
    else if ((d = getenv("HOME")) && *d)
        n = snprintf(out, size, "%s/.cache/edmc", d);
    else
        n = snprintf(out, size, "/tmp/edmc-cache-%ld", (long)getuid());
    if (n < 0 || (size_t)n >= size)
        return -1;
    return mkdirs(out);
}

/* Runs the compiler on cpp (with `-include include` when not NULL; as a
 * precompiled header when pch); 0, or -1 with its first lines in err. */
static int compile(const char *cpp, const char *so, const char *log, const char *include, int pch, char *err,
                   size_t errsize)
{
    const char *cxx = getenv("EDMC_EMU_CXX");
    if (!cxx || !*cxx)
        cxx = "g++";
    char flags[] = EMU_FLAGS;
    char *argv[32];
    int argc = 0;
    argv[argc++] = (char *)cxx;
    for (char *s = strtok(flags, " "); s && argc < 24; s = strtok(NULL, " "))
        argv[argc++] = s;
    if (include) {
        argv[argc++] = (char *)"-include";
        argv[argc++] = (char *)include;
    }
    if (pch) {
        argv[argc++] = (char *)"-x";
        argv[argc++] = (char *)"c++-header";
    }
    argv[argc++] = (char *)"-o";
    argv[argc++] = (char *)so;
    argv[argc++] = (char *)cpp;
    argv[argc] = NULL;
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0) {
        snprintf(err, errsize, "emulator: posix_spawn_file_actions_init failed");
        return -1;
    }
    int rc = posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (rc == 0)
        rc = posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = 0;
    if (rc == 0)
        rc = posix_spawnp(&pid, cxx, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        snprintf(err, errsize, "emulator: cannot run %s: %s", cxx, strerror(rc));
        return -1;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            snprintf(err, errsize, "emulator: waitpid: %s", strerror(errno));
            return -1;
        }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    size_t len = 0;
    char *text = read_file(log, &len);
    snprintf(err, errsize, "emulator: %s failed to compile %s (status %d):\n%.1500s", cxx, cpp,
             WIFEXITED(status) ? WEXITSTATUS(status) : -1, text ? text : "(no log)");
    free(text);
    return -1;
}

/* The header beside its precompiled form in dir (built once per header and
 * flags): path receives the header's path for -include; without a usable
 * precompiled header g++ reads the header itself, so a failure here only
 * costs time. */
static void header_path(const char *dir, const char *header, size_t hlen, char *path, size_t size)
{
    uint64_t key = fnv(fnv(0xcbf29ce484222325ULL, header, hlen), EMU_FLAGS, sizeof EMU_FLAGS);
    snprintf(path, size, "%s/emu-h-%016llx.h", dir, (unsigned long long)key);
}

static int header_copy(const char *dir, const char *header, size_t hlen, char *path, size_t size)
{
    char tmp[8192], gch[8192], log[8192], err[256];
    header_path(dir, header, hlen, path, size);
    snprintf(gch, sizeof gch, "%s.gch", path);
    if (access(path, R_OK) != 0) {
        snprintf(tmp, sizeof tmp, "%s.%ld", path, (long)getpid());
        if (write_file(tmp, header, hlen) != 0 || rename(tmp, path) != 0) {
            unlink(tmp);
            return -1;
        }
    }
    if (access(gch, R_OK) != 0) {
        int n1 = snprintf(tmp, sizeof tmp, "%s.%ld", gch, (long)getpid());
        int n2 = snprintf(log, sizeof log, "%s.%ld.log", gch, (long)getpid());
        if (n1 < 0 || n2 < 0 || (size_t)n1 >= sizeof tmp || (size_t)n2 >= sizeof log)
            return 0;
        if (compile(path, tmp, log, NULL, 1, err, sizeof err) != 0 || rename(tmp, gch) != 0)
            unlink(tmp);
        unlink(log);
    }
    return 0;
}

static int open_module(const char *so, emu_module *m, char *err, size_t errsize)
{
    m->lib = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!m->lib) {
        const char *why = dlerror();
        snprintf(err, errsize, "emulator: dlopen %s: %s", so, why ? why : "?");
        return -1;
    }
    void *k = dlsym(m->lib, "edm_emu_kernels"), *n = dlsym(m->lib, "edm_emu_nkernels"),
         *launch = dlsym(m->lib, "edm_emu_launch");
    if (!k || !n || !launch) {
        snprintf(err, errsize, "emulator: %s lacks its kernel table", so);
        dlclose(m->lib);
        m->lib = NULL;
        return -1;
    }
    m->k = k;
    m->n = *(const int *)n;
    memcpy(&m->launch, &launch, sizeof m->launch);
    return 0;
}

int emu_module_load(const char *source, emu_module *m, char *err, size_t errsize)
{
    memset(m, 0, sizeof *m);
    double t0 = now();
    buf table = {0}, text = {0};
    int count = 0, rc = -1;
    size_t hlen = 0;
    char *header = read_file(EDM_EMU_HEADER, &hlen);
    char dir[4096], tmpdir[64] = "", so[4300] = "", cpp[4300] = "", log[4300] = "", tmp_so[4300] = "";
    if (!header) {
        snprintf(err, errsize, "emulator: cannot read its header %s: %s", EDM_EMU_HEADER, strerror(errno));
        goto done;
    }
    if (kernel_table(source, &table, &count, err, errsize) != 0)
        goto done;
    uint64_t key = 0xcbf29ce484222325ULL;
    key = fnv(key, header, hlen);
    key = fnv(key, source, strlen(source));
    key = fnv(key, table.p, table.len);
    key = fnv(key, EMU_FLAGS, sizeof EMU_FLAGS);
    if (cache_dir(dir, sizeof dir) != 0) {
        snprintf(err, errsize, "emulator: no cache folder (EDMC_CACHE_DIR, XDG_CACHE_HOME, HOME): %s", strerror(errno));
        goto done;
    }
    if (!dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/edmc-emu.XXXXXX", t && *t && strlen(t) < 40 ? t : "/tmp");
        if (!mkdtemp(tmpdir)) {
            snprintf(err, errsize, "emulator: mkdtemp %s: %s", tmpdir, strerror(errno));
            tmpdir[0] = '\0';
            goto done;
        }
        snprintf(dir, sizeof dir, "%s", tmpdir);
    }
    snprintf(so, sizeof so, "%s/emu-%016llx.so", dir, (unsigned long long)key);
    if (access(so, R_OK) == 0 && open_module(so, m, err, errsize) == 0) {
        m->from_cache = 1;
        rc = 0;
        goto done;
    }
    snprintf(cpp, sizeof cpp, "%s/emu-%016llx.%ld.cpp", dir, (unsigned long long)key, (long)getpid());
    snprintf(log, sizeof log, "%s/emu-%016llx.%ld.log", dir, (unsigned long long)key, (long)getpid());
    snprintf(tmp_so, sizeof tmp_so, "%s/emu-%016llx.%ld.so", dir, (unsigned long long)key, (long)getpid());
    char hpath[4400];
    if (header_copy(dir, header, hlen, hpath, sizeof hpath) != 0)
        snprintf(hpath, sizeof hpath, "%s", EDM_EMU_HEADER);
    puts_(&text, "#line 1 \"generated.cu\"\n");
    puts_(&text, source);
    put(&text, table.p, table.len);
    if (text.oom) {
        snprintf(err, errsize, "emulator: out of memory");
        goto done;
    }
    if (write_file(cpp, text.p, text.len) != 0) {
        snprintf(err, errsize, "emulator: cannot write %s: %s", cpp, strerror(errno));
        goto done;
    }
    rc = compile(cpp, tmp_so, log, hpath, 0, err, errsize);
    if (rc == 0 && rename(tmp_so, so) != 0) {
        snprintf(err, errsize, "emulator: rename %s: %s", tmp_so, strerror(errno));
        rc = -1;
    }
    if (rc == 0) {
        unlink(cpp);
        unlink(log);
        rc = open_module(so, m, err, errsize);
    } else {
        unlink(tmp_so); /* the .cpp and the log stay for a look */
    }
done:
    if (tmpdir[0]) { /* EDMC_CACHE_DIR=off: nothing stays (a loaded library stays mapped) */
        char h[4400];
        if (header) {
            header_path(tmpdir, header, hlen, h, sizeof h);
            unlink(h);
            strncat(h, ".gch", sizeof h - strlen(h) - 1);
            unlink(h);
        }
        unlink(so);
        unlink(cpp);
        unlink(log);
        rmdir(tmpdir);
    }
    if (rc == 0 && m->n != count) {
        snprintf(err, errsize, "emulator: %d kernels in the table, %d in the source", m->n, count);
        emu_module_unload(m);
        rc = -1;
    }
    m->seconds = now() - t0;
    free(header);
    free(table.p);
    free(text.p);
    return rc;
}

void emu_module_unload(emu_module *m)
{
    if (m->lib)
        dlclose(m->lib);
    memset(m, 0, sizeof *m);
}

const emu_kernel *emu_module_find(const emu_module *m, const char *name)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->k[i].name, name) == 0)
            return &m->k[i];
    return NULL;
}
