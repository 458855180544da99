import CofferSDK
import Foundation

/// The `transit` secret engine (Vault's API): named keys per namespace, stored behind the
/// barrier like everything else, and encryption, signing and HMACs with them without the
/// key leaving Coffer. Keys here (`keys/…`, config, rotate, trim, export, backup, restore);
/// the operations in `TransitBackend+Crypto.swift`.
public struct TransitBackend: LogicalBackend {
    let storage: StorageView
    let clock: WallClock
    let keys = DecodedRecords<TransitKey>()

    public static let factory: BackendFactory = { c in TransitBackend(storage: c.storage, clock: c.clock) }

    public var backendHelp: String { "The transit backend handles cryptographic functions on data in-transit." }
    public var runsPeriodicWork: Bool { true }

    static let nameField = Field("name", .string, description: "Name of the key.")

    public static let routes: [Route<TransitBackend>] = [
        Route("keys/?", fields: [Field("after", .string), Field("limit", .int)], operations: [.list: { try await $0.listKeys($1) }],
              summary: "Manage named encryption keys."),
        Route("keys/:name", fields: [
            nameField, Field("type", .string, default: "aes256-gcm96", description: "The type of key to create."),
            Field("derived", .bool), Field("convergent_encryption", .bool), Field("exportable", .bool),
            Field("allow_plaintext_backup", .bool), Field("auto_rotate_period", .duration), Field("key_size", .int),
            Field("context", .string),
        ], operations: [
            .read: { try await $0.readKey($1) }, .update: { try await $0.createKey($1) }, .delete: { try await $0.deleteKey($1) },
        ], summary: "Manage named encryption keys."),
        Route("keys/:name/config", fields: [
            nameField, Field("min_decryption_version", .int), Field("min_encryption_version", .int), Field("deletion_allowed", .bool),
            Field("exportable", .bool), Field("allow_plaintext_backup", .bool), Field("auto_rotate_period", .duration),
        ], operations: [.update: { try await $0.configKey($1) }], summary: "Configure a named encryption key."),
        Route("keys/:name/rotate", fields: [nameField], operations: [.update: { try await $0.rotateKey($1) }], summary: "Rotate named encryption key."),
        Route("keys/:name/trim", fields: [nameField, Field("min_available_version", .int)], operations: [.update: { try await $0.trimKey($1) }],
              summary: "Trim key versions of a named key."),
        Route("config/keys", fields: [Field("disable_upsert", .bool)], operations: [
            .read: { b, _ in try await b.readKeysConfig() }, .update: { try await $0.writeKeysConfig($1) },
        ], summary: "Configuration common across all keys."),
        Route("cache-config", fields: [Field("size", .int)], operations: [
            .read: { _, _ in LogicalResponse(data: ["size": 0]) },
            .update: { _, r in
                guard r.fields.int("size") == 0 || r.fields.int("size") >= 10 else { throw CofferError.invalid("size must be 0 or a value greater or equal to 10") }
                return LogicalResponse(data: ["size": .int(Int64(r.fields.int("size")))])
            },
        ], summary: "Configures a new cache of the specified size (keys are cached by their stored form)."),
        Route("export/:type/:name", fields: [Field("type", .string), nameField, Field("format", .string)],
              operations: [.read: { try await $0.export($1, version: nil) }], summary: "Export named encryption or signing key."),
        Route("export/:type/:name/:version", fields: [Field("type", .string), nameField, Field("version", .string), Field("format", .string)],
              operations: [.read: { try await $0.export($1, version: $1.fields.string("version")) }], summary: "Export named encryption or signing key."),
        Route("backup/:name", fields: [nameField], operations: [.read: { try await $0.backup($1) }], summary: "Backup the named key."),
        Route("restore", fields: [Field("backup", .string), Field("force", .bool)], operations: [.update: { try await $0.restore($1, name: nil) }],
              summary: "Restore the named key."),
        Route("restore/:name", fields: [nameField, Field("backup", .string), Field("force", .bool)],
              operations: [.update: { try await $0.restore($1, name: $1.fields.string("name")) }], summary: "Restore the named key."),
    ] + cryptoRoutes

