import CofferSDK
import Foundation
import Testing
@testable import TenantCore

/// The hand-written stored forms read what `Codable` wrote before them, and `Codable` reads
/// what they write: stores written by earlier versions keep loading, and either path can be
/// used for a record.
@Suite struct StoredRecordTests {
    static func sample(locked: Bool) -> NamespaceRecord {
        var ring = Keyring.generate()
        ring = ring.rotated()
        return NamespaceRecord(
            id: NamespacePath.newID(), path: "acme/payments/", customMetadata: ["plan": "gold", "ünï\"code": "a\\b\n"],
            keyring: ring, createdAt: Date(timeIntervalSince1970: 1_764_000_000.123456),
            lockHash: locked ? Array(repeating: 0xAB, count: 32) : nil)
    }

    static func mountTable() -> [String: MountEntry] {
        var config = MountConfig()
        config.defaultLeaseTTL = 3600
        config.maxLeaseTTL = 7200
        config.forceNoCache = true
        config.listingVisibility = "unauth"
        config.tokenType = "default-batch"
        config[list: "audit_non_hmac_request_keys"] = ["role_id", "name"]
        config[list: "passthrough_request_headers"] = ["X-Custom"]
        return [
            "sys/": NamespaceCore.builtinSysEntry(),
            "kv/": MountEntry(path: "kv/", type: "kv", description: "d \"q\"", options: ["version": "2"], config: config, local: true, sealWrap: true),
        ]
    }

    static func same(_ a: NamespaceRecord, _ b: NamespaceRecord) -> Bool {
        a.id == b.id && a.path == b.path && a.customMetadata == b.customMetadata && a.createdAt == b.createdAt
            && a.lockHash == b.lockHash && a.seal == b.seal && a.keyring?.activeTerm == b.keyring?.activeTerm
            && a.keyring?.terms.map(\.term) == b.keyring?.terms.map(\.term)
            && a.keyring?.terms.map(\.key) == b.keyring?.terms.map(\.key)
            && a.keyring?.terms.map(\.installTime) == b.keyring?.terms.map(\.installTime)
    }

    static func same(_ a: MountEntry, _ b: MountEntry) -> Bool {
        a.path == b.path && a.type == b.type && a.description == b.description && a.uuid == b.uuid && a.accessor == b.accessor
            && a.options == b.options && a.local == b.local && a.sealWrap == b.sealWrap
            && a.config.defaultLeaseTTL == b.config.defaultLeaseTTL && a.config.maxLeaseTTL == b.config.maxLeaseTTL
            && a.config.forceNoCache == b.config.forceNoCache && a.config.listingVisibility == b.config.listingVisibility
            && a.config.tokenType == b.config.tokenType && a.config.lists == b.config.lists
    }

    @Test(arguments: [false, true])
    func namespaceRecordReadsBothWays(locked: Bool) throws {
        let record = Self.sample(locked: locked)
        let fromCodable = try NamespaceRecord(storedJSON: JSONValue.parse(Array(StoredJSON.encoder.encode(record))))
        #expect(Self.same(record, fromCodable))
        let viaCodable = try StoredJSON.decoder.decode(NamespaceRecord.self, from: Data(record.storedJSON.serialized()))
        #expect(Self.same(record, viaCodable))
        #expect(try JSONValue.parse(record.storedJSON.serialized()) == JSONValue.parse(Array(StoredJSON.encoder.encode(record))))
    }

    @Test func mountTablesReadBothWays() throws {
        let table = Self.mountTable()
        let fromCodable = try [String: MountEntry](storedJSON: JSONValue.parse(Array(StoredJSON.encoder.encode(table))))
        let viaCodable = try StoredJSON.decoder.decode([String: MountEntry].self, from: Data(table.storedJSON.serialized()))
        for (k, v) in table {
            #expect(fromCodable[k].map { Self.same($0, v) } == true)
            #expect(viaCodable[k].map { Self.same($0, v) } == true)
        }
        let list = Array(table.values)
        let listBack = try [MountEntry](storedJSON: JSONValue.parse(Array(StoredJSON.encoder.encode(list))))
        #expect(zip(list, listBack).allSatisfy { Self.same($0, $1) } && listBack.count == list.count)
    }

    @Test func usageCountersReadBothWays() throws {
        var full = UsageCounters()
        full.requests = ["read": 3, "write": 9_000_000_000]
        (full.throttled, full.errors, full.bytesIn, full.bytesOut) = (1, 2, 300, 4000)
        (full.storedObjects, full.storedBytes, full.tokens, full.leases) = (5, 6000, 7, 0)
        for c in [full, UsageCounters()] {
            #expect(try UsageCounters(storedJSON: JSONValue.parse(Array(StoredJSON.encoder.encode(c)))) == c)
            #expect(try StoredJSON.decoder.decode(UsageCounters.self, from: Data(c.storedJSON.serialized())) == c)
        }
    }

    @Test func damagedRecordsAreRefused() async throws {
        let barrier = Barrier(physical: MemoryStorage())
        barrier.install(Keyring.generate())
        let view = StorageView(barrier, prefix: "")
        let good = Self.sample(locked: false).storedJSON
        guard case .object(var o) = good else { Issue.record("not an object"); return }
        o["createdAt"] = .string("yesterday")
        try await view.putJSON("bad-date", .object(o))
        o = try #require(good.objectValue)
        let badTerm: JSONValue = ["term": .int(1), "key": .array([.int(256)]), "installTime": .int(0)]
        o["keyring"] = ["terms": .array([badTerm]), "activeTerm": .int(1)] as JSONValue
        try await view.putJSON("bad-byte", .object(o))
        try await view.put("not-json", Array("{\"id\":".utf8))
        for key in ["bad-date", "bad-byte", "not-json"] {
            await #expect(throws: CofferError.self) { _ = try await view.getCodable(NamespaceRecord.self, key) }
        }
        try await view.putCodable("ok", Self.sample(locked: true))
        let back = try #require(try await view.getCodable(NamespaceRecord.self, "ok"))
        #expect(back.lockHash?.count == 32)
    }

    @Test func namespaceIDsSortByCreationTime() {
        let t0 = Date(timeIntervalSince1970: 1_764_000_000)
        var previous = ""
        for step: TimeInterval in [0.0, 0.01, 0.02, 1, 60, 86_400, 365 * 86_400, 50 * 365 * 86_400] {
            let id = NamespacePath.newID(now: t0.addingTimeInterval(step))
            #expect(id.count == 10 && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) })
            #expect(id.prefix(7) > previous.prefix(7))
            previous = id
        }
    }
}
