import CofferSDK
import Testing
import TenantCore

@Suite struct PolicyMatchingTests {
    static let policy = try! Policy.parse(name: "p", text: """
        path "secret/data/*" { capabilities = ["read", "list"] }
        path "secret/data/team/*" { capabilities = ["create", "update", "read"] }
        path "secret/data/team/locked" { capabilities = ["deny"] }
        path "secret/data/exact" { capabilities = ["update"] }
        path "secret/+/users/+/profile" { capabilities = ["patch"] }
        path "secret/metadata/+/deep*" { capabilities = ["delete"] }
        path "sys/rotate" { capabilities = ["update", "sudo"] }
        path "kv/restricted" {
            capabilities = ["create", "update"]
            allowed_parameters = { "color" = ["red", "blue"] "size" = [] }
            denied_parameters = { "secret" = [] }
            required_parameters = ["color"]
        }
        """)

    static let cases: [(String, LogicalOperation, Bool)] = [
        ("secret/data/anything", .read, true),
        ("secret/data/anything", .update, false),
        ("secret/data/team/a", .create, true),
        ("secret/data/team/a", .read, true),
        ("secret/data/team/a", .delete, false),
        ("secret/data/team/locked", .read, false),
        ("secret/data/exact", .update, true),
        ("secret/data/exact", .read, false),  // exact match wins over the glob
        ("secret/data/exactly", .read, true),
        ("secret/kv/users/bob/profile", .patch, true),
        ("secret/kv/users/bob/profile", .read, false),
        ("secret/kv/users/bob/extra/profile", .patch, false),
        ("secret/metadata/x/deeper", .delete, true),
        ("secret/metadata/x/y/deeper", .delete, false),
        ("secret/other", .read, false),
        ("sys/rotate", .update, true),
        ("", .read, false),
    ]

    @Test(arguments: cases)
    func matrix(path: String, op: LogicalOperation, allowed: Bool) {
        let acl = ACL(policies: [Self.policy])
        let ok = (try? acl.authorize(op, path: path, data: [:], needsSudo: false)) != nil
        #expect(ok == allowed, "\(op) \(path)")
    }

    @Test func sudoNeedsSudo() {
        let acl = ACL(policies: [Self.policy])
        #expect((try? acl.authorize(.update, path: "sys/rotate", data: [:], needsSudo: true)) != nil)
        #expect((try? acl.authorize(.read, path: "secret/data/x", data: [:], needsSudo: true)) == nil)
    }

    @Test(arguments: [
        (["color": JSONValue.string("red")], true),
        (["color": "red", "size": "xl"], true),
        (["color": "green"], false),
        (["size": "xl"], false),  // required color missing
        (["color": "red", "secret": "x"], false),  // denied parameter
        (["color": "red", "other": "x"], false),  // not in allowed list
    ] as [([String: JSONValue], Bool)])
    func parameters(data: [String: JSONValue], allowed: Bool) {
        let acl = ACL(policies: [Self.policy])
        let ok = (try? acl.authorize(.create, path: "kv/restricted", data: data, needsSudo: false)) != nil
        #expect(ok == allowed)
    }

    @Test func mergedPoliciesUnionAndDenyWins() throws {
        let a = try Policy.parse(name: "a", text: #"path "x/*" { capabilities = ["read"] }"#)
        let b = try Policy.parse(name: "b", text: #"path "x/*" { capabilities = ["update"] }"#)
        let c = try Policy.parse(name: "c", text: #"path "x/*" { capabilities = ["deny"] }"#)
        #expect(ACL(policies: [a, b]).capabilities("x/1") == [.read, .update])
        #expect(ACL(policies: [a, b, c]).capabilities("x/1") == .deny)
    }

    @Test func priorityRules() throws {
        let p = try Policy.parse(name: "p", text: """
            path "a/*" { capabilities = ["read"] }
            path "a/b/*" { capabilities = ["list"] }
            path "a/+/c" { capabilities = ["delete"] }
            """)
        let acl = ACL(policies: [p])
        #expect(acl.capabilities("a/b/c") == [.list])  // later first wildcard wins
        #expect(acl.capabilities("a/x/c") == [.delete])
        #expect(acl.capabilities("a/x/d") == [.read])
    }

    @Test func jsonPolicy() throws {
        let p = try Policy.parse(name: "j", text: #"{"path": {"secret/*": {"capabilities": ["read"]}}}"#)
        #expect(ACL(policies: [p]).capabilities("secret/x") == [.read])
    }

    @Test(arguments: [
        #"path "x" { capabilities = ["fly"] }"#,
        #"path "x" { capabilities = "read" }"#,
        #"path "x" { unknown = 1 }"#,
        #"nonsense = true"#,
        #"path "x" { capabilities = ["read"]"#,
        "path {{{",
    ])
    func badPolicies(text: String) {
        #expect(throws: CofferError.self) { try Policy.parse(name: "bad", text: text) }
    }

    @Test func rootACL() {
        let acl = ACL(policies: [Policy(name: "root", text: "", rules: [])])
        #expect(acl.isRoot)
        #expect((try? acl.authorize(.delete, path: "anything/at/all", data: [:], needsSudo: true)) != nil)
    }
}

@Suite struct PolicyEndToEndTests {
    @Test func policyTokenAllowsAndDenies() async throws {
        let t = try await TestCore.make()
        try await t.call(.update, "sys/policies/acl/reader", ["policy": #"path "secret/data/app/*" { capabilities = ["read"] }"#])
        try await t.call(.update, "secret/data/app/one", ["data": ["k": "v"]])
        let token = try await t.createToken(policies: ["reader"])
        let r = try await t.call(.read, "secret/data/app/one", token: token)
        #expect(r.data?["data"]?["k"] == "v")
        await #expect(throws: CofferError.denied()) { try await t.call(.update, "secret/data/app/one", ["data": ["k": "w"]], token: token) }
        await #expect(throws: CofferError.denied()) { try await t.call(.read, "secret/data/other", token: token) }
        await #expect(throws: CofferError.denied()) { try await t.call(.read, "sys/mounts", token: token) }
        // The default policy lets it look itself up.
        let me = try await t.call(.read, "auth/token/lookup-self", token: token)
        #expect(me.data?["policies"] == ["default", "reader"])
        // Capabilities reflect the policy.
        let caps = try await t.call(.update, "sys/capabilities-self", ["paths": ["secret/data/app/x"]], token: token)
        #expect(caps.data?["capabilities"] == ["read"])
    }

    @Test func badPolicyChangesNothing() async throws {
        let t = try await TestCore.make()
        await #expect(throws: CofferError.self) { try await t.call(.update, "sys/policies/acl/broken", ["policy": "path {"]) }
        await #expect(throws: CofferError(.notFound, "")) { try await t.call(.read, "sys/policies/acl/broken") }
    }
}
