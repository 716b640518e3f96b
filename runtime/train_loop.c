#include "config.h"

#include "runtime/train_loop.h"

#include "runtime/interface_names.h"
#include "runtime/model_source.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "runtime/data.h"
#include "runtime/dist.h"
#include "runtime/files.h"
#include "runtime/phema.h"
#include "runtime/rng.h"
#include "runtime/train.h"
#include "runtime/train_run.h"
#include "runtime/clock.h"
#include "runtime/meta_keys.h"

double edm_train_lr(const edm_train_opts *o, int64_t cur_nimg)
{
    double lr = o->ref_lr;
    double t = (double)cur_nimg / (double)o->batch;
    if (o->ref_batches > 0)
        lr /= sqrt(fmax(t / o->ref_batches, 1.0));
    if (o->rampup_mimg > 0)
        lr *= fmin((double)cur_nimg / (o->rampup_mimg * 1e6), 1.0);
    return lr;
}

/* Everything the loop carries from step to step. */
typedef struct {
    const edm_graph *g;
    const edm_train_opts *o;
    edm_trainer *t;
    edm_backend *cpu; /* the trainer's executor (CPU or CUDA) */
    int nema;          /* the EMAs (the trainer keeps them), one per o->std */
    double gamma[EDM_TRAIN_MAX_EMA];
    float *stage;      /* one parameter's EMA copy on its way to or from a file (the largest's size) */
    int64_t micro;     /* images per forward/backward */
    int64_t c, res, label_dim;
    float *images, *labels, *sigma_n, *noise;
    int64_t step, nimg;
    FILE *stats;
    char stats_path[4096];
    int nonfinite_intervals; /* status intervals in a row with a non-finite loss */
    /* the status interval in progress; in checkpoints, so that after a stop and
     * --resume the first record still averages its whole interval */
    double loss_sum;
    int64_t steps_since, bad_since;
    int lock_fd;             /* outdir/.lock, held (flock) for the run; -1 when not open */
    edm_dataset *ds;
    char *run_json;          /* the run's settings (edmc.run metadata) */
    /* data parallel (o->dist): this rank's share of every batch */
    edm_dist *dist;
    int rank, ranks;
    int64_t share;           /* images per rank and step: batch / ranks */
    double *micro_loss;      /* this step's loss terms, one per pass of every rank, in the stream's order */
    char resumed_from[4096]; /* the checkpoint rank 0 resumed from ("" when none) */
} loop;

/* ------------------------------------------------------------------ files */

