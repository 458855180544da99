import CofferSDK
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import TenantCore
import Audit

extension VaultGateway {
    static let snapshotPaths: Set<String> = ["sys/storage/snapshot", "sys/storage/snapshot-force"]

    /// `sys/storage/snapshot` (GET: download; POST/PUT: restore) and
    /// `sys/storage/snapshot-force` (POST/PUT: restore a foreign snapshot). Binary bodies,
    /// so they are answered here, before the JSON body parsing of every other path.
    ///
    /// Only a token with the root policy, in the root namespace (Vault asks for sudo on the
    /// root namespace's raft snapshot paths; these move every tenant's data at once). Both
    /// are audited: the request entry before anything runs, the response entry before a
    /// restore changes anything (after it the node is sealed and the devices closed).
    func snapshotEndpoint(
        _ request: Request, path: String, operation: LogicalOperation, requestID: String, context: CofferRequestContext
    ) async throws -> Response {
        let force = path == "sys/storage/snapshot-force"
        if operation == .help {
            let entry = OpenAPIDocument.nodePaths.first { $0.0 == "/" + path }
            return Self.json(.ok, ["help": .string(entry?.2 ?? "")])
        }
        switch (operation, force) {
        case (.read, false), (.update, _): break
        default: throw CofferError(.unsupportedOperation, "unsupported operation")
        }
        if let ns = request.headers[Self.vaultNamespaceHeader], !ns.trimmingCharacters(in: CharacterSet(charactersIn: "/ ")).isEmpty {
            throw CofferError.invalid("\(path) is only available in the root namespace")
        }
        let root = try core.root()
        let token = Self.clientToken(request)
        let remote = clientAddress(request, context)
        var audit = AuditRequestInfo(
            id: requestID, operation: operation, path: path, mountType: "system", mountPoint: "sys/",
            clientToken: token ?? "", remoteAddress: remote ?? "")
        guard let raw = token, let entry = try await root.usableToken(raw, address: remote),
            try await root.policies.acl(for: entry.policies).isRoot
        else {
            audit.error = "permission denied"
            try? await core.audit.logRequest(audit)
            try? await core.audit.logResponse(AuditResponseInfo(request: audit, error: "permission denied"))
            throw CofferError.denied()
        }
        audit.clientTokenAccessor = entry.accessor
        audit.auth = AuditAuth(
            clientToken: raw, accessor: entry.accessor, displayName: entry.displayName, policies: entry.policies,
            tokenPolicies: entry.policies, entityID: entry.entityID, tokenType: entry.type, tokenTTL: Int64(entry.ttl(now: Int64(Date().timeIntervalSince1970))))

        if operation == .read {
            try await core.audit.logRequest(audit)
            let bytes: [UInt8]
            do {
                bytes = try await core.snapshotSave()
            } catch {
                try await core.audit.logResponse(AuditResponseInfo(request: audit, error: Self.auditMessage(error)))
                throw error
            }
            try await core.audit.logResponse(AuditResponseInfo(request: audit, data: ["bytes": .int(Int64(bytes.count))]))
            return Response(
                status: .ok,
                headers: [
                    .contentType: "application/octet-stream", .cacheControl: "no-store",
                    .contentDisposition: "attachment; filename=\"coffer.snap\"",
                ],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        }

        let body = try await request.body.collect(upTo: configuration.maxSnapshotSize)
        if core.haRole == .standby, let link = configuration.cluster, !configuration.clusterListener {
            // Only the active node writes: the upload goes there unchanged.
            return try await link.forward(request, body: body, clientAddress: remote)
        }
        let bytes = Array(body.readableBytesView)
        audit.data = ["force": .bool(force), "bytes": .int(Int64(bytes.count))]
        try await core.audit.logRequest(audit)
        let accepted = AuditResponseInfo(request: audit)
        do {
            _ = try await core.snapshotRestore(bytes, force: force) { [core] in
                try await core.audit.logResponse(accepted)
            }
        } catch {
            // Refused before anything changed (the devices are still open), or failed after
            // the node sealed (they are closed: this entry goes nowhere, the log has it).
            try? await core.audit.logResponse(AuditResponseInfo(request: audit, error: Self.auditMessage(error)))
            throw error
        }
        return Response(status: .noContent)
    }

    static func auditMessage(_ error: any Error) -> String { (error as? CofferError)?.message ?? "internal error" }
}
