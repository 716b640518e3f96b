/* The names edmc's programs and files share, each spelled once: the inputs
 * and outputs a model's .edm programs declare (docs/language.md) and the
 * runtime binds by name, the tensors of generate's files, and the
 * tensor-name prefixes of training checkpoints.  The edmc.* metadata keys
 * are in runtime/meta_keys.h. */
#ifndef EDMC_INTERFACE_NAMES_H
#define EDMC_INTERFACE_NAMES_H

/* The denoiser program (forward, generate, sample). */
#define EDM_IN_X "x"                       /* noisy images [N, C, H, W] */
#define EDM_IN_SIGMA "sigma"               /* noise levels [N] */
#define EDM_IN_CLASS_LABELS "class_labels" /* one-hot labels [N, label_dim]; absent when unconditional */
#define EDM_OUT_D_X "D_x"                  /* the denoised images [N, C, H, W] */
#define EDM_OUT_LOGVAR "logvar"            /* the uncertainty, one value per sample (optional) */

/* The training program (train, step, phema --eval); class_labels as above. */
#define EDM_IN_IMAGES "images"         /* clean images [N, C, H, W] */
#define EDM_IN_RND_NORMAL "rnd_normal" /* a standard normal draw per image: sigma's log-normal */
#define EDM_IN_UNIT_NOISE "unit_noise" /* standard normal noise [N, C, H, W] */
#define EDM_OUT_LOSS "loss"            /* the weighted loss, per image [N] */

/* generate's files: the initial noise of --noise [N, C, H, W] and the
 * samples of --save-raw [N, C, H, W] (each with class_labels when
 * conditional). */
#define EDM_NOISE_TENSOR "noise"
#define EDM_SAMPLE_TENSOR "sample"

/* Training checkpoints (training-state-*.safetensors): each parameter and
 * buffer under the prefix of its copy. */
#define EDM_CKPT_NET "net."       /* the trained weights */
#define EDM_CKPT_ADAM_M "adam.m." /* Adam's first moments */
#define EDM_CKPT_ADAM_V "adam.v." /* Adam's second moments */
#define EDM_CKPT_EMA_FMT "ema%d." /* the EMA of index %d (0-based, in --ema order) */

#endif
