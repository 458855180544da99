import CofferSDK
import Logging
import Metrics
import Synchronization
import TenantCore

/// What a rate-limited request meets when the bucket store cannot answer.
public enum QuotaFailureMode: String, Sendable {
    /// Let the request through (and count it).
    case open
    /// Refuse it with 503 and a clear error.
    case closed
}

/// The core's `RateLimiter` over a bucket store (Redis, or the in-process table), with the
/// configured failure mode for outages of the store.
public final class BucketStoreLimiter: RateLimiter {
    public let store: any RateBucketStore
    public let failureMode: QuotaFailureMode
    let logger: Logger
    let failures = Counter(label: "coffer_quota_store_failures_total")
    let lastWarning = Mutex<ContinuousClock.Instant?>(nil)

    public init(store: any RateBucketStore, failureMode: QuotaFailureMode, logger: Logger) {
        self.store = store
        self.failureMode = failureMode
        self.logger = logger
    }

    public func take(_ bucket: RateBucket) async throws -> RateVerdict {
        do {
            return try await store.take(bucket, cost: 1)
        } catch {
            failures.increment()
            let now = ContinuousClock.now
            let warn = lastWarning.withLock { last -> Bool in
                if let last, now - last < .seconds(10) { return false }
                last = now
                return true
            }
            let reason = (error as? CofferError)?.message ?? "\(type(of: error))"
            if warn {
                logger.warning("rate limit quota store unavailable", metadata: ["failure_mode": "\(failureMode.rawValue)", "error": "\(reason)"])
            }
            switch failureMode {
            case .open:
                return RateVerdict(allowed: true, limit: bucket.rate, remaining: bucket.rate, resetSeconds: 0, retryAfterSeconds: 0)
            case .closed:
                throw CofferError(.unavailable, "rate limit quota store unavailable; request refused (quota_store failure_mode = \"closed\")")
            }
        }
    }
}
