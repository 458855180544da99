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

    public func periodic() async -> Duration? {
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
}
