import CofferSDK
import Identity
import Foundation

/// The per-mount tunables of Vault's mount `config`.
public struct MountConfig: StoredJSONRecord, Sendable {
    public var defaultLeaseTTL: Int = 0
    public var maxLeaseTTL: Int = 0
    public var forceNoCache: Bool = false
    public var listingVisibility: String = ""
    /// User lockout of an auth mount (`user_lockout_config`); nil fields take the defaults.
    public var lockoutThreshold: Int?
    public var lockoutDuration: Int?
    public var lockoutCounterReset: Int?
    public var lockoutDisable: Bool?
    /// An auth mount's token type: `default-service` (nil), `default-batch`, `service` or
    /// `batch` (the last two override what the method asks for), as Vault's router applies it.
    public var tokenType: String?
    /// The tunable lists by their API names (`listKeys`): request and response keys the
    /// audit devices log as they are (not HMAC'd), headers passed through to the engine and
    /// headers the engine may set. A list is absent when empty.
    public var lists: [String: [String]]?

    public init() {}

    /// The type of a login token, from what the method asked (`default`, `service`, `batch`).
    public func loginTokenType(asked: String) -> String {
        switch tokenType ?? "default-service" {
        case "service": return "service"
        case "batch": return "batch"
        case "default-batch": return asked == "service" ? "service" : "batch"
        default: return asked == "batch" ? "batch" : "service"
        }
    }

    /// The tunable lists, by their API names.
    static let listKeys = ["audit_non_hmac_request_keys", "audit_non_hmac_response_keys", "passthrough_request_headers", "allowed_response_headers"]

    public subscript(list key: String) -> [String]? {
        get { lists?[key] }
        set {
            var all = lists ?? [:]
            all[key] = newValue.flatMap { $0.isEmpty ? nil : $0 }
            lists = all.isEmpty ? nil : all
        }
    }

    /// What a mount listing and a tune read show beyond the TTLs.
    func tunables(auth: Bool) -> [String: JSONValue] {
        var o: [String: JSONValue] = [:]
        if auth { o["token_type"] = .string(tokenType ?? "default-service") }
        if !listingVisibility.isEmpty { o["listing_visibility"] = .string(listingVisibility) }
        for k in Self.listKeys { if let l = self[list: k] { o[k] = .array(l.map { .string($0) }) } }
        return o
    }

    public var storedJSON: JSONValue {
        var o: [String: JSONValue] = [
            "defaultLeaseTTL": .int(Int64(defaultLeaseTTL)), "maxLeaseTTL": .int(Int64(maxLeaseTTL)),
            "forceNoCache": .bool(forceNoCache), "listingVisibility": .string(listingVisibility),
        ]
        if let lockoutThreshold { o["lockoutThreshold"] = .int(Int64(lockoutThreshold)) }
        if let lockoutDuration { o["lockoutDuration"] = .int(Int64(lockoutDuration)) }
        if let lockoutCounterReset { o["lockoutCounterReset"] = .int(Int64(lockoutCounterReset)) }
        if let lockoutDisable { o["lockoutDisable"] = .bool(lockoutDisable) }
        if let tokenType { o["tokenType"] = .string(tokenType) }
        if let lists { o["lists"] = .object(lists.mapValues { .storedList($0) }) }
        return .object(o)
    }

    public init(storedJSON: JSONValue) throws {
        let f = try StoredFields(storedJSON)
        defaultLeaseTTL = try f.int("defaultLeaseTTL")
        maxLeaseTTL = try f.int("maxLeaseTTL")
        forceNoCache = try f.bool("forceNoCache")
        listingVisibility = try f.string("listingVisibility")
        lockoutThreshold = f.has("lockoutThreshold") ? try f.int("lockoutThreshold") : nil
        lockoutDuration = f.has("lockoutDuration") ? try f.int("lockoutDuration") : nil
        lockoutCounterReset = f.has("lockoutCounterReset") ? try f.int("lockoutCounterReset") : nil
        lockoutDisable = f.has("lockoutDisable") ? try f.bool("lockoutDisable") : nil
        tokenType = f.has("tokenType") ? try f.string("tokenType") : nil
        if f.has("lists"), case .object(let stored) = try f.value("lists") {
            let inner = try StoredFields(.object(stored))
            lists = try Dictionary(uniqueKeysWithValues: stored.keys.map { ($0, try inner.stringList($0)) })
        }
    }

    /// Vault's defaults: 5 failures within 15 minutes lock the user for 15 minutes.
    public var effectiveLockout: (threshold: Int, duration: Int, counterReset: Int, disabled: Bool) {
        (lockoutThreshold ?? 5, lockoutDuration ?? 900, lockoutCounterReset ?? 900, lockoutDisable ?? false)
    }

    /// The mount's TTLs as they apply: its own when tuned (non-zero), else the system's.
    public func defaultTTL(system: Int) -> Int { defaultLeaseTTL > 0 ? defaultLeaseTTL : system }
    public func maxTTL(system: Int) -> Int { maxLeaseTTL > 0 ? maxLeaseTTL : system }
}

/// One row of a mount table (secret engines or auth methods).
public struct MountEntry: StoredJSONRecord, Sendable {
    public var path: String
    public var type: String
    public var description: String
    public var uuid: String
    public var accessor: String
    public var config: MountConfig
    public var options: [String: String]
    public var local: Bool
    public var sealWrap: Bool

