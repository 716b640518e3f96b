#define _GNU_SOURCE 1 /* NOLINT(bugprone-reserved-identifier): fopencookie, the rank prefix on stderr */
#include "config.h"

#include "runtime/dist.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "runtime/clock.h"

#ifdef EDMC_HAVE_MPI
#include <mpi.h>
#endif

/* ------------------------------------------------------------------ the launcher's environment */

static int env_int(const char *name, int *out)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < 0 || x > 1 << 24)
        return -1;
    *out = (int)x;
    return 1;
}

int edm_dist_env_read(edm_dist_env *e, edm_status *st)
{
    *e = (edm_dist_env){.rank = 0, .size = 1, .local_rank = 0, .local_size = 1, .launcher = NULL};
    static const struct {
        const char *launcher, *rank, *size, *local_rank, *local_size;
    } kinds[] = {
        {"Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
         "OMPI_COMM_WORLD_LOCAL_SIZE"},
        {"PMI", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
        /* srun's step (the batch script itself is one process: it has SLURM_NTASKS but no step) */
        {"Slurm", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", NULL},
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        int rank = 0, size = 1, lr = 0, ls = 0;
        int hr = env_int(kinds[k].rank, &rank), hs = env_int(kinds[k].size, &size);
        if (hr == 0 || hs == 0)
            continue;
        int hl = env_int(kinds[k].local_rank, &lr);
        int hls = kinds[k].local_size ? env_int(kinds[k].local_size, &ls) : 0;
        if (hr < 0 || hs < 0 || size < 1 || rank >= size)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                            "the launcher's environment is inconsistent: %s=%s, %s=%s (a rank in 0..size-1)",
                            kinds[k].rank, getenv(kinds[k].rank), kinds[k].size, getenv(kinds[k].size));
        if (hl < 0 || hls < 0 || (hls > 0 && (ls < 1 || lr >= ls))) {
            const char *lrv = getenv(kinds[k].local_rank), *lsv = hls ? getenv(kinds[k].local_size) : NULL;
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                            "the launcher's environment is inconsistent: %s=%s%s%s%s%s (the rank on the node: a number "
                            "below the node's ranks)",
                            kinds[k].local_rank, lrv ? lrv : "(unset)", lsv ? ", " : "", lsv ? kinds[k].local_size : "",
                            lsv ? "=" : "", lsv ? lsv : "");
        }
        e->rank = rank;
        e->size = size;
        e->local_rank = hl > 0 ? lr : 0;
        e->local_size = hls > 0 ? ls : 0; /* 0: unknown until the ranks meet */
        e->launcher = kinds[k].launcher;
        return 0;
    }
    return 0;
}

/* ------------------------------------------------------------------ rank prefix on stderr */

typedef struct {
    int fd;
    int at_line_start;
    char prefix[32];
} prefix_cookie;

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Each line goes out in one write() with its prefix, so that lines of ranks
 * sharing the launcher's pipe do not interleave within a line. */
static ssize_t prefix_write(void *cookie, const char *buf, size_t size)
{
    prefix_cookie *c = cookie;
    char out[4096];
    size_t done = 0;
    while (done < size) {
        size_t used = 0;
        if (c->at_line_start) {
            used = strlen(c->prefix);
            memcpy(out, c->prefix, used);
        }
        const char *nl = memchr(buf + done, '\n', size - done);
        size_t len = nl ? (size_t)(nl - (buf + done)) + 1 : size - done;
        if (len > sizeof out - used)
            len = sizeof out - used; /* a very long line: in pieces */
        memcpy(out + used, buf + done, len);
        if (write_all(c->fd, out, used + len) != 0)
            return done ? (ssize_t)done : -1;
        c->at_line_start = buf[done + len - 1] == '\n';
        done += len;
    }
    return (ssize_t)size;
}

static int prefix_close(void *cookie)
{
    free(cookie);
    return 0;
}

/* The one process-wide change: stderr becomes a stream over fd 2 that
 * prefixes lines (the cookie lives as long as the stream; closing the stream
 * frees it). */
FILE *edm_dist_prefix_stderr(int rank)
{
    prefix_cookie *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = STDERR_FILENO;
    c->at_line_start = 1;
    snprintf(c->prefix, sizeof c->prefix, "rank %d: ", rank);
    cookie_io_functions_t io = {.read = NULL, .write = prefix_write, .seek = NULL, .close = prefix_close};
    FILE *f = fopencookie(c, "w", io);
    if (!f) {
        free(c);
        return NULL;
    }
    if (fflush(stderr) != 0 || setvbuf(f, NULL, _IOLBF, 0) != 0) {
        fclose(f);
        return NULL;
    }
    FILE *saved = stderr;
    stderr = f;
    return saved;
}

