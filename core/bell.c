/* bell.c — the doorbell: a futex per channel slot, in a shared mapped file
 * (SQLite) or in process memory rung by a PostgreSQL listener.
 *
 * Listening bell (bell_open_local + storage/pg/notify.h; no SQL and no
 * libpq here): the same layout in an anonymous private mapping (private
 * futexes), and the listener thread calls bell_ring / bell_ring_all on it.
 * Handles share a core (counters + listener), reference-counted.
 *
 * Owns: one MAP_SHARED mapping of <database>-bell (see bell.h). Every
 * process of the installation maps the same file; each slot is a pair of
 * 32-bit words, the counter (the futex word) and the number of sleepers.
 * One more such pair, the "any" slot in the header, is advanced by every
 * bell_ring() of every channel, for a process that follows many channels
 * with one sleeping thread (bell_wait_any). While such a process sleeps,
 * every ring costs one FUTEX_WAKE more (docs/PERFORMANCE.md has the cost).
 * Threads: any thread may use a bell; all state lives in the mapping and is
 * touched only with atomic operations. The handle holds process-local
 * counts of its sleepers per slot (atomics too), so that bell_wake_all()
 * can wake exactly the slots this process sleeps on at shutdown.
 *
 * Why bell_wake_all() loses no sleeper: a sleeper raises its local counts,
 * then reads `stopped`; wake_all sets `stopped`, then reads the counts
 * (both sequentially consistent). Either the sleeper sees `stopped` and
 * returns, or wake_all sees it counted and issues FUTEX_WAKE on its slot;
 * since that wake may come just before the sleeper enters FUTEX_WAIT,
 * wake_all repeats it every millisecond until no sleeper is left.
 *
 * Why this is race-free: a sleeper raises the slot's waiter count, then asks
 * the kernel to sleep only if the counter still equals what it saw (the
 * kernel compares and queues atomically). A ringer advances the counter,
 * then reads the waiter count. Both sides use sequentially consistent
 * operations, so at least one of them sees the other: either the ringer
 * sees a sleeper and issues FUTEX_WAKE, or the sleeper's kernel sees the new
 * counter and returns EAGAIN at once.
 *
 * A process killed while asleep leaves its waiter count raised; that costs
 * only an unneeded FUTEX_WAKE per ring on that slot, never a lost wake-up.
 */
#include "bell.h"
#include "ident.h"
#include "storage/pg/notify.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BELL_MAGIC   "PRLYBELL"
#define BELL_VERSION 1u

/* On-disk (and in-memory) layout. Native endianness: the file is only ever
 * shared between processes of one machine. */
struct bell_header {
    char magic[8];          /* BELL_MAGIC, no terminator */
    uint32_t version;       /* BELL_VERSION */
    uint32_t slots;         /* BELL_SLOTS */
    uint32_t slot_size;     /* sizeof(struct bell_slot) */
    struct bell_any {       /* rung by every bell_ring (bell_wait_any) */
        uint32_t seq;
        uint32_t waiters;
    } any;                  /* zero in a new file, like the reserved words */
    uint32_t reserved[9];   /* zero; pads the header to 64 bytes */
};

struct bell_slot {
    uint32_t seq;           /* the futex word; wraps around, compared for != only */
    uint32_t waiters;       /* threads inside bell_wait() on this slot */
};
_Static_assert(sizeof(struct bell_any) == sizeof(struct bell_slot), "any slot is a slot");

struct bell_file {
    struct bell_header hdr;
    struct bell_slot slot[BELL_SLOTS];
};

_Static_assert(sizeof(struct bell_header) == 64, "bell header must be 64 bytes");
_Static_assert((BELL_SLOTS & (BELL_SLOTS - 1)) == 0, "BELL_SLOTS must be a power of two");

/* What every handle on one doorbell shares: the counters (a shared mapping
 * of the file, or process memory for the listening bell), and the
 * PostgreSQL listener that rings them (NULL for the file bell). Freed by
 * the last bell_close of a handle on it. */
struct bell_core {
    struct bell_file *map;  /* sizeof(struct bell_file) bytes */
    int futex_private;      /* FUTEX_PRIVATE_FLAG for process memory, else 0 */
    struct pgn_listener *listener;   /* the PostgreSQL LISTEN thread, or NULL */
    struct parley_bell *lhandle;     /* the handle the listener rings through: not
                                        counted in refs, freed with the core */
    int refs;               /* handles on it; atomics */
};

