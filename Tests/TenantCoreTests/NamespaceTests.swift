import CofferSDK
import Crypto
import Engines
import Foundation
import Logging
import Testing
import TenantCore

/// Namespaces: isolation between tenants, parent-grants-child, crypto-shred on delete.
@Suite struct NamespaceTests {
    /// root, acme/, acme/team/, beta/ — each with KV v2 at secret/ holding "who" = its path,
    /// a reader policy and a token; plus a root-namespace token whose policy grants acme/ only.
    struct World {
        let core: Core
        let physical: MemoryStorage
        let root: String
        var tokens: [String: String] = [:]
    }

    static func world() async throws -> World {
        let physical = MemoryStorage()
        let core = Core(physical: physical, storageType: "inmem", catalog: EngineCatalog(secrets: ["kv": KVEngine.factory]), configuration: CoreConfiguration(), logger: Logger(label: "t"))
        let (_, root) = try await core.bootstrapDev(rootTokenID: nil)
        var w = World(core: core, physical: physical, root: root)
        for ns in ["acme/", "acme/team/", "beta/"] {
            let parent = ns == "acme/team/" ? "acme/" : ""
            let name = String(ns.dropFirst(parent.count).dropLast())
            _ = try await core.handle(CoreRequest(operation: .update, path: "sys/namespaces/\(name)", clientToken: root), namespace: parent)
        }
        for ns in ["", "acme/", "acme/team/", "beta/"] {
            func call(_ op: LogicalOperation, _ path: String, _ data: [String: JSONValue]) async throws -> LogicalResponse {
                try await core.handle(CoreRequest(operation: op, path: path, data: data, clientToken: root), namespace: ns)
            }
            _ = try await call(.update, "sys/mounts/secret", ["type": "kv", "options": ["version": "2"]])
            _ = try await call(.update, "secret/data/who", ["data": ["is": .string(ns)]])
            _ = try await call(.update, "sys/policies/acl/reader", ["policy": #"path "secret/data/*" { capabilities = ["read"] }"#])
            w.tokens[ns] = try await call(.update, "auth/token/create", ["policies": ["reader"]]).auth!.clientToken
        }
        _ = try await core.handle(CoreRequest(operation: .update, path: "sys/policies/acl/acme-ops", data: ["policy": #"path "acme/secret/data/*" { capabilities = ["read"] }"#], clientToken: root), namespace: "")
        w.tokens["root:acme-ops"] = try await core.handle(CoreRequest(operation: .update, path: "auth/token/create", data: ["policies": ["acme-ops"]], clientToken: root), namespace: "").auth!.clientToken
        return w
    }

    /// (token owner, header, path, expected namespace read or nil for denied)
    static let matrix: [(String, String, String, String?)] = [
        ("", "", "secret/data/who", ""),
        ("acme/", "acme/", "secret/data/who", "acme/"),
        ("acme/", "", "acme/secret/data/who", "acme/"),
        ("acme/", "acme", "team/secret/data/who", nil),  // a parent's reader policy doesn't reach the child
        ("acme/team/", "acme/", "team/secret/data/who", "acme/team/"),
        ("acme/team/", "acme/team", "secret/data/who", "acme/team/"),
        ("acme/team/", "acme/", "secret/data/who", nil),  // never upwards
        ("acme/", "", "secret/data/who", nil),
        ("acme/", "beta/", "secret/data/who", nil),  // never across siblings
        ("beta/", "", "acme/secret/data/who", nil),
        ("beta/", "beta/", "secret/data/who", "beta/"),
        ("root:acme-ops", "", "acme/secret/data/who", "acme/"),  // a root policy granting acme/
        ("root:acme-ops", "acme/", "secret/data/who", "acme/"),
        ("root:acme-ops", "beta/", "secret/data/who", nil),
        ("root:acme-ops", "", "secret/data/who", nil),
    ]

    @Test(arguments: matrix)
    func isolation(owner: String, header: String, path: String, expected: String?) async throws {
        let w = try await Self.world()
        let token = try #require(w.tokens[owner])
        do {
            let r = try await w.core.handle(CoreRequest(operation: .read, path: path, clientToken: token), namespace: header)
            #expect(r.data?["data"]?["is"] == expected.map { .string($0) }, "\(owner) \(header) \(path)")
        } catch let e as CofferError {
            #expect(expected == nil, "\(owner) \(header) \(path): \(e)")
            #expect(e.code == .permissionDenied || e.code == .notFound)
        }
    }

    @Test func listingNeverShowsSiblingsOrParents() async throws {
        let w = try await Self.world()
        let r = try await w.core.handle(CoreRequest(operation: .read, path: "sys/mounts", clientToken: w.root), namespace: "beta/")
        let mounts = try #require(r.data)
        #expect(mounts.keys.sorted() == ["cubbyhole/", "identity/", "secret/", "sys/"])
        let kids = try await w.core.handle(CoreRequest(operation: .list, path: "sys/namespaces/", clientToken: w.root), namespace: "acme/")
        #expect(kids.data?["keys"] == ["team/"])
    }

    @Test(arguments: ["acme/..", "../acme", "acme//team", "acme/%2e%2e", "ａcme", "acme/\u{0}"])
    func hostileHeadersAreRefused(header: String) async throws {
        let w = try await Self.world()
        await #expect(throws: CofferError.self) {
            try await w.core.handle(CoreRequest(operation: .read, path: "secret/data/who", clientToken: w.root), namespace: header)
        }
    }

    @Test func deleteShredsAndRecreateIsEmpty() async throws {
        let w = try await Self.world()
        let nsID = try #require(try await w.core.namespace(path: "beta/")?.id)
        let rowsBefore = try await allKeys(w.physical, "ns/\(nsID)/")
        #expect(!rowsBefore.isEmpty)
        var saved: [String: [UInt8]] = [:]
        for k in rowsBefore { saved[k] = try await w.physical.get(k) }
        _ = try await w.core.handle(CoreRequest(operation: .delete, path: "sys/namespaces/beta", clientToken: w.root), namespace: "")
        #expect(try await allKeys(w.physical, "ns/\(nsID)/").isEmpty)
        // Rows that outlived the delete (put back here, as if a backup had kept them) cannot be
        // opened with any key the server still holds.
        let leftovers = Barrier(physical: PrefixedStorage(w.physical, prefix: "ns/\(nsID)/"))
        leftovers.install(try #require(w.core.barrier.keyring))
        for (k, v) in saved { try await w.physical.put(k, v) }
        for k in rowsBefore {
            await #expect(throws: CofferError.self) { try await leftovers.get(String(k.dropFirst("ns/\(nsID)/".count))) }
        }
        // Tokens of the deleted namespace are dead.
        await #expect(throws: CofferError.self) {
            try await w.core.handle(CoreRequest(operation: .read, path: "secret/data/who", clientToken: w.tokens["beta/"]), namespace: "beta/")
        }
        // The same path again is a new, empty namespace.
        _ = try await w.core.handle(CoreRequest(operation: .update, path: "sys/namespaces/beta", clientToken: w.root), namespace: "")
        let mounts = try await w.core.handle(CoreRequest(operation: .read, path: "sys/mounts", clientToken: w.root), namespace: "beta/")
        #expect(mounts.data?.keys.sorted() == ["cubbyhole/", "identity/", "sys/"])
    }

    @Test func deleteWithChildrenIsRefused() async throws {
        let w = try await Self.world()
        await #expect(throws: CofferError.self) {
            try await w.core.handle(CoreRequest(operation: .delete, path: "sys/namespaces/acme", clientToken: w.root), namespace: "")
        }
        let still = try await w.core.handle(CoreRequest(operation: .read, path: "secret/data/who", clientToken: w.root), namespace: "acme/")
        #expect(still.data?["data"]?["is"] == "acme/")
    }

    @Test func namespaceKeyringsAreSeparate() async throws {
        let w = try await Self.world()
        let acme = try #require(try await w.core.namespace(path: "acme/"))
        let beta = try #require(try await w.core.namespace(path: "beta/"))
        // Same logical row in both: ciphertexts differ and neither opens with the other's keys.
        let a = try #require(try await w.physical.get("ns/\(acme.id)/core/token-salt"))
        let b = try #require(try await w.physical.get("ns/\(beta.id)/core/token-salt"))
        #expect(a != b)
        _ = try await w.core.handle(CoreRequest(operation: .update, path: "sys/rotate", clientToken: w.root), namespace: "acme/")
        let status = try await w.core.handle(CoreRequest(operation: .read, path: "sys/key-status", clientToken: w.root), namespace: "acme/")
        #expect(status.data?["term"] == 2)
        let rootStatus = try await w.core.handle(CoreRequest(operation: .read, path: "sys/key-status", clientToken: w.root), namespace: "")
        #expect(rootStatus.data?["term"] == 1)
        let r = try await w.core.handle(CoreRequest(operation: .read, path: "secret/data/who", clientToken: w.root), namespace: "acme/")
        #expect(r.data?["data"]?["is"] == "acme/")
    }

    @Test func mountsAndNamespacesCannotShadowEachOther() async throws {
        let w = try await Self.world()
        await #expect(throws: CofferError.self) {
            try await w.core.handle(CoreRequest(operation: .update, path: "sys/mounts/acme", data: ["type": "kv"], clientToken: w.root), namespace: "")
        }
        await #expect(throws: CofferError.self) {
            try await w.core.handle(CoreRequest(operation: .update, path: "sys/namespaces/secret", clientToken: w.root), namespace: "")
        }
        await #expect(throws: CofferError.self) {
            try await w.core.handle(CoreRequest(operation: .update, path: "sys/namespaces/sys", clientToken: w.root), namespace: "")
        }
    }

