/* poll_cache.c — what this process knows of a long-poll session
 * (poll_cache.h): a direct-mapped table, one slot per sid hash. */
#include "poll_cache.h"

#include <pthread.h>
#include <string.h>

/* As many as a process may park (poll_park.h: 4,096): with 2,000 sessions
 * waiting in one process, 1,024 slots made about half of their GETs miss
 * and look at the database again (1.8 MiB, touched as sessions come). */
#define KNOWN_SLOTS 4096
static pthread_mutex_t known_lock = PTHREAD_MUTEX_INITIALIZER;
static struct poll_known known[KNOWN_SLOTS];

static struct poll_known *known_slot(const char *sid)
{
    unsigned h = 2166136261u;
    for (const char *p = sid; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return &known[(h ^ (h >> 15)) % KNOWN_SLOTS];
}

int poll_known_get(const char *sid, struct poll_known *out)
{
    pthread_mutex_lock(&known_lock);
    struct poll_known *k = known_slot(sid);
    int hit = strcmp(k->sid, sid) == 0;
    if (hit)
        *out = *k;
    pthread_mutex_unlock(&known_lock);
    return hit;
}

void poll_known_put(const struct poll_known *in)
{
    pthread_mutex_lock(&known_lock);
    *known_slot(in->sid) = *in;
    pthread_mutex_unlock(&known_lock);
}

void poll_known_drop(const char *sid)
{
    pthread_mutex_lock(&known_lock);
    struct poll_known *k = known_slot(sid);
    if (strcmp(k->sid, sid) == 0)
        k->sid[0] = '\0';
    pthread_mutex_unlock(&known_lock);
}
