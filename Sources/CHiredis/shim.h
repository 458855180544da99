#ifndef COFFER_CHIREDIS_SHIM_H
#define COFFER_CHIREDIS_SHIM_H

// hiredis 0.14 (Debian 12's libhiredis-dev): blocking API only. Swift never touches
// `struct timeval`, `errno` or the reply's element array directly: these shims do.

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/time.h>
#include <hiredis/hiredis.h>

static inline struct timeval coffer_redis_timeval(long milliseconds) {
    struct timeval tv;
    if (milliseconds < 1) milliseconds = 1;
    tv.tv_sec = milliseconds / 1000;
    tv.tv_usec = (milliseconds % 1000) * 1000;
    return tv;
}

/// Connects with a connect timeout, then applies the same timeout to every read and write
/// and marks the socket close-on-exec (hiredis 0.14 leaves it inheritable).
/// Returns NULL only when hiredis could not allocate a context; otherwise check `err`.
static inline redisContext *coffer_redis_connect(const char *host, int port, long timeout_ms) {
    redisContext *c = redisConnectWithTimeout(host, port, coffer_redis_timeval(timeout_ms));
    if (c != NULL && c->err == 0) {
        (void)fcntl(c->fd, F_SETFD, FD_CLOEXEC);
        if (redisSetTimeout(c, coffer_redis_timeval(timeout_ms)) != REDIS_OK && c->err == 0) {
            c->err = REDIS_ERR_OTHER;
        }
    }
    return c;
}

/// The context's error flag (0 when healthy).
static inline int coffer_redis_error(const redisContext *c) { return c->err; }

/// The context's error text (hiredis fills it from strerror or the protocol reader).
static inline const char *coffer_redis_error_string(const redisContext *c) { return c->errstr; }

/// 1 when the last failed socket call ran out of time (SO_RCVTIMEO/SO_SNDTIMEO or the
/// connect poll); read it on the thread that made the call, right after it.
static inline int coffer_redis_errno_is_timeout(void) {
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == ETIMEDOUT;
}

/// Sends one command (argv form: binary-safe, no format string) and reads its reply.
/// NULL means an I/O or protocol error: the context is then unusable.
static inline redisReply *coffer_redis_command(redisContext *c, int argc, const char **argv, const size_t *lengths) {
    return (redisReply *)redisCommandArgv(c, argc, argv, lengths);
}

static inline redisReply *coffer_redis_reply_element(const redisReply *r, size_t i) {
    return (r->type == REDIS_REPLY_ARRAY && i < r->elements) ? r->element[i] : NULL;
}

static inline void coffer_redis_free_reply(redisReply *r) { if (r != NULL) freeReplyObject(r); }

#endif
