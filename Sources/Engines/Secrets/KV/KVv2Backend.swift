import CofferSDK
@preconcurrency import Crypto
import Foundation

/// One version's bookkeeping inside the key metadata.
struct VersionMeta: Codable, Sendable {
    var createdTime: Date
    var deletionTime: Date?
    var destroyed: Bool
}

/// The metadata record of one key. Stored as hand-mapped JSON (not `Codable`): it is read
/// on every KV read, and Foundation's decoder was the hottest spot of that path.
struct KeyMetadata: Sendable {
    var createdTime: Date
    var updatedTime: Date
    var currentVersion: Int
    var oldestVersion: Int
    var maxVersions: Int
    var casRequired: Bool
    var deleteVersionAfter: Int
    var customMetadata: [String: String]
    var versions: [Int: VersionMeta]

    static func date(_ v: JSONValue?) -> Date? {
        switch v {
        case .double(let d)?: return Date(timeIntervalSince1970: d)
        case .int(let i)?: return Date(timeIntervalSince1970: Double(i))
        default: return nil
        }
    }

    init(createdTime: Date, updatedTime: Date, currentVersion: Int, oldestVersion: Int, maxVersions: Int, casRequired: Bool, deleteVersionAfter: Int, customMetadata: [String: String], versions: [Int: VersionMeta]) {
        self.createdTime = createdTime
        self.updatedTime = updatedTime
        self.currentVersion = currentVersion
        self.oldestVersion = oldestVersion
        self.maxVersions = maxVersions
        self.casRequired = casRequired
        self.deleteVersionAfter = deleteVersionAfter
        self.customMetadata = customMetadata
        self.versions = versions
    }

    /// A key with no versions yet.
    static func empty(_ now: Date) -> KeyMetadata {
        KeyMetadata(createdTime: now, updatedTime: now, currentVersion: 0, oldestVersion: 0, maxVersions: 0,
                    casRequired: false, deleteVersionAfter: 0, customMetadata: [:], versions: [:])
    }

    init(json j: JSONValue) throws {
        guard let created = Self.date(j["created"]), let updated = Self.date(j["updated"]) else {
            throw CofferError.internalError("stored KV metadata is corrupt")
        }
        createdTime = created
        updatedTime = updated
        currentVersion = Int(j["current"]?.intValue ?? 0)
        oldestVersion = Int(j["oldest"]?.intValue ?? 0)
        maxVersions = Int(j["max"]?.intValue ?? 0)
        casRequired = j["cas"]?.boolValue ?? false
        deleteVersionAfter = Int(j["dva"]?.intValue ?? 0)
        customMetadata = (j["custom"]?.objectValue ?? [:]).compactMapValues(\.stringValue)
        var vs: [Int: VersionMeta] = [:]
        for (k, v) in j["versions"]?.objectValue ?? [:] {
            guard let n = Int(k), let c = Self.date(v["c"]) else { throw CofferError.internalError("stored KV metadata is corrupt") }
            vs[n] = VersionMeta(createdTime: c, deletionTime: Self.date(v["d"]), destroyed: v["x"]?.boolValue ?? false)
        }
        versions = vs
    }

    var json: JSONValue {
        var vs: [String: JSONValue] = [:]
        for (n, v) in versions {
            var o: [String: JSONValue] = ["c": .double(v.createdTime.timeIntervalSince1970)]
            if let d = v.deletionTime { o["d"] = .double(d.timeIntervalSince1970) }
            if v.destroyed { o["x"] = true }
            vs[String(n)] = .object(o)
        }
        return .object([
            "created": .double(createdTime.timeIntervalSince1970), "updated": .double(updatedTime.timeIntervalSince1970),
            "current": .int(Int64(currentVersion)), "oldest": .int(Int64(oldestVersion)), "max": .int(Int64(maxVersions)),
            "cas": .bool(casRequired), "dva": .int(Int64(deleteVersionAfter)),
            "custom": .object(customMetadata.mapValues { .string($0) }), "versions": .object(vs),
        ])
    }
}

/// The mount-wide configuration (`config`).
struct KVConfig: Codable, Sendable {
    var maxVersions: Int = 0
    var casRequired: Bool = false
    var deleteVersionAfter: Int = 0
}

/// KV version 2: versioned secrets with soft delete, undelete, destroy, check-and-set,
/// patch and per-key metadata, on Vault's paths.
///
/// Layout: `config`, `metadata/<key>` (lists like the key space), and
/// `versions/<sha256(key)>/<n>` holding `{"data": ...}`.
public struct KVv2Backend: LogicalBackend {
    let config: BackendConfiguration
    var storage: StorageView { config.storage }

