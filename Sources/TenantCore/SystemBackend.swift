import CofferSDK
import Foundation
import Synchronization

/// `sys/` of one namespace: mounts, auth methods, policies, capabilities, keyring.
/// (Seal, unseal, init, health and leader are node-level and answered before routing.)
///
/// One route table serves every namespace (building it, about fifty routes, for each
/// namespace cost a quarter of a millisecond and tens of kilobytes per loaded namespace).
/// The core makes an instance for each request (`NamespaceCore.instance(of:owner:)`): the
/// namespace called and the calling token's namespace, so no handler runs without them.
struct SystemBackend: LogicalBackend {
    /// The namespace whose `sys/` is being called.
    let ns: NamespaceCore
    /// The namespace of the calling token: `ns` itself or an ancestor of it.
    let tokenNamespace: NamespaceCore

    /// What the `sys/` mount of every namespace routes through (its instance is per request).
    static let compiled = CompiledBackend(declaring: SystemBackend.self, rootPaths: rootPathList, unauthenticatedPaths: ["wrapping/lookup", "internal/ui/mounts", "internal/ui/mounts/*"])

    var backendHelp: String { "The system backend controls mounts, auth methods, policies and the keyring." }
    var rootPaths: [String] { Self.rootPathList }
    static let rootPathList = ["auth/*", "remount", "rotate", "seal", "raw", "raw/*", "audit", "audit/*", "audit-hash/*", "audit-chain/*", "leases", "leases/lookup/*", "leases/revoke-prefix/*", "leases/revoke-force/*", "revoke-prefix/*", "revoke-force/*", "storage/*"]

    static let mountFields: [Field] = [
        Field("path", .string), Field("type", .string), Field("description", .string), Field("config", .map),
        Field("options", .keyValuePairs), Field("local", .bool), Field("seal_wrap", .bool), Field("plugin_name", .string),
        Field("external_entropy_access", .bool),
    ]
    static let tuneFields: [Field] = [
        Field("path", .string), Field("default_lease_ttl", .string), Field("max_lease_ttl", .string), Field("description", .string),
        Field("options", .keyValuePairs), Field("listing_visibility", .string), Field("force_no_cache", .bool),
        Field("audit_non_hmac_request_keys", .commaStringSlice), Field("audit_non_hmac_response_keys", .commaStringSlice),
        Field("passthrough_request_headers", .commaStringSlice), Field("allowed_response_headers", .commaStringSlice),
        Field("user_lockout_config", .map), Field("token_type", .string),
    ]

