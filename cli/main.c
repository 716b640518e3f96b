/* edmc: the EDM2 graph compiler.  Dispatches to the subcommands; the only
 * place that prints errors and picks exit codes. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef int (*command_fn)(int argc, char **argv);

static const struct {
    const char *name;
    command_fn fn;
} commands[] = {
    {"check", cmd_check}, {"info", cmd_info},   {"dump", cmd_dump},   {"train", cmd_train},       {"step", cmd_step},
    {"init", cmd_init},   {"forward", cmd_forward}, {"bench", cmd_bench}, {"phema", cmd_phema}, {"generate", cmd_generate},
    {"plot", cmd_plot},   {"import", cmd_import}, {"dataset", cmd_dataset},
    {"compile", cmd_compile},
};

static command_fn command_named(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return commands[i].fn;
    return NULL;
}

static int dispatch(int argc, char **argv)
{
    if (argc < 2) {
        cli_print_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    command_fn fn = command_named(cmd);
    if (fn)
        return fn(argc - 1, argv + 1);
    if (strcmp(cmd, "help") == 0 && argc > 2) { /* edmc help train: train's own help */
        fn = command_named(argv[2]);
        if (!fn) {
            fprintf(stderr, "edmc help: unknown command '%s'\n", argv[2]);
            cli_print_usage(stderr);
            return 2;
        }
        char *args[] = {argv[2], (char *)"--help", NULL};
        return fn(2, args);
    }
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        cli_print_usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("edmc %s\n", PACKAGE_VERSION);
        return 0;
    }
    fprintf(stderr, "edmc: unknown command '%s'\n", cmd);
    cli_print_usage(stderr);
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
