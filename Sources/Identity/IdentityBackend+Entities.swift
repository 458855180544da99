import CofferSDK
import Foundation

extension IdentityBackend {
    // MARK: entities

    /// `identity/entity`, `entity/id/:id`, `entity/name/:name`: Vault's one update handler.
    /// An id names an existing entity; a name alone that is taken names that entity (an
    /// upsert). A new entity answers its id and name; an update answers nothing (204).
    func upsertEntity(_ req: LogicalRequest, id: String, name: String) async throws -> LogicalResponse? {
        let f = req.fields
        let policies = f.has("policies") ? Self.policyList(f.strings("policies")) : nil
        if policies?.contains("root") == true { throw CofferError.invalid("policies cannot contain root") }
        let metadata = f.has("metadata") ? f.stringMap("metadata") : nil
        if let metadata { try Self.checkMetadata(metadata, kind: "entity") }
        let disabled = f.has("disabled") ? f.bool("disabled") : nil
        let now = Date()
        return try await store.change { idx, changes in
            var target: Entity?
            if !id.isEmpty {
                guard let e = idx.entity(id: id) else { throw CofferError.invalid("entity not found from id") }
                target = e
            }
            if !name.isEmpty, let named = idx.entity(name: name) {
                if target == nil {
                    target = named
                } else if named.id != target?.id {
                    throw CofferError.invalid("entity name is already in use")
                }
            }
            let isNew = target == nil
            var e = target ?? Entity(id: RandomID.uuid(), name: "", creationTime: now, lastUpdateTime: now)
            if !name.isEmpty { e.name = name }
            if e.name.isEmpty { e.name = Self.generatedName("entity") { idx.entity(name: $0) != nil } }
            if let policies { e.policies = policies }
            if let metadata { e.metadata = metadata }
            if let disabled { e.disabled = disabled }
            e.lastUpdateTime = now
            idx.put(e)
            changes.entity(e.id)
            guard isNew else { return nil }
            return LogicalResponse(data: ["id": .string(e.id), "name": .string(e.name), "aliases": e.aliases.isEmpty ? .null : Self.strings(e.aliases.map(\.id))])
        }
    }

    func readEntity(id: String) async throws -> LogicalResponse? {
        let idx = try await store.index()
        return idx.entity(id: id).map { LogicalResponse(data: entityJSON($0, idx)) }
    }

    func readEntity(name: String) async throws -> LogicalResponse? {
        let idx = try await store.index()
        return idx.entity(name: name).map { LogicalResponse(data: entityJSON($0, idx)) }
    }

    /// An entity as Vault reads it, with its aliases and its groups.
    func entityJSON(_ e: Entity, _ idx: IdentityIndex) -> [String: JSONValue] {
        let (direct, inherited) = idx.groupIDs(ofEntity: e.id)
        return [
            "id": .string(e.id), "name": .string(e.name), "namespace_id": .string(store.namespaceID),
            "metadata": Self.map(e.metadata), "policies": Self.strings(e.policies), "disabled": .bool(e.disabled),
            "merged_entity_ids": Self.stringsOrNull(e.mergedEntityIDs),
            "creation_time": Self.time(e.creationTime), "last_update_time": Self.time(e.lastUpdateTime),
            "aliases": .array(e.aliases.map { .object(aliasJSON($0, inEntity: true)) }),
            "direct_group_ids": Self.strings(direct), "inherited_group_ids": Self.strings(inherited),
            "group_ids": Self.strings(direct + inherited),
        ]
    }

    func deleteEntity(id: String) async throws -> LogicalResponse? {
        try await store.change { idx, changes in
            if idx.entity(id: id) != nil { Self.remove(entity: id, from: &idx, &changes) }
            return nil
        }
    }

    func deleteEntity(name: String) async throws -> LogicalResponse? {
        try await store.change { idx, changes in
            if let e = idx.entity(name: name) { Self.remove(entity: e.id, from: &idx, &changes) }
            return nil
        }
    }

    func batchDeleteEntities(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let ids = Self.idList(req.fields.strings("entity_ids"))
        guard !ids.isEmpty else { throw CofferError.invalid("missing entity ids to delete") }
        return try await store.change { idx, changes in
            for id in ids where idx.entity(id: id) != nil { Self.remove(entity: id, from: &idx, &changes) }
            return nil
        }
    }

    /// Deletes an entity with its aliases, and takes it out of every group. Its tokens are
    /// not revoked: they are refused while their entity is gone.
    static func remove(entity id: String, from idx: inout IdentityIndex, _ changes: inout IdentityStore.Changes) {
        let now = Date()
        for gid in idx.directGroups(ofEntity: id) {
            guard var g = idx.group(id: gid) else { continue }
            g.memberEntityIDs.removeAll { $0 == id }
            g.modifyIndex += 1
            g.lastUpdateTime = now
            idx.put(g)
            changes.group(gid)
        }
        idx.removeEntity(id)
        changes.entity(id)
    }

