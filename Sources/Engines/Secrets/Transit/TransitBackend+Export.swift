import _CryptoExtras
import CofferSDK
import Crypto
import Foundation

/// `export/:type/:name(/:version)`, `backup/:name` and `restore(/:name)`: key material out
/// of Coffer, only where the key allows it (`exportable`, `allow_plaintext_backup`).
extension TransitBackend {
    func export(_ req: LogicalRequest, version: String?) async throws -> LogicalResponse? {
        let f = req.fields
        let kind = f.string("type")
        guard ["encryption-key", "signing-key", "hmac-key", "public-key"].contains(kind) else {
            throw CofferError.invalid("invalid export type: \(kind.prefix(32))")
        }
        let format = f.string("format")
        guard ["", "raw", "der", "pem"].contains(format) else { throw CofferError.invalid("invalid format: \(format.prefix(16))") }
        guard let k = try await key(Self.keyName(req)) else { return nil }
        if kind != "public-key" && !k.exportable { throw CofferError.invalid("private key material is not exportable") }
        if kind == "encryption-key" && !k.type.supportsEncryption { throw CofferError.invalid("encryption not supported for the key") }
        if kind == "signing-key" && !k.type.supportsSigning { throw CofferError.invalid("signing not supported for the key") }
        if kind == "public-key" && !k.type.asymmetric { throw CofferError.invalid("unknown key type \(k.type.rawValue) for export type \(kind)") }
        var wanted = Array(k.shownVersions)
        if let version {
            let v: Int? = version == "latest" ? k.latestVersion : Int(version.hasPrefix("v") ? String(version.dropFirst()) : version)
            guard let v, v > 0 else { throw CofferError.invalid("invalid key version") }
            guard v >= k.minDecryptionVersion else { throw CofferError.invalid("version for export is below minimum decryption version") }
            guard k.version(v) != nil else { throw CofferError.invalid("version does not exist or cannot be found") }
            wanted = [v]
        }
        var out: [String: JSONValue] = [:]
        for v in wanted {
            guard let kv = k.version(v) else { continue }
            out[String(v)] = .string(try exported(k, kv, kind: kind, format: format))
        }
        return LogicalResponse(data: ["name": .string(k.name), "type": .string(k.type.rawValue), "keys": .object(out)])
    }

    func exported(_ k: TransitKey, _ kv: TransitKeyVersion, kind: String, format: String) throws -> String {
        let b64 = { (b: [UInt8]) in Data(b).base64EncodedString() }
        switch (kind, k.type) {
        case ("hmac-key", _): return b64(k.type == .hmac ? kv.key : kv.hmacKey)
        case ("encryption-key", let t) where t.symmetric: return b64(kv.key)
        case ("signing-key", .ed25519):
            let priv = try Curve25519.Signing.PrivateKey(rawRepresentation: kv.key)
            return b64(kv.key + Array(priv.publicKey.rawRepresentation))  // Go's 64-byte seed‖public key
        case ("public-key", .ed25519): return k.publicKey(kv)
        case ("public-key", _): return k.publicKey(kv).trimmingCharacters(in: .whitespacesAndNewlines)
        case ("signing-key", .p256): return try P256.Signing.PrivateKey(rawRepresentation: kv.key).pemRepresentation
        case ("signing-key", .p384): return try P384.Signing.PrivateKey(rawRepresentation: kv.key).pemRepresentation
        case ("signing-key", .p521): return try P521.Signing.PrivateKey(rawRepresentation: kv.key).pemRepresentation
        case (_, let t) where t.rsa:
            if format == "raw" { throw CofferError.invalid("unknown key format for rsa key; supported values are ``, `der`, or `pem`") }
            return try TransitCrypto.rsaPrivate(kv).pemRepresentation + "\n"
        default:
            throw CofferError.invalid("unknown key type \(k.type.rawValue) for export type \(kind)")
        }
    }

    func backup(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let name = try Self.keyName(req)
        guard let k = try await key(name) else { throw CofferError.invalid("key \"\(name)\" not found") }
        guard k.exportable else { throw CofferError.invalid("exporting is disallowed on the policy") }
        guard k.allowPlaintextBackup else { throw CofferError.invalid("plaintext backup is disallowed on the policy") }
        let doc = try StoredJSON.encoder.encode(["policy": k])
        return LogicalResponse(data: ["backup": .string(doc.base64EncodedString())])
    }

    func restore(_ req: LogicalRequest, name asked: String?) async throws -> LogicalResponse? {
        let f = req.fields
        guard !f.string("backup").isEmpty else { throw CofferError.invalid("'backup' must be supplied") }
        guard let raw = Data(base64Encoded: f.string("backup")),
              let doc = try? StoredJSON.decoder.decode([String: TransitKey].self, from: raw), var k = doc["policy"] else {
            throw CofferError.invalid("failed to decode the backup: not a transit key backup")
        }
        if let asked, !asked.isEmpty {
            guard !asked.contains("/") else { throw CofferError.invalid("key names cannot be paths") }
            k.name = try Self.checkName(asked)
        } else {
            k.name = try Self.checkName(k.name)
        }
        // A backup is input: nothing in it may hold a version outside what it holds.
        guard k.latestVersion > 0, k.version(k.latestVersion) != nil, (1...k.latestVersion).contains(k.minDecryptionVersion),
              (0...k.latestVersion).contains(k.minEncryptionVersion), (0...k.minDecryptionVersion).contains(k.minAvailableVersion),
              k.versions.keys.allSatisfy({ Int($0).map { (1...k.latestVersion).contains($0) } ?? false }),
              k.versions.values.allSatisfy({ Self.materialFits(k.type, $0) }) else {
            throw CofferError.invalid("failed to decode the backup: its versions are inconsistent")
        }
        let name = k.name
        try await storage.withLock("policy/" + name) {
            if try await key(name) != nil && !f.bool("force") { throw CofferError.invalid("key \"\(name)\" already exists") }
            try await storage.putCodable("policy/" + name, k)
        }
        return nil
    }

    /// Whether a restored version's key bytes are a key of its type (a backup is input).
    static func materialFits(_ type: TransitKeyType, _ kv: TransitKeyVersion) -> Bool {
        guard kv.hmacKey.count >= 16 else { return false }
        switch type {
        case .aes128: return kv.key.count == 16
        case .aes256, .chacha: return kv.key.count == 32
        case .hmac: return (32...512).contains(kv.key.count)
        case .ed25519: return (try? Curve25519.Signing.PrivateKey(rawRepresentation: kv.key)) != nil
        case .p256: return (try? P256.Signing.PrivateKey(rawRepresentation: kv.key)) != nil
        case .p384: return (try? P384.Signing.PrivateKey(rawRepresentation: kv.key)) != nil
        case .p521: return (try? P521.Signing.PrivateKey(rawRepresentation: kv.key)) != nil
        case .rsa2048, .rsa3072, .rsa4096: return (try? _RSA.Signing.PrivateKey(derRepresentation: kv.key)) != nil
        }
    }
}