    static let routes: [Route<SystemBackend>] = [
        Route("mounts", operations: [.read: { b, _ in b.listMounts(.secret) }], summary: "List secret engines."),
        Route("mounts/*path", fields: Self.mountFields + Self.tuneFields, operations: [
            .read: { try await $0.mountRead($1, kind: .secret) },
            .update: { try await $0.mountWrite($1, kind: .secret) },
            .delete: { try await $0.mountDelete($1, kind: .secret) },
        ], summary: "Enable, disable, read or tune a secret engine."),
        Route("auth", operations: [.read: { b, _ in b.listMounts(.auth) }], summary: "List auth methods."),
        Route("auth/*path", fields: Self.mountFields + Self.tuneFields, operations: [
            .read: { try await $0.mountRead($1, kind: .auth) },
            .update: { try await $0.mountWrite($1, kind: .auth) },
            .delete: { try await $0.mountDelete($1, kind: .auth) },
        ], summary: "Enable, disable, read or tune an auth method."),
        Route("remount", fields: [Field("from", .string, required: true), Field("to", .string, required: true)], operations: [.update: { try await $0.remount($1) }], summary: "Move a mount."),
        Route("policy", operations: [.read: { try await $0.listPoliciesLegacy($1) }, .list: { try await $0.listPolicies($1) }], summary: "List policies."),
        Route("policy/:name", fields: [Field("name", .string), Field("rules", .string), Field("policy", .string)], operations: [
            .read: { try await $0.readPolicyLegacy($1) }, .update: { try await $0.writePolicy($1) }, .delete: { try await $0.deletePolicy($1) },
        ], summary: "Read, write or delete an ACL policy."),
        Route("policies/acl/?", operations: [.list: { try await $0.listPolicies($1) }, .read: { try await $0.listPolicies($1) }], summary: "List ACL policies."),
        Route("policies/acl/:name", fields: [Field("name", .string), Field("policy", .string)], operations: [
            .read: { try await $0.readPolicy($1) }, .update: { try await $0.writePolicy($1) }, .delete: { try await $0.deletePolicy($1) },
        ], summary: "Read, write or delete an ACL policy."),
        Route("capabilities", fields: [Field("token", .string), Field("path", .commaStringSlice), Field("paths", .commaStringSlice)], operations: [.update: { try await $0.capabilities($1) }], summary: "Capabilities of a token on paths."),
        Route("capabilities-self", fields: [Field("path", .commaStringSlice), Field("paths", .commaStringSlice)], operations: [.update: { try await $0.capabilitiesSelf($1) }], summary: "Capabilities of the calling token."),
        Route("capabilities-accessor", fields: [Field("accessor", .string, required: true), Field("path", .commaStringSlice), Field("paths", .commaStringSlice)], operations: [.update: { try await $0.capabilitiesAccessor($1) }], summary: "Capabilities of a token by accessor."),
        Route("namespaces/?", operations: [.list: { try await $0.listNamespaces($1) }], summary: "List child namespaces."),
        Route("namespaces/api-lock/lock/*path", fields: [Field("path", .string)], operations: [
            .update: { b, req in LogicalResponse(data: ["unlock_key": .string(try await b.ns.onNode().lockNamespace(callerPath: b.ns.path, relative: req.fields.string("path")))]) },
        ], summary: "Lock the API of this namespace or a descendant; returns the unlock key."),
        Route("namespaces/api-lock/lock", operations: [
            .update: { b, _ in LogicalResponse(data: ["unlock_key": .string(try await b.ns.onNode().lockNamespace(callerPath: b.ns.path, relative: ""))]) },
        ], summary: "Lock the API of this namespace; returns the unlock key."),
        Route("namespaces/api-lock/unlock/*path", fields: [Field("path", .string), Field("unlock_key", .string)], operations: [
            .update: { b, req in
                try await b.ns.onNode().unlockNamespace(callerPath: b.ns.path, relative: req.fields.string("path"), key: req.fields.optionalString("unlock_key"), callerIsRoot: req.token?.isRoot ?? false)
                return nil
            },
        ], summary: "Unlock the API of this namespace or a descendant (unlock key or root token)."),
        Route("namespaces/api-lock/unlock", fields: [Field("unlock_key", .string)], operations: [
            .update: { b, req in
                try await b.ns.onNode().unlockNamespace(callerPath: b.ns.path, relative: "", key: req.fields.optionalString("unlock_key"), callerIsRoot: req.token?.isRoot ?? false)
                return nil
            },
        ], summary: "Unlock the API of this namespace (unlock key or root token)."),
        Route("namespaces/:name/seal-status", fields: [Field("name", .string)], operations: [
            .read: { b, req in LogicalResponse(data: Self.sealStatusJSON(try await b.ns.onNode().namespaceSealStatus(callerPath: b.ns.path, relative: req.fields.string("name")))) },
        ], summary: "Seal status of a sealable child namespace."),
        Route("namespaces/:name/seal", fields: [Field("name", .string)], operations: [
            .update: { b, req in try await b.ns.onNode().sealNamespace(callerPath: b.ns.path, relative: req.fields.string("name")); return nil },
        ], summary: "Seal a sealable child namespace: its keys leave memory, its requests answer 503."),
        Route("namespaces/:name/unseal", fields: [Field("name", .string), Field("key", .string), Field("reset", .bool)], operations: [
            .update: { b, req in
                let status = try await b.ns.onNode().unsealNamespace(callerPath: b.ns.path, relative: req.fields.string("name"),
                                                                     key: req.fields.optionalString("key"), reset: req.fields.bool("reset"))
                return LogicalResponse(data: Self.sealStatusJSON(status))
            },
        ], summary: "Submit one unseal key share of a sealable child namespace."),
        Route("namespaces/*path", fields: [Field("path", .string), Field("custom_metadata", .map), Field("seal", .any), Field("seals", .any)], operations: [
            .read: { try await $0.readNamespace($1) }, .update: { try await $0.createNamespace($1) }, .patch: { try await $0.patchNamespace($1) }, .delete: { try await $0.deleteNamespace($1) },
        ], summary: "Create, read, update or delete a child namespace."),
        Route("tenants/?", operations: [.list: { try await $0.listTenants($1) }], summary: "List tenants (root namespace only)."),
        Route("tenants/:name", fields: [
            Field("name", .string, required: true), Field("custom_metadata", .keyValuePairs),
            Field("admin_policy", .string), Field("quotas", .any),
        ], operations: [.read: { try await $0.readTenant($1) }, .update: { try await $0.provisionTenant($1) }, .delete: { try await $0.deprovisionTenant($1) }],
              summary: "Provision, read or deprovision a tenant: namespace, admin policy and admin token in one call."),
        Route("rotate", operations: [.update: { b, _ in try await b.rotate(); return nil }], summary: "Add a new barrier key term."),
        Route("key-status", operations: [.read: { b, _ in LogicalResponse(data: try await b.keyStatus()) }], summary: "The active barrier key term."),
        Route("seal", operations: [.update: { b, _ in try await b.seal(); return nil }], summary: "Seal the server."),
    ] + quotaRoutes + leaseQuotaRoutes + leaseRoutes + passwordPolicyRoutes + auditRoutes + wrappingRoutes + lockoutRoutes + uiMountRoutes

