/* bell.h — the doorbell: a cross-process wake-up keyed by channel.
 *
 * A small file (<database>-bell) is memory-mapped MAP_SHARED by every
 * process. It holds BELL_SLOTS 32-bit counters; a channel hashes to one slot.
 * bell_ring() increments the slot and, only if someone sleeps on it, wakes
 * them with a shared futex. bell_wait() sleeps in the kernel (no CPU, no
 * polling) until the slot moves past the value the caller saw, or timeout.
 * Two channels may share a slot: a waiter may then wake for nothing and
 * must re-check its condition (it always re-reads the event log anyway).
 *
 * Race-free use:   v = bell_peek(b, ch);  read log;  if nothing new:
 *                  bell_wait(b, ch, v, timeout).
 * Threads: a bell may be shared by all threads of a process.
 */
#ifndef PARLEY_BELL_H
#define PARLEY_BELL_H
#include <stddef.h>
#include <stdint.h>

#define BELL_SLOTS 4096

typedef struct parley_bell parley_bell;

/* Maps (creating if needed, mode 0660 minus umask) the bell file at path.
 * Returns a new handle or NULL with a message in err. */
parley_bell *bell_open(const char *path, char *err, size_t errlen);
/* Unmaps; accepts NULL. Does not remove the file. */
void bell_close(parley_bell *b);

/* Current counter of the channel's slot. */
uint32_t bell_peek(parley_bell *b, const char *channel);
/* Advances the channel's slot and wakes every sleeper on it. */
void bell_ring(parley_bell *b, const char *channel);
/* Sleeps while the slot still equals seen, at most timeout_ms (< 0: forever).
 * Returns 1 if the slot moved (or a spurious wake-up), 0 on timeout,
 * -1 when interrupted by a signal (EINTR) or the handle is stopped
 * (bell_wake_all). */
int bell_wait(parley_bell *b, const char *channel, uint32_t seen, int timeout_ms);
/* The "any" slot, advanced by every bell_ring of every channel: a process
 * following many channels (the WebSocket bridge) sleeps on it with one
 * thread, then compares bell_peek() of its channels to what it saw last. */
uint32_t bell_peek_any(parley_bell *b);
int bell_wait_any(parley_bell *b, uint32_t seen, int timeout_ms);

/* Shutdown: wakes every thread of this process sleeping in bell_wait() or
 * bell_wait_any() on this handle, at once, and makes every later wait on it
 * return -1 at once (the handle is "stopped"; it stays usable for rings and
 * peeks). Waiters must then check their own stop condition (bell_stopped()
 * or the process's flag), so they need no time slices to notice a
 * shutdown. Sleepers of other processes on the same slots may see one
 * spurious wake-up. Safe from any thread (the FastCGI signal thread calls
 * it); returns within ~0.2 s even if a waiter never leaves. */
void bell_wake_all(parley_bell *b);
/* 1 once bell_wake_all() was called on this handle. */
int bell_stopped(parley_bell *b);
#endif
