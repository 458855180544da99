import _CryptoExtras
import CofferSDK
import Crypto
import Foundation
import SwiftASN1
import X509

/// The JWS signature algorithms Coffer signs or verifies with (RFC 7518). `none` and the
/// HMAC algorithms are not among them: a token signed with a shared secret, or not at all,
/// is never accepted.
public enum JWSAlgorithm: String, Codable, Sendable, CaseIterable {
    case RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA

    public static func parse(_ name: String) throws -> JWSAlgorithm {
        guard let a = JWSAlgorithm(rawValue: name) else {
            throw CofferError.invalid("unknown signing algorithm \"\(name.prefix(32))\"")
        }
        return a
    }

    var isRSA: Bool {
        switch self {
        case .RS256, .RS384, .RS512, .PS256, .PS384, .PS512: true
        default: false
        }
    }
}

/// A public key that verifies JWS signatures: from a JWK (RFC 7517) or a PEM
/// SubjectPublicKeyInfo. Verification checks that the algorithm fits the key's type, so a
/// token cannot pick an algorithm its key was not made for.
///
/// `@unchecked Sendable`: swift-crypto's public keys are immutable values that do not
/// declare it (its RSA key does).
public enum JWSPublicKey: @unchecked Sendable {
    case rsa(_RSA.Signing.PublicKey)
    case p256(P256.Signing.PublicKey)
    case p384(P384.Signing.PublicKey)
    case p521(P521.Signing.PublicKey)
    case ed25519(Curve25519.Signing.PublicKey)

    /// Whether `signature` is this key's signature with `algorithm` over `input`.
    public func verify(_ algorithm: JWSAlgorithm, signature: [UInt8], input: [UInt8]) -> Bool {
        switch (self, algorithm) {
        case (.rsa(let k), _) where algorithm.isRSA:
            let sig = _RSA.Signing.RSASignature(rawRepresentation: signature)
            switch algorithm {
            case .RS256: return k.isValidSignature(sig, for: SHA256.hash(data: input), padding: .insecurePKCS1v1_5)
            case .RS384: return k.isValidSignature(sig, for: SHA384.hash(data: input), padding: .insecurePKCS1v1_5)
            case .RS512: return k.isValidSignature(sig, for: SHA512.hash(data: input), padding: .insecurePKCS1v1_5)
            case .PS256: return k.isValidSignature(sig, for: SHA256.hash(data: input), padding: .PSS)
            case .PS384: return k.isValidSignature(sig, for: SHA384.hash(data: input), padding: .PSS)
            default: return k.isValidSignature(sig, for: SHA512.hash(data: input), padding: .PSS)
            }
        case (.p256(let k), .ES256):
            guard let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return k.isValidSignature(sig, for: SHA256.hash(data: input))
        case (.p384(let k), .ES384):
            guard let sig = try? P384.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return k.isValidSignature(sig, for: SHA384.hash(data: input))
        case (.p521(let k), .ES512):
            guard let sig = try? P521.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
            return k.isValidSignature(sig, for: SHA512.hash(data: input))
        case (.ed25519(let k), .EdDSA):
            return k.isValidSignature(signature, for: input)
        default:
            return false
        }
    }

    /// The key as a JWK, with its key id and algorithm.
    public func jwk(kid: String, algorithm: JWSAlgorithm) throws -> JSONValue {
        var o: [String: JSONValue] = ["kid": .string(kid), "alg": .string(algorithm.rawValue), "use": .string("sig")]
        func ec(_ crv: String, _ x963: Data) {
            let point = Array(x963.dropFirst())  // 0x04 || X || Y
            let half = point.count / 2
            o["kty"] = "EC"
            o["crv"] = .string(crv)
            o["x"] = .string(Base64URL.encode(Array(point[..<half])))
            o["y"] = .string(Base64URL.encode(Array(point[half...])))
        }
        switch self {
        case .rsa(let k):
            let p = try k.getKeyPrimitives()
            o["kty"] = "RSA"
            o["n"] = .string(Base64URL.encode(Array(p.modulus)))
            o["e"] = .string(Base64URL.encode(Array(p.publicExponent)))
        case .p256(let k): ec("P-256", k.x963Representation)
        case .p384(let k): ec("P-384", k.x963Representation)
        case .p521(let k): ec("P-521", k.x963Representation)
        case .ed25519(let k):
            o["kty"] = "OKP"
            o["crv"] = "Ed25519"
            o["x"] = .string(Base64URL.encode(Array(k.rawRepresentation)))
        }
        return .object(o)
    }

