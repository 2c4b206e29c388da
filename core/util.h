/* util.h — small helpers every core module uses: clocks, ids, hashing,
 * error buffers, UTF-8 and blank text. Thread-safe; no state of its own. */
#ifndef PARLEY_UTIL_H
#define PARLEY_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

/* Wall clock in unix milliseconds (for stored timestamps). */
int64_t now_ms(void);
/* Monotonic clock in milliseconds / microseconds (for timeouts, latency). */
int64_t mono_ms(void);
int64_t mono_us(void);

/* Writes a random RFC 4122 version-4 UUID, 36 chars + NUL, into out[37].
 * Returns 0, or -1 if the system's randomness failed. */
int uuid_v4(char out[37]);

/* Hex SHA-256 of len bytes at data into out[65] (64 hex digits + NUL). */
void sha256_hex(const void *data, size_t len, char out[65]);

/* snprintf into an error buffer; safe with err == NULL or errlen == 0.
 * Always returns -1 so callers can `return set_err(...)`. */
int set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies at most dstlen-1 bytes and always terminates (dstlen > 0). */
void str_copy(char *dst, size_t dstlen, const char *src);

/* ---- UTF-8 and text (pure functions: no allocation, any thread) ---- */

/* Decodes the UTF-8 sequence at s[0..n) (n > 0): returns its length in
 * bytes (1 to 4) and stores its code point in *cp; returns 0 when it is
 * not well formed (a stray continuation byte, a truncated sequence, an
 * overlong form, a surrogate, a code point above U+10FFFF), *cp then
 * unchanged. A NUL byte decodes as U+0000 (length 1). */
size_t utf8_decode(const unsigned char *s, size_t n, long *cp);

/* The largest length <= max that does not end inside a UTF-8 character
 * of s. s must hold more than max bytes (s[max] is read); it need not be
 * NUL-terminated. */
size_t utf8_floor(const char *s, size_t max);

/* How many bytes of the NUL-terminated string s to show so that at most
 * max remain, cut on a UTF-8 character boundary: strlen(s) when it fits.
 * Meant for printf's "%.*s" (max must fit an int). */
int utf8_cut(const char *s, size_t max);

/* 1 when the NUL-terminated string s is empty or holds only spaces, tabs,
 * CR and LF; 0 otherwise. */
int str_blank(const char *s);

/* A string naming this process and thread uniquely on this machine,
 * for job lease owners: "<pid>:<tid>:<random hex>". Stable per thread. */
const char *owner_id(void);

/* Returns 1 if pid is alive on this machine, 0 if not. */
int pid_alive(long pid);
#endif
