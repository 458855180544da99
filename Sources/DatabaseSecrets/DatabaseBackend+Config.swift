import CofferSDK
import Foundation
import Logging
import Synchronization

/// `config/:name`, `reset/:name`, `rotate-root/:name`: connections to databases.
extension DatabaseBackend {
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
            "max_connection_lifetime": .string(GoDuration.format(c.maxConnectionLifetime)),
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
}
