import CofferSDK

extension WriteGate: SnapshotStorage {
    public var supportsSnapshots: Bool { (inner as? any SnapshotStorage)?.supportsSnapshots ?? false }

    public func scan(pageSize: Int, _ consume: ([StorageEntry]) async throws -> Void) async throws {
        try await CachingStorage.snapshotInner(inner).scan(pageSize: pageSize, consume)
    }

    /// A standby never writes: a restore runs on the active node.
    public func replaceAll(with entries: [StorageEntry], last: [StorageEntry]) async throws {
        try check()
        try await CachingStorage.snapshotInner(inner).replaceAll(with: entries, last: last)
    }

    public func checkReplacement(with entries: [StorageEntry]) throws {
        try check()
        try CachingStorage.snapshotInner(inner).checkReplacement(with: entries)
    }
}
