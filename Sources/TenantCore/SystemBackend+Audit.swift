import CofferSDK
import Audit

/// `sys/audit`, `sys/audit/:path`, `sys/audit-hash/:path` (root namespace, sudo), Vault's shapes,
/// plus `sys/audit-chain/:path` (Coffer): the device's hash-chain head, for `coffer audit verify --head`.
extension SystemBackend {
    static var auditRoutes: [Route<SystemBackend>] {
        [
            Route("audit/?", operations: [.read: { try await $0.listAudit($1) }, .list: { try await $0.listAudit($1) }], summary: "List enabled audit devices."),
            Route("audit/*path", fields: [
                Field("path", .string), Field("type", .string), Field("description", .string),
                Field("options", .keyValuePairs), Field("local", .bool),
            ], operations: [.update: { try await $0.enableAudit($1) }, .delete: { try await $0.disableAudit($1) }], summary: "Enable or disable an audit device."),
            Route("audit-hash/*path", fields: [Field("path", .string), Field("input", .string, required: true)], operations: [
                .update: { try await $0.hashAudit($1) },
            ], summary: "HMAC of an input with an audit device's salt, to find it in that device's log."),
            Route("audit-chain/*path", fields: [Field("path", .string)], operations: [.read: { try await $0.auditChainHead($1) }],
                  summary: "The hash-chain head (seq:hash) of an audit device."),
        ]
    }

    func auditBroker() throws -> AuditBroker {
        guard ns.path.isEmpty, let broker = ns.node?.audit else {
            throw CofferError.invalid("audit devices are only managed in the root namespace")
        }
        return broker
    }

    func listAudit(_ req: LogicalRequest) async throws -> LogicalResponse? {
        LogicalResponse(data: try auditBroker().list())
    }

    func enableAudit(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let broker = try auditBroker()
        let type = req.fields.string("type")
        guard !type.isEmpty else { throw CofferError.invalid("type is required") }
        try await broker.enable(
            path: req.fields.string("path"), type: type, description: req.fields.string("description"),
            options: req.fields.stringMap("options"), local: req.fields.bool("local"))
        return nil
    }

    func disableAudit(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try await auditBroker().disable(path: req.fields.string("path"))
        return nil
    }

    func hashAudit(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let broker = try auditBroker()
        let path = try AuditBroker.normalize(req.fields.string("path"))
        // Vault's words (400), which clients match: `unknown audit backend "name/"`.
        guard broker.list()[path] != nil else { throw CofferError.invalid("unknown audit backend \"\(path)\"") }
        let hash = try broker.hash(path: path, input: req.fields.string("input"))
        return LogicalResponse(data: ["hash": .string(hash)])
    }

    func auditChainHead(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let head = try auditBroker().chainHead(path: req.fields.string("path")) else { return nil }
        return LogicalResponse(data: ["head": .string(head.description), "seq": .int(Int64(head.seq)), "hash": .string(head.hash)])
    }
}
