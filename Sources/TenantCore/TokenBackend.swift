import CofferSDK
import Foundation
import Identity

/// A token role (`auth/token/roles/:name`).
struct TokenRole: Codable, Sendable {
    var name: String
    var allowedPolicies: [String]
    var disallowedPolicies: [String]
    var orphan: Bool
    var period: Int
    var renewable: Bool
    var explicitMaxTTL: Int
    var pathSuffix: String
    var tokenType: String
    var tokenTTL: Int
    var tokenMaxTTL: Int

    var json: [String: JSONValue] {
        [
            "name": .string(name),
            "allowed_policies": .array(allowedPolicies.map { .string($0) }),
            "disallowed_policies": .array(disallowedPolicies.map { .string($0) }),
            "orphan": .bool(orphan),
            "period": .int(Int64(period)),
            "token_period": .int(Int64(period)),
            "renewable": .bool(renewable),
            "explicit_max_ttl": .int(Int64(explicitMaxTTL)),
            "token_explicit_max_ttl": .int(Int64(explicitMaxTTL)),
            "path_suffix": .string(pathSuffix),
            "token_type": .string(tokenType),
            "token_ttl": .int(Int64(tokenTTL)),
            "token_max_ttl": .int(Int64(tokenMaxTTL)),
            "allowed_entity_aliases": .null,
            "allowed_policies_glob": .array([]),
            "disallowed_policies_glob": .array([]),
            "token_bound_cidrs": .array([]),
            "token_no_default_policy": .bool(false),
            "token_num_uses": .int(0),
        ]
    }
}

/// `auth/token/`: the token store as a `LogicalBackend`, as in Vault.
public struct TokenBackend: LogicalBackend {
    let store: TokenStore
    let roles: StorageView
    let namespacePath: String
    /// The token store of an ancestor namespace, for calling tokens that live there.
    let ancestorStore: @Sendable (String) async throws -> TokenStore?
    /// The namespace's identity store: a lookup shows the policies a token's entity brings.
    let identity: IdentityStore?
    /// Asks the auth method that made a login token whether it may be renewed.
    var loginRenewal: @Sendable (TokenEntry) async throws -> Void = { _ in }

    public init(store: TokenStore, roles: StorageView, namespacePath: String, identity: IdentityStore? = nil, ancestorStore: @escaping @Sendable (String) async throws -> TokenStore? = { _ in nil }) {
        self.store = store
        self.roles = roles
        self.namespacePath = namespacePath
        self.identity = identity
        self.ancestorStore = ancestorStore
    }

    /// A token lookup's data, with `identity_policies` when its entity (in this namespace)
    /// brings any, as Vault shows them.
    func lookupResponse(_ e: TokenEntry, id: String) async throws -> LogicalResponse {
        var data = e.lookupData(id: id, now: store.now())
        if !e.entityID.isEmpty, e.namespacePath == namespacePath, let identity,
           let extra = try await identity.policies(ofEntity: e.entityID), !extra.isEmpty {
            data["identity_policies"] = .array(extra.map { .string($0) })
        }
        return LogicalResponse(data: data)
    }

    public var backendHelp: String { "The token store creates, looks up, renews and revokes tokens." }
    public var rootPaths: [String] { ["revoke-orphan/*", "revoke-orphan", "accessors/*", "accessors/"] }

    static let createFields: [Field] = [
        Field("id", .string), Field("policies", .commaStringSlice), Field("meta", .keyValuePairs),
        Field("no_parent", .bool), Field("no_default_policy", .bool), Field("ttl", .duration),
        Field("explicit_max_ttl", .duration), Field("period", .duration), Field("num_uses", .int),
        Field("renewable", .bool, default: true), Field("display_name", .string), Field("type", .string),
        Field("role_name", .string), Field("lease", .duration), Field("entity_alias", .string),
    ]

