import CofferSDK

/// A physical `Storage` confined to a key prefix: one namespace's rows (`ns/<id>/...`).
public struct PrefixedStorage: Storage {
    public let inner: any Storage
    public let prefix: String

    public init(_ inner: any Storage, prefix: String) {
        self.inner = inner
        self.prefix = prefix
    }

    public func get(_ key: String) async throws -> [UInt8]? { try await inner.get(prefix + key) }
    public func put(_ key: String, _ value: [UInt8]) async throws { try await inner.put(prefix + key, value) }
    public func putAll(_ entries: [StorageEntry]) async throws {
        try await inner.putAll(entries.map { StorageEntry(key: prefix + $0.key, value: $0.value) })
    }
    public func delete(_ key: String) async throws { try await inner.delete(prefix + key) }
    public func list(prefix p: String) async throws -> [String] { try await inner.list(prefix: prefix + p) }
    public func compareAndSet(_ key: String, expected: [UInt8]?, new: [UInt8]?) async throws -> Bool {
        try await inner.compareAndSet(prefix + key, expected: expected, new: new)
    }

    /// The feed of the whole store, narrowed to this prefix (keys made relative).
    public func changes(since revision: UInt64, limit: Int) async throws -> StorageChanges {
        switch try await inner.changes(since: revision, limit: limit) {
        case .compacted(let head): return .compacted(head: head)
        case .changes(let all, let head):
            return .changes(all.compactMap { c in
                guard c.key.hasPrefix(prefix) else { return nil }
                return StorageChange(revision: c.revision, key: String(c.key.dropFirst(prefix.count)), deleted: c.deleted)
            }, head: head)
        }
    }

    /// Deletes every row below the prefix.
    public func deleteAll(_ sub: String = "") async throws {
        for child in try await list(prefix: sub) {
            if child.hasSuffix("/") { try await deleteAll(sub + child) } else { try await delete(sub + child) }
        }
    }
}
