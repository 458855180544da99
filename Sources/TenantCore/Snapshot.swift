import CofferSDK
@preconcurrency import Crypto
import Foundation

/// A storage snapshot: every physical key and value of a node, as of one point in time,
/// still encrypted (barrier ciphertext, the seal configuration, the sealed root key and
/// keyring). What `sys/storage/snapshot` hands out and takes back.
///
/// The file, all integers big-endian:
///
/// ```
/// magic      8 bytes   "COFSNAP\n"
/// version    u32       1
/// header     u32 length, then JSON (`Header`)
/// entries    key_count times: u32 key length, key (UTF-8), u32 value length, value
/// trailer    32 bytes  SHA-256 of every byte before it
/// ```
///
/// `decode` checks the magic, the version and the trailer before it reads anything else,
/// bounds every length by the bytes that remain, and requires the key count to match, the
/// keys to be unique and the seal configuration, root key and keyring to be present.
public struct StorageSnapshot: Sendable {
    /// The JSON header: what the snapshot is, for humans and for the restore checks.
    public struct Header: Codable, Sendable, Equatable {
        public var formatVersion: Int
        /// RFC 3339, UTC.
        public var createdAt: String
        public var keyCount: Int
        /// The backend it was taken from (`sqlite`, `etcd`, `inmem`).
        public var storageType: String
        /// Lower-case hex SHA-256 of the stored (sealed) root key: the same for every
        /// snapshot of one cluster, different for another cluster.
        public var clusterFingerprint: String
        public var cofferVersion: String

        enum CodingKeys: String, CodingKey {
            case formatVersion = "format_version"
            case createdAt = "created_at"
            case keyCount = "key_count"
            case storageType = "storage_type"
            case clusterFingerprint = "cluster_fingerprint"
            case cofferVersion = "coffer_version"
        }
    }

    public var header: Header
    /// In key order as the source scanned them.
    public var entries: [StorageEntry]

    public static let magic: [UInt8] = Array("COFSNAP\n".utf8)
    public static let formatVersion: UInt32 = 1
    /// The physical keys outside the barrier that a snapshot must carry.
    public static let requiredKeys = [Core.sealConfigKey, Core.rootKeyKey, Core.keyringKey]
    static let maxHeaderBytes = 1 << 20
    static let trailerBytes = 32

    /// The value of a required key.
    public func value(_ key: String) -> [UInt8]? { entries.first { $0.key == key }?.value }

    public static func fingerprint(sealedRootKey: [UInt8]) -> String {
        Hex.encode(Array(SHA256.hash(data: sealedRootKey)))
    }

    // MARK: writing

    /// Builds a snapshot file from entries handed in as a scan delivers them.
    public struct Encoder: Sendable {
        var body: [UInt8] = []
        var count = 0
        var sealedRootKey: [UInt8]?
        var present = Set<String>()

        public init() {}

        public mutating func append(_ entry: StorageEntry) {
            if entry.key == Core.rootKeyKey { sealedRootKey = entry.value }
            if StorageSnapshot.requiredKeys.contains(entry.key) { present.insert(entry.key) }
            StorageSnapshot.appendLength(entry.key.utf8.count, to: &body)
            body.append(contentsOf: entry.key.utf8)
            StorageSnapshot.appendLength(entry.value.count, to: &body)
            body.append(contentsOf: entry.value)
            count += 1
        }

        /// The finished file. Fails when the storage lacks the seal configuration, root key
        /// or keyring (an uninitialized node has nothing to snapshot).
        public func finish(storageType: String, cofferVersion: String, createdAt: Date = Date()) throws -> [UInt8] {
            for key in StorageSnapshot.requiredKeys where !present.contains(key) {
                throw CofferError.invalid("cannot take a snapshot: storage holds no \(key) (is the server initialized?)")
            }
            let header = Header(
                formatVersion: Int(StorageSnapshot.formatVersion), createdAt: RFC3339.format(createdAt), keyCount: count,
                storageType: storageType, clusterFingerprint: StorageSnapshot.fingerprint(sealedRootKey: sealedRootKey ?? []),
                cofferVersion: cofferVersion)
            let json = Array(try StoredJSON.encoder.encode(header))
            var out: [UInt8] = []
            out.reserveCapacity(StorageSnapshot.magic.count + 8 + json.count + body.count + StorageSnapshot.trailerBytes)
            out.append(contentsOf: StorageSnapshot.magic)
            StorageSnapshot.appendLength(Int(StorageSnapshot.formatVersion), to: &out)
            StorageSnapshot.appendLength(json.count, to: &out)
            out.append(contentsOf: json)
            out.append(contentsOf: body)
            out.append(contentsOf: SHA256.hash(data: out))
            return out
        }
    }

