import CofferSDK
import Foundation
@testable import Identity
import JOSE
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

/// Identity-token keys and claim templates, without a server.
@Suite struct IdentityTokenTests {
    @Test func everyAlgorithmSignsAndOnlyItsOwnSignatureVerifies() async throws {
        for alg in JWSAlgorithm.allCases {
            let k = try await SigningKeyVersion.generate(alg, now: Date())
            let input = Array("header.payload".utf8)
            let sig = try k.sign(input)
            #expect(k.verify(sig, input), "\(alg)")
            #expect(!k.verify(sig, Array("header.payloae".utf8)), "\(alg)")
            var flipped = sig
            flipped[flipped.count / 2] ^= 1
            #expect(!k.verify(flipped, input), "\(alg)")
            let other = try await SigningKeyVersion.generate(alg, now: Date())
            #expect(!other.verify(sig, input), "\(alg)")
            #expect(try k.jwk()["kid"]?.stringValue == k.kid)
        }
    }

    @Test func aReplacedKeyVerifiesUntilItsVerificationTTL() async throws {
        let t0 = Date(timeIntervalSince1970: 1_700_000_000)
        var key = NamedKey(name: "k", algorithm: .ES256, rotationPeriod: 3600, verificationTTL: 600, allowedClientIDs: [], versions: [])
        key.rotate(to: try await SigningKeyVersion.generate(.ES256, now: t0), now: t0)
        let first = try #require(key.current)
        #expect(!key.rotationDue(at: t0.addingTimeInterval(3599)) && key.rotationDue(at: t0.addingTimeInterval(3600)))
        let t1 = t0.addingTimeInterval(3600)
        key.rotate(to: try await SigningKeyVersion.generate(.ES256, now: t1), now: t1)
        #expect(key.current?.kid != first.kid)
        #expect(key.verifying(at: t1.addingTimeInterval(599)).map(\.kid).contains(first.kid))
        #expect(!key.verifying(at: t1.addingTimeInterval(600)).map(\.kid).contains(first.kid))
        // A later rotation drops what no longer verifies.
        let t2 = t1.addingTimeInterval(3600)
        key.rotate(to: try await SigningKeyVersion.generate(.ES256, now: t2), now: t2)
        #expect(key.versions.count == 2 && !key.versions.map(\.kid).contains(first.kid))
    }

    @Test func templatesRenderTheEntityAsJSON() throws {
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        let alias = EntityAlias(id: "a1", canonicalID: "e", mountAccessor: "auth_userpass_x", name: "bob", metadata: ["dept": "ops"], creationTime: now, lastUpdateTime: now)
        var idx = IdentityIndex()
        let e = Entity(id: "e", name: "bob-entity", metadata: ["color": "green"], aliases: [alias], creationTime: now, lastUpdateTime: now)
        idx.put(e)
        idx.put(Group(id: "g", name: "admins", type: "internal", memberEntityIDs: ["e"], creationTime: now, lastUpdateTime: now))
        let t = """
        {"color": {{identity.entity.metadata.color}}, "all": {{identity.entity.metadata}}, "groups": {{identity.entity.groups.names}},
         "user": {{identity.entity.aliases.auth_userpass_x.name}}, "dept": {{identity.entity.aliases.auth_userpass_x.metadata.dept}},
         "missing": {{identity.entity.metadata.nope}}, "nbf": {{time.now.minus.1m}}}
        """
        let c = try IdentityBackend.render(template: t, entity: e, index: idx, now: now)
        #expect(c["color"] == "green" && c["all"] == ["color": "green"] && c["groups"] == ["admins"])
        #expect(c["user"] == "bob" && c["dept"] == "ops" && c["missing"] == "" && c["nbf"] == .int(1_700_000_000 - 60))
        #expect(throws: CofferError.self) { try IdentityBackend.render(template: #"{"a": {{identity.entity.unknown}}}"#, entity: e, index: idx, now: now) }
        #expect(throws: CofferError.self) { try IdentityBackend.render(template: #"{"a": {{identity.entity.id}"#, entity: e, index: idx, now: now) }
        // A value that would break out of its string is quoted JSON, never raw text.
        let evil = Entity(id: "e2", name: #"x", "sub": "root"#, creationTime: now, lastUpdateTime: now)
        let r = try IdentityBackend.render(template: #"{"n": {{identity.entity.name}}}"#, entity: evil, index: idx, now: now)
        #expect(r.count == 1 && r["n"] == .string(#"x", "sub": "root"#))
    }
}
