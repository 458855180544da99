import CLDAP
import CofferSDK
import Foundation
import Logging
import NIOPosix

/// The `ldap` auth method (LDAP and Active Directory), as Vault's: `config`, local
/// `groups/:name` and `users/:name` policy mappings, and `login/:username`, which binds as
/// the user against the directory, reads the user's groups and maps them to policies. LDAP
/// groups become external group aliases in the namespace's identity store.
///
/// A whole login runs as one job on NIOThreadPool (libldap blocks), bounded by the
/// configured connection and request timeouts; a directory that cannot be reached is a 503.
public struct LDAPBackend: LogicalBackend {
    let storage: StorageView
    let outbound: OutboundPolicy
    let logger: Logger
    let configs = DecodedRecords<LDAPConfig>(limit: 1)

    public static let factory: BackendFactory = { c in LDAPBackend(storage: c.storage, outbound: c.outbound, logger: c.logger) }

    public var backendHelp: String {
        "The \"ldap\" credential provider allows authentication querying a LDAP server, checking username and password, and associating groups to set of policies."
    }
    public var unauthenticatedPaths: [String] { ["login/*"] }

    public func loginAlias(_ request: LogicalRequest) -> String? {
        guard request.path.hasPrefix("login/") else { return nil }
        let name = request.path.dropFirst("login/".count).trimmingCharacters(in: .whitespaces).lowercased()
        return name.isEmpty || name.utf8.count > 512 ? nil : name
    }

    public static let routes: [Route<LDAPBackend>] = [
        Route("config", fields: LDAPConfig.fields, operations: [
            .read: { b, _ in try await b.readConfig() }, .update: { try await $0.writeConfig($1) },
        ], summary: "Configure the LDAP server to connect to, along with its options."),
        Route("groups/?", fields: [Field("after", .string), Field("limit", .int)],
              operations: [.list: { try await $0.list("group/", $1) }], summary: "Manage additional groups for users allowed to authenticate."),
        Route("groups/:name", fields: [Field("name", .string), Field("policies", .commaStringSlice)], operations: [
            .read: { try await $0.readGroup($1) }, .update: { try await $0.writeGroup($1) }, .create: { try await $0.writeGroup($1) },
            .delete: { try await $0.delete("group/", $1) },
        ], summary: "Manage additional groups for users allowed to authenticate."),
        Route("users/?", fields: [Field("after", .string), Field("limit", .int)],
              operations: [.list: { try await $0.list("user/", $1) }], summary: "Manage users allowed to authenticate."),
        Route("users/:name", fields: [Field("name", .string), Field("groups", .commaStringSlice), Field("policies", .commaStringSlice)], operations: [
            .read: { try await $0.readUser($1) }, .update: { try await $0.writeUser($1) }, .create: { try await $0.writeUser($1) },
            .delete: { try await $0.delete("user/", $1) },
        ], summary: "Manage users allowed to authenticate."),
        Route("login/:username", fields: [Field("username", .string), Field("password", .string)],
              operations: [.update: { try await $0.login($1) }], usage: [.update: .login, .create: .login],
              summary: "Log in with a username and password."),
    ]

    // MARK: config

    func config() async throws -> LDAPConfig? { try await configs.get(storage, "config") }

    func readConfig() async throws -> LogicalResponse? {
        guard let c = try await config() else { return nil }
        var warnings: [String] = []
        if !c.userFilter.isEmpty && !c.userFilter.contains("{{.UserAttr}}") && !c.userFilter.contains(c.userAttr) {
            warnings.append("userfilter does not consider userattr and may result in colliding entity aliases on logins")
        }
        return LogicalResponse(data: c.readData, warnings: warnings)
    }

