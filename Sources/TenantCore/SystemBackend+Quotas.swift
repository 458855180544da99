import CofferSDK
import Foundation

/// `sys/quotas/config` and `sys/quotas/rate-limit[/:name]`, Vault's shapes.
extension SystemBackend {
    static let quotaFields: [Field] = [
        Field("name", .string), Field("path", .string), Field("type", .string), Field("rate", .any),
        Field("interval", .duration), Field("block_interval", .duration), Field("role", .string),
        Field("inheritable", .bool), Field("additive", .bool), Field("group_by", .string),
    ]

    static var quotaRoutes: [Route<SystemBackend>] {
        [
            Route("quotas/config", fields: [
                Field("rate_limit_exempt_paths", .commaStringSlice), Field("enable_rate_limit_response_headers", .bool),
                Field("enable_rate_limit_audit_logging", .bool),
            ], operations: [.read: { try await $0.readQuotaConfig($1) }, .update: { try await $0.writeQuotaConfig($1) }], summary: "Rate-limit quota settings (root namespace)."),
            Route("usage", fields: [
                Field("namespace", .string), Field("start", .string), Field("end", .string),
                Field("granularity", .string, default: "day"), Field("format", .string, default: "json"),
                Field("include_descendants", .bool, default: true),
            ], operations: [.read: { try await $0.readUsage($1) }], summary: "Usage of this namespace (and its descendants) for billing: hourly buckets by hour, day or month, JSON or CSV."),
            Route("quotas/rate-limit/?", operations: [.list: { try await $0.listQuotas($1) }], summary: "List rate-limit quotas of this namespace."),
            Route("quotas/rate-limit/:name", fields: Self.quotaFields, operations: [
                .read: { try await $0.readQuota($1) }, .update: { try await $0.writeQuota($1) }, .delete: { try await $0.deleteQuota($1) },
            ], summary: "Create, read, update or delete a rate-limit quota."),
        ]
    }

    func readUsage(_ req: LogicalRequest) async throws -> LogicalResponse? {
        var q = UsageQuery()
        q.namespace = req.fields.string("namespace")
        for (field, assign) in [("start", { (d: Date) in q.start = d }), ("end", { (d: Date) in q.end = d })] as [(String, (Date) -> Void)] {
            guard let text = req.fields.optionalString(field), !text.isEmpty else { continue }
            guard let d = RFC3339.parse(text) else { throw CofferError.invalid("\(field) must be an RFC 3339 time, got \"\(text.prefix(64))\"") }
            assign(d)
        }
        q.granularity = req.fields.string("granularity").lowercased()
        q.format = req.fields.string("format").lowercased()
        q.includeDescendants = req.fields.bool("include_descendants")
        return try await ns.onNode().usageReport(callerPath: ns.path, query: q)
    }

    func requireRootNamespace() throws {
        guard ns.path.isEmpty else {
            throw CofferError.invalid("quota configuration is only available in the root namespace")
        }
    }

    func readQuotaConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try requireRootNamespace()
        return LogicalResponse(data: try ns.onNode().quotaConfig.json)
    }

    func writeQuotaConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try requireRootNamespace()
        let fields = req.fields
        // Merged into the stored config under its lock: concurrent partial updates both land.
        try await ns.onNode().updateQuotaConfig { config in
            if fields.has("rate_limit_exempt_paths") {
                config.exemptPaths = fields.strings("rate_limit_exempt_paths").map { String($0.drop { $0 == "/" }) }
            }
            if fields.has("enable_rate_limit_response_headers") {
                config.enableResponseHeaders = fields.bool("enable_rate_limit_response_headers")
            }
            if fields.has("enable_rate_limit_audit_logging") {
                config.enableAuditLogging = fields.bool("enable_rate_limit_audit_logging")
            }
        }
        return nil
    }

    func listQuotas(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let names = ns.rateLimitQuotas.keys.sorted()
        return names.isEmpty ? nil : .list(names)
    }

    func readQuota(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let q = ns.rateLimitQuotas[req.fields.string("name")] else { return nil }
        return LogicalResponse(data: q.json)
    }

    func writeQuota(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = req.fields.string("name")
        if req.fields.has("type"), !["", "rate-limit"].contains(req.fields.string("type")) {
            throw CofferError.invalid("unsupported quota type \"\(req.fields.string("type").prefix(32))\"")
        }
        // Made from the quota as it is, stored only if it is still that (else made again
        // from the newer one): concurrent partial updates both land.
        for _ in 0..<QuotaUpdate.attempts {
            let existing = ns.rateLimitQuotas[name]
            if existing?.managed == true {
                throw CofferError(.permissionDenied, "quota \"\(name)\" is managed by the parent namespace")
            }
            let quota = try await ns.makeQuota(name: name, fields: req.fields, existing: existing, managed: false)
            if try await ns.updateQuotas({ QuotaUpdate.replace(&$0, name, expected: existing, with: quota) }) { return nil }
        }
        throw QuotaUpdate.contended(name)
    }

    func deleteQuota(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = req.fields.string("name")
        if ns.rateLimitQuotas[name]?.managed == true {
            throw CofferError(.permissionDenied, "quota \"\(name)\" is managed by the parent namespace")
        }
        try await ns.updateQuotas { $0[name] = nil }
        return nil
    }
}
