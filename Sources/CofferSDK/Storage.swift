/// One change in a `Storage` change feed.
public struct StorageChange: Sendable, Hashable {
    public let revision: UInt64
    public let key: String
    /// `true` when the key was deleted at this revision.
    public let deleted: Bool

    public init(revision: UInt64, key: String, deleted: Bool) {
        self.revision = revision
        self.key = key
        self.deleted = deleted
    }
}

/// What `Storage.changes(since:)` returns.
public enum StorageChanges: Sendable, Hashable {
    /// Every change after the requested revision, oldest first (possibly empty).
    case changes([StorageChange], head: UInt64)
    /// The feed no longer holds the requested revision: the reader must re-list.
    case compacted(head: UInt64)
}

/// The physical storage tier: a small ordered key/value store.
///
/// Values written here are barrier ciphertext (or the seal configuration); a `Storage`
/// never sees plaintext. `list(prefix:)` follows Vault's semantics: the immediate children
/// of the prefix, with sub-folders returned once each with a trailing `/`, sorted.
public protocol Storage: Sendable {
    func get(_ key: String) async throws -> [UInt8]?
    func put(_ key: String, _ value: [UInt8]) async throws
    func delete(_ key: String) async throws
    func list(prefix: String) async throws -> [String]
    /// Atomically replaces `key`'s value when it currently equals `expected` (`nil`: the key
    /// must not exist). `new == nil` deletes. Returns whether the swap happened.
    func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool
    /// The ordered change feed after `revision`, at most `limit` entries.
    func changes(since revision: UInt64, limit: Int) async throws -> StorageChanges
    /// Stores every entry (distinct keys) as one atomic write where the store has one (one
    /// SQLite transaction, one etcd transaction): after a failure none of them is stored.
    /// The default writes them one by one, in order.
    func putAll(_ entries: [StorageEntry]) async throws
}

extension Storage {
    public func putAll(_ entries: [StorageEntry]) async throws {
        for e in entries { try await put(e.key, e.value) }
    }

    /// Vault's list semantics over a sorted list of full keys.
    public static func immediateChildren(of prefix: String, in keys: some Sequence<String>) -> [String] {
        var out: [String] = []
        var last: String?
        for key in keys where key.hasPrefix(prefix) {
            let rest = key.dropFirst(prefix.count)
            let child: String
            if let slash = rest.firstIndex(of: "/") {
                child = String(rest[...slash])
            } else {
                child = String(rest)
            }
            if child.isEmpty || child == last { continue }
            out.append(child)
            last = child
        }
        var seen = Set<String>()
        return out.filter { seen.insert($0).inserted }.sorted()
    }
}

/// Plaintext key/value access above the barrier: what engines and core stores use.
public protocol LogicalStorage: Sendable {
    func get(_ key: String) async throws -> [UInt8]?
    func put(_ key: String, _ value: [UInt8]) async throws
    func delete(_ key: String) async throws
    func list(prefix: String) async throws -> [String]
    /// Reads and parses a JSON record. A barrier may answer from a cache of parsed records.
    func getJSON(_ key: String) async throws -> JSONValue?
    /// Stores every entry (distinct keys) in one atomic physical write where the store has one
    /// (`Storage.putAll`). The default writes them one by one, in order.
    func putAll(_ entries: [StorageEntry]) async throws
}

/// A `LogicalStorage` confined to one key prefix: an engine sees only its own records.
///
/// Read-check-write sections (a version counter, a check-and-set, a use count) run under
/// `withLock`, `compareAndSet` or `update`: they are serialized per key across every view of
/// the same namespace in this process. That is atomic for the cluster because only the
/// active node writes (standbys forward writes, DESIGN §5) and a deposed node's writes are
/// fenced below the barrier.
public struct StorageView: LogicalStorage {
    public let underlying: any LogicalStorage
    public let prefix: String
    /// The per-key locks shared by every view of one namespace (`lockScope`) in this process.
    public let locks: KeyedLock
    public let lockScope: String

    public init(_ underlying: any LogicalStorage, prefix: String, locks: KeyedLock = KeyedLock(), lockScope: String = "") {
        self.underlying = underlying
        self.prefix = prefix
        self.locks = locks
        self.lockScope = lockScope
    }

    /// A view of a sub-prefix of this view (same locks).
    public func sub(_ prefix: String) -> StorageView {
        StorageView(underlying, prefix: self.prefix + prefix, locks: locks, lockScope: lockScope)
    }

    /// Runs `body` holding the lock of `key` (a key of this view, which need not exist): one
    /// caller at a time per key, in arrival order. Every writer of the records a section
    /// reads must take the same key. Not reentrant: a section must not lock its own key again.
    public func withLock<T: Sendable>(_ key: String, _ body: () async throws -> T) async throws -> T {
        let full = try checked(key)
        return try await locks.withLock(lockScope + "\u{0}" + full, body)
    }