    // MARK: tenants

    /// `sys/seal`: the node (root namespace only).
    func seal() async throws {
        guard ns.path.isEmpty else { throw CofferError.invalid("sys/seal is only available in the root namespace") }
        try await ns.onNode().seal()
    }

    /// `sys/rotate`: a new term of this namespace's keyring (the root's: the barrier's).
    func rotate() async throws {
        let node = try ns.onNode()
        if ns.path.isEmpty { try await node.rotate() } else { try await node.rotateNamespaceKeyring(path: ns.path) }
    }

    func keyStatus() async throws -> [String: JSONValue] {
        let node = try ns.onNode()
        if ns.path.isEmpty { return try await node.keyStatus() }
        return try await node.namespaceKeyStatus(path: ns.path)
    }

    /// The node, for tenant provisioning (it spans namespaces): root namespace only.
    func tenantNode() throws -> Core {
        guard ns.path.isEmpty else { throw CofferError(.notFound, "tenants are managed from the root namespace") }
        return try ns.onNode()
    }

    func listTenants(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let names = try await tenantNode().tenantNames()
        return names.isEmpty ? nil : .list(names)
    }

    func readTenant(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let t = try await tenantNode().tenant(name: req.fields.string("name")) else { return nil }
        return LogicalResponse(data: t.objectValue)
    }

    func provisionTenant(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        let policy = f.optionalString("admin_policy").flatMap { $0.isEmpty ? nil : $0 }
        let (record, auth) = try await tenantNode().provisionTenant(
            name: f.string("name"), metadata: f.stringMap("custom_metadata"), adminPolicy: policy, quotas: f["quotas"].flatMap { $0.isNull ? nil : $0 })
        let r = LogicalResponse(data: record.objectValue, auth: auth)
        return r
    }

    func deprovisionTenant(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try await tenantNode().deprovisionTenant(name: req.fields.string("name"))
        return nil
    }

    // MARK: namespaces

    func listNamespaces(_ req: LogicalRequest) async throws -> LogicalResponse? {
        var info: [String: JSONValue] = [:]
        for name in try await ns.childNames() {
            if let r = try await ns.child(name) { info[name + "/"] = relativeJSON(r) }
        }
        guard !info.isEmpty else { return nil }
        let keys = info.keys.sorted()
        return LogicalResponse(data: ["keys": .array(keys.map { .string($0) }), "key_info": .object(info)])
    }

    /// A record as seen from this namespace (Vault shows paths relative to the caller).
    func relativeJSON(_ r: NamespaceRecord) -> JSONValue {
        var o = r.json.objectValue ?? [:]
        o["path"] = .string(String(r.path.dropFirst(ns.path.count)))
        return .object(o)
    }

    /// A direct child's record (deeper ones are read from their parent namespace).
    func record(_ relative: String) async throws -> NamespaceRecord? {
        guard let rel = NamespacePath.normalize(relative), !rel.isEmpty else { return nil }
        let segs = rel.split(separator: "/")
        guard segs.count == 1 else { return nil }
        return try await ns.child(String(segs[0]))
    }

    func readNamespace(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let r = try await record(req.fields.string("path")) else { return nil }
        return LogicalResponse(data: relativeJSON(r).objectValue)
    }