    @Test func idleNamespacesAreEvictedAndReloadOnUse() async throws {
        let w = try await Self.world()
        #expect(w.core.loadedNamespaceCount == 3)
        // Recently used namespaces stay.
        #expect(await w.core.evictIdle(olderThan: .seconds(3600)) == 0)
        // Idle ones go, deepest first (acme/team/ before acme/).
        #expect(await w.core.evictIdle(olderThan: .zero) == 3)
        #expect(w.core.loadedNamespaceCount == 0)
        // The next request loads them again, with their data, mounts and tokens intact.
        let r = try await w.core.handle(CoreRequest(operation: .read, path: "secret/data/who", clientToken: w.tokens["acme/team/"]), namespace: "acme/team/")
        #expect(r.data?["data"]?["is"] == "acme/team/")
        #expect(w.core.loadedNamespaceCount == 2)
        // An idle parent stays while a child is in use; then both go.
        try await Task.sleep(for: .milliseconds(300))
        _ = try await w.core.handle(CoreRequest(operation: .read, path: "secret/data/who", clientToken: w.tokens["acme/team/"]), namespace: "acme/team/")
        #expect(await w.core.evictIdle(olderThan: .milliseconds(200)) == 0)
        #expect(w.core.loadedNamespaceCount == 2)
        #expect(await w.core.evictIdle(olderThan: .zero) == 2)
    }

