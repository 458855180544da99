import _CryptoExtras
import CofferSDK
import Crypto
import Foundation

/// The cryptography of transit, on swift-crypto and `_CryptoExtras` only: AES-GCM and
/// ChaCha20-Poly1305 (random or convergent nonces), RSA-OAEP with SHA-256, Ed25519, ECDSA
/// (ASN.1 or JWS r‖s), RSA-PSS and PKCS#1 v1.5, HMACs, and Vault's `vault:vN:` wire form.
enum TransitCrypto {
    static let prefix = "vault:v"

    /// `vault:v<N>:<base64>` for a version and bytes.
    static func wire(_ version: Int, _ bytes: [UInt8], urlSafe: Bool = false) -> String {
        prefix + String(version) + ":" + (urlSafe ? Base64URL.encode(bytes) : Data(bytes).base64EncodedString())
    }

    /// The version and bytes of a `vault:vN:` value (`what`: ciphertext, signature, HMAC, for Vault's texts).
    static func unwire(_ text: String, what: String, urlSafe: Bool = false) throws -> (Int, [UInt8]) {
        guard text.hasPrefix(prefix) else { throw CofferError.invalid("invalid \(what): no prefix") }
        let rest = text.dropFirst(prefix.count)
        guard let colon = rest.firstIndex(of: ":") else { throw CofferError.invalid("invalid \(what): wrong number of fields") }
        guard var v = Int(rest[..<colon]), v >= 0 else { throw CofferError.invalid("invalid \(what): version number could not be decoded") }
        if v == 0 { v = 1 }
        let body = rest[rest.index(after: colon)...]
        let bytes = urlSafe ? Base64URL.decode(body) : Data(base64Encoded: String(body)).map(Array.init)
        guard let bytes else {
            throw CofferError.invalid(what == "ciphertext" ? "invalid ciphertext: could not decode base64" : what == "signature" ? "invalid base64 signature value" : "unable to decode verification HMAC as base64")
        }
        return (v, bytes)
    }

    static func base64(_ s: String, field: String = "") throws -> [UInt8] {
        guard let d = Data(base64Encoded: s) else { throw CofferError.invalid("illegal base64 data in \(field.isEmpty ? "input" : field)") }
        return Array(d)
    }

    // MARK: encryption

    static func seal(_ type: TransitKeyType, key: SymmetricKey, plaintext: [UInt8], nonce: [UInt8]?, aad: [UInt8]?) throws -> [UInt8] {
        switch type {
        case .aes128, .aes256:
            let n = try nonce.map { try AES.GCM.Nonce(data: $0) } ?? AES.GCM.Nonce()
            let box = try aad.map { try AES.GCM.seal(plaintext, using: key, nonce: n, authenticating: $0) } ?? AES.GCM.seal(plaintext, using: key, nonce: n)
            return Array(box.nonce) + Array(box.ciphertext) + Array(box.tag)
        case .chacha:
            let n = try nonce.map { try ChaChaPoly.Nonce(data: $0) } ?? ChaChaPoly.Nonce()
            let box = try aad.map { try ChaChaPoly.seal(plaintext, using: key, nonce: n, authenticating: $0) } ?? ChaChaPoly.seal(plaintext, using: key, nonce: n)
            return Array(box.nonce) + Array(box.ciphertext) + Array(box.tag)
        default:
            throw CofferError.invalid("message encryption not supported for key type \(type.rawValue)")
        }
    }

    static func open(_ type: TransitKeyType, key: SymmetricKey, blob: [UInt8], aad: [UInt8]?) throws -> [UInt8] {
        guard blob.count >= 12 + 16 else { throw CofferError.invalid("invalid ciphertext length") }
        do {
            switch type {
            case .aes128, .aes256:
                let box = try AES.GCM.SealedBox(combined: blob)
                return Array(try aad.map { try AES.GCM.open(box, using: key, authenticating: $0) } ?? AES.GCM.open(box, using: key))
            case .chacha:
                let box = try ChaChaPoly.SealedBox(combined: blob)
                return Array(try aad.map { try ChaChaPoly.open(box, using: key, authenticating: $0) } ?? ChaChaPoly.open(box, using: key))
            default:
                throw CofferError.invalid("message decryption not supported for key type \(type.rawValue)")
            }
        } catch let e as CofferError {
            throw e
        } catch {
            throw CofferError.invalid(type == .chacha ? "chacha20poly1305: message authentication failed" : "cipher: message authentication failed")
        }
    }

