#ifndef COFFER_CLIBPQ_SHIM_H
#define COFFER_CLIBPQ_SHIM_H

// libpq (PostgreSQL 15's libpq-dev). Its functions import into Swift as they are; the shim
// adds what Swift cannot express cleanly: a C notice processor and a poll on the socket.

#include <errno.h>
#include <poll.h>
#include <libpq-fe.h>

static void coffer_pq_discard_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

/// Drops NOTICE/WARNING messages (libpq prints them to stderr by default, e.g. the
/// "role does not exist, skipping" of DROP ROLE IF EXISTS).
static inline void coffer_pq_silence_notices(PGconn *conn) {
    (void)PQsetNoticeProcessor(conn, coffer_pq_discard_notice, NULL);
}

/// Waits up to `timeout_ms` for the connection's socket to become readable.
/// Returns 1 when readable (or interrupted by a signal: the caller just checks again),
/// 0 on timeout, -1 when there is no socket or poll failed.
static inline int coffer_pq_wait_readable(PGconn *conn, int timeout_ms) {
    struct pollfd p;
    p.fd = PQsocket(conn);
    p.events = POLLIN;
    p.revents = 0;
    if (p.fd < 0) return -1;
    int r = poll(&p, 1, timeout_ms < 0 ? 0 : timeout_ms);
    if (r < 0) return errno == EINTR ? 1 : -1;
    return r > 0 ? 1 : 0;
}

#endif
