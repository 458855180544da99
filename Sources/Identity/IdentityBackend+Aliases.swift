import CofferSDK
import Foundation

extension IdentityBackend {
    // MARK: entity aliases

    /// `identity/entity-alias` and `entity-alias/id/:id`. Without an id, (mount accessor,
    /// name) names the alias: an existing one is updated, else it is created, on
    /// `canonical_id`'s entity or on a new one. An alias can move to another entity, never
    /// onto an entity that already has an alias on that mount.
    func upsertEntityAlias(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        let custom = f.has("custom_metadata") ? f.stringMap("custom_metadata") : nil
        if let custom, !custom.isEmpty { try Self.checkCustomMetadata(custom) }
        let canonical = f.string("canonical_id").isEmpty ? f.string("entity_id") : f.string("canonical_id")
        let id = f.string("id"), name = f.string("name"), accessor = f.string("mount_accessor")
        let store = self.store
        return try await store.change { idx, changes in
            let now = Date()
            let existing: (EntityAlias, Entity)
            if !id.isEmpty {
                guard let hit = idx.entityAlias(id: id) else { throw CofferError.invalid("invalid alias ID provided") }
                if name.isEmpty && accessor.isEmpty && canonical.isEmpty && custom == nil { return nil }
                existing = hit
            } else {
                guard !accessor.isEmpty, !name.isEmpty else { throw CofferError.invalid("'id' or 'mount_accessor' and 'name' must be provided") }
                guard let mount = store.mount(accessor: accessor) else { throw CofferError.invalid("invalid mount accessor \"\(accessor)\"") }
                if let hit = idx.entityAlias(accessor: accessor, name: name) {
                    existing = hit
                } else {
                    var entity: Entity
                    if !canonical.isEmpty {
                        guard let e = idx.entity(id: canonical) else { throw CofferError.invalid("invalid canonical ID") }
                        entity = e
                    } else {
                        entity = Entity(id: RandomID.uuid(), name: Self.generatedName("entity") { idx.entity(name: $0) != nil }, creationTime: now, lastUpdateTime: now)
                    }
                    if entity.aliases.contains(where: { $0.mountAccessor == accessor }) {
                        throw CofferError.invalid("Alias already exists for requested entity and mount accessor")
                    }
                    let alias = EntityAlias(id: RandomID.uuid(), canonicalID: entity.id, mountAccessor: accessor, name: name, customMetadata: custom ?? [:],
                                            local: mount.local, creationTime: now, lastUpdateTime: now)
                    entity.aliases.append(alias)
                    entity.lastUpdateTime = now
                    idx.put(entity)
                    changes.entity(entity.id)
                    return LogicalResponse(data: ["id": .string(alias.id), "canonical_id": .string(entity.id)])
                }
            }

            var (alias, owner) = existing
            let newName = name.isEmpty ? alias.name : name
            let newAccessor = accessor.isEmpty ? alias.mountAccessor : accessor
            let newCustom = custom ?? alias.customMetadata
            let moving = !canonical.isEmpty && canonical != owner.id
            let renamed = newName != alias.name || newAccessor != alias.mountAccessor || newCustom != alias.customMetadata
            if !renamed && !moving { return nil }
            if newAccessor != alias.mountAccessor && !moving && owner.aliases.contains(where: { $0.mountAccessor == newAccessor && $0.id != alias.id }) {
                throw CofferError.invalid("Alias cannot be updated as the entity already has an alias for the given 'mount_accessor' ")
            }
            if renamed {
                guard store.mount(accessor: newAccessor) != nil else { throw CofferError.invalid("invalid mount accessor \"\(newAccessor)\"") }
                if let other = idx.entityAlias(accessor: newAccessor, name: newName), other.0.id != alias.id {
                    throw CofferError.invalid("alias with combination of mount accessor and name already exists")
                }
            }
            var destination: Entity?
            if moving {
                if alias.local { throw CofferError.invalid("local aliases can't be moved between entities") }
                guard let d = idx.entity(id: canonical) else { throw CofferError.invalid("given 'canonical_id' is not associated with an entity") }
                if d.aliases.contains(where: { $0.mountAccessor == newAccessor }) {
                    throw CofferError.invalid("Alias cannot be updated as the given entity already has an alias for this mount ")
                }
                destination = d
            }
            alias.name = newName
            alias.mountAccessor = newAccessor
            alias.customMetadata = newCustom
            alias.lastUpdateTime = now
            owner.aliases.removeAll { $0.id == alias.id }
            if var d = destination {
                alias.canonicalID = d.id
                d.aliases.append(alias)
                d.lastUpdateTime = now
                idx.put(owner)
                idx.put(d)
                changes.entity(d.id)
            } else {
                owner.aliases = existing.1.aliases.map { $0.id == alias.id ? alias : $0 }
                idx.put(owner)
            }
            changes.entity(owner.id)
            return LogicalResponse(data: ["id": .string(alias.id), "canonical_id": .string(alias.canonicalID)])
        }
    }