    /// Replaces `key`'s value when it currently equals `expected` (`nil`: the key must not
    /// exist); `new == nil` deletes. Answers whether the swap happened.
    public func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        try await withLock(key) {
            guard try await get(key) == expected else { return false }
            if let new { try await put(key, new) } else { try await delete(key) }
            return true
        }
    }

    /// Reads `key`, hands its value to `transform` and stores what it answers (`nil`
    /// deletes), as one step; answers the stored value. An error from `transform` changes nothing.
    @discardableResult
    public func update(_ key: String, _ transform: @Sendable ([UInt8]?) throws -> [UInt8]?) async throws -> [UInt8]? {
        try await withLock(key) {
            let new = try transform(try await get(key))
            if let new { try await put(key, new) } else { try await delete(key) }
            return new
        }
    }

    func checked(_ key: String) throws -> String {
        // A view can never escape its prefix: relative segments are refused outright.
        if key.utf8.first == UInt8(ascii: "/") || Self.hasDotDotSegment(key) {
            throw CofferError.invalid("invalid storage key")
        }
        return prefix + key
    }

    /// Does `key` have a `..` path segment? (Scans bytes; no allocation.)
    static func hasDotDotSegment(_ key: String) -> Bool {
        var segmentLength = 0
        var dots = 0
        for b in key.utf8 {
            if b == UInt8(ascii: "/") {
                if segmentLength == 2 && dots == 2 { return true }
                segmentLength = 0
                dots = 0
            } else {
                segmentLength += 1
                if b == UInt8(ascii: ".") { dots += 1 }
            }
        }
        return segmentLength == 2 && dots == 2
    }

    public func get(_ key: String) async throws -> [UInt8]? { try await underlying.get(checked(key)) }
    public func put(_ key: String, _ value: [UInt8]) async throws { try await underlying.put(checked(key), value) }
    public func delete(_ key: String) async throws { try await underlying.delete(checked(key)) }
    public func list(prefix: String) async throws -> [String] { try await underlying.list(prefix: checked(prefix)) }
    public func getJSON(_ key: String) async throws -> JSONValue? { try await underlying.getJSON(checked(key)) }
    public func putAll(_ entries: [StorageEntry]) async throws {
        try await underlying.putAll(entries.map { StorageEntry(key: try checked($0.key), value: $0.value) })
    }

    /// Deletes every key below `prefix` (recursively).
    public func deleteTree(_ prefix: String = "") async throws {
        for child in try await list(prefix: prefix) {
            if child.hasSuffix("/") {
                try await deleteTree(prefix + child)
            } else {
                try await delete(prefix + child)
            }
        }
    }
}

extension LogicalStorage {
    /// Reads and decodes a JSON record.
    public func getJSON(_ key: String) async throws -> JSONValue? {
        guard let bytes = try await get(key) else { return nil }
        return try Self.parseRecord(bytes)
    }

    public static func parseRecord(_ bytes: [UInt8]) throws -> JSONValue {
        do {
            return try JSONValue.parse(bytes)
        } catch {
            throw CofferError.internalError("stored record is corrupt")
        }
    }

    public func putJSON(_ key: String, _ value: JSONValue) async throws {
        try await put(key, value.serialized())
    }

    public func putAll(_ entries: [StorageEntry]) async throws {
        for e in entries { try await put(e.key, e.value) }
    }

    public func getCodable<T: Decodable>(_ type: T.Type, _ key: String) async throws -> T? {
        guard let bytes = try await get(key) else { return nil }
        do {
            return try StoredJSON.decoder.decode(T.self, from: Data(bytes))
        } catch {
            throw CofferError.internalError("stored record is corrupt", cause: error)
        }
    }

    public func putCodable<T: Encodable>(_ key: String, _ value: T) async throws {
        try await put(key, Array(try StoredJSON.encoder.encode(value)))
    }

    /// A record with a hand-written stored form (chosen over the `Codable` overloads when the
    /// type is known to conform).
    public func getCodable<T: StoredJSONRecord>(_ type: T.Type, _ key: String) async throws -> T? {
        guard let bytes = try await get(key) else { return nil }
        do {
            return try T(storedJSON: JSONValue.parse(bytes))
        } catch {
            throw CofferError.internalError("stored record is corrupt", cause: error)
        }
    }

    public func putCodable<T: StoredJSONRecord>(_ key: String, _ value: T) async throws {
        try await put(key, value.storedJSON.serialized())
    }
}

/// A record stored as the same JSON its synthesized `Codable` form reads and writes (property
/// names as keys, `Date` as seconds since 2001, byte arrays as arrays of numbers), built and
/// read through `JSONValue` by hand. The records read and written on every namespace
/// creation and load (namespace records, keyrings, mount tables) spent ~9% of the server's
/// CPU in JSONEncoder/JSONDecoder's generic machinery. Data written either way reads either way.
public protocol StoredJSONRecord: Codable {
    var storedJSON: JSONValue { get }
    init(storedJSON: JSONValue) throws
}

