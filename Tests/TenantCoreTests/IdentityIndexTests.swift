import CofferSDK
import Foundation
import Identity
import Testing

/// The identity index alone: membership both ways, inherited policies, loops, merged ids.
@Suite struct IdentityIndexTests {
    let now = Date(timeIntervalSince1970: 1_700_000_000)

    func entity(_ id: String, policies: [String] = [], aliases: [EntityAlias] = [], merged: [String] = []) -> Entity {
        Entity(id: id, name: "n-" + id, policies: policies, aliases: aliases, mergedEntityIDs: merged, creationTime: now, lastUpdateTime: now)
    }

    func group(_ id: String, policies: [String] = [], entities: [String] = [], groups: [String] = []) -> Group {
        Group(id: id, name: "g-" + id, type: "internal", policies: policies, memberEntityIDs: entities, memberGroupIDs: groups, creationTime: now, lastUpdateTime: now)
    }

    @Test func policiesComeFromTheEntityAndEveryGroupAboveIt() {
        var idx = IdentityIndex()
        idx.put(entity("e", policies: ["own"]))
        idx.put(group("child", policies: ["c"], entities: ["e"]))
        idx.put(group("parent", policies: ["p"], groups: ["child"]))
        idx.put(group("top", policies: ["t"], groups: ["parent"]))
        idx.put(group("unrelated", policies: ["u"]))
        #expect(idx.policies(ofEntity: "e") == ["c", "own", "p", "t"])
        let (direct, inherited) = idx.groupIDs(ofEntity: "e")
        #expect(direct == ["child"] && inherited == ["parent", "top"])
        #expect(idx.parents(ofGroup: "child") == ["parent"])

        // Leaving the child group takes every inherited policy away.
        idx.put(group("child", policies: ["c"]))
        #expect(idx.policies(ofEntity: "e") == ["own"])
        #expect(idx.directGroups(ofEntity: "e").isEmpty)
    }

    @Test func loopsAreSeenBeforeTheyAreMade() {
        var idx = IdentityIndex()
        idx.put(group("a", groups: ["b"]))
        idx.put(group("b", groups: ["c"]))
        idx.put(group("c"))
        #expect(idx.wouldCycle(group: "c", members: ["a"]))
        #expect(idx.wouldCycle(group: "a", members: ["a"]))
        #expect(!idx.wouldCycle(group: "a", members: ["c"]))
        #expect(!idx.wouldCycle(group: "new", members: ["a"]))
    }

    @Test func aliasesAreFoundByMountAndNameWhateverTheCase() {
        var idx = IdentityIndex()
        let alias = EntityAlias(id: "al", canonicalID: "e", mountAccessor: "auth_userpass_1", name: "Alice", creationTime: now, lastUpdateTime: now)
        idx.put(entity("e", aliases: [alias]))
        #expect(idx.entityAlias(accessor: "auth_userpass_1", name: "alice")?.1.id == "e")
        #expect(idx.entityAlias(accessor: "auth_userpass_2", name: "alice") == nil)
        #expect(idx.entity(name: "N-E")?.id == "e")
        // Replacing the entity without the alias drops it from the index.
        idx.put(entity("e"))
        #expect(idx.entityAlias(id: "al") == nil && idx.entityAlias(accessor: "auth_userpass_1", name: "Alice") == nil)
    }

    @Test func aMergedEntityResolvesToTheSurvivor() {
        var idx = IdentityIndex()
        idx.put(entity("to", policies: ["kept"], merged: ["gone"]))
        idx.put(group("g", policies: ["gp"], entities: ["to"]))
        #expect(idx.entity(id: "gone") == nil)
        #expect(idx.resolvedEntity(id: "gone")?.id == "to")
        #expect(idx.policies(ofEntity: "gone") == ["gp", "kept"])
        idx.removeEntity("to")
        #expect(idx.resolvedEntity(id: "gone") == nil && idx.policies(ofEntity: "gone").isEmpty)
    }
}
