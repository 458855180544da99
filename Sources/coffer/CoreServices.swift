import ServiceLifecycle
import TenantCore

/// The first service to stop on SIGTERM or SIGINT: an active HA node steps down and gives
/// its etcd lock back, so a standby takes over within its poll interval instead of waiting
/// out the lock's TTL. The node keeps serving (as a standby, forwarding) while the HTTP
/// listener drains.
struct HAHandoverService: Service {
    let core: Core

    func run() async throws {
        try? await gracefulShutdown()
        // The audit chain heads are stored while this node may still write.
        try? await core.audit.flushHeads()
        await core.handOver()
    }
}

/// The last service to stop: the core's background work (lease expiry, engines' timers)
/// ends after the listener has drained and before the storage closes.
struct CoreWorkService: Service {
    let core: Core

    func run() async throws {
        try? await gracefulShutdown()
        await core.stopBackgroundWork()
    }
}
