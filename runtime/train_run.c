#include "config.h"

#include "runtime/train_run.h"

#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

char *edm_train_run_json(const edm_train_opts *o)
{
    json_object *j = json_object_new_object();
    json_object *ema = json_object_new_array();
    if (!j || !ema) {
        json_object_put(j);
        json_object_put(ema);
        return NULL;
    }
    for (int e = 0; e < o->nstd; e++)
        json_object_array_add(ema, json_object_new_double(o->std[e]));
    if (o->model)
        json_object_object_add(j, "model", json_object_new_string(o->model));
    json_object_object_add(j, "data", json_object_new_string(o->data ? o->data : ""));
    json_object_object_add(j, "seed", json_object_new_uint64(o->seed));
    json_object_object_add(j, "batch", json_object_new_int64(o->batch));
    json_object_object_add(j, "batch_gpu", json_object_new_int64(o->batch_gpu > 0 ? o->batch_gpu : o->batch));
    json_object_object_add(j, "ref_lr", json_object_new_double(o->ref_lr));
    json_object_object_add(j, "ref_batches", json_object_new_double(o->ref_batches));
    json_object_object_add(j, "rampup_Mimg", json_object_new_double(o->rampup_mimg));
    json_object_object_add(j, "ema", ema);
    json_object_object_add(j, "snapshot_fp32", json_object_new_boolean(o->snapshot_fp32));
    /* recorded, not enforced: a resumed run may move to another device */
    int cuda = o->backend.device == EDM_DEVICE_CUDA;
    json_object_object_add(j, "device", json_object_new_string(cuda ? "cuda" : "cpu"));
    json_object_object_add(j, "precision",
                           json_object_new_string(edm_dtype_name(cuda ? o->backend.storage : o->backend.cpu.compute)));
    const char *text = json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN);
    char *s = text ? strdup(text) : NULL;
    json_object_put(j);
    return s;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int edm_train_newest_checkpoint(const char *dir, const char *before, char *out, size_t size, edm_status *st)
{
    DIR *d = opendir(dir);
    out[0] = '\0';
    if (!d)
        return edm_fail(st, EDM_ERR_IO, EDM_NO_LOC, "--resume: cannot open '%s': %s", dir, strerror(errno));
    char best[256] = "";
    struct dirent *ent;
    while ((ent = readdir(d))) {
        const char *n = ent->d_name;
        if (strncmp(n, "training-state-", 15) == 0 && ends_with(n, ".safetensors") && strlen(n) < sizeof best &&
            strcmp(n, best) > 0 && (!before[0] || strcmp(n, before) < 0))
            snprintf(best, sizeof best, "%s", n);
    }
    closedir(d);
    if (best[0])
        snprintf(out, size, "%s/%s", dir, best);
    return 0;
}

int edm_train_folder_has_run(const char *dir, char *what, size_t size)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int found = 0;
    struct dirent *ent;
    while (!found && (ent = readdir(d))) {
        const char *n = ent->d_name;
        if (strstr(n, ".tmp."))
            continue; /* an interrupted write, removed when a run starts */
        if (strncmp(n, "training-state-", 15) == 0 || strncmp(n, "network-snapshot-", 17) == 0) {
            found = 1;
        } else if (strcmp(n, "stats.jsonl") == 0) {
            /* an empty one is what a run that failed before its first step leaves */
            char path[4096];
            struct stat sb;
            snprintf(path, sizeof path, "%s/%s", dir, n);
            found = stat(path, &sb) == 0 && sb.st_size > 0;
        }
        if (found)
            snprintf(what, size, "%s", n);
    }
    closedir(d);
    return found;
}

int edm_train_check_fresh(const char *dir, edm_status *st)
{
    char what[256];
    if (!edm_train_folder_has_run(dir, what, sizeof what))
        return 0;
    return edm_fail(st, EDM_ERR_USAGE, EDM_NO_LOC,
                    "'%s' holds a run already (%s): continue it with --resume, or give another --outdir (two runs "
                    "never share a folder)",
                    dir, what);
}

void edm_config_diff(const char *ca, const char *cb, char *why, size_t size)
{
    json_object *ja = ca ? json_tokener_parse(ca) : NULL, *jb = cb ? json_tokener_parse(cb) : NULL;
    snprintf(why, size, "%.200s vs %.200s", ca ? ca : "(none)", cb ? cb : "(none)");
    if (ja && jb && json_object_is_type(ja, json_type_object) && json_object_is_type(jb, json_type_object)) {
        int found = 0;
        json_object_object_foreach(ja, key, va)
        {
            json_object *vb = NULL;
            if (found)
                break;
            if (!json_object_object_get_ex(jb, key, &vb)) {
                snprintf(why, size, "%.100s is set only in the first", key);
                found = 1;
            } else if (strcmp(json_object_get_string(va), json_object_get_string(vb)) != 0) {
                snprintf(why, size, "%.100s = %.100s vs %.100s", key, json_object_get_string(va),
                         json_object_get_string(vb));
                found = 1;
            }
        }
        json_object_object_foreach(jb, key2, vb2)
        {
            json_object *va2 = NULL;
            (void)vb2;
            if (found)
                break;
            if (!json_object_object_get_ex(ja, key2, &va2)) {
                snprintf(why, size, "%.100s is set only in the second", key2);
                found = 1;
            }
        }
    }
    json_object_put(ja);
    json_object_put(jb);
}