/* Buffers are constant: they come from the backend as they were loaded. */
static int add_buffers(loop *L, edm_st_writer *w, const char *prefix, edm_dtype stored, edm_status *st)
{
    for (int i = 0; i < edm_graph_count(L->g); i++) {
        const edm_node *n = edm_graph_node(L->g, i);
        if (n->op != EDM_OP_BUFFER)
            continue;
        int64_t count = edm_backend_numel(L->cpu, i);
        float *data = malloc(sizeof(float) * (size_t)(count ? count : 1));
        if (!data)
            return edm_nomem(st);
        char name[600];
        snprintf(name, sizeof name, "%s%s", prefix, n->name);
        int rc = edm_backend_get_f32(L->cpu, i, data, count, st);
        if (rc == 0)
            rc = edm_st_writer_add_f32(w, name, stored, n->shape.rank, n->shape.dim, data, st);
        free(data);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int add_meta_common(loop *L, edm_st_writer *w, edm_status *st)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%lld", (long long)L->nimg);
    if (edm_st_writer_meta(w, EDM_META_NIMG, buf, st) != 0)
        return -1;
    if (L->o->model && edm_st_writer_meta(w, EDM_META_MODEL, L->o->model, st) != 0)
        return -1;
    if (edm_st_writer_meta(w, EDM_META_RUN, L->run_json, st) != 0)
        return -1;
    if (L->o->config && edm_st_writer_meta(w, EDM_META_CONFIG, L->o->config, st) != 0)
        return -1;
    /* last: the longest (a reader of the header's start sees the settings first) */
    return L->o->source ? edm_st_writer_meta(w, EDM_META_SOURCE, L->o->source, st) : 0;
}

static int write_snapshots(loop *L, edm_status *st)
{
    long long kimg = (long long)(L->nimg / 1000);
    for (int e = 0; e < L->nema; e++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/network-snapshot-%07lld-%.3f.safetensors", L->o->outdir, kimg, L->o->std[e]);
        edm_st_writer *w = edm_st_writer_new();
        if (!w)
            return edm_nomem(st);
        edm_dtype stored = L->o->snapshot_fp32 ? EDM_F32 : EDM_F16;
        int rc = 0;
        for (int i = 0; i < edm_trainer_nparams(L->t) && rc == 0; i++) {
            edm_train_param *p = edm_trainer_param(L->t, i);
            rc = edm_trainer_ema_get(L->t, e, i, L->stage, st);
            if (rc == 0)
                rc = edm_st_writer_add_f32(w, p->name, stored, p->shape.rank, p->shape.dim, L->stage, st);
        }
        char buf[64];
        if (rc == 0)
            rc = add_buffers(L, w, "", stored, st);
        if (rc == 0)
            rc = add_meta_common(L, w, st);
        snprintf(buf, sizeof buf, "%lld", kimg);
        if (rc == 0)
            rc = edm_st_writer_meta(w, EDM_META_PHEMA_KIMG, buf, st);
        snprintf(buf, sizeof buf, "%.3f", L->o->std[e]);
        if (rc == 0)
            rc = edm_st_writer_meta(w, EDM_META_PHEMA_STD, buf, st);
        if (rc == 0)
            rc = edm_st_writer_write(w, path, st);
        edm_st_writer_free(w);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int write_checkpoint(loop *L, edm_status *st)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/training-state-%012lld.safetensors", L->o->outdir, (long long)L->nimg);
    edm_st_writer *w = edm_st_writer_new();
    if (!w)
        return edm_nomem(st);
    int rc = edm_trainer_pull(L->t, 1, st);
    char name[600];
    for (int i = 0; i < edm_trainer_nparams(L->t) && rc == 0; i++) {
        edm_train_param *p = edm_trainer_param(L->t, i);
        const float *parts[3] = {p->value, p->m, p->v};
        const char *prefix[3] = {EDM_CKPT_NET, EDM_CKPT_ADAM_M, EDM_CKPT_ADAM_V};
        for (int k = 0; k < 3 && rc == 0; k++) {
            snprintf(name, sizeof name, "%s%s", prefix[k], p->name);
            rc = edm_st_writer_add_f32(w, name, EDM_F32, p->shape.rank, p->shape.dim, parts[k], st);
        }
        for (int e = 0; e < L->nema && rc == 0; e++) {
            snprintf(name, sizeof name, EDM_CKPT_EMA_FMT "%s", e, p->name);
            rc = edm_trainer_ema_get(L->t, e, i, L->stage, st);
            if (rc == 0)
                rc = edm_st_writer_add_f32(w, name, EDM_F32, p->shape.rank, p->shape.dim, L->stage, st);
        }
    }
    if (rc == 0)
        rc = add_buffers(L, w, EDM_CKPT_NET, EDM_F32, st);
    if (rc == 0)
        rc = add_meta_common(L, w, st);
    char buf[256];
    snprintf(buf, sizeof buf, "%lld", (long long)L->step);
    if (rc == 0)
        rc = edm_st_writer_meta(w, EDM_META_STEP, buf, st);
    snprintf(buf, sizeof buf, "%llu %lld", (unsigned long long)L->o->seed, (long long)L->o->batch);
    if (rc == 0)
        rc = edm_st_writer_meta(w, EDM_META_SEED_BATCH, buf, st);
    snprintf(buf, sizeof buf, "%.17g %lld %lld", L->loss_sum, (long long)L->steps_since, (long long)L->bad_since);
    if (rc == 0)
        rc = edm_st_writer_meta(w, EDM_META_STATUS_INTERVAL, buf, st);
    int used = 0;
    buf[0] = '\0';
    for (int e = 0; e < L->nema; e++)
        used += snprintf(buf + used, sizeof buf - (size_t)used, "%s%.17g", e ? "," : "", L->o->std[e]);
    if (rc == 0)
        rc = edm_st_writer_meta(w, EDM_META_EMA_STD, buf, st);
    if (rc == 0)
        rc = edm_st_writer_write(w, path, st);
    edm_st_writer_free(w);
    return rc;
}

/* One training per folder: an advisory write lock on dir/.lock, held until
 * the run ends (the process's exit releases it too, even after kill -9). */
static int lock_outdir(loop *L, const char *dir, edm_status *st)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot create the folder's lock: %s", path, strerror(errno));
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (fcntl(fd, F_SETLK, &fl) != 0) {
        int e = errno;
        close(fd);
        if (e == EACCES || e == EAGAIN)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                            "'%s' is in use by another training (it holds %s): one run per folder", dir, path);
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot lock it: %s", path, strerror(e));
    }
    L->lock_fd = fd;
    return 0;
}

/* Temporary files of an atomic write that a kill interrupted (NAME.tmp.XXXXXX
 * of our own outputs); only called with the folder locked, so none is live. */
static void remove_stale_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *ent;
    char path[4096];
    while ((ent = readdir(d))) {
        const char *n = ent->d_name;
        if (strstr(n, ".tmp.") && (strncmp(n, "training-state-", 15) == 0 || strncmp(n, "network-snapshot-", 17) == 0 ||
                                   strncmp(n, "stats.jsonl", 11) == 0)) {
            snprintf(path, sizeof path, "%s/%s", dir, n);
            (void)unlink(path); /* best effort: a leftover is only clutter */
        }
    }
    closedir(d);
}

/* On resume, stats.jsonl keeps the records up to the checkpoint's step only:
 * those written after it (before a kill) are about steps that run again. */
static int truncate_stats(loop *L, edm_status *st)
{
    FILE *f = fopen(L->stats_path, "r");
    if (!f)
        return errno == ENOENT ? 0
                               : edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot read it: %s", L->stats_path,
                                          strerror(errno));
    char *line = NULL, *kept = NULL;
    size_t cap = 0, used = 0, kcap = 0;
    ssize_t n;
    int rc = 0, dropped = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        json_object *j = json_tokener_parse(line);
        json_object *step = NULL;
        int keep = j && json_object_object_get_ex(j, "step", &step) && json_object_get_int64(step) <= L->step;
        json_object_put(j);
        if (!keep) {
            dropped = 1;
            continue;
        }
        if (used + (size_t)n + 1 > kcap) {
            size_t ncap = (used + (size_t)n + 1) * 2;
            char *nk = realloc(kept, ncap);
            if (!nk) {
                rc = edm_nomem(st);
                break;
            }
            kept = nk;
            kcap = ncap;
        }
        memcpy(kept + used, line, (size_t)n);
        used += (size_t)n;
        if (kept[used - 1] != '\n')
            kept[used++] = '\n';
    }
    if (rc == 0 && ferror(f))
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot read it: %s", L->stats_path, strerror(errno));
    fclose(f);
    free(line);
    if (rc == 0 && dropped)
        rc = edm_write_bytes_atomic(L->stats_path, kept, used, st);
    free(kept);
    return rc;
}

