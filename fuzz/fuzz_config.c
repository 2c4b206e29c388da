/* fuzz_config.c — the configuration parser (core/config.c): the input is a
 * PARLEY_CONFIG file (KEY=VALUE lines, comments, quotes, "export "),
 * written to a scratch file and read with config_load_file onto the
 * defaults, which runs every key's validation (integers, numbers, URLs,
 * origins, secrets, PARLEY_UPSTREAMS' JSON list). Then what the programs
 * do with a loaded configuration: config_check, config_llm,
 * config_node_prefix, config_open_mode, and each key set again to its
 * default (an empty value). Oracle besides the sanitizers: a refused file
 * says why (a message naming the file). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[600];
    if (!path[0])
        snprintf(path, sizeof path, "%s/parley.conf", fz_tmpdir());
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    struct parley_config cfg;
    char err[512];
    if (config_defaults(&cfg) < 0)
        abort();
    err[0] = '\0';
    if (config_load_file(&cfg, path, err, sizeof err) < 0) {
        if (!strstr(err, "parley.conf")) {
            fprintf(stderr, "a refused file without saying where: \"%s\"\n", err);
            abort();
        }
    } else {
        struct llm_config lc;
        config_check(&cfg, err, sizeof err);
        config_llm(&cfg, &lc);
        (void)config_node_prefix(&cfg);
        (void)config_open_mode(&cfg);
        static const char *const keys[] = { "PARLEY_UPSTREAMS", "PARLEY_ALLOWED_ORIGINS",
                                            "PARLEY_JWT_SECRET", "OLLAMA_SERVER", "PARLEY_DB" };
        for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
            if (config_set(&cfg, keys[i], "", err, sizeof err) != 0)
                abort();
    }
    config_cleanup(&cfg);
    return 0;
}