void edm_dist_unprefix_stderr(FILE *saved)
{
    if (!saved)
        return;
    FILE *f = stderr;
    stderr = saved;
    fclose(f); /* line-buffered: nothing is left in it */
}

/* ------------------------------------------------------------------ MPI */

struct edm_dist {
    int rank, size, local_rank, local_size;
    double timeout;
    int broken;
    int peer_failed;
#ifdef EDMC_HAVE_MPI
    MPI_Comm comm;
    char *send, *recv, *slice; /* the all-reduce's staging, grown on demand */
    int64_t cap;               /* bytes per rank in send/recv */
#endif
};

int edm_dist_rank(const edm_dist *d) { return d->rank; }
int edm_dist_size(const edm_dist *d) { return d->size; }
int edm_dist_local_rank(const edm_dist *d) { return d->local_rank; }
int edm_dist_local_size(const edm_dist *d) { return d->local_size; }
int edm_dist_broken(const edm_dist *d) { return d->broken; }
double edm_dist_timeout(const edm_dist *d) { return d->timeout; }
void edm_dist_set_peer_failed(edm_dist *d, int rank) { d->peer_failed = rank; }
int edm_dist_peer_failed(const edm_dist *d) { return d->peer_failed; }

#ifdef EDMC_HAVE_MPI

int edm_dist_available(void) { return 1; }

static int mpi_fail(edm_dist *d, int err, const char *what, edm_status *st)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, msg, &len) != MPI_SUCCESS)
        snprintf(msg, sizeof msg, "MPI error %d", err);
    d->broken = 1;
    return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s failed: %s", what, msg);
}

/* Waits for a non-blocking collective, at most d->timeout seconds: a rank
 * that died or hangs never answers, and the wait must not last for ever.
 * Polls (MPI_Test) and sleeps between polls, so a waiting rank leaves the
 * core to the ranks that still compute. */
static int wait_for(edm_dist *d, MPI_Request *req, const char *what, edm_status *st)
{
    double t0 = edm_now_seconds();
    for (long polls = 0;; polls++) {
        int done = 0;
        int e = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (e != MPI_SUCCESS)
            return mpi_fail(d, e, what, st);
        if (done)
            return 0;
        if (polls < 200) {
            sched_yield();
            continue;
        }
        double waited = edm_now_seconds() - t0;
        if (waited > d->timeout) {
            d->broken = 1;
            return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC,
                            "%s: no answer from the other ranks for %.0f s: a rank died, hangs or is far behind "
                            "(--rank-timeout=%g); every rank stops",
                            what, waited, d->timeout);
        }
        struct timespec ts = {0, waited < 0.01 ? 20000 : 200000};
        nanosleep(&ts, NULL);
    }
}

edm_dist *edm_dist_open(const edm_dist_env *env, double timeout_s, edm_status *st)
{
    edm_dist *d = calloc(1, sizeof *d);
    if (!d) {
        edm_nomem(st);
        return NULL;
    }
    d->timeout = timeout_s > 0 ? timeout_s : 600;
    d->peer_failed = -1;
    int inited = 0;
    MPI_Initialized(&inited);
    int provided = 0; /* the main thread alone calls MPI; the loader and the kernels have threads of their own */
    if (!inited && MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        free(d);
        edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "MPI_Init failed (launched by %s)", env->launcher);
        return NULL;
    }
    int e = MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
    if (e != MPI_SUCCESS) {
        mpi_fail(d, e, "MPI_Comm_dup", st);
        MPI_Abort(MPI_COMM_WORLD, 1);
        free(d);
        return NULL;
    }
    /* errors come back as codes: a rank reports its own, then the run ends by MPI_Abort */
    if ((e = MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN)) != MPI_SUCCESS ||
        (e = MPI_Comm_rank(d->comm, &d->rank)) != MPI_SUCCESS || (e = MPI_Comm_size(d->comm, &d->size)) != MPI_SUCCESS) {
        mpi_fail(d, e, "MPI's communicator", st);
        edm_dist_close(d, 0, 1);
        return NULL;
    }
    MPI_Comm node;
    if (MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node) == MPI_SUCCESS &&
        MPI_Comm_rank(node, &d->local_rank) == MPI_SUCCESS && MPI_Comm_size(node, &d->local_size) == MPI_SUCCESS) {
        MPI_Comm_free(&node);
    } else { /* the launcher's word for it */
        d->local_rank = env->local_rank;
        d->local_size = env->local_size > 0 ? env->local_size : 1;
    }
    if (d->rank != env->rank || d->size != env->size) {
        edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                 "%s says rank %d of %d, MPI says rank %d of %d: is edmc started by the launcher of the MPI it "
                 "was built with?",
                 env->launcher, env->rank, env->size, d->rank, d->size);
        edm_dist_close(d, 0, 2);
        return NULL;
    }
    return d;
}