    public static let routes: [Route<TokenBackend>] = [
        Route("create", fields: Self.createFields, operations: [.update: { try await $0.create($1, orphan: false, roleName: nil) }],
              summary: "Create a token; a child of the calling token."),
        Route("create-orphan", fields: Self.createFields, operations: [.update: { try await $0.create($1, orphan: true, roleName: nil) }],
              summary: "Create a token with no parent."),
        Route("create/:role_name", fields: Self.createFields, operations: [.update: { try await $0.create($1, orphan: false, roleName: $1.fields.string("role_name")) }],
              summary: "Create a token from a role."),
        Route("lookup", fields: [Field("token", .string)], operations: [.update: { try await $0.lookup($1) }, .read: { try await $0.lookup($1) }], summary: "Look up a token."),
        Route("lookup-self", operations: [.read: { try await $0.lookupSelf($1) }, .update: { try await $0.lookupSelf($1) }], summary: "Look up the calling token."),
        Route("lookup-accessor", fields: [Field("accessor", .string, required: true)], operations: [.update: { try await $0.lookupAccessor($1) }], summary: "Look up a token by accessor."),
        Route("renew", fields: [Field("token", .string, required: true), Field("increment", .duration)], operations: [.update: { try await $0.renew($1) }], summary: "Renew a token."),
        Route("renew-self", fields: [Field("increment", .duration)], operations: [.update: { try await $0.renewSelf($1) }], summary: "Renew the calling token."),
        Route("renew-accessor", fields: [Field("accessor", .string, required: true), Field("increment", .duration)], operations: [.update: { try await $0.renewAccessor($1) }], summary: "Renew a token by accessor."),
        Route("revoke", fields: [Field("token", .string, required: true)], operations: [.update: { try await $0.revoke($1) }], summary: "Revoke a token and its children."),
        Route("revoke-self", operations: [.update: { try await $0.revokeSelf($1) }], summary: "Revoke the calling token and its children."),
        Route("revoke-accessor", fields: [Field("accessor", .string, required: true)], operations: [.update: { try await $0.revokeAccessor($1) }], summary: "Revoke a token by accessor."),
        Route("revoke-orphan", fields: [Field("token", .string, required: true)], operations: [.update: { try await $0.revokeOrphan($1) }], summary: "Revoke a token, orphaning its children."),
        Route("accessors/?", operations: [.list: { try await $0.listAccessors($1) }], summary: "List token accessors."),
        Route("roles/?", operations: [.list: { try await $0.listRoles($1) }], summary: "List token roles."),
        Route("roles/:role_name", fields: [
            Field("role_name", .string, required: true), Field("allowed_policies", .commaStringSlice),
            Field("disallowed_policies", .commaStringSlice), Field("orphan", .bool), Field("period", .duration),
            Field("token_period", .duration), Field("renewable", .bool, default: true), Field("explicit_max_ttl", .duration),
            Field("token_explicit_max_ttl", .duration), Field("path_suffix", .string), Field("token_type", .string),
            Field("token_ttl", .duration), Field("token_max_ttl", .duration),
        ], operations: [.read: { try await $0.readRole($1) }, .create: { try await $0.writeRole($1) }, .update: { try await $0.writeRole($1) }, .delete: { try await $0.deleteRole($1) }],
              existenceCheck: { try await $0.roles.get($1.fields.string("role_name")) != nil }, summary: "Manage token roles."),
        Route("tidy", operations: [.update: { _, _ in LogicalResponse(warnings: ["Tidy operation successfully started."]) }], summary: "Clean up the token store."),
    ]

    /// The calling token, its entry, and the store it lives in (this namespace's, or an
    /// ancestor's when a parent-namespace token works here).
    func caller(_ req: LogicalRequest) async throws -> (String, TokenEntry, TokenStore) {
        guard let token = req.token, let raw = token.clientToken else { throw CofferError.denied() }
        var owner = store
        if token.namespacePath != namespacePath {
            guard let s = try await ancestorStore(token.namespacePath) else { throw CofferError.denied() }
            owner = s
        }
        guard let e = try await owner.lookup(token: raw) else { throw CofferError.denied() }
        return (raw, e, owner)
    }

