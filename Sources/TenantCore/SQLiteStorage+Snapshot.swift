import CofferSDK
import Logging
import NIOCore
import NIOPosix
import SQLiteNIO

extension SQLiteStorage: SnapshotStorage {
    /// Pages through `kv` inside one read transaction on a connection of its own: WAL gives
    /// that transaction one snapshot of the database, whatever the writer commits meanwhile.
    public func scan(pageSize: Int, _ consume: ([StorageEntry]) async throws -> Void) async throws {
        let connection = try await wrap {
            try await SQLiteConnection.open(
                storage: .file(path: path), threadPool: Self.readerPool, logger: Logger(label: "coffer.storage.sqlite"),
                on: MultiThreadedEventLoopGroup.singleton.any())
        }
        do {
            try await wrap {
                try await connection.query("PRAGMA busy_timeout=5000", [])
                try await connection.query("BEGIN", [])
            }
            var last: String?
            let limit = max(1, pageSize)
            while true {
                let rows = try await wrap {
                    if let last {
                        return try await connection.query(
                            "SELECT key, value FROM kv WHERE key > ? ORDER BY key LIMIT ?", [.text(last), .integer(limit)])
                    }
                    return try await connection.query("SELECT key, value FROM kv ORDER BY key LIMIT ?", [.integer(limit)])
                }
                let page = rows.compactMap { row -> StorageEntry? in
                    guard let key = row.column("key")?.string else { return nil }
                    return StorageEntry(key: key, value: Self.bytes(row.column("value")) ?? [])
                }
                if !page.isEmpty { try await consume(page) }
                guard rows.count == limit, let next = page.last?.key else { break }
                last = next
            }
            try await wrap { try await connection.query("COMMIT", []) }
        } catch {
            try? await connection.close()
            throw error
        }
        try? await connection.close()
    }

    /// One transaction on the writer: readers see the old contents or the new, never a mix,
    /// and a failure (or a crash) leaves the old contents.
    public func replaceAll(with entries: [StorageEntry], last: [StorageEntry]) async throws {
        for e in entries + last { knownKeys.insert(e.key) }
        _ = try await writer.submit(.replaceAll(entries + last))
    }
}