void edm_dist_close(edm_dist *d, int ok, int exit_code)
{
    if (!d)
        return;
    if (!ok && d->size > 1) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, exit_code ? exit_code : 1);
    }
    MPI_Comm_free(&d->comm);
    MPI_Finalize();
    free(d->send);
    free(d->recv);
    free(d->slice);
    free(d);
}

int edm_dist_allgather(edm_dist *d, const void *mine, size_t bytes, void *all, const char *what, edm_status *st)
{
    if (d->broken)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: the ranks are out of step already", what);
    if (bytes > (size_t)1 << 30)
        return edm_fail(st, EDM_ERR_LIMIT, EDM_NO_LOC, "%s: %zu bytes per rank", what, bytes);
    MPI_Request req;
    int e = MPI_Iallgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, d->comm, &req);
    return e != MPI_SUCCESS ? mpi_fail(d, e, what, st) : wait_for(d, &req, what, st);
}

int edm_dist_bcast(edm_dist *d, void *buf, size_t bytes, int root, const char *what, edm_status *st)
{
    if (d->broken)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: the ranks are out of step already", what);
    if (bytes > (size_t)1 << 30)
        return edm_fail(st, EDM_ERR_LIMIT, EDM_NO_LOC, "%s: %zu bytes", what, bytes);
    MPI_Request req;
    int e = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, d->comm, &req);
    return e != MPI_SUCCESS ? mpi_fail(d, e, what, st) : wait_for(d, &req, what, st);
}

/* Slices of at most this many floats per rank and round: MPI counts are int. */
#define SLICE_MAX ((int64_t)1 << 24)

/* The sum of slice k over the ranks, in rank order: recv holds P blocks of c elements. */
#define SUM_SLICE(T)                                                                                                   \
    do {                                                                                                               \
        const T *in = (const T *)d->recv; /* NOLINT(bugprone-macro-parentheses): T is a type */                       \
        T *out = (T *)d->slice;           /* NOLINT(bugprone-macro-parentheses) */                                     \
        for (int64_t k = 0; k < c; k++) {                                                                              \
            T acc = in[k];                                                                                             \
            for (int64_t r = 1; r < P; r++)                                                                            \
                acc += in[r * c + k];                                                                                  \
            out[k] = acc;                                                                                              \
        }                                                                                                              \
    } while (0)

static int allreduce(edm_dist *d, void *buf_, int64_t n, int dbl, const char *what, edm_status *st)
{
    if (d->broken)
        return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "%s: the ranks are out of step already", what);
    if (d->size == 1 || n <= 0)
        return 0;
    char *buf = buf_;
    size_t es = dbl ? sizeof(double) : sizeof(float);
    MPI_Datatype type = dbl ? MPI_DOUBLE : MPI_FLOAT;
    int64_t P = d->size;
    /* rounds of P slices of c elements: rank r sums slice r of every rank, in rank order */
    int64_t c = (n + P - 1) / P;
    if (c > SLICE_MAX)
        c = SLICE_MAX;
    if ((int64_t)es * c > d->cap) {
        size_t bytes = es * (size_t)c;
        char *s = realloc(d->send, bytes * (size_t)P);
        if (s)
            d->send = s;
        char *r = realloc(d->recv, bytes * (size_t)P);
        if (r)
            d->recv = r;
        char *l = realloc(d->slice, bytes);
        if (l)
            d->slice = l;
        if (!s || !r || !l)
            return edm_nomem(st);
        d->cap = (int64_t)bytes;
    }
    for (int64_t base = 0; base < n; base += c * P) {
        int64_t round = n - base < c * P ? n - base : c * P;
        memcpy(d->send, buf + (size_t)base * es, es * (size_t)round);
        memset(d->send + (size_t)round * es, 0, es * (size_t)(c * P - round));
        MPI_Request req;
        int e = MPI_Ialltoall(d->send, (int)c, type, d->recv, (int)c, type, d->comm, &req);
        if (e != MPI_SUCCESS)
            return mpi_fail(d, e, what, st);
        if (wait_for(d, &req, what, st) != 0)
            return -1;
        if (dbl)
            SUM_SLICE(double);
        else
            SUM_SLICE(float);
        e = MPI_Iallgather(d->slice, (int)c, type, d->send, (int)c, type, d->comm, &req);
        if (e != MPI_SUCCESS)
            return mpi_fail(d, e, what, st);
        if (wait_for(d, &req, what, st) != 0)
            return -1;
        memcpy(buf + (size_t)base * es, d->send, es * (size_t)round);
    }
    return 0;
}

int edm_dist_allreduce_f32(edm_dist *d, float *buf, int64_t n, const char *what, edm_status *st)
{
    return allreduce(d, buf, n, 0, what, st);
}

int edm_dist_allreduce_f64(edm_dist *d, double *buf, int64_t n, const char *what, edm_status *st)
{
    return allreduce(d, buf, n, 1, what, st);
}

