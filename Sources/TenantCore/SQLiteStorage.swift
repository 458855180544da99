import CofferSDK
import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Embedded single-node `Storage` on SQLite: WAL journal with `synchronous=FULL`, so a
/// write acknowledged to a client survives `kill -9` and power loss.
///
/// One connection writes, on a thread of its own (`SQLiteWriter`: concurrent writes share
/// one transaction, one fsync); reads spread over `readerCount` connections on a two-thread
/// pool (WAL lets them proceed beside a write). Triggers append every write to the
/// `changelog` table, the ordered change feed (`changes(since:)`), trimmed to the newest
/// `feedLimit` entries.
public final class SQLiteStorage: Storage {
    let writer: SQLiteWriter
    let readers: [SQLiteReader]
    let nextReader = Atomic<Int>(0)
    /// Process-wide, started once, never stopped.
    static let readerPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        return pool
    }()
    var reader: SQLiteReader {
        readers[(nextReader.add(1, ordering: .relaxed).newValue & Int.max) % readers.count]
    }
    let path: String
    /// Every key in the file (Coffer is its only writer): a read of a key never written is
    /// answered without a query. Listed in the background after open; until then reads query.
    public let knownKeys = KnownKeys()

    public static func open(path: String, feedLimit: Int = 100_000, readerCount: Int = 2, logger: Logger = Logger(label: "coffer.storage.sqlite")) async throws -> SQLiteStorage {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        do {
            // Schema, through a short-lived connection; then the writer thread takes over.
            let readers = try await Self.readerPool.runIfActive { () throws -> [SQLiteReader] in
                let schema = try SQLiteHandle(path: path, pragmas: ["PRAGMA journal_mode=WAL", "PRAGMA busy_timeout=5000"])
                defer { schema.close() }
                for statement in Self.schema { try schema.exec(statement) }
                return try (0..<readerCount).map { _ in
                    try SQLiteReader(path: path, pragmas: ["PRAGMA busy_timeout=5000", "PRAGMA cache_size=-4000"])
                }
            }
            let storage = SQLiteStorage(writer: try SQLiteWriter(path: path, feedLimit: feedLimit), readers: readers, path: path)
            let term = storage.knownKeys.begin()
            Task { await storage.listKnownKeys(term: term) }
            return storage
        } catch let e as CofferError {
            throw e
        } catch {
            throw CofferError(.unavailable, "cannot open SQLite storage at \(path)", cause: error)
        }
    }

    static let schema = [
        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS changelog (rev INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, deleted INTEGER NOT NULL)",
        "CREATE TRIGGER IF NOT EXISTS kv_ins AFTER INSERT ON kv BEGIN INSERT INTO changelog(key, deleted) VALUES (new.key, 0); END",
        "CREATE TRIGGER IF NOT EXISTS kv_upd AFTER UPDATE ON kv BEGIN INSERT INTO changelog(key, deleted) VALUES (new.key, 0); END",
        "CREATE TRIGGER IF NOT EXISTS kv_del AFTER DELETE ON kv BEGIN INSERT INTO changelog(key, deleted) VALUES (old.key, 1); END",
    ]

    init(writer: SQLiteWriter, readers: [SQLiteReader], path: String) {
        self.writer = writer
        self.readers = readers
        self.path = path
    }

    public func close() async {
        writer.close()
        for reader in readers { reader.close() }
    }

    func wrap<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let e as CofferError {
            throw e
        } catch {
            throw CofferError(.unavailable, "storage error", cause: error)
        }
    }

    /// A query on a reader connection, on the storage's thread pool (SQLite's calls block).
    func query(_ sql: String, _ binds: [SQLiteBind] = []) async throws -> [[SQLiteValue]] {
        let reader = reader
        return try await wrap { try await Self.readerPool.runIfActive { try reader.query(sql, binds) } }
    }

    /// Lists every key into `knownKeys`, in key order, a page at a time.
    func listKnownKeys(term: UInt64) async {
        var after = ""
        do {
            while true {
                let rows = try await query("SELECT key FROM kv WHERE key > ? ORDER BY key LIMIT 10000", [.text(after)])
                let keys = rows.compactMap { $0.first?.string }
                knownKeys.add(listed: keys, term: term)
                guard keys.count == 10000, let last = keys.last else { break }
                after = last
            }
            knownKeys.finish(term: term)
        } catch {
            // Reads keep querying.
        }
    }

    public func get(_ key: String) async throws -> [UInt8]? {
        if knownKeys.certainlyAbsent(key) { return nil }
        return try await query("SELECT value FROM kv WHERE key = ?", [.text(key)]).first?.first?.bytes
    }

    public func put(_ key: String, _ value: [UInt8]) async throws {
        knownKeys.insert(key)
        _ = try await writer.submit(.put(key, value))
    }

    public func putAll(_ entries: [StorageEntry]) async throws {
        for e in entries { knownKeys.insert(e.key) }
        _ = try await writer.submit(.putAll(entries))
    }

    public func delete(_ key: String) async throws {
        _ = try await writer.submit(.delete(key))
    }

    public func list(prefix: String) async throws -> [String] {
        let rows = try await query("SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key", [.text(prefix), .text(prefix + "\u{10FFFF}")])
        return Self.immediateChildren(of: prefix, in: rows.compactMap { $0.first?.string })
    }

    public func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        if new != nil { knownKeys.insert(key) }
        return try await writer.submit(.cas(key, expected, new))
    }

    public func changes(since revision: UInt64, limit: Int) async throws -> StorageChanges {
        let head = try await query("SELECT COALESCE(MIN(rev), 0), COALESCE(MAX(rev), 0) FROM changelog").first
        let lo = UInt64(clamping: head?.first?.integer ?? 0)
        let hi = UInt64(clamping: head?.last?.integer ?? 0)
        if lo > 0, revision + 1 < lo { return .compacted(head: hi) }
        let rows = try await query(
            "SELECT rev, key, deleted FROM changelog WHERE rev > ? ORDER BY rev LIMIT ?",
            [.int(Int64(clamping: revision)), .int(Int64(limit))])
        let changes = rows.compactMap { row -> StorageChange? in
            guard row.count == 3, let rev = row[0].integer, let key = row[1].string else { return nil }
            return StorageChange(revision: UInt64(clamping: rev), key: key, deleted: (row[2].integer ?? 0) != 0)
        }
        return .changes(changes, head: hi)
    }
}
