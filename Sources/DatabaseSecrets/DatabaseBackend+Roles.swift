import CofferSDK
import Foundation
import Logging
import Synchronization

/// `roles/:name` and `creds/:name`: dynamic roles and the users they create.
extension DatabaseBackend {
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
}
