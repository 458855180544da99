import CofferSDK
import NIOCore
import NIOPosix

extension SQLiteStorage: SnapshotStorage {
    /// Pages through `kv` inside one read transaction on a connection of its own: WAL gives
    /// that transaction one snapshot of the database, whatever the writer commits meanwhile.
    public func scan(pageSize: Int, _ consume: ([StorageEntry]) async throws -> Void) async throws {
        let pool = Self.readerPool
        let connection = try await wrap {
            try await pool.runIfActive { try SQLiteReader(path: self.path, pragmas: ["PRAGMA busy_timeout=5000", "BEGIN"]) }
        }
        defer { connection.close() }
        var last: String?
        let limit = max(1, pageSize)
        while true {
            let after = last
            let rows = try await wrap {
                try await pool.runIfActive { () throws -> [[SQLiteValue]] in
                    if let after {
                        return try connection.query("SELECT key, value FROM kv WHERE key > ? ORDER BY key LIMIT ?", [.text(after), .int(Int64(limit))])
                    }
                    return try connection.query("SELECT key, value FROM kv ORDER BY key LIMIT ?", [.int(Int64(limit))])
                }
            }
            let page = rows.compactMap { row -> StorageEntry? in
                guard row.count == 2, let key = row[0].string else { return nil }
                return StorageEntry(key: key, value: row[1].bytes ?? [])
            }
            if !page.isEmpty { try await consume(page) }
            guard rows.count == limit, let next = page.last?.key else { break }
            last = next
        }
        try await wrap { try await pool.runIfActive { try connection.exec("COMMIT") } }
    }

    /// One transaction on the writer: readers see the old contents or the new, never a mix,
    /// and a failure (or a crash) leaves the old contents.
    public func replaceAll(with entries: [StorageEntry], last: [StorageEntry]) async throws {
        for e in entries + last { knownKeys.insert(e.key) }
        _ = try await writer.submit(.replaceAll(entries + last))
    }
}
