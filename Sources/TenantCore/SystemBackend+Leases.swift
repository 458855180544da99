import CofferSDK
import Foundation

/// `sys/leases/*` (and Vault's older `sys/renew`, `sys/revoke*`), Vault's shapes.
extension SystemBackend {
    static let leaseFields: [Field] = [
        Field("lease_id", .string), Field("url_lease_id", .string), Field("increment", .duration), Field("sync", .bool, default: true),
    ]

    static var leaseRoutes: [Route<SystemBackend>] {
        let renew: Route<SystemBackend>.Handler = { try await $0.renewLease($1) }
        let revoke: Route<SystemBackend>.Handler = { try await $0.revokeLease($1) }
        return [
            Route("leases", fields: [Field("limit", .int, default: 10_000), Field("type", .string)], operations: [.read: { try await $0.listIrrevocable($1) }],
                  summary: "Irrevocable leases of this namespace (revocation failed too often)."),
            Route("leases/lookup", fields: Self.leaseFields, operations: [.update: { try await $0.lookupLease($1) }], summary: "Look up a lease."),
            Route("leases/lookup/?", operations: [.list: { try await $0.listLeases($1, prefix: "") }], summary: "List lease prefixes."),
            Route("leases/lookup/*prefix", fields: [Field("prefix", .string)], operations: [.list: { try await $0.listLeases($1, prefix: $1.fields.string("prefix")) }],
                  summary: "List leases below a prefix."),
            Route("leases/renew", fields: Self.leaseFields, operations: [.update: renew], summary: "Renew a lease."),
            Route("leases/renew/*url_lease_id", fields: Self.leaseFields, operations: [.update: renew], summary: "Renew a lease."),
            Route("renew", fields: Self.leaseFields, operations: [.update: renew], summary: "Renew a lease (older path)."),
            Route("renew/*url_lease_id", fields: Self.leaseFields, operations: [.update: renew], summary: "Renew a lease (older path)."),
            Route("leases/revoke", fields: Self.leaseFields, operations: [.update: revoke], summary: "Revoke a lease."),
            Route("leases/revoke/*url_lease_id", fields: Self.leaseFields, operations: [.update: revoke], summary: "Revoke a lease."),
            Route("revoke", fields: Self.leaseFields, operations: [.update: revoke], summary: "Revoke a lease (older path)."),
            Route("revoke/*url_lease_id", fields: Self.leaseFields, operations: [.update: revoke], summary: "Revoke a lease (older path)."),
            Route("leases/revoke-prefix/*prefix", fields: [Field("prefix", .string), Field("sync", .bool, default: true)],
                  operations: [.update: { try await $0.revokePrefix($1, force: false) }], summary: "Revoke every lease below a prefix (sudo)."),
            Route("revoke-prefix/*prefix", fields: [Field("prefix", .string), Field("sync", .bool, default: true)],
                  operations: [.update: { try await $0.revokePrefix($1, force: false) }], summary: "Revoke every lease below a prefix (older path)."),
            Route("leases/revoke-force/*prefix", fields: [Field("prefix", .string)],
                  operations: [.update: { try await $0.revokePrefix($1, force: true) }],
                  summary: "Delete every lease below a prefix without asking the engine to revoke it (sudo)."),
            Route("revoke-force/*prefix", fields: [Field("prefix", .string)],
                  operations: [.update: { try await $0.revokePrefix($1, force: true) }], summary: "Force-revoke (older path)."),
            Route("leases/tidy", operations: [.update: { try await $0.tidyLeases($1) }], summary: "Clean up dangling lease indexes and leases of revoked tokens."),
            Route("leases/count", fields: [Field("type", .string), Field("include_child_namespaces", .bool)], operations: [.read: { try await $0.countLeases($1) }],
                  summary: "Number of leases of this namespace."),
        ]
    }

    func leaseManager() throws -> LeaseManager {
        try ns.onNode().leases
    }

    /// The lease id from the body, or from the URL (`sys/leases/renew/<id>`).
    static func leaseID(_ req: LogicalRequest) throws -> String {
        let body = req.fields.string("lease_id")
        let url = req.fields.string("url_lease_id")
        if !body.isEmpty && !url.isEmpty && body != url {
            throw CofferError.invalid("lease_id in the URL and in the body differ")
        }
        let id = body.isEmpty ? url : body
        guard !id.isEmpty else { throw CofferError.invalid("lease_id is required") }
        return id
    }

    func lookupLease(_ req: LogicalRequest) async throws -> LogicalResponse? {
        LogicalResponse(data: try await leaseManager().lookup(ns, try Self.leaseID(req)))
    }

    func listLeases(_ req: LogicalRequest, prefix: String) async throws -> LogicalResponse? {
        let keys = try await leaseManager().list(ns, prefix: prefix)
        return keys.isEmpty ? nil : .list(keys)
    }

    func renewLease(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let id = try Self.leaseID(req)
        let increment = req.fields.has("increment") ? req.fields.int("increment") : 0
        guard increment >= 0 else { throw CofferError.invalid("increment must not be negative") }
        let (ttl, warnings) = try await leaseManager().renew(ns, id, increment: increment)
        var r = LogicalResponse(secret: SecretLease(ttl: ttl, renewable: true), warnings: warnings)
        r.leaseID = try LeaseManager.checkID(id)
        return r
    }

    func revokeLease(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try await leaseManager().revoke(ns, try Self.leaseID(req), sync: req.fields.bool("sync"))
        return nil
    }

    func revokePrefix(_ req: LogicalRequest, force: Bool) async throws -> LogicalResponse? {
        _ = try await leaseManager().revokePrefix(ns, req.fields.string("prefix"), force: force)
        return nil
    }

    func tidyLeases(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let (links, leases) = try await leaseManager().tidy(ns)
        var r = LogicalResponse(data: ["removed_token_links": .int(Int64(links)), "revoked_orphaned_leases": .int(Int64(leases))])
        r.warnings = ["Tidy operation completed."]
        return r
    }

    func listIrrevocable(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let limit = req.fields.int("limit")
        guard limit > 0 else { throw CofferError.invalid("limit must be positive") }
        let leases = try await leaseManager().irrevocable(ns, limit: limit)
        return LogicalResponse(data: ["leases": .array(leases.map { .object($0) }), "lease_count": .int(Int64(leases.count))])
    }

    func countLeases(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let m = try leaseManager()
        if req.fields.string("type") == "irrevocable" {
            let n = try await m.irrevocable(ns, limit: .max).count
            return LogicalResponse(data: ["lease_count": .int(Int64(n))])
        }
        return LogicalResponse(data: ["lease_count": .int(Int64(m.count(prefix: ns.path)))])
    }
}
