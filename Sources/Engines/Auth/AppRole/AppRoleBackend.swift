import CofferSDK
@preconcurrency import Crypto
import Foundation
import Synchronization

/// The `approle` auth method: machines log in with a role id (an identifier, not a secret)
/// and a secret id (a credential, issued per machine or pipeline run, often wrapped).
///
/// Storage below the mount: `hmac-key` (the key of every HMAC below, random per mount),
/// `role/<name>`, `role-id/<hmac(role id)>` → role name, `secret-id/<hmac(role name)>/<hmac(secret id)>`
/// and `accessor/<hmac(accessor)>`. Secret ids exist only as salted HMACs: storage and its
/// backups never hold a usable one.
public struct AppRoleBackend: LogicalBackend {
    let storage: StorageView
    let keyHolder = KeyHolder()
    /// Unix seconds (injected by tests that move time).
    let clock: WallClock

    public static let factory: BackendFactory = { config in AppRoleBackend(storage: config.storage, clock: config.clock) }

    init(storage: StorageView, clock: WallClock = .system) {
        self.storage = storage
        self.clock = clock
    }

    public var backendHelp: String { "The AppRole auth method lets machines and pipelines log in with a role id and a secret id." }
    public var unauthenticatedPaths: [String] { ["login"] }

    /// The mount's HMAC key, read (or made) at setup.
    final class KeyHolder: Sendable {
        let key = Mutex<SymmetricKey?>(nil)
    }

    public func setup() async throws {
        let bytes: [UInt8]
        if let stored = try await storage.get("hmac-key") {
            bytes = stored
        } else {
            let fresh = SecureRandom.bytes(32)
            // Two nodes setting up at once: the first write wins, both use it.
            if try await storage.compareAndSet("hmac-key", expected: nil, new: fresh) {
                bytes = fresh
            } else {
                guard let other = try await storage.get("hmac-key") else { throw CofferError.internalError("approle HMAC key vanished") }
                bytes = other
            }
        }
        keyHolder.key.withLock { $0 = SymmetricKey(data: bytes) }
    }

    public var runsPeriodicWork: Bool { true }

    /// Expired secret ids go once a minute (as Vault's periodic tidy).
    public func periodic() async -> Duration? {
        _ = try? await tidy()
        return .seconds(60)
    }

    public func loginAlias(_ request: LogicalRequest) -> String? {
        guard request.path == "login", let id = request.data["role_id"]?.stringValue, !id.isEmpty, id.utf8.count <= 4096 else { return nil }
        return id
    }

    /// Vault's AppRole renewal: the role must still exist.
    public func renewLogin(_ renewal: LoginRenewal) async throws {
        guard let name = renewal.metadata["role_name"], try await role(name) != nil else {
            throw CofferError.invalid("role \"\((renewal.metadata["role_name"] ?? "").prefix(128))\" does not exist during renewal")
        }
    }

    func hmac(_ value: String) throws -> String {
        guard let key = keyHolder.key.withLock({ $0 }) else { throw CofferError(.unavailable, "the approle mount is not set up") }
        return Hex.encode(HMAC<SHA256>.authenticationCode(for: Array(value.utf8), using: key))
    }

    // MARK: records

    struct Role: Codable, Sendable {
        var name: String
        var roleID: String
        var bindSecretID = true
        var secretIDBoundCIDRs: [String] = []
        var secretIDNumUses = 0
        var secretIDTTL = 0
        var localSecretIDs = false
        var token = TokenParameters()
        // Deprecated fields as written (shown on read while set).
        var policies: [String] = []
        var period = 0
    }

    struct SecretID: Codable, Sendable {
        var accessor: String
        var numUses: Int
        var ttl: Int
        var creationTime: Double
        var expirationTime: Double  // 0: never
        var lastUpdatedTime: Double
        var metadata: [String: String]
        var cidrList: [String]
        var tokenBoundCIDRs: [String]

        func expired(now: Double) -> Bool { expirationTime > 0 && now >= expirationTime }