    func listEntities(byID: Bool) async throws -> LogicalResponse? {
        let idx = try await store.index()
        let all = idx.entities.values.sorted { $0.id < $1.id }
        guard !all.isEmpty else { return .list([]) }
        var keys: [JSONValue] = []
        var info: [String: JSONValue] = [:]
        for e in all {
            keys.append(.string(byID ? e.id : e.name))
            // As in Vault, key_info is keyed by id: a list by name has none.
            guard byID else { continue }
            var item: [String: JSONValue] = ["name": .string(e.name)]
            if !e.aliases.isEmpty {
                item["aliases"] = .array(e.aliases.map { a in
                    var o: [String: JSONValue] = ["id": .string(a.id), "name": .string(a.name), "mount_accessor": .string(a.mountAccessor)]
                    addMount(a.mountAccessor, to: &o)
                    return .object(o)
                })
            }
            info[e.id] = .object(item)
        }
        var data: [String: JSONValue] = ["keys": .array(keys)]
        if byID { data["key_info"] = .object(info) }
        return LogicalResponse(data: data)
    }

    // MARK: merge

    /// `entity/merge`: moves the aliases of `from_entity_ids` onto `to_entity_id` and deletes
    /// them; tokens of a merged entity resolve to the one it was merged into. Two aliases on
    /// the same mount are refused unless `conflicting_alias_ids_to_keep` names the survivor.
    func mergeEntities(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let f = req.fields
        let to = f.string("to_entity_id")
        guard !to.isEmpty else { throw CofferError.invalid("missing entity id to merge to") }
        let fromIDs = Self.idList(f.strings("from_entity_ids"))
        guard !fromIDs.isEmpty else { throw CofferError.invalid("missing entity ids to merge from") }
        let keep = Set(Self.idList(f.strings("conflicting_alias_ids_to_keep")))
        return try await store.change { idx, changes in
            guard var target = idx.entity(id: to) else { throw CofferError.invalid("entity id to merge to is invalid") }
            if fromIDs.count > 1 && keep.count > 1 {
                throw CofferError.invalid("aliases conflicts cannot be resolved with multiple from entity ids - merge one entity at a time")
            }
            var sources: [Entity] = []
            for id in fromIDs {
                if id == to { throw CofferError.invalid("to_entity_id should not be present in from_entity_ids") }
                guard let e = idx.entity(id: id) else { throw CofferError.invalid("entity id to merge from is invalid") }
                sources.append(e)
            }
            if keep.isEmpty {
                // One mount's alias in two source entities cannot be resolved in one merge.
                var seen: [String: String] = [:]
                for e in sources {
                    for a in e.aliases {
                        if let other = seen[a.mountAccessor], other != e.id, !target.aliases.isEmpty {
                            throw CofferError.invalid("mount accessor \(a.mountAccessor) found in multiple fromEntities, merge should be done with one fromEntity at a time")
                        }
                        seen[a.mountAccessor] = e.id
                    }
                }
                var clashes: [String] = []
                for e in sources {
                    for a in e.aliases {
                        if let t = target.aliases.first(where: { $0.mountAccessor == a.mountAccessor }) {
                            clashes.append("mountAccessor: \(a.mountAccessor), toEntity ID: \(target.id), fromEntity ID: \(e.id), conflicting toEntity alias ID: \(t.id), conflicting fromEntity alias ID: \(a.id)")
                        }
                    }
                }
                if !clashes.isEmpty {
                    throw CofferError.invalid((["toEntity and at least one fromEntity have aliases with the same mount accessor, repeat the merge request specifying exactly one fromEntity, clashes: "] + clashes).joined(separator: "; "))
                }
            }
            let now = Date()
            for source in sources {
                for var a in source.aliases {
                    if let t = target.aliases.firstIndex(where: { $0.mountAccessor == a.mountAccessor }) {
                        if keep.contains(target.aliases[t].id) { continue }  // the source's alias goes
                        guard keep.contains(a.id) else {
                            throw CofferError.invalid("conflicting mount accessors in following alias IDs and neither were present in conflicting_alias_ids_to_keep: \(a.id), \(target.aliases[t].id)")
                        }
                        target.aliases.remove(at: t)
                    }
                    a.canonicalID = target.id
                    a.mergedFromCanonicalIDs.append(source.id)
                    a.lastUpdateTime = now
                    target.aliases.append(a)
                }
                target.mergedEntityIDs += source.mergedEntityIDs + [source.id]
                for gid in idx.directGroups(ofEntity: source.id) {
                    guard var g = idx.group(id: gid) else { continue }
                    g.memberEntityIDs.removeAll { $0 == source.id }
                    if !g.memberEntityIDs.contains(target.id) { g.memberEntityIDs.append(target.id) }
                    g.modifyIndex += 1
                    g.lastUpdateTime = now
                    idx.put(g)
                    changes.group(gid)
                }
                idx.removeEntity(source.id)
                changes.entity(source.id)
            }
            target.lastUpdateTime = now
            idx.put(target)
            changes.entity(target.id)
            return nil
        }
    }
}
