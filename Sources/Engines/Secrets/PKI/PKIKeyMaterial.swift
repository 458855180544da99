import _CryptoExtras
import CofferSDK
import Crypto
import Foundation
import SwiftASN1
import X509

/// A private key the PKI engine holds or hands out: RSA, EC (P-256/384/521) or Ed25519, with
/// Vault's PEM forms (`der`: PKCS#1 / SEC1, `pkcs8`), and the signature algorithm it signs
/// certificates with.
enum PKIKeyMaterial: @unchecked Sendable {
    case rsa(_RSA.Signing.PrivateKey)
    case p256(P256.Signing.PrivateKey)
    case p384(P384.Signing.PrivateKey)
    case p521(P521.Signing.PrivateKey)
    case ed25519(Curve25519.Signing.PrivateKey)

    /// Vault's `key_type` and `key_bits` (0: the type's default), checked.
    static func normalize(type: String, bits: Int) throws -> (type: String, bits: Int) {
        switch type {
        case "rsa":
            let b = bits == 0 ? 2048 : bits
            guard [2048, 3072, 4096].contains(b) else { throw CofferError.invalid("unsupported bit length for RSA key: \(bits)") }
            return ("rsa", b)
        case "ec":
            let b = bits == 0 ? 256 : bits
            guard [256, 384, 521].contains(b) else { throw CofferError.invalid("unsupported bit length for EC key: \(bits)") }
            return ("ec", b)
        case "ed25519":
            return ("ed25519", 0)
        case "any":
            return ("any", 0)
        default:
            throw CofferError.invalid("unknown key type \(type.prefix(32))")
        }
    }

    static func generate(type: String, bits: Int) throws -> PKIKeyMaterial {
        let (t, b) = try normalize(type: type, bits: bits)
        switch (t, b) {
        case ("rsa", _):
            let size: _RSA.Signing.KeySize = b == 4096 ? .bits4096 : b == 3072 ? .bits3072 : .bits2048
            return .rsa(try _RSA.Signing.PrivateKey(keySize: size))
        // Not "compact representable" (swift-crypto's default regenerates keys until the
        // public point has that form; X.509 does not care).
        case ("ec", 384): return .p384(P384.Signing.PrivateKey(compactRepresentable: false))
        case ("ec", 521): return .p521(P521.Signing.PrivateKey(compactRepresentable: false))
        case ("ec", _):
            // From a random scalar: swift-crypto's generator runs BoringSSL's FIPS pairwise
            // test (a sign and a verify) on every key, three times the cost of the key itself.
            for _ in 0..<8 {
                if let k = try? P256.Signing.PrivateKey(rawRepresentation: SecureRandom.bytes(32)) { return .p256(k) }
            }
            return .p256(P256.Signing.PrivateKey(compactRepresentable: false))
        case ("ed25519", _): return .ed25519(Curve25519.Signing.PrivateKey())
        default: throw CofferError.invalid("key_type \"any\" is only valid for roles")
        }
    }