extension Array: StoredJSONRecord where Element: StoredJSONRecord {
    public var storedJSON: JSONValue { .array(map(\.storedJSON)) }
    public init(storedJSON: JSONValue) throws {
        guard case .array(let items) = storedJSON else { throw StoredFields.mismatch("array") }
        self = try items.map(Element.init(storedJSON:))
    }
}

extension Dictionary: StoredJSONRecord where Key == String, Value: StoredJSONRecord {
    public var storedJSON: JSONValue { .object(mapValues(\.storedJSON)) }
    public init(storedJSON: JSONValue) throws {
        guard case .object(let items) = storedJSON else { throw StoredFields.mismatch("object") }
        self = try items.mapValues(Value.init(storedJSON:))
    }
}

/// Reads the fields of a stored record's JSON object, in the shapes `Codable` writes.
public struct StoredFields {
    let fields: [String: JSONValue]

    public init(_ value: JSONValue) throws {
        guard case .object(let o) = value else { throw Self.mismatch("object") }
        fields = o
    }

    static func mismatch(_ expected: String, _ key: String = "") -> CofferError {
        CofferError.internalError("stored record: expected \(expected)\(key.isEmpty ? "" : " at \(key)")")
    }

    public func has(_ key: String) -> Bool { fields[key].map { !$0.isNull } ?? false }

    public func value(_ key: String) throws -> JSONValue {
        guard let v = fields[key] else { throw Self.mismatch("a value", key) }
        return v
    }

    public func string(_ key: String) throws -> String {
        guard case .string(let s)? = fields[key] else { throw Self.mismatch("string", key) }
        return s
    }

    public func int(_ key: String) throws -> Int {
        guard case .int(let i)? = fields[key], let v = Int(exactly: i) else { throw Self.mismatch("integer", key) }
        return v
    }

    public func bool(_ key: String) throws -> Bool {
        guard case .bool(let b)? = fields[key] else { throw Self.mismatch("bool", key) }
        return b
    }

    /// A number (integral or not) as a `Double`.
    public func double(_ key: String) throws -> Double {
        switch fields[key] {
        case .int(let i)?: return Double(i)
        case .double(let d)?: return d
        default: throw Self.mismatch("number", key)
        }
    }

    /// An array of strings.
    public func stringList(_ key: String) throws -> [String] {
        guard case .array(let a)? = fields[key] else { throw Self.mismatch("array", key) }
        return try a.map { v in
            guard case .string(let s) = v else { throw Self.mismatch("strings", key) }
            return s
        }
    }

    /// A nested record.
    public func record<T: StoredJSONRecord>(_ type: T.Type, _ key: String) throws -> T {
        try T(storedJSON: value(key))
    }

    public func bytes(_ key: String) throws -> [UInt8] {
        guard case .array(let a)? = fields[key] else { throw Self.mismatch("byte array", key) }
        return try a.map { v in
            guard case .int(let i) = v, let b = UInt8(exactly: i) else { throw Self.mismatch("byte", key) }
            return b
        }
    }

    public func ints(_ key: String) throws -> [String: Int] {
        guard case .object(let o)? = fields[key] else { throw Self.mismatch("object", key) }
        return try o.mapValues { v in
            guard case .int(let n) = v, let i = Int(exactly: n) else { throw Self.mismatch("integer values", key) }
            return i
        }
    }

    public func strings(_ key: String) throws -> [String: String] {
        guard case .object(let o)? = fields[key] else { throw Self.mismatch("object", key) }
        return try o.mapValues { v in
            guard case .string(let s) = v else { throw Self.mismatch("string values", key) }
            return s
        }
    }

    /// A `Date` as `Codable` stores it by default: seconds since 2001-01-01.
    public func date(_ key: String) throws -> Date {
        switch fields[key] {
        case .int(let i)?: return Date(timeIntervalSinceReferenceDate: Double(i))
        case .double(let d)?: return Date(timeIntervalSinceReferenceDate: d)
        default: throw Self.mismatch("date", key)
        }
    }
}

extension JSONValue {
    /// Bytes as `Codable` stores `[UInt8]`: an array of numbers.
    public static func storedBytes(_ b: [UInt8]) -> JSONValue { .array(b.map { .int(Int64($0)) }) }
    /// A `Date` as `Codable` stores it by default.
    public static func storedDate(_ d: Date) -> JSONValue { .double(d.timeIntervalSinceReferenceDate) }
    public static func storedStrings(_ m: [String: String]) -> JSONValue { .object(m.mapValues { .string($0) }) }
    public static func storedList(_ a: [String]) -> JSONValue { .array(a.map { .string($0) }) }
}

import Foundation

/// The encoders used for stored records (sorted keys: deterministic bytes).
public enum StoredJSON {
    public static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
    public static var decoder: JSONDecoder { JSONDecoder() }
}
