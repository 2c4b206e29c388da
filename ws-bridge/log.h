/* log.h — parley-ws's log line and clock, in a module of their own so that
 * every bridge file can use them without depending on main.c.
 *
 * Lines go to stderr (main.c points stderr at --log FILE and reopens it on
 * SIGHUP): "<ISO-8601 time> parley-ws[<pid>]: <message>".
 * Threads: any thread; one fprintf per line, so lines do not interleave.
 */
#ifndef PARLEY_WS_LOG_H
#define PARLEY_WS_LOG_H
#include <stdint.h>

/* Writes one log line; the message is cut at 1023 bytes. Never pass a
 * secret (a token, a key) in the arguments. */
void wslog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The lws log callback (lws_set_log_level's emit): the same line format,
 * "lws: " before lws's text. */
void wslog_lws(int level, const char *line);
/* Milliseconds on the monotonic clock: for timeouts and ages, not dates. */
int64_t bridge_now_ms(void);
#endif
