import CofferSDK
import Foundation

/// Where and how a database plugin connects: the validated `config/:name` fields.
///
/// `connectionURL` may hold `{{username}}` and `{{password}}`, which the plugin replaces
/// with `username` / `password` (URL-escaped) before connecting; the password never
/// appears in an error or a log line.
struct DatabaseConnectionSettings: Sendable, Equatable {
    var connectionURL: String
    var username: String
    var password: String
    /// Seconds a connect or a statement may take before it fails.
    var timeout: Int = 10
}

/// A failure talking to a database. `message` is the server's or client library's text
/// with every secret of the connection removed; it is safe to return to a client.
struct DatabaseError: Error, CustomStringConvertible, Sendable {
    enum Kind: Sendable {
        /// Could not connect, lost the connection, or timed out: the database is down or
        /// unreachable (a retry later may succeed).
        case unavailable
        /// The server refused a statement (syntax, permissions, constraint).
        case statement
        /// The configuration cannot work (bad URL, unknown option).
        case configuration
    }

    var kind: Kind
    var message: String
    var description: String { message }
}

/// One open connection. Every throwing call throws `DatabaseError` (not declared as typed
/// throws: Swift 6.3's optimizer crashes on reabstraction thunks of typed-throwing
/// existential methods). Calls block; the engine runs them on its own threads, never on an
/// event loop, and uses a connection from one thread at a time.
protocol DatabaseConnection: AnyObject {
    /// Runs one SQL statement (no result rows needed).
    func execute(_ sql: String) throws
    /// Runs statements in one transaction when the database supports transactional DDL
    /// (PostgreSQL); on MySQL/MariaDB (DDL commits implicitly) runs them in order. On the
    /// first failure, rolls back what the transaction covers and throws.
    func executeInTransaction(_ statements: [String]) throws
    /// Runs a query and answers the first column of every row as text (NULL → nil).
    func queryColumn(_ sql: String) throws -> [String?]
    /// The identifier quoted and escaped by the client library (`"a""b"` / `` `a``b` ``).
    func quoteIdentifier(_ name: String) throws -> String
    /// The string literal quoted and escaped by the client library (`'it''s'`).
    func quoteLiteral(_ value: String) throws -> String
    /// Whether the connection still answers (a cheap ping).
    func isAlive() -> Bool
    func close()
}

/// A database plugin (`plugin_name` in `config/:name`).
protocol DatabasePlugin: Sendable {
    /// Vault's plugin name: `postgresql-database-plugin`, `mysql-database-plugin`.
    var name: String { get }
    /// The longest user name the database accepts (PostgreSQL 63, MySQL/MariaDB 32).
    var maxUsernameLength: Int { get }
    /// Vault's default `username_template` for this plugin.
    var defaultUsernameTemplate: String { get }
    /// Statements run to revoke a dynamic user when the role has no `revocation_statements`
    /// (`{{name}}` is the user name, already safe to embed as the plugin's statements do).
    var defaultRevocationStatements: [String] { get }
    /// Statements that set a user's password for static roles and `rotate-root` when none
    /// are configured; `{{name}}` and `{{password}}` substituted.
    var defaultRotationStatements: [String] { get }
    /// Opens a connection (blocking). Throws `.configuration` for a URL the plugin cannot
    /// use and `.unavailable` when the server cannot be reached or refuses the login.
    func connect(_ settings: DatabaseConnectionSettings) throws -> any DatabaseConnection
    /// Where `connect` would go: TCP hosts and unix socket paths (for the namespace's
    /// `OutboundPolicy`). Throws `.configuration` for a URL the plugin cannot use.
    func targets(_ settings: DatabaseConnectionSettings) throws -> [DatabaseTarget]
}

/// One place a plugin connects to.
enum DatabaseTarget: Sendable, Equatable {
    case tcp(host: String)
    case unixSocket(path: String)
}

extension OutboundPolicy {
    /// Checks every target of a connection; the refusal is a configuration error with the
    /// policy's one text.
    func check(_ targets: [DatabaseTarget]) throws {
        do {
            for t in targets {
                switch t {
                case .tcp(let host): try check(host: host)
                case .unixSocket: try checkUnixSocket()
                }
            }
        } catch let e as CofferError {
            throw DatabaseError(kind: .configuration, message: e.message)
        }
    }
}