static int read_into(const edm_st_file *f, const char *name, float *out, int64_t n, edm_status *st)
{
    const edm_st_entry *e = edm_st_find(f, name);
    if (!e)
        return edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: checkpoint lacks '%s'", edm_st_path(f), name);
    if (e->numel != n) /* usage, not a damaged file: no older checkpoint would fit either */
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "%s: '%s' has %lld values, this model's has %lld: the model is configured otherwise than the "
                        "run (its settings are in the checkpoint's edmc.config metadata)",
                        edm_st_path(f), name, (long long)e->numel, (long long)n);
    return edm_st_read_f32(f, e, out, n, st);
}

static int resume(loop *L, const char *path, edm_status *st)
{
    edm_st_file *f = edm_st_open(path, st);
    if (!f)
        return -1;
    int rc = 0;
    const char *step = edm_st_metadata(f, EDM_META_STEP), *nimg = edm_st_metadata(f, EDM_META_NIMG);
    const char *sb = edm_st_metadata(f, EDM_META_SEED_BATCH);
    const char *interval = edm_st_metadata(f, EDM_META_STATUS_INTERVAL); /* absent in older states */
    long long ns = 0, nb = 0;
    L->loss_sum = 0;
    L->steps_since = L->bad_since = 0;
    if (interval && sscanf(interval, "%lf %lld %lld", &L->loss_sum, &ns, &nb) == 3 && ns >= 0 && nb >= 0) {
        L->steps_since = ns;
        L->bad_since = nb;
    } else {
        L->loss_sum = 0;
    }
    char want[128];
    snprintf(want, sizeof want, "%llu %lld", (unsigned long long)L->o->seed, (long long)L->o->batch);
    if (!step || !nimg || !sb)
        rc = edm_fail(st, EDM_ERR_FORMAT, EDM_NO_LOC, "%s: not an edmc training state", path);
    else if (strcmp(sb, want) != 0)
        rc = edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                      "%s was trained with seed and batch '%s'; this run has '%s' (a resumed run must keep both)",
                      path, sb, want);
    char name[600];
    for (int i = 0; i < edm_trainer_nparams(L->t) && rc == 0; i++) {
        edm_train_param *p = edm_trainer_param(L->t, i);
        float *parts[3] = {p->value, p->m, p->v};
        const char *prefix[3] = {EDM_CKPT_NET, EDM_CKPT_ADAM_M, EDM_CKPT_ADAM_V};
        for (int k = 0; k < 3 && rc == 0; k++) {
            snprintf(name, sizeof name, "%s%s", prefix[k], p->name);
            rc = read_into(f, name, parts[k], p->numel, st);
        }
    }
    for (int i = 0; i < edm_trainer_nparams(L->t) && rc == 0; i++) {
        edm_train_param *p = edm_trainer_param(L->t, i);
        for (int e = 0; e < L->nema && rc == 0; e++) {
            snprintf(name, sizeof name, EDM_CKPT_EMA_FMT "%s", e, p->name);
            rc = read_into(f, name, L->stage, p->numel, st);
            if (rc == 0)
                rc = edm_trainer_ema_set(L->t, e, i, L->stage, st);
        }
    }
    for (int i = 0; i < edm_graph_count(L->g) && rc == 0; i++) {
        const edm_node *n = edm_graph_node(L->g, i);
        if (n->op != EDM_OP_BUFFER)
            continue;
        int64_t count = edm_backend_numel(L->cpu, i);
        float *data = malloc(sizeof(float) * (size_t)(count ? count : 1));
        snprintf(name, sizeof name, EDM_CKPT_NET "%s", n->name);
        rc = data ? read_into(f, name, data, count, st) : edm_nomem(st);
        if (rc == 0)
            rc = edm_backend_set_f32(L->cpu, n->name, data, count, st);
        free(data);
    }
    if (rc == 0)
        rc = edm_trainer_push(L->t, st);
    if (rc == 0) {
        L->step = atoll(step);
        L->nimg = atoll(nimg);
    }
    edm_st_close(f);
    return rc;
}

/* ------------------------------------------------------------------ one step */

/* σ draws and noise are functions of (seed, image index): a resumed run sees
 * exactly the values an uninterrupted one would. */
