/* cmd_token.c — parley token (cli.h; docs/cli.md): an HS256 JWT the servers
 * accept, signed with PARLEY_JWT_SECRET. Core calls only: token_mint.h,
 * config.h. */
#include "cli.h"
#include "token_mint.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_token(struct cli *c, int argc, char **argv)
{
    const char *sub = NULL, *ttl = NULL;
    json_t *claims = json_object();
    char err[256];
    int rc = CLI_USAGE;
    if (!claims)
        return CLI_FAIL;
    if (argc >= 1 && argv[0][0] != '-') {
        /* the older form: parley token SUB [SECONDS] */
        if (argc > 2) {
            rc = cli_usage(c, "unexpected argument '%s'", argv[2]);
            goto out;
        }
        sub = argv[0];
        ttl = argc > 1 ? argv[1] : NULL;
    } else {
        for (int i = 0; i < argc; i++) {
            const char *v;
            int r;
            if ((r = cli_value(argc, argv, &i, "--sub", &sub)) != 0 ||
                (r = cli_value(argc, argv, &i, "--ttl", &ttl)) != 0) {
                if (r < 0) {
                    rc = cli_usage(c, "%s needs a value", argv[i]);
                    goto out;
                }
            } else if ((r = cli_value(argc, argv, &i, "--claim", &v)) != 0) {
                if (r < 0 || token_claim_parse(claims, v, err, sizeof err) < 0) {
                    rc = cli_usage(c, "%s", r < 0 ? "--claim needs KEY=VALUE" : err);
                    goto out;
                }
            } else {
                rc = cli_usage(c, "unexpected argument '%s'", argv[i]);
                goto out;
            }
        }
    }
    if (!sub || !*sub) {
        rc = cli_usage(c, "--sub USER is required (a non-empty user id)");
        goto out;
    }
    int64_t secs = ttl ? token_duration_parse(ttl) : 3600;
    if (secs < 0) {
        rc = cli_usage(c, "--ttl: '%s' is not a duration (a number with s, m, h, d or w: 1h, 30d; "
                          "0: no expiry)", ttl);
        goto out;
    }
    if (config_open_mode(&c->cfg)) {
        rc = cli_fail(c, "PARLEY_JWT_SECRET is not set (open mode needs no token; the servers "
                         "would accept anything)");
        goto out;
    }
    char *tok = token_mint(c->cfg.jwt_secret, sub, secs > 0 ? now_ms() / 1000 + secs : 0, claims);
    if (!tok) {
        rc = cli_fail(c, "cannot make the token (a claim libjwt refused?)");
        goto out;
    }
    printf("%s\n", tok);
    free(tok);
    rc = CLI_OK;
out:
    json_decref(claims);
    return rc;
}