    /// An entity alias as Vault shows it (inside an entity, without `namespace_id`).
    func aliasJSON(_ a: EntityAlias, inEntity: Bool) -> [String: JSONValue] {
        var o: [String: JSONValue] = [
            "id": .string(a.id), "canonical_id": .string(a.canonicalID), "mount_accessor": .string(a.mountAccessor),
            "name": .string(a.name), "metadata": Self.map(a.metadata), "custom_metadata": Self.map(a.customMetadata),
            "merged_from_canonical_ids": Self.stringsOrNull(a.mergedFromCanonicalIDs), "local": .bool(a.local),
            "creation_time": Self.time(a.creationTime), "last_update_time": Self.time(a.lastUpdateTime),
        ]
        if !inEntity { o["namespace_id"] = .string(store.namespaceID) }
        addMount(a.mountAccessor, to: &o)
        return o
    }

    func readEntityAlias(id: String) async throws -> LogicalResponse? {
        guard let (a, _) = try await store.index().entityAlias(id: id) else { return nil }
        return LogicalResponse(data: aliasJSON(a, inEntity: false))
    }

    func deleteEntityAlias(id: String) async throws -> LogicalResponse? {
        try await store.change { idx, changes in
            guard let (_, owner) = idx.entityAlias(id: id) else { return nil }
            var e = owner
            e.aliases.removeAll { $0.id == id }
            e.lastUpdateTime = Date()
            idx.put(e)
            changes.entity(e.id)
            return nil
        }
    }

    func listEntityAliases() async throws -> LogicalResponse? {
        let idx = try await store.index()
        let aliases = idx.entities.values.flatMap(\.aliases).sorted { $0.id < $1.id }
        guard !aliases.isEmpty else { return .list([]) }
        var info: [String: JSONValue] = [:]
        for a in aliases {
            var o: [String: JSONValue] = [
                "name": .string(a.name), "canonical_id": .string(a.canonicalID), "mount_accessor": .string(a.mountAccessor),
                "custom_metadata": Self.map(a.customMetadata), "metadata": Self.map(a.metadata), "local": .bool(a.local),
            ]
            addMount(a.mountAccessor, to: &o)
            info[a.id] = .object(o)
        }
        return LogicalResponse(data: ["keys": Self.strings(aliases.map(\.id)), "key_info": .object(info)])
    }

    // MARK: group aliases