static int micro_batch(loop *L, edm_loader *ld, int64_t first_image, double *loss, edm_status *st)
{
    int64_t per = L->c * L->res * L->res;
    if (edm_loader_next(ld, L->images, L->label_dim ? L->labels : NULL, st) != 0)
        return -1;
    /* the streams' names are their own (they fix the draws), not the inputs' */
    edm_rng rs = edm_rng_make(L->o->seed, "rnd_normal"), rn = edm_rng_make(L->o->seed, "unit_noise");
    edm_rng_normal(&rs, (uint64_t)first_image, L->sigma_n, L->micro);
    edm_rng_normal(&rn, (uint64_t)first_image * (uint64_t)per, L->noise, L->micro * per);
    edm_backend *x = L->cpu;
    if (edm_backend_set_f32(x, EDM_IN_IMAGES, L->images, L->micro * per, st) != 0 ||
        edm_backend_set_f32(x, EDM_IN_RND_NORMAL, L->sigma_n, L->micro, st) != 0 ||
        edm_backend_set_f32(x, EDM_IN_UNIT_NOISE, L->noise, L->micro * per, st) != 0 ||
        (L->label_dim && edm_backend_set_f32(x, EDM_IN_CLASS_LABELS, L->labels, L->micro * L->label_dim, st) != 0))
        return -1;
    edm_backend_set_seed(x, L->o->seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)(first_image + 1)));
    return edm_trainer_accumulate(L->t, L->o->batch, loss, st);
}

/* The status line on log and one JSON record in stats.jsonl (a non-finite
 * loss is written as null: NaN is not JSON).  Fails when the record cannot be
 * written, or after max_nonfinite intervals in a row with a non-finite loss. */
static int status_line(loop *L, FILE *log, double loss, double elapsed, int64_t images, double lr, int64_t bad,
                       edm_status *st)
{
    double ips = elapsed > 0 ? (double)images / elapsed : 0;
    double remaining = ips > 0 ? (double)(L->o->duration - L->nimg) / ips : 0;
    double mem = (double)edm_backend_peak_bytes(L->cpu) / (1 << 20);
    if (log) {
        fprintf(log,
                "kimg %9.3f  loss %9.5f  img/s %8.2f  sec/kimg %8.2f  lr %.6f  mem %7.1f MiB  "
                "ETA %02d:%02d:%02d%s\n",
                (double)L->nimg / 1000, loss, ips, ips > 0 ? 1000 / ips : 0.0, lr, mem, (int)(remaining / 3600),
                (int)(fmod(remaining, 3600) / 60), (int)fmod(remaining, 60), bad ? "  (non-finite gradients zeroed)" : "");
        fflush(log);
    }
    int finite = isfinite(loss);
    L->nonfinite_intervals = finite ? 0 : L->nonfinite_intervals + 1;
    if (!finite && log)
        fprintf(log, "warning: the loss at kimg %.3f is %g (not finite)\n", (double)L->nimg / 1000, loss);
    if (!L->stats)
        return 0;
    json_object *j = json_object_new_object();
    if (!j)
        return edm_nomem(st);
    json_object_object_add(j, "kimg", json_object_new_double((double)L->nimg / 1000));
    json_object_object_add(j, "step", json_object_new_int64(L->step));
    json_object_object_add(j, "loss", finite ? json_object_new_double(loss) : NULL);
    json_object_object_add(j, "img_per_s", json_object_new_double(ips));
    json_object_object_add(j, "sec_per_kimg", json_object_new_double(ips > 0 ? 1000 / ips : 0));
    json_object_object_add(j, "lr", json_object_new_double(lr));
    json_object_object_add(j, "mem_mib", json_object_new_double(mem));
    json_object_object_add(j, "eta_s", json_object_new_double(remaining));
    json_object_object_add(j, "nonfinite_grads", json_object_new_int64(bad));
    const char *text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN);
    int rc = 0;
    errno = 0;
    if (!text || fprintf(L->stats, "%s\n", text) < 0 || fflush(L->stats) != 0 || ferror(L->stats))
        rc = edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "%s: cannot write the record of kimg %.3f: %s", L->stats_path,
                      (double)L->nimg / 1000, errno ? strerror(errno) : "write error");
    json_object_put(j);
    int limit = L->o->max_nonfinite > 0 ? L->o->max_nonfinite : 2;
    if (rc == 0 && L->nonfinite_intervals >= limit)
        rc = edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC,
                      "the loss was not finite for %d status intervals in a row (at kimg %.3f): stopping; the "
                      "data, the weights or the learning rate are bad",
                      L->nonfinite_intervals, (double)L->nimg / 1000);
    return rc;
}

/* The EMAs after a step, where the trainer keeps them. */
static int update_emas(loop *L, edm_status *st)
{
    double t_next = (double)(L->nimg + L->o->batch), dt = (double)L->o->batch;
    double beta[EDM_TRAIN_MAX_EMA];
    for (int e = 0; e < L->nema; e++)
        beta[e] = edm_phema_beta(L->gamma[e], t_next, dt);
    return edm_trainer_ema_update(L->t, beta, st);
}

static int crossed(int64_t before, int64_t after, int64_t every) { return every > 0 && before / every != after / every; }

/* ------------------------------------------------------------------ the loop */

