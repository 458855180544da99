import CofferSDK
import Foundation
import Logging
import Synchronization

/// The leases of the users `creds/:name` created: renewal and revocation.
extension DatabaseBackend {
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
}
