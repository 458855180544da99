import CofferSDK
import Synchronization

/// The physical storage of an HA node: reads pass, writes pass only while the node is
/// active (or not in a cluster). A standby never writes: a request that tries to fails
/// with `.standbyWrite` before anything is stored, and the Gateway forwards it to the
/// active node.
public final class WriteGate: Storage {
    public let inner: any Storage
    let open = Atomic<Bool>(true)
    /// A snapshot restore on the active node: request writes are refused while
    /// `replaceAll` writes (still fenced by the HA lock the node holds).
    let restoring = Atomic<Bool>(false)

    public init(_ inner: any Storage) { self.inner = inner }

    public var isOpen: Bool { open.load(ordering: .acquiring) }
    public func setOpen(_ value: Bool) { open.store(value, ordering: .releasing) }

    public func setRestoring(_ value: Bool) { restoring.store(value, ordering: .releasing) }

    func check() throws {
        guard open.load(ordering: .acquiring), !restoring.load(ordering: .acquiring) else {
            throw CofferError(.standbyWrite, "this node is a standby; the request must be forwarded to the active node")
        }
    }

    public func get(_ key: String) async throws -> [UInt8]? { try await inner.get(key) }
    public func list(prefix: String) async throws -> [String] { try await inner.list(prefix: prefix) }
    public func changes(since revision: UInt64, limit: Int) async throws -> StorageChanges {
        try await inner.changes(since: revision, limit: limit)
    }
    public func put(_ key: String, _ value: [UInt8]) async throws {
        try check()
        try await inner.put(key, value)
    }
    public func putAll(_ entries: [StorageEntry]) async throws {
        try check()
        try await inner.putAll(entries)
    }
    public func delete(_ key: String) async throws {
        try check()
        try await inner.delete(key)
    }
    public func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        try check()
        return try await inner.compareAndSet(key, expected: expected, new: new)
    }
}

extension WriteGate: StorageStatisticsForwarding {}
