/* loadgen_tls.c: TLS for the load generator (bench/loadgen.c), OpenSSL, nonblocking.
 *
 * Compiled with -DLOADGEN_TLS and linked with -lssl -lcrypto into
 * build/bench/loadgen-tls.  Without LOADGEN_TLS (build/bench/loadgen) every
 * function refuses, so the plain load generator needs no OpenSSL at all.
 *
 * One client context for the whole run.  With a CA file it verifies the
 * server's certificate against it and checks that the certificate names
 * the IP address connected to; without one it verifies nothing.  No
 * session is ever resumed (no session cache, no ticket kept): every
 * handshake is a full one.  Records are written with partial writes
 * allowed and the buffer allowed to move between retries, as loadgen.c's
 * flush() retries from its pattern buffer. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include "loadgen.h"

#ifdef LOADGEN_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

static SSL_CTX *ctx;

int tls_setup(const char *ca_file, const char *ip) {
    signal(SIGPIPE, SIG_IGN);  /* OpenSSL writes with write(): a vanished peer must not kill us */
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) goto failed;
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);  /* a peer's close without close_notify is an EOF */
    if (ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) goto failed;
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), ip) != 1) goto failed;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return 0;
failed:
    fprintf(stderr, "loadgen: TLS setup failed:\n");
    ERR_print_errors_fp(stderr);
    return -1;
}

void *tls_new(int fd) {
    SSL *ssl = SSL_new(ctx);
    if (!ssl) return NULL;
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_set_fd(ssl, fd) != 1) { SSL_free(ssl); return NULL; }
    SSL_set_connect_state(ssl);
    return ssl;
}

/* Say on stderr why the first handshake failed (the harness shows it if the run fails). */
static void first_failure(SSL *ssl, int error) {
    static int said;
    if (said++) return;
    long verify = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_error();
    fprintf(stderr, "loadgen: TLS handshake failed (SSL error %d): %s%s%s\n", error, e ? ERR_reason_error_string(e) : "no detail",
            verify != X509_V_OK ? "; certificate: " : "", verify != X509_V_OK ? X509_verify_cert_error_string(verify) : "");
}

int tls_handshake(void *t, unsigned *want) {
    ERR_clear_error();
    int r = SSL_do_handshake(t);
    if (r == 1) return 1;
    int error = SSL_get_error(t, r);
    if (error == SSL_ERROR_WANT_READ) { *want = EPOLLIN; return 0; }
    if (error == SSL_ERROR_WANT_WRITE) { *want = EPOLLOUT; return 0; }
    first_failure(t, error);
    ERR_clear_error();
    return -1;
}

/* After SSL_read/SSL_write returned r <= 0: the send()/recv()-like result. */
static ssize_t outcome(SSL *ssl, int r, int reading) {
    int error = SSL_get_error(ssl, r), saved = errno;
    ERR_clear_error();
    switch (error) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:  /* (TLS 1.3 has no renegotiation: in practice, the direction asked for) */
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:  /* close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF) a bare EOF */
        if (reading) return 0;
        errno = EPIPE;
        return -1;
    case SSL_ERROR_SYSCALL:
        errno = saved ? saved : EPIPE;
        return -1;
    default:
        errno = EPROTO;
        return -1;
    }
}

ssize_t tls_send(void *t, const char *buf, size_t len) {
    ERR_clear_error();
    int n = SSL_write(t, buf, len > INT_MAX ? INT_MAX : (int)len);
    return n > 0 ? n : outcome(t, n, 0);
}

ssize_t tls_recv(void *t, char *buf, size_t len) {
    ERR_clear_error();
    int n = SSL_read(t, buf, len > INT_MAX ? INT_MAX : (int)len);
    return n > 0 ? n : outcome(t, n, 1);
}

int tls_pending(void *t) {
    return SSL_pending(t) > 0 || SSL_has_pending(t);
}

void tls_close(void *t) {
    ERR_clear_error();
    if (SSL_is_init_finished((SSL *)t)) SSL_shutdown(t);  /* ours only: the peer's is not awaited */
    SSL_free(t);
    ERR_clear_error();
}

#else /* built without OpenSSL */

int tls_setup(const char *ca_file, const char *ip) {
    (void)ca_file, (void)ip;
    fprintf(stderr, "loadgen: built without TLS (build/bench/loadgen-tls has it)\n");
    return -1;
}
void *tls_new(int fd) { (void)fd; return NULL; }
int tls_handshake(void *t, unsigned *want) { (void)t, (void)want; return -1; }
ssize_t tls_send(void *t, const char *buf, size_t len) { (void)t, (void)buf, (void)len; errno = ENOSYS; return -1; }
ssize_t tls_recv(void *t, char *buf, size_t len) { (void)t, (void)buf, (void)len; errno = ENOSYS; return -1; }
int tls_pending(void *t) { (void)t; return 0; }
void tls_close(void *t) { (void)t; }

#endif
