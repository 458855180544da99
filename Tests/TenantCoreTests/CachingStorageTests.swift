import CofferSDK
import Foundation
import Synchronization
import Testing
import TenantCore

/// A storage whose compare-and-set is applied at once but answered late (as etcd may
/// answer over another connection after a later write already finished).
final class LateAnsweringStorage: Storage {
    let inner = MemoryStorage()
    let delay = Mutex<Duration?>(nil)

    func get(_ key: String) async throws -> [UInt8]? { try await inner.get(key) }
    func put(_ key: String, _ value: [UInt8]) async throws { try await inner.put(key, value) }
    func delete(_ key: String) async throws { try await inner.delete(key) }
    func list(prefix: String) async throws -> [String] { try await inner.list(prefix: prefix) }
    func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        let ok = try await inner.compareAndSet(key, expected: expected, new: new)
        if let d = delay.withLock({ $0 }) { try await Task.sleep(for: d) }
        return ok
    }
    func changes(since revision: UInt64, limit: Int) async throws -> StorageChanges { try await inner.changes(since: revision, limit: limit) }
}

struct CachingStorageTests {
    /// Overlapping writes may be answered out of order: the cache must not keep the value
    /// of the write that answered last when a later one was applied after it.
    @Test func overlappingWritesAnsweredOutOfOrderDoNotCacheAStaleValue() async throws {
        let slow = LateAnsweringStorage()
        let cache = CachingStorage(slow)
        try await cache.put("k", [0])
        slow.delay.withLock { $0 = .milliseconds(300) }
        let first = Task { try await cache.compareAndSet("k", expected: [0], new: [1]) }
        try await Task.sleep(for: .milliseconds(50))
        #expect(try await cache.get("k") == [1])
        slow.delay.withLock { $0 = nil }
        #expect(try await cache.compareAndSet("k", expected: [1], new: [2]) == true)
        #expect(try await first.value == true)
        #expect(try await slow.get("k") == [2])
        #expect(try await cache.get("k") == [2], "the cache kept the value of the write that answered last")
        // A lone write still fills the cache.
        try await cache.put("k", [3])
        #expect(try await cache.get("k") == [3])
    }
}