static int setup(loop *L, const edm_graph *g, const edm_train_opts *o, const edm_st_file *init, FILE *log,
                 edm_status *st)
{
    L->g = g;
    L->o = o;
    L->dist = o->dist;
    L->rank = L->dist ? edm_dist_rank(L->dist) : 0;
    L->ranks = L->dist ? edm_dist_size(L->dist) : 1;
    if (o->batch < 1 || o->batch % L->ranks != 0)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                        "--batch=%lld over %d ranks: the batch must be a multiple of the number of ranks",
                        (long long)o->batch, L->ranks);
    L->share = o->batch / L->ranks;
    L->micro = o->batch_gpu > 0 ? o->batch_gpu : L->share;
    if (L->micro < 1 || L->share % L->micro != 0) {
        if (L->ranks > 1)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                            "--batch=%lld over %d ranks is %lld images per rank: it must be a multiple of "
                            "--batch-gpu=%lld",
                            (long long)o->batch, L->ranks, (long long)L->share, (long long)L->micro);
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--batch=%lld must be a multiple of --batch-gpu=%lld",
                        (long long)o->batch, (long long)L->micro);
    }
    L->micro_loss = calloc((size_t)(o->batch / L->micro), sizeof *L->micro_loss);
    if (!L->micro_loss)
        return edm_nomem(st);
    int img = edm_graph_find(g, EDM_OP_INPUT, EDM_IN_IMAGES), lab = edm_graph_find(g, EDM_OP_INPUT, EDM_IN_CLASS_LABELS);
    if (img < 0 || edm_graph_find(g, EDM_OP_INPUT, EDM_IN_RND_NORMAL) < 0 ||
        edm_graph_find(g, EDM_OP_INPUT, EDM_IN_UNIT_NOISE) < 0)
        return edm_fail(st, EDM_ERR_SEMANTIC, EDM_NO_LOC,
                        "the training program needs inputs images, rnd_normal and unit_noise");
    const edm_node *in = edm_graph_node(g, img);
    L->c = in->shape.dim[1];
    L->res = in->shape.dim[2];
    L->label_dim = lab >= 0 ? edm_graph_node(g, lab)->shape.dim[1] : 0;
    /* a missing or unfitting dataset fails before anything is written */
    L->ds = edm_dataset_open(o->data, (int)L->res, (int)L->c, (int)L->label_dim, st);
    if (!L->ds)
        return -1;
    L->run_json = edm_train_run_json(o);
    if (!L->run_json)
        return edm_nomem(st);
    edm_backend_options opt = o->backend; /* device, precision (f32 or f64 on the CPU), CUDA options */
    opt.cpu.threads = o->threads;
    opt.cpu.seed = o->seed;
    L->t = edm_trainer_new(g, L->micro, &opt, st);
    if (!L->t)
        return -1;
    /* one pass a step, no collective: the pass's gradients are the step's */
    if (!L->dist && L->micro == o->batch && edm_trainer_direct_grads(L->t, 1, st) != 0)
        return -1;
    L->cpu = edm_trainer_backend(L->t);
    if ((init ? edm_trainer_load(L->t, init, st) : edm_trainer_init(L->t, o->seed, st)) != 0)
        return -1;
    int64_t largest = 1;
    for (int i = 0; i < edm_trainer_nparams(L->t); i++)
        largest = edm_trainer_param(L->t, i)->numel > largest ? edm_trainer_param(L->t, i)->numel : largest;
    int64_t per = L->c * L->res * L->res;
    L->stage = malloc(sizeof(float) * (size_t)largest);
    L->images = malloc(sizeof(float) * (size_t)(L->micro * per));
    L->noise = malloc(sizeof(float) * (size_t)(L->micro * per));
    L->sigma_n = malloc(sizeof(float) * (size_t)L->micro);
    L->labels = malloc(sizeof(float) * (size_t)(L->micro * (L->label_dim ? L->label_dim : 1)));
    if (!L->stage || !L->images || !L->noise || !L->sigma_n || !L->labels)
        return edm_nomem(st);
    if (o->nstd < 1 || o->nstd > EDM_TRAIN_MAX_EMA)
        return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "%d EMAs: from 1 to %d", o->nstd, EDM_TRAIN_MAX_EMA);
    for (int e = 0; e < o->nstd; e++)
        if (edm_phema_std_to_exp(o->std[e], &L->gamma[e], st) != 0)
            return -1;
    L->nema = o->nstd;
    if (edm_trainer_ema_attach(L->t, L->nema, st) != 0)
        return -1;
    if (L->rank != 0) /* rank 0 alone has the folder: the others resume from what it chose */
        return 0;
    if (edm_make_dirs(o->outdir, st) != 0 || lock_outdir(L, o->outdir, st) != 0)
        return -1;
    remove_stale_temps(o->outdir);
    if (!o->resume && edm_train_check_fresh(o->outdir, st) != 0)
        return -1;
    snprintf(L->stats_path, sizeof L->stats_path, "%s/stats.jsonl", o->outdir);
    if (o->resume) {
        /* the newest intact checkpoint: a truncated or damaged one (a kill or
         * a full disk outside our atomic writes) is skipped, saying so */
        char path[4096], name[256] = "";
        for (;;) {
            if (edm_train_newest_checkpoint(o->outdir, name, path, sizeof path, st) != 0)
                return -1;
            if (!path[0])
                return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                                "--resume: no %straining-state-*.safetensors in '%s' (a run stopped before its first "
                                "checkpoint cannot be continued: remove the folder or give another --outdir)",
                                name[0] ? "intact " : "", o->outdir);
            edm_status why;
            edm_status_init(&why);
            if (resume(L, path, &why) == 0) {
                snprintf(L->resumed_from, sizeof L->resumed_from, "%s", path);
                break;
            }
            if (why.code != EDM_ERR_FORMAT) {
                *st = why;
                return -1;
            }
            if (log)
                fprintf(log, "warning: cannot resume from %s (%s); trying the checkpoint before it\n", path, why.msg);
            const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
            int len = snprintf(name, sizeof name, "%s", base);
            if (len < 0 || (size_t)len >= sizeof name)
                return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--resume: checkpoint name too long: %s", base);
        }
        if (L->nimg >= o->duration)
            return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                            "--duration=%lld: the run in '%s' is at %lld images already (resume with a longer one)",
                            (long long)o->duration, o->outdir, (long long)L->nimg);
        if (truncate_stats(L, st) != 0)
            return -1;
    }
    L->stats = fopen(L->stats_path, o->resume ? "a" : "w");
    if (!L->stats)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "cannot write '%s': %s", L->stats_path, strerror(errno));
    return 0;
}