    /// A key from a JWK: `kty` RSA (`n`, `e`), EC (`crv` P-256/384/521, `x`, `y`) or OKP
    /// (`crv` Ed25519, `x`). Throws on anything else or on bytes that are not a key.
    public init(jwk: [String: JSONValue]) throws {
        func bytes(_ name: String) throws -> [UInt8] {
            guard let s = jwk[name]?.stringValue, let b = Base64URL.decode(Substring(s)), !b.isEmpty else {
                throw CofferError.invalid("JWK is missing \"\(name)\"")
            }
            return b
        }
        let kty = jwk["kty"]?.stringValue ?? ""
        do {
            switch (kty, jwk["crv"]?.stringValue ?? "") {
            case ("RSA", _):
                let n = try bytes("n"), e = try bytes("e")
                guard n.count >= 256 else { throw CofferError.invalid("RSA keys shorter than 2048 bits are not accepted") }
                self = .rsa(try _RSA.Signing.PublicKey(n: n, e: e))
            case ("EC", "P-256"): self = .p256(try P256.Signing.PublicKey(x963Representation: [4] + (try bytes("x")) + (try bytes("y"))))
            case ("EC", "P-384"): self = .p384(try P384.Signing.PublicKey(x963Representation: [4] + (try bytes("x")) + (try bytes("y"))))
            case ("EC", "P-521"): self = .p521(try P521.Signing.PublicKey(x963Representation: [4] + (try bytes("x")) + (try bytes("y"))))
            case ("OKP", "Ed25519"): self = .ed25519(try Curve25519.Signing.PublicKey(rawRepresentation: try bytes("x")))
            default: throw CofferError.invalid("unsupported JWK key type \"\(kty.prefix(16))\"")
            }
        } catch let e as CofferError {
            throw e
        } catch {
            throw CofferError.invalid("JWK is not a valid \(kty.prefix(16)) public key")
        }
    }

    /// A key from PEM: a SubjectPublicKeyInfo (`PUBLIC KEY`), an RSA `RSA PUBLIC KEY`, or a
    /// certificate, whose public key is taken.
    public init(pem: String) throws {
        let key: Certificate.PublicKey
        do {
            let doc = try PEMDocument(pemString: pem)
            switch doc.discriminator {
            case "CERTIFICATE": key = try Certificate(derEncoded: doc.derBytes).publicKey
            case "RSA PUBLIC KEY": self = .rsa(try _RSA.Signing.PublicKey(derRepresentation: doc.derBytes)); return
            default: key = try Certificate.PublicKey(derEncoded: doc.derBytes)
            }
        } catch {
            throw CofferError.invalid("error parsing public key: data does not contain any valid public keys")
        }
        if let k = P256.Signing.PublicKey(key) { self = .p256(k) }
        else if let k = P384.Signing.PublicKey(key) { self = .p384(k) }
        else if let k = P521.Signing.PublicKey(key) { self = .p521(k) }
        else if let k = Curve25519.Signing.PublicKey(key) { self = .ed25519(k) }
        else if let k = _RSA.Signing.PublicKey(key) { self = .rsa(k) }
        else { throw CofferError.invalid("error parsing public key: unsupported key type") }
    }
}

/// A JWS in compact serialization (`header.payload.signature`), split and decoded but not
/// yet verified.
public struct CompactJWS: Sendable {
    public let header: [String: JSONValue]
    public let payload: [String: JSONValue]
    /// `header.payload` as sent: what the signature covers.
    public let signingInput: [UInt8]
    public let signature: [UInt8]

    /// The most a token may weigh (a JWT with a few hundred groups stays well below).
    public static let maxLength = 64 * 1024

    public var algorithm: String { header["alg"]?.stringValue ?? "" }
    public var keyID: String? { header["kid"]?.stringValue }

    public init(_ token: String) throws {
        guard token.utf8.count <= Self.maxLength else { throw CofferError.invalid("token is too large") }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw CofferError.invalid(parts.count == 5 ? "encrypted tokens (JWE) are not supported" : "malformed token: expected three dot-separated parts")
        }
        guard let h = Base64URL.decode(parts[0]), case .object(let header)? = try? JSONValue.parse(h) else {
            throw CofferError.invalid("malformed token: the header is not base64url JSON")
        }
        guard let p = Base64URL.decode(parts[1]), case .object(let payload)? = try? JSONValue.parse(p) else {
            throw CofferError.invalid("malformed token: the payload is not a base64url JSON object")
        }
        guard let s = Base64URL.decode(parts[2]) else { throw CofferError.invalid("malformed token: the signature is not base64url") }
        self.header = header
        self.payload = payload
        self.signingInput = Array((parts[0] + "." + parts[1]).utf8)
        self.signature = s
    }

    /// Signs `payload` with `sign` under a header of `algorithm` and `kid`.
    public static func serialize(payload: JSONValue, algorithm: JWSAlgorithm, kid: String, sign: ([UInt8]) throws -> [UInt8]) throws -> String {
        let header: JSONValue = ["alg": .string(algorithm.rawValue), "kid": .string(kid)]
        let input = Base64URL.encode(header.serialized()) + "." + Base64URL.encode(payload.serialized())
        return input + "." + Base64URL.encode(try sign(Array(input.utf8)))
    }
}