    func createNamespace(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let meta = try req.fields.map("custom_metadata").mapValues { v -> String in
            guard let s = v.stringValue else { throw CofferError.invalid("custom_metadata values must be strings") }
            return s
        }
        let shape = try Self.namespaceSealShape(seal: req.fields.values["seal"], seals: req.fields.values["seals"])
        let (r, keys) = try await ns.onNode().createNamespace(parentPath: ns.path, relative: req.fields.string("path"), metadata: meta, seal: shape)
        var data = relativeJSON(r).objectValue ?? [:]
        if let shape {
            data["key_shares"] = .array(keys.map { .string(Hex.encode($0)) })
            data["key_threshold"] = .int(Int64(shape.threshold))
        }
        return LogicalResponse(data: data)
    }

    func patchNamespace(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let r = try await ns.onNode().updateNamespace(parentPath: ns.path, relative: req.fields.string("path"), patch: req.fields.map("custom_metadata"))
        return LogicalResponse(data: relativeJSON(r).objectValue)
    }

    func deleteNamespace(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try await ns.onNode().deleteNamespace(parentPath: ns.path, relative: req.fields.string("path"))
        return nil
    }

    func listMounts(_ kind: MountedBackend.Kind) -> LogicalResponse {
        var data: [String: JSONValue] = [:]
        for m in ns.mounts(kind: kind) {
            data[m.entry.path] = m.entry.json(systemDefaultTTL: ns.configuration.defaultLeaseTTL, systemMaxTTL: ns.configuration.maxLeaseTTL, auth: m.kind == .auth)
        }
        return LogicalResponse(data: data)
    }

    static func splitTune(_ path: String) -> (String, Bool) {
        if path.hasSuffix("/tune") { return (String(path.dropLast(5)), true) }
        return (path, false)
    }

    func mount(_ path: String, kind: MountedBackend.Kind) -> MountedBackend? {
        let p = path.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/"
        return ns.mounts(kind: kind).first { $0.entry.path == p && ($0.kind == kind || kind == .secret) }
    }

    func mountRead(_ req: LogicalRequest, kind: MountedBackend.Kind) async throws -> LogicalResponse? {
        let (path, tune) = Self.splitTune(req.fields.string("path"))
        guard let m = mount(path, kind: kind) else {
            throw CofferError.invalid("cannot fetch sysview for path \"\(path.prefix(128))\"")
        }
        if tune {
            var d: [String: JSONValue] = [
                "default_lease_ttl": .int(Int64(m.entry.config.defaultTTL(system: ns.configuration.defaultLeaseTTL))),
                "max_lease_ttl": .int(Int64(m.entry.config.maxTTL(system: ns.configuration.maxLeaseTTL))),
                "force_no_cache": .bool(m.entry.config.forceNoCache),
                "description": .string(m.entry.description),
            ]
            if !m.entry.options.isEmpty { d["options"] = .object(m.entry.options.mapValues { .string($0) }) }
            d.merge(m.entry.config.tunables(auth: m.kind == .auth)) { a, _ in a }
            if ["userpass", "approle", "ldap"].contains(m.entry.type) {
                let l = m.entry.config.effectiveLockout
                d["user_lockout_threshold"] = .int(Int64(l.threshold))
                d["user_lockout_duration"] = .int(Int64(l.duration))
                d["user_lockout_counter_reset_duration"] = .int(Int64(l.counterReset))
                d["user_lockout_disable"] = .bool(l.disabled)
            }
            return LogicalResponse(data: d)
        }
        return LogicalResponse(data: m.entry.json(systemDefaultTTL: ns.configuration.defaultLeaseTTL, systemMaxTTL: ns.configuration.maxLeaseTTL, auth: m.kind == .auth).objectValue)
    }

    static func ttl(_ v: JSONValue?, field: String) throws -> Int? {
        guard let v, !v.isNull else { return nil }
        switch v {
        case .int(let i): return try Checked.duration(i, field: field)
        case .double(let d):
            guard let i = Checked.int64(truncating: d) else { throw CofferError.invalid("invalid \(field)") }
            return try Checked.duration(i, field: field)
        case .string(let s):
            if s == "system" || s.isEmpty { return 0 }
            guard let secs = CofferSDK.GoDuration.parseSeconds(s) else { throw CofferError.invalid("invalid \(field): \"\(s.prefix(32))\"") }
            return Int(secs)
        default: throw CofferError.invalid("invalid \(field)")
        }
    }

