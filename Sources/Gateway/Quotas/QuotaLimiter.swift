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

    /// Tokens this node took from a shared bucket ahead of need (see `batch(for:)`).
    struct Reservoir {
        var tokens: Int
        var expires: ContinuousClock.Instant
        var verdict: RateVerdict
    }
    let reservoirs = Mutex<[String: Reservoir]>([:])

    /// How many tokens one round trip takes. High rates (≥ 1,000 per interval) take 1% of the
    /// rate at a time (at most 1,000) and spend them locally for at most a tenth of the
    /// interval (1 s at most): one Redis round trip then serves many requests, and a node can
    /// over-admit by at most 1% of the rate. Lower rates, and quotas with a block interval,
    /// stay exact: one token per request.
    static func batch(for bucket: RateBucket) -> Int {
        guard bucket.rate >= 1_000, bucket.blockInterval == 0 else { return 1 }
        return min(bucket.rate / 100, 1_000)
    }

    public func take(_ bucket: RateBucket) async throws -> RateVerdict {
        let batch = Self.batch(for: bucket)
        guard batch > 1 else { return try await takeFromStore(bucket, cost: 1) }
        let now = ContinuousClock.now
        let local = reservoirs.withLock { r -> RateVerdict? in
            guard var res = r[bucket.key], res.tokens > 0, res.expires > now else { return nil }
            res.tokens -= 1
            res.verdict.remaining = max(0, res.verdict.remaining - 1)
            r[bucket.key] = res
            return res.verdict
        }
        if let local { return local }
        let verdict = try await takeFromStore(bucket, cost: batch)
        if verdict.allowed {
            let hold = Duration.milliseconds(Int64(min(1_000, bucket.interval * 100)))
            reservoirs.withLock { r in
                if r.count > 10_000 { r = r.filter { $0.value.expires > now } }
                // Concurrent misses each draw a batch: what another one left unspent is
                // kept, not overwritten (drawn tokens are spent or expire, never lost early).
                let left = r[bucket.key].map { $0.expires > now ? $0.tokens : 0 } ?? 0
                r[bucket.key] = Reservoir(tokens: left + batch - 1, expires: now + hold, verdict: verdict)
            }
            return verdict
        }
        // Fewer than a batch left: take them one at a time.
        return try await takeFromStore(bucket, cost: 1)
    }

    func takeFromStore(_ bucket: RateBucket, cost: Int) async throws -> RateVerdict {
        do {
            return try await store.take(bucket, cost: cost)
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