#else /* no MPI */

int edm_dist_available(void) { return 0; }

edm_dist *edm_dist_open(const edm_dist_env *env, double timeout_s, edm_status *st)
{
    (void)timeout_s;
    edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
             "started as rank %d of %d by %s, but this edmc was built without MPI (install libopenmpi-dev, "
             "configure and build again)",
             env->rank, env->size, env->launcher ? env->launcher : "a launcher");
    return NULL;
}

void edm_dist_close(edm_dist *d, int ok, int exit_code)
{
    (void)ok;
    (void)exit_code;
    free(d);
}

static int no_mpi(edm_status *st)
{
    return edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC, "built without MPI");
}

int edm_dist_allgather(edm_dist *d, const void *mine, size_t bytes, void *all, const char *what, edm_status *st)
{
    (void)d, (void)mine, (void)bytes, (void)all, (void)what;
    return no_mpi(st);
}

int edm_dist_bcast(edm_dist *d, void *buf, size_t bytes, int root, const char *what, edm_status *st)
{
    (void)d, (void)buf, (void)bytes, (void)root, (void)what;
    return no_mpi(st);
}

int edm_dist_allreduce_f32(edm_dist *d, float *buf, int64_t n, const char *what, edm_status *st)
{
    (void)d, (void)buf, (void)n, (void)what;
    return no_mpi(st);
}

int edm_dist_allreduce_f64(edm_dist *d, double *buf, int64_t n, const char *what, edm_status *st)
{
    (void)d, (void)buf, (void)n, (void)what;
    return no_mpi(st);
}

#endif

int edm_dist_agree(edm_dist *d, int failed, int stop, int *first_failed, int *any_stop, const char *what,
                   edm_status *st)
{
    int mine[2] = {failed ? 1 : 0, stop ? 1 : 0};
    int *all = malloc(sizeof(int) * 2 * (size_t)d->size);
    if (!all)
        return edm_nomem(st);
    int rc = edm_dist_allgather(d, mine, sizeof mine, all, what, st);
    *first_failed = -1;
    *any_stop = 0;
    for (size_t r = 0; rc == 0 && r < (size_t)d->size; r++) {
        if (all[2 * r] && *first_failed < 0)
            *first_failed = (int)r;
        *any_stop |= all[2 * r + 1];
    }
    free(all);
    return rc;
}

static int host_allreduce(edm_collective *c, void *buf, int64_t n, const char *what, edm_status *st)
{
    return edm_dist_allreduce_f32(c->ctx, buf, n, what, st);
}

static int host_allreduce64(edm_collective *c, void *buf, int64_t n, const char *what, edm_status *st)
{
    return edm_dist_allreduce_f64(c->ctx, buf, n, what, st);
}

edm_collective edm_dist_host_collective(edm_dist *d)
{
    return (edm_collective){
        .name = "mpi", .device = 0, .allreduce_sum_f32 = host_allreduce, .allreduce_sum_f64 = host_allreduce64, .ctx = d};
}

/* ------------------------------------------------------------------ CPU threads */

typedef struct {
    char host[256]; /* the node's name */
    cpu_set_t cpus;
} rank_cpus;

int edm_dist_cpu_threads(edm_dist *d, int *threads, edm_status *st)
{
    rank_cpus mine;
    memset(&mine, 0, sizeof mine);
    if (gethostname(mine.host, sizeof mine.host - 1) != 0) /* every rank must reach the all-gather: a nameless node */
        mine.host[0] = '\0';
    if (sched_getaffinity(0, sizeof mine.cpus, &mine.cpus) != 0 || CPU_COUNT(&mine.cpus) < 1) {
        long n = sysconf(_SC_NPROCESSORS_ONLN); /* no affinity to read: every core of the node */
        CPU_ZERO(&mine.cpus);
        for (long c = 0; c < (n > 0 ? n : 1) && c < CPU_SETSIZE; c++)
            CPU_SET((int)c, &mine.cpus);
    }
    rank_cpus *all = malloc(sizeof *all * (size_t)d->size);
    if (!all)
        return edm_nomem(st);
    int rc = edm_dist_allgather(d, &mine, sizeof mine, all, "the ranks' CPU affinity", st);
    int sharing = 0;
    for (int r = 0; rc == 0 && r < d->size; r++) {
        cpu_set_t both;
        CPU_AND(&both, &mine.cpus, &all[r].cpus);
        sharing += strcmp(all[r].host, mine.host) == 0 && CPU_COUNT(&both) > 0;
    }
    free(all);
    if (rc == 0) {
        int per = CPU_COUNT(&mine.cpus) / (sharing > 0 ? sharing : 1);
        *threads = per > 0 ? per : 1;
    }
    return rc;
}