    func create(_ req: LogicalRequest, orphan: Bool, roleName: String?) async throws -> LogicalResponse? {
        let f = req.fields
        let (_, parent, parentStore) = try await caller(req)
        let parentIsRoot = parent.policies.contains("root")
        // Root, or sudo on this path: what Vault asks for orphans, custom ids and periods.
        let privileged = parentIsRoot || req.token?.hasSudo == true
        // A token made here by a token of an ancestor namespace is that token's child too:
        // the ancestor's store indexes it, and revoking the parent revokes it here.
        let crossNamespace = parentStore !== store
        var role: TokenRole?
        if let roleName {
            guard let r = try await roles.getCodable(TokenRole.self, roleName) else {
                throw CofferError.invalid("unknown role \(roleName)")
            }
            role = r
        }
        if parent.type == "batch" { throw CofferError.invalid("batch tokens cannot create more tokens") }
        var batch = role?.tokenType == "batch"
        switch f.optionalString("type") ?? "" {
        case "", "default": break
        case "service": batch = false
        case "batch": batch = true
        default: throw CofferError.invalid("invalid 'token_type' value")
        }
        if batch {
            if f.int("explicit_max_ttl") != 0 { throw CofferError.invalid("batch tokens cannot have \"explicit_max_ttl\" set") }
            if f.int("num_uses") != 0 { throw CofferError.invalid("batch tokens cannot have \"num_uses\" set") }
            if f.int("period") != 0 { throw CofferError.invalid("batch tokens cannot have \"period\" set") }
            if f.has("id") { throw CofferError.invalid("batch tokens cannot have a custom id") }
        }
        var wantOrphan = orphan || (role?.orphan ?? false)
        if f.bool("no_parent") {
            guard privileged else {
                throw CofferError.invalid("root or sudo privileges required to create orphan token")
            }
            wantOrphan = true
        }
        if f.has("id") && !privileged {
            throw CofferError.invalid("root or sudo privileges required to specify token id")
        }
        // A custom id must be one a client can send back: lookups refuse tokens over 256
        // bytes, and a header cannot carry control characters.
        if let id = f.optionalString("id"), !id.isEmpty,
           id.utf8.count > 200 || id.unicodeScalars.contains(where: { $0.value < 0x21 || $0.value == 0x7F || $0.value == 0xFFFD }) {
            throw CofferError.invalid("custom token ID must be 1 to 200 bytes without spaces or control characters")
        }
        var policies = f.has("policies") ? f.strings("policies") : parent.policies.filter { $0 != "default" }
        policies = Array(Set(policies.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty }))
        if let role {
            if f.has("policies") {
                for p in policies where p != "default" && !role.allowedPolicies.isEmpty && !role.allowedPolicies.contains(p) {
                    throw CofferError.invalid("token policies (\(policies.sorted())) must be subset of the role's allowed policies (\(role.allowedPolicies.sorted()))")
                }
            } else if !role.allowedPolicies.isEmpty {
                policies = role.allowedPolicies
            }
            if role.allowedPolicies.isEmpty {
                // A role without allowed_policies grants only what the caller has, as Vault:
                // the role is a template for the caller's own tokens, not an escalation.
                if !f.has("policies") { policies.removeAll { role.disallowedPolicies.contains($0) } }
                if !parentIsRoot {
                    let allowed = Set(parent.policies)
                    for p in policies where p != "default" && !allowed.contains(p) {
                        throw CofferError.invalid("token policies (\(policies.sorted())) must be subset of the parent token's policies (\(parent.policies.sorted()))")
                    }
                }
            }
            for p in policies where role.disallowedPolicies.contains(p) {
                throw CofferError.invalid("token policy \(p) is disallowed by this role")
            }
        } else if !parentIsRoot {
            let allowed = Set(parent.policies)
            for p in policies where p != "default" && !allowed.contains(p) {
                throw CofferError.invalid("child policies must be subset of parent")
            }
        }
        if policies.contains("root") && !parentIsRoot {
            throw CofferError.invalid("root tokens may not be created by a non-root token")
        }
        if !f.bool("no_default_policy") && !policies.contains("default") && !policies.contains("root") {
            policies.append("default")
        }
        policies.sort()
        if policies.isEmpty { policies = ["default"] }

