import CofferSDK
import Foundation
import Logging
import Synchronization

/// The `database` secret engine: dynamic and static database credentials on Vault's paths.
public enum DatabaseEngine {
    /// The engine with Coffer's built-in plugins (`postgresql-database-plugin`,
    /// `mysql-database-plugin`); what the executable registers as type `database`.
    public static let factory: BackendFactory = factory(plugins: builtinPlugins)

    static var builtinPlugins: [any DatabasePlugin] { [PostgreSQLPlugin(), MySQLPlugin()] }

    /// The engine with an explicit plugin list (tests).
    static func factory(plugins: [any DatabasePlugin]) -> BackendFactory {
        { config in DatabaseBackend(config: config, plugins: plugins) }
    }
}

// MARK: - stored records

/// `config/<name>`: one database connection. The password is stored (behind the barrier)
/// and never returned.
struct DatabaseConfigRecord: Codable, Sendable, Equatable {
    /// Changes on every write and root rotation: a connection pool built from an older
    /// record (on this node or before another node's write) is replaced.
    var id: String
    var pluginName: String
    var connectionURL: String
    var username: String
    var password: String
    var allowedRoles: [String]
    var verifyConnection: Bool
    var maxOpenConnections: Int
    /// As configured (0: the same as `maxOpenConnections`).
    var maxIdleConnections: Int
    var maxConnectionLifetime: Int
    var passwordPolicy: String
    var usernameTemplate: String
    var rootRotationStatements: [String]

    enum CodingKeys: String, CodingKey {
        case id, pluginName = "plugin_name", connectionURL = "connection_url", username, password
        case allowedRoles = "allowed_roles", verifyConnection = "verify_connection"
        case maxOpenConnections = "max_open_connections", maxIdleConnections = "max_idle_connections"
        case maxConnectionLifetime = "max_connection_lifetime", passwordPolicy = "password_policy"
        case usernameTemplate = "username_template", rootRotationStatements = "root_rotation_statements"
    }

    static let empty = DatabaseConfigRecord(
        id: "", pluginName: "", connectionURL: "", username: "", password: "", allowedRoles: [], verifyConnection: true,
        maxOpenConnections: 4, maxIdleConnections: 0, maxConnectionLifetime: 0, passwordPolicy: "", usernameTemplate: "",
        rootRotationStatements: [])

    var limits: DatabaseConnectionPool.Limits {
        let open = maxOpenConnections > 0 ? maxOpenConnections : 4
        let idle = maxIdleConnections > 0 ? min(maxIdleConnections, open) : open
        return DatabaseConnectionPool.Limits(maxOpen: open, maxIdle: idle, maxLifetime: maxConnectionLifetime)
    }

    var settings: DatabaseConnectionSettings {
        DatabaseConnectionSettings(connectionURL: connectionURL, username: username, password: password)
    }

    /// Vault's rule: `*` allows every role; otherwise a role must match an entry (globs with `*`).
    func allows(role: String) -> Bool {
        allowedRoles.contains { $0 == "*" || DatabaseBackend.globMatch($0, role) }
    }
}

/// `role/<name>`: a dynamic role.
struct DatabaseRoleRecord: Codable, Sendable, Equatable {
    var dbName: String
    var creationStatements: [String]
    var revocationStatements: [String]
    var rollbackStatements: [String]
    var renewStatements: [String]
    var defaultTTL: Int
    var maxTTL: Int
    var credentialType: String

    enum CodingKeys: String, CodingKey {
        case dbName = "db_name", creationStatements = "creation_statements", revocationStatements = "revocation_statements"
        case rollbackStatements = "rollback_statements", renewStatements = "renew_statements"
        case defaultTTL = "default_ttl", maxTTL = "max_ttl", credentialType = "credential_type"
    }
}

/// `static-role/<name>`: an existing database user whose password Coffer rotates.
struct StaticRoleRecord: Codable, Sendable, Equatable {
    var dbName: String
    var username: String
    var rotationPeriod: Int
    var rotationStatements: [String]
    var credentialType: String
    var password: String
    /// Unix seconds of the last successful rotation.
    var lastRotation: Double

    enum CodingKeys: String, CodingKey {
        case dbName = "db_name", username, rotationPeriod = "rotation_period", rotationStatements = "rotation_statements"
        case credentialType = "credential_type", password, lastRotation = "last_rotation"
    }

    var lastRotationDate: Date { Date(timeIntervalSince1970: lastRotation) }
    func nextRotation() -> Date { lastRotationDate.addingTimeInterval(TimeInterval(rotationPeriod)) }
}

// MARK: - backend

/// The database secret engine of one mount.
///
/// Paths, fields and response shapes follow Vault's database engine: `config/:name`,
/// `reset/:name`, `rotate-root/:name`, `roles/:name`, `creds/:name`, `static-roles/:name`,
/// `static-creds/:name`, `rotate-role/:name`. Records live in the mount's storage view
/// (`config/`, `role/`, `static-role/`); stored passwords never appear in a response.
///
/// Driver calls run on `DatabaseThreads` through one `DatabaseConnectionPool` per
/// connection, created on first use and replaced when the connection's record changes.
/// Static roles rotate on schedule from a task started by `setup()` and stopped by
/// `teardown()`, and whenever `static-creds` finds a rotation overdue.
///
/// Differences from Vault: only the `password` credential type; password policies are
/// refused until `sys/policies/password` exists; plugin-specific connection options beyond
/// the common ones are not accepted; a role (static or dynamic) can only be written for an
/// existing connection that allows it.
public final class DatabaseBackend: LeasingBackend {
    let config: BackendConfiguration
    let plugins: [String: any DatabasePlugin]
    let pools = PoolRegistry()
    /// Static roles whose last scheduled rotation failed: not retried before this time.
    let rotationBackoff = Mutex<[String: Date]>([:])
    /// Set by `teardown()`: no new connection pool is opened after it.
    let tornDown = Mutex(false)
    var storage: StorageView { config.storage }
    var logger: Logger { config.logger }

    /// Shortest `rotation_period`, as Vault's rotation queue tick.
    static let minimumRotationPeriod = 5
    /// Vault adds this to a lease's expiry for the database-side `VALID UNTIL`.
    static let expirationSlack: TimeInterval = 5
    /// Vault's `{{expiration}}` format (Go layout).
    static let expirationLayout = "2006-01-02 15:04:05-0700"
    /// Retry delay after a failed scheduled rotation.
    static let rotationRetryDelay: TimeInterval = 30

    init(config: BackendConfiguration, plugins: [any DatabasePlugin]) {
        self.config = config
        var byName: [String: any DatabasePlugin] = [:]
        for p in plugins { byName[p.name] = p }
        self.plugins = byName
    }

