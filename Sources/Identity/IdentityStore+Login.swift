import CofferSDK
import Foundation

extension IdentityStore {
    /// The entity of a login, as Vault's core finds it: the alias (mount accessor, name)
    /// names it; an unknown alias makes a new entity holding it. The alias's metadata follows
    /// the method's. With `groupAliases` (an auth method that knows groups), the entity's
    /// membership of the external groups aliased on this mount is brought in line with them;
    /// unknown group names are ignored (no group is made). A disabled entity's login is
    /// refused (403), as in Vault.
    public func entity(forLogin mount: AuthMountInfo, alias name: String, metadata: [String: String], groupAliases: [String]? = nil) async throws -> (id: String, created: Bool) {
        guard !name.isEmpty else { throw CofferError.internalError("missing name in alias") }
        // The common case reads only: the alias is known and nothing about it changed.
        let idx = try await index()
        if let (a, e) = idx.entityAlias(accessor: mount.accessor, name: name), a.metadata == metadata,
           groupAliases.map({ Self.externalGroups(idx, entity: e.id, mount: mount.accessor, names: $0).inSync }) ?? true {
            if e.disabled { throw CofferError.denied() }
            return (e.id, false)
        }
        let result: (String, Bool, Bool) = try await change { idx, changes in
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
            return (entity.id, created, entity.disabled)
        }
        if result.2 { throw CofferError.denied() }
        return (result.0, result.1)
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
