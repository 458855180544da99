import Logging
import ServiceLifecycle
import TenantCore

/// Evicts idle namespaces from memory on a timer (`namespace_idle_timeout`), so a node holds
/// only the tenants that are in use; the rest cost their record in the parent.
struct NamespaceEvictor: Service {
    let core: Core
    let idle: Duration
    let logger: Logger

    func run() async throws {
        let interval = max(Duration.seconds(1), min(idle / 2, .seconds(30)))
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if Task.isCancelled { break }
                let evicted = await core.evictIdle(olderThan: idle)
                if evicted > 0 {
                    logger.debug("idle namespaces evicted", metadata: ["count": "\(evicted)", "loaded": "\(core.loadedNamespaceCount)"])
                }
            }
        }
    }
}
