import CofferSDK
import Foundation
import Synchronization

extension IdentityStore {
    /// The entity of a login, as Vault's core finds it: the alias (mount accessor, name)
    /// names it; an unknown alias makes a new entity holding it. The alias's metadata follows
    /// the method's. With `groupAliases` (an auth method that knows groups), the entity's
    /// membership of the external groups aliased on this mount is brought in line with them;
    /// unknown group names are ignored (no group is made). A disabled entity's login is
    /// refused (403), as in Vault.
    /// Answers the entity's id, whether it was made now, and the policies it brings.
    public func entity(forLogin mount: AuthMountInfo, alias name: String, metadata: [String: String], groupAliases: [String]? = nil) async throws -> (id: String, created: Bool, policies: [String]) {
        guard !name.isEmpty else { throw CofferError.internalError("missing name in alias") }
        // The common case reads only (under the lock, without copying the index): the alias
        // is known and nothing about it changed.
        if loaded.withLock({ $0 == nil }) { _ = try await index() }
        let known: (String, Bool, [String])?? = loaded.withLock { i in
            guard let idx = i else { return nil }
            guard let (a, e) = idx.entityAlias(accessor: mount.accessor, name: name), a.metadata == metadata,
                  groupAliases.map({ Self.externalGroups(idx, entity: e.id, mount: mount.accessor, names: $0).inSync }) ?? true else { return .some(nil) }
            return .some((e.id, e.disabled, e.disabled ? [] : idx.policies(ofEntity: e.id)))
        }
        if case .some(.some(let (id, disabled, policies))) = known {
            if disabled { throw CofferError.denied() }
            return (id, false, policies)
        }
        let result: (String, Bool, [String], Bool) = try await change { idx, changes in
            let now = Date()
            var created = false
            var entity: Entity
            if let (a, e) = idx.entityAlias(accessor: mount.accessor, name: name) {
                entity = e
                if a.metadata != metadata, let i = entity.aliases.firstIndex(where: { $0.id == a.id }) {
                    entity.aliases[i].metadata = metadata
                    entity.aliases[i].lastUpdateTime = now
                    idx.put(entity)
                    changes.entity(entity.id)
                }
            } else {
                let id = RandomID.uuid()
                let alias = EntityAlias(id: RandomID.uuid(), canonicalID: id, mountAccessor: mount.accessor, name: name, metadata: metadata,
                                        local: mount.local, creationTime: now, lastUpdateTime: now)
                entity = Entity(id: id, name: IdentityBackend.generatedName("entity") { idx.entity(name: $0) != nil },
                                aliases: [alias], creationTime: now, lastUpdateTime: now)
                idx.put(entity)
                changes.entity(id)
                created = true
            }
            if let groupAliases {
                let sync = Self.externalGroups(idx, entity: entity.id, mount: mount.accessor, names: groupAliases)
                for gid in sync.join + sync.leave {
                    guard var g = idx.group(id: gid) else { continue }
                    if sync.join.contains(gid) { g.memberEntityIDs.append(entity.id) } else { g.memberEntityIDs.removeAll { $0 == entity.id } }
                    g.modifyIndex += 1
                    g.lastUpdateTime = now
                    idx.put(g)
                    changes.group(gid)
                }
            }
            return (entity.id, created, entity.disabled ? [] : idx.policies(ofEntity: entity.id), entity.disabled)
        }
        if result.3 { throw CofferError.denied() }
        return (result.0, result.1, result.2)
    }

    /// Which external groups aliased on `mount` the entity must join and leave so that its
    /// membership is exactly the groups named `names` there.
    static func externalGroups(_ idx: IdentityIndex, entity: String, mount: String, names: [String]) -> (join: [String], leave: [String], inSync: Bool) {
        let wanted = Set(names.compactMap { idx.groupAlias(accessor: mount, name: $0)?.1.id })
        let current = Set(idx.directGroups(ofEntity: entity).filter { gid in
            guard let g = idx.group(id: gid) else { return false }
            return g.type == "external" && g.alias?.mountAccessor == mount
        })
        let join = wanted.subtracting(current).sorted(), leave = current.subtracting(wanted).sorted()
        return (join, leave, join.isEmpty && leave.isEmpty)
    }
}
