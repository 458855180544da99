import CofferSDK
import Foundation
import Logging
import Testing
import TenantCore

@Suite struct TokenLifecycleTests {
    @Test func createLookupRenewRevoke() async throws {
        let t = try await TestCore.make()
        let r = try await t.call(.update, "auth/token/create", ["policies": ["default"], "ttl": "1h", "meta": ["team": "a"], "display_name": "ci"])
        let auth = try #require(r.auth)
        #expect(auth.clientToken.hasPrefix("hvs."))
        #expect(auth.clientToken.count == 28)
        #expect(auth.leaseDuration == 3600)
        #expect(auth.renewable)
        let look = try await t.call(.update, "auth/token/lookup", ["token": .string(auth.clientToken)])
        #expect(look.data?["display_name"] == "token-ci")
        #expect(look.data?["meta"]?["team"] == "a")
        #expect(look.data?["accessor"] == .string(auth.accessor))
        let byAccessor = try await t.call(.update, "auth/token/lookup-accessor", ["accessor": .string(auth.accessor)])
        #expect(byAccessor.data?["id"] == "")
        let renewed = try await t.call(.update, "auth/token/renew", ["token": .string(auth.clientToken), "increment": "2h"])
        #expect(renewed.auth?.leaseDuration == 7200)
        try await t.call(.update, "auth/token/revoke", ["token": .string(auth.clientToken)])
        await #expect(throws: CofferError.denied()) { try await t.call(.read, "auth/token/lookup-self", token: auth.clientToken) }
    }

    static let creator = #"path "auth/token/create*" { capabilities = ["update"] }"#

    @Test func revokingParentRevokesChildrenButNotOrphans() async throws {
        let t = try await TestCore.make()
        try await t.call(.update, "sys/policies/acl/creator", ["policy": .string(Self.creator)])
        let parent = try await t.createToken(policies: ["creator"])
        let child = try await t.createToken(policies: ["creator"], as: parent)
        let grandchild = try await t.createToken(policies: ["default"], as: child)
        let orphan = try await t.call(.update, "auth/token/create-orphan", ["policies": ["default"]], token: parent).auth!.clientToken
        try await t.call(.update, "auth/token/revoke", ["token": .string(parent)])
        for gone in [parent, child, grandchild] {
            await #expect(throws: CofferError.denied()) { try await t.call(.read, "auth/token/lookup-self", token: gone) }
        }
        let o = try await t.call(.read, "auth/token/lookup-self", token: orphan)
        #expect(o.data?["orphan"] == true)
    }

    @Test func revokeOrphanKeepsChildren() async throws {
        let t = try await TestCore.make()
        try await t.call(.update, "sys/policies/acl/creator", ["policy": .string(Self.creator)])
        let parent = try await t.createToken(policies: ["creator"])
        let child = try await t.createToken(policies: ["default"], as: parent)
        try await t.call(.update, "auth/token/revoke-orphan", ["token": .string(parent)])
        let c = try await t.call(.read, "auth/token/lookup-self", token: child)
        #expect(c.data?["orphan"] == true)
    }

