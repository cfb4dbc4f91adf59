/* loadgen: the benchmark's load generator, one epoll loop in C.
 *
 * Why C: the client must never be what limits the figures.  One core of
 * it drives a hand-written Python selectors loop much faster than any
 * library under test; the harness prints the proof (the bare loop against
 * the libraries, and this program's own CPU use).  docs/benchmarks.md
 * describes the modes; in short:
 *
 * stream (tcp:HOST:PORT, tcp:[::1]:PORT, unix:PATH): N connections with D
 *   messages in flight each (D = 1 is ping-pong).  A message is SIZE bytes
 *   ending in '\n'; servers echo bytes, so a reply is complete when SIZE
 *   more echoed bytes have arrived, however the server cut or joined its
 *   writes, and every byte is checked.  First, optionally, K idle
 *   connections (printing {"event":"idle-open"...} and, with --hold,
 *   waiting for a line on stdin meanwhile) and S slowloris connections.
 * datagram (udp:HOST:PORT, unixdgram:PATH): N sockets, one numbered
 *   datagram in flight each, resent with a new number after a timeout.
 * --tls (TCP): connections are open once their TLS handshake is done
 *   (loadgen_tls.c; --tls-ca FILE: verify the server against it).  --once:
 *   a connection carries one message, then closes and a new one takes its
 *   place; a request's latency then runs from its connect().
 *
 * Then: warm up, print {"event":"measure"}, measure, print one JSON result
 * line; with --linger, wait for a line on stdin before closing anything, so
 * that the harness reads the CPU times at the window's end before the
 * servers start tearing connections down.  Every wait has a deadline.  Latency runs from a message's send()
 * to its last echoed byte, into a log-linear histogram (loadgen_hist.c).
 * Build: bench/build.py (cc -O2 loadgen*.c; with TLS, -DLOADGEN_TLS -lssl -lcrypto).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include "loadgen.h"

enum { ACTIVE = 1, IDLE = 2, SLOW = 3, DGRAM = 4 };
enum { CONNECTING = 0, OPEN = 1, DEAD = 2, HANDSHAKING = 3 };
#define MAXDEPTH 1024

struct conn {
    int fd, kind, state, served, wout; /* wout: EPOLLOUT is registered */
    uint64_t sent_msgs, done_msgs;   /* messages handed to send(), replies complete */
    uint64_t sent_bytes, recv_bytes; /* bytes written, echoed bytes read */
    uint64_t queued, due;            /* bytes the kernel has not taken yet; slowloris: next byte, datagram: resend time */
    uint32_t seq;                    /* datagram sequence number in flight */
    uint64_t *stamps;                /* ring of send times, one per message in flight */
    uint64_t born;                   /* when its connect() began (--once: the request's start) */
    void *tls;                       /* its TLS state (--tls), else NULL */
};

static struct {
    int conns, depth, size, idle, slow, hold, linger, cpu, batch, tls, once;
    double warmup, settle, duration, connect_timeout;
    int slow_interval_ms, dgram_timeout_ms;
    const char *addr_text, *client_dir, *tls_ca;
    struct target to;  /* the server */
} opt = {.conns = 1, .depth = 1, .size = 32, .cpu = -1, .batch = 256, .warmup = 0.5, .settle = 1.0,
         .duration = 2.0, .connect_timeout = 10.0, .slow_interval_ms = 100, .dgram_timeout_ms = 200};

static int ep;
static struct conn *all;
static int nall;
static char *pattern;  /* the message stream: SIZE-byte lines, repeated */
static unsigned long long errors, lost, stale, idle_closed, slow_closed, connect_failed, requests;
static int measuring, nserved, cycling;  /* cycling: --once, past the first connections */

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(2);
}

void fail(const char *what, const char *detail) {
    fprintf(stderr, "loadgen: %s: %s\n", what, detail);
    exit(2);
}

static void record(struct conn *c, uint64_t sent_at, uint64_t now) {
    if (!c->served) c->served = 1, nserved++;
    if (measuring) requests++, hist_add((now - sent_at) / 1000);
}

