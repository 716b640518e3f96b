/* The edmc command line: one function per subcommand.  Each returns the
 * process exit status (0 ok, 1 error in the input, 2 usage). */
#ifndef EDMC_CLI_H
#define EDMC_CLI_H

#include "compiler/elaborate.h"

#define CLI_MAX_DEFINES 64

/* Options shared by the front-end commands. */
typedef struct {
    const char *file;
    edm_define defines[CLI_MAX_DEFINES];
    int ndefines;
    const char *stage;  /* dump: ir */
    const char *format; /* dump: text, xml, dot */
    const char *output; /* -o */
    int json;           /* info --json */
    int params;         /* info --params */
} cli_front_opts;

int cli_parse_front(int argc, char **argv, cli_front_opts *o, const char *cmd);
int cmd_check(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_dump(int argc, char **argv);

#endif
