/* Training beyond one process: the ranks of a data-parallel run and their
 * collectives (docs/distributed.md).
 *
 * The launcher (mpirun, srun) starts one process per rank; edm_dist_env_read
 * says from its environment whether this process is one of several, and
 * edm_dist_open joins them (MPI: Open MPI from Debian, linked at build time;
 * absent when configure found no MPI, and then a multi-rank launch fails with
 * a clear error).  Every collective here gives the same bits on every rank and
 * does not depend on timing: sums run in rank order.  Every wait is bounded:
 * a rank that died or hangs makes the others fail after the timeout, naming
 * the collective, instead of waiting for ever.
 *
 * The gradient all-reduce is a table of functions (edm_collective) so that the
 * trainer calls one thing between accumulation and the Adam step: MPI over
 * host buffers for CPU ranks (and CUDA ranks, staged through the host), NCCL
 * over device buffers where it is available (runtime/dist_nccl.c, opened at
 * run time like the CUDA driver). */
#ifndef EDMC_DIST_H
#define EDMC_DIST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "compiler/status.h"

/* What the launcher's environment says about this process. */
typedef struct {
    int rank, size;             /* 0 and 1 when started alone */
    int local_rank, local_size; /* on this node (one rank per GPU: the GPU's index) */
    const char *launcher;       /* "Open MPI", "Slurm", "PMI", or NULL when alone */
} edm_dist_env;

/* Open MPI's OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}; PMI's
 * PMI_RANK + PMI_SIZE (MPICH's Hydra, with MPI_LOCALRANKID and
 * MPI_LOCALNRANKS); or Slurm's SLURM_PROCID + SLURM_STEP_NUM_TASKS (the tasks
 * of the srun step) and SLURM_LOCALID, the first of them whose rank and size
 * are both set; size 1 otherwise.  Not read: SLURM_NTASKS (a batch script has
 * it but is one process, not a step's task) and PMIX_RANK (PMIx gives the
 * size only through its API; Open MPI's launchers set OMPI_COMM_WORLD_* too).
 * Returns 0, or -1 with st filled when a rank or a local rank is not a number
 * in range. */
int edm_dist_env_read(edm_dist_env *e, edm_status *st);

/* 1 when edmc was built with MPI. */
int edm_dist_available(void);

typedef struct edm_dist edm_dist;

/* Joins the other ranks (MPI_Init).  timeout_s bounds every wait for the other
 * ranks (0: 600 s).  NULL with st filled on error. */
edm_dist *edm_dist_open(const edm_dist_env *env, double timeout_s, edm_status *st);
int edm_dist_rank(const edm_dist *d);
int edm_dist_size(const edm_dist *d);
int edm_dist_local_rank(const edm_dist *d);
int edm_dist_local_size(const edm_dist *d);
/* The CPU threads of this rank: the cores it may run on (sched_getaffinity:
 * a launcher's binding, srun's --cpus-per-task, a cgroup's cpuset), divided
 * among the ranks of its node whose cores overlap its own (unbound ranks all
 * have the node's cores; ranks bound to cores of their own have theirs
 * alone); at least 1.  Every rank calls it together (an all-gather). */
int edm_dist_cpu_threads(edm_dist *d, int *threads, edm_status *st);
/* Ends the run: with ok (every rank agreed to end here) MPI_Finalize; else
 * MPI_Abort, which makes the launcher end every rank (a rank whose peers may
 * wait in a collective must not wait in MPI_Finalize).  NULL is fine. */
void edm_dist_close(edm_dist *d, int ok, int exit_code);

/* The collectives; `what` names the operation in a timeout's message ("the
 * gradient all-reduce of step 12").  -1 with st filled on an MPI error or a
 * timeout; after that the ranks are out of step and only edm_dist_close(d, 0)
 * may follow (edm_dist_broken says so). */
int edm_dist_broken(const edm_dist *d);
/* all[r * bytes ...] = rank r's mine, on every rank. */
int edm_dist_allgather(edm_dist *d, const void *mine, size_t bytes, void *all, const char *what, edm_status *st);
int edm_dist_bcast(edm_dist *d, void *buf, size_t bytes, int root, const char *what, edm_status *st);
/* buf ← Σ_r buf_r over the ranks, summed in float in rank order
 * (((b_0 + b_1) + b_2) + …): the same bits on every rank, whatever the timing
 * and the number of threads.  Each rank sums a 1/size slice and the slices are
 * gathered (a reduce-scatter and an all-gather, as a ring all-reduce moves). */