        let numUses = f.int("num_uses")
        guard numUses >= 0 else { throw CofferError.invalid("number of uses cannot be negative") }
        var explicitMax = f.int("explicit_max_ttl")
        if let role, role.explicitMaxTTL > 0 { explicitMax = explicitMax == 0 ? role.explicitMaxTTL : min(explicitMax, role.explicitMaxTTL) }
        var period = f.int("period")
        if period > 0 && !privileged && (role?.period ?? 0) == 0 {
            throw CofferError.invalid("root or sudo privileges required to create periodic token")
        }
        if let role, role.period > 0 { period = role.period }
        var ttl = f.has("ttl") ? f.int("ttl") : f.int("lease")
        if ttl == 0, let role, role.tokenTTL > 0 { ttl = role.tokenTTL }
        let now = store.now()
        var effective: Int
        if period > 0 {
            effective = period
        } else if ttl > 0 {
            effective = ttl
        } else if parentIsRoot && policies == ["root"] {
            effective = 0
        } else {
            effective = store.defaultTTL
        }
        if effective > 0 || period == 0 {
            if period == 0 && effective == 0 && !policies.contains("root") { effective = store.defaultTTL }
        }
        if period == 0 && effective > store.maxTTL { effective = store.maxTTL }
        var warnings: [String] = []
        if explicitMax > 0 && (effective == 0 || effective > explicitMax) {
            if effective > explicitMax {
                warnings.append("explicit max TTL of \"\(GoDuration.format(explicitMax))\" is less than the requested TTL; capping the token TTL to \"\(GoDuration.format(explicitMax))\"")
            }
            effective = explicitMax
        }
        // A child can never outlive a parent with a fixed expiry.
        if !wantOrphan && parent.expireTime != 0 {
            let parentLeft = Int(parent.expireTime - now)
            if effective == 0 || effective > parentLeft { effective = max(1, parentLeft) }
        }
        var renewable = f.bool("renewable")
        if let role { renewable = renewable && role.renewable }
        if effective == 0 { renewable = false }
        var display = f.string("display_name").trimmingCharacters(in: .whitespaces)
        display = display.isEmpty ? "token" : "token-" + display.replacingOccurrences(of: " ", with: "-")
        var path = "auth/token/create"
        if wantOrphan && roleName == nil { path = orphan ? "auth/token/create-orphan" : "auth/token/create" }
        if let roleName { path = "auth/token/create/\(roleName)" + (role?.pathSuffix.isEmpty == false ? "/\(role!.pathSuffix)" : "") }

