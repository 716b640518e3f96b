/* edmc: the EDM2 graph compiler.  Dispatches to the subcommands; the only
 * place that prints errors and picks exit codes. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: edmc <command> [options]\n"
            "\n"
            "commands:\n"
            "  check FILE.edm [-D name=value ...]          parse and validate a model\n"
            "  info  FILE.edm [--json | --params] [-D ...]  parameters, multiply-adds, per-op table, memory\n"
            "  dump  FILE.edm [--stage=ir] [--format=text|xml|dot] [-o OUT] [-D ...]\n"
            "  init  FILE.edm [--seed=S] -o W.safetensors [-D ...]     freshly initialised weights\n"
            "  forward FILE.edm --weights=W --input=IN --output=OUT [--allow-nonfinite] [DEVICE]\n"
            "  bench FILE.edm [--mode=forward|train|sample] [--batch=B] [--iters=K] [--json] [DEVICE]\n"
            "  train --model=FILE.edm|--preset=NAME --data=DATASET --outdir=DIR [--batch=B] [--duration=64Ki]\n"
            "        [--batch-gpu=B] [--status=2Ki] [--snapshot=16Ki] [--checkpoint=32Ki] [--lr=..] [--resume]\n"
            "        [--max-nonfinite=2]  (status intervals with a non-finite loss before it stops)\n"
            "  step  FILE.edm --weights=W --batch=IN.safetensors --output=OUT.safetensors [--lr=0.01] [--allow-nonfinite]\n"
            "  phema --indir=DIR --outstd=S1,S2,... --outdir=DIR [--outkimg=K] [--sweep] [FILE.edm]\n"
            "                                               post-hoc EMA reconstruction from snapshots\n"
            "  generate --net=W.safetensors|NET.pkl --seeds=0-63 --outdir=DIR [--grid=PNG] [--steps=32] [--batch=B]\n"
            "           [--class=C] [--guide=G --guidance=W] [--model=FILE.edm -D ...]   sample images (EDM Heun)\n"
            "  import NET.pkl -o W.safetensors              the reference's network pickle as weights + configuration\n"
            "  dataset convert --source=DIR|ZIP --dest=DIR|ZIP [--resolution=WxH] [--transform=T] [--max-images=N]\n"
            "                                               PNG/JPEG images to a training dataset (the reference's layout)\n"
            "\n"
            "DEVICE: [--device=cpu|cuda] [--precision=f32|f64 (cpu), fp16|bf16|fp32 (cuda)] [--threads=N]\n"
            "        [--matmul=cublaslt|generated] [--conv=im2col|implicit] [--no-graph]   (forward, bench, step,\n"
            "        train, generate)\n"
            "FILE may also be an IR graph written by 'edmc dump --format=xml' (a .xml file).\n"
            "See docs/cli.md for every option.\n");
}

static int dispatch(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "info") == 0)
        return cmd_info(argc - 1, argv + 1);
    if (strcmp(cmd, "dump") == 0)
        return cmd_dump(argc - 1, argv + 1);
    if (strcmp(cmd, "train") == 0)
        return cmd_train(argc - 1, argv + 1);
    if (strcmp(cmd, "step") == 0)
        return cmd_step(argc - 1, argv + 1);
    if (strcmp(cmd, "init") == 0)
        return cmd_init(argc - 1, argv + 1);
    if (strcmp(cmd, "forward") == 0)
        return cmd_forward(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0)
        return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "phema") == 0)
        return cmd_phema(argc - 1, argv + 1);
    if (strcmp(cmd, "generate") == 0)
        return cmd_generate(argc - 1, argv + 1);
    if (strcmp(cmd, "import") == 0)
        return cmd_import(argc - 1, argv + 1);
    if (strcmp(cmd, "dataset") == 0)
        return cmd_dataset(argc - 1, argv + 1);
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("edmc %s\n", PACKAGE_VERSION);
        return 0;
    }
    fprintf(stderr, "edmc: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}

/* Whatever a command printed must have reached stdout: `edmc info > /dev/full`
 * fails instead of exiting 0 with nothing written. */
int main(int argc, char **argv)
{
    int rc = dispatch(argc, argv);
    int bad = ferror(stdout);
    errno = 0;
    if (fflush(stdout) != 0 || bad) {
        fprintf(stderr, "edmc: error writing to standard output%s%s\n", errno ? ": " : "", errno ? strerror(errno) : "");
        if (rc == 0)
            rc = 1;
    }
    return rc;
}
