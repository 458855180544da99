import Foundation
import Glibc
import Logging
import ServiceLifecycle
import TenantCore

/// Evicts idle namespaces from memory on a timer (`namespace_idle_timeout`), so a node holds
/// only the tenants that are in use; the rest cost their record in the parent.
struct NamespaceEvictor: Service {
    let core: Core
    let idle: Duration
    let logger: Logger

    /// Evictions after which freed memory is handed back to the system (when they are also at
    /// least half of what was loaded): a burst of new tenants leaves their namespaces' memory
    /// in malloc's free lists once they go idle, and the process would keep its peak size.
    static let trimAfter = 256

    func run() async throws {
        let interval = max(Duration.seconds(1), min(idle / 2, .seconds(30)))
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if Task.isCancelled { break }
                let evicted = await core.evictIdle(olderThan: idle)
                guard evicted > 0 else { continue }
                let loadedNow = core.loadedNamespaceCount
                let metadata: Logger.Metadata = ["count": "\(evicted)", "loaded": "\(loadedNow)"]
                // Only when most of what was loaded went (a burst ending): under steady churn
                // the freed memory is about to be reused, and trimming would only add page faults.
                if evicted >= Self.trimAfter, evicted >= loadedNow, let took = await MallocTrim.run() {
                    // Rare (a burst of tenants going idle) and worth seeing: what the trim cost.
                    logger.info("idle namespaces evicted, free memory returned to the system",
                                metadata: metadata.merging(["malloc_trim_ms": "\(String(format: "%.1f", took * 1000))"]) { a, _ in a })
                } else {
                    logger.debug("idle namespaces evicted", metadata: metadata)
                }
            }
        }
    }
}

/// glibc's `malloc_trim(0)` (not in Swift's Glibc module): returns the free pages of every
/// malloc arena to the system. It takes each arena's lock in turn, so it runs on a thread of
/// its own rather than on the task pool; measured at 30–206 ms after evicting 12–31k
/// namespaces (PERFORMANCE.md).
enum MallocTrim {
    typealias Function = @convention(c) (Int) -> Int32
    static let function: Function? = dlsym(nil, "malloc_trim").map { unsafeBitCast($0, to: Function.self) }

    /// Seconds it took, or nil where there is no `malloc_trim`.
    static func run() async -> Double? {
        guard let function else { return nil }
        return await withCheckedContinuation { done in
            Thread.detachNewThread {
                let start = ContinuousClock.now
                _ = function(0)
                let took = ContinuousClock.now - start
                done.resume(returning: Double(took.components.seconds) + Double(took.components.attoseconds) / 1e18)
            }
        }
    }
}
