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
/// One connection writes, one reads (WAL lets reads proceed beside a write). Every write is
/// a single autocommit statement; triggers append it to the `changelog` table, which is the
/// ordered change feed (`changes(since:)`), trimmed to the newest `feedLimit` entries.
public final class SQLiteStorage: Storage {
    let writer: SQLiteConnection
    let reader: SQLiteConnection
    let feedLimit: Int
    let path: String

    public static func open(path: String, feedLimit: Int = 100_000, logger: Logger = Logger(label: "coffer.storage.sqlite")) async throws -> SQLiteStorage {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        do {
            let writer = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
            for pragma in ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA busy_timeout=5000"] {
                try await writer.query(pragma, [])
            }
            try await writer.query("""
                CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID
                """, [])
            try await writer.query("""
                CREATE TABLE IF NOT EXISTS changelog (rev INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, deleted INTEGER NOT NULL)
                """, [])
            try await writer.query("""
                CREATE TRIGGER IF NOT EXISTS kv_ins AFTER INSERT ON kv BEGIN INSERT INTO changelog(key, deleted) VALUES (new.key, 0); END
                """, [])
            try await writer.query("""
                CREATE TRIGGER IF NOT EXISTS kv_upd AFTER UPDATE ON kv BEGIN INSERT INTO changelog(key, deleted) VALUES (new.key, 0); END
                """, [])
            try await writer.query("""
                CREATE TRIGGER IF NOT EXISTS kv_del AFTER DELETE ON kv BEGIN INSERT INTO changelog(key, deleted) VALUES (old.key, 1); END
                """, [])
            let reader = try await SQLiteConnection.open(storage: .file(path: path), logger: logger)
            try await reader.query("PRAGMA busy_timeout=5000", [])
            return SQLiteStorage(writer: writer, reader: reader, feedLimit: feedLimit, path: path)
        } catch let e as CofferError {
            throw e
        } catch {
            throw CofferError(.unavailable, "cannot open SQLite storage at \(path)", cause: error)
        }
    }

    init(writer: SQLiteConnection, reader: SQLiteConnection, feedLimit: Int, path: String) {
        self.writer = writer
        self.reader = reader
        self.feedLimit = feedLimit
        self.path = path
    }

    public func close() async {
        try? await writer.close()
        try? await reader.close()
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

    public func get(_ key: String) async throws -> [UInt8]? {
        try await wrap {
            let rows = try await reader.query("SELECT value FROM kv WHERE key = ?", [.text(key)])
            return rows.first.flatMap { Self.bytes($0.column("value")) }
        }
    }

    public func put(_ key: String, _ value: [UInt8]) async throws {
        try await wrap {
            _ = try await writer.query(
                "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [.text(key), .blob(ByteBuffer(bytes: value))])
            await trimFeedIfNeeded()
        }
    }

    public func delete(_ key: String) async throws {
        try await wrap {
            _ = try await writer.query("DELETE FROM kv WHERE key = ?", [.text(key)])
        }
    }

    public func list(prefix: String) async throws -> [String] {
        try await wrap {
            let rows = try await reader.query(
                "SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key", [.text(prefix), .text(prefix + "\u{10FFFF}")])
            return Self.immediateChildren(of: prefix, in: rows.compactMap { $0.column("key")?.string })
        }
    }

    public func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        try await wrap {
            let rows: [SQLiteRow]
            switch (expected, new) {
            case (nil, nil):
                rows = try await writer.query("SELECT key FROM kv WHERE key = ?", [.text(key)])
                return rows.isEmpty
            case (nil, let n?):
                rows = try await writer.query(
                    "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING RETURNING key",
                    [.text(key), .blob(ByteBuffer(bytes: n))])
            case (let e?, nil):
                rows = try await writer.query(
                    "DELETE FROM kv WHERE key = ? AND value = ? RETURNING key", [.text(key), .blob(ByteBuffer(bytes: e))])
            case (let e?, let n?):
                rows = try await writer.query(
                    "UPDATE kv SET value = ? WHERE key = ? AND value = ? RETURNING key",
                    [.blob(ByteBuffer(bytes: n)), .text(key), .blob(ByteBuffer(bytes: e))])
            }
            return !rows.isEmpty
        }
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

    let writesSinceTrim = Mutex(0)

    func trimFeedIfNeeded() async {
        let due = writesSinceTrim.withLock { n -> Bool in
            n += 1
            if n >= 10_000 { n = 0; return true }
            return false
        }
        guard due else { return }
        _ = try? await writer.query(
            "DELETE FROM changelog WHERE rev <= (SELECT MAX(rev) FROM changelog) - ?", [.integer(feedLimit)])
    }
}