    /// Bounds of what a mount entry stores: every mount table is loaded with its namespace
    /// and listed whole by `GET sys/mounts`, so a tenant admin must not be able to grow it
    /// without limit.
    static let maxDescriptionBytes = 16 * 1024
    static let maxOptions = 64
    static let maxOptionBytes = 1024

    static func checkMountMetadata(description: String?, options: [String: String]?) throws {
        if let description, description.utf8.count > maxDescriptionBytes {
            throw CofferError.invalid("description is longer than \(maxDescriptionBytes) bytes")
        }
        guard let options else { return }
        guard options.count <= maxOptions else { throw CofferError.invalid("at most \(maxOptions) options are allowed") }
        for (k, v) in options where k.utf8.count > maxOptionBytes || v.utf8.count > maxOptionBytes {
            throw CofferError.invalid("option names and values are limited to \(maxOptionBytes) bytes")
        }
    }

    /// `user_lockout_config` of a tune: each field given changes ("system" or "" back to the
    /// default); nil when the tune has none.
    static func lockoutTune(_ m: [String: JSONValue]) throws -> (@Sendable (inout MountConfig) -> Void)? {
        guard !m.isEmpty else { return nil }
        func text(_ k: String) -> String? {
            switch m[k] {
            case .string(let s)?: return s
            case .int(let i)?: return String(i)
            case .double(let d)?: return Checked.int64(exactly: d).map(String.init)
            default: return nil
            }
        }
        func duration(_ k: String) throws -> Int?? {
            guard let t = text(k) else { return .none }
            if t.isEmpty || t == "system" { return .some(nil) }
            guard let secs = GoDuration.parseSeconds(t) else { throw CofferError.invalid("invalid \(k) \"\(t.prefix(32))\"") }
            return .some(Int(secs))
        }
        var threshold: Int??
        if let t = text("lockout_threshold") {
            if t.isEmpty || t == "system" { threshold = .some(nil) } else {
                guard let n = UInt32(t) else { throw CofferError.invalid("unable to parse user lockout threshold \"\(t.prefix(32))\"") }
                threshold = .some(Int(n))
            }
        }
        let lockDuration = try duration("lockout_duration")
        let reset = try duration("lockout_counter_reset_duration") ?? duration("lockout_counter_reset")
        var disable: Bool?
        if let v = m["lockout_disable"] {
            switch v {
            case .bool(let b): disable = b
            case .string(let s) where ["true", "false"].contains(s.lowercased()): disable = s.lowercased() == "true"
            default: throw CofferError.invalid("unable to convert given user lockout config information")
            }
        }
        let chosenThreshold = threshold, chosenDuration = lockDuration, chosenReset = reset, chosenDisable = disable
        return { c in
            if let t = chosenThreshold { c.lockoutThreshold = t }
            if let d = chosenDuration { c.lockoutDuration = d }
            if let r = chosenReset { c.lockoutCounterReset = r }
            if let b = chosenDisable { c.lockoutDisable = b }
        }
    }

