import CofferSDK
@testable import Engines
import Foundation
import Synchronization
import Testing
import TenantCore

/// userpass and AppRole through their own dispatchers on in-memory storage: what a login
/// answers, and what storage holds (never a password or a secret id in clear).
@Suite struct AuthMethodTests {
    /// The logical (decrypted) storage the engines write to.
    let memory: Barrier
    let view: StorageView

    init() {
        memory = Barrier(physical: MemoryStorage())
        memory.install(Keyring.generate())
        view = StorageView(memory, prefix: "auth/")
    }

    func backend(_ factory: BackendFactory) async throws -> any LogicalBackend {
        let b = try await factory(BackendConfiguration(storage: view, mountPath: "m/", mountType: "x"))
        try await b.setup()
        return b
    }

    /// Every stored record in clear (above the barrier), as text.
    func dump(_ prefix: String = "") async throws -> String {
        var out = ""
        for name in try await memory.list(prefix: prefix) {
            if name.hasSuffix("/") {
                out += try await dump(prefix + name)
            } else {
                out += prefix + name + "=" + String(decoding: try await memory.get(prefix + name) ?? [], as: UTF8.self) + "\n"
            }
        }
        return out
    }

    @Test func passwordHashes() async throws {
        let h = try await PasswordHash.make("correct horse")
        #expect(h.hasPrefix("scrypt$14$8$1$"))
        #expect(await PasswordHash.verify("correct horse", against: h))
        #expect(await !PasswordHash.verify("correct horsf", against: h))
        #expect(await !PasswordHash.verify("correct horse", against: nil))
        #expect(await !PasswordHash.verify("x", against: "scrypt$99$8$1$AAAA$AAAA"))
        #expect(await !PasswordHash.verify("x", against: "garbage"))
        #expect(try await PasswordHash.make("correct horse") != h)  // salted
    }

    @Test func tokenParameters() throws {
        var p = TokenParameters()
        try p.parse(try FieldValues.validate(TokenParameters.fields, data: ["token_ttl": "1m", "token_policies": "B, a,a", "token_bound_cidrs": "10.0.0.1/32,10.0.0.0/8"], captures: [:]))
        #expect(p.ttl == 60 && p.policies == ["a", "b"] && p.boundCIDRs == ["10.0.0.1", "10.0.0.0/8"])
        #expect(TokenParameters.allows(p.boundCIDRs, address: "10.9.9.9") && !TokenParameters.allows(p.boundCIDRs, address: "11.0.0.1"))
        #expect(!TokenParameters.allows(p.boundCIDRs, address: nil) && TokenParameters.allows([], address: nil))
        var bad = p
        #expect(throws: CofferError.self) { try bad.parse(try FieldValues.validate(TokenParameters.fields, data: ["token_max_ttl": "30s"], captures: [:])) }
        #expect(throws: CofferError.self) { try bad.parse(try FieldValues.validate(TokenParameters.fields, data: ["token_type": "batch", "token_period": "1h"], captures: [:])) }
        #expect(throws: CofferError.self) { try bad.parse(try FieldValues.validate(TokenParameters.fields, data: ["token_num_uses": -1], captures: [:])) }
    }

    @Test func userpassLoginAndStorage() async throws {
        let up = try await backend(UserpassBackend.factory)
        _ = try await up.handle(LogicalRequest(operation: .create, path: "users/Dana", data: ["password": "pw-secret-1", "token_policies": "p"]))
        let ok = try await up.handle(LogicalRequest(operation: .update, path: "login/dana", data: ["password": "pw-secret-1"]))
        #expect(ok?.auth?.policies == ["p"] && ok?.auth?.metadata == ["username": "dana"] && ok?.auth?.clientToken == "")
        #expect(ok?.auth?.displayName == "dana" && ok?.auth?.renewable == true)
        await #expect(throws: CofferError.self) { try await up.handle(LogicalRequest(operation: .update, path: "login/dana", data: ["password": "nope"])) }
        await #expect(throws: CofferError.self) { try await up.handle(LogicalRequest(operation: .update, path: "login/bad..name!", data: ["password": "x"])) }
        let stored = try await dump()
        #expect(!stored.contains("pw-secret-1") && stored.contains("scrypt$"))
    }

    @Test func approleSecretIDsAreStoredAsHMACs() async throws {
        let ar = try await backend(AppRoleBackend.factory)
        _ = try await ar.handle(LogicalRequest(operation: .create, path: "role/r1", data: ["token_policies": "p", "secret_id_num_uses": 2]))
        let roleID = try #require(try await ar.handle(LogicalRequest(operation: .read, path: "role/r1/role-id"))?.data?["role_id"]?.stringValue)
        let gen = try await ar.handle(LogicalRequest(operation: .update, path: "role/r1/secret-id", data: ["metadata": #"{"k":"v"}"#]))
        let secretID = try #require(gen?.data?["secret_id"]?.stringValue)
        let stored = try await dump()
        #expect(!stored.contains(secretID) && stored.contains("secret-id/") && stored.contains("role-id/"))
        let login = { try await ar.handle(LogicalRequest(operation: .update, path: "login", data: ["role_id": .string(roleID), "secret_id": .string(secretID)])) }
        let first = try await login()
        #expect(first?.auth?.metadata == ["k": "v", "role_name": "r1"] && first?.auth?.aliasName == roleID)
        _ = try await login()
        await #expect(throws: CofferError.self) { try await login() }  // two uses, both spent
        let left = try await ar.handle(LogicalRequest(operation: .list, path: "role/r1/secret-id/"))
        #expect(left?.data?["keys"] == .array([]))
        // Bad metadata and secret-id requests for a missing role change nothing.
        await #expect(throws: CofferError.self) { try await ar.handle(LogicalRequest(operation: .update, path: "role/r1/secret-id", data: ["metadata": "[1]"])) }
        await #expect(throws: CofferError.self) { try await ar.handle(LogicalRequest(operation: .update, path: "role/none/secret-id")) }
    }

    @Test func approleTidyRemovesExpiredSecretIDs() async throws {
        let time = ManualClock()
        let ar = AppRoleBackend(storage: view, clock: time.clock)
        try await ar.setup()
        _ = try await ar.handle(LogicalRequest(operation: .create, path: "role/t", data: ["token_policies": "p"]))
        _ = try await ar.handle(LogicalRequest(operation: .update, path: "role/t/secret-id", data: ["ttl": 1]))
        _ = try await ar.handle(LogicalRequest(operation: .update, path: "role/t/secret-id"))
        #expect(try await ar.tidy() == 0)
        time.advance(by: 1.5)
        #expect(try await ar.tidy() == 1)
        let left = try await ar.handle(LogicalRequest(operation: .list, path: "role/t/secret-id/"))
        #expect(left?.data?["keys"]?.arrayValue?.count == 1)
    }
}