static void teardown(loop *L)
{
    edm_trainer_free(L->t);
    free(L->stage);
    free(L->images);
    free(L->noise);
    free(L->sigma_n);
    free(L->labels);
    free(L->run_json);
    free(L->micro_loss);
    edm_dataset_close(L->ds);
    if (L->stats)
        fclose(L->stats); /* every record was flushed and checked as written */
    if (L->lock_fd >= 0)
        close(L->lock_fd);
}

/* ------------------------------------------------------------------ data parallel */

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* A fingerprint of everything the ranks must hold alike: the step, the
 * weights, Adam's moments and the EMAs. */
static int state_hash(loop *L, uint64_t *out, edm_status *st)
{
    if (edm_trainer_pull(L->t, 1, st) != 0)
        return -1;
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv1a(h, &L->step, sizeof L->step);
    h = fnv1a(h, &L->nimg, sizeof L->nimg);
    for (int i = 0; i < edm_trainer_nparams(L->t); i++) {
        edm_train_param *p = edm_trainer_param(L->t, i);
        h = fnv1a(h, p->value, sizeof(float) * (size_t)p->numel);
        h = fnv1a(h, p->m, sizeof(float) * (size_t)p->numel);
        h = fnv1a(h, p->v, sizeof(float) * (size_t)p->numel);
    }
    for (int e = 0; e < L->nema; e++)
        for (int i = 0; i < edm_trainer_nparams(L->t); i++) {
            if (edm_trainer_ema_get(L->t, e, i, L->stage, st) != 0)
                return -1;
            h = fnv1a(h, L->stage, sizeof(float) * (size_t)edm_trainer_param(L->t, i)->numel);
        }
    *out = h;
    return 0;
}

/* The ranks agree on the outcome of what each did on its own: when one
 * failed, every rank fails (the one that failed has its own error in st; the
 * others a note naming it, which edm_train_peer_failed tells apart). */
static int agree(loop *L, int rc, int stop, int *any_stop, const char *what, edm_status *st)
{
    int first = -1, anystop = 0;
    edm_status mine;
    edm_status_init(&mine);
    if (edm_dist_agree(L->dist, rc != 0, stop, &first, &anystop, what, rc != 0 ? &mine : st) != 0)
        return -1;
    if (any_stop)
        *any_stop = anystop;
    if (rc != 0)
        return rc; /* our own error, already in st */
    if (first >= 0)
        edm_dist_set_peer_failed(L->dist, first);
    if (first >= 0)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "rank %d failed (%s; its error is in its output): every "
                        "rank stops", first, what);
    return 0;
}

static int check_same_state(loop *L, const char *when, edm_status *st)
{
    uint64_t h = 0;
    int rc = state_hash(L, &h, st);
    rc = agree(L, rc, 0, NULL, "the state check", st);
    if (rc != 0)
        return rc;
    uint64_t *all = malloc(sizeof(uint64_t) * (size_t)L->ranks);
    if (!all)
        return edm_nomem(st);
    rc = edm_dist_allgather(L->dist, &h, sizeof h, all, "the state check", st);
    for (int r = 1; rc == 0 && r < L->ranks; r++)
        if (all[r] != all[0])
            rc = edm_fail(st, EDM_ERR_INTERNAL, EDM_NO_LOC,
                          "%s, rank %d's weights, moments or EMAs differ from rank 0's (fingerprint %016llx vs "
                          "%016llx): the ranks would train different models",
                          when, r, (unsigned long long)all[r], (unsigned long long)all[0]);
    free(all);
    return rc;
}

/* After set-up: the ranks resume from the checkpoint rank 0 chose, and hold
 * the same state (a rank that read another file, or drew other initial
 * weights, would train another model). */
static int join_ranks(loop *L, int rc, edm_status *st)
{
    rc = agree(L, rc, 0, NULL, "the set-up", st);
    if (rc == 0 && L->o->resume) {
        rc = edm_dist_bcast(L->dist, L->resumed_from, sizeof L->resumed_from, 0, "the checkpoint's name", st);
        if (rc == 0 && L->rank != 0) {
            edm_status why;
            edm_status_init(&why);
            rc = resume(L, L->resumed_from, &why);
            if (rc != 0) {
                *st = why;
                edm_note_add(st, EDM_NO_LOC, "rank 0 resumed from it: every rank must see the run's folder");
            }
        }
        if (!edm_dist_broken(L->dist))
            rc = agree(L, rc, 0, NULL, "the resume", st);
    }
    if (rc == 0)
        rc = check_same_state(L, "at the start", st);
    return rc;
}