int edm_dist_allreduce_f32(edm_dist *d, float *buf, int64_t n, const char *what, edm_status *st);
/* The same in double (the CPU trainer's accumulated gradients). */
int edm_dist_allreduce_f64(edm_dist *d, double *buf, int64_t n, const char *what, edm_status *st);

/* The agreement at the points where ranks may have failed on their own (a
 * read error of one rank's data, a write error of rank 0's checkpoint):
 * every rank gives its own state, every rank learns the first rank that
 * failed (-1: none) and whether any asked to stop (a signal).  Returns 0 or
 * -1 (the collective itself failed). */
int edm_dist_agree(edm_dist *d, int failed, int stop, int *first_failed, int *any_stop, const char *what,
                   edm_status *st);

/* The first other rank whose failure ended the run (what edm_dist_agree
 * learnt; -1: none): that rank reports its error, the others need not. */
void edm_dist_set_peer_failed(edm_dist *d, int rank);
int edm_dist_peer_failed(const edm_dist *d);

/* The gradient all-reduce behind one interface: MPI over host memory, or a
 * device library (NCCL) over device memory.  allreduce_sum_f32 has
 * edm_dist_allreduce_f32's contract. */
typedef struct edm_collective {
    const char *name; /* "mpi", "nccl" */
    int device;       /* 1: buf is device memory (a CUdeviceptr), 0: host memory */
    int (*allreduce_sum_f32)(struct edm_collective *c, void *buf, int64_t n, const char *what, edm_status *st);
    int (*allreduce_sum_f64)(struct edm_collective *c, void *buf, int64_t n, const char *what, edm_status *st);
    /* several buffers in one go (NCCL: one group), each summed as above; NULL for MPI */
    int (*allreduce_many_f32)(struct edm_collective *c, void *const *bufs, const int64_t *n, int nbufs,
                              const char *what, edm_status *st);
    /* Overlapped with the backward pass (NCCL; NULL for MPI): after
     * bucket_begin, each bucket_f32 queues one group of sums (as above) on
     * stream, not waited for; bucket_end waits for the stream, all of it
     * (from the first bucket queued) bounded by the timeout together.  bucket_end must follow a
     * bucket_begin that succeeded, whatever failed in between. */
    int (*bucket_begin)(struct edm_collective *c, const char *what, edm_status *st);
    int (*bucket_f32)(struct edm_collective *c, void *const *bufs, const int64_t *n, int nbufs, void *stream,
                      const char *what, edm_status *st);
    int (*bucket_end)(struct edm_collective *c, void *stream, const char *what, edm_status *st);
    int aborted; /* a wait timed out and the communicator was aborted: that explains the failures it caused */
    void *ctx;
} edm_collective;

/* MPI over host buffers (ctx is d). */
edm_collective edm_dist_host_collective(edm_dist *d);

/* NCCL over device buffers (runtime/dist_nccl.c): libnccl.so.2 (or
 * $EDMC_NCCL) opened with dlopen, the communicator set up over d (every rank
 * calls this together).  stream: the CUstream the gradients are made on;
 * sync(exec, stream) waits for a stream, and a wait longer than timeout_s
 * aborts the communicator; bind(exec) makes the executor's device current
 * on the calling thread (ncclCommInitRank runs on a thread of its own and
 * binds the communicator to that thread's device).  NULL with st filled
 * when NCCL is absent or fails. */
edm_collective *edm_nccl_open(edm_dist *d, void *stream, int (*sync)(void *exec, void *stream, edm_status *st),
                              int (*bind)(void *exec, edm_status *st), void *exec, double timeout_s, edm_status *st);
void edm_nccl_close(edm_collective *c);
double edm_dist_timeout(const edm_dist *d);

/* Makes stderr prefix every line with "rank R: " (errors and warnings of a
 * run with several ranks say whose they are).  Returns the stderr it
 * replaced, for edm_dist_unprefix_stderr; NULL when nothing changed (the
 * stream could not be made). */
FILE *edm_dist_prefix_stderr(int rank);
/* Closes the prefixing stream and puts saved back (NULL: nothing to do). */
void edm_dist_unprefix_stderr(FILE *saved);

#endif
