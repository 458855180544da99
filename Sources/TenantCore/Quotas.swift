import CofferSDK
import Crypto
import Foundation
import Logging
import Synchronization

/// A rate-limit quota as Vault declares it (`sys/quotas/rate-limit/:name`), plus Coffer's
/// `additive` and `group_by`, and `managed` for quotas a parent set on a tenant.
public struct RateLimitQuota: Codable, Sendable, Equatable {
    public var name: String
    /// Relative to the namespace that defines the quota: "" (all of it), a child namespace
    /// ("team/"), a mount ("secret/") or a path prefix inside a mount ("secret/data/app").
    public var path: String
    public var rate: Double
    public var interval: Int
    public var blockInterval: Int
    public var role: String
    public var inheritable: Bool
    public var additive: Bool
    public var groupBy: String
    /// `path` names a namespace ("" included), not a mount or a path in one.
    public var targetsNamespace: Bool
    /// Set by the parent namespace (tenant provisioning): the namespace's own admins see it
    /// but cannot change or delete it, and their quotas never replace it.
    public var managed: Bool

    public static let groupings: Set<String> = ["ip", "none", "token"]

    public var json: [String: JSONValue] {
        [
            "name": .string(name), "path": .string(path), "type": "rate-limit", "rate": .double(rate),
            "interval": .int(Int64(interval)), "block_interval": .int(Int64(blockInterval)), "role": .string(role),
            "inheritable": .bool(inheritable), "additive": .bool(additive), "group_by": .string(groupBy),
            "managed": .bool(managed),
        ]
    }

    /// The largest `rate` a quota may have (requests per interval).
    public static let maxRate: Double = 1_000_000_000

    /// Whether every value is in the range a request may set.
    var isValid: Bool {
        rate.isFinite && rate > 0 && rate <= Self.maxRate
            && interval > 0 && Int64(interval) <= Checked.maxDurationSeconds
            && blockInterval >= 0 && Int64(blockInterval) <= Checked.maxDurationSeconds
    }

    /// Higher is more specific: path quotas over mount quotas over namespace quotas, longer
    /// paths over shorter, a role over none (Vault's precedence).
    public var specificity: Int { (targetsNamespace ? 0 : 1_000_000) + 2 * path.utf8.count + (role.isEmpty ? 0 : 1) }
}

/// `sys/quotas/config` (root namespace).
public struct QuotaConfig: Codable, Sendable, Equatable {
    public var exemptPaths: [String] = []
    public var enableResponseHeaders = false
    public var enableAuditLogging = false

    public init() {}

    /// Vault's paths that no rate limit ever applies to.
    public static let absoluteExemptPaths = [
        "sys/generate-recovery-token/attempt", "sys/generate-recovery-token/update", "sys/generate-root/attempt",
        "sys/generate-root/update", "sys/health", "sys/seal-status", "sys/unseal",
    ]

    /// `fullPath` is the request's path from the root namespace (`acme/secret/x`), `relative`
    /// its path inside its namespace. As in Vault, an exempt path is matched against the
    /// path inside the request's namespace (`sys/policies/` is exempt in every namespace);
    /// a full path (`acme/sys/policies/`) exempts one namespace's only. Only the root
    /// namespace's operator sets them.
    public func isExempt(fullPath: String, relative: String) -> Bool {
        Self.absoluteExemptPaths.contains { relative.hasPrefix($0) }
            || exemptPaths.contains { !$0.isEmpty && (fullPath.hasPrefix($0) || relative.hasPrefix($0)) }
    }

    public var json: [String: JSONValue] {
        [
            "rate_limit_exempt_paths": .array(exemptPaths.map { .string($0) }),
            "absolute_rate_limit_exempt_paths": .array(Self.absoluteExemptPaths.map { .string($0) }),
            "enable_rate_limit_response_headers": .bool(enableResponseHeaders),
            "enable_rate_limit_audit_logging": .bool(enableAuditLogging),
        ]
    }
}

extension NamespaceCore {
    static let quotaTableKey = "core/quotas"

    /// This namespace's quotas, by name (loaded with the namespace).
    public var rateLimitQuotas: [String: RateLimitQuota] { quotaTable.withLock { $0 } }

    func loadQuotas() async throws {
        var table = try await rootView.getCodable([String: RateLimitQuota].self, Self.quotaTableKey) ?? [:]
        // A stored quota with values no request may set (written before they were checked)
        // is left out with a log line, never trusted: it would fault every request here.
        for (name, q) in table where !q.isValid {
            logger.error("rate-limit quota ignored: stored values out of range", metadata: ["ns.path": "\(path)", "quota": "\(name.prefix(128))"])
            table[name] = nil
        }
        quotaTable.withLock { $0 = table }
    }

    /// Applies `change` to the quota table and stores it, one writer at a time.
    func updateQuotas<T: Sendable>(_ change: @Sendable (inout [String: RateLimitQuota]) throws -> T) async throws -> T {
        try await mountLock.withLock {
            var table = quotaTable.withLock { $0 }
            let result = try change(&table)
            try await rootView.putCodable(Self.quotaTableKey, table)
            let updated = table
            quotaTable.withLock { $0 = updated }
            return result
        }
    }