    public var backendHelp: String { "Versioned key/value secret storage (version 2)." }

    static let versionsField = Field("versions", .any)
    static let pathField = Field("path", .string)

    /// One table for every KV v2 mount of the process.
    public static let routes: [Route<KVv2Backend>] = [
        Route("config", fields: [Field("max_versions", .int), Field("cas_required", .bool), Field("delete_version_after", .duration)],
              operations: [.read: { try await $0.readConfig($1) }, .update: { try await $0.writeConfig($1) }],
              summary: "Configure the KV mount."),
        Route("data/*path", fields: [pathField, Field("version", .int), Field("data", .map), Field("options", .map)],
              operations: [.read: { try await $0.readData($1) }, .create: { try await $0.writeData($1) },
                           .update: { try await $0.writeData($1) }, .patch: { try await $0.patchData($1) },
                           .delete: { try await $0.deleteLatest($1) }],
              existenceCheck: { try await $0.metadata($1.fields.string("path")) != nil },
              summary: "Read, write, patch or soft-delete the latest version of a secret."),
        Route("metadata/*path", fields: [pathField, Field("max_versions", .int), Field("cas_required", .bool),
                                         Field("delete_version_after", .duration), Field("custom_metadata", .keyValuePairs)],
              operations: [.read: { try await $0.readMetadata($1) }, .create: { try await $0.writeMetadata($1) },
                           .update: { try await $0.writeMetadata($1) }, .patch: { try await $0.patchMetadata($1) },
                           .delete: { try await $0.deleteMetadata($1) }, .list: { try await $0.list($1) }],
              existenceCheck: { try await $0.metadata($1.fields.string("path")) != nil },
              summary: "Read, write, list or delete the metadata of a secret."),
        Route("delete/*path", fields: [pathField, versionsField], operations: [.update: { try await $0.changeVersions($1, .delete) }],
              summary: "Soft-delete versions of a secret."),
        Route("undelete/*path", fields: [pathField, versionsField], operations: [.update: { try await $0.changeVersions($1, .undelete) }],
              summary: "Restore soft-deleted versions of a secret."),
        Route("destroy/*path", fields: [pathField, versionsField], operations: [.update: { try await $0.changeVersions($1, .destroy) }],
              summary: "Permanently remove versions of a secret."),
        Route("subkeys/*path", fields: [pathField, Field("version", .int), Field("depth", .int)], operations: [.read: { try await $0.subkeys($1) }],
              summary: "The structure of a secret without its values."),
    ]

    // MARK: storage helpers

    static func versionsPrefix(_ key: String) -> String {
        "versions/" + Hex.encode(SHA256.hash(data: Array(key.utf8))) + "/"
    }

    func metadata(_ key: String) async throws -> KeyMetadata? {
        guard !key.isEmpty, !key.hasSuffix("/") else { return nil }
        return try await storage.getJSON("metadata/" + key).map(KeyMetadata.init(json:))
    }

    func kvConfig() async throws -> KVConfig { try await storage.getCodable(KVConfig.self, "config") ?? KVConfig() }

    func effectiveMaxVersions(_ m: KeyMetadata, _ c: KVConfig) -> Int {
        if m.maxVersions > 0 && c.maxVersions > 0 { return min(m.maxVersions, c.maxVersions) }
        if m.maxVersions > 0 { return m.maxVersions }
        return c.maxVersions > 0 ? c.maxVersions : 10
    }

    static func time(_ d: Date?) -> JSONValue {
        guard let d else { return .string("") }
        return .string(RFC3339.format(d))
    }

    func versionJSON(_ n: Int, _ v: VersionMeta, _ m: KeyMetadata) -> JSONValue {
        .object([
            "created_time": Self.time(v.createdTime),
            "custom_metadata": m.customMetadata.isEmpty ? .null : .object(m.customMetadata.mapValues { .string($0) }),
            "deletion_time": Self.time(v.deletionTime),
            "destroyed": .bool(v.destroyed),
            "version": .int(Int64(n)),
        ])
    }

    static func isDeleted(_ v: VersionMeta, now: Date = Date()) -> Bool {
        if let d = v.deletionTime, d <= now { return true }
        return false
    }

    // MARK: config

