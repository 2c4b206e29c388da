/* util.h — small helpers every core module uses: clocks, ids, hashing,
 * error buffers. Thread-safe; no state of its own. */
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

/* A string naming this process and thread uniquely on this machine,
 * for job lease owners: "<pid>:<tid>:<random hex>". Stable per thread. */
const char *owner_id(void);

/* Returns 1 if pid is alive on this machine, 0 if not. */
int pid_alive(long pid);
#endif
