import CofferSDK
import Foundation
import Logging
import Synchronization

// MARK: - concurrency helpers

/// The connection pools of one mount, by configuration name and record id.
actor PoolRegistry {
    private var pools: [String: (id: String, pool: DatabaseConnectionPool)] = [:]

    func pool(_ name: String, id: String) -> DatabaseConnectionPool? {
        guard let entry = pools[name], entry.id == id else { return nil }
        return entry.pool
    }

    /// Installs `pool` for `id` unless a pool for that id is already there (then answers it
    /// and leaves `pool` unused) or `replacing`. Answers the pool in use and the one it replaced.
    func install(_ name: String, id: String, _ pool: DatabaseConnectionPool, replacing: Bool = false) -> (DatabaseConnectionPool, replaced: DatabaseConnectionPool?) {
        if !replacing, let entry = pools[name], entry.id == id { return (entry.pool, nil) }
        let old = pools[name]?.pool
        pools[name] = (id, pool)
        return (pool, old === pool ? nil : old)
    }

    func remove(_ name: String) -> DatabaseConnectionPool? {
        pools.removeValue(forKey: name)?.pool
    }

    func removeAll() -> [DatabaseConnectionPool] {
        defer { pools = [:] }
        return pools.values.map(\.pool)
    }
}

/// Records that a closure handed to a connection pool started running.
final class StartedFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func set() { flag.store(true, ordering: .relaxed) }
    var isSet: Bool { flag.load(ordering: .relaxed) }
}