struct parley_bell {
    struct bell_core *core;
    struct bell_file *map;  /* core->map, for short access */
    int owner;              /* 1: opened the core (bell_wake_all stops its listener) */
    /* Process-local, for bell_wake_all(); atomics only. */
    int stopped;            /* set once by bell_wake_all() */
    uint32_t sleeping;      /* this handle's threads inside a wait */
    uint32_t local[BELL_SLOTS + 1];   /* ... per slot; [BELL_SLOTS] = any */
};

/* FNV-1a over the channel name, folded so the high bits count too. */
static uint32_t slot_of(const char *channel)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)channel; p && *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    h ^= h >> 15;
    return h & (BELL_SLOTS - 1);
}

static struct bell_slot *slot_at(parley_bell *b, uint32_t idx)
{
    if (idx == BELL_SLOTS)
        return (struct bell_slot *)(void *)&b->map->hdr.any;
    return &b->map->slot[idx];
}

static struct bell_slot *slot_for(parley_bell *b, const char *channel)
{
    return slot_at(b, slot_of(channel));
}

static long futex(uint32_t *uaddr, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, uaddr, op, val, ts, NULL, 0);
}

/* Checks the header read from an existing file of size st_size.
 * Returns 0 if it is a doorbell file we can use, -1 with a message. */
static int check_header(const char *path, const struct bell_header *h, ssize_t got,
                        off_t st_size, char *err, size_t errlen)
{
    if (got < (ssize_t)sizeof *h || memcmp(h->magic, BELL_MAGIC, sizeof h->magic) != 0)
        return set_err(err, errlen,
                       "%s: not a Parley doorbell file (bad magic); refusing to "
                       "overwrite it. Remove it if no Parley process is running", path);
    if (h->version != BELL_VERSION)
        return set_err(err, errlen,
                       "%s: doorbell file version %u, this Parley uses %u; stop every "
                       "Parley process and remove the file", path, h->version, BELL_VERSION);
    if (h->slots != BELL_SLOTS || h->slot_size != sizeof(struct bell_slot))
        return set_err(err, errlen,
                       "%s: doorbell file has %u slots of %u bytes, this Parley uses "
                       "%u of %u; stop every Parley process and remove the file", path,
                       h->slots, h->slot_size, (unsigned)BELL_SLOTS,
                       (unsigned)sizeof(struct bell_slot));
    if (st_size != (off_t)sizeof(struct bell_file))
        return set_err(err, errlen,
                       "%s: doorbell file is %lld bytes, expected %zu (truncated or "
                       "corrupt); stop every Parley process and remove the file", path,
                       (long long)st_size, sizeof(struct bell_file));
    return 0;
}

/* Reads the header and size of fd and checks them. 0 / -1. */
static int validate(int fd, const char *path, off_t *size, char *err, size_t errlen)
{
    struct stat st;
    struct bell_header h;
    if (fstat(fd, &st) < 0)
        return set_err(err, errlen, "%s: stat: %s", path, strerror(errno));
    *size = st.st_size;
    if (st.st_size == 0)
        return set_err(err, errlen, "%s: empty doorbell file", path);
    memset(&h, 0, sizeof h);
    ssize_t got = pread(fd, &h, sizeof h, 0);
    if (got < 0)
        return set_err(err, errlen, "%s: read: %s", path, strerror(errno));
    return check_header(path, &h, got, st.st_size, err, errlen);
}

/* Gives an empty file its size and header. The caller holds LOCK_EX. */
static int initialise(int fd, const char *path, char *err, size_t errlen)
{
    struct bell_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, BELL_MAGIC, sizeof h.magic);
    h.version = BELL_VERSION;
    h.slots = BELL_SLOTS;
    h.slot_size = sizeof(struct bell_slot);
    if (ftruncate(fd, (off_t)sizeof(struct bell_file)) < 0)
        return set_err(err, errlen, "%s: cannot size doorbell file: %s", path, strerror(errno));
    if (pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
        return set_err(err, errlen, "%s: cannot write doorbell header: %s", path,
                       strerror(errno));
    return 0;
}

/* A first handle on a new core holding map (futex_private: FUTEX_PRIVATE_FLAG
 * for process memory). NULL when out of memory (map is the caller's then). */
static parley_bell *new_handle(struct bell_file *map, int futex_private)
{
    struct bell_core *c = calloc(1, sizeof *c);
    parley_bell *b = calloc(1, sizeof *b);
    if (!c || !b) {
        free(c);
        free(b);
        return NULL;
    }
    c->map = map;
    c->futex_private = futex_private;
    c->refs = 1;
    b->core = c;
    b->map = map;
    b->owner = 1;
    return b;
}

