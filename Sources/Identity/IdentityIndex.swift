import CofferSDK

/// A namespace's identities in memory, with the lookups Vault's memdb indexes answer:
/// entities and groups by id and by name (names case-insensitive, as Vault's default),
/// aliases by id and by (mount accessor, name), and membership both ways. A value type:
/// the store changes a copy and swaps it in, so a reader never sees half a change.
public struct IdentityIndex: Sendable {
    public private(set) var entities: [String: Entity] = [:]
    public private(set) var groups: [String: Group] = [:]
    var entityByName: [String: String] = [:]
    var groupByName: [String: String] = [:]
    /// Entity alias id → entity id.
    var entityOfAlias: [String: String] = [:]
    /// `accessor \0 name` → entity alias id.
    var entityAliasByFactors: [String: String] = [:]
    /// An entity merged into another → the one it was merged into (its tokens resolve there).
    var entityOfMergedID: [String: String] = [:]
    /// Group alias id → group id.
    var groupOfAlias: [String: String] = [:]
    /// `accessor \0 name` → group alias id.
    var groupAliasByFactors: [String: String] = [:]
    /// Entity id → the groups that name it as a member.
    var groupsOfEntity: [String: Set<String>] = [:]
    /// Group id → the groups that name it as a member (its parents).
    var parentsOfGroup: [String: Set<String>] = [:]

    public init() {}

    static func nameKey(_ name: String) -> String { name.lowercased() }
    /// An alias's key: its mount accessor and its name, case-insensitive.
    static func factors(_ accessor: String, _ name: String) -> String { accessor + "\u{0}" + name.lowercased() }

    // MARK: lookups

    public func entity(id: String) -> Entity? { entities[id] }
    /// The entity a token's entity id names: itself, or the one it was merged into.
    public func resolvedEntity(id: String) -> Entity? { entities[id] ?? entityOfMergedID[id].flatMap { entities[$0] } }
    public func entity(name: String) -> Entity? { entityByName[Self.nameKey(name)].flatMap { entities[$0] } }
    public func group(id: String) -> Group? { groups[id] }
    public func group(name: String) -> Group? { groupByName[Self.nameKey(name)].flatMap { groups[$0] } }

    /// An entity alias and the entity that holds it.
    public func entityAlias(id: String) -> (EntityAlias, Entity)? {
        guard let eid = entityOfAlias[id], let e = entities[eid], let a = e.aliases.first(where: { $0.id == id }) else { return nil }
        return (a, e)
    }

    public func entityAlias(accessor: String, name: String) -> (EntityAlias, Entity)? {
        entityAliasByFactors[Self.factors(accessor, name)].flatMap { entityAlias(id: $0) }
    }

    public func groupAlias(id: String) -> (GroupAlias, Group)? {
        guard let gid = groupOfAlias[id], let g = groups[gid], let a = g.alias, a.id == id else { return nil }
        return (a, g)
    }

    public func groupAlias(accessor: String, name: String) -> (GroupAlias, Group)? {
        groupAliasByFactors[Self.factors(accessor, name)].flatMap { groupAlias(id: $0) }
    }

    /// The groups that name `entityID` as a member.
    public func directGroups(ofEntity entityID: String) -> [String] { (groupsOfEntity[entityID] ?? []).sorted() }

    /// The groups that contain `groupID`.
    public func parents(ofGroup groupID: String) -> [String] { (parentsOfGroup[groupID] ?? []).sorted() }

    /// Every group above `start` (not including `start` itself), walking parents; a cycle
    /// (which the store refuses to make) stops the walk.
    public func ancestors(of start: [String]) -> Set<String> {
        var seen = Set<String>()
        var queue = start.flatMap { parentsOfGroup[$0] ?? [] }
        while let g = queue.popLast() {
            guard seen.insert(g).inserted else { continue }
            queue.append(contentsOf: parentsOfGroup[g] ?? [])
        }
        return seen
    }

    /// The entity's groups: direct ones and those inherited through parent groups.
    public func groupIDs(ofEntity entityID: String) -> (direct: [String], inherited: [String]) {
        let direct = directGroups(ofEntity: entityID)
        let inherited = ancestors(of: direct).subtracting(direct)
        return (direct, inherited.sorted())
    }