    public var backendHelp: String {
        "The database backend generates database credentials dynamically (roles, creds) and rotates the passwords of existing database users (static roles)."
    }

    public static let routes: [Route<DatabaseBackend>] = {
        let name = Field("name", .string, description: "Name of the object.")
        return [
            Route("config/?", operations: [.list: { try await $0.listConfigs($1) }], summary: "List the configured database connections."),
            Route("config/:name", fields: [
                name,
                Field("plugin_name", .string, description: "The database plugin: \(DatabaseEngine.builtinPlugins.map(\.name).sorted().joined(separator: ", "))."),
                Field("plugin_version", .string),
                Field("connection_url", .string, description: "Connection string; may hold {{username}} and {{password}}."),
                Field("username", .string), Field("password", .string),
                Field("allowed_roles", .commaStringSlice, description: "Roles allowed to use this connection; \"*\" allows all, empty allows none."),
                Field("verify_connection", .bool, default: true, description: "Connect before saving the configuration."),
                Field("max_open_connections", .int), Field("max_idle_connections", .int),
                Field("max_connection_lifetime", .duration),
                Field("password_policy", .string), Field("username_template", .string),
                Field("root_rotation_statements", .any),
            ], operations: [.read: { try await $0.readConfig($1) }, .create: { try await $0.writeConfig($1) }, .update: { try await $0.writeConfig($1) }, .delete: { try await $0.deleteConfig($1) }],
            existenceCheck: { b, req in try await b.storage.get("config/" + req.fields.string("name")) != nil },
            summary: "Configure a connection to a database.",
            help: "Reads never return the password; connection_url is returned with any embedded password redacted."),
            Route("reset/:name", fields: [name], operations: [.update: { try await $0.resetConnection($1) }],
                  summary: "Close and reopen the connections of a database connection."),
            Route("rotate-root/:name", fields: [name], operations: [.update: { try await $0.rotateRoot($1) }],
                  summary: "Rotate the password of the connection's own user; the new password is never returned."),
            Route("roles/?", operations: [.list: { b, _ in DatabaseBackend.listResponse(try await b.storage.list(prefix: "role/")) }],
                  summary: "List the dynamic roles."),
            Route("roles/:name", fields: [
                name, Field("db_name", .string), Field("creation_statements", .any), Field("revocation_statements", .any),
                Field("rollback_statements", .any), Field("renew_statements", .any),
                Field("default_ttl", .duration), Field("max_ttl", .duration),
                Field("credential_type", .string), Field("credential_config", .any),
            ], operations: [.read: { try await $0.readRole($1) }, .create: { try await $0.writeRole($1) }, .update: { try await $0.writeRole($1) }, .delete: { try await $0.deleteRole($1) }],
            existenceCheck: { b, req in try await b.storage.get("role/" + req.fields.string("name")) != nil },
            summary: "Manage the dynamic roles."),
            Route("creds/:name", fields: [name], operations: [.read: { try await $0.createCredentials($1) }], usage: [.read: .credential],
                  summary: "Create a database user for a role, leased."),
            Route("static-roles/?", operations: [.list: { b, _ in DatabaseBackend.listResponse(try await b.storage.list(prefix: "static-role/")) }],
                  summary: "List the static roles."),
            Route("static-roles/:name", fields: [
                name, Field("db_name", .string), Field("username", .string), Field("rotation_period", .duration),
                Field("rotation_statements", .any), Field("credential_type", .string), Field("credential_config", .any),
            ], operations: [.read: { try await $0.readStaticRole($1) }, .create: { try await $0.writeStaticRole($1) }, .update: { try await $0.writeStaticRole($1) }, .delete: { try await $0.deleteStaticRole($1) }],
            existenceCheck: { b, req in try await b.storage.get("static-role/" + req.fields.string("name")) != nil },
            summary: "Manage the static roles (existing users whose password Coffer rotates)."),
            Route("static-creds/:name", fields: [name], operations: [.read: { try await $0.readStaticCredentials($1) }], usage: [.read: .credential],
                  summary: "The current credentials of a static role."),
            Route("rotate-role/:name", fields: [name], operations: [.update: { try await $0.rotateRole($1) }],
                  summary: "Rotate the password of a static role now."),
        ]
    }()

    // MARK: lifecycle

    public func setup() async throws {
        tornDown.withLock { $0 = false }
    }

    public func teardown() async {
        tornDown.withLock { $0 = true }
        for pool in await pools.removeAll() { await pool.close() }
    }

    /// Static-role rotation: the core runs it on the active node; it answers when the next
    /// role is due.
    public var runsPeriodicWork: Bool { true }

    public func periodic() async -> Swift.Duration? {
        .seconds(await rotateDueStaticRoles())
    }

    // MARK: storage

    func loadConfig(_ name: String) async throws -> DatabaseConfigRecord? {
        try await storage.getCodable(DatabaseConfigRecord.self, "config/" + name)
    }

    func loadRole(_ name: String) async throws -> DatabaseRoleRecord? {
        try await storage.getCodable(DatabaseRoleRecord.self, "role/" + name)
    }

    func loadStaticRole(_ name: String) async throws -> StaticRoleRecord? {
        try await storage.getCodable(StaticRoleRecord.self, "static-role/" + name)
    }

    func plugin(_ name: String) throws(CofferError) -> any DatabasePlugin {
        guard let p = plugins[name] else {
            throw CofferError.invalid("unknown database plugin \"\(name)\"; the plugins are: \(plugins.keys.sorted().joined(separator: ", "))")
        }
        return p
    }

    func requireConfig(_ name: String) async throws -> DatabaseConfigRecord {
        guard let c = try await loadConfig(name) else {
            throw CofferError.invalid("database configuration \"\(name)\" does not exist")
        }
        return c
    }

    /// The configuration a role points at, refusing a missing one and a role it does not allow.
    func allowedConfig(_ dbName: String, role: String) async throws -> DatabaseConfigRecord {
        let c = try await requireConfig(dbName)
        guard c.allows(role: role) else {
            throw CofferError.invalid("\"\(role)\" is not an allowed role for database configuration \"\(dbName)\"")
        }
        return c
    }

    /// The connection pool of a configuration, built (or rebuilt after the record changed) on demand.
    func pool(_ name: String, _ c: DatabaseConfigRecord) async throws -> DatabaseConnectionPool {
        if let p = await pools.pool(name, id: c.id) { return p }
        guard !tornDown.withLock({ $0 }) else { throw CofferError(.unavailable, "the database mount is shutting down") }
        let candidate = DatabaseConnectionPool(plugin: try plugin(c.pluginName), settings: c.settings, limits: c.limits, outbound: config.outbound)
        let (pool, replaced) = await pools.install(name, id: c.id, candidate)
        if pool !== candidate { await candidate.close() }
        await replaced?.close()
        return pool
    }