        var json: [String: JSONValue] {
            [
                "secret_id_accessor": .string(accessor),
                "secret_id_num_uses": .int(Int64(numUses)),
                "secret_id_ttl": .int(Int64(ttl)),
                "creation_time": .string(AppRoleBackend.time(creationTime)),
                "expiration_time": .string(expirationTime > 0 ? AppRoleBackend.time(expirationTime) : "0001-01-01T00:00:00Z"),
                "last_updated_time": .string(AppRoleBackend.time(lastUpdatedTime)),
                "metadata": .object(metadata.mapValues { .string($0) }),
                "cidr_list": .array(cidrList.map { .string($0) }),
                "token_bound_cidrs": .array(tokenBoundCIDRs.map { .string($0) }),
            ]
        }
    }

    /// The accessor index: which secret id of which role.
    struct AccessorEntry: Codable, Sendable {
        var roleNameHMAC: String
        var secretIDHMAC: String
    }

    static func time(_ t: Double) -> String { RFC3339.format(Date(timeIntervalSince1970: t)) }

    // MARK: routes

    static let roleFields: [Field] = [
        Field("role_name", .string),
        Field("bind_secret_id", .bool, default: true, description: "Require a secret_id at login."),
        Field("secret_id_bound_cidrs", .commaStringSlice, description: "CIDR blocks allowed to log in."),
        Field("bound_cidr_list", .commaStringSlice, description: "Deprecated: use secret_id_bound_cidrs."),
        Field("secret_id_num_uses", .int, description: "Logins per secret id (0: unlimited)."),
        Field("secret_id_ttl", .duration, description: "Lifetime of a secret id (0: no expiry)."),
        Field("local_secret_ids", .bool, description: "Secret ids are local to the cluster (set at creation only)."),
        Field("enable_local_secret_ids", .bool, description: "Alias of local_secret_ids."),
        Field("policies", .commaStringSlice, description: "Deprecated: use token_policies."),
        Field("period", .duration, description: "Deprecated: use token_period."),
        Field("role_id", .string, description: "A custom role id (default: a random UUID)."),
    ] + TokenParameters.fields

    static let secretIDFields: [Field] = [
        Field("role_name", .string),
        Field("metadata", .string, description: "A JSON object of string values, set on tokens logged in with this secret id."),
        Field("cidr_list", .commaStringSlice, description: "CIDR blocks the secret id may be used from."),
        Field("token_bound_cidrs", .commaStringSlice, description: "CIDR blocks tokens from this secret id may be used from."),
        Field("num_uses", .int, description: "Logins allowed with the secret id (0: the role's)."),
        Field("ttl", .duration, description: "Lifetime of the secret id (0: the role's)."),
        Field("secret_id", .string, description: "The custom secret id (custom-secret-id only)."),
    ]

    public static let routes: [Route<AppRoleBackend>] = [
        Route("role/?", fields: [Field("after", .string), Field("limit", .int)], operations: [.list: { try await $0.listRoles($1) }], summary: "List AppRoles."),
        Route("role/:role_name", fields: roleFields, operations: [
            .read: { try await $0.readRole($1) }, .create: { try await $0.writeRole($1) },
            .update: { try await $0.writeRole($1) }, .delete: { try await $0.deleteRole($1) },
        ], existenceCheck: { try await $0.role(Self.roleName($1)) != nil }, summary: "Manage AppRoles."),
        Route("role/:role_name/role-id", fields: [Field("role_name", .string), Field("role_id", .string)], operations: [
            .read: { try await $0.readRoleID($1) }, .update: { try await $0.writeRoleID($1) },
        ], summary: "Read or set the role id of an AppRole."),
        Route("role/:role_name/secret-id/?", fields: secretIDFields, operations: [
            .update: { try await $0.generateSecretID($1, custom: false) }, .list: { try await $0.listSecretIDAccessors($1) },
        ], usage: [.update: .credential], summary: "Generate a secret id, or list the accessors of the role's secret ids."),
        Route("role/:role_name/custom-secret-id", fields: secretIDFields, operations: [
            .update: { try await $0.generateSecretID($1, custom: true) },
        ], usage: [.update: .credential], summary: "Register a secret id of your choosing."),
        Route("role/:role_name/secret-id/lookup", fields: [Field("role_name", .string), Field("secret_id", .string, required: true)], operations: [
            .update: { try await $0.lookupSecretID($1) },
        ], summary: "Read the properties of a secret id."),
        Route("role/:role_name/secret-id/destroy", fields: [Field("role_name", .string), Field("secret_id", .string, required: true)], operations: [
            .update: { try await $0.destroySecretID($1) }, .delete: { try await $0.destroySecretID($1) },
        ], summary: "Destroy a secret id."),
        Route("role/:role_name/secret-id-accessor/lookup", fields: [Field("role_name", .string), Field("secret_id_accessor", .string, required: true)], operations: [
            .update: { try await $0.lookupAccessor($1) },
        ], summary: "Read the properties of a secret id by its accessor."),
        Route("role/:role_name/secret-id-accessor/destroy", fields: [Field("role_name", .string), Field("secret_id_accessor", .string, required: true)], operations: [
            .update: { try await $0.destroyAccessor($1) }, .delete: { try await $0.destroyAccessor($1) },
        ], summary: "Destroy a secret id by its accessor."),
        Route("login", fields: [Field("role_id", .string), Field("secret_id", .string)], operations: [
            .update: { try await $0.login($1) },
        ], usage: [.update: .login, .create: .login], summary: "Log in with a role id and a secret id."),
        Route("tidy/secret-id", operations: [.update: { b, _ in
            let removed = try await b.tidy()
            return LogicalResponse(warnings: ["Tidy operation successfully started. Removed \(removed) expired or dangling secret ID entries."])
        }], summary: "Remove expired secret ids."),
    ]

