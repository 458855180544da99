import CofferSDK
import Foundation
import Logging
import Synchronization

/// `static-roles/:name`, `static-creds/:name`, `rotate-role/:name` and the rotation schedule.
extension DatabaseBackend {
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