    /// A convergent nonce: HMAC-SHA256 of the plaintext under the derived HMAC half, cut to 12
    /// bytes (Vault's convergent version 3).
    static func convergentNonce(hmacKey: SymmetricKey, plaintext: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: plaintext, using: hmacKey)).prefix(12).map { $0 }
    }

    static func rsaPrivate(_ kv: TransitKeyVersion) throws -> _RSA.Signing.PrivateKey { try _RSA.Signing.PrivateKey(derRepresentation: kv.key) }

    static func rsaEncrypt(_ kv: TransitKeyVersion, _ plaintext: [UInt8]) throws -> [UInt8] {
        let pub = try _RSA.Encryption.PublicKey(derRepresentation: try rsaPrivate(kv).publicKey.derRepresentation)
        do { return Array(try pub.encrypt(plaintext, padding: .PKCS1_OAEP_SHA256)) } catch {
            throw CofferError.invalid("failed to RSA encrypt the plaintext: message too long")
        }
    }

    static func rsaDecrypt(_ kv: TransitKeyVersion, _ blob: [UInt8]) throws -> [UInt8] {
        let key = try _RSA.Encryption.PrivateKey(derRepresentation: kv.key)
        do { return Array(try key.decrypt(blob, padding: .PKCS1_OAEP_SHA256)) } catch {
            throw CofferError.invalid("failed to RSA decrypt the ciphertext: crypto/rsa: decryption error")
        }
    }

    // MARK: hashing

    enum Hash: String {
        case sha1, sha256 = "sha2-256", sha384 = "sha2-384", sha512 = "sha2-512", none

        /// Vault's names (sha2-224 and sha3-* are not in swift-crypto: refused).
        static func parse(_ s: String) -> Hash? { s.isEmpty ? .sha256 : Hash(rawValue: s) }

        func digest(_ input: [UInt8]) -> [UInt8] {
            switch self {
            case .sha1: Array(Insecure.SHA1.hash(data: input))
            case .sha256: Array(SHA256.hash(data: input))
            case .sha384: Array(SHA384.hash(data: input))
            case .sha512: Array(SHA512.hash(data: input))
            case .none: input
            }
        }

        func hmac(_ key: SymmetricKey, _ input: [UInt8]) -> [UInt8]? {
            switch self {
            case .sha1: Array(HMAC<Insecure.SHA1>.authenticationCode(for: input, using: key))
            case .sha256: Array(HMAC<SHA256>.authenticationCode(for: input, using: key))
            case .sha384: Array(HMAC<SHA384>.authenticationCode(for: input, using: key))
            case .sha512: Array(HMAC<SHA512>.authenticationCode(for: input, using: key))
            case .none: nil
            }
        }
    }

    // MARK: signing

    struct SignOptions {
        var hash = Hash.sha256
        var prehashed = false
        var pss = true
        var jws = false
    }

    static func ed25519Key(_ kv: TransitKeyVersion, derivedWith context: [UInt8]?) throws -> Curve25519.Signing.PrivateKey {
        let base = try Curve25519.Signing.PrivateKey(rawRepresentation: kv.key)
        guard let context else { return base }
        // Vault's derived Ed25519: HKDF over the 64-byte seed‖public key, the first 32 bytes as the seed.
        let ikm = SymmetricKey(data: kv.key + Array(base.publicKey.rawRepresentation))
        let seed = HKDF<SHA256>.deriveKey(inputKeyMaterial: ikm, info: context, outputByteCount: 32)
        return try Curve25519.Signing.PrivateKey(rawRepresentation: seed.withUnsafeBytes { Array($0) })
    }

    /// A signature with the key version, in Vault's encodings.
    static func sign(_ type: TransitKeyType, _ kv: TransitKeyVersion, input: [UInt8], options o: SignOptions, context: [UInt8]?) throws -> [UInt8] {
        let digest = o.prehashed ? input : o.hash.digest(input)
        switch type {
        case .ed25519:
            return Array(try ed25519Key(kv, derivedWith: context).signature(for: input))
        case .p256:
            let sig = try P256.Signing.PrivateKey(rawRepresentation: kv.key).signature(for: PrehashedDigest(digest, size: 32))
            return o.jws ? Array(sig.rawRepresentation) : Array(sig.derRepresentation)
        case .p384:
            let sig = try P384.Signing.PrivateKey(rawRepresentation: kv.key).signature(for: PrehashedDigest(digest, size: 48))
            return o.jws ? Array(sig.rawRepresentation) : Array(sig.derRepresentation)
        case .p521:
            let sig = try P521.Signing.PrivateKey(rawRepresentation: kv.key).signature(for: PrehashedDigest(digest, size: 66))
            return o.jws ? Array(sig.rawRepresentation) : Array(sig.derRepresentation)
        case .rsa2048, .rsa3072, .rsa4096:
            let key = try rsaPrivate(kv)
            let d = try rsaDigest(digest, o.hash)
            return Array(try key.signature(for: d, padding: o.pss ? .PSS : .insecurePKCS1v1_5).rawRepresentation)
        default:
            throw CofferError.invalid("key type \(type.rawValue) does not support signing")
        }
    }

    static func verify(_ type: TransitKeyType, _ kv: TransitKeyVersion, input: [UInt8], signature: [UInt8], options o: SignOptions, context: [UInt8]?) throws -> Bool {
        let digest = o.prehashed ? input : o.hash.digest(input)
        switch type {
        case .ed25519:
            return try ed25519Key(kv, derivedWith: context).publicKey.isValidSignature(signature, for: input)
        case .p256:
            let k = try P256.Signing.PrivateKey(rawRepresentation: kv.key).publicKey
            guard let s = o.jws ? try? P256.Signing.ECDSASignature(rawRepresentation: signature) : try? P256.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return k.isValidSignature(s, for: PrehashedDigest(digest, size: 32))
        case .p384:
            let k = try P384.Signing.PrivateKey(rawRepresentation: kv.key).publicKey
            guard let s = o.jws ? try? P384.Signing.ECDSASignature(rawRepresentation: signature) : try? P384.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return k.isValidSignature(s, for: PrehashedDigest(digest, size: 48))
        case .p521:
            let k = try P521.Signing.PrivateKey(rawRepresentation: kv.key).publicKey
            guard let s = o.jws ? try? P521.Signing.ECDSASignature(rawRepresentation: signature) : try? P521.Signing.ECDSASignature(derRepresentation: signature) else { return false }
            return k.isValidSignature(s, for: PrehashedDigest(digest, size: 66))
        case .rsa2048, .rsa3072, .rsa4096:
            let k = try rsaPrivate(kv).publicKey
            let d = try rsaDigest(digest, o.hash)
            return k.isValidSignature(_RSA.Signing.RSASignature(rawRepresentation: signature), for: d, padding: o.pss ? .PSS : .insecurePKCS1v1_5)
        default:
            throw CofferError.invalid("key type \(type.rawValue) does not support verification")
        }
    }

    /// RSA signs a digest of a known hash (its DigestInfo is added); `none` is not supported.
    static func rsaDigest(_ digest: [UInt8], _ hash: Hash) throws -> any Digest {
        switch hash {
        case .sha256: return try PrehashedSHA.sha256(digest)
        case .sha384: return try PrehashedSHA.sha384(digest)
        case .sha512: return try PrehashedSHA.sha512(digest)
        case .sha1, .none: throw CofferError.invalid("hash algorithm \(hash.rawValue) is not supported for RSA signatures")
        }
    }
}

