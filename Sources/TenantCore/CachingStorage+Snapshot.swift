import CofferSDK

extension CachingStorage: SnapshotStorage {
    public var supportsSnapshots: Bool { (inner as? any SnapshotStorage)?.supportsSnapshots ?? false }

    /// Reads the backend, not the cache: the cache holds only some keys.
    public func scan(pageSize: Int, _ consume: ([StorageEntry]) async throws -> Void) async throws {
        try await inner.snapshotCapable().scan(pageSize: pageSize, consume)
    }

    /// Replaces the backend's contents and drops the whole cache (also when the replacement
    /// failed half-way: the backend may hold some of the new values).
    public func replaceAll(with entries: [StorageEntry], last: [StorageEntry]) async throws {
        let target = try inner.snapshotCapable()
        invalidateAll()
        defer { invalidateAll() }
        try await target.replaceAll(with: entries, last: last)
    }

    public func checkReplacement(with entries: [StorageEntry]) throws {
        try inner.snapshotCapable().checkReplacement(with: entries)
    }
}

extension Storage {
    /// This store as a `SnapshotStorage`, for a wrapper to forward snapshots to; 400 when
    /// it cannot take them.
    func snapshotCapable() throws -> any SnapshotStorage {
        guard let s = self as? any SnapshotStorage, s.supportsSnapshots else {
            throw CofferError.invalid("this storage backend cannot take snapshots")
        }
        return s
    }
}