/* The buckets of the overlapped all-reduce, on rank 0's log: their number and sizes. */
static int log_buckets(loop *L, int64_t bucket_bytes, FILE *log, edm_status *st)
{
    int64_t bytes[8];
    int n = 0, shown = (int)(sizeof bytes / sizeof bytes[0]);
    if (edm_trainer_buckets(L->t, bucket_bytes, bytes, shown, &n, st) != 0)
        return -1;
    if (!log)
        return 0;
    fprintf(log, "gradients summed over the ranks by nccl, in %d bucket%s of at most %.3g MiB, each as the backward "
                 "pass finishes it (MiB:",
            n, n == 1 ? "" : "s", (double)bucket_bytes / 1048576.0);
    for (int k = 0; k < n && k < shown; k++)
        fprintf(log, " %.3g", (double)bytes[k] / 1048576.0);
    fprintf(log, "%s)\n", n > shown ? " ..." : "");
    return 0;
}

/* The step's loss from every rank's terms, summed in the stream's order (as
 * one process sums them). */
static int gather_loss(loop *L, int64_t passes, double *loss, edm_status *st)
{
    double *all = L->micro_loss;
    if (L->dist) {
        double *mine = malloc(sizeof(double) * (size_t)passes);
        if (!mine)
            return edm_nomem(st);
        memcpy(mine, L->micro_loss + (size_t)L->rank * (size_t)passes, sizeof(double) * (size_t)passes);
        int rc = edm_dist_allgather(L->dist, mine, sizeof(double) * (size_t)passes, all, "the losses", st);
        free(mine);
        if (rc != 0)
            return -1;
    }
    *loss = 0;
    for (int64_t k = 0; k < passes * L->ranks; k++)
        *loss += all[k];
    return 0;
}

