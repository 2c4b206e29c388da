/* th.h — Parley's tiny unit-test harness (after redis testhelp.h).
 *
 * A test program is a list of TEST() cases run from main() with RUN().
 * Each case prints one TAP line, "ok N - name" or "not ok N - name",
 * that tests/run.sh counts. CHECK() records a failure with file:line and
 * the expression, and carries on; REQUIRE() also leaves the case.
 * th_done() returns the exit status: 0 only if every case passed.
 */
#ifndef PARLEY_TH_H
#define PARLEY_TH_H
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <inttypes.h>

static int th_cases, th_failed_cases, th_case_failed;

#define TEST(name) static void name(void)

#define CHECK(cond) do { if (!(cond)) { th_case_failed = 1; \
    fprintf(stdout, "#   %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); } } while (0)
#define REQUIRE(cond) do { if (!(cond)) { th_case_failed = 1; \
    fprintf(stdout, "#   %s:%d: REQUIRE(%s) failed\n", __FILE__, __LINE__, #cond); return; } } while (0)
#define CHECK_STR(a, b) do { const char *th_a = (a), *th_b = (b); \
    if (!th_a || !th_b || strcmp(th_a, th_b) != 0) { th_case_failed = 1; \
    fprintf(stdout, "#   %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, \
            #a, th_a ? th_a : "(null)", th_b ? th_b : "(null)"); } } while (0)
#define CHECK_INT(a, b) do { long long th_a = (long long)(a), th_b = (long long)(b); \
    if (th_a != th_b) { th_case_failed = 1; \
    fprintf(stdout, "#   %s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, th_a, th_b); } } while (0)

#define RUN(fn) do { th_case_failed = 0; fflush(stdout); fn(); th_cases++; \
    if (th_case_failed) th_failed_cases++; \
    printf("%s %d - %s\n", th_case_failed ? "not ok" : "ok", th_cases, #fn); fflush(stdout); } while (0)

static inline int th_done(void)
{
    printf("1..%d\n", th_cases);
    return th_failed_cases ? 1 : 0;
}

/* A fresh scratch directory for this test program (created, never reused). */
static inline const char *th_tmpdir(void)
{
    static char dir[256];
    if (!dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/parley-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(dir)) { perror("mkdtemp"); exit(2); }
    }
    return dir;
}
#endif
