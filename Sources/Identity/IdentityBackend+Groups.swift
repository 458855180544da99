import CofferSDK
import Foundation

extension IdentityBackend {
    // MARK: groups

    /// `identity/group` (by `id`, else by `name`, else new), `group/id/:id`, `group/name/:name`
    /// (an unknown name makes the group). Internal groups name member entities and member
    /// groups (no loops); an external group's members come from logins through its alias.
    func upsertGroup(_ req: LogicalRequest, byID: Bool = false, byName: Bool = false) async throws -> LogicalResponse? {
        let f = req.fields
        let id = f.string("id"), name = f.string("name")
        let mode: Character = byID || (!byName && !id.isEmpty) ? "i" : (byName || !name.isEmpty ? "n" : "c")
        let policies = f.has("policies") ? Self.policyList(f.strings("policies")) : nil
        if policies?.contains("root") == true { throw CofferError.invalid("policies cannot contain root") }
        let metadata = f.has("metadata") ? f.stringMap("metadata") : nil
        if let metadata { try Self.checkMetadata(metadata, kind: "group") }
        let type = f.string("type").lowercased()
        if !type.isEmpty && type != "internal" && type != "external" { throw CofferError.invalid("invalid group type \"\(type.prefix(64))\"") }
        let memberEntities = f.has("member_entity_ids") ? Self.idList(f.strings("member_entity_ids")) : nil
        let memberGroups = f.has("member_group_ids") ? Self.idList(f.strings("member_group_ids")) : nil
        return try await store.change { idx, changes in
            var target: Group?
            switch mode {
            case "i":
                guard !id.isEmpty else { throw CofferError.invalid("empty group ID") }
                guard let g = idx.group(id: id) else { throw CofferError.invalid("invalid group ID") }
                target = g
            case "n":
                guard !name.isEmpty else { throw CofferError.invalid("empty group name") }
                target = idx.group(name: name)
            default:
                break
            }
            let isNew = target == nil
            let now = Date()
            var g = target ?? Group(id: RandomID.uuid(), name: "", type: "", creationTime: now, lastUpdateTime: now)
            if let policies { g.policies = policies }
            if !type.isEmpty {
                if !isNew && type != g.type { throw CofferError.invalid("group type cannot be changed") }
                g.type = type
            }
            if g.type.isEmpty { g.type = "internal" }
            if !name.isEmpty {
                if let other = idx.group(name: name), other.id != g.id { throw CofferError.invalid("group name is already in use") }
                g.name = name
            }
            if g.name.isEmpty { g.name = Self.generatedName("group") { idx.group(name: $0) != nil } }
            if let metadata { g.metadata = metadata }
            if let memberEntities {
                if g.type == "external" { throw CofferError.invalid("member entities can't be set manually for external groups") }
                for e in memberEntities where idx.entity(id: e) == nil { throw CofferError.invalid("invalid entity ID \"\(e.prefix(64))\"") }
                g.memberEntityIDs = memberEntities
            }
            if let memberGroups {
                if g.type == "external" { throw CofferError.invalid("member groups can't be set for external groups") }
                for m in memberGroups {
                    if m == g.id { throw CofferError.invalid("member group ID \"\(m)\" is same as the ID of the group") }
                    guard idx.group(id: m) != nil else { throw CofferError.invalid("invalid member group ID \"\(m.prefix(64))\"") }
                    if idx.wouldCycle(group: g.id, members: [m]) { throw CofferError.invalid("cyclic relationship detected for member group ID \"\(m)\"") }
                }
                g.memberGroupIDs = memberGroups
            }
            g.modifyIndex += 1
            g.lastUpdateTime = now
            idx.put(g)
            changes.group(g.id)
            guard isNew else { return nil }
            return LogicalResponse(data: ["id": .string(g.id), "name": .string(g.name)])
        }
    }

    /// A group as Vault reads it.
    func groupJSON(_ g: Group, _ idx: IdentityIndex) -> [String: JSONValue] {
        [
            "id": .string(g.id), "name": .string(g.name), "type": .string(g.type), "namespace_id": .string(store.namespaceID),
            "policies": Self.stringsOrNull(g.policies), "metadata": Self.map(g.metadata),
            "member_entity_ids": Self.stringsOrNull(g.memberEntityIDs), "member_group_ids": Self.stringsOrNull(g.memberGroupIDs),
            "parent_group_ids": Self.stringsOrNull(idx.parents(ofGroup: g.id)),
            "creation_time": Self.time(g.creationTime), "last_update_time": Self.time(g.lastUpdateTime),
            "modify_index": .int(Int64(g.modifyIndex)),
            "alias": .object(g.alias.map { groupAliasJSON($0, inGroup: true) } ?? [:]),
        ]
    }

    func readGroup(id: String) async throws -> LogicalResponse? {
        guard !id.isEmpty else { throw CofferError.invalid("empty group id") }
        let idx = try await store.index()
        return idx.group(id: id).map { LogicalResponse(data: groupJSON($0, idx)) }
    }

