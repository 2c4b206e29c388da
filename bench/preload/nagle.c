/* nagle.c — an LD_PRELOAD shim for one benchmark experiment: the process
 * it is loaded into cannot turn Nagle's algorithm off. A setsockopt(fd,
 * IPPROTO_TCP, TCP_NODELAY, 1) is answered 0 without reaching the kernel,
 * so the socket keeps the default (Nagle on); every other call goes
 * through. Nchan leaves its WebSocket subscribers' sockets that way (nginx
 * sets TCP_NODELAY on keep-alive connections only), while libwebsockets
 * sets it on every connection the bridge accepts. With Nagle on, a frame
 * written while the one before is not yet acknowledged waits in the kernel
 * and goes out when the acknowledgement arrives: on loopback that work is
 * charged to the client's process, not the server's. bench/ws-fanout.mjs
 * --bridge-preload loads this into the bridge only, to measure how much of
 * the CPU-per-frame gap to Nchan is that accounting. Never for production:
 * it delays every frame that follows an unacknowledged one.
 * Build: make $(BUILD)/bench/nagle.so. */
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    static int (*real)(int, int, int, const void *, socklen_t);
    if (level == IPPROTO_TCP && name == TCP_NODELAY && val && len >= (socklen_t)sizeof(int) &&
        *(const int *)val != 0)
        return 0;
    if (!real)
        real = (int (*)(int, int, int, const void *, socklen_t))dlsym(RTLD_NEXT, "setsockopt");
    return real ? real(fd, level, name, val, len) : -1;
}
