import CofferSDK
@preconcurrency import Crypto
import Dispatch
import Foundation
import Synchronization
import _CryptoExtras

/// Password hashes for auth methods: scrypt (memory-hard, swift-crypto's BoringSSL
/// implementation), stored as `scrypt$<log2 N>$<r>$<p>$<salt b64>$<hash b64>` so the cost
/// can rise without breaking stored users.
///
/// scrypt burns tens of milliseconds of one core per call by design: it never runs on the
/// Swift concurrency pool (two threads on a two-core machine; a login burst would stall
/// every tenant's reads), but on a few threads of its own, one per core.
public enum PasswordHash {
    /// N = 2^14, r = 8, p = 1 (scrypt's parameters for interactive logins): 16 MiB and ~45 ms per hash here, the class of Vault's
    /// bcrypt at its default cost 10.
    static let logN = 14
    static let r = 8
    static let p = 1
    static let saltBytes = 16
    static let hashBytes = 32

    /// A new hash of `password` (random salt).
    public static func make(_ password: String) async throws -> String {
        let salt = SecureRandom.bytes(saltBytes)
        let digest = try await derive(password, salt: salt, logN: logN, r: r, p: p)
        return "scrypt$\(logN)$\(r)$\(p)$\(Data(salt).base64EncodedString())$\(Data(digest).base64EncodedString())"
    }

    /// Whether `password` matches `stored`. A malformed stored hash never matches. With
    /// `stored` nil (no such user) a dummy hash of the same cost is checked, so an unknown
    /// user costs what a wrong password costs.
    public static func verify(_ password: String, against stored: String?) async -> Bool {
        let target = stored ?? dummy
        let parts = target.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 6, parts[0] == "scrypt", let logN = Int(parts[1]), let r = Int(parts[2]), let p = Int(parts[3]),
              (10...20).contains(logN), (1...16).contains(r), (1...4).contains(p),
              let salt = Data(base64Encoded: String(parts[4])), let expected = Data(base64Encoded: String(parts[5])),
              expected.count == hashBytes,
              let digest = try? await derive(password, salt: Array(salt), logN: logN, r: r, p: p)
        else { return false }
        return constantTimeEquals(digest, Array(expected)) && stored != nil
    }

    /// A fixed hash of a random password, checked for unknown users.
    static let dummy: String = {
        let salt = SecureRandom.bytes(saltBytes)
        let key = try? KDF.Scrypt.deriveKey(from: SecureRandom.bytes(16), salt: salt, outputByteCount: hashBytes, rounds: 1 << logN, blockSize: r, parallelism: p)
        let digest = key?.withUnsafeBytes { Array($0) } ?? [UInt8](repeating: 0, count: hashBytes)
        return "scrypt$\(logN)$\(r)$\(p)$\(Data(salt).base64EncodedString())$\(Data(digest).base64EncodedString())"
    }()

    static func derive(_ password: String, salt: [UInt8], logN: Int, r: Int, p: Int) async throws -> [UInt8] {
        let bytes = Array(password.utf8)
        return try await CPUWork.shared.run {
            let key = try KDF.Scrypt.deriveKey(from: bytes, salt: salt, outputByteCount: hashBytes, rounds: 1 << logN, blockSize: r, parallelism: p)
            return key.withUnsafeBytes { Array($0) }
        }
    }
}