    // MARK: roles

    static func roleName(_ req: LogicalRequest) throws -> String {
        let name = req.fields.string("role_name").lowercased()
        guard !name.isEmpty else { throw CofferError.invalid("missing role_name") }
        guard name.utf8.count < 4096, name.unicodeScalars.allSatisfy({ c in
            (c >= "a" && c <= "z") || (c >= "0" && c <= "9") || c == "-" || c == "_" || c == "." || c == " "
        }) else {
            throw CofferError.invalid("invalid role_name \"\(name.prefix(64))\": use letters, digits, space, hyphen, underscore and period")
        }
        return name
    }

    func role(_ name: String) async throws -> Role? {
        try await storage.getCodable(Role.self, "role/" + name)
    }

    func existingRole(_ req: LogicalRequest) async throws -> Role {
        let name = try Self.roleName(req)
        guard let r = try await role(name) else { throw CofferError.invalid("role \"\(name.prefix(128))\" does not exist") }
        return r
    }

    func listRoles(_ req: LogicalRequest) async throws -> LogicalResponse? {
        .list(try await storage.list(prefix: "role/").filter { !$0.hasSuffix("/") }, after: req.fields.string("after"), limit: req.fields.int("limit"))
    }

    func readRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let r = try await role(Self.roleName(req)) else { return nil }
        var data = r.token.json
        data["bind_secret_id"] = .bool(r.bindSecretID)
        data["secret_id_bound_cidrs"] = .array(r.secretIDBoundCIDRs.map { .string($0) })
        data["secret_id_num_uses"] = .int(Int64(r.secretIDNumUses))
        data["secret_id_ttl"] = .int(Int64(r.secretIDTTL))
        data["local_secret_ids"] = .bool(r.localSecretIDs)
        if r.period > 0 { data["period"] = .int(Int64(r.period)) }
        if !r.policies.isEmpty { data["policies"] = data["token_policies"] }
        return LogicalResponse(data: data)
    }

    func writeRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.roleName(req)
        let f = req.fields
        try await storage.withLock("role/" + name) {
            let existing = try await role(name)
            var r = existing ?? Role(name: name, roleID: UUID().uuidString.lowercased())
            if existing == nil, let custom = f.optionalString("role_id"), !custom.isEmpty { r.roleID = custom }
            if f.has("bind_secret_id") || existing == nil { r.bindSecretID = f.bool("bind_secret_id") }
            if f.has("secret_id_bound_cidrs") {
                r.secretIDBoundCIDRs = try TokenParameters.cidrs(f.strings("secret_id_bound_cidrs"), field: "secret_id_bound_cidrs")
            } else if f.has("bound_cidr_list") {
                r.secretIDBoundCIDRs = try TokenParameters.cidrs(f.strings("bound_cidr_list"), field: "bound_cidr_list")
            }
            if f.has("secret_id_num_uses") {
                guard f.int("secret_id_num_uses") >= 0 else { throw CofferError.invalid("secret_id_num_uses cannot be negative") }
                r.secretIDNumUses = f.int("secret_id_num_uses")
            }
            if f.has("secret_id_ttl") { r.secretIDTTL = f.int("secret_id_ttl") }
            let local = f.has("local_secret_ids") ? f.bool("local_secret_ids") : (f.has("enable_local_secret_ids") ? f.bool("enable_local_secret_ids") : nil)
            if let local {
                if existing != nil, local != r.localSecretIDs {
                    throw CofferError.invalid("local_secret_ids can only be modified during role creation")
                }
                r.localSecretIDs = local
            }
            try r.token.parse(f)
            try DeprecatedField.upgrade(f, old: "policies", new: "token_policies", oldValue: &r.policies, newValue: &r.token.policies) { TokenParameters.policyList($0.strings("policies")) }
            try DeprecatedField.upgrade(f, old: "period", new: "token_period", oldValue: &r.period, newValue: &r.token.period) { $0.int("period") }
            if r.token.type == "batch" && r.token.period != 0 {
                throw CofferError.invalid("'token_type' cannot be 'batch' or 'default_batch' when set to generate periodic tokens")
            }
            if !r.bindSecretID && r.secretIDBoundCIDRs.isEmpty && r.token.boundCIDRs.isEmpty {
                throw CofferError.invalid("at least one constraint should be enabled on the role")
            }
            if existing == nil || existing?.roleID != r.roleID {
                let index = "role-id/" + (try hmac(r.roleID))
                if let owner = try await storage.get(index), String(decoding: owner, as: UTF8.self) != name {
                    throw CofferError.invalid("role_id already in use")
                }
                try await storage.put(index, Array(name.utf8))
            }
            try await storage.putCodable("role/" + name, r)
        }
        return nil
    }

    func deleteRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.roleName(req)
        try await storage.withLock("role/" + name) {
            guard let r = try await role(name) else { return }
            let roleHMAC = try hmac(name)
            for idHMAC in try await storage.list(prefix: "secret-id/\(roleHMAC)/") {
                if let entry = try await storage.getCodable(SecretID.self, "secret-id/\(roleHMAC)/\(idHMAC)") {
                    try await storage.delete("accessor/" + (try hmac(entry.accessor)))
                }
                try await storage.delete("secret-id/\(roleHMAC)/\(idHMAC)")
            }
            try await storage.delete("role-id/" + (try hmac(r.roleID)))
            try await storage.delete("role/" + name)
        }
        return nil
    }

    func readRoleID(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let r = try await role(Self.roleName(req)) else { return nil }
        return LogicalResponse(data: ["role_id": .string(r.roleID)])
    }

    func writeRoleID(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.roleName(req)
        let newID = req.fields.string("role_id")
        guard !newID.isEmpty else { throw CofferError.invalid("missing role_id") }
        guard newID.utf8.count <= 4096 else { throw CofferError.invalid("role_id is too long") }
        try await storage.withLock("role/" + name) {
            guard var r = try await role(name) else { throw CofferError.invalid("role \"\(name.prefix(128))\" does not exist") }
            guard r.roleID != newID else { return }
            let index = "role-id/" + (try hmac(newID))
            if try await storage.get(index) != nil { throw CofferError.invalid("role_id already in use") }
            try await storage.put(index, Array(name.utf8))
            try await storage.delete("role-id/" + (try hmac(r.roleID)))
            r.roleID = newID
            try await storage.putCodable("role/" + name, r)
        }
        return LogicalResponse(data: ["role_id": .string(newID)])
    }

    // MARK: secret ids

    func generateSecretID(_ req: LogicalRequest, custom: Bool) async throws -> LogicalResponse? {
        let r = try await existingRole(req)
        let f = req.fields
        let secretID: String
        if custom {
            secretID = f.string("secret_id")
            guard !secretID.isEmpty else { throw CofferError.invalid("missing secret_id") }
            guard secretID.utf8.count <= 4096 else { throw CofferError.invalid("secret_id is too long") }
        } else {
            secretID = UUID().uuidString.lowercased()
        }
        var metadata: [String: String] = [:]
        let rawMetadata = f.string("metadata")
        if !rawMetadata.isEmpty {
            guard case .object(let o)? = try? JSONValue.parse(Array(rawMetadata.utf8)) else {
                throw CofferError.invalid("failed to parse metadata: must be a JSON object of strings")
            }
            for (k, v) in o {
                guard let s = v.stringValue else { throw CofferError.invalid("failed to parse metadata: value of \"\(k.prefix(64))\" is not a string") }
                metadata[k] = s
            }
        }
        let cidrs = try TokenParameters.cidrs(f.strings("cidr_list"), field: "cidr_list")
        try Self.checkSubset(cidrs, of: r.secretIDBoundCIDRs, on: "role")
        let tokenCIDRs = try TokenParameters.cidrs(f.strings("token_bound_cidrs"), field: "token_bound_cidrs")
        try Self.checkSubset(tokenCIDRs, of: r.token.boundCIDRs, on: "role's token_bound_cidrs")

        var numUses = r.secretIDNumUses
        if f.has("num_uses") {
            let n = f.int("num_uses")
            guard n >= 0 else { throw CofferError.invalid("num_uses cannot be negative") }
            if r.secretIDNumUses > 0 && (n == 0 || n > r.secretIDNumUses) {
                throw CofferError.invalid("num_uses cannot be higher than the role's secret_id_num_uses")
            }
            numUses = n
        }
        var ttl = r.secretIDTTL
        if f.has("ttl") {
            let t = f.int("ttl")
            if r.secretIDTTL > 0 && (t == 0 || t > r.secretIDTTL) {
                throw CofferError.invalid("ttl cannot be longer than the role's secret_id_ttl")
            }
            ttl = t
        }
        let now = clock.now()
        let entry = SecretID(
            accessor: UUID().uuidString.lowercased(), numUses: numUses, ttl: ttl, creationTime: now,
            expirationTime: ttl > 0 ? now + Double(ttl) : 0, lastUpdatedTime: now, metadata: metadata,
            cidrList: cidrs, tokenBoundCIDRs: tokenCIDRs)
        let roleHMAC = try hmac(r.name), secretIDHMAC = try hmac(secretID)
        let key = "secret-id/\(roleHMAC)/\(secretIDHMAC)"
        try await storage.withLock(key) {
            if try await storage.get(key) != nil { throw CofferError.invalid("SecretID is already registered") }
            try await storage.putAll([
                StorageEntry(key: key, value: entry.storedJSON.serialized()),
                StorageEntry(key: "accessor/" + (try hmac(entry.accessor)),
                             value: AccessorEntry(roleNameHMAC: roleHMAC, secretIDHMAC: secretIDHMAC).storedJSON.serialized()),
            ])
        }
        return LogicalResponse(data: [
            "secret_id": .string(secretID), "secret_id_accessor": .string(entry.accessor),
            "secret_id_ttl": .int(Int64(ttl)), "secret_id_num_uses": .int(Int64(numUses)),
        ])
    }

    static func checkSubset(_ list: [String], of bound: [String], on name: String) throws {
        guard !list.isEmpty, !bound.isEmpty else { return }
        for c in list {
            guard let inner = try? AddressRange(c), bound.contains(where: { (try? AddressRange($0))?.contains(range: inner) ?? false }) else {
                throw CofferError.invalid("failed to verify subset relationship between CIDR blocks on the \(name) \(bound) and CIDR blocks on the secret ID \(list.map { String($0.prefix(64)) })")
            }
        }
    }

    func listSecretIDAccessors(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let r = try await existingRole(req)
        let roleHMAC = try hmac(r.name)
        var accessors: [String] = []
        for idHMAC in try await storage.list(prefix: "secret-id/\(roleHMAC)/") {
            if let e = try await storage.getCodable(SecretID.self, "secret-id/\(roleHMAC)/\(idHMAC)") { accessors.append(e.accessor) }
        }
        return .list(accessors.sorted())
    }

    func lookupSecretID(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let r = try await existingRole(req)
        let key = "secret-id/\(try hmac(r.name))/\(try hmac(req.fields.string("secret_id")))"
        guard let e = try await storage.getCodable(SecretID.self, key), !e.expired(now: clock.now()) else { return .done }
        return LogicalResponse(data: e.json)
    }

    func destroySecretID(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let r = try await existingRole(req)
        let key = "secret-id/\(try hmac(r.name))/\(try hmac(req.fields.string("secret_id")))"
        try await storage.withLock(key) {
            if let e = try await storage.getCodable(SecretID.self, key) {
                try await storage.delete("accessor/" + (try hmac(e.accessor)))
            }
            try await storage.delete(key)
        }
        return nil
    }

    func accessorEntry(_ req: LogicalRequest) async throws -> (Role, String, SecretID)? {
        let r = try await existingRole(req)
        let accessor = req.fields.string("secret_id_accessor")
        guard let a = try await storage.getCodable(AccessorEntry.self, "accessor/" + (try hmac(accessor))), a.roleNameHMAC == (try hmac(r.name)) else {
            return nil
        }
        let key = "secret-id/\(a.roleNameHMAC)/\(a.secretIDHMAC)"
        guard let e = try await storage.getCodable(SecretID.self, key) else { return nil }
        return (r, key, e)
    }

    func lookupAccessor(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let (_, _, e) = try await accessorEntry(req) else {
            throw CofferError.notFound("failed to find accessor entry for secret_id_accessor: \"\(req.fields.string("secret_id_accessor").prefix(64))\"")
        }
        return LogicalResponse(data: e.json)
    }

    func destroyAccessor(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let (_, key, e) = try await accessorEntry(req) else {
            throw CofferError.invalid("failed to find accessor entry for secret_id_accessor: \"\(req.fields.string("secret_id_accessor").prefix(64))\"")
        }
        try await storage.withLock(key) {
            try await storage.delete("accessor/" + (try hmac(e.accessor)))
            try await storage.delete(key)
        }
        return nil
    }

    // MARK: login

    func login(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let roleID = req.fields.string("role_id")
        guard !roleID.isEmpty else { throw CofferError.invalid("missing role_id") }
        let invalid = CofferError.invalid("invalid role or secret ID")
        guard roleID.utf8.count <= 4096, let nameBytes = try await storage.get("role-id/" + (try hmac(roleID))),
              let r = try await role(String(decoding: nameBytes, as: UTF8.self)), r.roleID == roleID else { throw invalid }
        var metadata: [String: String] = [:]
        var tokenCIDRs = r.token.boundCIDRs
        if r.bindSecretID {
            let secretID = req.fields.string("secret_id")
            guard !secretID.isEmpty else { throw CofferError.invalid("missing secret_id") }
            guard secretID.utf8.count <= 4096 else { throw invalid }
            let key = "secret-id/\(try hmac(r.name))/\(try hmac(secretID))"
            // The use is spent under the secret id's lock: N concurrent logins with a
            // one-use secret id make one token.
            let entry: SecretID = try await storage.withLock(key) {
                // A wrong secret id for a valid role counts towards the role id's lockout.
                guard var e = try await storage.getCodable(SecretID.self, key) else { throw CofferError(.invalidCredentials, "invalid role or secret ID") }
                let now = clock.now()
                if e.expired(now: now) {
                    try await storage.delete("accessor/" + (try hmac(e.accessor)))
                    try await storage.delete(key)
                    throw invalid
                }
                if !TokenParameters.allows(e.cidrList, address: req.remoteAddress) {
                    throw CofferError.invalid("source address \"\(req.remoteAddress ?? "")\" unauthorized through CIDR restrictions on the secret ID")
                }
                if e.numUses == 1 {
                    try await storage.delete("accessor/" + (try hmac(e.accessor)))
                    try await storage.delete(key)
                } else if e.numUses > 1 {
                    e.numUses -= 1
                    e.lastUpdatedTime = now
                    try await storage.putCodable(key, e)
                }
                return e
            }
            metadata = entry.metadata
            if !entry.tokenBoundCIDRs.isEmpty { tokenCIDRs = entry.tokenBoundCIDRs }
        }
        if !TokenParameters.allows(r.secretIDBoundCIDRs, address: req.remoteAddress) {
            throw CofferError.invalid("source address \"\(req.remoteAddress ?? "")\" unauthorized by CIDR restrictions on the role")
        }
        metadata["role_name"] = r.name
        var auth = AuthInfo(metadata: metadata)
        r.token.populate(&auth, remoteAddress: req.remoteAddress)
        if !r.token.strictlyBindIP { auth.boundCIDRs = tokenCIDRs }
        auth.aliasName = r.roleID
        auth.aliasMetadata = metadata
        return LogicalResponse(auth: auth)
    }

    // MARK: tidy

    /// Deletes expired secret ids and accessor entries whose secret id is gone; answers how many.
    func tidy() async throws -> Int {
        let now = clock.now()
        var removed = 0
        for roleHMAC in try await storage.list(prefix: "secret-id/") where roleHMAC.hasSuffix("/") {
            let prefix = "secret-id/" + roleHMAC
            for idHMAC in try await storage.list(prefix: prefix) {
                let key = prefix + idHMAC
                let gone: Bool = try await storage.withLock(key) {
                    guard let e = try await storage.getCodable(SecretID.self, key), e.expired(now: now) else { return false }
                    try await storage.delete("accessor/" + (try hmac(e.accessor)))
                    try await storage.delete(key)
                    return true
                }
                if gone { removed += 1 }
            }
        }
        for accessorHMAC in try await storage.list(prefix: "accessor/") {
            guard let a = try await storage.getCodable(AccessorEntry.self, "accessor/" + accessorHMAC) else { continue }
            if try await storage.get("secret-id/\(a.roleNameHMAC)/\(a.secretIDHMAC)") == nil {
                try await storage.delete("accessor/" + accessorHMAC)
                removed += 1
            }
        }
        return removed
    }
}

