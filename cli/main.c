/* edmc: the EDM2 graph compiler.  Dispatches to the subcommands; the only
 * place that prints errors and picks exit codes. */
#include "config.h"

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
            "\n"
            "FILE may also be an IR graph written by 'edmc dump --format=xml' (a .xml file).\n"
            "See docs/cli.md for every option.\n");
}

int main(int argc, char **argv)
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
