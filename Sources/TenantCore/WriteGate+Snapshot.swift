import CofferSDK
import Synchronization

extension WriteGate: SnapshotStorage {
    public var supportsSnapshots: Bool { (inner as? any SnapshotStorage)?.supportsSnapshots ?? false }

    public func scan(pageSize: Int, _ consume: ([StorageEntry]) async throws -> Void) async throws {
        try await inner.snapshotCapable().scan(pageSize: pageSize, consume)
    }

    /// A standby never writes: a restore runs on the active node.
    public func replaceAll(with entries: [StorageEntry], last: [StorageEntry]) async throws {
        if !restoring.load(ordering: .acquiring) { try check() }
        try await inner.snapshotCapable().replaceAll(with: entries, last: last)
    }

    public func checkReplacement(with entries: [StorageEntry]) throws {
        try check()
        try inner.snapshotCapable().checkReplacement(with: entries)
    }
}