    static func appendLength(_ n: Int, to out: inout [UInt8]) {
        let v = UInt32(n)
        out.append(contentsOf: [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)])
    }

    // MARK: reading

    static func corrupt(_ why: String) -> CofferError { CofferError.invalid("snapshot is corrupt: \(why)") }

    /// Parses and fully validates a snapshot file; throws `.invalidRequest` with a clear
    /// message on anything wrong, without allocating more than the input's size.
    public static func decode(_ bytes: [UInt8]) throws -> StorageSnapshot {
        guard bytes.count >= magic.count, bytes.starts(with: magic) else {
            throw CofferError.invalid("not a Coffer snapshot (bad magic bytes)")
        }
        guard bytes.count >= magic.count + 4 else { throw corrupt("truncated") }
        var reader = Reader(bytes: bytes, position: magic.count, end: bytes.count)
        let version = try reader.u32()
        guard version == formatVersion else {
            throw CofferError.invalid("snapshot format version \(version) is not supported (this server reads version \(formatVersion))")
        }
        guard bytes.count >= magic.count + 8 + trailerBytes else { throw corrupt("truncated") }
        let end = bytes.count - trailerBytes
        let digest = Array(SHA256.hash(data: bytes[..<end]))
        guard digest == Array(bytes[end...]) else {
            throw corrupt("checksum mismatch (the file is damaged or truncated)")
        }
        reader.end = end
        let headerLength = try reader.length()
        guard headerLength <= maxHeaderBytes else { throw corrupt("header too large") }
        let header: Header
        do {
            header = try StoredJSON.decoder.decode(Header.self, from: Data(try reader.take(headerLength)))
        } catch {
            throw corrupt("unreadable header")
        }
        guard header.formatVersion == Int(formatVersion) else { throw corrupt("header and file disagree on the format version") }
        // Every entry takes at least 8 bytes: a larger count cannot be honest.
        guard header.keyCount >= 0, header.keyCount <= reader.remaining / 8 else { throw corrupt("key count does not match the entries") }
        var entries: [StorageEntry] = []
        entries.reserveCapacity(header.keyCount)
        var seen = Set<String>()
        seen.reserveCapacity(header.keyCount)
        for _ in 0..<header.keyCount {
            let keyBytes = try reader.take(try reader.length())
            guard !keyBytes.isEmpty, let key = String(validating: keyBytes, as: UTF8.self) else { throw corrupt("an entry has an invalid key") }
            let value = Array(try reader.take(try reader.length()))
            guard seen.insert(key).inserted else { throw corrupt("a key appears twice") }
            entries.append(StorageEntry(key: key, value: value))
        }
        guard reader.remaining == 0 else { throw corrupt("key count does not match the entries") }
        let snapshot = StorageSnapshot(header: header, entries: entries)
        for key in requiredKeys where !seen.contains(key) {
            throw CofferError.invalid("snapshot is incomplete: it holds no \(key)")
        }
        guard fingerprint(sealedRootKey: snapshot.value(Core.rootKeyKey) ?? []) == header.clusterFingerprint else {
            throw corrupt("the cluster fingerprint does not match its root key")
        }
        return snapshot
    }

    /// A bounded cursor: nothing is read, or allocated, past `end`.
    struct Reader {
        let bytes: [UInt8]
        var position: Int
        var end: Int

        var remaining: Int { end - position }

        mutating func u32() throws -> UInt32 {
            guard remaining >= 4 else { throw StorageSnapshot.corrupt("truncated") }
            let b = bytes[position..<position + 4]
            position += 4
            return b.reduce(0) { $0 << 8 | UInt32($1) }
        }

        /// A length field, which must fit in what remains.
        mutating func length() throws -> Int {
            let n = Int(try u32())
            guard n <= remaining else { throw StorageSnapshot.corrupt("a length field exceeds the file") }
            return n
        }

        mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
            guard n >= 0, n <= remaining else { throw StorageSnapshot.corrupt("truncated") }
            defer { position += n }
            return bytes[position..<position + n]
        }
    }
}