/* ------------------------------------------------------------ connections */

static void watch(struct conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - all)};
    if (epoll_ctl(ep, op, c->fd, &ev) < 0) die("epoll_ctl");
}

/* Close a connection (with TLS, sending close_notify first). */
static void drop(struct conn *c) {
    if (c->tls) tls_close(c->tls);
    c->tls = NULL;
    close(c->fd);  /* also leaves the epoll set */
    c->fd = -1;
    c->state = DEAD;
}

static void kill_conn(struct conn *c, int counted_as_error) {
    if (c->state == DEAD) return;
    if (c->state == CONNECTING || c->state == HANDSHAKING) *(cycling && c->kind == ACTIVE ? &errors : &connect_failed) += 1;
    else if (c->kind == IDLE) idle_closed++;
    else if (c->kind == SLOW) slow_closed++;
    else if (counted_as_error) errors++;
    drop(c);
}

/* Start a nonblocking connect; the connection becomes OPEN on EPOLLOUT (with TLS, once its handshake is done). */
static void start_connect(struct conn *c) {
    c->fd = socket(opt.to.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket");
    if (opt.to.family != AF_UNIX) setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    c->state = CONNECTING;
    c->born = now_ns();
    if (connect(c->fd, (struct sockaddr *)&opt.to.addr, opt.to.addrlen) < 0 && errno != EINPROGRESS && errno != EAGAIN) {
        kill_conn(c, 1);
        return;
    }
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
}

/* Bytes out and in, in the clear or through TLS: as send() and recv() on a nonblocking socket. */
static ssize_t put(struct conn *c, const char *b, size_t n) { return c->tls ? tls_send(c->tls, b, n) : send(c->fd, b, n, MSG_NOSIGNAL); }
static ssize_t get(struct conn *c, char *b, size_t n) { return c->tls ? tls_recv(c->tls, b, n) : recv(c->fd, b, n, 0); }

static void want_output(struct conn *c, int want) {
    if (want != c->wout) {  /* one epoll_ctl only when the interest changes */
        c->wout = want;
        watch(c, EPOLLIN | (want ? EPOLLOUT : 0), EPOLL_CTL_MOD);
    }
}

static void flush(struct conn *c) {
    while (c->queued) {
        size_t off = (size_t)(c->sent_bytes % (uint64_t)opt.size);
        size_t len = c->queued < (uint64_t)opt.size * MAXDEPTH ? (size_t)c->queued : (size_t)opt.size * MAXDEPTH;
        ssize_t n = put(c, pattern + off, len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            kill_conn(c, 1);
            return;
        }
        c->sent_bytes += (uint64_t)n;
        c->queued -= (uint64_t)n;
    }
    want_output(c, c->queued != 0);
}

static void send_messages(struct conn *c, int count, uint64_t now) {
    for (int i = 0; i < count; i++) c->stamps[(c->sent_msgs++) % (uint64_t)opt.depth] = now;
    c->queued += (uint64_t)count * (uint64_t)opt.size;
    flush(c);
}

/* Send the datagram in flight.  A full peer queue (a Unix datagram server
 * holds only net.unix.max_dgram_qlen datagrams, 10 by default) is no loss:
 * wait for EPOLLOUT and send it then. */
static void push_datagram(struct conn *c, uint64_t now) {
    char msg[4096];
    memcpy(msg, pattern, (size_t)opt.size);
    snprintf(msg, 9, "%08x", c->seq);
    msg[8] = pattern[8];  /* snprintf's NUL */
    int blocked = 0;
    if (send(c->fd, msg, (size_t)opt.size, 0) < 0) {
        if (errno == EAGAIN || errno == ENOBUFS) blocked = 1;
        else if (errno != ECONNREFUSED && errno != EINTR) { kill_conn(c, 1); return; }
    }
    c->due = blocked ? UINT64_MAX : now + (uint64_t)opt.dgram_timeout_ms * 1000000u;
    want_output(c, blocked);
}

static void send_datagram(struct conn *c, uint64_t now) {
    c->seq++;
    c->stamps[0] = now;
    push_datagram(c, now);
}

/* --once: close a connection whose message was answered and open a new one in its place. */
static void renew(struct conn *c) {
    drop(c);
    c->sent_msgs = c->done_msgs = c->sent_bytes = c->recv_bytes = c->queued = 0, c->wout = 0;
    start_connect(c);
}

/* Readable stream connection: read everything, check it, account replies. */
static void on_stream_input(struct conn *c, uint64_t now) {
    static char buf[65536];
    for (;;) {
        ssize_t n = get(c, buf, sizeof buf);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0) { kill_conn(c, c->kind == ACTIVE); return; }  /* EOF or an error */
        if (c->kind != ACTIVE) continue;  /* idle: a surprise; slowloris: an echo of its bytes */
        /* The pattern buffer holds MAXDEPTH + 1 messages: compare in slices that fit it. */
        size_t step = (size_t)opt.size * MAXDEPTH;
        for (size_t at = 0; at < (size_t)n; at += step) {
            size_t len = (size_t)n - at < step ? (size_t)n - at : step;
            size_t off = (size_t)((c->recv_bytes + at) % (uint64_t)opt.size);
            if (memcmp(buf + at, pattern + off, len)) { fprintf(stderr, "loadgen: wrong bytes echoed\n"); kill_conn(c, 1); return; }
        }
        c->recv_bytes += (uint64_t)n;
        if (c->recv_bytes > c->sent_bytes) { fprintf(stderr, "loadgen: more echoed than sent\n"); kill_conn(c, 1); return; }
        uint64_t done = c->recv_bytes / (uint64_t)opt.size;
        int fresh = (int)(done - c->done_msgs);
        for (; c->done_msgs < done; c->done_msgs++) record(c, opt.once ? c->born : c->stamps[c->done_msgs % (uint64_t)opt.depth], now);
        if (fresh && cycling) { renew(c); return; }  /* --once: its one message is answered */
        if (fresh) send_messages(c, fresh, now);  /* as many new messages as replies completed */
        /* A short read drained the socket (level-triggered epoll reports any more); with TLS, OpenSSL may hold more. */
        if (c->state == DEAD || ((size_t)n < sizeof buf && !(c->tls && tls_pending(c->tls)))) return;
    }
}