    @Test func childPoliciesMustBeSubset() async throws {
        let t = try await TestCore.make()
        try await t.call(.update, "sys/policies/acl/a", ["policy": #"path "auth/token/create" { capabilities = ["update"] }"#])
        let parent = try await t.createToken(policies: ["a"])
        await #expect(throws: CofferError.self) { try await t.createToken(policies: ["b"], as: parent) }
        let ok = try await t.createToken(policies: ["a"], as: parent)
        #expect(ok.hasPrefix("hvs."))
    }

    @Test func numUsesIsEnforced() async throws {
        let t = try await TestCore.make()
        let tok = try await t.createToken(policies: ["default"], extra: ["num_uses": 2])
        try await t.call(.read, "auth/token/lookup-self", token: tok)
        try await t.call(.read, "auth/token/lookup-self", token: tok)
        await #expect(throws: CofferError.denied()) { try await t.call(.read, "auth/token/lookup-self", token: tok) }
    }

    @Test func expiredTokenStopsWorking() async throws {
        let time = ManualClock()
        let t = try await TestCore.make(clock: time.clock)
        let tok = try await t.createToken(policies: ["default"], extra: ["ttl": 1])
        try await t.call(.read, "auth/token/lookup-self", token: tok)
        time.advance(by: 0.5)
        try await t.call(.read, "auth/token/lookup-self", token: tok)
        time.advance(by: 1.5)
        await #expect(throws: CofferError.denied()) { try await t.call(.read, "auth/token/lookup-self", token: tok) }
    }

    @Test func explicitMaxTTLCapsRenewal() async throws {
        let t = try await TestCore.make()
        let tok = try await t.createToken(policies: ["default"], extra: ["ttl": "1h", "explicit_max_ttl": "90m"])
        let r = try await t.call(.update, "auth/token/renew-self", ["increment": "10h"], token: tok)
        let d = try #require(r.auth?.leaseDuration)
        #expect(d <= 5400 && d > 5300)
    }

    @Test func rolesConstrainPolicies() async throws {
        let t = try await TestCore.make()
        try await t.call(.update, "auth/token/roles/ci", ["allowed_policies": ["ci"], "orphan": true])
        let role = try await t.call(.read, "auth/token/roles/ci")
        #expect(role.data?["allowed_policies"] == ["ci"])
        let r = try await t.call(.update, "auth/token/create/ci", [:])
        #expect(r.auth?.policies == ["ci", "default"])
        #expect(r.auth?.orphan == true)
        await #expect(throws: CofferError.self) { try await t.call(.update, "auth/token/create/ci", ["policies": ["admin"]]) }
        let list = try await t.call(.list, "auth/token/roles")
        #expect(list.data?["keys"] == ["ci"])
        try await t.call(.delete, "auth/token/roles/ci")
        await #expect(throws: CofferError(.notFound, "")) { try await t.call(.read, "auth/token/roles/ci") }
    }

    @Test func tokenIdsAreNotStored() async throws {
        let physical = MemoryStorage()
        let core = Core(physical: physical, storageType: "inmem", catalog: EngineCatalog(), configuration: CoreConfiguration(), logger: .init(label: "t"))
        let (_, root) = try await core.bootstrapDev(rootTokenID: nil)
        var found = false
        for key in try await allKeys(physical, "") {
            let v = try await physical.get(key) ?? []
            if key.contains(root) || String(decoding: v, as: UTF8.self).contains(root) { found = true }
        }
        #expect(!found)
    }

    func allKeys(_ s: any Storage, _ prefix: String) async throws -> [String] {
        var out: [String] = []
        for k in try await s.list(prefix: prefix) {
            if k.hasSuffix("/") { out += try await allKeys(s, prefix + k) } else { out.append(prefix + k) }
        }
        return out
    }
}

/// The hand-written stored form of a token is the one `Codable` writes: data written either
/// way reads either way (tokens stored before the change stay valid).
@Suite struct TokenEntryStoredFormTests {
    @Test func handWrittenFormMatchesCodable() throws {
        var e = TokenEntry(
            idHash: "h", accessor: "a", parentHash: "p", policies: ["default", "x"], meta: ["k": "v"], displayName: "token-x",
            numUses: 3, creationTime: 1_700_000_000, creationTTL: 60, expireTime: 1_700_000_060, explicitMaxTTL: 120, period: 0,
            renewable: true, orphan: false, path: "auth/token/create", role: "", type: "service", entityID: "", namespacePath: "t/",
            lastRenewalTime: 0)
        for variant in 0..<2 {
            if variant == 1 {
                e.parentNamespace = "root/"
                e.revoking = true
                e.boundCIDRs = ["10.0.0.0/8"]
                e.maxTTL = 900
            }
            let viaCodable = try JSONValue.parse(Array(StoredJSON.encoder.encode(e)))
            #expect(viaCodable == e.storedJSON)
            let back = try TokenEntry(storedJSON: viaCodable)
            #expect(back.storedJSON == e.storedJSON)
            let decoded = try StoredJSON.decoder.decode(TokenEntry.self, from: Data(e.storedJSON.serialized()))
            #expect(decoded.storedJSON == e.storedJSON)
        }
    }
}
