import CofferSDK
import Engines
import Foundation
import Logging
import Synchronization
import Testing
@testable import TenantCore

/// A leasing engine for the lease manager's own logic: `issue` answers a leased secret;
/// revocations are recorded and fail while `failures` is positive. (The real engines are
/// tested end to end against real databases in Tests/Acceptance/test_database.py.)
final class LedgerBackend: LeasingBackend {
    let revoked = Mutex<[String]>([])
    let failures = Mutex(0)

    static let routes: [Route<LedgerBackend>] = [
        Route("issue/:name", fields: [Field("name", .string), Field("ttl", .int, default: 60)], operations: [
            .read: { _, req in
                LogicalResponse(data: ["name": .string(req.fields.string("name"))],
                                secret: SecretLease(ttl: req.fields.int("ttl"), maxTTL: 120, renewable: true, internalData: ["name": .string(req.fields.string("name"))]))
            },
        ]),
    ]

    func revokeLease(_ lease: LeaseInfo) async throws {
        let fail = failures.withLock { f in
            defer { f = max(0, f - 1) }
            return f > 0
        }
        if fail { throw CofferError(.unavailable, "database down") }
        revoked.withLock { $0.append(lease.internalData["name"]?.stringValue ?? "") }
    }

    func renewLease(_ lease: LeaseInfo, increment: Int) async throws -> SecretLease {
        SecretLease(ttl: increment > 0 ? increment : 60, maxTTL: 120, renewable: true, internalData: lease.internalData)
    }
}

struct LeaseTests {
    static func make(_ ledger: LedgerBackend, attempts: Int = 3, clock: WallClock = .system) async throws -> TestCore {
        let catalog = EngineCatalog(secrets: ["kv": KVEngine.factory, "ledger": { _ in ledger }])
        var config = CoreConfiguration()
        config.clock = clock
        config.leases = LeaseManager.Configuration(maxRevokeAttempts: attempts, maxBackoff: 0.2, concurrency: 4)
        let core = Core(physical: MemoryStorage(), storageType: "inmem", catalog: catalog, configuration: config, logger: Logger(label: "test"))
        let (_, root) = try await core.bootstrapDev(rootTokenID: nil)
        try await core.mountDefault(path: "ledger/", type: "ledger", options: [:])
        return TestCore(core: core, rootToken: root)
    }

    static func waitFor(_ what: String, timeout: Double = 10, _ check: () async throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try await check() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("timed out waiting for \(what)")
    }

    @Test func leasesExpireRenewAndRevokeByToken() async throws {
        let ledger = LedgerBackend()
        let time = ManualClock()
        let t = try await Self.make(ledger, clock: time.clock)
        let short = try await t.call(.read, "ledger/issue/a", ["ttl": 60])
        let id = try #require(short.leaseID)
        #expect(id.hasPrefix("ledger/issue/a/") && short.secret?.ttl == 60)
        time.advance(by: 30)
        let halfway = try await t.call(.update, "sys/leases/lookup", ["lease_id": .string(id)])
        #expect(halfway.data?["ttl"] == 30 && ledger.revoked.withLock { $0 }.isEmpty)
        time.advance(by: 31)
        try await Self.waitFor("expiry") { ledger.revoked.withLock { $0 } == ["a"] }
        // A token's expiry revokes it, and its leases with it.
        let shortToken = try await t.createToken(policies: ["root"], extra: ["ttl": 30])
        _ = try await t.call(.read, "ledger/issue/d", token: shortToken)
        time.advance(by: 31)
        try await Self.waitFor("the token's expiry") { ledger.revoked.withLock { $0 }.contains("d") }
        await #expect(throws: CofferError.self) { try await t.call(.read, "auth/token/lookup-self", token: shortToken) }
        // Renewal is capped by the engine's max TTL (120 s from issue).
        let long = try await t.call(.read, "ledger/issue/b")
        let renewed = try await t.call(.update, "sys/leases/renew", ["lease_id": .string(long.leaseID!), "increment": 500])
        #expect(renewed.secret?.ttl ?? 0 <= 120 && renewed.secret?.ttl ?? 0 >= 118 && !renewed.warnings.isEmpty)
        // A token's leases go with it.
        let child = try await t.createToken(policies: ["root"])
        _ = try await t.call(.read, "ledger/issue/c", token: child)
        _ = try await t.call(.update, "auth/token/revoke", ["token": .string(child)])
        #expect(ledger.revoked.withLock { $0 }.contains("c"))
        #expect(t.core.leases.count(prefix: "ledger/") == 1)
        _ = try await t.call(.update, "sys/leases/revoke-prefix/ledger", [:])
        #expect(t.core.leases.count(prefix: "") == 0 && ledger.revoked.withLock { $0 }.contains("b"))
    }