static void on_datagram(struct conn *c, uint64_t now) {
    char buf[4096];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR) kill_conn(c, 1);
            return;
        }
        char want[9];
        snprintf(want, sizeof want, "%08x", c->seq);
        if (n != opt.size || memcmp(buf, want, 8)) { stale++; continue; }
        if (memcmp(buf + 8, pattern + 8, (size_t)opt.size - 8)) { errors++; continue; }
        record(c, c->stamps[0], now);
        send_datagram(c, now);
        return;  /* one datagram in flight: nothing more to read until the next reply */
    }
}

/* Connected (with TLS: secured): wait for input; --once: its message goes at once. */
static void opened(struct conn *c, uint64_t now) {
    c->state = OPEN;
    c->wout = 0;
    watch(c, EPOLLIN, EPOLL_CTL_MOD);
    if (c->kind == SLOW) c->due = now + (uint64_t)(rand() % opt.slow_interval_ms) * 1000000u;
    if (cycling && c->kind == ACTIVE) send_messages(c, 1, now);
}

/* One step of the TLS handshake, as far as it goes without waiting. */
static void handshake(struct conn *c, uint64_t now) {
    unsigned want = 0;
    int done = tls_handshake(c->tls, &want);
    if (done < 0) kill_conn(c, 1);
    else if (done) opened(c, now);
    else watch(c, want, EPOLL_CTL_MOD);
}

static void on_event(struct conn *c, uint32_t events, uint64_t now) {
    if (c->state == DEAD) return;
    if (c->state == HANDSHAKING) { handshake(c, now); return; }
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) { kill_conn(c, 0); return; }
        if (!opt.tls) { opened(c, now); return; }
        if (!(c->tls = tls_new(c->fd))) { kill_conn(c, 1); return; }
        c->state = HANDSHAKING;
        handshake(c, now);
        return;
    }
    if (c->kind == DGRAM) {
        if ((events & EPOLLOUT) && c->wout) push_datagram(c, now);
        if (c->state != DEAD && (events & EPOLLIN)) on_datagram(c, now);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_stream_input(c, now);
    if (c->state != DEAD && (events & EPOLLOUT)) flush(c);
}

