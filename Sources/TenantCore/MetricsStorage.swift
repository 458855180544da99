import CofferSDK
import Metrics

/// Times every physical storage operation (`coffer_storage_operation_duration_seconds`,
/// label `op` from a fixed set: get, put, delete, list, cas, changes).
public final class MetricsStorage: Storage {
    public let inner: any Storage
    let timers: [String: Metrics.Timer]

    public init(_ inner: any Storage, backend: String) {
        self.inner = inner
        var t: [String: Metrics.Timer] = [:]
        for op in ["get", "put", "delete", "list", "cas", "changes"] {
            t[op] = Metrics.Timer(label: "coffer_storage_operation_duration_seconds", dimensions: [("op", op), ("backend", backend)], preferredDisplayUnit: .seconds)
        }
        timers = t
    }

    func timed<T>(_ op: String, _ body: () async throws -> T) async rethrows -> T {
        let start = ContinuousClock.now
        defer { timers[op]?.recordInterval(since: start) }
        return try await body()
    }

    public func get(_ key: String) async throws -> [UInt8]? { try await timed("get") { try await inner.get(key) } }
    public func put(_ key: String, _ value: [UInt8]) async throws { try await timed("put") { try await inner.put(key, value) } }
    public func putAll(_ entries: [StorageEntry]) async throws { try await timed("put") { try await inner.putAll(entries) } }
    public func delete(_ key: String) async throws { try await timed("delete") { try await inner.delete(key) } }
    public func list(prefix: String) async throws -> [String] { try await timed("list") { try await inner.list(prefix: prefix) } }
    public func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        try await timed("cas") { try await inner.compareAndSet(key, expected: expected, new: new) }
    }
    public func changes(since revision: UInt64, limit: Int) async throws -> StorageChanges {
        try await timed("changes") { try await inner.changes(since: revision, limit: limit) }
    }
}

extension Metrics.Timer {
    func recordInterval(since start: ContinuousClock.Instant) {
        let d = ContinuousClock.now - start
        let (s, atto) = d.components
        recordNanoseconds(s * 1_000_000_000 + atto / 1_000_000_000)
    }
}
