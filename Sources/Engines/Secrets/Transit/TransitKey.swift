import _CryptoExtras
import CofferSDK
import Crypto
import Foundation

/// The key types of transit, with Vault's names.
enum TransitKeyType: String, Codable, Sendable, CaseIterable {
    case aes128 = "aes128-gcm96", aes256 = "aes256-gcm96", chacha = "chacha20-poly1305"
    case ed25519, p256 = "ecdsa-p256", p384 = "ecdsa-p384", p521 = "ecdsa-p521"
    case rsa2048 = "rsa-2048", rsa3072 = "rsa-3072", rsa4096 = "rsa-4096"
    case hmac

    var symmetric: Bool { self == .aes128 || self == .aes256 || self == .chacha }
    var rsa: Bool { self == .rsa2048 || self == .rsa3072 || self == .rsa4096 }
    var supportsEncryption: Bool { symmetric || rsa }
    var supportsSigning: Bool { self == .ed25519 || self == .p256 || self == .p384 || self == .p521 || rsa }
    var supportsDerivation: Bool { symmetric || self == .ed25519 }
    var asymmetric: Bool { supportsSigning }
}

/// One version of a key: its private material (behind the barrier), an HMAC key of its own
/// (what `hmac/` uses, whatever the key's type), and when it was made.
struct TransitKeyVersion: Codable, Sendable {
    /// Symmetric key bytes; the raw private key (Ed25519, EC) or its PKCS#1 DER (RSA).
    var key: [UInt8]
    var hmacKey: [UInt8]
    var created: Double

    static func make(_ type: TransitKeyType, hmacSize: Int, now: Double) async throws -> TransitKeyVersion {
        let material: [UInt8]
        switch type {
        case .aes128: material = SecureRandom.bytes(16)
        case .aes256, .chacha: material = SecureRandom.bytes(32)
        case .hmac: material = SecureRandom.bytes(hmacSize)
        case .ed25519: material = Array(Curve25519.Signing.PrivateKey().rawRepresentation)
        case .p256: material = Array(P256.Signing.PrivateKey().rawRepresentation)
        case .p384: material = Array(P384.Signing.PrivateKey().rawRepresentation)
        case .p521: material = Array(P521.Signing.PrivateKey().rawRepresentation)
        case .rsa2048, .rsa3072, .rsa4096:
            let bits = type == .rsa2048 ? 2048 : type == .rsa3072 ? 3072 : 4096
            material = try await CPUWork.shared.run { Array(try _RSA.Signing.PrivateKey(keySize: .init(bitCount: bits)).derRepresentation) }
        }
        return TransitKeyVersion(key: material, hmacKey: SecureRandom.bytes(32), created: now)
    }
}

/// A named key (`transit/keys/:name`): its versions and policy, stored as one record.
struct TransitKey: Codable, Sendable {
    var name: String
    var type: TransitKeyType
    var derived = false
    var convergent = false
    var exportable = false
    var allowPlaintextBackup = false
    var deletionAllowed = false
    var minDecryptionVersion = 1
    var minEncryptionVersion = 0
    var minAvailableVersion = 0
    var latestVersion = 0
    var autoRotatePeriod = 0
    var keySize = 0
    var versions: [String: TransitKeyVersion] = [:]

    func version(_ v: Int) -> TransitKeyVersion? { versions[String(v)] }

    /// The versions a read or an export shows: from `min_decryption_version` to the latest.
    var shownVersions: ClosedRange<Int> {
        let low = max(1, minDecryptionVersion), high = max(1, latestVersion)
        return low <= high ? low...high : high...high
    }

    mutating func rotate(now: Double) async throws {
        let v = try await TransitKeyVersion.make(type, hmacSize: keySize == 0 ? 32 : keySize, now: now)
        latestVersion += 1
        versions[String(latestVersion)] = v
    }

    /// The version to encrypt or sign with: `key_version` if given (0: the latest), within
    /// `min_encryption_version`.
    func encryptionVersion(_ asked: Int) throws -> Int {
        let v = asked == 0 ? latestVersion : asked
        guard v <= latestVersion, v >= max(1, minEncryptionVersion), version(v) != nil else {
            throw CofferError.invalid("requested version for encryption is less than the minimum encryption key version")
        }
        return v
    }

    /// A version that may decrypt or verify.
    func decryptionVersion(_ v: Int) throws -> TransitKeyVersion {
        guard v >= minDecryptionVersion else { throw CofferError.invalid("ciphertext or signature version is disallowed by policy (too old)") }
        guard v <= latestVersion, let k = version(v) else { throw CofferError.invalid("invalid key version") }
        return k
    }

    /// The symmetric key of a version, derived with HKDF-SHA256 from the context when the
    /// key is derived (Vault's `hkdf_sha256` KDF: no salt, the context as info).
    func symmetricKey(_ kv: TransitKeyVersion, context: [UInt8]?) throws -> SymmetricKey {
        guard derived else { return SymmetricKey(data: kv.key) }
        guard let context, !context.isEmpty else {
            throw CofferError.invalid("missing 'context' for key derivation: the key was created using a derived key, which means additional, per-request information must be included in order to perform operations with the key")
        }
        return HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: kv.key), info: context, outputByteCount: kv.key.count)
    }

    /// The public key a read shows: base64 raw for Ed25519, PEM SubjectPublicKeyInfo for EC and RSA.
    func publicKey(_ kv: TransitKeyVersion) -> String {
        switch type {
        case .ed25519: return (try? Curve25519.Signing.PrivateKey(rawRepresentation: kv.key).publicKey.rawRepresentation.base64EncodedString()) ?? ""
        case .p256: return (try? P256.Signing.PrivateKey(rawRepresentation: kv.key).publicKey.pemRepresentation) ?? ""
        case .p384: return (try? P384.Signing.PrivateKey(rawRepresentation: kv.key).publicKey.pemRepresentation) ?? ""
        case .p521: return (try? P521.Signing.PrivateKey(rawRepresentation: kv.key).publicKey.pemRepresentation) ?? ""
        case .rsa2048, .rsa3072, .rsa4096: return (try? _RSA.Signing.PrivateKey(derRepresentation: kv.key).publicKey.pemRepresentation) ?? ""
        default: return ""
        }
    }
}
