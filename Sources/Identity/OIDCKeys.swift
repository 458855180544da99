import _CryptoExtras
import CofferSDK
import Crypto
import Foundation

/// The JWS algorithms of Vault's identity token keys.
public enum JWSAlgorithm: String, Codable, Sendable, CaseIterable {
    case RS256, RS384, RS512, ES256, ES384, ES512, EdDSA

    public static func parse(_ name: String) throws -> JWSAlgorithm {
        guard let a = JWSAlgorithm(rawValue: name) else {
            throw CofferError.invalid("unknown signing algorithm \"\(name.prefix(32))\"")
        }
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
        case .RS256, .RS384, .RS512: key = Array(try _RSA.Signing.PrivateKey(keySize: .bits2048).derRepresentation)
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
        case .ES256: return Array(try P256.Signing.PrivateKey(rawRepresentation: privateKey).signature(for: input).rawRepresentation)
        case .ES384: return Array(try P384.Signing.PrivateKey(rawRepresentation: privateKey).signature(for: input).rawRepresentation)
        case .ES512: return Array(try P521.Signing.PrivateKey(rawRepresentation: privateKey).signature(for: input).rawRepresentation)
        case .EdDSA: return Array(try Curve25519.Signing.PrivateKey(rawRepresentation: privateKey).signature(for: input))
        }
    }

    /// Whether `signature` is this key's over `input`.
    public func verify(_ signature: [UInt8], _ input: [UInt8]) -> Bool {
        do {
            switch algorithm {
            case .RS256, .RS384, .RS512:
                let pub = try rsa().publicKey
                let sig = _RSA.Signing.RSASignature(rawRepresentation: signature)
                switch algorithm {
                case .RS256: return pub.isValidSignature(sig, for: SHA256.hash(data: input), padding: .insecurePKCS1v1_5)
                case .RS384: return pub.isValidSignature(sig, for: SHA384.hash(data: input), padding: .insecurePKCS1v1_5)
                default: return pub.isValidSignature(sig, for: SHA512.hash(data: input), padding: .insecurePKCS1v1_5)
                }
            case .ES256:
                return try P256.Signing.PrivateKey(rawRepresentation: privateKey).publicKey
                    .isValidSignature(P256.Signing.ECDSASignature(rawRepresentation: signature), for: input)
            case .ES384:
                return try P384.Signing.PrivateKey(rawRepresentation: privateKey).publicKey
                    .isValidSignature(P384.Signing.ECDSASignature(rawRepresentation: signature), for: input)
            case .ES512:
                return try P521.Signing.PrivateKey(rawRepresentation: privateKey).publicKey
                    .isValidSignature(P521.Signing.ECDSASignature(rawRepresentation: signature), for: input)
            case .EdDSA:
                return try Curve25519.Signing.PrivateKey(rawRepresentation: privateKey).publicKey.isValidSignature(signature, for: input)
            }
        } catch {
            return false
        }
    }

    func rsa() throws -> _RSA.Signing.PrivateKey { try _RSA.Signing.PrivateKey(derRepresentation: privateKey) }

    /// The public key as a JWK (RFC 7517), what relying parties verify with.
    public func jwk() throws -> JSONValue {
        var o: [String: JSONValue] = ["kid": .string(kid), "alg": .string(algorithm.rawValue), "use": .string("sig")]
        func ec(_ crv: String, _ x963: Data) {
            let point = Array(x963.dropFirst())  // 0x04 || X || Y
            let half = point.count / 2
            o["kty"] = "EC"
            o["crv"] = .string(crv)
            o["x"] = .string(Base64URL.encode(Array(point[..<half])))
            o["y"] = .string(Base64URL.encode(Array(point[half...])))
        }
        switch algorithm {
        case .RS256, .RS384, .RS512:
            let p = try rsa().publicKey.getKeyPrimitives()
            o["kty"] = "RSA"
            o["n"] = .string(Base64URL.encode(Array(p.modulus)))
            o["e"] = .string(Base64URL.encode(Array(p.publicExponent)))
        case .ES256: ec("P-256", try P256.Signing.PrivateKey(rawRepresentation: privateKey).publicKey.x963Representation)
        case .ES384: ec("P-384", try P384.Signing.PrivateKey(rawRepresentation: privateKey).publicKey.x963Representation)
        case .ES512: ec("P-521", try P521.Signing.PrivateKey(rawRepresentation: privateKey).publicKey.x963Representation)
        case .EdDSA:
            o["kty"] = "OKP"
            o["crv"] = "Ed25519"
            o["x"] = .string(Base64URL.encode(Array(try Curve25519.Signing.PrivateKey(rawRepresentation: privateKey).publicKey.rawRepresentation)))
        }
        return .object(o)
    }
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
