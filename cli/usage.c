/* What each command is for, in one place: `edmc --help` lists it, and each
 * command's --help starts with it (its options come from its option table). */
#include "config.h"

#include <string.h>

#include "cli/cli.h"

static const cli_usage commands[] = {
    {"check", "FILE.edm [-D name=value ...]", "Parses, elaborates and verifies a model.", NULL},
    {"info", "FILE.edm [--json | --params] [--fuse=...] [--device=cuda --batch=B --precision=P] [-D ...]",
     "Parameters, multiply-adds, the per-op table and memory of a model (--device=cuda: the CUDA executor's "
     "memory at that batch and precision).", NULL},
    {"dump", "FILE.edm [--stage=ir|fused|train] [--format=text|xml|dot] [-o OUT] [-D ...]",
     "Prints a model's IR graph or its fused execution plan.", NULL},
    {"compile", "FILE.edm [--device=cpu|cuda] [--arch=sm_80,sm_90] [--batch=B,...] [--precision=P] [--fuse=...] "
                "[--mode=forward|sample|train] [-D ...] -o X.edmpkg",
     "Compiles a model ahead of time into one package that forward, bench and generate run (--package=); "
     "--mode=train packages the training program for train --package= and bench --mode=train.",
     "A package holds the graph, the execution plan, the parameter table, the model's source and, for cuda, "
     "one cubin per architecture and batch; every entry has a SHA-256 in its manifest (docs/packages.md)."},
    {"init", "FILE.edm [--seed=S] -o W.safetensors [-D ...]", "Writes freshly initialised weights.", NULL},
    {"forward", "FILE.edm|--package=X.edmpkg --weights=W --input=IN --output=OUT [DEVICE OPTIONS] [-D ...]",
     "Runs the model on the inputs of a safetensors file.", NULL},
    {"bench", "FILE.edm|--package=X.edmpkg [--mode=forward|train|sample] [--batch=B] [--iters=K] [--json] [DEVICE OPTIONS]",
     "Times a forward pass, a training step or a sampling step.", NULL},
    {"step", "FILE.edm --weights=W --batch=IN.safetensors --output=OUT [--lr=0.01] [DEVICE OPTIONS]",
     "One training step on a given batch (for comparisons with PyTorch).", NULL},
    {"train", "--model=FILE.edm|--preset=NAME|--package=X.edmpkg --data=DATASET --outdir=DIR [options]",
     "Trains with the EDM2 recipe. A folder holds one run: --resume continues it with its own settings.",
     "Counts of images take the suffixes Ki, Mi, Gi, k and M (64Ki = 65536)."},
    {"phema", "--indir=DIR --outstd=S1,S2,... --outdir=DIR [--outkimg=K] [FILE.edm]",
     "Post-hoc EMA: reconstructs EMAs of other lengths from a run's snapshots.", NULL},
    {"generate", "--net=W.safetensors|NET.pkl --seeds=0-63 --outdir=DIR [options]",
     "Samples images (or latents; --vae=VAE.safetensors decodes them to PNGs) with the EDM samplers.", NULL},
    {"plot", "--stats=RUN/stats.jsonl -o LOSS.png | --data=DATASET [--count=16] [--scale=K] -o REAL.png",
     "Pictures of a run: its loss curve, or a grid of a dataset's images.", NULL},
    {"import", "NET.pkl -o W.safetensors", "The reference's network pickle as weights and their configuration.", NULL},
    {"dataset",
     "convert --source=DIR|ZIP --dest=DIR|ZIP [--resolution=WxH] [--transform=T] [--max-images=N]\n"
     "       edmc dataset encode --source=DIR|ZIP --dest=DIR|ZIP --vae=VAE.safetensors [--max-images=N]",
     "Prepares a training dataset in the reference's layout from PNG/JPEG images, or its latents (the Stable "
     "Diffusion VAE) for the img512 models.",
     NULL},
};

const cli_usage *cli_usage_of(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

void cli_print_usage(FILE *out)
{
    fprintf(out, "usage: edmc <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'edmc <command> --help' (or 'edmc help <command>') lists a command's options with their defaults.\n"
                 "FILE may also be an IR graph written by 'edmc dump --format=xml' (a .xml file).\n"
                 "See docs/cli.md for every option.\n");
}