// Stored forms by hand (`StoredJSONRecord`, the same JSON `Codable` writes): a login reads
// the role and the secret id, and JSONDecoder's generic machinery was a tenth of its CPU.
extension AppRoleBackend.Role: StoredJSONRecord {
    var storedJSON: JSONValue {
        [
            "name": .string(name), "roleID": .string(roleID), "bindSecretID": .bool(bindSecretID),
            "secretIDBoundCIDRs": .storedList(secretIDBoundCIDRs), "secretIDNumUses": .int(Int64(secretIDNumUses)),
            "secretIDTTL": .int(Int64(secretIDTTL)), "localSecretIDs": .bool(localSecretIDs), "token": token.storedJSON,
            "policies": .storedList(policies), "period": .int(Int64(period)),
        ]
    }

    init(storedJSON: JSONValue) throws {
        let f = try StoredFields(storedJSON)
        self.init(name: try f.string("name"), roleID: try f.string("roleID"))
        bindSecretID = try f.bool("bindSecretID")
        secretIDBoundCIDRs = try f.stringList("secretIDBoundCIDRs")
        secretIDNumUses = try f.int("secretIDNumUses")
        secretIDTTL = try f.int("secretIDTTL")
        localSecretIDs = try f.bool("localSecretIDs")
        token = try f.record(TokenParameters.self, "token")
        policies = try f.stringList("policies")
        period = try f.int("period")
    }
}

