import CofferSDK
import Foundation
import Synchronization

/// One namespace's identity store: its entities and groups, kept in memory once first used
/// (a namespace that never logs anyone in never reads them) and stored one record per
/// entity or group below `sys/identity/` of the namespace.
///
/// Changes are serialized by one lock per namespace (as Vault's identity store does): a
/// change reads the current index, edits a copy, stores the records it touched, then swaps
/// the copy in. Readers (a request's policies, a read of an entity) take the index as it
/// is, without waiting.
public final class IdentityStore: Sendable {
    /// The namespace's `sys/identity/`.
    let view: StorageView
    /// The namespace's id (`namespace_id` in reads).
    public let namespaceID: String
    let loaded = Mutex<IdentityIndex?>(nil)
    /// Bumped by every drop (a standby's invalidation): a load that began before it does not
    /// install what it read.
    let generation = Atomic<UInt64>(0)
    let writer = AsyncMutex()
    /// The auth mounts of the namespace, by accessor (alias reads show their path and type;
    /// an alias must name one); set by the namespace once it exists.
    let mounts = Mutex<(@Sendable (String) -> AuthMountInfo?)?>(nil)

    static let entityPrefix = "entity/"
    static let groupPrefix = "group/"

    public init(view: StorageView, namespaceID: String) {
        self.view = view
        self.namespaceID = namespaceID
    }

    /// How to find the namespace's auth mounts by accessor.
    public func resolveMounts(_ resolver: @escaping @Sendable (String) -> AuthMountInfo?) {
        mounts.withLock { $0 = resolver }
    }

    /// The auth mount with accessor `accessor`, if it exists.
    public func mount(accessor: String) -> AuthMountInfo? { mounts.withLock { $0 }?(accessor) }

    /// The index, loading it on first use.
    public func index() async throws -> IdentityIndex {
        if let i = loaded.withLock({ $0 }) { return i }
        return try await load()
    }

    /// Forgets what is loaded (another node changed it): the next use reads storage again.
    public func dropLoaded() {
        loaded.withLock { i in
            i = nil
            generation.add(1, ordering: .releasing)
        }
    }

    /// What a token's entity brings to a request: the policies of the entity and of its
    /// groups, or nil when the entity is disabled or gone (deleted, not merged): such a
    /// token is refused, as in Vault, though it is not revoked.
    public func policies(ofEntity id: String) async throws -> [String]? {
        if let hit = loaded.withLock({ i in i.map { Self.usable($0, id) } }) { return hit }
        return Self.usable(try await load(), id)
    }

    static func usable(_ idx: IdentityIndex, _ id: String) -> [String]? {
        guard let e = idx.resolvedEntity(id: id), !e.disabled else { return nil }
        return idx.policies(ofEntity: e.id)
    }

    private func load() async throws -> IdentityIndex {
        let before = generation.load(ordering: .acquiring)
        var idx = IdentityIndex()
        for key in try await view.list(prefix: Self.entityPrefix) where !key.hasSuffix("/") {
            if let e = try await view.getCodable(Entity.self, Self.entityPrefix + key) { idx.put(e) }
        }
        for key in try await view.list(prefix: Self.groupPrefix) where !key.hasSuffix("/") {
            if let g = try await view.getCodable(Group.self, Self.groupPrefix + key) { idx.put(g) }
        }
        let result = idx
        return loaded.withLock { i in
            if let i { return i }
            if generation.load(ordering: .acquiring) == before { i = result }
            return result
        }
    }

    /// What a change did, for storage: the records to write and those to delete.
    public struct Changes: Sendable {
        var entities: Set<String> = []
        var groups: Set<String> = []
        public init() {}
        public mutating func entity(_ id: String) { entities.insert(id) }
        public mutating func group(_ id: String) { groups.insert(id) }
    }

    /// Runs one change: `body` edits a copy of the index and names what it touched; those
    /// records are stored (or deleted, when gone from the copy), then the copy is swapped in.
    public func change<T: Sendable>(_ body: @escaping @Sendable (inout IdentityIndex, inout Changes) throws -> T) async throws -> T {
        try await writer.withLock {
            var idx = try await self.index()
            var changes = Changes()
            let result = try body(&idx, &changes)
            guard !changes.entities.isEmpty || !changes.groups.isEmpty else { return result }
            var puts: [StorageEntry] = []
            var deletes: [String] = []
            for id in changes.entities.sorted() {
                if let e = idx.entity(id: id) {
                    puts.append(StorageEntry(key: Self.entityPrefix + id, value: Array(try StoredJSON.encoder.encode(e))))
                } else {
                    deletes.append(Self.entityPrefix + id)
                }
            }
            for id in changes.groups.sorted() {
                if let g = idx.group(id: id) {
                    puts.append(StorageEntry(key: Self.groupPrefix + id, value: Array(try StoredJSON.encoder.encode(g))))
                } else {
                    deletes.append(Self.groupPrefix + id)
                }
            }
            // What survives is written first (one atomic write), then what is gone.
            if !puts.isEmpty { try await self.view.putAll(puts) }
            for key in deletes { try await self.view.delete(key) }
            let done = idx
            self.loaded.withLock { $0 = done }
            return result
        }
    }
}