    /// Creations and first loads run concurrently (no global lock): every creation lands
    /// once, a name raced by many creators is created exactly once, and concurrent first
    /// requests to one evicted namespace share a load.
    @Test func concurrentCreationsAndLoads() async throws {
        let w = try await Self.world()
        let root = w.root
        let core = w.core
        let created = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<60 {
                group.addTask {
                    _ = try await core.handle(CoreRequest(operation: .update, path: "sys/namespaces/t\(i)", clientToken: root), namespace: "")
                    _ = try await core.handle(CoreRequest(operation: .update, path: "sys/mounts/secret", data: ["type": "kv", "options": ["version": "2"]], clientToken: root), namespace: "t\(i)/")
                    _ = try await core.handle(CoreRequest(operation: .update, path: "secret/data/x", data: ["data": ["n": .int(Int64(i))]], clientToken: root), namespace: "t\(i)/")
                    return true
                }
            }
            // One name, many creators: exactly one wins.
            for _ in 0..<10 {
                group.addTask {
                    do {
                        _ = try await core.handle(CoreRequest(operation: .update, path: "sys/namespaces/contested", clientToken: root), namespace: "")
                        return true
                    } catch let e as CofferError {
                        #expect(e.message.contains("already exists"))
                        return false
                    }
                }
            }
            var wins = 0
            for try await ok in group where ok { wins += 1 }
            return wins
        }
        #expect(created == 61)
        let listed = try await core.handle(CoreRequest(operation: .list, path: "sys/namespaces", clientToken: root), namespace: "")
        #expect(listed.data?["keys"]?.arrayValue?.count == 2 + 60 + 1)  // acme/, beta/, t0..t59, contested
        #expect(await core.evictIdle(olderThan: .zero) > 60)
        let reads = try await withThrowingTaskGroup(of: Int64?.self) { group in
            for i in 0..<60 { for _ in 0..<3 {
                group.addTask {
                    try await core.handle(CoreRequest(operation: .read, path: "t\(i)/secret/data/x", clientToken: root), namespace: "").data?["data"]?["n"]?.intValue
                }
            } }
            var sum: Int64 = 0
            for try await n in group { sum += n ?? -1_000_000 }
            return sum
        }
        #expect(reads == 3 * (0..<60).reduce(0, +))
        #expect(core.loadedNamespaceCount == 60)
    }

    func allKeys(_ s: any Storage, _ prefix: String) async throws -> [String] {
        var out: [String] = []
        for k in try await s.list(prefix: prefix) {
            if k.hasSuffix("/") { out += try await allKeys(s, prefix + k) } else { out.append(prefix + k) }
        }
        return out
    }

    /// Issue #21 item 8: a sealable namespace's keyring is sealed under the tenant's shares;
    /// nothing the operator's keys open (the parent's storage, the record in it) opens it.
    @Test func sealableNamespaceIsOpaqueToTheOperatorsKeys() async throws {
        let physical = MemoryStorage()
        let core = Core(physical: physical, storageType: "inmem", catalog: EngineCatalog(secrets: ["kv": KVEngine.factory]), configuration: CoreConfiguration(), logger: Logger(label: "t"))
        let (_, root) = try await core.bootstrapDev(rootTokenID: nil)
        func call(_ op: LogicalOperation, _ path: String, _ data: [String: JSONValue] = [:], ns: String = "") async throws -> LogicalResponse {
            try await core.handle(CoreRequest(operation: op, path: path, data: data, clientToken: root), namespace: ns)
        }
        let created = try await call(.update, "sys/namespaces/vault", ["seal": "seal \"shamir\" {\n shares = 3\n threshold = 2\n}"])
        let shares = created.data?["key_shares"]?.arrayValue?.compactMap(\.stringValue) ?? []
        #expect(shares.count == 3)
        // Sealed from the start: its requests fail with the sealed error.
        await #expect { try await call(.read, "sys/mounts", ns: "vault/") } throws: { ($0 as? CofferError)?.code == .sealed }
        for s in shares.prefix(2) { _ = try await call(.update, "sys/namespaces/vault/unseal", ["key": .string(s)]) }
        _ = try await call(.update, "sys/mounts/secret", ["type": "kv", "options": ["version": "2"]], ns: "vault/")
        _ = try await call(.update, "secret/data/db", ["data": ["password": "tenant-secret-value"]], ns: "vault/")
        // Rotation keeps the keyring sealed under the namespace's own root key.
        _ = try await call(.update, "sys/rotate", ns: "vault/")
        _ = try await call(.update, "secret/data/db2", ["data": ["password": "tenant-secret-value-2"]], ns: "vault/")
        let record = try #require(try await core.root().child("vault"))
        #expect(record.keyring == nil)
        let seal = try #require(record.seal)
        #expect(seal.shares == 3 && seal.threshold == 2)
        // Neither sealed blob opens with any key of the operator's (root) keyring.
        let rootRing = try #require(core.barrier.keyring)
        for term in rootRing.terms {
            #expect(throws: (any Error).self) { try Sealer.open(seal.wrappedRootKey, key: SymmetricKey(data: term.key), aad: NamespaceSeal.rootKeyAAD(record.id)) }
            #expect(throws: (any Error).self) { try Sealer.open(seal.sealedKeyring, key: SymmetricKey(data: term.key), aad: NamespaceSeal.keyringAAD(record.id)) }
        }
        // Raw storage holds no plaintext of the tenant's secrets.
        for key in try await physical.list(prefix: "ns/\(record.id)/") where !key.hasSuffix("/") {
            let value = try #require(try await physical.get("ns/\(record.id)/" + key))
            #expect(!String(decoding: value, as: UTF8.self).contains("tenant-secret-value"))
        }
        // Sealed again: reads fail; shares of another namespace's seal do not open it.
        _ = try await call(.update, "sys/namespaces/vault/seal")
        await #expect { try await call(.read, "secret/data/db", ns: "vault/") } throws: { ($0 as? CofferError)?.code == .sealed }
        let other = try await call(.update, "sys/namespaces/other", ["seal": "seal \"shamir\" {\n shares = 3\n threshold = 2\n}"])
        let otherShares = other.data?["key_shares"]?.arrayValue?.compactMap(\.stringValue) ?? []
        _ = try await call(.update, "sys/namespaces/vault/unseal", ["key": .string(otherShares[0])])
        await #expect { try await call(.update, "sys/namespaces/vault/unseal", ["key": .string(otherShares[1])]) } throws: { ($0 as? CofferError)?.code == .invalidRequest }
        for s in shares.suffix(2) { _ = try await call(.update, "sys/namespaces/vault/unseal", ["key": .string(s)]) }
        let r = try await call(.read, "secret/data/db2", ns: "vault/")
        #expect(r.data?["data"]?["password"] == "tenant-secret-value-2")
    }
}
