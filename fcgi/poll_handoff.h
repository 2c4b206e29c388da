/* poll_handoff.h — a waiting long-poll GET handed to the WebSocket bridge.
 *
 * Under mod_fcgid every parley.fcgi process serves one request at a time,
 * so a GET waiting for news would hold a whole process for up to its wait
 * (30 s): a help desk with more viewers than FcgidMaxProcessesPerClass
 * queues in Apache (mod_fcgid retries once a second) or gets 503s. When the
 * bridge runs (its beacon in the doorbell file is fresh, core/bell.h) and
 * PARLEY_POLL_HANDOFF names the URL path under which the web server proxies
 * it (parley-websocket.conf: "/parley-ws"), such a GET is answered at once
 * with a CGI local redirect ("Status: 200" + "Location: /parley-ws/api/poll/
 * {sid}?{query}"): Apache re-runs it internally, as the same GET with the
 * same headers, against the bridge, which parks it in its event loop
 * (ws-bridge/httpfront.c) and answers it byte for byte as parley.fcgi would.
 * The process is free again at once. Without a fresh beacon (no bridge, or
 * it stopped or died) the GET waits in its process as before, so nothing
 * depends on the bridge running.
 * Only mod_fcgid's processes have PARLEY_POLL_HANDOFF (parley-websocket.conf
 * sets it inside <IfModule mod_fcgid.c>): there even a parked GET would hold
 * the process, since mod_fcgid sends a process one request at a time, so
 * the handoff comes before parking. The bridge clears the setting for
 * itself (it must never hand a GET to itself).
 * Threads: any worker thread, no state of its own.
 */
#ifndef PARLEY_POLL_HANDOFF_H
#define PARLEY_POLL_HANDOFF_H
#include "poll_get.h"

/* Beacon older than this: the bridge is taken for gone (it stamps every
 * second). */
#define POLL_HANDOFF_BEACON_MS 3000

/* Hands g (about to sleep, nothing to answer yet) to the bridge when
 * PARLEY_POLL_HANDOFF is a valid path ("/..." of printable characters, no '?' or '#'), the bridge's
 * beacon is fresh and the process is not stopping: writes the redirect
 * response. 1 answered (the handler returns), 0 not (g unchanged: wait in
 * the thread). */
int poll_handoff(struct poll_get *g);
/* Where g would go, into out ("<PARLEY_POLL_HANDOFF><path>?<query>"): 0,
 * or -1 when the prefix is unusable, the result does not fit or holds a
 * character that may not appear in a header. No I/O; for tests too. */
int poll_handoff_location(const char *prefix, const char *path, const char *query, char *out,
                          size_t outlen);
#endif
