/* What a training run records about itself and how its folder is read back:
 * the settings it was started with ("edmc.run" metadata in every snapshot and
 * checkpoint), its newest checkpoint, and whether a folder holds a run at all
 * (one run per folder: a new one never starts where an older one left files). */
#ifndef EDMC_TRAIN_RUN_H
#define EDMC_TRAIN_RUN_H

#include <stddef.h>

#include "compiler/status.h"
#include "runtime/train_loop.h"

/* The settings that make a run what it is, as one JSON object (malloc'd;
 * NULL when out of memory): model, data, seed, batch, batch_gpu, ref_lr,
 * ref_batches, rampup_Mimg, ema, snapshot_fp32, and (recorded only) device and
 * precision. */
char *edm_train_run_json(const edm_train_opts *o);

/* The newest dir/training-state-*.safetensors whose name sorts before
 * `before` (all when before is ""), into out; "" when there is none. */
int edm_train_newest_checkpoint(const char *dir, const char *before, char *out, size_t size, edm_status *st);

/* 1 when dir holds a run's files (a checkpoint, a snapshot or a stats.jsonl
 * with records), naming one of them in what; 0 when not (or dir is absent). */
int edm_train_folder_has_run(const char *dir, char *what, size_t size);

/* Fails (a usage error saying to use --resume) when dir holds a run. */
int edm_train_check_fresh(const char *dir, edm_status *st);

/* Names the first parameter in which two edmc.config JSON objects differ
 * ("model_channels = 16 vs 32", "dropout is set only in the first"). */
void edm_config_diff(const char *ca, const char *cb, char *why, size_t size);

#endif
