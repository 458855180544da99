import CofferSDK
@preconcurrency import Crypto
import Foundation
import Synchronization

/// One key of the keyring: AES-256-GCM, identified by its term.
public struct KeyTerm: StoredJSONRecord, Sendable {
    public var term: UInt32
    public var key: [UInt8]
    public var installTime: Date

    public init(term: UInt32, key: [UInt8], installTime: Date) {
        self.term = term
        self.key = key
        self.installTime = installTime
    }

    public var storedJSON: JSONValue {
        ["term": .int(Int64(term)), "key": .storedBytes(key), "installTime": .storedDate(installTime)]
    }

    public init(storedJSON: JSONValue) throws {
        let f = try StoredFields(storedJSON)
        guard let term = UInt32(exactly: try f.int("term")) else { throw CofferError.internalError("stored record: bad key term") }
        self.init(term: term, key: try f.bytes("key"), installTime: try f.date("installTime"))
    }
}

/// The barrier keyring: every term ever installed (old data stays readable) and the active one.
public struct Keyring: StoredJSONRecord, Sendable {
    public var terms: [KeyTerm]
    public var activeTerm: UInt32

    public init(terms: [KeyTerm], activeTerm: UInt32) {
        self.terms = terms
        self.activeTerm = activeTerm
    }

    public var storedJSON: JSONValue { ["terms": terms.storedJSON, "activeTerm": .int(Int64(activeTerm))] }

    public init(storedJSON: JSONValue) throws {
        let f = try StoredFields(storedJSON)
        guard let active = UInt32(exactly: try f.int("activeTerm")) else { throw CofferError.internalError("stored record: bad active term") }
        self.init(terms: try [KeyTerm](storedJSON: f.value("terms")), activeTerm: active)
    }

    public static func generate() -> Keyring {
        Keyring(terms: [KeyTerm(term: 1, key: SecureRandom.bytes(32), installTime: Date())], activeTerm: 1)
    }

    public func rotated() -> Keyring {
        var k = self
        let next = (terms.map(\.term).max() ?? 0) + 1
        k.terms.append(KeyTerm(term: next, key: SecureRandom.bytes(32), installTime: Date()))
        k.activeTerm = next
        return k
    }
}


/// AES-256-GCM with the storage path as additional data: a value moved to another path,
/// truncated or altered fails to open.
///
/// Format: `0x01 | term (4 bytes, big endian) | nonce (12) | ciphertext | tag (16)`.
public enum Sealer {
    static let version: UInt8 = 1

    public static func seal(_ plaintext: [UInt8], key: SymmetricKey, term: UInt32, aad: String) throws -> [UInt8] {
        let box = try AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(), authenticating: Array(aad.utf8))
        var out: [UInt8] = [version]
        out.reserveCapacity(plaintext.count + 33)
        withUnsafeBytes(of: term.bigEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: box.nonce)
        out.append(contentsOf: box.ciphertext)
        out.append(contentsOf: box.tag)
        return out
    }

    public static func term(of sealed: [UInt8]) -> UInt32? {
        guard sealed.count >= 33, sealed[0] == version else { return nil }
        return UInt32(sealed[1]) << 24 | UInt32(sealed[2]) << 16 | UInt32(sealed[3]) << 8 | UInt32(sealed[4])
    }

    public static func open(_ sealed: [UInt8], key: SymmetricKey, aad: String) throws -> [UInt8] {
        guard sealed.count >= 33, sealed[0] == version else {
            throw CofferError.internalError("stored value is not barrier ciphertext")
        }
        do {
            // nonce | ciphertext | tag is exactly swift-crypto's "combined" representation.
            let box = try AES.GCM.SealedBox(combined: sealed[5...])
            var aadCopy = aad
            return try aadCopy.withUTF8 { Array(try AES.GCM.open(box, using: key, authenticating: $0)) }
        } catch {
            throw CofferError.internalError("stored value failed authentication (tampered or wrong key)")
        }
    }
}

/// The cryptographic barrier: plaintext above, ciphertext below.
///
/// Everything Coffer stores goes through here, except the seal configuration and the
/// encrypted root key / keyring, which the seal manages. Encryption counts per term are
/// kept for `sys/key-status`.
public final class Barrier: LogicalStorage {
    public let physical: any Storage

    struct State {
        var keyring: Keyring?
        var keys: [UInt32: SymmetricKey] = [:]
        var encryptions: Int64 = 0
    }

