import Logging
import ServiceLifecycle
import TenantCore
import UnixSignals
import Audit

/// Keeps the audit devices' chain heads stored (the broker's own loop), reopens every
/// device on SIGHUP (log rotation), and closes them on shutdown.
struct AuditService: Service {
    let core: Core
    let logger: Logger

    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { await core.audit.run() }
            group.addTask {
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    let failures = await core.audit.reopenAll()
                    logger.info("SIGHUP: audit devices reopened", metadata: ["failures": "\(failures.count)"])
                    for (path, reason) in failures {
                        logger.error("audit device failed to reopen", metadata: ["audit.path": "\(path)", "error": "\(reason)"])
                    }
                }
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
        try? await core.audit.flushHeads()
        await core.audit.close()
    }
}
