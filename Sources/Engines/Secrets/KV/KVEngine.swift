import CofferSDK
import Foundation

/// The `kv` secret engine: version 1 (plain key/value) or version 2 (versioned), chosen by
/// the mount option `version`, as in Vault.
public enum KVEngine {
    public static let factory: BackendFactory = { config in
        if config.options["version"] == "2" { return KVv2Backend(config: config) }
        return KVv1Backend(config: config)
    }

    static func checkKey(_ key: String) throws {
        if key.isEmpty { throw CofferError.invalid("missing path") }
        if key.hasSuffix("/") { throw CofferError.invalid("cannot write to a path ending in '/'") }
        if key.count > 2048 { throw CofferError.invalid("path is too long") }
    }
}

/// KV version 1: one value per path, no history.
public struct KVv1Backend: LogicalBackend {
    let config: BackendConfiguration
    var storage: StorageView { config.storage }

    public var backendHelp: String { "Key/value secret storage (version 1)." }

    public static let routes: [Route<KVv1Backend>] = [
        Route("*path", fields: [Field("path", .string)], operations: [
            .read: { try await $0.read($1) }, .create: { try await $0.write($1) }, .update: { try await $0.write($1) },
            .delete: { try await $0.delete($1) }, .list: { try await $0.list($1) },
        ], existenceCheck: { try await $0.storage.get($1.fields.string("path")) != nil },
        summary: "Read, write, list and delete secrets.",
        help: "Pass any JSON object to write; it is returned as-is on read."),
    ]

    func read(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let path = req.fields.string("path")
        guard !path.isEmpty, let v = try await storage.getJSON(path), let obj = v.objectValue else { return nil }
        var ttl = config.defaultLeaseTTL
        if let t = obj["ttl"] ?? obj["lease"] {
            if let i = t.intValue { ttl = Int(i) } else if let s = t.stringValue, let secs = GoDuration.parseSeconds(s) { ttl = Int(secs) }
        }
        return LogicalResponse(data: obj, secret: SecretLease(ttl: ttl))
    }

    func write(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let path = req.fields.string("path")
        try KVEngine.checkKey(path)
        // The body as sent, as Vault stores it: the path comes from the URL (captures), so a
        // key named "path" in the body is data like any other.
        let data = req.data
        guard !data.isEmpty else { throw CofferError.invalid("missing data fields") }
        try await storage.putJSON(path, .object(data))
        return nil
    }

    func delete(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let path = req.fields.string("path")
        try KVEngine.checkKey(path)
        try await storage.delete(path)
        return nil
    }

    func list(_ req: LogicalRequest) async throws -> LogicalResponse? {
        var path = req.fields.string("path")
        if !path.isEmpty && !path.hasSuffix("/") { path += "/" }
        let keys = try await storage.list(prefix: path)
        return keys.isEmpty ? nil : .list(keys)
    }
}
