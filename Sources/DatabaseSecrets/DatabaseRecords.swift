import CofferSDK
import Foundation
import Logging
import Synchronization

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
        allowedRoles.contains { $0 == "*" || Glob.match($0, role) }
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
