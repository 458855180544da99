import Synchronization

/// Mutual exclusion per key for async read-check-write sections (a token's use count, a
/// record's version): callers with the same key run one at a time, in arrival order;
/// different keys never wait for each other. Memory is held only for keys in use.
public final class KeyedLock: Sendable {
    struct Waiters {
        /// Keys held now, with the callers queued behind the holder.
        var queues: [String: [CheckedContinuation<Void, Never>]] = [:]
    }

    let state = Mutex(Waiters())

    public init() {}

    /// Runs `body` while holding `key`.
    public func withLock<T: Sendable>(_ key: String, _ body: () async throws -> T) async throws -> T {
        await acquire(key)
        defer { release(key) }
        return try await body()
    }

    func acquire(_ key: String) async {
        let acquired = state.withLock { s -> Bool in
            if s.queues[key] == nil {
                s.queues[key] = []
                return true
            }
            return false
        }
        if acquired { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                // Released between the two locks: take it directly.
                guard s.queues[key] != nil else {
                    s.queues[key] = []
                    return true
                }
                s.queues[key]!.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    func release(_ key: String) {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard var q = s.queues[key], !q.isEmpty else {
                s.queues[key] = nil
                return nil
            }
            let first = q.removeFirst()
            s.queues[key] = q
            return first
        }
        next?.resume()
    }
}