/* Opens or creates the file. Creation is O_CREAT without O_EXCL, so every
 * opener gets the same inode; whoever finds it empty initialises it under
 * an exclusive flock, and anyone who finds it invalid takes the same lock
 * and looks again, so nobody can see a half-written header and refuse.
 * Only an empty (new) file is ever initialised: a file with content that
 * is not ours is refused, never overwritten. */
parley_bell *bell_open(const char *path, char *err, size_t errlen)
{
    parley_bell *b;
    void *m;
    int fd = -1, locked = 0;
    off_t size = 0;

    if (!path || !*path) {
        set_err(err, errlen, "doorbell: no path given");
        return NULL;
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0660);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot open doorbell file: %s", path, strerror(errno));
        goto error;
    }
    if (validate(fd, path, &size, NULL, 0) < 0) {
        while (flock(fd, LOCK_EX) < 0) {
            if (errno != EINTR) {
                set_err(err, errlen, "%s: cannot lock doorbell file: %s", path,
                        strerror(errno));
                goto error;
            }
        }
        locked = 1;
        if (validate(fd, path, &size, err, errlen) < 0) {
            if (size != 0)
                goto error;             /* someone else's file, or a damaged one */
            if (initialise(fd, path, err, errlen) < 0)
                goto error;
        }
    }
    m = mmap(NULL, sizeof(struct bell_file), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        set_err(err, errlen, "%s: cannot map doorbell file: %s", path, strerror(errno));
        goto error;
    }
    if (!(b = new_handle(m, 0))) {
        munmap(m, sizeof(struct bell_file));
        set_err(err, errlen, "out of memory");
        goto error;
    }
    if (locked)
        flock(fd, LOCK_UN);
    close(fd);                          /* the mapping keeps the file */
    return b;
error:
    if (fd >= 0)
        close(fd);                      /* also drops the flock */
    return NULL;
}

parley_bell *bell_open_local(char *err, size_t errlen)
{
    void *m = mmap(NULL, sizeof(struct bell_file), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        set_err(err, errlen, "doorbell: cannot allocate its counters: %s", strerror(errno));
        return NULL;
    }
    parley_bell *b = new_handle(m, FUTEX_PRIVATE_FLAG);
    if (!b) {
        munmap(m, sizeof(struct bell_file));
        set_err(err, errlen, "out of memory");
    }
    return b;
}

parley_bell *bell_open_handle(parley_bell *b, char *err, size_t errlen)
{
    if (!b) {
        set_err(err, errlen, "doorbell: no handle to share");
        return NULL;
    }
    parley_bell *h = calloc(1, sizeof *h);
    if (!h) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    __atomic_add_fetch(&b->core->refs, 1, __ATOMIC_SEQ_CST);
    h->core = b->core;
    h->map = b->map;
    return h;
}

parley_bell *bell_open_db(const char *db_spec, char *err, size_t errlen)
{
    if (!db_spec || !*db_spec) {
        set_err(err, errlen, "doorbell: PARLEY_DB is empty");
        return NULL;
    }
    if (!pgn_is_conninfo(db_spec)) {
        char path[4096];
        if (ident_bell_path(db_spec, path, sizeof path) < 0) {
            set_err(err, errlen, "doorbell: PARLEY_DB is too long for its doorbell file "
                                 "(<PARLEY_DB>-bell)");
            return NULL;
        }
        return bell_open(path, err, errlen);
    }
    parley_bell *b = bell_open_local(err, errlen);
    if (!b)
        return NULL;
    /* the listener rings through a handle of its own, which lives as long
     * as the counters: any handle may be closed first */
    parley_bell *lh = calloc(1, sizeof *lh);
    if (!lh) {
        bell_close(b);
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    lh->core = b->core;
    lh->map = b->map;
    b->core->lhandle = lh;
    b->core->listener = pgn_listen(db_spec, lh, err, errlen);
    if (!b->core->listener) {
        bell_close(b);
        return NULL;
    }
    return b;
}

void bell_close(parley_bell *b)
{
    if (!b)
        return;
    struct bell_core *c = b->core;
    if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_SEQ_CST) == 0) {
        pgn_free(c->listener);          /* stopped and joined first */
        free(c->lhandle);
        munmap(c->map, sizeof(struct bell_file));
        free(c);
    }
    free(b);
}

uint32_t bell_peek(parley_bell *b, const char *channel)
{
    return __atomic_load_n(&slot_for(b, channel)->seq, __ATOMIC_SEQ_CST);
}

uint32_t bell_slot_of(const char *channel)
{
    return slot_of(channel);
}

