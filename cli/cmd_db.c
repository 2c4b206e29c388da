/* cmd_db.c — parley migrate, maintain, backup, db copy (cli.h; docs/cli.md).
 * Core calls only: db.h, jobs.h, evlog.h, ratelimit.h, pollsess.h,
 * housekeep.h, storage/copy.h. */
#include "cli.h"
#include "evlog.h"
#include "housekeep.h"
#include "jobs.h"
#include "pollsess.h"
#include "ratelimit.h"
#include "storage/copy.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

/* Refuses any argument (commands that take none but --help). */
static int no_args(struct cli *c, int argc, char **argv)
{
    return argc > 0 ? cli_usage(c, "unexpected argument '%s'", argv[0]) : CLI_OK;
}

int cmd_migrate(struct cli *c, int argc, char **argv)
{
    if (argc > 0)
        return no_args(c, argc, argv);
    int v = db_schema_version(c->db);
    if (v < 0)
        return cli_fail(c, "%s", db_errmsg(c->db));
    printf("%s: schema version %d\n", db_path(c->db), v);   /* PostgreSQL: redacted */
    return CLI_OK;
}

int cmd_maintain(struct cli *c, int argc, char **argv)
{
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (cli_flag(argv, i, "--json"))
            json = 1;
        else
            return cli_usage(c, "unexpected argument '%s'", argv[i]);
    }
    int64_t now = now_ms();
    int rec = jobs_recover(c->db, c->bell, now);
    int cmp = evlog_compact(c->db, (int64_t)c->cfg.event_grace_s * 1000, now);
    int pr = ratelimit_prune(c->db, 60000, now);
    int total_exp = 0, exp;
    do {                                   /* poll_expire deletes at most 200 a call */
        exp = poll_expire(c->db, now);
        if (exp > 0)
            total_exp += exp;
    } while (exp >= 200);
    char detail[160];
    int opt = hk_optimize(c->db, detail, sizeof detail);
    int failed = rec < 0 || cmp < 0 || pr < 0 || exp < 0 || opt != HK_OK;
    if (failed)
        cli_fail(c, "%s", db_errmsg(c->db));
    if (json) {
        json_t *o = json_pack("{s:i, s:i, s:i, s:i, s:s, s:b}", "jobs_recovered", rec,
                              "events_compacted", cmp, "rate_hits_pruned", pr,
                              "poll_sessions_expired", exp < 0 ? -1 : total_exp,
                              "optimize", opt == HK_OK ? detail : "failed", "ok", !failed);
        int rc = cli_print_json(o);
        return failed ? CLI_FAIL : rc;
    }
    printf("recovered %d jobs, compacted %d events, pruned %d rate hits, expired %d poll sessions\n",
           rec, cmp, pr, exp < 0 ? -1 : total_exp);
    if (opt == HK_OK)
        printf("%s\n", detail);
    return failed ? CLI_FAIL : CLI_OK;
}

int cmd_backup(struct cli *c, int argc, char **argv)
{
    if (argc == 0)
        return cli_usage(c, "FILE is missing");
    if (argc > 1)
        return cli_usage(c, "one FILE only");
    if (argv[0][0] == '-')
        return cli_usage(c, "unknown option '%s'", argv[0]);
    int rc = hk_backup(c->db, argv[0]);
    switch (rc) {
    case HK_OK:
        printf("backed up %s to %s\n", db_path(c->db), argv[0]);
        return CLI_OK;
    case HK_EXISTS:
        return cli_fail(c, "%s exists: give a new file (nothing written)", argv[0]);
    case HK_UNSUPPORTED:
        fprintf(stderr,
                "parley: backup: PARLEY_DB is a PostgreSQL database: back it up with pg_dump,\n"
                "  which takes a consistent snapshot while the servers keep running:\n"
                "    pg_dump --format=custom --file=%s 'postgresql://USER@HOST/DBNAME'\n"
                "  (the connection string of PARLEY_DB; restore into an empty database with\n"
                "    pg_restore --no-owner --dbname='postgresql://USER@HOST/NEWDB' %s\n"
                "  then point PARLEY_DB at it; docs/postgres.md, docs/cli.md)\n",
                argv[0], argv[0]);
        return CLI_FAIL;
    default:
        return cli_fail(c, "%s: %s", argv[0], db_errmsg(c->db));
    }
}

int cmd_db_copy(struct cli *c, int argc, char **argv)
{
    const char *from = NULL, *to = NULL;
    unsigned flags = 0;
    for (int i = 0; i < argc; i++) {
        int r;
        if ((r = cli_value(argc, argv, &i, "--from", &from)) != 0 ||
            (r = cli_value(argc, argv, &i, "--to", &to)) != 0) {
            if (r < 0)
                return cli_usage(c, "%s needs a value", argv[i]);
        } else if (cli_flag(argv, i, "--replace")) {
            flags |= COPY_REPLACE;
        } else {
            return cli_usage(c, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!from || !to)
        return cli_usage(c, "--from and --to are required");
    struct copy_result res;
    char err[1024];
    int rc = copy_run(from, to, flags, &res, err, sizeof err);
    if (res.ntables > 0) {
        printf("%-24s %12s %12s\n", "table", "sqlite", "postgresql");
        for (int k = 0; k < res.ntables; k++) {
            const struct copy_table *t = &res.tables[k];
            if (!t->copied)
                continue;
            printf("%-24s %12lld %12lld%s\n", t->name, (long long)t->source_rows,
                   (long long)t->target_rows,
                   t->source_rows == t->target_rows ? "" : "  MISMATCH");
        }
        for (int k = 0; k < res.ntables; k++) {
            const struct copy_table *t = &res.tables[k];
            if (!t->copied && t->source_rows != 0)
                fprintf(stderr, "parley: db copy: %s (%lld rows) is not in the target: "
                        "not copied\n", t->name, (long long)t->source_rows);
            else if (t->skipped_cols)
                fprintf(stderr, "parley: db copy: %s: column(s) %s not in the target: "
                        "not copied\n", t->name, t->skipped_cols);
        }
    }
    if (rc == COPY_OK) {
        int n = 0;
        for (int k = 0; k < res.ntables; k++)
            n += res.tables[k].copied;
        printf("copied %lld rows in %d tables from %s to %s\n", (long long)res.rows, n, from,
               res.target);
    } else {
        fprintf(stderr, "parley: db copy: %s\n", err);
    }
    copy_result_free(&res);
    return rc == COPY_OK ? CLI_OK : CLI_FAIL;
}
