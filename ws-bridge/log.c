/* log.c — parley-ws's log line and clock (log.h). */
#include "log.h"
#include "proto.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int64_t bridge_now_ms(void)
{
    return mono_ms();
}

void wslog(const char *fmt, ...)
{
    char ts[32], msg[1024];
    proto_timestamp(ts, now_ms(), 0);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s parley-ws[%ld]: %s\n", ts, (long)getpid(), msg);
}

void wslog_lws(int level, const char *line)
{
    (void)level;
    char ts[32];
    proto_timestamp(ts, now_ms(), 0);
    fprintf(stderr, "%s parley-ws[%ld]: lws: %s%s", ts, (long)getpid(), line,
            line[0] && line[strlen(line) - 1] == '\n' ? "" : "\n");
}
