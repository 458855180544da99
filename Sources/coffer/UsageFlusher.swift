import Gateway
import Logging
import ServiceLifecycle
import TenantCore

/// Flushes per-namespace usage into its hourly buckets every `usage_flush_interval`, and
/// once more on graceful shutdown: a crash loses at most one interval of counts.
struct UsageFlusher: Service {
    let core: Core
    let interval: Duration
    let logger: Logger
    /// HA: a standby ships its counts to the active node instead of writing them.
    var cluster: ClusterLink?

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                if Task.isCancelled { break }
                await flush()
            }
        }
        await flush()
    }

    func flush() async {
        // Only the active node writes usage buckets; a standby ships its counts to it.
        if core.haRole == .standby {
            await cluster?.shipUsage()
            return
        }
        do {
            try await core.flushUsage()
        } catch {
            logger.warning("usage flush failed; counts kept for the next flush", metadata: ["error": "\(error)"])
        }
    }
}
