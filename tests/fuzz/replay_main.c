/* Replays every file of a corpus directory through the fuzz target, printing
 * one TAP line per file; a crash ends the run (and fails `make check`). */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    DIR *d = opendir(argv[1]);
    if (!d) {
        perror(argv[1]);
        return 1;
    }
    char *names[4096];
    int n = 0;
    struct dirent *ent;
    while ((ent = readdir(d)) && n < 4096) {
        if (ent->d_name[0] == '.')
            continue;
        names[n] = strdup(ent->d_name);
        if (!names[n]) {
            closedir(d);
            return 1;
        }
        n++;
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp);
    int failed = 0;
    for (int i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], names[i]);
        FILE *f = fopen(path, "rb");
        unsigned char *buf = malloc(1 << 20);
        size_t size = 0;
        if (f && buf) {
            size = fread(buf, 1, 1 << 20, f);
            LLVMFuzzerTestOneInput(buf, size);
            printf("ok %d - %s\n", i + 1, names[i]);
        } else {
            printf("not ok %d - %s: cannot read\n", i + 1, names[i]);
            failed++;
        }
        if (f)
            fclose(f);
        free(buf);
        free(names[i]);
    }
    printf("1..%d\n", n);
    return failed ? 1 : 0;
}