    /// `identity/group-alias` and `group-alias/id/:id`: an external group's name on an auth
    /// mount. Without `canonical_id` a new alias makes a new external group.
    func upsertGroupAlias(_ req: LogicalRequest, byID: Bool = false) async throws -> LogicalResponse? {
        let f = req.fields
        let id = f.string("id"), name = f.string("name"), accessor = f.string("mount_accessor"), canonical = f.string("canonical_id")
        let store = self.store
        return try await store.change { idx, changes in
            var existing: (GroupAlias, Group)?
            if byID || !id.isEmpty {
                guard !id.isEmpty else { throw CofferError.invalid("empty group alias ID") }
                guard let hit = idx.groupAlias(id: id) else { throw CofferError.invalid("invalid group alias ID") }
                existing = hit
            }
            guard !name.isEmpty else { throw CofferError.invalid("missing alias name") }
            guard !accessor.isEmpty else { throw CofferError.invalid("missing mount_accessor") }
            if let (a, g) = existing, a.name == name, a.mountAccessor == accessor, canonical.isEmpty || canonical == g.id { return nil }
            var target: Group?
            if !canonical.isEmpty {
                guard let g = idx.group(id: canonical) else { throw CofferError.invalid("invalid group ID given in 'canonical_id'") }
                guard g.type == "external" else { throw CofferError.invalid("alias can't be set on an internal group") }
                target = g
            }
            guard let mount = store.mount(accessor: accessor) else { throw CofferError.invalid("invalid mount accessor \"\(accessor)\"") }
            if mount.local { throw CofferError.invalid("mount accessor \"\(accessor)\" is a local mount") }
            if let (other, _) = idx.groupAlias(accessor: accessor, name: name), other.id != existing?.0.id {
                throw CofferError.invalid("combination of mount and group alias name is already in use")
            }
            let now = Date()
            var alias = existing?.0 ?? GroupAlias(id: RandomID.uuid(), canonicalID: "", mountAccessor: accessor, name: name, creationTime: now, lastUpdateTime: now)
            alias.name = name
            alias.mountAccessor = accessor
            alias.lastUpdateTime = now
            var group = target ?? existing?.1 ?? Group(
                id: RandomID.uuid(), name: Self.generatedName("group") { idx.group(name: $0) != nil }, type: "external", creationTime: now, lastUpdateTime: now)
            if let (_, old) = existing, old.id != group.id, var moved = idx.group(id: old.id) {
                moved.alias = nil
                moved.modifyIndex += 1
                moved.lastUpdateTime = now
                idx.put(moved)
                changes.group(moved.id)
            }
            alias.canonicalID = group.id
            group.alias = alias
            group.modifyIndex += 1
            group.lastUpdateTime = now
            idx.put(group)
            changes.group(group.id)
            return LogicalResponse(data: ["id": .string(alias.id), "canonical_id": .string(group.id)])
        }
    }

    func groupAliasJSON(_ a: GroupAlias, inGroup: Bool) -> [String: JSONValue] {
        var o: [String: JSONValue] = [
            "id": .string(a.id), "canonical_id": .string(a.canonicalID), "mount_accessor": .string(a.mountAccessor),
            "name": .string(a.name), "metadata": .null, "merged_from_canonical_ids": .null,
            "creation_time": Self.time(a.creationTime), "last_update_time": Self.time(a.lastUpdateTime),
        ]
        if !inGroup {
            o["namespace_id"] = .string(store.namespaceID)
            o["custom_metadata"] = .null
            o["local"] = .bool(false)
        }
        addMount(a.mountAccessor, to: &o)
        return o
    }

    func readGroupAlias(id: String) async throws -> LogicalResponse? {
        guard let (a, _) = try await store.index().groupAlias(id: id) else { return nil }
        return LogicalResponse(data: groupAliasJSON(a, inGroup: false))
    }

    func deleteGroupAlias(id: String) async throws -> LogicalResponse? {
        try await store.change { idx, changes in
            guard let (_, owner) = idx.groupAlias(id: id) else { return nil }
            var g = owner
            g.alias = nil
            g.modifyIndex += 1
            g.lastUpdateTime = Date()
            idx.put(g)
            changes.group(g.id)
            return nil
        }
    }

    func listGroupAliases() async throws -> LogicalResponse? {
        let idx = try await store.index()
        let aliases = idx.groups.values.compactMap(\.alias).sorted { $0.id < $1.id }
        guard !aliases.isEmpty else { return .list([]) }
        var info: [String: JSONValue] = [:]
        for a in aliases {
            var o: [String: JSONValue] = ["name": .string(a.name), "canonical_id": .string(a.canonicalID), "mount_accessor": .string(a.mountAccessor)]
            addMount(a.mountAccessor, to: &o)
            info[a.id] = .object(o)
        }
        return LogicalResponse(data: ["keys": Self.strings(aliases.map(\.id)), "key_info": .object(info)])
    }
}