    func mountWrite(_ req: LogicalRequest, kind: MountedBackend.Kind) async throws -> LogicalResponse? {
        let f = req.fields
        try Self.checkMountMetadata(description: f.optionalString("description"), options: f.has("options") ? f.stringMap("options") : nil)
        let (path, tune) = Self.splitTune(f.string("path"))
        if tune {
            let tunables = req.data
            let dflt = try Self.ttl(f["default_lease_ttl"], field: "default_lease_ttl")
            let max = try Self.ttl(f["max_lease_ttl"], field: "max_lease_ttl")
            let description = f.optionalString("description")
            let options = f.has("options") ? f.stringMap("options") : nil
            let systemMax = ns.configuration.maxLeaseTTL
            let lockout = try Self.lockoutTune(f.has("user_lockout_config") ? f.map("user_lockout_config") : [:])
            try await ns.tuneMount(path: path, kind: kind) { e in
                try Self.applyTunables(tunables, to: &e.config, auth: kind == .auth, type: e.type)
                if let lockout {
                    guard ["userpass", "approle", "ldap"].contains(e.type) else {
                        throw CofferError.invalid("tuning of user lockout configuration for auth type \"\(e.type.prefix(32))\" not allowed")
                    }
                    lockout(&e.config)
                }
                if let dflt { e.config.defaultLeaseTTL = dflt }
                if let max { e.config.maxLeaseTTL = max }
                if e.config.maxLeaseTTL > 0, e.config.defaultLeaseTTL > e.config.maxLeaseTTL {
                    throw CofferError.invalid("default lease TTL greater than max lease TTL")
                }
                if e.config.maxLeaseTTL > systemMax { throw CofferError.invalid("max lease TTL exceeds system max") }
                if let description { e.description = description }
                if let options {
                    for (k, v) in options {
                        if k == "version", let old = e.options["version"], let o = Int(old), let n = Int(v), n < o {
                            throw CofferError.invalid("cannot downgrade mount from version \(o) to \(n)")
                        }
                        e.options[k] = v
                    }
                    try Self.checkMountMetadata(description: nil, options: e.options)
                }
            }
            return nil
        }
        var type = f.string("type")
        if type.isEmpty { type = f.string("plugin_name") }
        let configMap = f.map("config")
        var config = MountConfig()
        config.defaultLeaseTTL = try Self.ttl(configMap["default_lease_ttl"], field: "default_lease_ttl") ?? 0
        config.maxLeaseTTL = try Self.ttl(configMap["max_lease_ttl"], field: "max_lease_ttl") ?? 0
        config.forceNoCache = configMap["force_no_cache"]?.boolValue ?? false
        try Self.applyTunables(configMap, to: &config, auth: kind == .auth, type: type)
        if config.maxLeaseTTL > 0, config.defaultLeaseTTL > config.maxLeaseTTL {
            throw CofferError.invalid("default lease TTL greater than max lease TTL")
        }
        var options = f.stringMap("options")
        if let v = options["version"], Int(v) == nil { throw CofferError.invalid("invalid version option \"\(v.prefix(8))\"") }
        if type == "kv" && options["version"] == nil { options["version"] = "1" }
        try await ns.enableMount(path: path, type: type, description: f.string("description"), config: config, options: options, local: f.bool("local"), sealWrap: f.bool("seal_wrap"), kind: kind)
        return nil
    }

    /// Vault's tunables of a mount, from an enable's `config` or a tune's fields:
    /// `token_type` (auth mounts other than the token store), `listing_visibility`, and the
    /// audit-key and header lists (at most 64 names each).
    static func applyTunables(_ values: [String: JSONValue], to c: inout MountConfig, auth: Bool, type: String) throws {
        if let raw = values["token_type"], !raw.isNull {
            guard auth else { throw CofferError.invalid("'token_type' can only be modified on auth mounts") }
            guard type != "token" else { throw CofferError.invalid("'token_type' cannot be set for 'token' or 'ns_token' auth mounts") }
            switch raw.stringValue {
            case "", "default-service": c.tokenType = nil
            case "default-batch", "service", "batch": c.tokenType = raw.stringValue
            default: throw CofferError.invalid("invalid value for 'token_type'")
            }
        }
        if let raw = values["listing_visibility"], !raw.isNull {
            guard let v = raw.stringValue, ["", "unauth", "hidden"].contains(v) else {
                throw CofferError.invalid("invalid listing_visibility \"\((raw.stringValue ?? raw.kindName).prefix(32))\"")
            }
            c.listingVisibility = v
        }
        for key in MountConfig.listKeys {
            guard let raw = values[key], !raw.isNull else { continue }
            let list: [String]
            switch raw {
            case .string(let s): list = s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            case .array(let a):
                list = try a.map {
                    guard let s = $0.stringValue else { throw CofferError.invalid("\(key) must be a list of strings") }
                    return s
                }
            default: throw CofferError.invalid("\(key) must be a list of strings")
            }
            guard list.count <= maxOptions, list.allSatisfy({ $0.utf8.count <= 256 }) else {
                throw CofferError.invalid("\(key) holds at most \(maxOptions) names of at most 256 bytes")
            }
            c[list: key] = list
        }
    }

    func mountDelete(_ req: LogicalRequest, kind: MountedBackend.Kind) async throws -> LogicalResponse? {
        let (path, _) = Self.splitTune(req.fields.string("path"))
        try await ns.disableMount(path: path, kind: kind)
        return nil
    }

    func remount(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try await ns.remount(from: req.fields.string("from"), to: req.fields.string("to"))
        return LogicalResponse(data: ["migration_id": .string(RandomID.secureUUID())])
    }