    let state = Mutex(State())

    /// Parsed records by path, each with the GCM tag of the ciphertext it came from. A hit
    /// needs the stored ciphertext to carry the same tag, so the answer is exactly what
    /// decrypting and parsing would give; it only skips the work.
    struct DecodedEntry { var tag: ArraySlice<UInt8>; var value: JSONValue }
    let decoded = Mutex<[String: DecodedEntry]>([:])
    let decodedCapacity: Int

    public init(physical: any Storage, decodedCacheCapacity: Int = 50_000) {
        self.physical = physical
        self.decodedCapacity = decodedCacheCapacity
    }

    public var isUnsealed: Bool { state.withLock { $0.keyring != nil } }

    /// Installs a keyring (unseal).
    public func install(_ keyring: Keyring) {
        state.withLock { s in
            s.keyring = keyring
            s.keys = Dictionary(uniqueKeysWithValues: keyring.terms.map { ($0.term, SymmetricKey(data: $0.key)) })
        }
    }

    /// Forgets every cached record (another node may have changed any of them).
    public func clearDecoded() {
        decoded.withLock { $0.removeAll() }
    }

    /// Forgets every key and every cached record (seal).
    public func clear() {
        state.withLock { $0 = State() }
        decoded.withLock { $0.removeAll() }
    }

    public var keyring: Keyring? { state.withLock { $0.keyring } }
    public var encryptions: Int64 { state.withLock { $0.encryptions } }

    func activeKey() throws -> (SymmetricKey, UInt32) {
        try state.withLock { s in
            guard let ring = s.keyring, let key = s.keys[ring.activeTerm] else {
                throw CofferError(.sealed, "Vault is sealed")
            }
            s.encryptions += 1
            return (key, ring.activeTerm)
        }
    }

    public func encrypt(_ plaintext: [UInt8], path: String) throws -> [UInt8] {
        let (key, term) = try activeKey()
        return try Sealer.seal(plaintext, key: key, term: term, aad: path)
    }

    public func decrypt(_ sealed: [UInt8], path: String) throws -> [UInt8] {
        guard let term = Sealer.term(of: sealed) else {
            throw CofferError.internalError("stored value is not barrier ciphertext")
        }
        let key: SymmetricKey = try state.withLock { s in
            guard s.keyring != nil else { throw CofferError(.sealed, "Vault is sealed") }
            guard let k = s.keys[term] else { throw CofferError.internalError("no key for term \(term)") }
            return k
        }
        return try Sealer.open(sealed, key: key, aad: path)
    }

    public func get(_ key: String) async throws -> [UInt8]? {
        guard isUnsealed else { throw CofferError(.sealed, "Vault is sealed") }
        guard let sealed = try await physical.get(key) else { return nil }
        return try decrypt(sealed, path: key)
    }

    public func getJSON(_ key: String) async throws -> JSONValue? {
        guard isUnsealed else { throw CofferError(.sealed, "Vault is sealed") }
        guard let sealed = try await physical.get(key) else { return nil }
        let tag = sealed.suffix(16)
        if let hit = decoded.withLock({ $0[key] }), hit.tag == tag { return hit.value }
        let value = try Self.parseRecord(try decrypt(sealed, path: key))
        decoded.withLock { c in
            if c.count >= decodedCapacity { c.removeAll(keepingCapacity: true) }
            c[key] = DecodedEntry(tag: tag, value: value)
        }
        return value
    }

    public func put(_ key: String, _ value: [UInt8]) async throws {
        decoded.withLock { _ = $0.removeValue(forKey: key) }
        try await physical.put(key, try encrypt(value, path: key))
    }

    /// Every entry encrypted, then stored in one physical `putAll` (atomic where the store is).
    public func putAll(_ entries: [StorageEntry]) async throws {
        decoded.withLock { d in for e in entries { d.removeValue(forKey: e.key) } }
        try await physical.putAll(entries.map { StorageEntry(key: $0.key, value: try encrypt($0.value, path: $0.key)) })
    }

    public func delete(_ key: String) async throws {
        guard isUnsealed else { throw CofferError(.sealed, "Vault is sealed") }
        decoded.withLock { _ = $0.removeValue(forKey: key) }
        try await physical.delete(key)
    }

    public func list(prefix: String) async throws -> [String] {
        guard isUnsealed else { throw CofferError(.sealed, "Vault is sealed") }
        return try await physical.list(prefix: prefix)
    }
}
