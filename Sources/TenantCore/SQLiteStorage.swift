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
        _ = try await submit(.put(key, value))
    }

    public func delete(_ key: String) async throws {
        _ = try await submit(.delete(key))
    }

    public func list(prefix: String) async throws -> [String] {
        try await wrap {
            let rows = try await reader.query(
                "SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key", [.text(prefix), .text(prefix + "\u{10FFFF}")])
            return Self.immediateChildren(of: prefix, in: rows.compactMap { $0.column("key")?.string })
        }
    }

    public func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        try await submit(.cas(key, expected, new))
    }

    // MARK: group commit

    /// One write waiting for the next batch.
    enum WriteOp: Sendable {
        case put(String, [UInt8])
        case delete(String)
        case cas(String, [UInt8]?, [UInt8]?)
    }

    struct Pending {
        var ops: [(WriteOp, CheckedContinuation<Bool, any Error>)] = []
        var flushing = false
    }

    let pending = Mutex(Pending())

    /// Queues a write; concurrent writes share one transaction and so one fsync (group
    /// commit). The call returns only after its batch committed durably.
    func submit(_ op: WriteOp) async throws -> Bool {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Bool, any Error>) in
            let startFlusher = pending.withLock { p -> Bool in
                p.ops.append((op, cont))
                if p.flushing { return false }
                p.flushing = true
                return true
            }
            if startFlusher {
                // The flusher lives exactly as long as there are queued writes.
                Task { await self.flushLoop() }
            }
        }
    }

    func flushLoop() async {
        while true {
            let batch = pending.withLock { p -> [(WriteOp, CheckedContinuation<Bool, any Error>)] in
                let b = p.ops
                p.ops = []
                if b.isEmpty { p.flushing = false }
                return b
            }
            if batch.isEmpty { return }
            do {
                let results = try await commit(batch.map(\.0))
                for (i, entry) in batch.enumerated() { entry.1.resume(returning: results[i]) }
            } catch {
                let e = CofferError(.unavailable, "storage error", cause: error)
                for entry in batch { entry.1.resume(throwing: e) }
            }
            await trimFeedIfNeeded(count: batch.count)
        }
    }

    func commit(_ ops: [WriteOp]) async throws -> [Bool] {
        if ops.count == 1 {
            return [try await apply(ops[0])]
        }
        _ = try await writer.query("BEGIN IMMEDIATE", [])
        do {
            var results: [Bool] = []
            results.reserveCapacity(ops.count)
            var i = 0
            while i < ops.count {
                // Runs of puts become one multi-row statement (later rows win, as in order).
                var puts: [(String, [UInt8])] = []
                while i < ops.count, puts.count < 200, case .put(let k, let v) = ops[i] {
                    puts.append((k, v))
                    i += 1
                }
                if puts.count > 1 {
                    try await putMany(puts)
                    results.append(contentsOf: repeatElement(true, count: puts.count))
                    continue
                }
                if puts.count == 1 {
                    results.append(try await apply(.put(puts[0].0, puts[0].1)))
                    continue
                }
                results.append(try await apply(ops[i]))
                i += 1
            }
            _ = try await writer.query("COMMIT", [])
            return results
        } catch {
            _ = try? await writer.query("ROLLBACK", [])
            throw error
        }
    }

    func putMany(_ puts: [(String, [UInt8])]) async throws {
        let rows = repeatElement("(?, ?)", count: puts.count).joined(separator: ", ")
        var binds: [SQLiteData] = []
        binds.reserveCapacity(puts.count * 2)
        for (k, v) in puts {
            binds.append(.text(k))
            binds.append(.blob(ByteBuffer(bytes: v)))
        }
        _ = try await writer.query(
            "INSERT INTO kv(key, value) VALUES \(rows) ON CONFLICT(key) DO UPDATE SET value = excluded.value", binds)
    }

    /// One write statement (autocommit when alone, inside the batch transaction otherwise).
    func apply(_ op: WriteOp) async throws -> Bool {
        switch op {
        case .put(let key, let value):
            _ = try await writer.query(
                "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [.text(key), .blob(ByteBuffer(bytes: value))])
            return true
        case .delete(let key):
            _ = try await writer.query("DELETE FROM kv WHERE key = ?", [.text(key)])
            return true
        case .cas(let key, let expected, let new):
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

    func trimFeedIfNeeded(count: Int) async {
        let due = writesSinceTrim.withLock { n -> Bool in
            n += count
            if n >= 10_000 { n = 0; return true }
            return false
        }
        guard due else { return }
        _ = try? await writer.query(
            "DELETE FROM changelog WHERE rev <= (SELECT MAX(rev) FROM changelog) - ?", [.integer(feedLimit)])
    }
}