/// A digest computed elsewhere (a prehashed input, or ECDSA over a hash of another size),
/// cut or used as it is, for swift-crypto's digest-taking signing calls.
struct PrehashedDigest: Digest {
    static var byteCount: Int { 64 }
    let bytes: [UInt8]

    /// ECDSA takes the leftmost bits of a longer digest (FIPS 186-4 §6.4); shorter ones as they are.
    init(_ digest: [UInt8], size: Int) { bytes = Array(digest.prefix(size)) }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try bytes.withUnsafeBytes(body) }
    func makeIterator() -> Array<UInt8>.Iterator { bytes.makeIterator() }
    var description: String { "PrehashedDigest" }
    func hash(into hasher: inout Hasher) { hasher.combine(bytes) }
    static func == (a: PrehashedDigest, b: PrehashedDigest) -> Bool { a.bytes == b.bytes }
}

/// SHA-2 digests rebuilt from their bytes (RSA needs the digest type to pick its DigestInfo).
enum PrehashedSHA {
    static func sha256(_ d: [UInt8]) throws -> SHA256Digest { try rebuild(d, SHA256.self) }
    static func sha384(_ d: [UInt8]) throws -> SHA384Digest { try rebuild(d, SHA384.self) }
    static func sha512(_ d: [UInt8]) throws -> SHA512Digest { try rebuild(d, SHA512.self) }

    static func rebuild<H: HashFunction>(_ d: [UInt8], _: H.Type) throws -> H.Digest {
        guard d.count == H.Digest.byteCount else { throw CofferError.invalid("the prehashed input is not a digest of the hash algorithm's size") }
        return d.withUnsafeBytes { raw in raw.loadUnaligned(as: H.Digest.self) }
    }
}
