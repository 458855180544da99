import CofferSDK
import Crypto
import TenantCore

/// One token bucket to draw from: `rate` tokens per `interval` seconds, refilled
/// continuously; once empty, refusals last `blockInterval` seconds (0: until a token refills).
public struct RateBucket: Sendable, Hashable {
    public var key: String
    public var rate: Int
    public var interval: Double
    public var blockInterval: Double

    public init(key: String, rate: Int, interval: Double, blockInterval: Double = 0) {
        self.key = key
        self.rate = rate
        self.interval = interval
        self.blockInterval = blockInterval
    }
}

/// The answer to one take: what the `X-RateLimit-*` and `Retry-After` headers need;
/// `remaining` is 0 while the key is blocked.
public struct RateVerdict: Sendable, Equatable {
    public var allowed: Bool
    public var limit: Int
    public var remaining: Int
    /// Seconds until the bucket is full again.
    public var resetSeconds: Double
    /// Seconds until a request may succeed (0 when allowed).
    public var retryAfterSeconds: Double

    public init(allowed: Bool, limit: Int, remaining: Int, resetSeconds: Double, retryAfterSeconds: Double) {
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.resetSeconds = resetSeconds
        self.retryAfterSeconds = retryAfterSeconds
    }
}

/// Where buckets live (the Gateway supplies Redis or an in-process table). Throws
/// `.unavailable` when the store cannot answer; the limiter's failure mode decides then.
public protocol RateLimiter: Sendable {
    func take(_ bucket: RateBucket) async throws -> RateVerdict
}

/// Which rate-limit quotas apply to a request, and the draw from their buckets.
enum RateLimitQuotas {
    /// The quotas that apply to a request in `ns` at `rel`: at every level from the root
    /// down to `ns`, the most specific matching quota of that level (and, separately, of
    /// the quotas its parent manages there), plus every matching additive quota. All of
    /// them must admit the request, so a tenant's own quotas only ever tighten.
    static func applicable(core: Core, namespace ns: NamespaceCore, path rel: String, request: VaultRequest) async throws -> [(level: NamespaceCore, quota: RateLimitQuota)] {
        let chain = try await core.namespaceChain(to: ns)
        var out: [(NamespaceCore, RateLimitQuota)] = []
        let role = request.data["role"]?.stringValue ?? request.data["role_name"]?.stringValue
        for level in chain {
            let table = level.rateLimitQuotas
            if table.isEmpty { continue }
            let nsBelow = String(ns.path.dropFirst(level.path.count))
            let pathBelow = nsBelow + rel
            for managed in [false, true] {
                var best: RateLimitQuota?
                for q in table.values where q.managed == managed {
                    let hit: Bool
                    if q.targetsNamespace {
                        // A managed (tenant) quota covers the tenant's whole subtree: its
                        // child namespaces are no way around it.
                        hit = q.inheritable || q.managed ? nsBelow.hasPrefix(q.path) : nsBelow == q.path
                    } else {
                        hit = pathBelow.hasPrefix(q.path) && (q.role.isEmpty || q.role == role)
                    }
                    guard hit else { continue }
                    if q.additive {
                        out.append((level, q))
                    } else if let b = best {
                        if q.specificity > b.specificity || (q.specificity == b.specificity && q.name < b.name) { best = q }
                    } else {
                        best = q
                    }
                }
                if let best { out.append((level, best)) }
            }
        }
        return out
    }

    /// Draws one token from every applicable quota's bucket. Returns the state for the
    /// response headers (when enabled); throws 429 carrying `retryAfterSeconds` when any
    /// bucket refuses.
    static func enforce(core: Core, limiter: any RateLimiter, namespace ns: NamespaceCore, path rel: String, request: VaultRequest) async throws -> RateLimitState? {
        let config = core.quotaConfig
        if config.isExempt(fullPath: ns.path + rel, relative: rel) { return nil }
        let quotas = try await applicable(core: core, namespace: ns, path: rel, request: request)
        if quotas.isEmpty { return nil }
        var tightest: RateVerdict?
        var refused: RateVerdict?
        for (level, q) in quotas {
            let group: String
            switch q.groupBy {
            case "none": group = "*"
            case "token":
                group = request.token.map { Hex.encode(Array(SHA256.hash(data: Array($0.utf8)).prefix(16))) } ?? "-"
            default: group = request.remoteAddress ?? "-"
            }
            let bucket = RateBucket(
                key: "\(level.id)/\(q.managed ? "m" : "q")/\(q.name)/\(group)", rate: max(1, Int(exactly: min(q.rate, RateLimitQuota.maxRate).rounded(.up)) ?? 1),
                interval: Double(q.interval), blockInterval: Double(q.blockInterval))
            let verdict = try await limiter.take(bucket)
            if !verdict.allowed, verdict.retryAfterSeconds > refused?.retryAfterSeconds ?? -1 { refused = verdict }
            if verdict.remaining < tightest?.remaining ?? Int.max { tightest = verdict }
        }
        // Whole seconds, rounded up; a store's answer never traps (Checked).
        func seconds(_ d: Double) -> Int { Int(Checked.int64(truncating: d.rounded(.up)) ?? 0) }
        var state = RateLimitState()
        if config.enableResponseHeaders, let v = refused ?? tightest {
            state.limit = v.limit
            state.remaining = max(0, v.remaining)
            state.resetSeconds = seconds(v.resetSeconds)
        }
        if let refused {
            var e = CofferError(.rateLimited, "request path \"\(request.path)\": rate limit quota exceeded")
            state.retryAfterSeconds = max(1, seconds(refused.retryAfterSeconds))
            e.rateLimit = state
            throw e
        }
        return state.limit == nil ? nil : state
    }
}