    /// Checks and normalises a quota's path: "" or child namespaces ("a/b/"), or a path
    /// that starts with a mount of the namespace it lands in.
    func classifyQuotaPath(_ raw: String) async throws -> (path: String, targetsNamespace: Bool) {
        var rest = Substring(raw.drop { $0 == "/" })
        guard !rest.contains("..") && !rest.contains("//") && rest.utf8.count <= 512 else {
            throw CofferError.invalid("invalid quota path \"\(raw.prefix(128))\"")
        }
        var current = self
        var consumed = ""
        while !rest.isEmpty {
            let seg = rest.prefix { $0 != "/" }
            guard let child = try await current.descendant(current.path + seg + "/") else { break }
            consumed += seg + "/"
            current = child
            rest = rest.dropFirst(seg.count)
            rest = rest.drop { $0 == "/" }
        }
        if rest.isEmpty { return (consumed, true) }
        let inside = String(rest)
        let mounted = current.mounts(kind: .secret).map(\.routePath) + current.mounts(kind: .auth).map(\.routePath)
        guard mounted.contains(where: { inside.hasPrefix($0) || inside + "/" == $0 }) else {
            throw CofferError.invalid("invalid mount path \"\(inside.prefix(128))\" in quota path")
        }
        return (consumed + inside, false)
    }

    /// A quota from request fields (create or update of `name`).
    func makeQuota(name: String, fields: FieldValues, existing: RateLimitQuota?, managed: Bool) async throws -> RateLimitQuota {
        guard !name.isEmpty, name.utf8.count <= 128, !name.contains("/"), !name.contains("..") else {
            throw CofferError.invalid("invalid quota name")
        }
        var q = existing ?? RateLimitQuota(
            name: name, path: "", rate: 0, interval: 1, blockInterval: 0, role: "", inheritable: false,
            additive: false, groupBy: "ip", targetsNamespace: true, managed: managed)
        if fields.has("path") || existing == nil {
            let (path, isNamespace) = try await classifyQuotaPath(fields.string("path"))
            q.path = path
            q.targetsNamespace = isNamespace
        }
        if fields.has("rate") || existing == nil {
            guard let rate = fields["rate"]?.doubleValue, rate > 0 else {
                throw CofferError.invalid("rate must be positive")
            }
            guard rate <= RateLimitQuota.maxRate else {
                throw CofferError.invalid("rate must be at most \(Int(RateLimitQuota.maxRate))")
            }
            q.rate = rate
        }
        if fields.has("interval") {
            q.interval = fields.int("interval")
            if q.interval == 0 { q.interval = 1 }
        }
        if fields.has("block_interval") { q.blockInterval = fields.int("block_interval") }
        if fields.has("role") { q.role = fields.string("role") }
        if fields.has("additive") { q.additive = fields.bool("additive") }
        if fields.has("group_by") {
            let g = fields.string("group_by").lowercased()
            guard RateLimitQuota.groupings.contains(g) else {
                throw CofferError.invalid("group_by must be one of ip, none, token")
            }
            q.groupBy = g
        }
        if fields.has("inheritable") {
            q.inheritable = fields.bool("inheritable")
        } else if existing == nil {
            // Vault: only quotas of the root namespace on a namespace inherit by default.
            q.inheritable = self.path.isEmpty && q.targetsNamespace
        }
        if q.inheritable && !q.targetsNamespace {
            throw CofferError.invalid("inheritable is only valid for quotas on a namespace, not on a mount or path")
        }
        if q.role.isEmpty == false && q.targetsNamespace {
            throw CofferError.invalid("role can only be set on a quota whose path is an auth mount")
        }
        guard q.isValid else { throw CofferError.invalid("interval and block_interval must be valid durations") }
        return q
    }
}

/// A quota update made from the quota as read, applied only if the table still holds
/// that one (compare-and-set on the quota table, under its lock).
enum QuotaUpdate {
    static let attempts = 8

    static func replace<Q: Equatable>(_ table: inout [String: Q], _ name: String, expected: Q?, with quota: Q) -> Bool {
        guard table[name] == expected else { return false }
        table[name] = quota
        return true
    }

    static func contended(_ name: String) -> CofferError {
        CofferError(.unavailable, "quota \"\(name.prefix(128))\" is being changed concurrently; retry")
    }
}

extension Core {
    static let quotaConfigKey = "core/quota-config"

    public var quotaConfig: QuotaConfig { quotaConfigCache.withLock { $0 } }

    func loadQuotaConfig() async throws {
        let config = try await barrier.getCodable(QuotaConfig.self, Self.quotaConfigKey) ?? QuotaConfig()
        quotaConfigCache.withLock { $0 = config }
    }

    /// Changes `sys/quotas/config` and stores it, one writer at a time.
    func updateQuotaConfig(_ change: @Sendable (inout QuotaConfig) -> Void) async throws {
        try await quotaConfigLock.withLock {
            var config = quotaConfigCache.withLock { $0 }
            change(&config)
            try await barrier.putCodable(Self.quotaConfigKey, config)
            let stored = config
            quotaConfigCache.withLock { $0 = stored }
        }
    }
}