    func readGroup(name: String) async throws -> LogicalResponse? {
        let idx = try await store.index()
        return idx.group(name: name).map { LogicalResponse(data: groupJSON($0, idx)) }
    }

    func deleteGroup(id: String) async throws -> LogicalResponse? {
        try await store.change { idx, changes in
            if idx.group(id: id) != nil { Self.remove(group: id, from: &idx, &changes) }
            return nil
        }
    }

    func deleteGroup(name: String) async throws -> LogicalResponse? {
        try await store.change { idx, changes in
            if let g = idx.group(name: name) { Self.remove(group: g.id, from: &idx, &changes) }
            return nil
        }
    }

    /// Deletes a group (with its alias) and takes it out of the groups that contain it.
    static func remove(group id: String, from idx: inout IdentityIndex, _ changes: inout IdentityStore.Changes) {
        for pid in idx.parents(ofGroup: id) {
            guard var p = idx.group(id: pid) else { continue }
            p.memberGroupIDs.removeAll { $0 == id }
            idx.put(p)
            changes.group(pid)
        }
        idx.removeGroup(id)
        changes.group(id)
    }

    func listGroups(byID: Bool) async throws -> LogicalResponse? {
        let idx = try await store.index()
        let all = idx.groups.values.sorted { $0.id < $1.id }
        guard !all.isEmpty else { return .list([]) }
        var info: [String: JSONValue] = [:]
        if byID {
            for g in all {
                var o: [String: JSONValue] = [
                    "name": .string(g.name), "num_member_entities": .int(Int64(g.memberEntityIDs.count)),
                    "num_parent_groups": .int(Int64(idx.parents(ofGroup: g.id).count)),
                ]
                if let a = g.alias {
                    var ao: [String: JSONValue] = ["id": .string(a.id), "name": .string(a.name), "mount_accessor": .string(a.mountAccessor)]
                    addMount(a.mountAccessor, to: &ao)
                    o["alias"] = .object(ao)
                }
                info[g.id] = .object(o)
            }
        }
        var data: [String: JSONValue] = ["keys": Self.strings(all.map { byID ? $0.id : $0.name })]
        if byID { data["key_info"] = .object(info) }
        return LogicalResponse(data: data)
    }

    // MARK: lookups

    /// Which one query a lookup asks (Vault's rules: exactly one of id, name, alias_id, or
    /// the pair alias_name + alias_mount_accessor).
    enum Query {
        case id(String), name(String), aliasID(String), alias(accessor: String, name: String)
    }

    static func query(_ f: FieldValues) throws -> Query {
        let keys = ["id", "name", "alias_id", "alias_name", "alias_mount_accessor"].filter { f.has($0) }
        if keys.isEmpty { throw CofferError.invalid("query parameter not supplied") }
        let pair = Set(keys) == ["alias_name", "alias_mount_accessor"]
        if keys.count > 1 && !pair { throw CofferError.invalid("query parameter conflict; please supply distinct set of query parameters") }
        switch keys[0] {
        case "id": return .id(f.string("id"))
        case "name": return .name(f.string("name"))
        case "alias_id": return .aliasID(f.string("alias_id"))
        default:
            guard pair, !f.string("alias_name").isEmpty, !f.string("alias_mount_accessor").isEmpty else {
                throw CofferError.invalid("both 'alias_name' and 'alias_mount_accessor' needs to be set")
            }
            return .alias(accessor: f.string("alias_mount_accessor"), name: f.string("alias_name"))
        }
    }

    /// `identity/lookup/entity`: the entity, or nothing (204) when none matches.
    func lookupEntity(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let q = try Self.query(req.fields)
        let idx = try await store.index()
        let found: Entity?
        switch q {
        case .id(let id): found = id.isEmpty ? nil : idx.entity(id: id)
        case .name(let name): found = name.isEmpty ? nil : idx.entity(name: name)
        case .aliasID(let id): found = id.isEmpty ? nil : idx.entityAlias(id: id)?.1
        case .alias(let accessor, let name): found = idx.entityAlias(accessor: accessor, name: name)?.1
        }
        return found.map { LogicalResponse(data: entityJSON($0, idx)) }
    }

    /// `identity/lookup/group`: the group, or nothing (204) when none matches.
    func lookupGroup(_ req: LogicalRequest) async throws -> LogicalResponse? {
        let q = try Self.query(req.fields)
        let idx = try await store.index()
        let found: Group?
        switch q {
        case .id(let id): found = id.isEmpty ? nil : idx.group(id: id)
        case .name(let name): found = name.isEmpty ? nil : idx.group(name: name)
        case .aliasID(let id): found = id.isEmpty ? nil : idx.groupAlias(id: id)?.1
        case .alias(let accessor, let name): found = idx.groupAlias(accessor: accessor, name: name)?.1
        }
        return found.map { LogicalResponse(data: groupJSON($0, idx)) }
    }
}
