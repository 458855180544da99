import CofferSDK
import Synchronization

extension MemoryStorage: SnapshotStorage {
    /// Copies everything under the lock (one point in time), then pages it out.
    public func scan(pageSize: Int, _ consume: ([StorageEntry]) async throws -> Void) async throws {
        let all = state.withLock { s in s.sortedKeys.all.map { StorageEntry(key: $0, value: s.values[$0] ?? []) } }
        var start = 0
        let size = max(1, pageSize)
        while start < all.count {
            let end = min(all.count, start + size)
            try await consume(Array(all[start..<end]))
            start = end
        }
    }

    /// One step under the lock: no reader sees a half-replaced store. Every change still
    /// goes through the change feed.
    public func replaceAll(with entries: [StorageEntry], last: [StorageEntry]) async throws {
        let entries = entries + last
        state.withLock { s in
            var wanted: [String: [UInt8]] = [:]
            wanted.reserveCapacity(entries.count)
            for e in entries { wanted[e.key] = e.value }
            for key in s.sortedKeys.all where wanted[key] == nil {
                Self.apply(&s, key: key, value: nil, limit: feedLimit)
            }
            for e in entries where s.values[e.key] != e.value {
                Self.apply(&s, key: e.key, value: e.value, limit: feedLimit)
            }
        }
    }
}
