import CofferSDK
import Foundation

/// A sealable namespace's key material as its parent stores it (issue #21 item 8): the
/// keyring is sealed with the namespace's own root key, and that root key with an unseal
/// key that exists only as the tenant's Shamir shares. Nothing here, nor anything the
/// operator's keys open, decrypts the namespace without a quorum of those shares.
public struct NamespaceSeal: Codable, Sendable, Equatable {
    public var shares: Int
    public var threshold: Int
    /// The namespace root key, sealed with the unseal key (AAD `namespace-root-key/<id>`).
    public var wrappedRootKey: [UInt8]
    /// The keyring's stored JSON, sealed with the namespace root key (AAD `namespace-keyring/<id>`).
    public var sealedKeyring: [UInt8]

    public init(shares: Int, threshold: Int, wrappedRootKey: [UInt8], sealedKeyring: [UInt8]) {
        self.shares = shares
        self.threshold = threshold
        self.wrappedRootKey = wrappedRootKey
        self.sealedKeyring = sealedKeyring
    }

    /// The stored field names (the same in `storedJSON` and the Codable form).
    enum CodingKeys: String, CodingKey {
        case shares, threshold
        case wrappedRootKey = "rootKey"
        case sealedKeyring = "keyring"
    }

    public static func rootKeyAAD(_ id: String) -> String { "namespace-root-key/" + id }
    public static func keyringAAD(_ id: String) -> String { "namespace-keyring/" + id }
}

/// A child namespace as its parent stores it, behind the parent's barrier.
///
/// The record holds the child's keyring: the child's data is encrypted with keys that only
/// exist inside its parent's encrypted storage (DESIGN §3). Deleting the record
/// crypto-shreds the child, whatever rows remain. A sealable namespace's record holds no
/// keyring, only `seal` (its keyring sealed under the tenant's own key shares).
public struct NamespaceRecord: StoredJSONRecord, Sendable {
    public var id: String
    /// Full path with a trailing slash (`acme/payments/`).
    public var path: String
    public var customMetadata: [String: String]
    /// nil for a sealable namespace (see `seal`).
    public var keyring: Keyring?
    public var createdAt: Date
    /// SHA-256 of the unlock key while the namespace's API is locked.
    public var lockHash: [UInt8]?
    public var seal: NamespaceSeal?

    public init(id: String, path: String, customMetadata: [String: String], keyring: Keyring?, createdAt: Date, lockHash: [UInt8]? = nil,
                seal: NamespaceSeal? = nil) {
        self.id = id
        self.path = path
        self.customMetadata = customMetadata
        self.keyring = keyring
        self.createdAt = createdAt
        self.lockHash = lockHash
        self.seal = seal
    }

    public var storedJSON: JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(id), "path": .string(path), "customMetadata": .storedStrings(customMetadata),
            "createdAt": .storedDate(createdAt),
        ]
        if let keyring { o["keyring"] = keyring.storedJSON }
        if let lockHash { o["lockHash"] = .storedBytes(lockHash) }
        if let seal {
            o["seal"] = [
                "shares": .int(Int64(seal.shares)), "threshold": .int(Int64(seal.threshold)),
                "rootKey": .storedBytes(seal.wrappedRootKey), "keyring": .storedBytes(seal.sealedKeyring),
            ]
        }
        return .object(o)
    }

    public init(storedJSON: JSONValue) throws {
        let f = try StoredFields(storedJSON)
        var seal: NamespaceSeal?
        if f.has("seal") {
            let s = try StoredFields(f.value("seal"))
            seal = NamespaceSeal(shares: try s.int("shares"), threshold: try s.int("threshold"),
                                 wrappedRootKey: try s.bytes("rootKey"), sealedKeyring: try s.bytes("keyring"))
        }
        self.init(id: try f.string("id"), path: try f.string("path"), customMetadata: try f.strings("customMetadata"),
                  keyring: f.has("keyring") ? try Keyring(storedJSON: f.value("keyring")) : nil, createdAt: try f.date("createdAt"),
                  lockHash: f.has("lockHash") ? try f.bytes("lockHash") : nil, seal: seal)
        guard self.keyring != nil || self.seal != nil else { throw CofferError.internalError("namespace record without a keyring") }
    }

    public var json: JSONValue {
        var o: [String: JSONValue] = ["id": .string(id), "path": .string(path), "locked": .bool(lockHash != nil),
                                      "custom_metadata": .object(customMetadata.mapValues { .string($0) })]
        if seal != nil { o["sealable"] = true }
        return .object(o)
    }
}

/// Namespace path rules shared by the API and resolution.
public enum NamespacePath {
    /// Normalises a user-given path (`acme/payments`, `/acme/payments/`) to `acme/payments/`;
    /// nil for anything that could escape or alias: empty or dot segments, control characters,
    /// percent signs, backslashes.
    public static func normalize(_ raw: String) -> String? {
        // Byte scan: this runs for every request that names a namespace.
        var bytes = Array(raw.utf8)[...]
        while bytes.first == slash { bytes = bytes.dropFirst() }
        while bytes.last == slash { bytes = bytes.dropLast() }
        if bytes.isEmpty { return "" }
        for seg in bytes.split(separator: slash, omittingEmptySubsequences: false) {
            guard isValidName(seg) else { return nil }
        }
        return String(decoding: bytes, as: UTF8.self) + "/"
    }

    /// One segment: letters, digits, `-`, `_`, `.` (not leading, never two in a row), at most
    /// 64 ASCII characters.
    public static func isValidName(_ seg: Substring) -> Bool { isValidName(Array(seg.utf8)[...]) }

    static func isValidName(_ seg: ArraySlice<UInt8>) -> Bool {
        guard !seg.isEmpty, seg.count <= 64, seg.first != dot else { return false }
        var previous: UInt8 = 0
        for c in seg {
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"):
                break
            case dot:
                if previous == dot { return false }
            default:
                return false
            }
            previous = c
        }
        return true
    }

    static let slash = UInt8(ascii: "/")
    static let dot = UInt8(ascii: ".")

    /// Reserved first segments that would shadow core paths.
    public static let reserved: Set<String> = ["sys", "auth", "cubbyhole", "identity", "root"]

    /// A new namespace id: 7 base62 digits of the creation time in milliseconds since
    /// 2020-01-01 (111 years of them), then 3 random ones (`0Q3kZ1bx7T`). Vault's ids are 5
    /// random characters; clients treat them as opaque. Time first, in ASCII order, because the
    /// id is the storage prefix of everything in the namespace (`ns/<id>/…`): namespaces
    /// created together write next to each other in the key order, so a group commit touches
    /// a few pages at the end of the tree instead of one random page per row, and a large
    /// store still inserts into pages it already has in cache. Uniqueness is checked by the
    /// caller (in-process reservation, then storage).
    public static func newID(now: Date = Date()) -> String {
        let ms = UInt64(max(0, (now.timeIntervalSince1970 - 1_577_836_800) * 1000))
        var digits = [Character](repeating: "0", count: 7)
        var v = ms
        for i in stride(from: 6, through: 0, by: -1) {
            digits[i] = sortableDigits[Int(v % 62)]
            v /= 62
        }
        return String(digits) + TokenID.random(3)
    }

    /// Where a namespace's rows live in physical storage.
    public static func storagePrefix(id: String) -> String { "ns/" + id + "/" }

    /// Base62 digits in ASCII order, so string order is numeric order.
    static let sortableDigits = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
}
