import CofferSDK
import Foundation

/// The `userpass` auth method: users with a password, logging in at `login/:username`.
/// Passwords are stored as scrypt hashes (`PasswordHash`); user names are case-insensitive
/// (kept lowercased), as in Vault.
public struct UserpassBackend: LogicalBackend {
    let storage: StorageView

    public static let factory: BackendFactory = { config in UserpassBackend(storage: config.storage) }

    public var backendHelp: String { "The userpass auth method lets users authenticate with a username and password." }
    public var unauthenticatedPaths: [String] { ["login/*"] }

    public func loginAlias(_ request: LogicalRequest) -> String? {
        guard request.path.hasPrefix("login/") else { return nil }
        let name = request.path.dropFirst("login/".count).lowercased()
        return name.isEmpty || name.contains("/") ? nil : name
    }

    /// Vault's userpass renewal: the user must still exist with the same policies.
    public func renewLogin(_ renewal: LoginRenewal) async throws {
        guard let name = renewal.metadata["username"], let u = try await user(name) else {
            throw CofferError.invalid("user does not exist, not renewing")
        }
        let now = Set(TokenParameters.policyList(u.token.policies).filter { $0 != "default" })
        if now != Set(renewal.policies) { throw CofferError.invalid("policies have changed, not renewing") }
    }

    /// A stored user: its token parameters, its password hash, and the deprecated fields as
    /// they were written (a read shows them while they are set).
    struct User: Codable, Sendable {
        var token = TokenParameters()
        var passwordHash = ""
        var policies: [String] = []
        var ttl = 0
        var maxTTL = 0
        var boundCIDRs: [String] = []
    }

    static let userFields: [Field] = [
        Field("username", .string, description: "Username for this user."),
        Field("password", .string, description: "Password for this user."),
        Field("password_hash", .string, description: "A pre-hashed password (not supported: Coffer stores scrypt hashes)."),
        Field("policies", .commaStringSlice, description: "Deprecated: use token_policies."),
        Field("ttl", .duration, description: "Deprecated: use token_ttl."),
        Field("max_ttl", .duration, description: "Deprecated: use token_max_ttl."),
        Field("bound_cidrs", .commaStringSlice, description: "Deprecated: use token_bound_cidrs."),
    ] + TokenParameters.fields

    public static let routes: [Route<UserpassBackend>] = [
        Route("users/?", fields: [Field("after", .string), Field("limit", .int)],
              operations: [.list: { try await $0.listUsers($1) }], summary: "List users."),
        Route("users/:username/password", fields: [Field("username", .string), Field("password", .string), Field("password_hash", .string)],
              operations: [.update: { try await $0.setPassword($1) }], summary: "Reset a user's password."),
        Route("users/:username/policies", fields: [Field("username", .string), Field("policies", .commaStringSlice), Field("token_policies", .commaStringSlice)],
              operations: [.update: { try await $0.setPolicies($1) }], summary: "Update a user's policies."),
        Route("users/:username", fields: userFields, operations: [
            .read: { try await $0.readUser($1) }, .create: { try await $0.writeUser($1) },
            .update: { try await $0.writeUser($1) }, .delete: { try await $0.deleteUser($1) },
        ], existenceCheck: { try await $0.user(try Self.name($1)) != nil }, summary: "Manage users allowed to authenticate."),
        Route("login/:username", fields: [Field("username", .string), Field("password", .string)],
              operations: [.update: { try await $0.login($1) }], usage: [.update: .login, .create: .login],
              summary: "Log in with a username and password."),
    ]

    /// The user name of a request, lowercased and checked (Vault's `GenericNameRegex`).
    static func name(_ req: LogicalRequest) throws -> String {
        let name = req.fields.string("username").lowercased()
        guard !name.isEmpty else { throw CofferError.invalid("missing username") }
        guard name.utf8.count <= 256, let first = name.unicodeScalars.first, let last = name.unicodeScalars.last,
              Self.isWord(first), Self.isWord(last),
              name.unicodeScalars.allSatisfy({ Self.isWord($0) || $0 == "-" || $0 == "." || $0 == "@" }) else {
            throw CofferError.invalid("invalid username \"\(name.prefix(64))\"")
        }
        return name
    }