/* Timers, checked after every epoll_wait (at most 5 ms apart): slowloris
 * bytes, and datagrams unanswered for too long (counted lost, sent anew). */
static void tick(uint64_t now) {
    for (int i = 0; (opt.slow || opt.to.dgram) && i < nall; i++) {
        struct conn *c = &all[i];
        if (c->state != OPEN || now < c->due || (c->kind != SLOW && c->kind != DGRAM)) continue;
        if (c->kind == DGRAM) {
            lost += (unsigned long long)measuring;
            send_datagram(c, now);
        } else {
            c->due += (uint64_t)opt.slow_interval_ms * 1000000u;
            if (put(c, "x", 1) < 0 && errno != EAGAIN) kill_conn(c, 0);
        }
    }
}

/* The event loop: run until `until` (ns).  With `upto`, also connect
 * all[from..upto), at most opt.batch in progress at once, and return as soon
 * as none is CONNECTING any more; at `until`, those still are given up. */
static void run(uint64_t until, int from, int upto) {
    struct epoll_event evs[512];
    int next = from;
    for (;;) {
        uint64_t now = now_ns();
        if (upto) {
            int pending = 0;
            for (int i = from; i < next; i++) pending += all[i].state == CONNECTING || all[i].state == HANDSHAKING;
            while (next < upto && pending < opt.batch) { start_connect(&all[next++]); pending++; }
            if (!pending && next >= upto) return;
        }
        if (now >= until) {
            for (int i = from; i < upto; i++) if (all[i].state == CONNECTING || all[i].state == HANDSHAKING) kill_conn(&all[i], 0);
            return;
        }
        int wait_ms = (int)((until - now) / 1000000u) + 1;
        if ((opt.slow || opt.to.dgram || upto) && wait_ms > 5) wait_ms = 5;  /* timers to check */
        int n = epoll_wait(ep, evs, 512, wait_ms);
        if (n < 0 && errno != EINTR) die("epoll_wait");
        now = now_ns();
        for (int i = 0; i < n; i++) on_event(&all[evs[i].data.u32], evs[i].events, now);
        tick(now);
    }
}

/* Datagram mode: N sockets, connected to the server (so only its replies
 * arrive), a Unix one bound to a path first so that it can be answered. */