    func writeConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        try await storage.withLock("config") {
            var c = try await config() ?? LDAPConfig()
            try c.apply(req.fields)
            try await storage.putCodable("config", c)
        }
        return nil
    }

    // MARK: local groups and users

    struct Group: Codable { var policies: [String] = [] }
    struct User: Codable {
        var groups: [String] = []
        var policies: [String] = []
    }

    func key(_ req: LogicalRequest, caseSensitive: Bool) throws -> String {
        let name = req.fields.string("name")
        guard !name.isEmpty else { throw CofferError.invalid("name is required") }
        guard name.utf8.count <= 512, !name.contains("/") else { throw CofferError.invalid("invalid name") }
        return caseSensitive ? name : name.lowercased()
    }

    func caseSensitive() async throws -> Bool {
        guard let c = try await config() else { throw CofferError.invalid("ldap backend not configured") }
        return c.caseSensitiveNames
    }

    func list(_ prefix: String, _ req: LogicalRequest) async throws -> LogicalResponse? {
        .list(try await storage.list(prefix: prefix), after: req.fields.string("after"), limit: req.fields.int("limit"))
    }

    func delete(_ prefix: String, _ req: LogicalRequest) async throws -> LogicalResponse? {
        try await storage.delete(prefix + key(req, caseSensitive: try await caseSensitive()))
        return nil
    }

    func readGroup(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let g = try await storage.getCodable(Group.self, "group/" + key(req, caseSensitive: try await caseSensitive())) else { return nil }
        return LogicalResponse(data: ["policies": .array(g.policies.map { .string($0) })])
    }

    func writeGroup(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let k = try key(req, caseSensitive: try await caseSensitive())
        try await storage.putCodable("group/" + k, Group(policies: TokenParameters.policyList(req.fields.strings("policies"))))
        return nil
    }

    func readUser(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let u = try await storage.getCodable(User.self, "user/" + key(req, caseSensitive: try await caseSensitive())) else { return nil }
        return LogicalResponse(data: ["groups": .string(u.groups.joined(separator: ",")), "policies": .array(u.policies.map { .string($0) })])
    }

    func writeUser(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let cs = try await caseSensitive()
        let k = try key(req, caseSensitive: cs)
        var groups: [String] = []
        for g in req.fields.strings("groups") {
            let name = cs ? g : g.lowercased()
            if !groups.contains(name) { groups.append(name) }
        }
        try await storage.putCodable("user/" + k, User(groups: groups, policies: TokenParameters.policyList(req.fields.strings("policies"))))
        return nil
    }

    // MARK: login

    func login(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let c = try await config() else { throw CofferError.invalid("auth method not configured") }
        guard TokenParameters.allows(c.token.boundCIDRs, address: req.remoteAddress) else { throw CofferError.denied() }
        let given = req.fields.string("username").trimmingCharacters(in: .whitespaces)
        let username = c.caseSensitiveNames ? given : given.lowercased()
        let password = req.fields.string("password")
        guard !username.isEmpty else { throw CofferError.invalid("missing username") }
        if c.denyNullBind && password.isEmpty {
            throw CofferError.invalid("password cannot be of zero length when passwordless binds are being denied")
        }
        if outbound.restricted {
            let hosts = c.hosts
            do {
                try await NIOThreadPool.singleton.runIfActive { for h in hosts { try outbound.check(host: h) } }
            } catch {
                throw CofferError.invalid("the LDAP host is not allowed from this namespace (the operator's database_allowed_hosts / database_denied_cidrs)")
            }
        }
        let found: LDAPLogin.Result
        do {
            found = try await NIOThreadPool.singleton.runIfActive { try LDAPLogin(config: c).run(username: username, password: password) }
        } catch is LDAPLogin.UserBindFailed {
            // Counted towards the user's lockout, like a wrong userpass password.
            throw CofferError(.invalidCredentials, "ldap operation failed: failed to bind as user")
        } catch let f as LDAPConnection.Failure {
            if case .unreachable(let why) = f { throw CofferError(.unavailable, "ldap operation failed: failed to connect to LDAP server: \(why)") }
            throw CofferError.invalid("ldap operation failed: \(f)")
        }
        // Policies: the locally mapped groups (the user's own and the directory's) and the user's.
        let user = try await storage.getCodable(User.self, "user/" + (c.caseSensitiveNames ? username : username.lowercased()))
        var allGroups = user?.groups ?? []
        allGroups += found.groups
        var policies: [String] = []
        for g in allGroups {
            if let group = try await storage.getCodable(Group.self, "group/" + (c.caseSensitiveNames ? g : g.lowercased())) {
                policies += group.policies
            }
        }
        policies += user?.policies ?? []
        var auth = AuthInfo(metadata: ["username": username])
        c.token.populate(&auth, remoteAddress: req.remoteAddress)
        for p in TokenParameters.policyList(policies) where !auth.policies.contains(p) { auth.policies.append(p) }
        auth.tokenPolicies = auth.policies
        auth.displayName = username
        auth.aliasName = c.usernameAsAlias ? username : found.alias
        auth.aliasMetadata = ["name": username]
        auth.groupAliases = allGroups.filter { !$0.isEmpty }
        var warnings: [String] = []
        if found.groups.isEmpty {
            warnings.append("no LDAP groups found in groupDN \"\(c.groupDN)\"; only policies from locally-defined groups available")
        }
        return LogicalResponse(auth: auth, warnings: warnings)
    }
}