    func readConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let c = try await kvConfig()
        return LogicalResponse(data: [
            "max_versions": .int(Int64(c.maxVersions)), "cas_required": .bool(c.casRequired),
            "delete_version_after": .string(GoDuration.format(c.deleteVersionAfter)),
        ])
    }

    func writeConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        if f.has("max_versions") {
            guard f.int("max_versions") >= 0 else { throw CofferError.invalid("max_versions must be zero or positive") }
        }
        try await storage.withLock("config") {
            var c = try await kvConfig()
            if f.has("max_versions") { c.maxVersions = f.int("max_versions") }
            if f.has("cas_required") { c.casRequired = f.bool("cas_required") }
            if f.has("delete_version_after") { c.deleteVersionAfter = f.int("delete_version_after") }
            try await storage.putCodable("config", c)
        }
        return nil
    }

    // MARK: data

    /// What a read of one version finds.
    enum VersionLookup {
        case missing
        /// Deleted or destroyed: Vault answers 404 with the version's metadata.
        case gone(version: Int, VersionMeta, KeyMetadata)
        case live(version: Int, VersionMeta, KeyMetadata, data: JSONValue)
    }

    /// Resolves `path` and `version` (0 = current) of a read.
    func lookupVersion(_ req: LogicalRequest) async throws -> VersionLookup {
        let key = req.fields.string("path")
        guard let m = try await metadata(key) else { return .missing }
        var n = req.fields.int("version")
        if n == 0 { n = m.currentVersion }
        guard let v = m.versions[n] else { return .missing }
        if Self.isDeleted(v) || v.destroyed { return .gone(version: n, v, m) }
        guard let rec = try await storage.getJSON(Self.versionsPrefix(key) + String(n)) else { return .missing }
        return .live(version: n, v, m, data: rec["data"] ?? .null)
    }

    /// The answer for a version that is gone: 404 with its metadata, `field` set to null.
    func goneResponse(_ field: String, _ n: Int, _ v: VersionMeta, _ m: KeyMetadata) -> LogicalResponse {
        LogicalResponse(data: [field: .null, "metadata": versionJSON(n, v, m)], form: .gone)
    }

    func readData(_ req: LogicalRequest) async throws -> LogicalResponse? {
        switch try await lookupVersion(req) {
        case .missing: return nil
        case .gone(let n, let v, let m): return goneResponse("data", n, v, m)
        case .live(let n, let v, let m, let data): return LogicalResponse(data: ["data": data, "metadata": versionJSON(n, v, m)])
        }
    }

    func writeData(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let key = req.fields.string("path")
        try KVEngine.checkKey(key)
        guard req.fields.has("data") else { throw CofferError.invalid("no data provided") }
        let data = req.fields.map("data")
        let options = req.fields.map("options")
        return try await locked(key) { try await storeVersion(key: key, data: .object(data), cas: options["cas"]) }
    }

    /// Runs a read-check-write section on one key: every change to a key's metadata (and so
    /// to its versions) holds the key's lock, so concurrent writers each get their own
    /// version and a check-and-set is decided against the version it replaces.
    func locked<T: Sendable>(_ key: String, _ body: () async throws -> T) async throws -> T {
        try await storage.withLock("metadata/" + key, body)
    }

    /// Writes a new version (the caller holds the key's lock).
    func storeVersion(key: String, data: JSONValue, cas: JSONValue?) async throws -> LogicalResponse {
        let c = try await kvConfig()
        let now = Date()
        var m = try await metadata(key) ?? KeyMetadata.empty(now)
        if let cas, !cas.isNull {
            guard let want = cas.intValue else { throw CofferError.invalid("error parsing check-and-set parameter") }
            if Int(want) != m.currentVersion {
                throw CofferError.invalid("check-and-set parameter did not match the current version")
            }
        } else if m.casRequired || c.casRequired {
            throw CofferError.invalid("check-and-set parameter required for this call")
        }
        let n = m.currentVersion + 1
        let dva = m.deleteVersionAfter > 0 ? m.deleteVersionAfter : c.deleteVersionAfter
        let v = VersionMeta(createdTime: now, deletionTime: dva > 0 ? now.addingTimeInterval(TimeInterval(dva)) : nil, destroyed: false)
        m.versions[n] = v
        m.currentVersion = n
        m.updatedTime = now
        if m.oldestVersion == 0 { m.oldestVersion = 1 }
        let pruned = prune(&m, max: effectiveMaxVersions(m, c))
        // The version and the metadata that points at it are one atomic write; versions
        // pruned from the metadata are deleted after it (a crash between leaves only rows
        // nothing refers to).
        try await storage.putAll([
            StorageEntry(key: Self.versionsPrefix(key) + String(n), value: JSONValue.object(["data": data]).serialized()),
            StorageEntry(key: "metadata/" + key, value: m.json.serialized()),
        ])
        try await deleteVersions(key: key, pruned)
        return LogicalResponse(data: versionJSON(n, v, m).objectValue)
    }

    /// Drops the oldest versions beyond `max` from the metadata; answers their numbers.
    func prune(_ m: inout KeyMetadata, max: Int) -> [Int] {
        let sorted = m.versions.keys.sorted()
        guard sorted.count > max else { return [] }
        let old = Array(sorted.prefix(sorted.count - max))
        for n in old { m.versions[n] = nil }
        m.oldestVersion = m.versions.keys.min() ?? 0
        return old
    }

    func deleteVersions(key: String, _ versions: [Int]) async throws {
        for n in versions { try await storage.delete(Self.versionsPrefix(key) + String(n)) }
    }

    func patchData(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let key = req.fields.string("path")
        try KVEngine.checkKey(key)
        guard req.fields.has("data") else { throw CofferError.invalid("no data provided") }
        let patch = JSONValue.object(req.fields.map("data"))
        let cas = req.fields.map("options")["cas"]
        return try await locked(key) { () async throws -> LogicalResponse? in
            guard let m = try await metadata(key), let v = m.versions[m.currentVersion], !Self.isDeleted(v), !v.destroyed,
                  let rec = try await storage.getJSON(Self.versionsPrefix(key) + String(m.currentVersion)) else {
                return nil
            }
            let merged = Self.mergePatch(rec["data"] ?? .object([:]), patch)
            return try await storeVersion(key: key, data: merged, cas: cas)
        }
    }

    /// RFC 7396 JSON merge patch.
    static func mergePatch(_ target: JSONValue, _ patch: JSONValue) -> JSONValue {
        guard case .object(let p) = patch else { return patch }
        var t = target.objectValue ?? [:]
        for (k, v) in p {
            if v.isNull { t[k] = nil } else { t[k] = mergePatch(t[k] ?? .null, v) }
        }
        return .object(t)
    }

    func deleteLatest(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let key = req.fields.string("path")
        return try await locked(key) { () async throws -> LogicalResponse? in
            guard var m = try await metadata(key), var v = m.versions[m.currentVersion] else { return nil }
            if v.deletionTime == nil || !Self.isDeleted(v) {
                v.deletionTime = Date()
                m.versions[m.currentVersion] = v
                m.updatedTime = Date()
                try await storage.putJSON("metadata/" + key, m.json)
            }
            return nil
        }
    }

    enum VersionChange { case delete, undelete, destroy }

    func changeVersions(_ req: LogicalRequest, _ change: VersionChange) async throws -> LogicalResponse? {
        let key = req.fields.string("path")
        try KVEngine.checkKey(key)
        var versions: [Int] = []
        switch req.fields["versions"] {
        case .array(let a)?:
            for e in a {
                if let i = e.intValue { versions.append(Int(i)) }
                else if let s = e.stringValue, let i = Int(s) { versions.append(i) }
                else { throw CofferError.invalid("versions must be a list of integers") }
            }
        case .int(let i)?: versions = [Int(i)]
        case .string(let s)?:
            for part in s.split(separator: ",") {
                guard let i = Int(part.trimmingCharacters(in: .whitespaces)) else { throw CofferError.invalid("versions must be a list of integers") }
                versions.append(i)
            }
        case nil, .null?: break
        default: throw CofferError.invalid("versions must be a list of integers")
        }
        guard !versions.isEmpty else { throw CofferError.invalid("no version number provided") }
        let numbers = versions
        return try await locked(key) { () async throws -> LogicalResponse? in
            guard var m = try await metadata(key) else { return nil }
            let now = Date()
            for n in numbers {
                guard var v = m.versions[n] else { continue }
                switch change {
                case .delete:
                    if !v.destroyed && !Self.isDeleted(v) { v.deletionTime = now }
                case .undelete:
                    if !v.destroyed { v.deletionTime = nil }
                case .destroy:
                    v.destroyed = true
                    try await storage.delete(Self.versionsPrefix(key) + String(n))
                }
                m.versions[n] = v
            }
            m.updatedTime = now
            try await storage.putJSON("metadata/" + key, m.json)
            return nil
        }
    }

    // MARK: metadata

    func readMetadata(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let key = req.fields.string("path")
        guard let m = try await metadata(key) else { return nil }
        var versions: [String: JSONValue] = [:]
        for (n, v) in m.versions {
            versions[String(n)] = .object([
                "created_time": Self.time(v.createdTime), "deletion_time": Self.time(v.deletionTime), "destroyed": .bool(v.destroyed),
            ])
        }
        return LogicalResponse(data: [
            "cas_required": .bool(m.casRequired),
            "created_time": Self.time(m.createdTime),
            "current_version": .int(Int64(m.currentVersion)),
            "custom_metadata": m.customMetadata.isEmpty ? .null : .object(m.customMetadata.mapValues { .string($0) }),
            "delete_version_after": .string(GoDuration.format(m.deleteVersionAfter)),
            "max_versions": .int(Int64(m.maxVersions)),
            "oldest_version": .int(Int64(m.oldestVersion)),
            "updated_time": Self.time(m.updatedTime),
            "versions": .object(versions),
        ])
    }

    func applyMetadata(_ f: FieldValues, _ m: inout KeyMetadata) throws {
        if f.has("max_versions") {
            guard f.int("max_versions") >= 0 else { throw CofferError.invalid("max_versions must be zero or positive") }
            m.maxVersions = f.int("max_versions")
        }
        if f.has("cas_required") { m.casRequired = f.bool("cas_required") }
        if f.has("delete_version_after") { m.deleteVersionAfter = f.int("delete_version_after") }
        if f.has("custom_metadata") {
            let cm = f.stringMap("custom_metadata")
            guard cm.count <= 64 else { throw CofferError.invalid("custom_metadata may hold at most 64 keys") }
            for (k, v) in cm where k.count > 128 || v.count > 512 {
                throw CofferError.invalid("custom_metadata keys are limited to 128 and values to 512 characters")
            }
            m.customMetadata = cm
        }
    }

    func writeMetadata(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let key = req.fields.string("path")
        try KVEngine.checkKey(key)
        let fields = req.fields
        return try await locked(key) { () async throws -> LogicalResponse? in
            let now = Date()
            var m = try await metadata(key) ?? KeyMetadata.empty(now)
            try applyMetadata(fields, &m)
            m.updatedTime = now
            let pruned = prune(&m, max: effectiveMaxVersions(m, try await kvConfig()))
            try await storage.putJSON("metadata/" + key, m.json)
            try await deleteVersions(key: key, pruned)
            return nil
        }
    }

    func patchMetadata(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let key = req.fields.string("path")
        let fields = req.fields
        let patchData = req.data["custom_metadata"]
        return try await locked(key) { () async throws -> LogicalResponse? in
            guard var m = try await metadata(key) else { return nil }
            var f = fields
            if f.has("custom_metadata"), case .object(let patch)? = patchData {
                var cm = m.customMetadata
                for (k, v) in patch {
                    if v.isNull { cm[k] = nil } else if let s = v.stringValue { cm[k] = s }
                }
                f.values["custom_metadata"] = .object(cm.mapValues { .string($0) })
            }
            try applyMetadata(f, &m)
            m.updatedTime = Date()
            try await storage.putJSON("metadata/" + key, m.json)
            // A patch answering nothing is a 404 (no such key); done, Vault answers 204.
            return .done
        }
    }

    func deleteMetadata(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let key = req.fields.string("path")
        try KVEngine.checkKey(key)
        return try await locked(key) { () async throws -> LogicalResponse? in
            guard let m = try await metadata(key) else { return nil }
            for n in m.versions.keys { try await storage.delete(Self.versionsPrefix(key) + String(n)) }
            try await storage.delete("metadata/" + key)
            return nil
        }
    }

    func list(_ req: LogicalRequest) async throws -> LogicalResponse? {
        var path = req.fields.string("path")
        if !path.isEmpty && !path.hasSuffix("/") { path += "/" }
        let keys = try await storage.list(prefix: "metadata/" + path)
        return keys.isEmpty ? nil : .list(keys)
    }

    // MARK: subkeys

    func subkeys(_ req: LogicalRequest) async throws -> LogicalResponse? {
        switch try await lookupVersion(req) {
        case .missing: return nil
        case .gone(let n, let v, let m): return goneResponse("subkeys", n, v, m)
        case .live(let n, let v, let m, let data):
            let tree = Self.structure(data, depth: req.fields.int("depth"), level: 1)
            return LogicalResponse(data: ["subkeys": tree, "metadata": versionJSON(n, v, m)])
        }
    }

    static func structure(_ v: JSONValue, depth: Int, level: Int) -> JSONValue {
        guard case .object(let o) = v else { return .null }
        return .object(o.mapValues { child in
            if case .object = child, depth == 0 || level < depth { return structure(child, depth: depth, level: level + 1) }
            return .null
        })
    }
}