    func listPoliciesLegacy(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let names = try await ns.policies.list()
        return LogicalResponse(data: ["policies": .array(names.map { .string($0) }), "keys": .array(names.map { .string($0) })])
    }

    func listPolicies(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let names = try await ns.policies.list()
        return LogicalResponse(data: ["keys": .array(names.map { .string($0) }), "policies": .array(names.map { .string($0) })])
    }

    func readPolicyLegacy(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let p = try await ns.policies.get(req.fields.string("name")) else { return nil }
        return LogicalResponse(data: ["name": .string(p.name), "rules": .string(p.text)])
    }

    func readPolicy(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let p = try await ns.policies.get(req.fields.string("name")) else { return nil }
        return LogicalResponse(data: ["name": .string(p.name), "policy": .string(p.text)])
    }

    func writePolicy(_ req: LogicalRequest) async throws -> LogicalResponse? {
        var text = req.fields.string("policy")
        if text.isEmpty { text = req.fields.string("rules") }
        guard !text.isEmpty else { throw CofferError.invalid("'policy' parameter not supplied or empty") }
        if let decoded = Data(base64Encoded: text), let s = String(data: decoded, encoding: .utf8), !text.contains("{") {
            text = s
        }
        try await ns.policies.write(name: req.fields.string("name"), text: text)
        return nil
    }

    func deletePolicy(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try await ns.policies.delete(req.fields.string("name"))
        return nil
    }

    static func paths(_ f: FieldValues) -> [String] {
        f.strings("paths") + f.strings("path")
    }

    func capsResponse(_ caps: [String: [String]], paths: [String]) -> LogicalResponse {
        var data: [String: JSONValue] = caps.mapValues { .array($0.map { .string($0) }) }
        if paths.count == 1, let only = caps[paths[0]] { data["capabilities"] = .array(only.map { .string($0) }) }
        return LogicalResponse(data: data)
    }

    func capabilities(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let paths = Self.paths(req.fields)
        guard !paths.isEmpty else { throw CofferError.invalid("missing paths") }
        let tok = req.fields.string("token")
        guard !tok.isEmpty else {
            return capsResponse(try await callerCapabilities(policies: callerPolicies(req.token), paths: paths), paths: paths)
        }
        guard let e = try await ns.tokens.lookup(token: tok) else { throw CofferError.invalid("invalid token") }
        return capsResponse(try await ns.capabilities(policies: ns.effectivePolicies(e), paths: paths), paths: paths)
    }

    func capabilitiesSelf(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let paths = Self.paths(req.fields)
        guard !paths.isEmpty else { throw CofferError.invalid("missing paths") }
        return capsResponse(try await callerCapabilities(policies: callerPolicies(req.token), paths: paths), paths: paths)
    }

    /// The calling token's policies with those its entity brings (in the token's namespace).
    func callerPolicies(_ token: RequestToken?) async throws -> [String] {
        guard let token else { return [] }
        return try await tokenNamespace.effectivePolicies(token.policies, entityID: token.entityID)
    }

    /// Capabilities of the calling token's policies. A token of an ancestor namespace is
    /// judged as the request path judges it: by its own namespace's policies, on the path
    /// prefixed with this namespace's path relative to the token's.
    func callerCapabilities(policies: [String], paths: [String]) async throws -> [String: [String]] {
        let ns = self.ns
        let owner = tokenNamespace
        guard owner !== ns, ns.path.hasPrefix(owner.path) else {
            return try await ns.capabilities(policies: policies, paths: paths)
        }
        let relative = String(ns.path.dropFirst(owner.path.count))
        let prefixed = paths.map { relative + ($0.hasPrefix("/") ? String($0.dropFirst()) : $0) }
        let caps = try await owner.capabilities(policies: policies, paths: prefixed)
        var out: [String: [String]] = [:]
        for (original, full) in zip(paths, prefixed) { out[original] = caps[full] }
        return out
    }

    func capabilitiesAccessor(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let paths = Self.paths(req.fields)
        guard !paths.isEmpty else { throw CofferError.invalid("missing paths") }
        guard let e = try await ns.tokens.lookup(accessor: req.fields.string("accessor")) else {
            throw CofferError.invalid("invalid accessor")
        }
        return capsResponse(try await ns.capabilities(policies: ns.effectivePolicies(e), paths: paths), paths: paths)
    }
}