static void open_datagrams(void) {
    for (int i = opt.idle + opt.slow; i < nall; i++) {
        struct conn *c = &all[i];
        c->kind = DGRAM;
        if ((c->fd = socket(opt.to.family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) die("socket");
        if (opt.to.family == AF_UNIX) {
            struct sockaddr_un me = {.sun_family = AF_UNIX};
            if (!opt.client_dir) fail("unixdgram needs", "--client-dir");
            snprintf(me.sun_path, sizeof me.sun_path, "%s/c%d", opt.client_dir, i);
            unlink(me.sun_path);
            if (bind(c->fd, (struct sockaddr *)&me, sizeof me) < 0) die("bind client path");
        }
        if (connect(c->fd, (struct sockaddr *)&opt.to.addr, opt.to.addrlen) < 0) die("connect datagram");
        c->state = OPEN;
        watch(c, EPOLLIN, EPOLL_CTL_ADD);
    }
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void usage(void) {
    fail("usage", "loadgen ADDRESS [-c CONNS] [-d DEPTH] [-s SIZE] [-w WARMUP] [--settle S] [-t SECONDS]\n"
                  "  [--idle K] [--slow S] [--slow-interval-ms MS] [--hold] [--linger] [--cpu N] [--client-dir DIR]\n"
                  "  [--dgram-timeout-ms MS] [--connect-timeout S] [--connect-batch N] [--tls] [--tls-ca FILE] [--once]\n"
                  "ADDRESS: tcp:127.0.0.1:PORT, tcp:[::1]:PORT, unix:PATH, udp:HOST:PORT, unixdgram:PATH");
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(a, name) && v && ++i)
        if (ARG("-c")) opt.conns = atoi(v);
        else if (ARG("-d")) opt.depth = atoi(v);
        else if (ARG("-s")) opt.size = atoi(v);
        else if (ARG("-w")) opt.warmup = atof(v);
        else if (ARG("-t")) opt.duration = atof(v);
        else if (ARG("--settle")) opt.settle = atof(v);
        else if (ARG("--idle")) opt.idle = atoi(v);
        else if (ARG("--slow")) opt.slow = atoi(v);
        else if (ARG("--slow-interval-ms")) opt.slow_interval_ms = atoi(v);
        else if (ARG("--cpu")) opt.cpu = atoi(v);
        else if (ARG("--client-dir")) opt.client_dir = v;
        else if (ARG("--dgram-timeout-ms")) opt.dgram_timeout_ms = atoi(v);
        else if (ARG("--connect-timeout")) opt.connect_timeout = atof(v);
        else if (ARG("--connect-batch")) opt.batch = atoi(v);
        else if (ARG("--tls-ca")) opt.tls_ca = v, opt.tls = 1;
        else if (!strcmp(a, "--tls")) opt.tls = 1;
        else if (!strcmp(a, "--once")) opt.once = 1;
        else if (!strcmp(a, "--hold")) opt.hold = 1;
        else if (!strcmp(a, "--linger")) opt.linger = 1;
        else if (a[0] != '-' && !opt.addr_text) opt.addr_text = a;
        else usage();
    }
    if (!opt.addr_text || opt.conns < 1 || opt.depth < 1 || opt.depth > MAXDEPTH || opt.size < 16 || opt.size > 4096
        || opt.slow_interval_ms < 1 || opt.batch < 1)
        usage();
    parse_address(opt.addr_text, &opt.to);
    if (opt.to.dgram || opt.once) opt.depth = 1;
    if (opt.tls && (opt.to.dgram || opt.to.family == AF_UNIX)) fail("--tls", "TCP only");
    if (opt.once && opt.to.dgram) fail("--once", "streams only");
    if (opt.tls && tls_setup(opt.tls_ca, opt.to.host) < 0) exit(2);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(opt.cpu, &set);
    if (opt.cpu >= 0 && sched_setaffinity(0, sizeof set, &set) < 0) die("sched_setaffinity");
    nall = opt.idle + opt.slow + opt.conns;
    struct rlimit rl;  /* 5,000 idle connections need more descriptors than the usual soft limit */
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    if (rl.rlim_max < (rlim_t)nall + 64 || setrlimit(RLIMIT_NOFILE, &rl) < 0) fail("RLIMIT_NOFILE", "too low for the connections");
    pattern = malloc((size_t)opt.size * (MAXDEPTH + 1));
    for (int m = 0; m <= MAXDEPTH; m++) {
        char *p = pattern + (size_t)m * (size_t)opt.size;
        for (int j = 0; j < opt.size - 1; j++) p[j] = (char)('a' + (j * 7 + 3) % 26);
        p[opt.size - 1] = '\n';
    }
    all = calloc((size_t)nall, sizeof *all);
    uint64_t *stamps = calloc((size_t)opt.conns * (size_t)opt.depth, sizeof *stamps);
    if (!pattern || !all || !stamps) die("malloc");
    for (int i = 0; i < nall; i++) {
        all[i].fd = -1;
        all[i].kind = i < opt.idle ? IDLE : i < opt.idle + opt.slow ? SLOW : ACTIVE;
        if (all[i].kind == ACTIVE) all[i].stamps = stamps + (size_t)(i - opt.idle - opt.slow) * (size_t)opt.depth;
    }
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1");
    srand(12345);
    uint64_t ctimeout = (uint64_t)(opt.connect_timeout * 1e9);

    /* Phase 1: the idle connections. */
    if (opt.idle) {
        run(now_ns() + ctimeout, 0, opt.idle);
        int open = 0;
        for (int i = 0; i < opt.idle; i++) open += all[i].state == OPEN;
        printf("{\"event\":\"idle-open\",\"open\":%d,\"failed\":%llu}\n", open, connect_failed);
        fflush(stdout);
        if (opt.hold) {
            struct pollfd in = {.fd = 0, .events = POLLIN};
            char line[64];
            if (poll(&in, 1, 60000) <= 0 || !fgets(line, sizeof line, stdin)) fail("--hold", "no go on stdin within 60 s");
        }
    }

    /* Phase 2: the slowloris and active connections / datagram sockets. */
    uint64_t t0 = now_ns();
    if (opt.to.dgram) open_datagrams();
    else run(t0 + ctimeout, opt.idle, nall);
    int active_open = 0;
    uint64_t now = now_ns();
    cycling = opt.once;
    for (int i = opt.idle + opt.slow; i < nall; i++) {
        struct conn *c = &all[i];
        if (c->state != OPEN) continue;
        active_open++;
        if (c->kind == DGRAM) send_datagram(c, now);
        else send_messages(c, opt.depth, now);
    }

    /* Phase 3: warm up, and go on (at most --settle seconds more) until every
     * connection has had a reply: a server that forks or starts a thread per
     * connection is measured once it has set them all up, not while it does. */
    uint64_t warm = now_ns() + (uint64_t)(opt.warmup * 1e9);
    run(warm, 0, 0);
    while (nserved < active_open && now_ns() < warm + (uint64_t)(opt.settle * 1e9)) run(now_ns() + 10000000u, 0, 0);
    for (int i = 0; i < nall; i++) all[i].served = 0;
    nserved = 0;
    errors = 0;
    printf("{\"event\":\"measure\"}\n");
    fflush(stdout);
    measuring = 1;
    double cpu = cpu_seconds();
    uint64_t start = now_ns();
    run(start + (uint64_t)(opt.duration * 1e9), 0, 0);
    double seconds = (double)(now_ns() - start) / 1e9;
    cpu = cpu_seconds() - cpu;
    measuring = 0;

    int served = 0, idle_open = 0, slow_open = 0;
    for (int i = 0; i < nall; i++) {
        served += all[i].served && (all[i].kind == ACTIVE || all[i].kind == DGRAM);
        idle_open += all[i].kind == IDLE && all[i].state == OPEN;
        slow_open += all[i].kind == SLOW && all[i].state == OPEN;
    }
    printf("{\"event\":\"result\",\"requests\":%llu,\"seconds\":%.4f,\"rps\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
           "\"errors\":%llu,\"lost\":%llu,\"stale\":%llu,\"conns\":%d,\"open\":%d,\"served\":%d,\"connect_failed\":%llu,"
           "\"idle\":%d,\"idle_open\":%d,\"idle_closed\":%llu,\"slow\":%d,\"slow_open\":%d,\"slow_closed\":%llu,\"cpu\":%.3f}\n",
           requests, seconds, (double)requests / seconds, hist_percentile(0.50), hist_percentile(0.99), errors, lost, stale, opt.conns,
           active_open, served, connect_failed, opt.idle, idle_open, idle_closed, opt.slow, slow_open, slow_closed, cpu / seconds);
    fflush(stdout);
    if (opt.linger) {
        struct pollfd in = {.fd = 0, .events = POLLIN};
        char line[64];
        if (poll(&in, 1, 10000) <= 0 || !fgets(line, sizeof line, stdin)) fail("--linger", "no line on stdin within 10 s");
    }
    for (int i = 0; opt.tls && i < nall; i++) if (all[i].tls) tls_close(all[i].tls);  /* close_notify on each */
    for (int i = opt.idle + opt.slow; opt.to.dgram && opt.to.family == AF_UNIX && i < nall; i++) {
        char path[108];
        snprintf(path, sizeof path, "%s/c%d", opt.client_dir, i);
        unlink(path);  /* the client sockets' paths */
    }
    return 0;
}
