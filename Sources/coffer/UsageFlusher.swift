import Logging
import ServiceLifecycle
import TenantCore

/// Flushes per-namespace usage into its hourly buckets every `usage_flush_interval`, and
/// once more on graceful shutdown: a crash loses at most one interval of counts.
struct UsageFlusher: Service {
    let core: Core
    let interval: Duration
    let logger: Logger

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
        // Only the active node writes; a standby keeps its counts until it becomes active.
        guard core.haRole != .standby else { return }
        do {
            try await core.flushUsage()
        } catch {
            logger.warning("usage flush failed; counts kept for the next flush", metadata: ["error": "\(error)"])
        }
    }
}