int edm_train(const edm_graph *g, const edm_train_opts *o, const edm_st_file *init, volatile sig_atomic_t *stop,
              FILE *log, edm_status *st)
{
    loop L = {0};
    L.lock_fd = -1;
    edm_loader *ld = NULL;
    int rc = setup(&L, g, o, init, log, st);
    if (L.dist)
        rc = join_ranks(&L, rc, st);
    if (rc == 0) {
        ld = L.ranks > 1 ? edm_loader_new_shard(L.ds, L.micro, o->seed, L.nimg, o->batch, L.rank * L.share, L.share, st)
                         : edm_loader_new(L.ds, L.micro, o->seed, L.nimg, st);
        rc = ld ? 0 : -1;
        if (L.dist)
            rc = agree(&L, rc, 0, NULL, "the data loader", st);
    }
    /* the gradient all-reduce: MPI over host memory, or NCCL over the device's */
    edm_collective host = {0}, *coll = NULL, *nccl = NULL;
    int overlap = 0; /* NCCL's buckets during the last pass's backward pass */
    int64_t bucket_bytes = o->bucket_bytes > 0 ? o->bucket_bytes : EDM_TRAIN_BUCKET_BYTES;
    edm_status no_nccl; /* why NCCL was not used (auto) */
    edm_status_init(&no_nccl);
    if (rc == 0 && L.dist) {
        host = edm_dist_host_collective(L.dist);
        coll = &host;
        const char *want = o->collective ? o->collective : "auto";
        int device = edm_trainer_device_grads(L.t); /* NCCL sums device memory */
        if (strcmp(want, "nccl") == 0 && !device) {
            rc = edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC, "--collective=nccl reduces device memory: it needs --device=cuda");
        } else if (device && strcmp(want, "mpi") != 0) {
            nccl = edm_trainer_nccl(L.t, L.dist, strcmp(want, "nccl") == 0 ? st : &no_nccl);
            if (nccl)
                coll = nccl;
            else if (strcmp(want, "nccl") == 0 || edm_dist_broken(L.dist))
                rc = -1;
            else if (log)
                fprintf(log, "NCCL not used (%s): the gradients go through the host, by MPI\n", no_nccl.msg);
        }
        overlap = nccl && !o->no_overlap;
        if (rc == 0 && overlap) /* formed before the agreement: a failure here is one every rank hears of */
            rc = edm_trainer_buckets(L.t, bucket_bytes, NULL, 0, &(int){0}, st);
        if (!edm_dist_broken(L.dist))
            rc = agree(&L, rc, 0, NULL, "the choice of the collective", st);
        /* every rank must sum with the same library: one that could not open NCCL where the others did
         * (auto) would wait in another collective than theirs */
        int mine = nccl != NULL, *all = rc == 0 ? calloc((size_t)L.ranks, sizeof *all) : NULL;
        if (rc == 0 && !all)
            rc = edm_nomem(st);
        if (rc == 0)
            rc = edm_dist_allgather(L.dist, &mine, sizeof mine, all, "the choice of the collective", st);
        for (int r = 1; rc == 0 && r < L.ranks; r++)
            if (all[r] != all[0]) {
                rc = edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                              "rank %d %s NCCL and rank 0 %s: every rank must find the same libraries "
                              "(or give --collective=mpi)",
                              r, all[r] ? "set up" : "could not set up", all[0] ? "did" : "did not");
                if (!nccl && no_nccl.msg[0]) /* the rank that could not says why */
                    edm_note_add(st, EDM_NO_LOC, "here NCCL failed: %s", no_nccl.msg);
            }
        free(all);
        if (rc == 0 && overlap)
            rc = log_buckets(&L, bucket_bytes, log, st);
        if (rc == 0 && log && !overlap)
            fprintf(log, "gradients summed over the ranks by %s%s\n", coll->name,
                    nccl ? ", after the backward pass (--overlap=off)" : "");
    }
    /* from here on every rank takes the same path: each failure reaches the
     * agreement at the top of the loop, where every rank learns of it */
    int joined = rc == 0;
    if (rc == 0 && log && L.ranks > 1)
        fprintf(log, "training %s: %lld images per step over %d ranks (%lld per rank, %lld per pass), from kimg %.3f "
                     "to %.3f\n",
                o->model ? o->model : "model", (long long)o->batch, L.ranks, (long long)L.share, (long long)L.micro,
                (double)L.nimg / 1000, (double)o->duration / 1000);
    else if (rc == 0 && log)
        fprintf(log, "training %s: %lld images per step (%lld per pass), from kimg %.3f to %.3f\n",
                o->model ? o->model : "model", (long long)o->batch, (long long)L.micro, (double)L.nimg / 1000,
                (double)o->duration / 1000);
    double t0 = edm_now_seconds();
    int64_t images_since = 0; /* since t0, for the rate (not restored on resume) */
    edm_adam adam = {o->beta1, o->beta2, o->eps};
    int64_t passes = L.share / (L.micro ? L.micro : 1); /* per rank and step */
    int stopped = 0;
    while (joined) {
        char what[96];
        if (L.dist && !edm_dist_broken(L.dist)) {
            /* a rank that failed after the last step (rank 0's files), or a signal on any rank */
            snprintf(what, sizeof what, "the agreement before step %lld", (long long)L.step + 1);
            int any_stop = 0;
            rc = agree(&L, rc, stop && *stop, &any_stop, what, st);
            stopped |= any_stop;
        } else {
            stopped |= stop && *stop;
        }
        if (rc != 0 || L.nimg >= o->duration || stopped)
            break;
        double lr = edm_train_lr(o, L.nimg);
        rc = edm_trainer_force_wn(L.t, st);
        if (rc == 0)
            rc = edm_trainer_zero_grad(L.t, st);
        /* this rank's passes: images nimg + rank·share + m·micro of the stream */
        snprintf(what, sizeof what, "the gradient all-reduce of step %lld", (long long)L.step + 1);
        int began = 0; /* the overlapped all-reduce: its buckets go during the last pass */
        for (int64_t m = 0; m < passes && rc == 0; m++) {
            double *term = &L.micro_loss[L.rank * passes + m];
            *term = 0;
            if (overlap && m == passes - 1)
                began = (rc = edm_trainer_overlap_begin(L.t, coll, bucket_bytes, what, st)) == 0;
            if (rc == 0)
                rc = micro_batch(&L, ld, L.nimg + L.rank * L.share + m * L.micro, term, st);
        }
        if (overlap) {
            /* after a failure the buckets still go out, so that the other ranks' collectives end */
            edm_status unused;
            edm_status_init(&unused);
            if (!began && rc != 0)
                began = edm_trainer_overlap_begin(L.t, coll, bucket_bytes, what, &unused) == 0;
            if (began)
                rc = edm_trainer_overlap_end(L.t, rc != 0, st);
        }
        if (L.dist) {
            snprintf(what, sizeof what, "the passes of step %lld", (long long)L.step + 1);
            rc = agree(&L, rc, 0, NULL, what, st);
        }
        double loss = 0;
        if (rc == 0)
            rc = gather_loss(&L, passes, &loss, st);
        if (rc == 0 && L.dist && !overlap) {
            /* the one collective of the step: gradients summed over the ranks, in rank order */
            snprintf(what, sizeof what, "the gradient all-reduce of step %lld", (long long)L.step + 1);
            rc = edm_trainer_allreduce_grad(L.t, coll, what, st);
        }
        int64_t nonfinite = 0;
        if (rc == 0)
            rc = edm_trainer_adam(L.t, &adam, lr, L.step + 1, &nonfinite, st);
        if (rc != 0)
            continue; /* to the agreement */
        L.bad_since += nonfinite;
        rc = update_emas(&L, st);
        int64_t before = L.nimg;
        L.nimg += o->batch;
        L.step++;
        L.loss_sum += loss;
        L.steps_since++;
        images_since += o->batch;
        if (L.rank != 0) /* rank 0 writes; the others keep the interval's sums alike for a resume */
            continue;
        if (rc == 0 && (crossed(before, L.nimg, o->status_every) || L.nimg >= o->duration)) {
            rc = status_line(&L, log, L.loss_sum / (double)L.steps_since, edm_now_seconds() - t0, images_since, lr,
                             L.bad_since, st);
            t0 = edm_now_seconds();
            L.loss_sum = 0;
            L.steps_since = L.bad_since = images_since = 0;
        }
        if (rc == 0 && (crossed(before, L.nimg, o->snapshot_every) || (L.nimg >= o->duration && o->snapshot_every)))
            rc = write_snapshots(&L, st);
        if (rc == 0 && crossed(before, L.nimg, o->checkpoint_every))
            rc = write_checkpoint(&L, st);
    }
    /* the ranks end the same: every one holds what rank 0 writes */
    if (rc == 0 && L.dist)
        rc = check_same_state(&L, "at the end", st);
    /* the end of a run, or a stop: always leave a checkpoint to resume from */
    if (rc == 0 && joined && L.rank == 0)
        rc = write_checkpoint(&L, st);
    if (L.dist && joined && !edm_dist_broken(L.dist))
        rc = agree(&L, rc, 0, NULL, "the last checkpoint", st);
    if (rc == 0 && stopped && log)
        fprintf(log, "stopped at kimg %.3f; resume with --resume\n", (double)L.nimg / 1000);
    edm_nccl_close(nccl);
    edm_loader_free(ld);
    teardown(&L);
    return rc;
}
