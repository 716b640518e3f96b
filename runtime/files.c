#include "config.h"

#include "runtime/files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int edm_make_dirs(const char *path, edm_status *st)
{
    char *p = strdup(path);
    if (!p)
        return edm_nomem(st);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        int last = *s == '\0';
        if (*s != '/' && !last)
            continue;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot create the folder: %s", p, strerror(errno));
        if (last || rc != 0)
            break;
        *s = '/';
    }
    free(p);
    return rc;
}

char *edm_absolute_path(const char *path)
{
    if (path[0] == '/')
        return strdup(path);
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        return NULL;
    while (path[0] == '.' && path[1] == '/')
        path += 2;
    size_t n = strlen(cwd) + strlen(path) + 2;
    char *abs = malloc(n);
    if (abs)
        snprintf(abs, n, "%s/%s", cwd, path);
    return abs;
}

/* fsync of the folder holding path, so a rename into it is durable. */
static int sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if ((size_t)(slash - path) >= sizeof dir)
        return 0; /* too long to name here; the file itself is synced */
    else
        snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    /* some filesystems cannot sync a folder; the data itself is synced */
    if (rc != 0 && (err == EINVAL || err == ENOTSUP))
        rc = 0;
    errno = err;
    return rc;
}

/* Fills, flushes, syncs and closes the temporary file fd. */
static int fill_temp(int fd, edm_write_body body, void *ctx, char *err, size_t errsize)
{
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        snprintf(err, errsize, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    int rc = body(fp, ctx, err, errsize);
    if (rc != 0 && !err[0])
        snprintf(err, errsize, "%s", strerror(errno));
    if (rc == 0 && (fflush(fp) != 0 || fsync(fileno(fp)) != 0)) {
        snprintf(err, errsize, "%s", strerror(errno));
        rc = -1;
    }
    if (fclose(fp) != 0 && rc == 0) {
        snprintf(err, errsize, "%s", strerror(errno));
        rc = -1;
    }
    return rc;
}

int edm_write_atomic(const char *path, edm_write_body body, void *ctx, edm_status *st)
{
    size_t len = strlen(path) + 48;
    char *tmp = malloc(len);
    if (!tmp)
        return edm_nomem(st);
    /* not mkstemp: its 0600 would survive the rename, and a run's snapshots
     * must follow the umask like any other tool's output (0644 by default) */
    int fd = -1;
    for (unsigned attempt = 0; fd < 0 && attempt < 100; attempt++) {
        snprintf(tmp, len, "%s.tmp.%ld.%u", path, (long)getpid(), attempt);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        int err = errno;
        free(tmp);
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot create a temporary file: %s", path, strerror(err));
    }
    char err[512] = "";
    int rc = 0;
    if (fill_temp(fd, body, ctx, err, sizeof err) != 0) {
        remove(tmp);
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot write it: %s", path, err);
    } else if (rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot rename %s over it: %s", path, tmp, strerror(e));
    } else if (sync_parent(path) != 0) {
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot sync its folder: %s", path, strerror(errno));
    }
    free(tmp);
    return rc;
}

void edm_model_dirs_get(edm_model_dirs *d)
{
    d->n = 0;
    const char *env = getenv("EDMC_MODELS");
    if (env && env[0])
        snprintf(d->buf[d->n++], sizeof d->buf[0], "%s", env);
    snprintf(d->buf[d->n++], sizeof d->buf[0], "models");
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(d->buf[d->n++], sizeof d->buf[0], "%.4080s/models", exe);
        }
    }
    for (int i = 0; i < d->n; i++)
        d->dir[i] = d->buf[i];
}

void edm_folder_of(const char *path, char *out, size_t size)
{
    snprintf(out, size, "%s", path);
    char *slash = strrchr(out, '/');
    if (slash == out)
        out[1] = '\0'; /* "/model.edm": the root */
    else if (slash)
        *slash = '\0';
    else
        snprintf(out, size, ".");
}

typedef struct {
    const void *p;
    size_t n;
} bytes_ctx;

static int write_bytes_body(FILE *fp, void *ctx, char *err, size_t errsize)
{
    const bytes_ctx *b = ctx;
    (void)err;
    (void)errsize; /* errno tells */
    return b->n && fwrite(b->p, 1, b->n, fp) != b->n ? -1 : 0;
}

int edm_write_bytes_atomic(const char *path, const void *data, size_t len, edm_status *st)
{
    bytes_ctx b = {data, len};
    return edm_write_atomic(path, write_bytes_body, &b, st);
}
