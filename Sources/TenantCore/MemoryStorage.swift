import CofferSDK
import Synchronization

/// In-memory `Storage`: the dev server's backend and the reference for the conformance suite.
public final class MemoryStorage: Storage {
    struct State {
        var values: [String: [UInt8]] = [:]
        var sortedKeys = SortedKeys()
        var log: [StorageChange] = []
        var revision: UInt64 = 0
        var logStart: UInt64 = 1
    }

    let state = Mutex(State())
    /// How many change-feed entries are kept before the feed compacts.
    let feedLimit: Int

    public init(feedLimit: Int = 100_000) { self.feedLimit = feedLimit }

    public func get(_ key: String) async throws -> [UInt8]? { state.withLock { $0.values[key] } }

    public func put(_ key: String, _ value: [UInt8]) async throws {
        state.withLock { s in Self.apply(&s, key: key, value: value, limit: feedLimit) }
    }

    public func putAll(_ entries: [StorageEntry]) async throws {
        state.withLock { s in for e in entries { Self.apply(&s, key: e.key, value: e.value, limit: feedLimit) } }
    }

    public func delete(_ key: String) async throws {
        state.withLock { s in Self.apply(&s, key: key, value: nil, limit: feedLimit) }
    }

    public func list(prefix: String) async throws -> [String] {
        state.withLock { s in
            Self.immediateChildren(of: prefix, in: s.sortedKeys.withPrefix(prefix))
        }
    }

    public func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        state.withLock { s in
            guard s.values[key] == expected else { return false }
            Self.apply(&s, key: key, value: new, limit: feedLimit)
            return true
        }
    }

    public func changes(since revision: UInt64, limit: Int) async throws -> StorageChanges {
        state.withLock { s in
            if revision + 1 < s.logStart { return .compacted(head: s.revision) }
            let from = Int(revision + 1 - s.logStart)
            guard from < s.log.count else { return .changes([], head: s.revision) }
            let slice = s.log[max(0, from)...].prefix(limit)
            return .changes(Array(slice), head: s.revision)
        }
    }

    static func apply(_ s: inout State, key: String, value: [UInt8]?, limit: Int) {
        let existed = s.values[key] != nil
        if let value {
            s.values[key] = value
            if !existed { s.sortedKeys.insert(key) }
        } else {
            guard existed else { return }
            s.values[key] = nil
            s.sortedKeys.remove(key)
        }
        s.revision += 1
        s.log.append(StorageChange(revision: s.revision, key: key, deleted: value == nil))
        // Compacted in batches (an eighth of the limit at a time): dropping one entry per
        // write moved the whole log on every write.
        if s.log.count > limit + max(1, limit / 8) {
            let drop = s.log.count - limit
            s.log.removeFirst(drop)
            s.logStart += UInt64(drop)
        }
    }
}