uint32_t bell_peek_slot(parley_bell *b, uint32_t slot)
{
    return __atomic_load_n(&slot_at(b, slot & (BELL_SLOTS - 1))->seq, __ATOMIC_SEQ_CST);
}

static void ring_slot(parley_bell *b, struct bell_slot *s)
{
    __atomic_add_fetch(&s->seq, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&s->waiters, __ATOMIC_SEQ_CST) != 0)
        futex(&s->seq, FUTEX_WAKE | b->core->futex_private, INT_MAX, NULL);
}

static struct bell_slot *any_slot(parley_bell *b)
{
    return slot_at(b, BELL_SLOTS);
}

void bell_ring(parley_bell *b, const char *channel)
{
    ring_slot(b, slot_for(b, channel));
    ring_slot(b, any_slot(b));
}

void bell_ring_all(parley_bell *b)
{
    for (uint32_t i = 0; i <= BELL_SLOTS; i++)
        ring_slot(b, slot_at(b, i));
}

static int wait_slot(parley_bell *b, uint32_t idx, uint32_t seen, int timeout_ms)
{
    struct bell_slot *s = slot_at(b, idx);
    if (__atomic_load_n(&b->stopped, __ATOMIC_SEQ_CST))
        return -1;
    if (__atomic_load_n(&s->seq, __ATOMIC_SEQ_CST) != seen)
        return 1;
    if (timeout_ms == 0)
        return 0;
    struct timespec ts, *tsp = NULL;
    if (timeout_ms > 0) {
        ts.tv_sec = timeout_ms / 1000;
        ts.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
        tsp = &ts;
    }
    __atomic_add_fetch(&b->local[idx], 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&b->sleeping, 1, __ATOMIC_SEQ_CST);
    long rc = -1;
    int e = ECANCELED;
    if (!__atomic_load_n(&b->stopped, __ATOMIC_SEQ_CST)) {
        __atomic_add_fetch(&s->waiters, 1, __ATOMIC_SEQ_CST);
        rc = futex(&s->seq, FUTEX_WAIT | b->core->futex_private, seen, tsp);
        e = errno;
        __atomic_sub_fetch(&s->waiters, 1, __ATOMIC_SEQ_CST);
    }
    __atomic_sub_fetch(&b->sleeping, 1, __ATOMIC_SEQ_CST);
    __atomic_sub_fetch(&b->local[idx], 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&b->stopped, __ATOMIC_SEQ_CST))
        return -1;                      /* bell_wake_all: shutting down */
    if (rc == 0)
        return 1;                       /* woken (or spuriously: caller re-checks) */
    switch (e) {
    case EAGAIN:
        return 1;                       /* the slot had already moved */
    case ETIMEDOUT:
        return 0;
    case EINTR:
        return -1;
    default:
        /* EFAULT/EINVAL/ENOSYS cannot happen with a valid mapping; report a
         * wake-up so the caller re-reads its log rather than spin here. */
        return 1;
    }
}

int bell_wait(parley_bell *b, const char *channel, uint32_t seen, int timeout_ms)
{
    return wait_slot(b, slot_of(channel), seen, timeout_ms);
}

uint32_t bell_peek_any(parley_bell *b)
{
    return __atomic_load_n(&any_slot(b)->seq, __ATOMIC_SEQ_CST);
}

int bell_wait_any(parley_bell *b, uint32_t seen, int timeout_ms)
{
    return wait_slot(b, BELL_SLOTS, seen, timeout_ms);
}

void bell_wake_all(parley_bell *b)
{
    if (!b)
        return;
    __atomic_store_n(&b->stopped, 1, __ATOMIC_SEQ_CST);
    if (b->owner)
        pgn_stop(b->core->listener);    /* joined; NULL: no listener */
    /* A sleeper counted but not yet in FUTEX_WAIT misses a wake: repeat
     * until none is left (each leaves within microseconds once woken). */
    for (int round = 0; round < 200; round++) {
        if (__atomic_load_n(&b->sleeping, __ATOMIC_SEQ_CST) == 0)
            return;
        for (uint32_t i = 0; i <= BELL_SLOTS; i++)
            if (__atomic_load_n(&b->local[i], __ATOMIC_SEQ_CST) != 0)
                futex(&slot_at(b, i)->seq, FUTEX_WAKE | b->core->futex_private, INT_MAX, NULL);
        struct timespec ts = { 0, 1000000L };
        nanosleep(&ts, NULL);
    }
}

int bell_stopped(parley_bell *b)
{
    return b && __atomic_load_n(&b->stopped, __ATOMIC_SEQ_CST);
}
