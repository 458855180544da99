import _CryptoExtras
import CofferSDK
import Crypto
import Foundation
import JOSE

extension JWSAlgorithm {
    /// The algorithms of Vault's identity token keys.
    static let identityKeys: [JWSAlgorithm] = [.RS256, .RS384, .RS512, .ES256, .ES384, .ES512, .EdDSA]

    static func identityKey(_ name: String) throws -> JWSAlgorithm {
        let a = try parse(name)
        guard identityKeys.contains(a) else { throw CofferError.invalid("unknown signing algorithm \"\(name.prefix(32))\"") }
        return a
    }
}

/// One version of a named key: its private key (stored behind the barrier, never shown),
/// its key id, and until when it still verifies once a newer version signs.
public struct SigningKeyVersion: Codable, Sendable {
    public var kid: String
    public var algorithm: JWSAlgorithm
    /// DER (RSA) or raw (EC, Ed25519) private key bytes.
    public var privateKey: [UInt8]
    public var createdAt: Date
    /// Set when a newer version replaced it: verification stops then.
    public var expiresAt: Date?

    /// A new key of `algorithm`, made off the concurrency pool (an RSA key takes tens of
    /// milliseconds: 2048 bits).
    public static func generate(_ algorithm: JWSAlgorithm, now: Date) async throws -> SigningKeyVersion {
        try await CPUWork.shared.run { try make(algorithm, now: now) }
    }

    static func make(_ algorithm: JWSAlgorithm, now: Date) throws -> SigningKeyVersion {
        let key: [UInt8]
        switch algorithm {
        case .RS256, .RS384, .RS512, .PS256, .PS384, .PS512: key = Array(try _RSA.Signing.PrivateKey(keySize: .bits2048).derRepresentation)
        case .ES256: key = Array(P256.Signing.PrivateKey().rawRepresentation)
        case .ES384: key = Array(P384.Signing.PrivateKey().rawRepresentation)
        case .ES512: key = Array(P521.Signing.PrivateKey().rawRepresentation)
        case .EdDSA: key = Array(Curve25519.Signing.PrivateKey().rawRepresentation)
        }
        return SigningKeyVersion(kid: RandomID.uuid(), algorithm: algorithm, privateKey: key, createdAt: now)
    }

    /// The JWS signature of `input` (`header.payload`), in JWS's raw form.
    public func sign(_ input: [UInt8]) throws -> [UInt8] {
        switch algorithm {
        case .RS256: return Array(try rsa().signature(for: SHA256.hash(data: input), padding: .insecurePKCS1v1_5).rawRepresentation)
        case .RS384: return Array(try rsa().signature(for: SHA384.hash(data: input), padding: .insecurePKCS1v1_5).rawRepresentation)
        case .RS512: return Array(try rsa().signature(for: SHA512.hash(data: input), padding: .insecurePKCS1v1_5).rawRepresentation)
        case .PS256: return Array(try rsa().signature(for: SHA256.hash(data: input), padding: .PSS).rawRepresentation)
        case .PS384: return Array(try rsa().signature(for: SHA384.hash(data: input), padding: .PSS).rawRepresentation)
        case .PS512: return Array(try rsa().signature(for: SHA512.hash(data: input), padding: .PSS).rawRepresentation)
        case .ES256: return Array(try P256.Signing.PrivateKey(rawRepresentation: privateKey).signature(for: input).rawRepresentation)
        case .ES384: return Array(try P384.Signing.PrivateKey(rawRepresentation: privateKey).signature(for: input).rawRepresentation)
        case .ES512: return Array(try P521.Signing.PrivateKey(rawRepresentation: privateKey).signature(for: input).rawRepresentation)
        case .EdDSA: return Array(try Curve25519.Signing.PrivateKey(rawRepresentation: privateKey).signature(for: input))
        }
    }

    /// Whether `signature` is this key's over `input`.
    public func verify(_ signature: [UInt8], _ input: [UInt8]) -> Bool {
        guard let key = try? publicKey() else { return false }
        return key.verify(algorithm, signature: signature, input: input)
    }

    func rsa() throws -> _RSA.Signing.PrivateKey { try _RSA.Signing.PrivateKey(derRepresentation: privateKey) }

    public func publicKey() throws -> JWSPublicKey {
        switch algorithm {
        case .RS256, .RS384, .RS512, .PS256, .PS384, .PS512: .rsa(try rsa().publicKey)
        case .ES256: .p256(try P256.Signing.PrivateKey(rawRepresentation: privateKey).publicKey)
        case .ES384: .p384(try P384.Signing.PrivateKey(rawRepresentation: privateKey).publicKey)
        case .ES512: .p521(try P521.Signing.PrivateKey(rawRepresentation: privateKey).publicKey)
        case .EdDSA: .ed25519(try Curve25519.Signing.PrivateKey(rawRepresentation: privateKey).publicKey)
        }
    }

    /// The public key as a JWK (RFC 7517), what relying parties verify with.
    public func jwk() throws -> JSONValue { try publicKey().jwk(kid: kid, algorithm: algorithm) }
}

/// A named key of `identity/oidc/key/:name`: the version that signs now and the older ones
/// that still verify.
public struct NamedKey: Codable, Sendable {
    public var name: String
    public var algorithm: JWSAlgorithm
    public var rotationPeriod: Int
    public var verificationTTL: Int
    public var allowedClientIDs: [String]
    /// Newest first; the first signs.
    public var versions: [SigningKeyVersion]

    public var current: SigningKeyVersion? { versions.first }

    /// The versions that still verify at `now`.
    public func verifying(at now: Date) -> [SigningKeyVersion] {
        versions.filter { $0.expiresAt.map { $0 > now } ?? true }
    }

    /// A new version signs from now; the one it replaces verifies `verificationTTL` longer.
    public mutating func rotate(to fresh: SigningKeyVersion, now: Date, verificationTTL ttl: Int? = nil) {
        let keep = TimeInterval(ttl ?? verificationTTL)
        for i in versions.indices where versions[i].expiresAt == nil { versions[i].expiresAt = now.addingTimeInterval(keep) }
        versions.insert(fresh, at: 0)
        versions.removeAll { $0.expiresAt.map { $0 <= now } ?? false }
    }

    /// Whether the signing version is older than the rotation period.
    public func rotationDue(at now: Date) -> Bool {
        guard let c = current else { return true }
        return rotationPeriod > 0 && now.timeIntervalSince(c.createdAt) >= TimeInterval(rotationPeriod)
    }

    /// Whether a role with `clientID` may use this key.
    public func allows(clientID: String) -> Bool { allowedClientIDs.contains("*") || allowedClientIDs.contains(clientID) }
}
