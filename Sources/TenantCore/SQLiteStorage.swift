import CofferSDK
import Foundation
import Logging
import NIOCore
import NIOPosix
import SQLiteNIO
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
    let readers: [SQLiteConnection]
    let nextReader = Atomic<Int>(0)
    /// Process-wide, started once, never stopped.
    static let readerPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        return pool
    }()
    var reader: SQLiteConnection {
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
            let readerPool = Self.readerPool
            // Schema, through a short-lived connection; then the writer thread takes over.
            let schema = try await SQLiteConnection.open(storage: .file(path: path), threadPool: readerPool, logger: logger, on: MultiThreadedEventLoopGroup.singleton.any())
            for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA busy_timeout=5000"] {
                try await schema.query(pragma, [])
            }
            try await schema.query("""
                CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID
                """, [])
            try await schema.query("""
                CREATE TABLE IF NOT EXISTS changelog (rev INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, deleted INTEGER NOT NULL)
                """, [])
            try await schema.query("""
                CREATE TRIGGER IF NOT EXISTS kv_ins AFTER INSERT ON kv BEGIN INSERT INTO changelog(key, deleted) VALUES (new.key, 0); END
                """, [])
            try await schema.query("""
                CREATE TRIGGER IF NOT EXISTS kv_upd AFTER UPDATE ON kv BEGIN INSERT INTO changelog(key, deleted) VALUES (new.key, 0); END
                """, [])
            try await schema.query("""
                CREATE TRIGGER IF NOT EXISTS kv_del AFTER DELETE ON kv BEGIN INSERT INTO changelog(key, deleted) VALUES (old.key, 1); END
                """, [])
            var readers: [SQLiteConnection] = []
            for _ in 0..<readerCount {
                let reader = try await SQLiteConnection.open(storage: .file(path: path), threadPool: readerPool, logger: logger, on: MultiThreadedEventLoopGroup.singleton.any())
                try await reader.query("PRAGMA busy_timeout=5000", [])
                try await reader.query("PRAGMA cache_size=-4000", [])
                readers.append(reader)
            }
            try await schema.close()
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

    init(writer: SQLiteWriter, readers: [SQLiteConnection], path: String) {
        self.writer = writer
        self.readers = readers
        self.path = path
    }

    public func close() async {
        writer.close()
        for reader in readers { try? await reader.close() }
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

    static func bytes(_ d: SQLiteData?) -> [UInt8]? {
        guard let d else { return nil }
        if case .blob(var b) = d { return b.readBytes(length: b.readableBytes) ?? [] }
        return nil
    }

    /// Lists every key into `knownKeys`, in key order, a page at a time.
    func listKnownKeys(term: UInt64) async {
        var after = ""
        do {
            while true {
                let rows = try await reader.query("SELECT key FROM kv WHERE key > ? ORDER BY key LIMIT 10000", [.text(after)])
                let keys = rows.compactMap { $0.column("key")?.string }
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
        return try await wrap {
            let rows = try await reader.query("SELECT value FROM kv WHERE key = ?", [.text(key)])
            return rows.first.flatMap { Self.bytes($0.column("value")) }
        }
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
        try await wrap {
            let rows = try await reader.query(
                "SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key", [.text(prefix), .text(prefix + "\u{10FFFF}")])
            return Self.immediateChildren(of: prefix, in: rows.compactMap { $0.column("key")?.string })
        }
    }

    public func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        if new != nil { knownKeys.insert(key) }
        return try await writer.submit(.cas(key, expected, new))
    }

    public func changes(since revision: UInt64, limit: Int) async throws -> StorageChanges {
        try await wrap {
            let headRows = try await reader.query("SELECT COALESCE(MIN(rev), 0) AS lo, COALESCE(MAX(rev), 0) AS hi FROM changelog", [])
            let lo = UInt64(headRows.first?.column("lo")?.integer ?? 0)
            let hi = UInt64(headRows.first?.column("hi")?.integer ?? 0)
            if lo > 0, revision + 1 < lo { return .compacted(head: hi) }
            let rows = try await reader.query(
                "SELECT rev, key, deleted FROM changelog WHERE rev > ? ORDER BY rev LIMIT ?",
                [.integer(Int(revision)), .integer(limit)])
            let changes = rows.compactMap { row -> StorageChange? in
                guard let rev = row.column("rev")?.integer, let key = row.column("key")?.string else { return nil }
                return StorageChange(revision: UInt64(rev), key: key, deleted: (row.column("deleted")?.integer ?? 0) != 0)
            }
            return .changes(changes, head: hi)
        }
    }
}
