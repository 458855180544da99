import CofferSDK
import Foundation
import Synchronization

/// A lease-count quota (`sys/quotas/lease-count/:name`): at most `maxLeases` live leases
/// below `path` (relative to the namespace that defines it: "", a child namespace, a mount
/// or a path inside one). Irrevocable leases count until they are gone.
public struct LeaseCountQuota: Codable, Sendable, Equatable {
    public var name: String
    public var path: String
    public var maxLeases: Int
    public var role: String
    public var inheritable: Bool
    public var targetsNamespace: Bool

    func json(count: Int) -> [String: JSONValue] {
        [
            "name": .string(name), "path": .string(path), "type": "lease-count", "max_leases": .int(Int64(maxLeases)),
            "role": .string(role), "inheritable": .bool(inheritable), "counter": .int(Int64(count)),
        ]
    }
}

extension NamespaceCore {
    static let leaseQuotaTableKey = "core/lease-quotas"

    public var leaseCountQuotas: [String: LeaseCountQuota] { leaseQuotaTable.withLock { $0 } }

    func loadLeaseQuotas() async throws {
        let table = try await rootView.getCodable([String: LeaseCountQuota].self, Self.leaseQuotaTableKey) ?? [:]
        leaseQuotaTable.withLock { $0 = table }
    }

    func updateLeaseQuotas<T: Sendable>(_ change: @Sendable (inout [String: LeaseCountQuota]) throws -> T) async throws -> T {
        try await mountLock.withLock {
            var table = leaseQuotaTable.withLock { $0 }
            let result = try change(&table)
            try await rootView.putCodable(Self.leaseQuotaTableKey, table)
            let updated = table
            leaseQuotaTable.withLock { $0 = updated }
            return result
        }
    }

    func makeLeaseQuota(name: String, fields: FieldValues, existing: LeaseCountQuota?) async throws -> LeaseCountQuota {
        guard !name.isEmpty, name.utf8.count <= 128, !name.contains("/"), !name.contains("..") else {
            throw CofferError.invalid("invalid quota name")
        }
        var q = existing ?? LeaseCountQuota(name: name, path: "", maxLeases: 0, role: "", inheritable: false, targetsNamespace: true)
        if fields.has("path") || existing == nil {
            let (path, isNamespace) = try await classifyQuotaPath(fields.string("path"))
            q.path = path
            q.targetsNamespace = isNamespace
        }
        if fields.has("max_leases") || existing == nil {
            guard let max = fields["max_leases"]?.intValue, max > 0 else {
                throw CofferError.invalid("max_leases must be a positive integer")
            }
            q.maxLeases = Int(max)
        }
        if fields.has("role") { q.role = fields.string("role") }
        if fields.has("inheritable") {
            q.inheritable = fields.bool("inheritable")
        } else if existing == nil {
            q.inheritable = self.path.isEmpty && q.targetsNamespace
        }
        if q.inheritable && !q.targetsNamespace {
            throw CofferError.invalid("inheritable is only valid for quotas on a namespace, not on a mount or path")
        }
        if !q.role.isEmpty && !(q.path.hasPrefix("auth/") || q.path.contains("/auth/")) {
            throw CofferError.invalid("role can only be set on a quota whose path is an auth mount")
        }
        return q
    }
}

extension Core {
    /// Reserves one lease under every lease-count quota that covers `rel` in `ns`, from the
    /// root down; throws 429 (nothing reserved) when any is full. Call `release` with the
    /// answer once the request has registered its lease or failed.
    func reserveLeaseQuotas(ns: NamespaceCore, rel: String) async throws -> [String] {
        let chain = try await namespaceChain(to: ns)
        var wanted: [LeaseManager.QuotaClaim] = []
        for level in chain {
            let table = level.leaseQuotaTable.withLock { $0 }
            if table.isEmpty { continue }
            let nsBelow = String(ns.path.dropFirst(level.path.count))
            let pathBelow = nsBelow + rel
            for q in table.values {
                let hit = q.targetsNamespace
                    ? (q.inheritable ? nsBelow.hasPrefix(q.path) : nsBelow == q.path)
                    : LeaseManager.segmentPrefix(q.path, of: pathBelow)
                guard hit else { continue }
                wanted.append(.init(key: "\(level.id)/\(q.name)", prefix: level.path + q.path, max: q.maxLeases, name: q.name))
            }
        }
        if wanted.isEmpty { return [] }
        return try leases.reserve(wanted, path: ns.path + rel)
    }
}