/// One login against the directory, blocking, as Vault's ldaputil does it: find the DN to
/// bind as, bind with the user's password, rebind as the service account, find the groups.
struct LDAPLogin {
    let config: LDAPConfig

    struct Result: Sendable {
        var alias: String
        var groups: [String]
    }

    func connect() throws -> LDAPConnection {
        try LDAPConnection.open(urls: config.urls, startTLS: config.startTLS, tls: config.tls,
                                connectTimeout: config.connectionTimeout, requestTimeout: config.requestTimeout)
    }

    func run(username: String, password: String) throws -> Result {
        let conn = try connect()
        let c = config
        let searchesForUser = c.discoverDN || (!c.bindDN.isEmpty && !c.bindPassword.isEmpty)
        var userAttrValue: String?
        let bindDN: String
        if searchesForUser {
            let entry: LDAPConnection.Entry
            do {
                entry = try searchUser(conn, username)
            } catch let f as LDAPConnection.Failure {
                if case .unreachable = f { throw f }
                throw UserBindFailed()
            }
            bindDN = entry.dn
            userAttrValue = entry.attributes[c.userAttr]?.count == 1 ? entry.attributes[c.userAttr]![0] : nil
        } else if !c.upnDomain.isEmpty {
            bindDN = LDAPText.escapeDNValue(username) + "@" + c.upnDomain
        } else {
            bindDN = c.userAttr + "=" + LDAPText.escapeDNValue(username) + "," + c.userDN
        }
        do {
            try conn.bind(bindDN, password)
        } catch LDAPConnection.Failure.invalidCredentials {
            throw UserBindFailed()
        }
        if !c.bindDN.isEmpty && !c.bindPassword.isEmpty {
            do { try conn.bind(c.bindDN, c.bindPassword) } catch let f as LDAPConnection.Failure {
                if case .unreachable = f { throw f }
                throw CofferError.invalid("ldap operation failed: failed to re-bind with the BindDN user")
            }
        }
        var userDN = bindDN
        if !c.upnDomain.isEmpty {
            let filter = "(userPrincipalName=" + LDAPText.escapeFilter(username) + "@" + c.upnDomain + ")"
            if let e = try conn.search(base: c.userDN, filter: filter, attributes: ["1.1"]).last { userDN = e.dn }
        }
        let groupConn = c.anonymousGroupSearch ? try connect() : conn
        let groups = try findGroups(groupConn, userDN: userDN, username: username)
        let alias: String
        if c.usernameAsAlias {
            alias = username
        } else if searchesForUser {
            guard let v = userAttrValue, !v.isEmpty else {
                throw CofferError.invalid("LDAP entity alias attribute \(c.userAttr) empty or not unique for entity alias mapping")
            }
            alias = v
        } else {
            alias = bindDN
        }
        return Result(alias: alias, groups: groups)
    }

    struct UserBindFailed: Error {}

    func searchUser(_ conn: LDAPConnection, _ username: String) throws -> LDAPConnection.Entry {
        try conn.bind(config.bindDN, config.bindPassword)
        var values = ["UserAttr": LDAPText.escapeFilter(config.userAttr), "Username": LDAPText.escapeFilter(username)]
        if !config.upnDomain.isEmpty {
            values = ["UserAttr": "userPrincipalName", "Username": LDAPText.escapeFilter(username) + "@" + config.upnDomain]
        }
        let filter = try LDAPText.render(config.userFilter.isEmpty ? LDAPConfig.defaultUserFilter : config.userFilter, values)
        let entries = try conn.search(base: config.userDN, filter: filter, attributes: [config.userAttr], limit: 2)
        guard entries.count == 1 else { throw LDAPConnection.Failure.ldap(LDAP_NO_SUCH_OBJECT, "LDAP search for binddn 0 or not unique") }
        return entries[0]
    }

    func findGroups(_ conn: LDAPConnection, userDN: String, username: String) throws -> [String] {
        guard !config.groupFilter.isEmpty, !config.groupDN.isEmpty else { return [] }
        let filter = try LDAPText.render(config.groupFilter, ["UserDN": LDAPText.escapeFilter(userDN), "Username": LDAPText.escapeFilter(username)])
        var names: [String] = []
        for e in try conn.search(base: config.groupDN, filter: filter, attributes: [config.groupAttr]) {
            let values = e.attributes[config.groupAttr.lowercased()] ?? []
            for v in values.isEmpty ? [e.dn] : values {
                let cn = LDAPText.commonName(v)
                if !names.contains(cn) { names.append(cn) }
            }
        }
        return names
    }
}
