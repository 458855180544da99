import CofferSDK

extension CachingStorage: SnapshotStorage {
    public var supportsSnapshots: Bool { (inner as? any SnapshotStorage)?.supportsSnapshots ?? false }

    /// Reads the backend, not the cache: the cache holds only some keys.
    public func scan(pageSize: Int, _ consume: ([StorageEntry]) async throws -> Void) async throws {
        try await Self.snapshotInner(inner).scan(pageSize: pageSize, consume)
    }

    /// Replaces the backend's contents and drops the whole cache (also when the replacement
    /// failed half-way: the backend may hold some of the new values).
    public func replaceAll(with entries: [StorageEntry], last: [StorageEntry]) async throws {
        let target = try Self.snapshotInner(inner)
        invalidateAll()
        defer { invalidateAll() }
        try await target.replaceAll(with: entries, last: last)
    }

    static func snapshotInner(_ inner: any Storage) throws -> any SnapshotStorage {
        guard let s = inner as? any SnapshotStorage, s.supportsSnapshots else {
            throw CofferError.invalid("this storage backend cannot take snapshots")
        }
        return s
    }

    public func checkReplacement(with entries: [StorageEntry]) throws {
        try Self.snapshotInner(inner).checkReplacement(with: entries)
    }
}