        let template = TokenEntry(
            idHash: "", accessor: "", parentHash: wantOrphan ? "" : parent.idHash, policies: policies,
            meta: f.stringMap("meta"), displayName: display, numUses: numUses, creationTime: now,
            creationTTL: effective, expireTime: effective > 0 ? now + Int64(effective) : 0, explicitMaxTTL: explicitMax,
            period: period, renewable: renewable, orphan: wantOrphan, path: path, role: roleName ?? "",
            type: "service", entityID: wantOrphan || crossNamespace ? "" : parent.entityID, namespacePath: namespacePath, lastRenewalTime: 0)
        var entryTemplate = template
        if crossNamespace && !wantOrphan { entryTemplate.parentNamespace = parent.namespacePath }
        if batch {
            if policies.contains("root") { throw CofferError.invalid("batch tokens cannot be root tokens") }
            if crossNamespace && !wantOrphan { throw CofferError.invalid("batch tokens cannot have a parent in another namespace") }
            var t = entryTemplate
            t.renewable = false
            let (token, entry) = try store.makeBatch(t)
            return LogicalResponse(auth: entry.authInfo(token: token), warnings: warnings)
        }
        let id = f.optionalString("id").flatMap { $0.isEmpty ? nil : $0 }
        let (token, entry) = try await store.create(entryTemplate, id: id)
        return LogicalResponse(auth: entry.authInfo(token: token), warnings: warnings)
    }

    func lookup(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let t = req.fields.string("token")
        if t.isEmpty { return try await lookupSelf(req) }
        guard let e = try await store.lookup(token: t) else { throw CofferError(.permissionDenied, "bad token") }
        return try await lookupResponse(e, id: t)
    }

    func lookupSelf(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let (raw, e, _) = try await caller(req)
        return try await lookupResponse(e, id: raw)
    }

    func lookupAccessor(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let e = try await store.lookup(accessor: req.fields.string("accessor")) else {
            throw CofferError.invalid("invalid accessor")
        }
        return try await lookupResponse(e, id: "")
    }

    func renewEntry(_ entry: TokenEntry, token: String, increment: Int, in owner: TokenStore? = nil) async throws -> LogicalResponse {
        let store = owner ?? self.store
        var e = entry
        if e.type == "batch" { throw CofferError.invalid("batch tokens cannot be renewed") }
        guard e.renewable else { throw CofferError.invalid("invalid lease ID, or lease is not renewable") }
        try await loginRenewal(e)
        let now = store.now()
        var ttl: Int
        if e.period > 0 {
            ttl = e.period
        } else {
            ttl = increment > 0 ? increment : e.creationTTL
            if ttl > store.maxTTL { ttl = store.maxTTL }
        }
        var warnings: [String] = []
        if e.explicitMaxTTL > 0 {
            let hardEnd = e.creationTime + Int64(e.explicitMaxTTL)
            if now + Int64(ttl) > hardEnd {
                ttl = Int(max(0, hardEnd - now))
                warnings.append("TTL of \"\(GoDuration.format(increment))\" exceeded the effective max_ttl of \"\(GoDuration.format(ttl))\"; TTL value is capped accordingly")
            }
        }
        // A login token never renews past its method's max TTL, counted from its creation.
        if e.period == 0, let maxTTL = e.maxTTL, maxTTL > 0 {
            let end = e.creationTime + Int64(maxTTL)
            if now + Int64(ttl) > end {
                ttl = Int(max(0, end - now))
                warnings.append("TTL of \"\(GoDuration.format(increment > 0 ? increment : e.creationTTL))\" exceeded the effective max_ttl of \"\(GoDuration.format(ttl))\"; TTL value is capped accordingly")
            }
        }
        // A child never outlives its parent (unless it is an orphan): its parent's expiry
        // revokes it, so a renewal past it would only promise what will not be kept.
        var parentStore: TokenStore? = store
        if let other = e.parentNamespace { parentStore = try await store.storeAt(other) }
        if !e.orphan, !e.parentHash.isEmpty, let parentStore,
           let parent = try await parentStore.lookup(hash: e.parentHash), parent.expireTime != 0 {
            let left = Int(max(0, parent.expireTime - now))
            if ttl > left { ttl = left }
        }
        let renewedTTL = ttl
        // On the stored entry, under its lock: a renewal racing a revocation cannot bring
        // the token back.
        guard let renewed = try await store.modify(hash: e.idHash, { stored in
            stored.expireTime = now + Int64(renewedTTL)
            stored.lastRenewalTime = now
        }) else {
            throw CofferError.denied()
        }
        e = renewed.entry
        var auth = e.authInfo(token: token)
        auth.leaseDuration = ttl
        return LogicalResponse(auth: auth, warnings: warnings)
    }

    func renew(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let t = req.fields.string("token")
        guard let e = try await store.lookup(token: t) else { throw CofferError.invalid("invalid token") }
        return try await renewEntry(e, token: t, increment: req.fields.int("increment"))
    }

    func renewSelf(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let (raw, e, owner) = try await caller(req)
        return try await renewEntry(e, token: raw, increment: req.fields.int("increment"), in: owner)
    }

    func renewAccessor(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let e = try await store.lookup(accessor: req.fields.string("accessor")) else {
            throw CofferError.invalid("invalid accessor")
        }
        var r = try await renewEntry(e, token: "", increment: req.fields.int("increment"))
        r.auth?.clientToken = ""
        return r
    }

    func revoke(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let t = req.fields.string("token")
        if let e = try await store.lookup(token: t) {
            if e.type == "batch" { throw CofferError.invalid("batch tokens cannot be revoked") }
            try await store.revokeTree(hash: e.idHash)
        }
        return nil
    }

    func revokeSelf(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let (_, e, owner) = try await caller(req)
        if e.type == "batch" { throw CofferError.invalid("batch tokens cannot be revoked") }
        try await owner.revokeTree(hash: e.idHash)
        return nil
    }

    func revokeAccessor(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let e = try await store.lookup(accessor: req.fields.string("accessor")) else {
            throw CofferError.invalid("invalid accessor")
        }
        try await store.revokeTree(hash: e.idHash)
        return nil
    }

    func revokeOrphan(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let t = req.fields.string("token")
        guard let e = try await store.lookup(token: t) else { throw CofferError.invalid("invalid token") }
        if e.type == "batch" { throw CofferError.invalid("batch tokens cannot be revoked") }
        try await store.revokeOrphan(hash: e.idHash)
        return nil
    }

    func listAccessors(_ req: LogicalRequest) async throws -> LogicalResponse? {
        .list(try await store.accessors())
    }

    func listRoles(_ req: LogicalRequest) async throws -> LogicalResponse? {
        .list(try await roles.list(prefix: ""))
    }

    func readRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let r = try await roles.getCodable(TokenRole.self, req.fields.string("role_name")) else { return nil }
        return LogicalResponse(data: r.json)
    }

    func writeRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        let name = f.string("role_name")
        // Read, merge and write under the role's lock: concurrent partial updates both land.
        return try await roles.withLock(name) { try await writeRole(name, f) }
    }

    private func writeRole(_ name: String, _ f: FieldValues) async throws -> LogicalResponse? {
        var r = try await roles.getCodable(TokenRole.self, name) ?? TokenRole(
            name: name, allowedPolicies: [], disallowedPolicies: [], orphan: false, period: 0, renewable: true,
            explicitMaxTTL: 0, pathSuffix: "", tokenType: "default-service", tokenTTL: 0, tokenMaxTTL: 0)
        if f.has("allowed_policies") { r.allowedPolicies = f.strings("allowed_policies").map { $0.lowercased() } }
        if f.has("disallowed_policies") { r.disallowedPolicies = f.strings("disallowed_policies").map { $0.lowercased() } }
        if f.has("orphan") { r.orphan = f.bool("orphan") }
        if f.has("period") { r.period = f.int("period") }
        if f.has("token_period") { r.period = f.int("token_period") }
        if f.has("renewable") { r.renewable = f.bool("renewable") }
        if f.has("explicit_max_ttl") { r.explicitMaxTTL = f.int("explicit_max_ttl") }
        if f.has("token_explicit_max_ttl") { r.explicitMaxTTL = f.int("token_explicit_max_ttl") }
        if f.has("path_suffix") {
            let s = f.string("path_suffix")
            guard !s.contains("..") else { throw CofferError.invalid("path_suffix cannot contain '..'") }
            r.pathSuffix = s
        }
        if f.has("token_type") {
            let t = f.string("token_type")
            guard ["service", "default-service", "default"].contains(t) else {
                throw CofferError.invalid("unsupported token_type \"\(t.prefix(16))\"")
            }
            r.tokenType = t
        }
        if f.has("token_ttl") { r.tokenTTL = f.int("token_ttl") }
        if f.has("token_max_ttl") { r.tokenMaxTTL = f.int("token_max_ttl") }
        try await roles.putCodable(name, r)
        return nil
    }

    func deleteRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = req.fields.string("role_name")
        try await roles.withLock(name) { try await roles.delete(name) }
        return nil
    }
}
