/* bell.h — the doorbell: a wake-up keyed by channel, across processes
 * (SQLite: one machine) or across nodes (PostgreSQL).
 *
 * Two kinds, one API (bell_open_db picks the kind for PARLEY_DB):
 *  - the FILE bell (SQLite): a small file (<database>-bell) memory-mapped
 *    MAP_SHARED by every process of the machine;
 *  - the LISTENING bell (PostgreSQL): the same counters in process memory,
 *    rung by this process's own bell_ring() and by one listener thread per
 *    process holding its own connection with LISTEN parley_bell
 *    (storage/pg/notify.h). Every event-log append NOTIFYs its channel
 *    inside the appending transaction, so a commit on any node rings the
 *    channel on every node. When the listener's connection is lost it is
 *    re-established (with backoff) and then every slot and "any" is rung,
 *    so followers re-read from their cursors: nothing is missed.
 *    bell_ring() on it rings this process only (a ring that must cross
 *    nodes is a NOTIFY in the writing transaction).
 *
 * It holds BELL_SLOTS 32-bit counters; a channel hashes to one slot.
 * bell_ring() increments the slot and, only if someone sleeps on it, wakes
 * them with a futex. bell_wait() sleeps in the kernel (no CPU, no
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

/* THE way a program opens its doorbell: db_spec is PARLEY_DB as configured.
 * A path (SQLite): the file bell "<db_spec>-bell" (ident_bell_path,
 * bell_open). A PostgreSQL connection string: a listening bell whose
 * listener has connected and runs LISTEN before this returns (its thread
 * then keeps it, reconnecting when it is lost); it connects with
 * application_name "parley-bell/<pid>". Returns a new handle (bell_close),
 * or NULL with a message in err (never the password). The caller owns the
 * handle; share it between threads, and use bell_open_handle for a part of
 * the program that must be stopped on its own. */
parley_bell *bell_open_db(const char *db_spec, char *err, size_t errlen);
/* Maps (creating if needed, mode 0660 minus umask) the bell file at path.
 * Returns a new handle or NULL with a message in err. */
parley_bell *bell_open(const char *path, char *err, size_t errlen);
/* A bell whose counters live in this process's memory and no listener:
 * rings reach this process only (the listening bell before its listener
 * starts; tests). New handle, or NULL with err. */
parley_bell *bell_open_local(char *err, size_t errlen);
/* A second handle on b's doorbell: the same counters (and listener), its
 * own stop: bell_wake_all on it stops waits on it only and never the
 * listener. The two may be closed in any order (the counters and listener
 * go with the last). New handle, or NULL with err. */
parley_bell *bell_open_handle(parley_bell *b, char *err, size_t errlen);
/* Closes the handle; accepts NULL. The last handle of a doorbell unmaps it
 * (a file is never removed) and stops (joins) and frees its listener. Not
 * while another thread uses this handle. */
void bell_close(parley_bell *b);

/* Current counter of the channel's slot. */
uint32_t bell_peek(parley_bell *b, const char *channel);
/* The slot of a channel: a pure function of its name, the same for every
 * doorbell and handle (a file's or a database's). For a caller that peeks
 * the same channels again and again (a watcher walking its channels on
 * every ring): computed once, then bell_peek_slot() skips hashing the
 * name. Any thread. */
uint32_t bell_slot_of(const char *channel);
/* bell_peek() of the channel whose bell_slot_of() is slot. */
uint32_t bell_peek_slot(parley_bell *b, uint32_t slot);
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
/* Advances every slot and "any", waking every sleeper on the doorbell (of
 * every process, for the file bell): each re-reads from its cursor. The
 * listener calls it once its LISTEN connection is back after a loss. */
void bell_ring_all(parley_bell *b);

/* Shutdown: wakes every thread of this process sleeping in bell_wait() or
 * bell_wait_any() on this handle, at once, and makes every later wait on it
 * return -1 at once (the handle is "stopped"; it stays usable for rings and
 * peeks). Waiters must then check their own stop condition (bell_stopped()
 * or the process's flag), so they need no time slices to notice a
 * shutdown. Sleepers of other processes on the same slots may see one
 * spurious wake-up. Safe from any thread (the FastCGI signal thread calls
 * it); returns within ~0.2 s even if a waiter never leaves. */
void bell_wake_all(parley_bell *b);
/* (On the handle bell_open_db returned for PostgreSQL, it also stops the
 * listener thread and joins it, within ~0.2 s: its connection is closed;
 * rings and peeks keep working, this process only.) */
/* 1 once bell_wake_all() was called on this handle. */
int bell_stopped(parley_bell *b);
#endif
