/* edmc import: the reference's network pickle (network-snapshot-*.pkl, the
 * released edm2-*.pkl models) as a safetensors file that carries its model
 * configuration (runtime/ref_import.h). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "runtime/ref_import.h"
#include "runtime/safetensors.h"
#include "runtime/meta_keys.h"

/* The written file, read back: its tensor count and configuration. */
static int summarize(const char *in, const char *out, edm_status *st)
{
    edm_st_file *f = edm_st_open(out, st);
    if (!f)
        return -1;
    const char *cfg = edm_st_metadata(f, EDM_META_CONFIG), *model = edm_st_metadata(f, EDM_META_MODEL);
    printf("%s: %d tensors -> %s\n  model %s\n  configuration %s\n", in, edm_st_count(f), out, model ? model : "?",
           cfg ? cfg : "{}");
    edm_st_close(f);
    return 0;
}

int cmd_import(int argc, char **argv)
{
    cli_opts o;
    if (cli_parse(argc, argv, "import", OPT_OUTPUT, &o) != 0)
        return 2;
    int rc = 0;
    if (o.ndefines > 0) {
        fprintf(stderr, "edmc import: -D does not apply: the configuration comes from the pickle\n");
        rc = 2;
    } else if (!o.output) {
        fprintf(stderr, "edmc import: give the output file with -o OUT.safetensors\n");
        rc = 2;
    }
    edm_st_writer *w = rc == 0 ? edm_st_writer_new() : NULL;
    edm_status st;
    edm_status_init(&st);
    if (rc == 0 && !w)
        rc = cli_exit_code((edm_nomem(&st), &st));
    if (rc == 0 && (edm_ref_import_any(o.file, w, &st) != 0 || edm_st_writer_write(w, o.output, &st) != 0 ||
                    summarize(o.file, o.output, &st) != 0)) {
        cli_report(NULL, &st);
        rc = cli_exit_code(&st);
    }
    edm_st_writer_free(w);
    cli_opts_free(&o);
    return rc;
}