    static func isWord(_ c: Unicode.Scalar) -> Bool {
        (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "_"
    }

    func user(_ name: String) async throws -> User? {
        try await storage.getCodable(User.self, "user/" + name)
    }

    func listUsers(_ req: LogicalRequest) async throws -> LogicalResponse? {
        .list(try await storage.list(prefix: "user/"), after: req.fields.string("after"), limit: req.fields.int("limit"))
    }

    func readUser(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let u = try await user(Self.name(req)) else { return nil }
        var data = u.token.json
        if u.ttl > 0 { data["ttl"] = .int(Int64(u.ttl)) }
        if u.maxTTL > 0 { data["max_ttl"] = .int(Int64(u.maxTTL)) }
        if !u.policies.isEmpty { data["policies"] = data["token_policies"] }
        if !u.boundCIDRs.isEmpty { data["bound_cidrs"] = .array(u.boundCIDRs.map { .string($0) }) }
        return LogicalResponse(data: data)
    }

    func writeUser(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.name(req)
        let f = req.fields
        let password = f.string("password"), passwordHash = f.string("password_hash")
        if req.operation == .create { try Self.checkPasswordInput(password, passwordHash) }
        // Hashing is slow: done before the user's lock, so a burst of writes doesn't queue
        // behind one another's key derivation.
        let hash = password.isEmpty ? nil : try await PasswordHash.make(password)
        if !passwordHash.isEmpty { try Self.checkPasswordInput(password, passwordHash) }
        try await storage.withLock("user/" + name) {
            var u = try await user(name) ?? User()
            try u.token.parse(f)
            if let hash { u.passwordHash = hash }
            // Deprecated fields, as Vault's tokenutil.UpgradeValue: the new name wins; the
            // old one, given alone, sets both.
            try DeprecatedField.upgrade(f, old: "policies", new: "token_policies", oldValue: &u.policies, newValue: &u.token.policies) { TokenParameters.policyList($0.strings("policies")) }
            try DeprecatedField.upgrade(f, old: "bound_cidrs", new: "token_bound_cidrs", oldValue: &u.boundCIDRs, newValue: &u.token.boundCIDRs) {
                try TokenParameters.cidrs($0.strings("bound_cidrs"), field: "bound_cidrs")
            }
            try DeprecatedField.upgrade(f, old: "ttl", new: "token_ttl", oldValue: &u.ttl, newValue: &u.token.ttl) { $0.int("ttl") }
            try DeprecatedField.upgrade(f, old: "max_ttl", new: "token_max_ttl", oldValue: &u.maxTTL, newValue: &u.token.maxTTL) { $0.int("max_ttl") }
            if u.token.ttl > 0 && u.token.maxTTL > 0 && u.token.ttl > u.token.maxTTL {
                throw CofferError.invalid("'token_ttl' cannot be greater than 'token_max_ttl'")
            }
            try await storage.putCodable("user/" + name, u)
        }
        return nil
    }

    static func checkPasswordInput(_ password: String, _ hash: String) throws {
        switch (password.isEmpty, hash.isEmpty) {
        case (false, false): throw CofferError.invalid("only one of password or password_hash may be provided")
        case (true, true): throw CofferError.invalid("must provide either password or password_hash")
        case (true, false): throw CofferError.invalid("password_hash is not supported: Coffer stores scrypt hashes of passwords it is given")
        case (false, true): break
        }
    }

    func deleteUser(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try await storage.delete("user/" + Self.name(req))
        return nil
    }

    func setPassword(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.name(req)
        let password = req.fields.string("password")
        try Self.checkPasswordInput(password, req.fields.string("password_hash"))
        guard try await user(name) != nil else { throw CofferError.invalid("username does not exist") }
        let hash = try await PasswordHash.make(password)
        try await storage.withLock("user/" + name) {
            guard var u = try await user(name) else { throw CofferError.invalid("username does not exist") }
            u.passwordHash = hash
            try await storage.putCodable("user/" + name, u)
        }
        return nil
    }

    func setPolicies(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.name(req)
        let f = req.fields
        try await storage.withLock("user/" + name) {
            guard var u = try await user(name) else { throw CofferError.invalid("username does not exist") }
            if f.has("token_policies") { u.token.policies = TokenParameters.policyList(f.strings("token_policies")) }
            try DeprecatedField.upgrade(f, old: "policies", new: "token_policies", oldValue: &u.policies, newValue: &u.token.policies) { TokenParameters.policyList($0.strings("policies")) }
            try await storage.putCodable("user/" + name, u)
        }
        return nil
    }

    func login(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.name(req)
        let password = req.fields.string("password")
        guard !password.isEmpty else { throw CofferError.invalid("missing password") }
        let u = try await user(name)
        if let u, u.passwordHash.isEmpty { throw CofferError.invalid("invalid username or password") }
        // An unknown user is checked against a dummy hash: the same cost as a wrong password.
        guard await PasswordHash.verify(password, against: u?.passwordHash), let u else {
            // A wrong password of a user that exists counts towards its lockout.
            throw u == nil ? CofferError.invalid("invalid username or password") : CofferError(.invalidCredentials, "invalid username or password")
        }
        guard TokenParameters.allows(u.token.boundCIDRs, address: req.remoteAddress) else { throw CofferError.denied() }
        var auth = AuthInfo(metadata: ["username": name])
        u.token.populate(&auth, remoteAddress: req.remoteAddress)
        auth.displayName = name
        auth.aliasName = name
        return LogicalResponse(auth: auth)
    }
}

extension UserpassBackend.User: StoredJSONRecord {
    var storedJSON: JSONValue {
        [
            "token": token.storedJSON, "passwordHash": .string(passwordHash), "policies": .storedList(policies),
            "ttl": .int(Int64(ttl)), "maxTTL": .int(Int64(maxTTL)), "boundCIDRs": .storedList(boundCIDRs),
        ]
    }

    init(storedJSON: JSONValue) throws {
        let f = try StoredFields(storedJSON)
        self.init()
        token = try f.record(TokenParameters.self, "token")
        passwordHash = try f.string("passwordHash")
        policies = try f.stringList("policies")
        ttl = try f.int("ttl")
        maxTTL = try f.int("maxTTL")
        boundCIDRs = try f.stringList("boundCIDRs")
    }
}
