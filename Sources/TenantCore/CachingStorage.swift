import CofferSDK
import Synchronization

/// A write-through read cache in front of a physical `Storage` (ciphertext only).
///
/// Reads of hot keys (KV secrets, tokens, policies) then cost no storage round trip.
/// A read fills the cache only if no write to that key started or finished while it was
/// in flight, so a slow read can never cache a value older than a finished write. A write
/// fills it only if it overlapped no other write to that key: overlapping writes may be
/// applied in one order and answered in another (etcd answers over several connections),
/// so none of their values is known to be the last.
public final class CachingStorage: Storage {
    public let inner: any Storage
    let capacity: Int

    struct State {
        var entries: [String: [UInt8]?] = [:]
        var generation: [String: UInt64] = [:]
        var inFlightWrites: [String: Int] = [:]
        /// Writes (by `beginWrite` token) that overlapped another write to their key.
        var overlapped: Set<UInt64> = []
        var counter: UInt64 = 0
        /// Bumped by `invalidateAll`: reads in flight before it never fill the cache.
        var epoch: UInt64 = 0
    }

    let state = Mutex(State())

    public init(_ inner: any Storage, capacity: Int = 100_000) {
        self.inner = inner
        self.capacity = capacity
    }

    public func get(_ key: String) async throws -> [UInt8]? {
        let (cached, gen, epoch): ([UInt8]??, UInt64, UInt64) = state.withLock { s in (s.entries[key], s.generation[key] ?? 0, s.epoch) }
        if let cached { return cached }
        let value = try await inner.get(key)
        state.withLock { s in
            guard (s.generation[key] ?? 0) == gen, s.epoch == epoch, (s.inFlightWrites[key] ?? 0) == 0 else { return }
            if s.entries.count >= capacity { s.entries.removeAll(keepingCapacity: true) }
            s.entries[key] = .some(value)
        }
        return value
    }

    /// Marks a write in flight; answers its token for `endWrite`.
    func beginWrite(_ key: String) -> UInt64 {
        state.withLock { s in
            s.counter += 1
            let token = s.counter
            // Writes already in flight see this one through `generation` at their end; this
            // one must know it started while they were in flight.
            if (s.inFlightWrites[key] ?? 0) > 0 { s.overlapped.insert(token) }
            s.generation[key] = token
            s.inFlightWrites[key, default: 0] += 1
            s.entries[key] = nil
            return token
        }
    }

    func endWrite(_ key: String, token: UInt64, value: [UInt8]??) {
        state.withLock { s in
            let alone = s.overlapped.remove(token) == nil && s.generation[key] == token
            s.counter += 1
            s.generation[key] = s.counter
            let n = (s.inFlightWrites[key] ?? 1) - 1
            s.inFlightWrites[key] = n == 0 ? nil : n
            if n == 0, alone, let value {
                s.entries[key] = .some(value)
            } else {
                s.entries[key] = nil
            }
            if s.generation.count > capacity * 2 { s.generation.removeAll(keepingCapacity: true) }
        }
    }

    public func put(_ key: String, _ value: [UInt8]) async throws {
        let token = beginWrite(key)
        do {
            try await inner.put(key, value)
            endWrite(key, token: token, value: .some(value))
        } catch {
            endWrite(key, token: token, value: nil)
            throw error
        }
    }

    public func putAll(_ entries: [StorageEntry]) async throws {
        let tokens = entries.map { beginWrite($0.key) }
        do {
            try await inner.putAll(entries)
            for (e, token) in zip(entries, tokens) { endWrite(e.key, token: token, value: .some(e.value)) }
        } catch {
            for (e, token) in zip(entries, tokens) { endWrite(e.key, token: token, value: nil) }
            throw error
        }
    }

    public func delete(_ key: String) async throws {
        let token = beginWrite(key)
        do {
            try await inner.delete(key)
            endWrite(key, token: token, value: .some(nil))
        } catch {
            endWrite(key, token: token, value: nil)
            throw error
        }
    }

    public func list(prefix: String) async throws -> [String] { try await inner.list(prefix: prefix) }

    public func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        let token = beginWrite(key)
        do {
            let ok = try await inner.compareAndSet(key, expected: expected, new: new)
            endWrite(key, token: token, value: ok ? .some(new) : nil)
            return ok
        } catch {
            endWrite(key, token: token, value: nil)
            throw error
        }
    }

    public func changes(since revision: UInt64, limit: Int) async throws -> StorageChanges {
        try await inner.changes(since: revision, limit: limit)
    }

    /// Drops cached entries (a watch saw another node write them).
    public func invalidate(_ keys: some Sequence<String>) {
        state.withLock { s in for k in keys { s.entries[k] = nil } }
    }

    public func invalidateAll() {
        state.withLock { s in
            s.entries.removeAll()
            s.epoch += 1
        }
    }

    /// Forgets `key` (another node changed it): reads in flight do not fill the cache.
    public func invalidate(_ key: String) {
        state.withLock { s in
            s.counter += 1
            s.generation[key] = s.counter
            s.entries[key] = nil
        }
    }
}