    // MARK: config/:name

    func listConfigs(_ req: LogicalRequest) async throws -> LogicalResponse? {
        Self.listResponse(try await storage.list(prefix: "config/"))
    }

    func readConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        guard let c = try await loadConfig(name) else { return nil }
        var details: [String: JSONValue] = [
            "connection_url": .string(Self.redactConnectionURL(c.connectionURL)),
            "username": .string(c.username),
            "max_open_connections": .int(Int64(c.limits.maxOpen)),
            "max_idle_connections": .int(Int64(c.maxIdleConnections)),
            "max_connection_lifetime": .string(Duration.format(c.maxConnectionLifetime)),
        ]
        if !c.usernameTemplate.isEmpty { details["username_template"] = .string(c.usernameTemplate) }
        return LogicalResponse(data: [
            "plugin_name": .string(c.pluginName),
            "plugin_version": "",
            "connection_details": .object(details),
            "allowed_roles": Self.stringArray(c.allowedRoles),
            "root_credentials_rotate_statements": Self.stringArray(c.rootRotationStatements),
            "password_policy": .string(c.passwordPolicy),
            "username_template": .string(c.usernameTemplate),
            "verify_connection": .bool(c.verifyConnection),
        ])
    }

    func writeConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        let f = req.fields
        return try await storage.withLock("config/" + name) {
            let existing = try await loadConfig(name)
            var c = existing ?? .empty
            if f.has("plugin_name") { c.pluginName = f.string("plugin_name") }
            guard !c.pluginName.isEmpty else { throw CofferError.invalid("empty plugin name") }
            let plugin = try plugin(c.pluginName)
            if let v = f.optionalString("plugin_version"), !v.isEmpty, !v.hasSuffix("+builtin") {
                throw CofferError.invalid("plugin_version \"\(v)\" is not available: only the built-in plugins exist")
            }
            if f.has("connection_url") { c.connectionURL = f.string("connection_url") }
            if f.has("username") { c.username = f.string("username") }
            if f.has("password") { c.password = f.string("password") }
            guard !c.connectionURL.isEmpty else { throw CofferError.invalid("connection_url cannot be empty") }
            for v in [c.username, c.password] where v.contains("{{username}}") || v.contains("{{password}}") {
                throw CofferError.invalid("username and/or password cannot contain the template variables")
            }
            if f.has("allowed_roles") {
                c.allowedRoles = f.strings("allowed_roles").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            }
            if f.has("max_open_connections") {
                let n = f.int("max_open_connections")
                guard n >= 0 else { throw CofferError.invalid("max_open_connections must be zero (the default, 4) or positive") }
                c.maxOpenConnections = n == 0 ? 4 : n
            }
            if f.has("max_idle_connections") {
                let n = f.int("max_idle_connections")
                guard n >= 0 else { throw CofferError.invalid("max_idle_connections must be zero (as many as max_open_connections) or positive") }
                c.maxIdleConnections = n
            }
            if f.has("max_connection_lifetime") { c.maxConnectionLifetime = f.int("max_connection_lifetime") }
            if f.has("password_policy") { c.passwordPolicy = f.string("password_policy") }
            if !c.passwordPolicy.isEmpty {
                // The policy must exist and produce a password now, not at creds time.
                let sample = try await config.generatePassword(c.passwordPolicy)
                guard Self.isSafePassword(sample) else {
                    throw CofferError.invalid("password policy \"\(c.passwordPolicy)\" can produce quotes, backslashes, ';' or control characters, which the statements cannot carry")
                }
            }
            if f.has("username_template") { c.usernameTemplate = f.string("username_template") }
            if !c.usernameTemplate.isEmpty {
                // Parse and render once, as Vault does, so a bad template fails here and not at creds time.
                let t = try UsernameTemplate(c.usernameTemplate)
                _ = try t.render(UsernameTemplate.Metadata())
            }
            if f.has("root_rotation_statements") {
                c.rootRotationStatements = try Self.statementList(f["root_rotation_statements"], field: "root_rotation_statements")
            }
            c.verifyConnection = f.bool("verify_connection")
            c.id = RandomID.secureUUID()

            let replacement = DatabaseConnectionPool(plugin: plugin, settings: c.settings, limits: c.limits, outbound: config.outbound)
            if c.verifyConnection {
                do {
                    let alive = try await replacement.withConnection { $0.isAlive() }
                    guard alive else { throw DatabaseError(kind: .unavailable, message: "the database did not answer a ping") }
                } catch {
                    await replacement.close()
                    let message = Self.scrub(Self.databaseMessage(error), secrets: [c.password])
                    throw CofferError.invalid("error creating database object: error verifying connection: \(message)")
                }
            }
            do {
                try await storage.putCodable("config/" + name, c)
            } catch {
                await replacement.close()
                throw error
            }
            let (_, replaced) = await pools.install(name, id: c.id, replacement, replacing: true)
            await replaced?.close()

            var warnings: [String] = []
            if Self.passwordRange(in: c.connectionURL) != nil {
                warnings.append("Password found in connection_url, use a templated url to enable root rotation and prevent read access to password information.")
            }
            return warnings.isEmpty ? nil : LogicalResponse(warnings: warnings)
        }
    }

    func deleteConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        return try await storage.withLock("config/" + name) {
            try await storage.delete("config/" + name)
            await pools.remove(name)?.close()
            return nil
        }
    }

    func resetConnection(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        return try await storage.withLock("config/" + name) {
            let c = try await requireConfig(name)
            await pools.remove(name)?.close()
            let pool = try await pool(name, c)
            do {
                _ = try await pool.withConnection { $0.isAlive() }
            } catch {
                throw Self.failure(error, database: name, action: "reset", secrets: [c.password])
            }
            return nil
        }
    }

    func rotateRoot(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        return try await storage.withLock("config/" + name) {
            let c = try await requireConfig(name)
            guard !c.username.isEmpty else { throw CofferError.invalid("unable to rotate root credentials: no username in configuration") }
            guard !c.password.isEmpty else { throw CofferError.invalid("unable to rotate root credentials: no password in configuration") }
            guard Self.passwordRange(in: c.connectionURL) == nil else {
                throw CofferError.invalid("unable to rotate root credentials: connection_url holds a password; use {{password}} in connection_url and the password field")
            }
            try Self.checkSafeName(c.username, what: "the configured username")
            let plugin = try plugin(c.pluginName)
            let newPassword = try await password(for: c)
            let templates = c.rootRotationStatements.isEmpty ? plugin.defaultRotationStatements : c.rootRotationStatements
            let values = ["name": c.username, "username": c.username]
            let pool = try await pool(name, c)
            let rotate = Self.expand(templates, values.merging(["password": newPassword]) { $1 })
            do {
                try await pool.withConnection { try $0.executeInTransaction(rotate) }
            } catch {
                throw Self.failure(error, database: name, action: "failed to rotate the root credentials", secrets: [newPassword, c.password])
            }
            var updated = c
            updated.password = newPassword
            updated.id = RandomID.secureUUID()
            do {
                try await storage.putCodable("config/" + name, updated)
            } catch {
                // The database has the new password but storage does not: put the old one back.
                let restore = Self.expand(templates, values.merging(["password": c.password]) { $1 })
                let restored = (try? await pool.withConnection { try $0.executeInTransaction(restore) }) != nil
                logger.error("database root rotation could not be stored", metadata: ["database": .string(name), "restored": .stringConvertible(restored)])
                throw CofferError.internalError(
                    restored ? "the new root password could not be stored; the previous password was restored"
                        : "the new root password could not be stored and the previous password could not be restored; reconfigure the connection's password",
                    cause: error)
            }
            await pools.remove(name)?.close()
            return nil
        }
    }

    // MARK: roles/:name

    func readRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        guard let r = try await loadRole(name) else { return nil }
        return LogicalResponse(data: [
            "db_name": .string(r.dbName),
            "creation_statements": Self.stringArray(r.creationStatements),
            "revocation_statements": Self.stringArray(r.revocationStatements),
            "rollback_statements": Self.stringArray(r.rollbackStatements),
            "renew_statements": Self.stringArray(r.renewStatements),
            "default_ttl": .int(Int64(r.defaultTTL)),
            "max_ttl": .int(Int64(r.maxTTL)),
            "credential_type": .string(r.credentialType),
        ])
    }

    func writeRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        let f = req.fields
        return try await storage.withLock("role/" + name) {
            if try await storage.get("static-role/" + name) != nil {
                throw CofferError.invalid("Role and Static Role names must be unique")
            }
            var r = try await loadRole(name) ?? DatabaseRoleRecord(
                dbName: "", creationStatements: [], revocationStatements: [], rollbackStatements: [], renewStatements: [],
                defaultTTL: 0, maxTTL: 0, credentialType: "password")
            if f.has("db_name") { r.dbName = f.string("db_name") }
            guard !r.dbName.isEmpty else { throw CofferError.invalid("database name is required") }
            _ = try Self.checkName(r.dbName, what: "db_name")
            if f.has("credential_type") { r.credentialType = try Self.checkCredentialType(f.string("credential_type")) }
            try Self.refuseCredentialConfig(f)
            if f.has("creation_statements") { r.creationStatements = try Self.statementList(f["creation_statements"], field: "creation_statements") }
            if f.has("revocation_statements") { r.revocationStatements = try Self.statementList(f["revocation_statements"], field: "revocation_statements") }
            if f.has("rollback_statements") { r.rollbackStatements = try Self.statementList(f["rollback_statements"], field: "rollback_statements") }
            if f.has("renew_statements") { r.renewStatements = try Self.statementList(f["renew_statements"], field: "renew_statements") }
            guard !r.creationStatements.isEmpty else { throw CofferError.invalid("creation_statements are required") }
            if f.has("default_ttl") { r.defaultTTL = f.int("default_ttl") }
            if f.has("max_ttl") { r.maxTTL = f.int("max_ttl") }
            if r.maxTTL > 0 && r.defaultTTL > r.maxTTL {
                throw CofferError.invalid("default_ttl (\(r.defaultTTL)s) cannot be greater than max_ttl (\(r.maxTTL)s)")
            }
            _ = try await allowedConfig(r.dbName, role: name)
            try await storage.putCodable("role/" + name, r)
            return nil
        }
    }

    func deleteRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        try await storage.delete("role/" + name)
        return nil
    }

    // MARK: creds/:name

    /// Vault's token store keeps display names to `[A-Za-z0-9-]`; the same is enforced here
    /// so that a display name can never carry a quote into a statement.
    static func sanitizeDisplayName(_ s: String) -> String {
        String(s.unicodeScalars.map { c -> Character in
            (c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c) || c == "-")) ? Character(c) : "-"
        })
    }

    /// The lease bounds of a role: its TTLs, or the mount's when unset.
    func leaseBounds(_ r: DatabaseRoleRecord) -> (ttl: Int, maxTTL: Int) {
        let maxTTL = r.maxTTL > 0 ? (config.maxLeaseTTL > 0 ? min(r.maxTTL, config.maxLeaseTTL) : r.maxTTL) : config.maxLeaseTTL
        var ttl = r.defaultTTL > 0 ? r.defaultTTL : config.defaultLeaseTTL
        if maxTTL > 0 { ttl = min(ttl, maxTTL) }
        return (ttl, maxTTL)
    }

    func createCredentials(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        guard let role = try await loadRole(name) else { throw CofferError.invalid("unknown role: \(name)") }
        let c = try await allowedConfig(role.dbName, role: name)
        guard role.credentialType == "password" else {
            throw CofferError.invalid("unsupported credential_type: \"\(role.credentialType)\"")
        }
        guard !role.creationStatements.isEmpty else { throw CofferError.invalid("empty creation statements") }
        let plugin = try plugin(c.pluginName)
        let (ttl, maxTTL) = leaseBounds(role)

        let template = try UsernameTemplate(c.usernameTemplate.isEmpty ? plugin.defaultUsernameTemplate : c.usernameTemplate)
        let now = Date()
        let username = try template.render(UsernameTemplate.Metadata(
            displayName: Self.sanitizeDisplayName(req.token?.displayName ?? ""), roleName: name, now: now))
        guard !username.isEmpty else { throw CofferError.invalid("the username template produced an empty username") }
        guard username.utf8.count <= plugin.maxUsernameLength else {
            throw CofferError.invalid("generated username \"\(username)\" is longer than \(plugin.maxUsernameLength) characters, the database's limit: shorten username_template (| truncate \(plugin.maxUsernameLength))")
        }
        try Self.checkSafeName(username, what: "the generated username")
        let password = try await password(for: c)
        let expiration = GoTimeLayout.format(now.addingTimeInterval(TimeInterval(ttl) + Self.expirationSlack), layout: Self.expirationLayout)
        let create = Self.expand(role.creationStatements, [
            "name": username, "username": username, "password": password, "expiration": expiration,
        ])
        let pool = try await pool(role.dbName, c)
        let started = StartedFlag()
        do {
            try await pool.withConnection { conn in
                started.set()
                try conn.executeInTransaction(create)
            }
        } catch {
            // Leave nothing behind: the role's rollback statements, else the default revocation
            // (skipped when no statement ran: no connection could be had).
            let undo = Self.expand(role.rollbackStatements.isEmpty ? plugin.defaultRevocationStatements : role.rollbackStatements,
                                   ["name": username, "username": username])
            if !undo.isEmpty && started.isSet {
                _ = try? await pool.withConnection { try $0.executeInTransaction(undo) }
            }
            throw Self.failure(error, database: role.dbName, action: "failed to create the database user", secrets: [password])
        }
        return LogicalResponse(
            data: ["username": .string(username), "password": .string(password)],
            secret: SecretLease(ttl: ttl, maxTTL: maxTTL, renewable: true, internalData: [
                "username": .string(username),
                "role": .string(name),
                "db_name": .string(role.dbName),
                "revocation_statements": Self.stringArray(role.revocationStatements),
                "renew_statements": Self.stringArray(role.renewStatements),
            ]))
    }

    // MARK: leases

    /// Drops the lease's database user.
    ///
    /// Runs the role's current revocation statements when the role still exists on the
    /// same connection, else those stored in the lease when it was issued, else the
    /// plugin's default. A database that cannot be reached throws (the core retries). A
    /// connection configuration that no longer exists also throws, as in Vault: the user
    /// may still exist in a database Coffer can no longer reach, and a lease that ends
    /// irrevocable (listed, kept) says so, where succeeding would hide a live credential.
    /// Recreating the configuration lets a later retry succeed.
    public func revokeLease(_ lease: LeaseInfo) async throws {
        let d = lease.internalData
        guard let username = d["username"]?.stringValue, !username.isEmpty else {
            throw CofferError.internalError("the lease has no database username in its internal data")
        }
        try Self.checkSafeName(username, what: "the lease's username")
        let roleName = d["role"]?.stringValue ?? ""
        let role = roleName.isEmpty ? nil : try await loadRole(roleName)
        guard let dbName = d["db_name"]?.stringValue ?? role?.dbName, !dbName.isEmpty else {
            throw CofferError.internalError("the lease names no database configuration")
        }
        var statements = d["revocation_statements"]?.arrayValue?.compactMap(\.stringValue) ?? []
        if let role, role.dbName == dbName { statements = role.revocationStatements }
        guard let c = try await loadConfig(dbName) else {
            throw CofferError.invalid("cannot revoke database user \"\(username)\": database configuration \"\(dbName)\" no longer exists (recreate it to revoke this lease)")
        }
        let plugin = try plugin(c.pluginName)
        let revoke = Self.expand(statements.isEmpty ? plugin.defaultRevocationStatements : statements,
                                 ["name": username, "username": username])
        guard !revoke.isEmpty else { return }
        let pool = try await pool(dbName, c)
        do {
            try await pool.withConnection { try $0.executeInTransaction(revoke) }
        } catch {
            throw Self.failure(error, database: dbName, action: "failed to revoke database user \"\(username)\"", secrets: [])
        }
    }

    /// Extends the lease: `increment` (or the role's default TTL), never past the issue
    /// time plus the role's max TTL. Runs the role's renew statements (PostgreSQL without
    /// any: Vault's `ALTER ROLE ... VALID UNTIL`) with the new `{{expiration}}`.
    /// A new password: from the config's password policy (`sys/policies/password`), else
    /// Vault's default (20 characters of `[A-Za-z0-9-]`).
    func password(for c: DatabaseConfigRecord) async throws -> String {
        guard !c.passwordPolicy.isEmpty else { return SecretGenerator.password() }
        let p = try await config.generatePassword(c.passwordPolicy)
        guard Self.isSafePassword(p) else {
            throw CofferError.invalid("password policy \"\(c.passwordPolicy)\" produced a password with quotes, backslashes, ';' or control characters")
        }
        return p
    }

    /// Statements embed passwords in quotes as text: no quote, backslash, ';' or control.
    static func isSafePassword(_ p: String) -> Bool {
        !p.isEmpty && p.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F && !"'\"`\\;".unicodeScalars.contains($0) }
    }

    /// Only `creds/:name` issues leases (lease-count quotas reserve room for it alone).
    public func mayCreateLease(_ request: LogicalRequest) -> Bool {
        request.operation == .read && request.path.hasPrefix("creds/")
    }

    public func renewLease(_ lease: LeaseInfo, increment: Int) async throws -> SecretLease {
        let d = lease.internalData
        guard let username = d["username"]?.stringValue, !username.isEmpty,
              let roleName = d["role"]?.stringValue, !roleName.isEmpty else {
            throw CofferError.internalError("the lease has no database username or role in its internal data")
        }
        try Self.checkSafeName(username, what: "the lease's username")
        guard let role = try await loadRole(roleName) else {
            throw CofferError.invalid("role \"\(roleName)\" no longer exists; the lease cannot be renewed")
        }
        let dbName = d["db_name"]?.stringValue ?? role.dbName
        let (defaultTTL, maxTTL) = leaseBounds(role)
        var ttl = increment > 0 ? increment : defaultTTL
        let now = Date()
        if maxTTL > 0 {
            let remaining = Int(lease.issueTime.addingTimeInterval(TimeInterval(maxTTL)).timeIntervalSince(now).rounded(.down))
            guard remaining > 0 else { throw CofferError.invalid("the lease is past its max TTL and cannot be renewed") }
            ttl = min(ttl, remaining)
        }
        guard let c = try await loadConfig(dbName) else {
            throw CofferError.invalid("database configuration \"\(dbName)\" no longer exists; the lease cannot be renewed")
        }
        let plugin = try plugin(c.pluginName)
        let expiration = GoTimeLayout.format(now.addingTimeInterval(TimeInterval(ttl) + Self.expirationSlack), layout: Self.expirationLayout)
        let renew = Self.expand(role.renewStatements, ["name": username, "username": username, "expiration": expiration])
        let defaultRenew = renew.isEmpty && plugin.name == Self.postgreSQLPluginName
        if !renew.isEmpty || defaultRenew {
            let pool = try await pool(dbName, c)
            do {
                try await pool.withConnection { conn in
                    if defaultRenew {
                        // Coffer's own statement: the values go through the driver's quoting.
                        let sql = "ALTER ROLE \(try conn.quoteIdentifier(username)) VALID UNTIL \(try conn.quoteLiteral(expiration))"
                        try conn.executeInTransaction([sql])
                    } else {
                        try conn.executeInTransaction(renew)
                    }
                }
            } catch {
                throw Self.failure(error, database: dbName, action: "failed to renew database user \"\(username)\"", secrets: [])
            }
        }
        return SecretLease(ttl: ttl, maxTTL: maxTTL, renewable: true, internalData: lease.internalData)
    }

    /// Vault's PostgreSQL plugin extends `VALID UNTIL` on renewal when a role has no renew
    /// statements; `DatabasePlugin` has no default renew statements, so the engine knows this one.
    static let postgreSQLPluginName = "postgresql-database-plugin"

    // MARK: static-roles/:name

    func readStaticRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        guard let r = try await loadStaticRole(name) else { return nil }
        return LogicalResponse(data: [
            "db_name": .string(r.dbName),
            "username": .string(r.username),
            "rotation_period": .int(Int64(r.rotationPeriod)),
            "rotation_statements": Self.stringArray(r.rotationStatements),
            "credential_type": .string(r.credentialType),
            "last_vault_rotation": .string(RFC3339.format(r.lastRotationDate)),
        ])
    }

    func writeStaticRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        let f = req.fields
        return try await storage.withLock("static-role/" + name) {
            if try await storage.get("role/" + name) != nil {
                throw CofferError.invalid("Role and Static Role names must be unique")
            }
            let existing = try await loadStaticRole(name)
            var r = existing ?? StaticRoleRecord(dbName: "", username: "", rotationPeriod: 0, rotationStatements: [],
                                                 credentialType: "password", password: "", lastRotation: 0)
            if f.has("db_name") { r.dbName = f.string("db_name") }
            guard !r.dbName.isEmpty else { throw CofferError.invalid("database name is a required field") }
            _ = try Self.checkName(r.dbName, what: "db_name")
            let username = f.string("username")
            if let existing {
                if f.has("username") && username != existing.username {
                    throw CofferError.invalid("cannot update static account username")
                }
            } else {
                guard !username.isEmpty else { throw CofferError.invalid("username is a required field to create a static account") }
                try Self.checkSafeName(username, what: "username")
                r.username = username
            }
            if f.has("rotation_period") {
                let period = f.int("rotation_period")
                guard period >= Self.minimumRotationPeriod else {
                    throw CofferError.invalid("rotation_period must be \(Self.minimumRotationPeriod) seconds or more")
                }
                r.rotationPeriod = period
            } else if existing == nil {
                throw CofferError.invalid("rotation_period is required to create static accounts")
            }
            if f.has("rotation_statements") { r.rotationStatements = try Self.statementList(f["rotation_statements"], field: "rotation_statements") }
            if f.has("credential_type") { r.credentialType = try Self.checkCredentialType(f.string("credential_type")) }
            try Self.refuseCredentialConfig(f)
            let c = try await allowedConfig(r.dbName, role: name)
            if existing == nil {
                // Vault rotates right away: it proves the user exists and that Coffer can manage it.
                r = try await rotate(name, r, c)
            } else {
                try await storage.putCodable("static-role/" + name, r)
            }
            rotationBackoff.withLock { $0[name] = nil }
            config.wakePeriodic()
            return nil
        }
    }

    func deleteStaticRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        return try await storage.withLock("static-role/" + name) {
            try await storage.delete("static-role/" + name)
            rotationBackoff.withLock { $0[name] = nil }
            return nil
        }
    }

    func readStaticCredentials(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        guard var r = try await loadStaticRole(name) else { throw CofferError.invalid("unknown role: \(name)") }
        _ = try await allowedConfig(r.dbName, role: name)
        var warnings: [String] = []
        if r.nextRotation() <= Date() {
            var vanished = false
            do {
                let current = try await storage.withLock("static-role/" + name) { () -> StaticRoleRecord? in
                    guard let current = try await loadStaticRole(name) else { return nil }
                    guard current.nextRotation() <= Date() else { return current }
                    return try await rotate(name, current, try await allowedConfig(current.dbName, role: name))
                }
                if let current { r = current } else { vanished = true }
            } catch {
                let message = (error as? CofferError)?.message ?? "rotation failed"
                logger.warning("overdue static role rotation failed", metadata: ["role": .string(name), "error": .string(message)])
                warnings.append("the password is past its rotation period and could not be rotated: \(message)")
            }
            if vanished { throw CofferError.invalid("unknown role: \(name)") }
        }
        let ttl = max(0, Int(r.nextRotation().timeIntervalSinceNow.rounded(.down)))
        return LogicalResponse(data: [
            "username": .string(r.username),
            "password": .string(r.password),
            "last_vault_rotation": .string(RFC3339.format(r.lastRotationDate)),
            "rotation_period": .int(Int64(r.rotationPeriod)),
            "ttl": .int(Int64(ttl)),
        ], warnings: warnings)
    }

    func rotateRole(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.checkName(req.fields.string("name"))
        return try await storage.withLock("static-role/" + name) {
            guard let r = try await loadStaticRole(name) else { throw CofferError.invalid("no static role found for role name") }
            _ = try await rotate(name, r, try await allowedConfig(r.dbName, role: name))
            rotationBackoff.withLock { $0[name] = nil }
            config.wakePeriodic()
            return nil
        }
    }

    /// Sets a new password for a static role's user and stores it. The caller holds the
    /// role's lock. On a database failure nothing is stored: the old password stays valid.
    func rotate(_ name: String, _ role: StaticRoleRecord, _ c: DatabaseConfigRecord) async throws -> StaticRoleRecord {
        try Self.checkSafeName(role.username, what: "username")
        let plugin = try plugin(c.pluginName)
        let password = try await password(for: c)
        let statements = Self.expand(role.rotationStatements.isEmpty ? plugin.defaultRotationStatements : role.rotationStatements,
                                     ["name": role.username, "username": role.username, "password": password])
        guard !statements.isEmpty else { throw CofferError.invalid("no rotation statements to run") }
        let pool = try await pool(role.dbName, c)
        do {
            try await pool.withConnection { try $0.executeInTransaction(statements) }
        } catch {
            throw Self.failure(error, database: role.dbName, action: "failed to rotate the password of \"\(role.username)\"", secrets: [password, role.password])
        }
        var updated = role
        updated.password = password
        updated.lastRotation = Date().timeIntervalSince1970
        try await storage.putCodable("static-role/" + name, updated)
        return updated
    }

    /// One pass of the rotation schedule: rotates every static role that is due (skipping
    /// those backing off after a failure) and answers the seconds until the next one is due.
    func rotateDueStaticRoles() async -> Double {
        var next: Double = 60
        let names: [String]
        do {
            names = try await storage.list(prefix: "static-role/").filter { !$0.hasSuffix("/") }
        } catch {
            logger.debug("static role schedule: cannot list roles", metadata: ["error": .string("\(error)")])
            return Self.rotationRetryDelay
        }
        for name in names {
            if Task.isCancelled { return next }
            let now = Date()
            if let retry = rotationBackoff.withLock({ $0[name] }), retry > now {
                next = min(next, retry.timeIntervalSince(now))
                continue
            }
            do {
                guard let r = try await loadStaticRole(name) else { continue }
                let due = r.nextRotation()
                guard due <= now else {
                    next = min(next, due.timeIntervalSince(now))
                    continue
                }
                let rotated = try await storage.withLock("static-role/" + name) { () -> StaticRoleRecord? in
                    guard let current = try await loadStaticRole(name) else { return nil }
                    guard current.nextRotation() <= Date() else { return current }
                    return try await rotate(name, current, try await requireConfig(current.dbName))
                }
                if let rotated { next = min(next, rotated.nextRotation().timeIntervalSinceNow) }
            } catch {
                let message = (error as? CofferError)?.message ?? "rotation failed"
                logger.warning("scheduled static role rotation failed", metadata: ["role": .string(name), "error": .string(message)])
                rotationBackoff.withLock { $0[name] = Date().addingTimeInterval(Self.rotationRetryDelay) }
                next = min(next, Self.rotationRetryDelay)
            }
        }
        return max(1, next)
    }
}

