import CofferSDK

extension MetricsStorage: SnapshotStorage {
    public var supportsSnapshots: Bool { (inner as? any SnapshotStorage)?.supportsSnapshots ?? false }

    public func scan(pageSize: Int, _ consume: ([StorageEntry]) async throws -> Void) async throws {
        try await CachingStorage.snapshotInner(inner).scan(pageSize: pageSize, consume)
    }

    public func replaceAll(with entries: [StorageEntry], last: [StorageEntry]) async throws {
        try await CachingStorage.snapshotInner(inner).replaceAll(with: entries, last: last)
    }

    public func checkReplacement(with entries: [StorageEntry]) throws {
        try CachingStorage.snapshotInner(inner).checkReplacement(with: entries)
    }
}
