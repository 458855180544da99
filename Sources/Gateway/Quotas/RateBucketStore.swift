import CofferSDK
import Synchronization
import TenantCore

/// Where token buckets live: Redis (shared by every gateway node) or this process.
///
/// Both implementations answer the same takes the same way; a bucket nobody touched since
/// it refilled is indistinguishable from one that never existed, so stores may forget it.
public protocol RateBucketStore: Sendable {
    /// Takes `cost` tokens (0 ≤ cost ≤ rate; 0 only asks) from the bucket `spec` names.
    ///
    /// Throws `CofferError` `.invalidRequest` for a malformed spec or cost, and (remote
    /// stores) `.unavailable` when the store cannot answer within its timeout.
    func take(_ spec: RateBucket, cost: Int) async throws -> RateVerdict
    /// Releases threads and connections; takes after shutdown throw `.unavailable`.
    func shutdown() async
}

extension RateBucket {
    /// The spec in the integer units both stores compute with: microseconds, whole tokens.
    struct Units: Sendable {
        var rate: Int
        var intervalMicros: Int64
        var blockMicros: Int64
        var cost: Int
    }

    /// Validates the spec and the cost, and converts them to `Units`.
    func units(cost: Int) throws -> Units {
        guard rate > 0 else { throw CofferError.invalid("rate limit bucket \"\(key)\": rate must be above zero") }
        guard interval.isFinite, interval > 0, interval <= 1e9 else {
            throw CofferError.invalid("rate limit bucket \"\(key)\": interval must be a positive number of seconds")
        }
        guard blockInterval.isFinite, blockInterval >= 0, blockInterval <= 1e9 else {
            throw CofferError.invalid("rate limit bucket \"\(key)\": block interval must be zero or a positive number of seconds")
        }
        guard (0...rate).contains(cost) else {
            throw CofferError.invalid("rate limit bucket \"\(key)\": cost \(cost) is outside 0...\(rate)")
        }
        return Units(
            rate: rate,
            intervalMicros: max(1, Int64((interval * 1e6).rounded())),
            blockMicros: Int64((blockInterval * 1e6).rounded()),
            cost: cost)
    }
}

/// A bucket's stored state, and the one piece of arithmetic every store shares.
///
/// `RedisBucketStore`'s Lua script is this function line by line (microsecond integer
/// clock, `Double` tokens), so both stores decide identically.
struct TokenBucket: Sendable, Equatable {
    var tokens: Double
    var timestamp: Int64
    var blockedUntil: Int64
    /// When the bucket is full and unblocked again if left alone: from then on it can be dropped.
    var idleAt: Int64

    /// Applies one take at `now` to `bucket` (nil: full, never seen or forgotten). Returns the
    /// new state (nil when the bucket ends up full and unblocked) and the decision.
    static func take(_ bucket: TokenBucket?, _ u: RateBucket.Units, now: Int64) -> (TokenBucket?, RateVerdict) {
        let rate = Double(u.rate)
        let perMicro = rate / Double(u.intervalMicros)
        var tokens: Double
        var blocked: Int64 = bucket?.blockedUntil ?? 0
        if let bucket {
            tokens = now > bucket.timestamp ? min(rate, bucket.tokens + Double(now - bucket.timestamp) * perMicro) : min(rate, bucket.tokens)
        } else {
            tokens = rate
        }
        var allowed = false
        var retry: Double = 0
        if blocked > now {
            retry = Double(blocked - now)
        } else if tokens >= Double(u.cost) {
            tokens -= Double(u.cost)
            allowed = true
        } else if u.blockMicros > 0 {
            blocked = now + u.blockMicros
            retry = Double(u.blockMicros)
        } else {
            retry = ((Double(u.cost) - tokens) / perMicro).rounded(.up)
        }
        var full = ((rate - tokens) / perMicro).rounded(.up)
        var remaining = Int(tokens.rounded(.down))
        if blocked > now {
            remaining = 0
            full = max(full, Double(blocked - now))
        }
        let decision = RateVerdict(
            allowed: allowed, limit: u.rate, remaining: remaining,
            resetSeconds: full / 1e6, retryAfterSeconds: retry / 1e6)
        guard full > 0 else { return (nil, decision) }
        return (TokenBucket(tokens: tokens, timestamp: now, blockedUntil: blocked, idleAt: now + Int64(full)), decision)
    }
}

/// Token buckets in this process: for dev and single-node servers, and the fallback when
/// no Redis is configured. Same semantics as `RedisBucketStore`, on a monotonic clock.
///
/// Memory is bounded by the buckets in use: when the table reaches its sweep mark, buckets
/// that have refilled (and are not blocked) are dropped — they equal absent ones — and the
/// mark moves to twice what is left (never below `maximumBuckets`), so sweeping stays
/// amortised O(1) per new key while every bucket that still matters is kept.
public final class InProcessBucketStore: RateBucketStore {
    struct Table {
        var buckets: [String: TokenBucket] = [:]
        var sweepMark: Int
    }

    private let table: Mutex<Table>
    private let maximumBuckets: Int
    private let nowMicros: @Sendable () -> Int64

    /// - Parameters:
    ///   - maximumBuckets: the table size at which idle buckets are swept.
    ///   - clock: the time source (tests may pass a manual clock).
    public init(maximumBuckets: Int = 100_000, clock: some Clock<Duration> = ContinuousClock()) {
        self.maximumBuckets = max(1, maximumBuckets)
        self.table = Mutex(Table(sweepMark: max(1, maximumBuckets)))
        let origin = clock.now
        // Starts at 1 s so that "blocked until 0" (never blocked) is always in the past.
        self.nowMicros = {
            let (seconds, attoseconds) = origin.duration(to: clock.now).components
            return 1_000_000 + seconds * 1_000_000 + attoseconds / 1_000_000_000_000
        }
    }

    /// Buckets currently held (for metrics and tests).
    public var count: Int { table.withLock { $0.buckets.count } }

    public func take(_ spec: RateBucket, cost: Int) async throws -> RateVerdict {
        let units = try spec.units(cost: cost)
        let now = nowMicros()
        let maximumBuckets = self.maximumBuckets
        return table.withLock { table in
            let (next, decision) = TokenBucket.take(table.buckets[spec.key], units, now: now)
            if let next {
                if table.buckets.updateValue(next, forKey: spec.key) == nil, table.buckets.count >= table.sweepMark {
                    table.buckets = table.buckets.filter { $0.value.idleAt > now }
                    table.sweepMark = max(maximumBuckets, table.buckets.count * 2)
                }
            } else {
                table.buckets.removeValue(forKey: spec.key)
            }
            return decision
        }
    }

    public func shutdown() async {
        table.withLock { $0.buckets.removeAll() }
    }
}
