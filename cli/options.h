/* One option parser for every edmc command.  A command describes its options
 * in a table (name and aliases, kind, where the value goes, range, default,
 * help); the parser takes `--opt=value` and `--opt value`, checks numbers with
 * one set of number parsers, says "did you mean" for a misspelt option, and
 * prints the command's help (`edmc CMD --help`, `edmc help CMD`) from the
 * same table. */
#ifndef EDMC_CLI_OPTIONS_H
#define EDMC_CLI_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    CLI_FLAG,   /* int, set to 1; takes no value */
    CLI_STRING, /* const char *, pointing into argv */
    CLI_CHOICE, /* const char *, one of the '|'-separated words of arg */
    CLI_INT,    /* int64_t in [lo, hi] */
    CLI_SMALL,  /* int in [lo, hi] (within int's range) */
    CLI_REAL,   /* double in [lo, hi], finite */
    CLI_IMAGES, /* int64_t, a count of images: 4096, 64Ki, 8Mi, 2Gi, 10k, 2M */
    CLI_CALL,   /* call(opts, cmd, name, value) stores it */
} cli_kind;

typedef int (*cli_store_fn)(void *opts, const char *cmd, const char *name, const char *value);

typedef struct {
    const char *names; /* "--seed", or "--dry-run -n": the first is the option, the others its aliases */
    cli_kind kind;
    size_t at;         /* offsetof the value in the command's options */
    size_t given;      /* CLI_GIVEN(field): an int set to 1 when the option is given; 0: none */
    double lo, hi;     /* CLI_INT, CLI_REAL */
    const char *arg;   /* the value's name in help ("N", "FILE"); the words of a CLI_CHOICE */
    const char *def;   /* the default as help shows it, or NULL */
    const char *help;
    cli_store_fn call; /* CLI_CALL; also a CLI_FLAG's, with value NULL, when set */
} cli_option;

/* offsetof + 1, so that 0 can mean "not tracked". */
#define CLI_GIVEN(type, field) (offsetof(type, field) + 1)

typedef struct {
    const char *name;     /* "train" */
    const char *synopsis; /* what follows "edmc train" in the usage line */
    const char *summary;  /* one line */
    const char *file;     /* the positional argument's name ("FILE.edm"), or NULL when there is none */
    const cli_option *tables[4];
    int ntables[4];       /* entries of each table; tables end at the first NULL */
    const char *notes;    /* printed after the options, or NULL */
} cli_command;

#define CLI_COUNT(table) ((int)(sizeof(table) / sizeof((table)[0])))

/* Parses argv[1..] into opts (the positional argument into *file when the
 * command takes one).  Returns 0, 1 when --help was given (the help is
 * printed on stdout), or -1 on a usage error (printed on stderr). */
int cli_parse_command(const cli_command *c, int argc, char **argv, void *opts, const char **file);
void cli_print_help(const cli_command *c, FILE *out);

/* The number parsers every option goes through (each prints the problem,
 * naming the option, and returns -1). */
int cli_parse_int(const char *cmd, const char *name, const char *v, int64_t lo, int64_t hi, int64_t *out);
int cli_parse_real(const char *cmd, const char *name, const char *v, double lo, double hi, double *out);
int cli_parse_images(const char *cmd, const char *name, const char *v, int64_t *out);
/* "0.05,0.10" into up to max values in (lo, hi]; "0.010,0.015,...,0.250"
 * (three dots after two values) is the arithmetic series they start. */
int cli_parse_real_list(const char *cmd, const char *name, const char *v, double lo, double hi, double *out, int max,
                        int *n);

#endif
