import CofferSDK
import Foundation

/// `cubbyhole/`: each token's private storage, built into every namespace, as in Vault. A
/// token sees only its own cubbyhole (even a root token cannot read another's); it is
/// deleted when the token is revoked (`NamespaceCore.load`'s revocation hook). Response
/// wrapping keeps the wrapped response in the wrapping token's cubbyhole, at `response`.
///
/// Storage: `sys/cubbyhole/<token hash>/<path>` of the namespace, one JSON object per path.
struct CubbyholeBackend: LogicalBackend {
    /// The namespace's `sys/cubbyhole/`.
    let storage: StorageView

    var backendHelp: String { "The cubbyhole engine stores secrets that only the token that wrote them can read." }

    static let routes: [Route<CubbyholeBackend>] = [
        Route("*path", fields: [Field("path", .string)], operations: [
            .read: { try await $0.read($1) }, .create: { try await $0.write($1) }, .update: { try await $0.write($1) },
            .delete: { try await $0.delete($1) }, .list: { try await $0.list($1) },
        ], existenceCheck: { try await $0.scope($1).get($1.fields.string("path")) != nil },
        summary: "Read, write, list and delete the calling token's private secrets."),
    ]

    /// The calling token's part of the storage.
    func scope(_ req: LogicalRequest) throws -> StorageView {
        guard let id = req.token?.cubbyholeID, !id.isEmpty else { throw CofferError.denied() }
        return storage.sub(id + "/")
    }

    static func checkPath(_ path: String) throws {
        if path.isEmpty { throw CofferError.invalid("missing path") }
        if path.hasSuffix("/") { throw CofferError.invalid("cannot write to a path ending in '/'") }
        if path.utf8.count > 2048 { throw CofferError.invalid("path is too long") }
    }

    func read(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let path = req.fields.string("path")
        guard !path.isEmpty, let v = try await scope(req).getJSON(path), let obj = v.objectValue else { return nil }
        return LogicalResponse(data: obj)
    }

    func write(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let path = req.fields.string("path")
        try Self.checkPath(path)
        guard !req.data.isEmpty else { throw CofferError.invalid("missing data fields") }
        try await scope(req).putJSON(path, .object(req.data))
        return nil
    }

    func delete(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let path = req.fields.string("path")
        try Self.checkPath(path)
        try await scope(req).delete(path)
        return nil
    }

    func list(_ req: LogicalRequest) async throws -> LogicalResponse? {
        var prefix = req.fields.string("path")
        if !prefix.isEmpty && !prefix.hasSuffix("/") { prefix += "/" }
        return .list(try await scope(req).list(prefix: prefix).sorted())
    }
}
