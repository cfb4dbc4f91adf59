/* loadgen.h: the load generator's parts (bench/loadgen_*.c) and what they share with bench/loadgen.c. */
#ifndef LOADGEN_H
#define LOADGEN_H
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* loadgen.c: say what failed (with errno's message, or a detail) on stderr, and exit with status 2. */
void die(const char *what);
void fail(const char *what, const char *detail);

/* loadgen_addr.c: the ADDRESS argument; a bad one is fail()ed. */
struct target {
    int dgram, family;               /* a datagram scheme (udp, unixdgram); AF_INET, AF_INET6 or AF_UNIX */
    char host[128];                  /* the IP literal of a TCP/UDP address */
    struct sockaddr_storage addr;
    socklen_t addrlen;
};
void parse_address(const char *text, struct target *to);

/* loadgen_hist.c: latencies in microseconds, into a log-linear histogram. */
void hist_add(uint64_t us);
double hist_percentile(double p);  /* the latency a share p of those added are at or below (0 if none) */

/* loadgen_tls.c: TLS (OpenSSL) with -DLOADGEN_TLS, else refusals.  A
 * connection's TLS state is an opaque pointer.  tls_send and tls_recv
 * behave like send() and recv() on a nonblocking socket: a count, 0 for
 * the peer's close (receiving only), or -1 with errno EAGAIN for "not now"
 * (TLS wants to read or write first) or another errno for an error. */
int tls_setup(const char *ca_file, const char *ip);  /* once; 0, or -1 having said why on stderr */
void *tls_new(int fd);                               /* a client on the connected socket fd; NULL on failure */
int tls_handshake(void *t, unsigned *want);          /* 1 done; 0 not yet (*want: EPOLLIN or EPOLLOUT); -1 failed */
ssize_t tls_send(void *t, const char *buf, size_t len);
ssize_t tls_recv(void *t, char *buf, size_t len);
int tls_pending(void *t);                            /* decrypted or read bytes still inside OpenSSL */
void tls_close(void *t);                             /* send close_notify (never waiting for the peer's), free */

#endif