    // MARK: keys

    static func keyName(_ req: LogicalRequest) throws -> String { try checkName(req.fields.string("name")) }

    /// Vault's key names (`\\w(([\\w-.]+)?\\w)?`).
    static func checkName(_ name: String) throws -> String {
        guard !name.isEmpty else { throw CofferError.invalid("missing name") }
        let ok = name.utf8.count <= 256 && name.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || $0 == "_" || $0 == "-" || $0 == "." }
            && !name.hasPrefix(".") && !name.hasPrefix("-") && !name.hasSuffix(".") && !name.hasSuffix("-")
        guard ok else { throw CofferError.invalid("invalid key name \"\(name.prefix(64))\"") }
        return name
    }

    func key(_ name: String) async throws -> TransitKey? { try await keys.get(storage, "policy/" + name) }

    /// Changes a key under its lock: reads it, lets `body` change it, stores it.
    func update(_ name: String, missing: String = "key not found", _ body: (inout TransitKey) async throws -> Void) async throws -> TransitKey {
        try await storage.withLock("policy/" + name) {
            guard var k = try await key(name) else { throw CofferError.invalid(missing) }
            try await body(&k)
            try await storage.putCodable("policy/" + name, k)
            return k
        }
    }

    func listKeys(_ req: LogicalRequest) async throws -> LogicalResponse? {
        .list(try await storage.list(prefix: "policy/"), after: req.fields.string("after"), limit: req.fields.int("limit"))
    }

    func keyData(_ k: TransitKey) -> LogicalResponse {
        var d: [String: JSONValue] = [
            "name": .string(k.name), "type": .string(k.type.rawValue), "derived": .bool(k.derived),
            "deletion_allowed": .bool(k.deletionAllowed), "exportable": .bool(k.exportable),
            "allow_plaintext_backup": .bool(k.allowPlaintextBackup), "imported_key": false, "soft_deleted": false,
            "min_available_version": .int(Int64(k.minAvailableVersion)), "min_decryption_version": .int(Int64(k.minDecryptionVersion)),
            "min_encryption_version": .int(Int64(k.minEncryptionVersion)), "latest_version": .int(Int64(k.latestVersion)),
            "supports_encryption": .bool(k.type.supportsEncryption), "supports_decryption": .bool(k.type.supportsEncryption),
            "supports_signing": .bool(k.type.supportsSigning), "supports_derivation": .bool(k.type.supportsDerivation),
            "auto_rotate_period": .int(Int64(k.autoRotatePeriod)),
        ]
        if k.keySize > 0 { d["key_size"] = .int(Int64(k.keySize)) }
        if k.derived {
            d["kdf"] = "hkdf_sha256"
            d["convergent_encryption"] = .bool(k.convergent)
            if k.convergent { d["convergent_encryption_version"] = -1 }
        }
        if k.type != .hmac {
            var versions: [String: JSONValue] = [:]
            for v in k.shownVersions {
                guard let kv = k.version(v) else { continue }
                if k.type.asymmetric {
                    let name: String = switch k.type { case .p256: "P-256"; case .p384: "P-384"; case .p521: "P-521"; default: k.type.rawValue }
                    versions[String(v)] = [
                        "name": .string(name), "public_key": .string(k.publicKey(kv)), "certificate_chain": "",
                        "creation_time": .string(RFC3339.format(Date(timeIntervalSince1970: kv.created))),
                    ]
                } else {
                    versions[String(v)] = .int(Int64(kv.created))
                }
            }
            d["keys"] = .object(versions)
        }
        return LogicalResponse(data: d)
    }

    func readKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        guard let k = try await key(Self.keyName(req)) else { return nil }
        return keyData(k)
    }

    /// A new key of `type` (version 1 made now), with Vault's checks.
    func makeKey(name: String, type raw: String, derived: Bool, convergent: Bool, exportable: Bool = false,
                 allowPlaintextBackup: Bool = false, autoRotatePeriod: Int = 0, keySize: Int = 0) async throws -> TransitKey {
        if autoRotatePeriod != 0 && autoRotatePeriod < 3600 { throw CofferError.invalid("auto rotate period must be 0 to disable or at least an hour") }
        if convergent && !derived { throw CofferError.invalid("convergent encryption requires derivation to be enabled") }
        guard let type = TransitKeyType(rawValue: raw) else { throw CofferError.invalid("unknown key type \(raw.prefix(32))") }
        if keySize != 0 {
            guard type == .hmac else { throw CofferError.invalid("key_size is not valid for algorithm \(type.rawValue)") }
            guard (32...512).contains(keySize) else { throw CofferError.invalid("invalid key_size \(keySize)") }
        }
        if type == .hmac && keySize == 0 { throw CofferError.invalid("invalid key size for HMAC key, must be between 32 and 512 bytes") }
        if (derived || convergent) && !type.supportsDerivation {
            throw CofferError.invalid("key derivation and convergent encryption not supported for keys of type \(type.rawValue)")
        }
        if convergent && type == .ed25519 { throw CofferError.invalid("convergent encryption not supported for keys of type ed25519") }
        var k = TransitKey(name: name, type: type)
        k.derived = derived
        k.convergent = convergent
        k.exportable = exportable
        k.allowPlaintextBackup = allowPlaintextBackup
        k.autoRotatePeriod = autoRotatePeriod
        k.keySize = keySize
        try await k.rotate(now: clock.now())
        return k
    }

    func createKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.keyName(req)
        let f = req.fields
        let k = try await storage.withLock("policy/" + name) { () -> TransitKey in
            if let existing = try await key(name) { return existing }  // Vault: an existing key is answered as it is
            let k = try await makeKey(name: name, type: f.string("type").isEmpty ? "aes256-gcm96" : f.string("type"), derived: f.bool("derived"),
                                      convergent: f.bool("convergent_encryption"), exportable: f.bool("exportable"),
                                      allowPlaintextBackup: f.bool("allow_plaintext_backup"), autoRotatePeriod: f.int("auto_rotate_period"), keySize: f.int("key_size"))
            try await storage.putCodable("policy/" + name, k)
            return k
        }
        return keyData(k)
    }

    func deleteKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.keyName(req)
        try await storage.withLock("policy/" + name) {
            guard let k = try await key(name) else { throw CofferError.invalid("error deleting policy \(name): could not delete key; not found") }
            guard k.deletionAllowed else { throw CofferError.invalid("error deleting policy \(name): deletion is not allowed for this key") }
            try await storage.delete("policy/" + name)
        }
        return nil
    }

    func configKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.keyName(req)
        let f = req.fields
        var warnings: [String] = []
        let k = try await update(name, missing: "no existing key named \(name) could be found") { k in
            if f.has("min_decryption_version") {
                var v = f.int("min_decryption_version")
                guard v >= 0 else { throw CofferError.invalid("min decryption version cannot be negative") }
                if v == 0 {
                    v = 1
                    warnings.append("since Vault 0.3 (prior to the OpenBao fork), transit key numbering starts at 1; forcing minimum to 1")
                }
                guard v <= k.latestVersion else { throw CofferError.invalid("cannot set min decryption version of \(v), latest key version is \(k.latestVersion)") }
                k.minDecryptionVersion = v
            }
            if f.has("min_encryption_version") {
                let v = f.int("min_encryption_version")
                guard v >= 0 else { throw CofferError.invalid("min encryption version cannot be negative") }
                guard v <= k.latestVersion else { throw CofferError.invalid("cannot set min encryption version of \(v), latest key version is \(k.latestVersion)") }
                k.minEncryptionVersion = v
            }
            if k.minEncryptionVersion > 0 && k.minEncryptionVersion < k.minDecryptionVersion {
                throw CofferError.invalid("cannot set min encryption/decryption values; min encryption version of \(k.minEncryptionVersion) must be greater than or equal to min decryption version of \(k.minDecryptionVersion)")
            }
            if f.has("deletion_allowed") { k.deletionAllowed = f.bool("deletion_allowed") }
            // Once on, these stay on (Vault ignores turning them off).
            if f.bool("exportable") { k.exportable = true }
            if f.bool("allow_plaintext_backup") { k.allowPlaintextBackup = true }
            if f.has("auto_rotate_period") {
                let p = f.int("auto_rotate_period")
                if p != 0 && p < 3600 { throw CofferError.invalid("auto rotate period must be 0 to disable or at least an hour") }
                k.autoRotatePeriod = p
            }
            if k.minAvailableVersion > 0 {
                if k.minAvailableVersion > k.minEncryptionVersion { throw CofferError.invalid("min encryption version should not be less than min available version") }
                if k.minAvailableVersion > k.minDecryptionVersion { throw CofferError.invalid("min decryption version should not be less then min available version") }
            }
        }
        var r = keyData(k)
        r.warnings = warnings
        return r
    }

    func rotateKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let k = try await update(Self.keyName(req)) { k in try await k.rotate(now: clock.now()) }
        return keyData(k)
    }

    func trimKey(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        let k = try await update(Self.keyName(req), missing: "invalid key name") { k in
            guard f.has("min_available_version") else { throw CofferError.invalid("missing min_available_version") }
            let v = f.int("min_available_version")
            guard v >= k.minAvailableVersion else { throw CofferError.invalid("minimum available version cannot be decremented") }
            guard k.minEncryptionVersion != 0 else { throw CofferError.invalid("minimum available version cannot be set when minimum encryption version is not set") }
            guard k.minDecryptionVersion != 0 else { throw CofferError.invalid("minimum available version cannot be set when minimum decryption version is not set") }
            guard v <= k.minEncryptionVersion else { throw CofferError.invalid("minimum available version cannot be greater than minmum encryption version") }
            guard v <= k.minDecryptionVersion else { throw CofferError.invalid("minimum available version cannot be greater than minimum decryption version") }
            guard v >= 0 else { throw CofferError.invalid("minimum available version cannot be negative") }
            guard v > 0 else { throw CofferError.invalid("minimum available version should be positive") }
            for old in 1..<v { k.versions[String(old)] = nil }
            k.minAvailableVersion = v
        }
        return keyData(k)
    }

    func readKeysConfig() async throws -> LogicalResponse? {
        let v = try await storage.getJSON("config/keys")
        return LogicalResponse(data: ["disable_upsert": .bool(v?["disable_upsert"]?.boolValue ?? false)])
    }

    func writeKeysConfig(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let v = req.fields.bool("disable_upsert")
        try await storage.putJSON("config/keys", ["disable_upsert": .bool(v)])
        return LogicalResponse(data: ["disable_upsert": .bool(v)])
    }

    /// Automatic rotation, on the active node: a key whose newest version is older than its
    /// `auto_rotate_period` gets a new one.
    public func periodic() async -> Duration? {
        let now = clock.now()
        for name in (try? await storage.list(prefix: "policy/")) ?? [] where !name.hasSuffix("/") {
            guard let k = try? await key(name), k.autoRotatePeriod > 0, let latest = k.version(k.latestVersion),
                  now > latest.created + Double(k.autoRotatePeriod) else { continue }
            _ = try? await update(name) { k in
                if let l = k.version(k.latestVersion), now > l.created + Double(k.autoRotatePeriod) { try await k.rotate(now: now) }
            }
        }
        return .seconds(60)
    }
}