    static let ed25519PKCS8Prefix: [UInt8] = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]

    /// A PEM private key in any of the forms Vault accepts (PKCS#1, SEC1, PKCS#8).
    init(pem: String) throws {
        guard let doc = try? PEMDocument(pemString: pem) else { throw CofferError.invalid("unable to parse private key PEM") }
        switch doc.discriminator {
        case "RSA PRIVATE KEY":
            guard let k = try? _RSA.Signing.PrivateKey(derRepresentation: doc.derBytes) else { break }
            self = .rsa(k); return
        case "EC PRIVATE KEY", "PRIVATE KEY":
            if doc.derBytes.count == 48, Array(doc.derBytes.prefix(16)) == Self.ed25519PKCS8Prefix,
               let k = try? Curve25519.Signing.PrivateKey(rawRepresentation: doc.derBytes.suffix(32)) {
                self = .ed25519(k); return
            }
            if let k = try? P256.Signing.PrivateKey(derRepresentation: doc.derBytes) { self = .p256(k); return }
            if let k = try? P384.Signing.PrivateKey(derRepresentation: doc.derBytes) { self = .p384(k); return }
            if let k = try? P521.Signing.PrivateKey(derRepresentation: doc.derBytes) { self = .p521(k); return }
            if doc.discriminator == "PRIVATE KEY", let k = try? _RSA.Signing.PrivateKey(derRepresentation: doc.derBytes) { self = .rsa(k); return }
        default:
            break
        }
        throw CofferError.invalid("unable to parse private key: unsupported key type or encoding \(doc.discriminator.prefix(32))")
    }

    var type: String {
        switch self {
        case .rsa: "rsa"
        case .p256, .p384, .p521: "ec"
        case .ed25519: "ed25519"
        }
    }

    var bits: Int {
        switch self {
        case .rsa(let k): k.keySizeInBits
        case .p256: 256
        case .p384: 384
        case .p521: 521
        case .ed25519: 0
        }
    }

    var certificateKey: Certificate.PrivateKey {
        switch self {
        case .rsa(let k): Certificate.PrivateKey(k)
        case .p256(let k): Certificate.PrivateKey(k)
        case .p384(let k): Certificate.PrivateKey(k)
        case .p521(let k): Certificate.PrivateKey(k)
        case .ed25519(let k): Certificate.PrivateKey(k)
        }
    }

    var publicKey: Certificate.PublicKey { certificateKey.publicKey }

    /// How the key is stored (behind the barrier): PKCS#8 for every type.
    var storedPEM: String { (try? pem(format: "pkcs8")) ?? "" }

    /// The key in Vault's `private_key_format`: `der` (the default: PKCS#1 for RSA, SEC1 for
    /// EC, PKCS#8 for Ed25519) or `pkcs8`; both as PEM.
    func pem(format: String) throws -> String {
        let pkcs8 = format == "pkcs8"
        switch self {
        case .rsa(let k): return pkcs8 ? k.pkcs8PEMRepresentation : k.pemRepresentation
        case .p256(let k):
            return pkcs8 ? k.pemRepresentation : PKIDER.pem("EC PRIVATE KEY", try PKIDER.sec1(curve: [1, 2, 840, 10045, 3, 1, 7], privateScalar: Array(k.rawRepresentation), publicX963: Array(k.publicKey.x963Representation)))
        case .p384(let k):
            return pkcs8 ? k.pemRepresentation : PKIDER.pem("EC PRIVATE KEY", try PKIDER.sec1(curve: [1, 3, 132, 0, 34], privateScalar: Array(k.rawRepresentation), publicX963: Array(k.publicKey.x963Representation)))
        case .p521(let k):
            return pkcs8 ? k.pemRepresentation : PKIDER.pem("EC PRIVATE KEY", try PKIDER.sec1(curve: [1, 3, 132, 0, 35], privateScalar: Array(k.rawRepresentation), publicX963: Array(k.publicKey.x963Representation)))
        case .ed25519(let k):
            return PKIDER.pem("PRIVATE KEY", Self.ed25519PKCS8Prefix + Array(k.rawRepresentation))
        }
    }

    /// The signature algorithm for certificates and CRLs this key signs: Vault's
    /// `signature_bits` for RSA (default 256), the curve's hash for EC.
    func signatureAlgorithm(bits: Int = 0) throws -> Certificate.SignatureAlgorithm {
        switch self {
        case .rsa:
            switch bits {
            case 0, 256: return .sha256WithRSAEncryption
            case 384: return .sha384WithRSAEncryption
            case 512: return .sha512WithRSAEncryption
            default: throw CofferError.invalid("unsupported signature_bits \(bits) for an RSA key")
            }
        case .p256: return .ecdsaWithSHA256
        case .p384: return .ecdsaWithSHA384
        case .p521: return .ecdsaWithSHA512
        case .ed25519: return .ed25519
        }
    }

    /// The type and bits of a public key (a CSR's, an imported certificate's).
    static func describe(_ key: Certificate.PublicKey) -> (type: String, bits: Int) {
        if let k = _RSA.Signing.PublicKey(key) { return ("rsa", k.keySizeInBits) }
        if P256.Signing.PublicKey(key) != nil { return ("ec", 256) }
        if P384.Signing.PublicKey(key) != nil { return ("ec", 384) }
        if P521.Signing.PublicKey(key) != nil { return ("ec", 521) }
        if Curve25519.Signing.PublicKey(key) != nil { return ("ed25519", 0) }
        return ("unknown", 0)
    }
}