extension AppRoleBackend.SecretID: StoredJSONRecord {
    var storedJSON: JSONValue {
        [
            "accessor": .string(accessor), "numUses": .int(Int64(numUses)), "ttl": .int(Int64(ttl)),
            "creationTime": .double(creationTime), "expirationTime": .double(expirationTime),
            "lastUpdatedTime": .double(lastUpdatedTime), "metadata": .storedStrings(metadata),
            "cidrList": .storedList(cidrList), "tokenBoundCIDRs": .storedList(tokenBoundCIDRs),
        ]
    }

    init(storedJSON: JSONValue) throws {
        let f = try StoredFields(storedJSON)
        self.init(
            accessor: try f.string("accessor"), numUses: try f.int("numUses"), ttl: try f.int("ttl"),
            creationTime: try f.double("creationTime"), expirationTime: try f.double("expirationTime"),
            lastUpdatedTime: try f.double("lastUpdatedTime"), metadata: try f.strings("metadata"),
            cidrList: try f.stringList("cidrList"), tokenBoundCIDRs: try f.stringList("tokenBoundCIDRs"))
    }
}

extension AppRoleBackend.AccessorEntry: StoredJSONRecord {
    var storedJSON: JSONValue { ["roleNameHMAC": .string(roleNameHMAC), "secretIDHMAC": .string(secretIDHMAC)] }

    init(storedJSON: JSONValue) throws {
        let f = try StoredFields(storedJSON)
        self.init(roleNameHMAC: try f.string("roleNameHMAC"), secretIDHMAC: try f.string("secretIDHMAC"))
    }
}