    @Test func failingRevocationsRetryThenBecomeIrrevocable() async throws {
        let ledger = LedgerBackend()
        let t = try await Self.make(ledger, attempts: 3)
        ledger.failures.withLock { $0 = 2 }
        let first = try await t.call(.read, "ledger/issue/x", ["ttl": 1])
        // Two failures, then the third attempt succeeds.
        try await Self.waitFor("the retried revocation") { ledger.revoked.withLock { $0 } == ["x"] }
        await #expect(throws: CofferError.self) { try await t.call(.update, "sys/leases/lookup", ["lease_id": .string(first.leaseID!)]) }
        // Always failing: irrevocable after 3 attempts, kept and listed.
        ledger.failures.withLock { $0 = 1_000 }
        let second = try await t.call(.read, "ledger/issue/y", ["ttl": 1])
        try await Self.waitFor("the lease to become irrevocable") {
            let r = try await t.call(.read, "sys/leases", [:])
            return r.data?["lease_count"] == 1
        }
        let info = try await t.call(.update, "sys/leases/lookup", ["lease_id": .string(second.leaseID!)])
        #expect(info.data?["irrevocable"] == true && info.data?["revoke_attempts"] == 3)
        #expect(t.core.leases.count(prefix: "ledger/") == 1, "irrevocable leases still count")
        // revoke-force drops it without the engine.
        _ = try await t.call(.update, "sys/leases/revoke-force/ledger/issue/y", [:])
        #expect(t.core.leases.count(prefix: "") == 0)
    }

    @Test func leaseCountQuotaReservesBeforeTheEngineRuns() async throws {
        let ledger = LedgerBackend()
        let t = try await Self.make(ledger)
        _ = try await t.call(.update, "sys/quotas/lease-count/two", ["path": "ledger/issue", "max_leases": 2])
        _ = try await t.call(.read, "ledger/issue/1")
        _ = try await t.call(.read, "ledger/issue/2")
        await #expect(throws: CofferError.self) { try await t.call(.read, "ledger/issue/3") }
        let q = try await t.call(.read, "sys/quotas/lease-count/two")
        #expect(q.data?["counter"] == 2 && q.data?["max_leases"] == 2)
        await #expect(throws: CofferError.self) { try await t.call(.update, "sys/quotas/lease-count/bad", ["path": "nowhere/", "max_leases": 1]) }
    }

    @Test func counterDoesNotScan() {
        let counter = LeasePathCounter()
        counter.add("a/db/creds/r/1", 1)
        counter.add("a/db/creds/r/2", 1)
        counter.add("b/db/creds/r/3", 1)
        #expect(counter.count("a/") == 2 && counter.count("a/db/creds/r") == 2 && counter.count("a/db/creds/ro") == 0 && counter.count("") == 3)
        counter.add("a/db/creds/r/1", -1)
        #expect(counter.count("a") == 1)
        #expect(LeaseManager.segmentPrefix("db/creds/r", of: "db/creds/r/x") && !LeaseManager.segmentPrefix("db/creds/r", of: "db/creds/ro/x"))
    }
}

struct PasswordPolicyTests {
    @Test func parsesGeneratesAndRefuses() throws {
        let p = try PasswordPolicy(parsing: """
            length = 24
            rule "charset" {
              charset = "abcdefghijklmnopqrstuvwxyz"
              min-chars = 1
            }
            rule "charset" {
              charset = "0123456789"
              min-chars = 4
            }
            """)
        for _ in 0..<200 {
            let pw = p.generate()
            #expect(pw.count == 24)
            #expect(pw.allSatisfy { $0.isLowercase || $0.isNumber })
            #expect(pw.filter(\.isNumber).count >= 4 && pw.contains(where: \.isLowercase))
        }
        #expect(Set((0..<50).map { _ in p.generate() }).count == 50)
        for bad in [
            "", "length = 2\nrule \"charset\" { charset = \"ab\" }", "length = 10", "length = 5\nrule \"charset\" { charset = \"ab\"\nmin-chars = 6 }",
            "length = 10\nrule \"other\" { charset = \"ab\" }", "length = 10\nrule \"charset\" { charset = \"\" }", "length = 10\nfoo = 1\nrule \"charset\" { charset = \"a\" }",
            "length = 10\nrule \"charset\" { charset = \"ab\"\nmin-chars = -1 }", "length = {",
        ] {
            #expect(throws: CofferError.self, "\(bad)") { try PasswordPolicy(parsing: bad) }
        }
    }

    @Test func sysPoliciesPasswordAndGenerate() async throws {
        let t = try await TestCore.make()
        try await t.call(.update, "sys/policies/password/digits", ["policy": "length = 8\nrule \"charset\" {\n charset = \"0123456789\"\n min-chars = 8\n}"])
        let r = try await t.call(.read, "sys/policies/password/digits/generate")
        let pw = try #require(r.data?["password"]?.stringValue)
        #expect(pw.count == 8 && pw.allSatisfy(\.isNumber))
        #expect(try await t.call(.list, "sys/policies/password").data?["keys"] == ["digits"])
        await #expect(throws: CofferError.self) { try await t.call(.update, "sys/policies/password/bad", ["policy": "length = 1"]) }
        await #expect(throws: CofferError.self) { try await t.call(.read, "sys/policies/password/missing/generate") }
        try await t.call(.delete, "sys/policies/password/digits")
        await #expect(throws: CofferError.self) { try await t.call(.read, "sys/policies/password/digits/generate") }
    }
}