// MARK: - helpers

extension DatabaseBackend {
    static func listResponse(_ keys: [String]) -> LogicalResponse? {
        keys.isEmpty ? nil : .list(keys)
    }

    static func stringArray(_ a: [String]) -> JSONValue { .array(a.map { .string($0) }) }

    /// Vault's `GenericNameRegex`: word characters, `-` and `.`, starting and ending with a
    /// word character.
    @discardableResult
    static func checkName(_ name: String, what: String = "name") throws(CofferError) -> String {
        func word(_ c: UInt8) -> Bool {
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F
        }
        let b = Array(name.utf8)
        guard let first = b.first, let last = b.last, word(first), word(last),
              b.allSatisfy({ word($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }), b.count <= 256 else {
            throw CofferError.invalid("invalid \(what) \"\(name.prefix(64))\": use letters, digits, '_', '-' and '.', starting and ending with a letter, digit or '_'")
        }
        return name
    }

    /// Refuses a user name that could break out of the quotes of a statement template.
    ///
    /// Creation, revocation and rotation statements are admin-written templates such as
    /// `ALTER ROLE "{{name}}" WITH PASSWORD '{{password}}'`: values are substituted as text,
    /// inside whatever quotes the template uses. Generated names and passwords only hold
    /// letters, digits, `-` and `_`; a name that comes from a request (a static role's
    /// `username`, the connection's own user) must not hold a quote, a backslash, a `;`
    /// or a control character, or it could end the quoted name and inject SQL.
    static func checkSafeName(_ s: String, what: String) throws(CofferError) {
        guard !s.isEmpty else { throw CofferError.invalid("\(what) is empty") }
        let unsafe = s.unicodeScalars.contains { c in
            c == "'" || c == "\"" || c == "`" || c == "\\" || c == ";" || c.value < 0x20 || c.value == 0x7F
        }
        guard !unsafe else {
            throw CofferError.invalid("\(what) must not contain quotes, backslashes, ';' or control characters: statements embed it between quotes")
        }
    }

    static func checkCredentialType(_ t: String) throws(CofferError) -> String {
        guard t == "password" else {
            throw CofferError.invalid("credential_type \"\(t.prefix(64))\" is not supported: only \"password\"")
        }
        return t
    }

    /// `credential_config` only configures what Coffer does not support yet (per-role
    /// password policies, RSA keys, certificates): refused rather than ignored.
    static func refuseCredentialConfig(_ f: FieldValues) throws(CofferError) {
        switch f["credential_config"] {
        case nil, .null?: return
        case .object(let o)? where o.isEmpty: return
        case .string(let s)? where s.isEmpty: return
        default: throw CofferError.invalid("credential_config is not supported yet (password policies and key credentials are not available)")
        }
    }

    /// A statements field: a list of strings or one string (Vault's `TypeStringSlice`).
    /// Empty entries are dropped.
    static func statementList(_ v: JSONValue?, field: String) throws(CofferError) -> [String] {
        switch v {
        case nil, .null?: return []
        case .string(let s)?: return s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? [] : [s]
        case .array(let a)?:
            var out: [String] = []
            for e in a {
                guard case .string(let s) = e else { throw CofferError.invalid("\(field) must be a list of strings") }
                if !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { out.append(s) }
            }
            return out
        default:
            throw CofferError.invalid("\(field) must be a string or a list of strings")
        }
    }

    /// Statement templates → SQL statements: each template is split as Vault does (a JSON
    /// array, or base64 of one, or text split on `;` outside quotes; a PostgreSQL block with
    /// `END` is kept whole), then `{{key}}` is replaced by each value.
    static func expand(_ templates: [String], _ values: [String: String]) -> [String] {
        var out: [String] = []
        for t in templates {
            for piece in splitStatements(t) {
                var s = piece
                for (k, v) in values { s = s.replacingOccurrences(of: "{{\(k)}}", with: v) }
                s = s.trimmingCharacters(in: .whitespacesAndNewlines)
                if !s.isEmpty { out.append(s) }
            }
        }
        return out
    }

    static func splitStatements(_ template: String) -> [String] {
        var text = template.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { return [] }
        if let data = Data(base64Encoded: text), let decoded = String(data: data, encoding: .utf8) { text = decoded }
        if text.hasPrefix("["), case .array(let a)? = try? JSONValue.parse(text) {
            let strings = a.compactMap(\.stringValue)
            if strings.count == a.count { return strings }
        }
        var pieces: [String] = []
        var current = String.UnicodeScalarView()
        var outside = String.UnicodeScalarView()
        var quote: Unicode.Scalar?
        var dollarTag: [Unicode.Scalar]?
        let s = Array(text.unicodeScalars)
        var i = 0
        while i < s.count {
            let c = s[i]
            if let tag = dollarTag {
                if c == "$", i + tag.count <= s.count, Array(s[i..<(i + tag.count)]) == tag {
                    current.append(contentsOf: tag)
                    i += tag.count
                    dollarTag = nil
                    continue
                }
            } else if let q = quote {
                if c == q { quote = nil }
            } else if c == "'" || c == "\"" || c == "`" {
                quote = c
            } else if c == "$", let end = s[(i + 1)...].firstIndex(of: "$"),
                      s[(i + 1)..<end].allSatisfy({ $0 == "_" || $0.properties.isAlphabetic || ("0"..."9").contains($0) }),
                      !(i > 0 && (s[i - 1].properties.isAlphabetic || ("0"..."9").contains(s[i - 1]))) {
                let tag = Array(s[i...end])
                current.append(contentsOf: tag)
                i = end + 1
                dollarTag = tag
                continue
            } else if c == ";" {
                pieces.append(String(current))
                current = String.UnicodeScalarView()
                outside.append(" ")
                i += 1
                continue
            } else {
                outside.append(c)
            }
            current.append(c)
            i += 1
        }
        pieces.append(String(current))
        // Vault keeps a PostgreSQL statement with an END keyword (outside literals) whole.
        let bare = " " + String(outside).uppercased() + " "
        var from = bare.startIndex
        while let r = bare.range(of: "END", range: from..<bare.endIndex) {
            if !bare[bare.index(before: r.lowerBound)].isLetterOrDigitOrUnderscore, !bare[r.upperBound].isLetterOrDigitOrUnderscore {
                return [text]
            }
            from = r.upperBound
        }
        return pieces
    }

    /// Replaces every occurrence of a secret in a message coming back from a database.
    static func scrub(_ message: String, secrets: [String]) -> String {
        var m = message
        for s in secrets where s.count >= 4 { m = m.replacingOccurrences(of: s, with: "[redacted]") }
        return m
    }

    static func databaseMessage(_ error: any Error) -> String {
        switch error {
        case let e as DatabaseError: e.message
        case let e as CofferError: e.message
        case is CancellationError: "the request was cancelled"
        default: "internal error running the database call"
        }
    }

    /// Maps a failure of a database call to a client-safe `CofferError`: unreachable →
    /// `.unavailable` (503), refused statement or bad configuration → `.invalid` (400).
    static func failure(_ error: any Error, database: String, action: String, secrets: [String]) -> CofferError {
        let message = scrub(databaseMessage(error), secrets: secrets)
        switch error {
        case let e as CofferError:
            return e
        case let e as DatabaseError:
            switch e.kind {
            case .unavailable: return CofferError(.unavailable, "database \"\(database)\" is unavailable: \(message)")
            case .statement: return CofferError.invalid("\(action): \(message)")
            case .configuration: return CofferError.invalid("database \"\(database)\" is misconfigured: \(message)")
            }
        default:
            return CofferError(.unavailable, "database \"\(database)\" is unavailable: \(message)")
        }
    }

    /// `*` matches any run of characters (Vault's `glob.Glob`).
    static func globMatch(_ pattern: String, _ value: String) -> Bool {
        guard pattern.contains("*") else { return pattern == value }
        let parts = pattern.split(separator: "*", omittingEmptySubsequences: false).map(String.init)
        var rest = Substring(value)
        guard rest.hasPrefix(parts[0]) else { return false }
        rest = rest.dropFirst(parts[0].count)
        for part in parts.dropFirst().dropLast() where !part.isEmpty {
            guard let r = rest.range(of: part) else { return false }
            rest = rest[r.upperBound...]
        }
        return parts.count == 1 ? rest.isEmpty : rest.hasSuffix(parts[parts.count - 1])
    }

    /// Where a literal password sits in a connection string (URL or DSN userinfo, or a
    /// `password=` parameter); nil when there is none or it is the `{{password}}` placeholder.
    static func passwordRange(in url: String) -> Range<String.Index>? { passwordRanges(in: url).first }

    static func passwordRanges(in url: String) -> [Range<String.Index>] {
        var ranges: [Range<String.Index>] = []
        let query = url.firstIndex(of: "?") ?? url.endIndex
        let head = url[..<query]
        let start = head.range(of: "://")?.upperBound ?? head.startIndex
        if let at = head[start...].lastIndex(of: "@"), let colon = head[start..<at].firstIndex(of: ":") {
            let r = head.index(after: colon)..<at
            if !r.isEmpty && url[r] != "{{password}}" { ranges.append(r) }
        }
        var searchFrom = url.startIndex
        while let key = url.range(of: "password=", options: .caseInsensitive, range: searchFrom..<url.endIndex) {
            searchFrom = key.upperBound
            if key.lowerBound > url.startIndex {
                let before = url[url.index(before: key.lowerBound)]
                guard before == "?" || before == "&" || before == " " || before == ";" else { continue }
            }
            var end = key.upperBound
            if end < url.endIndex, url[end] == "'" {
                end = url[url.index(after: end)...].firstIndex(of: "'").map { url.index(after: $0) } ?? url.endIndex
            } else {
                end = url[key.upperBound...].firstIndex(where: { $0 == "&" || $0 == " " || $0 == ";" }) ?? url.endIndex
            }
            let r = key.upperBound..<end
            if !r.isEmpty && url[r] != "{{password}}" && url[r] != "'{{password}}'",
               !ranges.contains(where: { $0.overlaps(r) }) {
                ranges.append(r)
            }
        }
        return ranges.sorted { $0.lowerBound < $1.lowerBound }
    }

    /// The connection string with any literal password replaced by `xxxxx` (Go's `URL.Redacted`).
    static func redactConnectionURL(_ url: String) -> String {
        var u = url
        for r in passwordRanges(in: url).reversed() { u.replaceSubrange(r, with: "xxxxx") }
        return u
    }
}

extension Character {
    fileprivate var isLetterOrDigitOrUnderscore: Bool { isLetter || isNumber || self == "_" }
}

// MARK: - concurrency helpers

/// The connection pools of one mount, by configuration name and record id.
actor PoolRegistry {
    private var pools: [String: (id: String, pool: DatabaseConnectionPool)] = [:]

    func pool(_ name: String, id: String) -> DatabaseConnectionPool? {
        guard let entry = pools[name], entry.id == id else { return nil }
        return entry.pool
    }

    /// Installs `pool` for `id` unless a pool for that id is already there (then answers it
    /// and leaves `pool` unused) or `replacing`. Answers the pool in use and the one it replaced.
    func install(_ name: String, id: String, _ pool: DatabaseConnectionPool, replacing: Bool = false) -> (DatabaseConnectionPool, replaced: DatabaseConnectionPool?) {
        if !replacing, let entry = pools[name], entry.id == id { return (entry.pool, nil) }
        let old = pools[name]?.pool
        pools[name] = (id, pool)
        return (pool, old === pool ? nil : old)
    }

    func remove(_ name: String) -> DatabaseConnectionPool? {
        pools.removeValue(forKey: name)?.pool
    }

    func removeAll() -> [DatabaseConnectionPool] {
        defer { pools = [:] }
        return pools.values.map(\.pool)
    }
}

/// Records that a closure handed to a connection pool started running.
final class StartedFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}