    /// The policies an entity brings to its tokens: its own and those of every group it is
    /// in, directly or through parent groups (empty for an unknown entity).
    public func policies(ofEntity entityID: String) -> [String] {
        guard let e = resolvedEntity(id: entityID) else { return [] }
        // Most entities are in no group: their own (sorted) policies, without sets.
        guard groupsOfEntity[e.id]?.isEmpty == false else { return e.policies }
        var out = Set(e.policies)
        let (direct, inherited) = groupIDs(ofEntity: e.id)
        for g in direct + inherited { out.formUnion(groups[g]?.policies ?? []) }
        return out.sorted()
    }

    /// Would making `members` the member groups of `groupID` close a loop?
    public func wouldCycle(group groupID: String, members: [String]) -> Bool {
        // A loop: groupID is reachable downward from one of the new members.
        var seen = Set<String>()
        var queue = members
        while let g = queue.popLast() {
            if g == groupID { return true }
            guard seen.insert(g).inserted else { continue }
            queue.append(contentsOf: groups[g]?.memberGroupIDs ?? [])
        }
        return false
    }

    // MARK: changes

    /// Puts (adds or replaces) an entity and its aliases.
    public mutating func put(_ entity: Entity) {
        if let old = entities[entity.id] { unindex(old) }
        entities[entity.id] = entity
        entityByName[Self.nameKey(entity.name)] = entity.id
        for a in entity.aliases {
            entityOfAlias[a.id] = entity.id
            entityAliasByFactors[Self.factors(a.mountAccessor, a.name)] = a.id
        }
        for m in entity.mergedEntityIDs { entityOfMergedID[m] = entity.id }
    }

    public mutating func removeEntity(_ id: String) {
        guard let old = entities.removeValue(forKey: id) else { return }
        unindex(old)
    }

    private mutating func unindex(_ e: Entity) {
        if entityByName[Self.nameKey(e.name)] == e.id { entityByName.removeValue(forKey: Self.nameKey(e.name)) }
        for a in e.aliases {
            if entityOfAlias[a.id] == e.id { entityOfAlias.removeValue(forKey: a.id) }
            let f = Self.factors(a.mountAccessor, a.name)
            if entityAliasByFactors[f] == a.id { entityAliasByFactors.removeValue(forKey: f) }
        }
        for m in e.mergedEntityIDs where entityOfMergedID[m] == e.id { entityOfMergedID.removeValue(forKey: m) }
    }

    /// Puts (adds or replaces) a group, its alias and its membership edges.
    public mutating func put(_ group: Group) {
        if let old = groups[group.id] { unindex(old) }
        groups[group.id] = group
        groupByName[Self.nameKey(group.name)] = group.id
        if let a = group.alias {
            groupOfAlias[a.id] = group.id
            groupAliasByFactors[Self.factors(a.mountAccessor, a.name)] = a.id
        }
        for e in group.memberEntityIDs { groupsOfEntity[e, default: []].insert(group.id) }
        for g in group.memberGroupIDs { parentsOfGroup[g, default: []].insert(group.id) }
    }

    public mutating func removeGroup(_ id: String) {
        guard let old = groups.removeValue(forKey: id) else { return }
        unindex(old)
    }

    private mutating func unindex(_ g: Group) {
        if groupByName[Self.nameKey(g.name)] == g.id { groupByName.removeValue(forKey: Self.nameKey(g.name)) }
        if let a = g.alias {
            if groupOfAlias[a.id] == g.id { groupOfAlias.removeValue(forKey: a.id) }
            let f = Self.factors(a.mountAccessor, a.name)
            if groupAliasByFactors[f] == a.id { groupAliasByFactors.removeValue(forKey: f) }
        }
        for e in g.memberEntityIDs {
            groupsOfEntity[e]?.remove(g.id)
            if groupsOfEntity[e]?.isEmpty == true { groupsOfEntity.removeValue(forKey: e) }
        }
        for m in g.memberGroupIDs {
            parentsOfGroup[m]?.remove(g.id)
            if parentsOfGroup[m]?.isEmpty == true { parentsOfGroup.removeValue(forKey: m) }
        }
    }
}
