/* The edmc.* keys of safetensors metadata, each named once: what weights,
 * snapshots, checkpoints and imports record, and the readers look up.
 * (docs/cli.md: init, train, generate, phema, import.) */
#ifndef EDMC_META_KEYS_H
#define EDMC_META_KEYS_H

#define EDM_META_MODEL "edmc.model"   /* the .edm file (absolute path) */
#define EDM_META_CONFIG "edmc.config" /* every compile-time parameter's value, JSON of .edm text */
#define EDM_META_SOURCE "edmc.source" /* the model's source files (runtime/model_source.h) */
#define EDM_META_RUN "edmc.run"       /* a training run's settings (runtime/train_run.h) */
#define EDM_META_NIMG "edmc.nimg"     /* images trained on */
#define EDM_META_STEP "edmc.step"     /* checkpoints: optimizer steps taken */
#define EDM_META_SEED_BATCH "edmc.seed_batch"           /* checkpoints: the data order's seed and batch */
#define EDM_META_STATUS_INTERVAL "edmc.status_interval" /* checkpoints: the status interval */
#define EDM_META_EMA_STD "edmc.ema_std" /* checkpoints: the EMAs' sigma_rel */
#define EDM_META_IMPORT "edmc.import"   /* imports: the file the weights came from */
#define EDM_META_PHEMA_PREFIX "edmc.phema."            /* the keys below */
#define EDM_META_PHEMA_KIMG "edmc.phema.kimg"          /* snapshots, reconstructions: the profile's end, kimg */
#define EDM_META_PHEMA_STD "edmc.phema.std"            /* the profile's sigma_rel */
#define EDM_META_PHEMA_NIMG "edmc.phema.nimg"          /* reconstructions: the profile's end, images */
#define EDM_META_PHEMA_COEFS "edmc.phema.coefs"        /* reconstructions: each snapshot's coefficient, JSON */

#endif
