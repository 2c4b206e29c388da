/* replay.c — main() for a fuzz harness outside libFuzzer (make test):
 * runs LLVMFuzzerTestOneInput once on every file of
 * fuzz/regressions/<FUZZ_NAME>/ (the inputs that once crashed, leaked or
 * tripped a sanitizer, kept after their fix) and fuzz/corpus/<FUZZ_NAME>/
 * (the seeds), from the repository root as tests/run.sh runs, and prints
 * one TAP line per directory. A crash or sanitizer report ends the program
 * with a non-zero status, which tests/run.sh counts as a failure; the last
 * "# input" line names the file. Files are run in name order. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FUZZ_NAME
#error "build with -DFUZZ_NAME=\"<harness>\""
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file of dir; returns how many, -1 when dir cannot be read. */
static int replay_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    char **names = NULL;
    int n = 0, cap = 0, ran = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            names = realloc(names, (size_t)cap * sizeof *names);
            if (!names)
                abort();
        }
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n)
        qsort(names, (size_t)n, sizeof *names, by_name);
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        if (f) {
            fseek(f, 0, SEEK_END);
            long len = ftell(f);
            fseek(f, 0, SEEK_SET);
            uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
            if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len)
                abort();
            fclose(f);
            printf("# input %s (%ld bytes)\n", path, len);
            fflush(stdout);
            LLVMFuzzerTestOneInput(buf, (size_t)len);
            free(buf);
            ran++;
        }
        free(names[i]);
    }
    free(names);
    return ran;
}

int main(void)
{
    const char *dirs[] = { "fuzz/regressions/" FUZZ_NAME, "fuzz/corpus/" FUZZ_NAME };
    int t = 0, bad = 0;
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        int n = replay_dir(dirs[i]);
        if (n < 0 && i == 0) {
            printf("ok %d - %s: no regression inputs\n", ++t, dirs[i]);
            continue;
        }
        if (n <= 0) {
            printf("not ok %d - %s: no inputs\n", ++t, dirs[i]);
            bad = 1;
            continue;
        }
        printf("ok %d - %s: %d inputs replayed\n", ++t, dirs[i], n);
    }
    printf("1..%d\n", t);
    return bad;
}