    public init(path: String, type: String, description: String = "", options: [String: String] = [:], config: MountConfig = MountConfig(), local: Bool = false, sealWrap: Bool = false, accessorPrefix: String? = nil) {
        self.path = path
        self.type = type
        self.description = description
        self.uuid = RandomID.secureUUID()
        self.accessor = "\(accessorPrefix ?? type)_\(String(RandomID.secureUUID().prefix(8)))"
        self.config = config
        self.options = options
        self.local = local
        self.sealWrap = sealWrap
    }

    public var storedJSON: JSONValue {
        ["path": .string(path), "type": .string(type), "description": .string(description), "uuid": .string(uuid),
         "accessor": .string(accessor), "config": config.storedJSON, "options": .storedStrings(options),
         "local": .bool(local), "sealWrap": .bool(sealWrap)]
    }

    public init(storedJSON: JSONValue) throws {
        let f = try StoredFields(storedJSON)
        path = try f.string("path")
        type = try f.string("type")
        description = try f.string("description")
        uuid = try f.string("uuid")
        accessor = try f.string("accessor")
        config = try MountConfig(storedJSON: f.value("config"))
        options = try f.strings("options")
        local = try f.bool("local")
        sealWrap = try f.bool("sealWrap")
    }

    /// Vault's JSON shape for `sys/mounts` and `sys/auth`.
    public func json(systemDefaultTTL: Int, systemMaxTTL: Int, auth: Bool = false) -> JSONValue {
        .object([
            "accessor": .string(accessor),
            "config": .object([
                "default_lease_ttl": .int(Int64(config.defaultLeaseTTL)),
                "max_lease_ttl": .int(Int64(config.maxLeaseTTL)),
                "force_no_cache": .bool(config.forceNoCache),
            ].merging(config.tunables(auth: auth)) { a, _ in a }),
            "description": .string(description),
            "external_entropy_access": .bool(false),
            "local": .bool(local),
            "options": options.isEmpty ? .null : .object(options.mapValues { .string($0) }),
            "plugin_version": .string(""),
            "running_plugin_version": .string(""),
            "running_sha256": .string(""),
            "seal_wrap": .bool(sealWrap),
            "type": .string(type),
            "uuid": .string(uuid),
        ])
    }
}

/// Where engines come from: type name → factory. Built by the executable, so the core
/// never imports an engine.
public struct EngineCatalog: Sendable {
    public var secrets: [String: BackendFactory]
    public var auth: [String: BackendFactory]

    public init(secrets: [String: BackendFactory] = [:], auth: [String: BackendFactory] = [:]) {
        self.secrets = secrets
        self.auth = auth
    }

    /// Canonical type and options: `kv-v2` is `kv` with `version=2`, as Vault accepts it.
    public static func canonical(type: String, options: [String: String]) -> (String, [String: String]) {
        var o = options
        switch type {
        case "kv-v2":
            o["version"] = "2"
            return ("kv", o)
        case "kv-v1":
            o["version"] = "1"
            return ("kv", o)
        case "generic":
            return ("kv", o)
        default:
            return (type, o)
        }
    }
}

/// A mount with its live backend.
public struct MountedBackend: Sendable {
    public enum Kind: Sendable { case secret, auth, system }
    public var entry: MountEntry
    public var backend: CompiledBackend
    public var kind: Kind
    /// Route prefix within the namespace (`secret/`, `auth/userpass/`, `sys/`).
    public var routePath: String
    /// Being disabled: its leases are being revoked, so it takes no request (one that
    /// would make a lease nobody revokes).
    public var closing = false
}

extension MountedBackend {
    /// What the identity store shows of an auth mount in its aliases.
    var identityInfo: AuthMountInfo {
        AuthMountInfo(accessor: entry.accessor, path: routePath, type: entry.type, local: entry.local)
    }
}

/// Longest-prefix routing over the mounts of one namespace.
public struct MountRouter: Sendable {
    public private(set) var mounts: [MountedBackend] = []

    public init() {}

    public mutating func add(_ m: MountedBackend) {
        mounts.removeAll { $0.routePath == m.routePath }
        mounts.append(m)
        mounts.sort { $0.routePath.count > $1.routePath.count }
    }

    public mutating func remove(routePath: String) { mounts.removeAll { $0.routePath == routePath } }

    /// Marks the mount at `routePath` as closing (or open again, when its unmount failed).
    public mutating func setClosing(_ closing: Bool, routePath: String) {
        for i in mounts.indices where mounts[i].routePath == routePath { mounts[i].closing = closing }
    }

    /// Whether the mount at `routePath` is gone or closing.
    public func isClosed(routePath: String) -> Bool {
        mounts.first { $0.routePath == routePath }?.closing ?? true
    }

    /// The mount serving `path` (the longest matching prefix). A path equal to a mount
    /// without its trailing slash (`secret`) routes to that mount.
    public func route(_ path: String) -> MountedBackend? {
        for m in mounts {
            if path.hasPrefix(m.routePath) { return m }
            if path.count == m.routePath.count - 1, m.routePath.hasPrefix(path) { return m }
        }
        return nil
    }

    /// Is `candidate` overlapping an existing mount (same, nested under, or above)?
    public func conflicts(_ candidate: String) -> String? {
        for m in mounts where candidate.hasPrefix(m.routePath) || m.routePath.hasPrefix(candidate) {
            return m.routePath
        }
        return nil
    }
}