extension LeaseManager {
    struct QuotaClaim: Sendable {
        var key: String
        var prefix: String
        var max: Int
        var name: String
    }

    /// Whether `prefix` covers `path` segment by segment ("db/creds/r" covers
    /// "db/creds/r/x" but not "db/creds/ro").
    static func segmentPrefix(_ prefix: String, of path: String) -> Bool {
        let p = prefix.split(separator: "/")
        let s = path.split(separator: "/")
        return p.count <= s.count && zip(p, s).allSatisfy { $0 == $1 }
    }

    func reserve(_ claims: [QuotaClaim], path: String) throws -> [String] {
        try state.withLock { s in
            for c in claims where s.counter.count(c.prefix) + s.pending[c.key, default: 0] >= c.max {
                throw CofferError(.rateLimited, "request path \"\(path)\": lease count quota \"\(c.name)\" exceeded (max_leases \(c.max))")
            }
            for c in claims { s.pending[c.key, default: 0] += 1 }
            return claims.map(\.key)
        }
    }

    func release(_ keys: [String]) {
        guard !keys.isEmpty else { return }
        state.withLock { s in
            for k in keys {
                let left = s.pending[k, default: 1] - 1
                s.pending[k] = left > 0 ? left : nil
            }
        }
    }
}

/// `sys/quotas/lease-count[/:name]`.
extension SystemBackend {
    static let leaseQuotaFields: [Field] = [
        Field("name", .string), Field("path", .string), Field("type", .string), Field("max_leases", .any),
        Field("role", .string), Field("inheritable", .bool),
    ]

    static var leaseQuotaRoutes: [Route<SystemBackend>] {
        [
            Route("quotas/lease-count/?", operations: [.list: { try await $0.listLeaseQuotas($1) }], summary: "List lease-count quotas of this namespace."),
            Route("quotas/lease-count/:name", fields: Self.leaseQuotaFields, operations: [
                .read: { try await $0.readLeaseQuota($1) }, .update: { try await $0.writeLeaseQuota($1) }, .delete: { try await $0.deleteLeaseQuota($1) },
            ], summary: "Create, read, update or delete a lease-count quota."),
        ]
    }

    func listLeaseQuotas(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let names = ns.leaseCountQuotas.keys.sorted()
        return names.isEmpty ? nil : .list(names)
    }

    func readLeaseQuota(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let q = ns.leaseCountQuotas[req.fields.string("name")] else { return nil }
        let count = ns.node?.leases.count(prefix: ns.path + q.path) ?? 0
        return LogicalResponse(data: q.json(count: count))
    }

    func writeLeaseQuota(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = req.fields.string("name")
        if req.fields.has("type"), !["", "lease-count"].contains(req.fields.string("type")) {
            throw CofferError.invalid("unsupported quota type \"\(req.fields.string("type").prefix(32))\"")
        }
        for _ in 0..<QuotaUpdate.attempts {
            let existing = ns.leaseCountQuotas[name]
            let quota = try await ns.makeLeaseQuota(name: name, fields: req.fields, existing: existing)
            if try await ns.updateLeaseQuotas({ QuotaUpdate.replace(&$0, name, expected: existing, with: quota) }) { return nil }
        }
        throw QuotaUpdate.contended(name)
    }

    func deleteLeaseQuota(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = req.fields.string("name")
        try await ns.updateLeaseQuotas { $0[name] = nil }
        return nil
    }
}
